import { beforeEach, describe, expect, it, vi } from 'vitest';
import { noopLogger } from '../common/log.js';
import { parseCidr } from '../common/types.js';
import { FakeAttachRouter } from '../control/testing/fake-router.js';
import { GSO_MAX_BYTES, type Router } from '../router/index.js';

/** kernel stands in for `ip` and `nsenter`: host links, and every command with its stdin. */
const kernel = {
  links: new Set<string>(),
  commands: [] as string[],
  run(cmd: string, args: readonly string[], input = ''): string {
    const line = [cmd, ...args].join(' ');
    this.commands.push(input === '' ? line : `${line} <<${input.trim().split('\n').join('; ')}`);
    const a = args.join(' ');
    if (cmd === 'ip' && a === '-j link show type veth') {
      return JSON.stringify([...this.links].map((ifname) => ({ ifname })));
    }
    let m = /^link del (\S+)$/.exec(a);
    if (cmd === 'ip' && m) {
      if (!this.links.delete(m[1] as string)) {
        throw Object.assign(new Error('failed'), { stderr: `Cannot find device "${m[1]}"` });
      }
      return '';
    }
    m = /^link add (\S+) /.exec(a);
    if (cmd === 'ip' && m) this.links.add(m[1] as string);
    return '';
  },
};

vi.mock('node:child_process', async (importOriginal) => {
  const { fakeChildProcess } = await import('../control/testing/fake-exec.js');
  return fakeChildProcess(await importOriginal<typeof import('node:child_process')>(), {
    run: (cmd, args, input) => ({ stdout: kernel.run(cmd, args, input) }),
  });
});
vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  return { ...real, existsSync: (p: string) => p.startsWith('/run/netns/pod') || real.existsSync(p) };
});
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  return { ...real, writeFile: async () => undefined };
});

const { Attacher, hostIfname } = await import('../control/attach.js');

const RANGE = parseCidr('10.32.0.0/12');
const KEY = 'weftnet:c1:eth0';

/** The Attacher's attach by namespace path (control/attach.ts AttachAt), the hook the CNI plugin stands on. */
describe('Attacher.attach by netns path', () => {
  let router: FakeAttachRouter;
  let attacher: InstanceType<typeof Attacher>;
  let saved: number;

  beforeEach(async () => {
    kernel.links.clear();
    kernel.commands = [];
    router = new FakeAttachRouter({ first: 0x0a200005 });
    saved = 0;
    attacher = new Attacher(router as unknown as Router, RANGE, noopLogger, () => {
      saved++;
    });
    await attacher.restore([]);
    kernel.commands = [];
  });

  it('makes the pair into the namespace by path with the interface name given, and a default route via the exposed host', async () => {
    const a = await attacher.attach(KEY, [], undefined, {
      netns: '/run/netns/pod1',
      ifname: 'eth0',
      defaultRoute: true,
    });
    expect(a).toMatchObject({
      target: KEY,
      netns: '/run/netns/pod1',
      containerIfname: 'eth0',
      cidrs: ['10.32.0.5/12'],
    });
    expect(router.exposes).toBe(1);
    const add = kernel.commands.find((c) => c.startsWith('ip link add')) as string;
    expect(add).toContain(`ip link add ${hostIfname(KEY)} `);
    expect(add).toMatch(/peer name eth0 address \S+ mtu 1410 .*netns \/run\/netns\/pod1$/);
    expect(kernel.commands).toContain(
      'nsenter --net=/run/netns/pod1 ip -batch - <<addr add 10.32.0.5/12 dev eth0; link set eth0 up; link set lo up; route replace default via 10.32.0.1 dev eth0',
    );
    expect(saved).toBeGreaterThan(0);
    expect(attacher.list()).toEqual([expect.objectContaining({ target: KEY, netns: '/run/netns/pod1' })]);
  });

  it('adds no route without defaultRoute, and exposes nothing then', async () => {
    await attacher.attach(KEY, [], undefined, { netns: '/run/netns/pod1', ifname: 'net1' });
    expect(router.exposes).toBe(0);
    expect(kernel.commands.find((c) => c.startsWith('nsenter'))).not.toMatch(/route/);
    expect(kernel.commands.find((c) => c.startsWith('nsenter'))).toMatch(/dev net1/);
  });

  it('answers the same record for the same netns, and re-plugs a record left in another netns', async () => {
    const at = { netns: '/run/netns/pod1', ifname: 'eth0' };
    const first = await attacher.attach(KEY, [], undefined, at);
    kernel.commands = [];
    expect(await attacher.attach(KEY, [], undefined, at)).toEqual(first);
    expect(kernel.commands).toEqual([]);
    const moved = await attacher.attach(KEY, [], undefined, { netns: '/run/netns/pod2', ifname: 'eth0' });
    expect(moved.netns).toBe('/run/netns/pod2');
    expect(kernel.commands[0]).toBe(`ip link del ${hostIfname(KEY)}`);
    expect([...router.held.keys()]).toEqual([KEY]);
  });

  it('detach frees it, also when the namespace (and with it the veth) is already gone', async () => {
    await attacher.attach(KEY, [], undefined, { netns: '/run/netns/pod1', ifname: 'eth0' });
    kernel.links.clear(); // the runtime deleted the netns: the pair went with it
    await attacher.detach(KEY);
    expect(router.held.size).toBe(0);
    expect(attacher.list()).toEqual([]);
  });

  it.each([
    ['a relative netns path', KEY, { netns: 'run/netns/pod1', ifname: 'eth0' }, /absolute path/],
    ['a netns that does not exist', KEY, { netns: '/run/netns/nope', ifname: 'eth0' }, /no network namespace at/],
    ['an interface name with a colon', KEY, { netns: '/run/netns/pod1', ifname: 'eth0:1' }, /invalid interface name/],
    ['an interface name too long', KEY, { netns: '/run/netns/pod1', ifname: 'a'.repeat(16) }, /invalid interface name/],
    ['an owner key with a slash', 'net/c1', { netns: '/run/netns/pod1', ifname: 'eth0' }, /invalid owner key/],
  ])('refuses %s before touching anything', async (_what, key, at, msg) => {
    await expect(attacher.attach(key, [], undefined, at)).rejects.toThrow(msg);
    expect(kernel.commands).toEqual([]);
    expect(router.held.size).toBe(0);
  });

  it('restores an attachment by path after a restart (its gso cap goes in by path too)', async () => {
    const a = await attacher.attach(KEY, [], undefined, { netns: '/run/netns/pod1', ifname: 'eth0' });
    kernel.commands = [];
    const again = new Attacher(router as unknown as Router, RANGE, noopLogger, () => undefined);
    await again.restore([a]);
    expect(again.list()).toEqual([a]);
    expect(kernel.commands).toContain(`nsenter --net=/run/netns/pod1 ip link set eth0 gso_max_size ${GSO_MAX_BYTES}`);
  });
});
