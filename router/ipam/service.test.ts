import { describe, expect, it } from 'vitest';
import { isWeftError } from '../../common/errors.js';
import { type IPv4, type PeerName, parseCidr, parseIPv4 } from '../../common/types.js';
import { NullGossip } from '../gossip/gossip.js';
import type { Persisted } from './allocator.js';
import { formatIpamInit, IpamService, parseIpamInit } from './service.js';

const RANGE = parseCidr('10.32.0.0/12');
const A = '02:00:00:00:00:01' as PeerName;
const B = '02:00:00:00:00:02' as PeerName;

function service(init: Parameters<typeof parseIpamInit>[0], alone: boolean, persisted?: unknown) {
  const saved: Persisted[] = [];
  const s = new IpamService(
    { self: A, range: RANGE, init: parseIpamInit(init, alone), persisted, persist: (p) => saved.push(p) },
    new NullGossip(),
  );
  return { s, saved };
}

describe('parseIpamInit', () => {
  it('parses auto, observer and seed lists, and refuses anything else with a clear error', () => {
    expect(parseIpamInit('auto', true)).toEqual({ mode: 'auto', alone: true });
    expect(parseIpamInit('observer', false)).toEqual({ mode: 'observer' });
    expect(parseIpamInit(`seed=${A}, ${B}`, false)).toEqual({ mode: 'seed', seed: [A, B] });
    expect(formatIpamInit(parseIpamInit(`seed=${A},${B}`, false))).toBe(`seed=${A},${B}`);
    for (const bad of ['', 'consensus', 'seed=', 'seed=zz:00:00:00:00:00', 'seed=a,b', 'AUTO', 'seed']) {
      let err: unknown;
      try {
        parseIpamInit(bad, true);
      } catch (e) {
        err = e;
      }
      expect(isWeftError(err) && err.code === 'EWEFT_CONFIG', bad).toBe(true);
      expect((err as Error).message).toMatch(/--ipalloc-init/);
    }
  });
});

describe('IpamService', () => {
  it('a lone router seeds on first use, persists before answering, and survives a restart', async () => {
    const { s, saved } = service('auto', true);
    expect(s.seeded).toBe(false);
    expect(saved).toHaveLength(0);
    const a = await s.allocate('c1');
    expect(a).toBe(parseIPv4('10.32.0.1'));
    expect(saved.at(-1)?.allocations).toEqual({ c1: ['10.32.0.1'] });
    s.claim('c2', parseIPv4('10.32.0.9'));
    expect(() => s.claim('c3', parseIPv4('10.32.0.9'))).toThrow(/in use by c2/);
    // Outside the range: nothing to record here (the router announces it).
    s.claim('c4', parseIPv4('192.168.0.1'));
    const again = service('auto', false, JSON.parse(JSON.stringify(saved.at(-1)))).s;
    expect(again.seeded).toBe(true);
    expect(again.lookup('c1')).toEqual([a]);
    expect(again.lookup('c2')).toEqual([parseIPv4('10.32.0.9')]);
    expect(await again.allocate('c1')).toBe(a);
    expect(await again.allocate('c5')).toBe(parseIPv4('10.32.0.2'));
    again.keepOnly('c2', []);
    expect(again.lookup('c2')).toEqual([]);
    expect(again.status(() => undefined)).toMatchObject({ state: 'ready', used: 2, owned: 2 ** 20 });
  });

  it('seed mode owns its equal share at once; a given address outside it is refused', () => {
    const { s, saved } = service(`seed=${A},${B}`, false);
    expect(s.seeded).toBe(true);
    expect(saved).toHaveLength(1);
    expect(s.status(() => undefined).owned).toBe(2 ** 19);
    expect(() => s.claim('c', parseIPv4('10.40.0.5'))).toThrow(/address space of peer 02:00:00:00:00:02/);
    s.claim('c', parseIPv4('10.32.0.5'));
  });

  it('an observer never seeds: allocations wait, then fail saying why; claims fail at once', async () => {
    const s = new IpamService(
      { self: A, range: RANGE, init: parseIpamInit('observer', true), allocateTimeoutMs: 50 },
      new NullGossip(),
    );
    const p = s.allocate('c1');
    expect(s.status(() => undefined).pending).toHaveLength(1);
    await expect(p).rejects.toThrow(/observer and no peer has shared its address space/);
    expect(() => s.claim('c', parseIPv4('10.32.0.5'))).toThrow(/cannot claim 10\.32\.0\.5 yet/);
    expect(s.status(() => undefined)).toMatchObject({ state: 'awaiting-seed', pending: [] });
  });

  it('stop fails waiting allocations', async () => {
    const { s } = service('observer', false);
    const p = s.allocate('c1');
    s.stop();
    await expect(p).rejects.toThrow(/stopping/);
  });

  it('refuses persisted state of another peer or range, or malformed, with a clear error', () => {
    const { s, saved } = service('auto', true);
    s.claim('c', parseIPv4('10.32.0.5') as IPv4);
    const good = JSON.parse(JSON.stringify(saved.at(-1)));
    expect(
      () =>
        new IpamService(
          { self: B, range: RANGE, init: parseIpamInit('auto', true), persisted: good },
          new NullGossip(),
        ),
    ).toThrow(/belongs to peer/);
    expect(
      () =>
        new IpamService(
          { self: A, range: parseCidr('10.96.0.0/12'), init: parseIpamInit('auto', true), persisted: good },
          new NullGossip(),
        ),
    ).toThrow(/launched with 10\.96\.0\.0\/12/);
    for (const bad of [null, 42, {}, { ...good, tokens: 'x' }, { ...good, allocations: { c: ['nope'] } }]) {
      expect(
        () =>
          new IpamService(
            { self: A, range: RANGE, init: parseIpamInit('auto', true), persisted: bad },
            new NullGossip(),
          ),
      ).toThrow(/invalid ipam state/);
    }
  });

  it('counts a failing save and keeps serving', async () => {
    const s = new IpamService(
      {
        self: A,
        range: RANGE,
        init: parseIpamInit('auto', true),
        persist: () => {
          throw new Error('disk full');
        },
      },
      new NullGossip(),
    );
    expect(await s.allocate('c1')).toBe(parseIPv4('10.32.0.1'));
    expect(s.status(() => undefined).persistErrors).toBeGreaterThan(0);
  });
});
