import { describe, expect, it } from 'vitest';
import { isWeftError } from '../../common/errors.js';
import { type IPv4, type PeerName, parseCidr, parseIPv4 } from '../../common/types.js';
import { NullGossip } from '../gossip/gossip.js';
import type { Persisted } from './allocator.js';
import { decodeMessage, encodeMessage } from './ipam.js';
import { Ring, type RingState } from './ring.js';
import { formatIpamInit, IpamPersistError, IpamReclaimError, IpamService, parseIpamInit } from './service.js';

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

  it('refuses a seed list naming a peer no router can be (zero, broadcast, multicast)', () => {
    for (const [bad, why] of [
      ['00:00:00:00:00:00', /all-zero/],
      ['ff:ff:ff:ff:ff:ff', /broadcast/],
      ['01:00:5e:00:00:01', /multicast/],
    ] as const) {
      expect(() => parseIpamInit(`seed=${A},${bad}`, false)).toThrow(why);
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

  it('undoes and refuses an allocation or claim that cannot be saved, counts it, and says the state directory is failing', async () => {
    let full = false;
    const saved: Persisted[] = [];
    const s = new IpamService(
      {
        self: A,
        range: RANGE,
        init: parseIpamInit('auto', true),
        persist: (p) => {
          if (full) throw new Error('ENOSPC: no space left on device');
          saved.push(p);
        },
      },
      new NullGossip(),
    );
    expect(await s.allocate('c1')).toBe(parseIPv4('10.32.0.1'));
    full = true;
    const err = await s.allocate('c2').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IpamPersistError);
    expect((err as IpamPersistError).code).toBe('EWEFT_SYSTEM');
    expect((err as Error).message).toMatch(/cannot save the ipam state, so the change was undone: ENOSPC/);
    expect(s.lookup('c2')).toEqual([]);
    expect(() => s.claim('c3', parseIPv4('10.32.0.9'))).toThrow(IpamPersistError);
    expect(s.lookup('c3')).toEqual([]);
    let st = s.status(() => undefined);
    expect(st.persistFailing).toBe(true);
    expect(st.persistError).toMatch(/ENOSPC/);
    expect(st.persistErrors).toBe(2);
    expect(st.used).toBe(1);
    // The same owner's existing address needs no save.
    expect(await s.allocate('c1')).toBe(parseIPv4('10.32.0.1'));
    full = false;
    expect(await s.allocate('c2')).toBe(parseIPv4('10.32.0.2'));
    st = s.status(() => undefined);
    expect(st.persistFailing).toBe(false);
    expect(saved.at(-1)?.allocations).toEqual({ c1: ['10.32.0.1'], c2: ['10.32.0.2'] });
  });

  it('gives no space to a peer when the donation cannot be saved', async () => {
    let full = false;
    const sent: { dst: PeerName; payload: Uint8Array }[] = [];
    const s = new IpamService(
      {
        self: A,
        range: RANGE,
        init: parseIpamInit('auto', true),
        persist: () => {
          if (full) throw new Error('EIO');
        },
      },
      {
        broadcast: () => {},
        unicast: (dst, payload) => {
          sent.push({ dst, payload });
          return true;
        },
      },
    );
    await s.allocate('c1');
    full = true;
    s.gossiper.onGossipUnicast(B, encodeMessage({ kind: 'space-request', want: 1024 }));
    expect(s.status(() => undefined).owned).toBe(2 ** 20);
    const reply = decodeMessage(sent.at(-1)!.payload);
    expect(reply.kind === 'ring' && reply.ring.tokens.every((t) => t.owner === A)).toBe(true);
    full = false;
    s.gossiper.onGossipUnicast(B, encodeMessage({ kind: 'space-request', want: 1024 }));
    expect(s.status(() => undefined).owned).toBe(2 ** 20 - 1024);
  });
});

describe('IpamService recovery', () => {
  /** a cluster ring where A owns the first half and B the second, A having 10.32.0.1 and 10.32.0.2 in use. */
  function clusterRing(): RingState {
    const r = Ring.seeded(RANGE, B, [A, B]);
    return r.state();
  }

  it('does not seed, saves nothing, and takes back the addresses in use once the cluster ring arrives', async () => {
    const saved: Persisted[] = [];
    const s = new IpamService(
      { self: A, range: RANGE, init: parseIpamInit('auto', true), expectCluster: true, persist: (p) => saved.push(p) },
      new NullGossip(),
    );
    expect(s.recovering).toBe(true);
    const reclaimed = s.reclaim([
      { owner: 'web', addrs: [parseIPv4('10.32.0.1')] },
      { owner: 'weft:expose', addrs: [parseIPv4('10.32.0.2'), parseIPv4('192.168.9.9')] },
    ]);
    const alloc = s.allocate('new');
    expect(() => s.claim('x', parseIPv4('10.32.0.5'))).toThrow(/lost its saved ipam state/);
    expect(s.seeded).toBe(false);
    expect(saved).toEqual([]);
    expect(s.status(() => undefined).reclaiming).toBe(2);
    s.gossiper.onGossip(B, encodeMessage({ kind: 'ring', ring: clusterRing() }));
    await reclaimed;
    expect(s.lookup('web')).toEqual([parseIPv4('10.32.0.1')]);
    expect(s.lookup('weft:expose')).toEqual([parseIPv4('10.32.0.2')]);
    // The waiting allocation is served after the reclaim: it does not get an address in use.
    expect(await alloc).toBe(parseIPv4('10.32.0.3'));
    expect(s.recovering).toBe(false);
    expect(saved.at(-1)?.allocations).toEqual({ new: ['10.32.0.3'], web: ['10.32.0.1'], 'weft:expose': ['10.32.0.2'] });
  });

  it('refuses loudly to take back addresses the cluster ring gives to another peer', async () => {
    const s = new IpamService(
      { self: A, range: RANGE, init: parseIpamInit('auto', true), expectCluster: true, persist: () => {} },
      new NullGossip(),
    );
    const reclaimed = s.reclaim([{ owner: 'web', addrs: [parseIPv4('10.40.0.7')] }]);
    s.gossiper.onGossip(B, encodeMessage({ kind: 'ring', ring: clusterRing() }));
    const err = await reclaimed.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IpamReclaimError);
    expect((err as IpamReclaimError).code).toBe('EWEFT_CONFLICT');
    expect((err as Error).message).toMatch(/10\.40\.0\.7 of web held by 02:00:00:00:00:02.*ip link del/);
    expect(s.lookup('web')).toEqual([]);
    expect(s.status(() => undefined).conflicts.some((c) => c.includes('refusing to start'))).toBe(true);
  });

  it('fails a reclaim with the way out when no ring comes in time', async () => {
    const s = new IpamService(
      {
        self: A,
        range: RANGE,
        init: parseIpamInit('auto', true),
        expectCluster: true,
        allocateTimeoutMs: 50,
      },
      new NullGossip(),
    );
    const err = await s.reclaim([{ owner: 'web', addrs: [parseIPv4('10.32.0.1')] }]).catch((e: unknown) => e);
    expect((err as IpamReclaimError).code).toBe('EWEFT_UNAVAILABLE');
    expect((err as Error).message).toMatch(new RegExp(`--ipalloc-init seed=${A}`));
    expect(s.seeded).toBe(false);
  });

  it('reclaims at once from a known ring, refuses an address another owner holds, and a lone router seeds to reclaim', async () => {
    const { s, saved } = service('auto', true);
    await s.reclaim([{ owner: 'web', addrs: [parseIPv4('10.32.0.4')] }]);
    expect(s.lookup('web')).toEqual([parseIPv4('10.32.0.4')]);
    const again = service('auto', true, saved.at(-1));
    await again.s.reclaim([{ owner: 'web', addrs: [parseIPv4('10.32.0.4')] }]);
    const err = await again.s.reclaim([{ owner: 'db', addrs: [parseIPv4('10.32.0.4')] }]).catch((e: unknown) => e);
    expect((err as IpamReclaimError).code).toBe('EWEFT_CONFLICT');
    expect(again.s.lookup('web')).toEqual([parseIPv4('10.32.0.4')]);
  });
});
