import { beforeEach, describe, expect, it, vi } from 'vitest';
import { WeftError } from '../common/errors.js';
import { noopLogger } from '../common/log.js';
import { parseCidr } from '../common/types.js';
import { GSO_MAX_BYTES, type Router } from '../router/index.js';
import { StateSaveError } from './state.js';
import { FakeAttachRouter } from './testing/fake-router.js';

/**
 * FakeKernel stands in for `ip`: the host namespace's links, and a log of what was run. Every
 * command the Attacher runs goes through execFile, mocked below.
 */
const kernel = {
  links: new Set<string>(),
  events: [] as string[],
  /** lines are every command run, in order. */
  lines: [] as string[],
  /** fail makes the next command matching it fail with this stderr. */
  fail: undefined as { match: RegExp; stderr: string } | undefined,
  run(cmd: string, args: readonly string[]): { stdout: string } {
    const line = [cmd, ...args].join(' ');
    this.lines.push(line);
    if (this.fail?.match.test(line)) {
      const stderr = this.fail.stderr;
      this.fail = undefined;
      throw Object.assign(new Error(`Command failed: ${line}`), { stderr });
    }
    if (cmd !== 'ip') return { stdout: '' };
    const a = args.join(' ');
    if (a === '-j link show type veth') {
      return { stdout: JSON.stringify([...this.links].map((ifname) => ({ ifname }))) };
    }
    let m = /^link del (\S+)$/.exec(a);
    if (m) {
      if (!this.links.delete(m[1] as string)) {
        throw Object.assign(new Error('failed'), { stderr: `Cannot find device "${m[1]}"` });
      }
      this.events.push(`del ${m[1]}`);
      return { stdout: '' };
    }
    m = /^link show dev (\S+)$/.exec(a);
    if (m) {
      if (!this.links.has(m[1] as string)) throw Object.assign(new Error('failed'), { stderr: 'does not exist' });
      return { stdout: '' };
    }
    m = /^link add (\S+) /.exec(a);
    if (m) {
      if (this.links.has(m[1] as string)) {
        throw Object.assign(new Error('failed'), { stderr: 'RTNETLINK answers: File exists' });
      }
      this.links.add(m[1] as string);
      this.events.push(`add ${m[1]}`);
    }
    return { stdout: '' };
  },
};

vi.mock('node:child_process', async (importOriginal) => {
  const { fakeChildProcess } = await import('./testing/fake-exec.js');
  return fakeChildProcess(await importOriginal<typeof import('node:child_process')>(), {
    // kernel is read lazily: the mock may be made before this file's top level runs.
    run: (cmd, args) => kernel.run(cmd, args),
  });
});
vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  return { ...real, existsSync: (p: string) => p.startsWith('/run/netns/c') || real.existsSync(p) };
});
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  return { ...real, writeFile: async () => undefined };
});

const { Attacher, CONTAINER_IFNAME, hostIfname, vethAddArgs } = await import('./attach.js');
type AttachedContainer = import('./attach.js').AttachedContainer;

const RANGE = parseCidr('10.32.0.0/12');

describe('Attacher', () => {
  let router: FakeAttachRouter;
  /** saves are the lists onChange persisted, in order; failSave makes the next N saves throw. */
  let saves: AttachedContainer[][] = [];
  let failSave: number;
  let attacher: InstanceType<typeof Attacher>;
  let names: string[];

  const make = () => {
    const a = new Attacher(router as unknown as Router, RANGE, noopLogger, () => {
      if (failSave > 0) {
        failSave--;
        throw new StateSaveError('/x', new Error('ENOSPC: no space left on device, write'));
      }
      saves.push(a.list());
      kernel.events.push(`save ${a.list().map((c) => `${c.target}:${c.state ?? 'attached'}`)}`);
    });
    a.hooks = {
      attached: async (c) => {
        names.push(`+${c.target}:${c.name ?? ''}`);
      },
      detached: async (c) => {
        names.push(`-${c.target}`);
      },
    };
    return a;
  };

  beforeEach(async () => {
    kernel.links.clear();
    kernel.events = [];
    kernel.fail = undefined;
    router = new FakeAttachRouter({ onFree: (owner) => kernel.events.push(`free ${owner}`) });
    failSave = 0;
    names = [];
    attacher = make();
    await attacher.restore([]);
    saves = [];
    kernel.events = [];
  });

  it('journals the intent (pending, with address and interface) before making the veth, and answers after saving it attached', async () => {
    const a = await attacher.attach('c1', [], 'web');
    const ifname = hostIfname('c1');
    expect(kernel.events).toEqual([`save c1:pending`, `add ${ifname}`, 'save c1:attached']);
    expect(saves[0]).toEqual([
      expect.objectContaining({ target: 'c1', ifname, cidrs: ['10.32.0.1/12'], state: 'pending', name: 'web' }),
    ]);
    expect(a).toEqual(expect.objectContaining({ target: 'c1', cidrs: ['10.32.0.1/12'], name: 'web' }));
    expect(a.state).toBeUndefined();
    expect(names).toEqual(['+c1:web']);
    expect(router.claimed.has('c1')).toBe(true);
  });

  it('with a peer (a network plugin), makes both ends here and configures nothing inside; detach can keep the address', async () => {
    const at = { netns: '/var/run/docker/netns/abc', ifname: 'ethwe', peer: 'vp12345678', endpoint: 'e1' };
    kernel.lines = [];
    const a = await attacher.attach('docker:10.32.0.9', [parseCidr('10.32.0.9/12')], undefined, at);
    expect(a).toMatchObject({ peerIfname: 'vp12345678', endpoint: 'e1', netns: at.netns, cidrs: ['10.32.0.9/12'] });
    const add = kernel.lines.find((l) => l.includes(' link add '));
    expect(add).toContain('peer name vp12345678');
    expect(add).not.toContain(' netns ');
    // The engine moves the peer and gives it its address: nothing is run inside.
    expect(kernel.lines.some((l) => l.startsWith('nsenter'))).toBe(false);
    expect(router.claimed.has('docker:10.32.0.9')).toBe(true);
    await attacher.detach('docker:10.32.0.9', true);
    expect(router.claimed.has('docker:10.32.0.9')).toBe(false);
    expect(router.held.get('docker:10.32.0.9')).toEqual([0x0a200009]);
    expect(attacher.list()).toEqual([]);
  });

  it('fails, leaving nothing, when the intent cannot be saved', async () => {
    failSave = 1;
    await expect(attacher.attach('c1', [])).rejects.toThrow('cannot save state in /x: no space left on device');
    expect(kernel.links.size).toBe(0);
    expect(router.held.size).toBe(0);
    expect(attacher.list()).toEqual([]);
    expect(attacher.status()).toEqual({ attached: 0, pending: 0, persistErrors: 1 });
  });

  it("fails with the state directory's own message when IPAM cannot save the allocation", async () => {
    router.allocate = async () => {
      throw new WeftError('EWEFT_SYSTEM', 'cannot save the ipam state, so the change was undone: x', {
        cause: new StateSaveError('/x', new Error('ENOSPC: no space left on device, write')),
      });
    };
    await expect(attacher.attach('c1', [])).rejects.toThrow(/^cannot save state in \/x: no space left on device$/);
    expect(kernel.links.size).toBe(0);
    expect(attacher.status().persistErrors).toBe(1);
  });

  it('rolls back the veth, the address and the names when the done record cannot be saved', async () => {
    await attacher.attach('c0', []);
    kernel.events = [];
    // The disk fills while c1 is being plumbed: after its veth exists, before the done record.
    const hooks = attacher.hooks;
    attacher.hooks = {
      attached: async (c) => {
        failSave = 2;
        await hooks?.attached(c);
      },
      detached: async (c) => hooks?.detached(c),
    };
    await expect(attacher.attach('c1', [], 'web')).rejects.toThrow('no space left on device');
    expect(kernel.links.has(hostIfname('c1'))).toBe(false);
    expect(router.held.has('c1')).toBe(false);
    expect(attacher.list().map((c) => c.target)).toEqual(['c0']);
    expect(names).toEqual(['+c0:', '+c1:web', '-c1']);
    expect(attacher.status().persistErrors).toBe(1);
    // The interface went before the address.
    expect(kernel.events.indexOf(`del ${hostIfname('c1')}`)).toBeLessThan(kernel.events.indexOf('free c1'));
  });

  it('removes the veth and frees the address when plumbing fails after the veth exists', async () => {
    kernel.fail = { match: /-batch/, stderr: 'RTNETLINK answers: Permission denied' };
    await expect(attacher.attach('c1', [])).rejects.toThrow(/Permission denied/);
    expect(kernel.links.size).toBe(0);
    expect(router.held.size).toBe(0);
    expect(attacher.list()).toEqual([]);
    expect(saves.at(-1)).toEqual([]);
  });

  it('replaces a leftover interface of the same target that has no record', async () => {
    kernel.links.add(hostIfname('c1'));
    await attacher.attach('c1', []);
    expect(kernel.events.filter((e) => !e.startsWith('save'))).toEqual([
      `del ${hostIfname('c1')}`,
      `add ${hostIfname('c1')}`,
    ]);
    expect(attacher.list()).toHaveLength(1);
  });

  it('adds a name to an attached container (saved, then registered), keeping the others', async () => {
    await attacher.attach('c1', [], 'web');
    names = [];
    const a = await attacher.attach('c1', [], 'db');
    expect(a).toEqual(expect.objectContaining({ name: 'web', names: ['web', 'db'] }));
    expect(names).toEqual(['+c1:db']);
    expect(saves.at(-1)?.[0]?.names).toEqual(['web', 'db']);
    // Again: nothing new.
    await attacher.attach('c1', [], 'db');
    expect(names).toEqual(['+c1:db']);
    // A name that cannot be saved is refused and not kept.
    failSave = 1;
    await expect(attacher.attach('c1', [], 'api')).rejects.toThrow('no space left on device');
    expect(attacher.list()[0]?.names).toEqual(['web', 'db']);
    expect(names).toEqual(['+c1:db']);
    // A restart registers every name.
    const saved = attacher.list();
    names = [];
    const again = make();
    await again.restore(saved);
    expect(names).toEqual(['+c1:web', '+c1:db']);
  });

  it('waits for restore before attaching', async () => {
    const fresh = make();
    let done = false;
    const p = fresh.attach('c9', []).then(() => {
      done = true;
    });
    await new Promise((r) => setTimeout(r, 20));
    expect(done).toBe(false);
    await fresh.restore([]);
    await p;
    expect(done).toBe(true);
  });

  it('restore undoes pending attaches, keeps attached ones, frees vanished ones, removes unrecorded interfaces, then frees the rest', async () => {
    const rec = (target: string, addr: string, state?: 'pending'): AttachedContainer => ({
      target,
      ifname: hostIfname(target),
      cidrs: [`${addr}/12`],
      ...(state ? { state } : {}),
    });
    const saved = [rec('kept', '10.32.0.1'), rec('cut', '10.32.0.2', 'pending'), rec('gone', '10.32.0.3')];
    for (const t of ['kept', 'cut', 'orphan']) kernel.links.add(hostIfname(t));
    // IPAM (persisted apart) holds every address, and one for an attach that was never journaled.
    router.held.set('kept', [0x0a200001]);
    router.held.set('cut', [0x0a200002]);
    router.held.set('gone', [0x0a200003]);
    router.held.set('orphan', [0x0a200004]);
    router.held.set('weft:expose', [0x0a200005]);
    const fresh = make();
    await fresh.restore(saved);
    expect([...kernel.links]).toEqual([hostIfname('kept')]);
    expect([...router.held.keys()].sort()).toEqual(['kept', 'weft:expose']);
    expect(fresh.list()).toEqual([expect.objectContaining({ target: 'kept' })]);
    expect(fresh.list()[0]?.state).toBeUndefined();
    expect(saves.at(-1)?.map((c) => c.target)).toEqual(['kept']);
    // No address is freed while an interface that may hold it still exists.
    const ev = kernel.events;
    expect(ev.indexOf(`del ${hostIfname('cut')}`)).toBeLessThan(ev.indexOf('free cut'));
    expect(ev.indexOf(`del ${hostIfname('orphan')}`)).toBeLessThan(ev.indexOf('free orphan'));
  });

  it('restore keeps records it has not decided yet in what is saved meanwhile', async () => {
    const saved = ['r1', 'r2'].map((t, i) => ({ target: t, ifname: hostIfname(t), cidrs: [`10.32.0.${i + 1}/12`] }));
    for (const a of saved) kernel.links.add(a.ifname);
    const fresh = make();
    const seen: string[][] = [];
    fresh.hooks = {
      attached: async () => {
        seen.push(fresh.list().map((c) => c.target));
      },
      detached: async () => undefined,
    };
    await fresh.restore(saved);
    expect(seen[0]?.sort()).toEqual(['r1', 'r2']);
  });

  it('restore keeps unattributed addresses when an unrecorded interface cannot be removed', async () => {
    kernel.links.add(hostIfname('orphan'));
    router.held.set('orphan', [0x0a200004]);
    kernel.fail = { match: /link del/, stderr: 'RTNETLINK answers: Operation not permitted' };
    const fresh = make();
    await fresh.restore([]);
    expect(router.held.has('orphan')).toBe(true);
  });
});

/** valuesAfter returns what follows every occurrence of `key` in `args`. */
function valuesAfter(args: string[], key: string): string[] {
  return args.flatMap((a, i) => (a === key ? [args[i + 1] as string] : []));
}

describe('vethAddArgs', () => {
  const args = vethAddArgs('vw0123abcd', 1410, '02:00:00:00:00:01', 'web');

  it('makes the pair with ethwe in the target namespace, the MAC and the overlay MTU on both ends', () => {
    expect(args.slice(0, 3)).toEqual(['link', 'add', 'vw0123abcd']);
    const peer = args.indexOf('peer');
    expect(args.slice(peer, peer + 3)).toEqual(['peer', 'name', CONTAINER_IFNAME]);
    expect(valuesAfter(args, 'address')).toEqual(['02:00:00:00:00:01']);
    expect(valuesAfter(args, 'mtu')).toEqual(['1410', '1410']);
    expect(args.slice(-2)).toEqual(['netns', 'web']);
  });

  it('without a namespace makes both ends here (a network plugin: the engine moves the peer)', () => {
    const here = vethAddArgs('vw0123abcd', 1410, '02:00:00:00:00:01', undefined, 'vp0123abcd');
    expect(here).not.toContain('netns');
    expect(here.slice(here.indexOf('peer'), here.indexOf('peer') + 3)).toEqual(['peer', 'name', 'vp0123abcd']);
  });

  it("caps both ends' gso_max_size at the TUN device's, so forwarded super-packets are not segmented", () => {
    const peer = args.indexOf('peer');
    const at = args.flatMap((a, i) => (a === 'gso_max_size' ? [i] : []));
    expect(at).toHaveLength(2);
    expect(at[0]).toBeLessThan(peer);
    expect(at[1]).toBeGreaterThan(peer);
    expect(valuesAfter(args, 'gso_max_size')).toEqual([String(GSO_MAX_BYTES), String(GSO_MAX_BYTES)]);
  });
});
