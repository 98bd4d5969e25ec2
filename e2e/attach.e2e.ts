import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, Lab, type Netns, requireRoot, waitUntil } from '../lab/netns.js';
import { launch, removeStateDirs, status, waitPeers, weft } from './weft.js';

const reason = requireRoot();

interface IpamJson {
  state: string;
  owned: number;
  used: number;
  allocations: { addr: string; owner: string }[];
}

async function ipam(h: Host): Promise<IpamJson> {
  return JSON.parse((await weft(h, ['status', 'ipam', '--json'])).stdout) as IpamJson;
}

/**
 * Containers (network namespaces) on two hosts get addresses from IPAM with `weft attach`, reach
 * each other across hosts and on one host by their real addresses, and give them back on detach
 * or when they vanish. Bad attaches leave nothing behind.
 */
describe.skipIf(reason)('weft attach / detach / ps', () => {
  let topo: Lab;
  let h1: Host;
  let h2: Host;
  let c1: Netns;
  let c2: Netns;
  let c3: Netns;
  const addr: Record<string, string> = {};

  beforeAll(async () => {
    topo = await Lab.create({ hosts: 2 });
    [h1, h2] = topo.hosts as [Host, Host];
    c1 = await topo.addNamespace('ca');
    c2 = await topo.addNamespace('cb');
    c3 = await topo.addNamespace('cc');
    await launch(h1, [], ['--container-grace', '1000', '--no-dns']);
    await launch(h2, [h1.underlayIp], ['--container-grace', '1000', '--no-dns']);
    await waitPeers(h1, 1);
    await waitPeers(h2, 1);
  });

  afterAll(async () => {
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
  });

  it('attaches containers on both hosts with addresses from IPAM and prints them', async () => {
    addr.c1 = (await weft(h1, ['attach', c1.name, '--name', 'web'])).stdout.trim();
    addr.c2 = (await weft(h2, ['attach', c2.name])).stdout.trim();
    addr.c3 = (await weft(h1, ['attach', c3.name])).stdout.trim();
    expect(new Set(Object.values(addr)).size).toBe(3);
    for (const a of Object.values(addr)) expect(a).toMatch(/^10\.(3[2-9]|4[0-7])\.\d+\.\d+$/);
    // Idempotent: the same container gets the same address.
    expect((await weft(h1, ['attach', c1.name])).stdout.trim()).toBe(addr.c1);
    const inside = await c1.exec('ip', ['-j', 'addr', 'show', 'ethwe']);
    const info = JSON.parse(inside.stdout) as { mtu: number; addr_info: { local: string; prefixlen: number }[] }[];
    expect(info[0]?.mtu).toBe((await status(h1)).mtu);
    expect(info[0]?.addr_info).toContainEqual(expect.objectContaining({ local: addr.c1, prefixlen: 12 }));
    const ps = (await weft(h1, ['ps'])).stdout;
    expect(ps).toMatch(new RegExp(`^${c1.name} [0-9a-f:]{17} ${addr.c1.replaceAll('.', '\\.')}/12 web$`, 'm'));
    expect(ps).toMatch(new RegExp(`^${c3.name} `, 'm'));
    // Each address is in the share of the host that gave it, and recorded there.
    const i1 = await ipam(h1);
    expect(i1.allocations.map((a) => a.addr)).toEqual(expect.arrayContaining([addr.c1, addr.c3]));
    expect((await ipam(h2)).allocations.map((a) => a.addr)).toEqual([addr.c2]);
  });

  it('routes container to container across hosts and on one host, with real addresses', async () => {
    await waitUntil(async () => (await c1.ping(addr.c2!, { count: 1, timeoutMs: 1_000 })).received === 1, {
      timeoutMs: 15_000,
      what: 'c1 to reach c2',
    });
    expect((await c1.ping(addr.c2!, { count: 3, intervalS: 0.1 })).received).toBe(3);
    expect((await c2.ping(addr.c1!, { count: 3, intervalS: 0.1 })).received).toBe(3);
    expect((await c1.ping(addr.c3!, { count: 3, intervalS: 0.1 })).received).toBe(3);
    // No NAT: the server in c2 sees c1's own address as the source.
    const server = await c2.iperf3Server(5202);
    const r = await c1.iperf3Client(addr.c2!, { seconds: 1, port: 5202 });
    expect(r.bitsPerSecond).toBeGreaterThan(1e6);
    await server.stop();
  });

  it('gives the host an address with expose, so host and containers talk', async () => {
    const e = (await weft(h2, ['expose'])).stdout.trim();
    expect((await weft(h2, ['expose'])).stdout.trim()).toBe(e);
    await waitUntil(async () => (await c1.ping(e, { count: 1, timeoutMs: 1_000 })).received === 1, {
      timeoutMs: 15_000,
      what: 'c1 to reach h2 itself',
    });
    expect((await h2.ping(addr.c2!, { count: 2, intervalS: 0.1 })).received).toBe(2);
  });

  it('attaches with a given address in its own share', async () => {
    const own = (await ipam(h2)).allocations.map((a) => a.addr);
    const [a, b, c, d] = own[0]!.split('.').map(Number) as [number, number, number, number];
    const mine = `${a}.${b}.${c}.${(d + 100) % 250}`;
    const ns = await topo.addNamespace('cg');
    expect((await weft(h2, ['attach', `${mine}/12`, ns.name])).stdout.trim()).toBe(mine);
    await waitUntil(async () => (await c1.ping(mine, { count: 1, timeoutMs: 1_000 })).received === 1, {
      timeoutMs: 15_000,
      what: 'c1 to reach the container with the given address',
    });
    await weft(h2, ['detach', ns.name]);
    expect((await ipam(h2)).allocations.map((x) => x.addr)).not.toContain(mine);
  });

  it('refuses bad attaches cleanly, leaving no interface and no reserved address behind', async () => {
    const links = async () =>
      (await h1.exec('ip', ['-br', 'link'])).stdout.split('\n').filter((l) => l.startsWith('vw'));
    const before = await links();
    const usedBefore = (await ipam(h1)).allocations;
    const other = (await ipam(h2)).allocations[0]!.addr;
    const spare = await topo.addNamespace('cs');
    const cases: [string[], RegExp][] = [
      [['attach', '10.99.0.1/12', spare.name], /outside the overlay range/],
      [['attach', '10.32.0.0/12', spare.name], /network or broadcast/],
      [['attach', 'nosuchns'], /no network namespace "nosuchns"/],
      [['attach', 'bad/name'], /invalid/],
      [['attach', '10.32.5.5/12', c1.name], /already attached with /],
      [['attach', `${other}/12`, spare.name], /address space of peer/],
      [['attach', `${addr.c3}/12`, spare.name], /already used by|in use by/],
      [['detach', 'nosuchns'], /is not attached/],
    ];
    for (const [args, msg] of cases) {
      const r = await weft(h1, args, { allowFail: true });
      expect(r.code, args.join(' ')).not.toBe(0);
      expect(r.stderr.trim()).toMatch(msg);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    expect(await links()).toEqual(before);
    expect((await ipam(h1)).allocations).toEqual(usedBefore);
    expect((await spare.exec('ip', ['-br', 'link'])).stdout).not.toMatch(/ethwe/);
  });

  it('detaches a container: its address stops working and is handed out again', async () => {
    await weft(h1, ['detach', c3.name]);
    expect((await weft(h1, ['ps'])).stdout).not.toMatch(c3.name);
    expect((await ipam(h1)).allocations.map((a) => a.addr)).not.toContain(addr.c3);
    expect((await c1.ping(addr.c3!, { count: 1, timeoutMs: 1_500 })).received).toBe(0);
    const ns = await topo.addNamespace('cd');
    // Lowest free first: the freed address is the next one given.
    expect((await weft(h1, ['attach', ns.name])).stdout.trim()).toBe(addr.c3);
    expect((await c1.ping(addr.c3!, { count: 2, intervalS: 0.1 })).received).toBe(2);
    addr.cd = addr.c3!;
  });

  it('frees the address of a container that went away without detach, after the grace period', async () => {
    const ns = await topo.addNamespace('ce');
    const a = (await weft(h2, ['attach', ns.name])).stdout.trim();
    await h2.exec('ip', ['netns', 'del', ns.name]);
    await waitUntil(async () => !(await ipam(h2)).allocations.some((x) => x.addr === a), {
      timeoutMs: 15_000,
      what: `h2 to free ${a} of the vanished container`,
    });
    expect((await weft(h2, ['ps'])).stdout).not.toMatch(ns.name);
  });

  it('keeps containers and their addresses across a router restart', async () => {
    await weft(h2, ['stop']);
    await launch(h2, [], ['--no-dns']);
    expect((await weft(h2, ['ps'])).stdout).toMatch(`${c2.name} `);
    expect((await ipam(h2)).allocations.map((x) => x.addr)).toContain(addr.c2);
    await waitPeers(h1, 1);
    await waitPeers(h2, 1);
    await waitUntil(async () => (await c1.ping(addr.c2!, { count: 1, timeoutMs: 1_000 })).received === 1, {
      timeoutMs: 15_000,
      what: 'c1 to reach c2 again',
    });
  });
});
