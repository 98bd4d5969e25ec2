import { beforeEach, describe, expect, it, vi } from 'vitest';
import { noopLogger } from '../common/log.js';
import { formatIPv4, parseCidr } from '../common/types.js';
import type { Router } from '../router/index.js';
import { FakeAttachRouter } from './testing/fake-router.js';

/**
 * kernel stands in for `ip` and `nsenter`: the host's veths, and which container pids have an
 * `ethwe` (a restarted container has a new pid and none). Everything the Attacher runs goes
 * through execFile, mocked below.
 */
const kernel = {
  links: new Set<string>(),
  ethwe: new Set<string>(),
  log: [] as string[],
  run(cmd: string, args: readonly string[], input = ''): { stdout: string } {
    const a = args.join(' ');
    if (cmd === 'nsenter') {
      const pid = args[1] as string;
      if (/ link show dev ethwe$/.test(a)) {
        if (!this.ethwe.has(pid)) throw Object.assign(new Error('failed'), { stderr: 'does not exist' });
        return { stdout: '' };
      }
      if (input.includes('addr add')) this.log.push(`addr ${pid} ${/addr add (\S+)/.exec(input)?.[1]}`);
      return { stdout: '' };
    }
    if (cmd !== 'ip') return { stdout: '' };
    if (a === '-j link show type veth')
      return { stdout: JSON.stringify([...this.links].map((ifname) => ({ ifname }))) };
    let m = /^link del (\S+)$/.exec(a);
    if (m) {
      if (!this.links.delete(m[1] as string)) {
        throw Object.assign(new Error('failed'), { stderr: `Cannot find device "${m[1]}"` });
      }
      return { stdout: '' };
    }
    m = /^link show dev (\S+)$/.exec(a);
    if (m) {
      if (!this.links.has(m[1] as string)) throw Object.assign(new Error('failed'), { stderr: 'does not exist' });
      return { stdout: '' };
    }
    m = /^link add (\S+) .* netns (\S+)$/.exec(a);
    if (m) {
      if (this.links.has(m[1] as string)) {
        throw Object.assign(new Error('failed'), { stderr: 'RTNETLINK answers: File exists' });
      }
      this.links.add(m[1] as string);
      this.ethwe.add(m[2] as string);
      this.log.push(`veth ${m[1]} -> ${m[2]}`);
    }
    return { stdout: '' };
  },
};

vi.mock('node:child_process', async (importOriginal) => {
  const { fakeChildProcess } = await import('./testing/fake-exec.js');
  return fakeChildProcess(await importOriginal<typeof import('node:child_process')>(), {
    // kernel is read lazily: the mock may be made before this file's top level runs.
    run: (cmd, args, input) => kernel.run(cmd, args, input),
  });
});
vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  // Fake container pids 9000-9999 have a network namespace; no named namespaces exist.
  return {
    ...real,
    existsSync: (p: string) =>
      /^\/proc\/9\d{3}\/ns\/net$/.test(p) || (!p.startsWith('/run/netns/') && real.existsSync(p)),
  };
});
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  return { ...real, writeFile: async () => undefined };
});

const { Attacher, hostIfname } = await import('./attach.js');
type AttachedContainer = import('./attach.js').AttachedContainer;
type FoundContainer = import('./attach.js').FoundContainer;

const ID = 'c'.repeat(64);

/** FakeEngine is a ContainerEngine with containers by name and id. */
class FakeEngine {
  readonly byName = new Map<string, FoundContainer>();
  readonly asked: string[] = [];
  async find(target: string): Promise<FoundContainer | undefined> {
    this.asked.push(target);
    return this.byName.get(target) ?? [...this.byName.values()].find((c) => c.key === target);
  }
}

describe('Attacher with a container engine', () => {
  let router: FakeAttachRouter;
  let engine: FakeEngine;
  let attacher: InstanceType<typeof Attacher>;
  let names: string[];

  beforeEach(async () => {
    kernel.links.clear();
    kernel.ethwe.clear();
    kernel.log.length = 0;
    router = new FakeAttachRouter();
    engine = new FakeEngine();
    engine.byName.set('web', { key: ID, name: 'web', pid: 9001 });
    names = [];
    attacher = new Attacher(router as unknown as Router, parseCidr('10.32.0.0/12'), noopLogger);
    attacher.containers = engine;
    attacher.hooks = {
      attached: async (a: AttachedContainer) => {
        names.push(`+${a.name ?? '-'}`);
      },
      detached: async (a: AttachedContainer) => {
        names.push(`-${a.name ?? '-'}`);
      },
    };
    await attacher.restore([]);
  });

  it('attaches a container by name: keyed by its id, into its pid, named after it', async () => {
    const a = await attacher.attach('web', []);
    expect(a).toMatchObject({ target: ID, ifname: hostIfname(ID), cidrs: ['10.32.0.1/12'], name: 'web' });
    expect(kernel.log).toEqual([`veth ${hostIfname(ID)} -> 9001`, 'addr 9001 10.32.0.1/12']);
    expect(names).toEqual(['+web']);
    // Again by name or by id: the same record; detach by name frees it.
    expect((await attacher.attach('web', [])).cidrs).toEqual(['10.32.0.1/12']);
    expect((await attacher.attach(ID, [])).cidrs).toEqual(['10.32.0.1/12']);
    await attacher.detach('web');
    expect(attacher.list()).toEqual([]);
    expect(router.held.size).toBe(0);
  });

  it('gives no default name when the container name is not a DNS label, and --name wins', async () => {
    engine.byName.set('my_app', { key: 'd'.repeat(64), name: 'my_app', pid: 9002 });
    expect((await attacher.attach('my_app', [])).name).toBeUndefined();
    expect((await attacher.attach('web', [], 'db')).name).toBe('db');
  });

  it('refuses a stopped container and does not ask the engine about pids', async () => {
    engine.byName.set('off', { key: 'e'.repeat(64), name: 'off', pid: undefined });
    await expect(attacher.attach('off', [])).rejects.toThrow(/not running/);
    await expect(attacher.attach('9003', [])).resolves.toMatchObject({ target: '9003' });
    expect(engine.asked).not.toContain('9003');
    expect(router.held.has('e'.repeat(64))).toBe(false);
  });

  it('reattach plugs a restarted container in again with its address and names', async () => {
    await attacher.attach('web', [], 'db');
    await attacher.attach('web', [], 'www');
    // Still in place: nothing to do.
    expect(await attacher.reattach(ID)).toBeUndefined();
    // Restarted: a new pid without ethwe; the old host end went with the old namespace.
    kernel.links.delete(hostIfname(ID));
    engine.byName.set('web', { key: ID, name: 'web', pid: 9010 });
    names.length = 0;
    kernel.log.length = 0;
    const a = await attacher.reattach(ID);
    expect(a).toMatchObject({ target: ID, cidrs: ['10.32.0.1/12'], names: ['db', 'www'] });
    expect(kernel.log).toEqual([`veth ${hostIfname(ID)} -> 9010`, 'addr 9010 10.32.0.1/12']);
    expect(names).toEqual(['+db', '+www']);
    expect(router.held.get(ID)).toEqual([0x0a200001]);
    expect(await attacher.reattach('not-attached')).toBeUndefined();
  });

  it('restore keeps a container the engine runs again (restarted while the router was down), frees one it does not', async () => {
    const saved: AttachedContainer[] = [
      { target: ID, ifname: hostIfname(ID), cidrs: ['10.32.0.5/12'], name: 'web' },
      { target: 'f'.repeat(64), ifname: hostIfname('f'.repeat(64)), cidrs: ['10.32.0.6/12'] },
    ];
    router.held.set(ID, [0x0a200005]);
    router.held.set('f'.repeat(64), [0x0a200006]);
    const fresh = new Attacher(router as unknown as Router, parseCidr('10.32.0.0/12'), noopLogger);
    fresh.containers = engine;
    await fresh.restore(saved);
    expect(fresh.list().map((a) => a.target)).toEqual([ID]);
    expect(formatIPv4(router.held.get(ID)?.[0] ?? 0)).toBe('10.32.0.5');
    expect(router.held.has('f'.repeat(64))).toBe(false);
    // The engine's events then plug it in again.
    const a = await fresh.reattach(ID);
    expect(a?.cidrs).toEqual(['10.32.0.5/12']);
    expect(kernel.log).toContain('addr 9001 10.32.0.5/12');
  });
});
