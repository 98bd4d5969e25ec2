import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, type Netns, requireRoot, Topology } from './netns.js';
import { launch, removeStateDirs, status, waitPeers, weft } from './weft.js';

const reason = requireRoot();

/**
 * Containers (network namespaces) attached with explicit addresses on two hosts reach each other
 * across hosts and on the same host, by their real addresses. Automatic allocation is IPAM (#4).
 */
describe.skipIf(reason)('weft attach / detach / ps', () => {
  let topo: Topology;
  let h1: Host;
  let h2: Host;
  let c1: Netns;
  let c2: Netns;
  let c3: Netns;

  beforeAll(async () => {
    topo = await Topology.create({ hosts: 2 });
    [h1, h2] = topo.hosts as [Host, Host];
    c1 = await topo.addNamespace('ca');
    c2 = await topo.addNamespace('cb');
    c3 = await topo.addNamespace('cc');
    await launch(h1, []);
    await launch(h2, [h1.underlayIp]);
    await waitUntilConnected(h1);
  });

  afterAll(async () => {
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
  });

  async function waitUntilConnected(h: Host): Promise<void> {
    for (let i = 0; i < 100; i++) {
      if ((await status(h)).peers.some((p) => p.state === 'established')) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${h.name} did not connect`);
  }

  it('attaches containers on both hosts and prints their addresses', async () => {
    expect((await weft(h1, ['attach', '10.32.1.1/12', c1.name, '--name', 'web'])).stdout.trim()).toBe('10.32.1.1');
    expect((await weft(h2, ['attach', '10.32.2.1/12', c2.name])).stdout.trim()).toBe('10.32.2.1');
    expect((await weft(h1, ['attach', '10.32.1.2/12', c3.name])).stdout.trim()).toBe('10.32.1.2');
    // Idempotent.
    expect((await weft(h1, ['attach', '10.32.1.1/12', c1.name])).stdout.trim()).toBe('10.32.1.1');
    const inside = await c1.exec('ip', ['-j', 'addr', 'show', 'ethwe']);
    const info = JSON.parse(inside.stdout) as { mtu: number; addr_info: { local: string; prefixlen: number }[] }[];
    expect(info[0]?.mtu).toBe((await status(h1)).mtu);
    expect(info[0]?.addr_info).toContainEqual(expect.objectContaining({ local: '10.32.1.1', prefixlen: 12 }));
    const ps = (await weft(h1, ['ps'])).stdout;
    expect(ps).toMatch(new RegExp(`^${c1.name} [0-9a-f:]{17} 10\\.32\\.1\\.1/12 web$`, 'm'));
    expect(ps).toMatch(new RegExp(`^${c3.name} `, 'm'));
  });

  it('routes container to container across hosts and on one host, with real addresses', async () => {
    await waitPeers(h1, 1);
    await waitPeers(h2, 1);
    expect((await c1.ping('10.32.2.1', { count: 3, intervalS: 0.1 })).received).toBe(3);
    expect((await c2.ping('10.32.1.1', { count: 3, intervalS: 0.1 })).received).toBe(3);
    expect((await c1.ping('10.32.1.2', { count: 3, intervalS: 0.1 })).received).toBe(3);
    // No NAT: c2 sees c1's own address as the source.
    const server = c2.spawn('iperf3', ['-s', '-1', '-p', '5202']);
    await new Promise((r) => setTimeout(r, 300));
    const r = await c1.iperf3Client('10.32.2.1', { seconds: 1, port: 5202 });
    expect(r.bitsPerSecond).toBeGreaterThan(1e6);
    server.kill();
    const peers = (await status(h2)).peers;
    expect(peers[0]?.cidrs).toEqual(expect.arrayContaining(['10.32.1.1/32', '10.32.1.2/32']));
  });

  it('refuses bad attaches cleanly, leaving no interface behind', async () => {
    const links = async () =>
      (await h1.exec('ip', ['-br', 'link'])).stdout.split('\n').filter((l) => l.startsWith('vw'));
    const before = await links();
    const cases: [string[], RegExp][] = [
      [['attach', '10.99.0.1/12', c3.name], /outside the overlay range/],
      [['attach', '10.32.0.0/12', c3.name], /network or broadcast/],
      [['attach', '10.32.5.5/12', 'nosuchns'], /no network namespace "nosuchns"/],
      [['attach', '10.32.5.5/12', c1.name], /already attached with 10\.32\.1\.1\/12/],
      [['attach', '10.32.2.1/12', c3.name], /already attached|already in use by peer/],
      [['attach', c3.name], /give the container an address/],
      [['detach', 'nosuchns'], /is not attached/],
    ];
    for (const [args, msg] of cases) {
      const r = await weft(h1, args, { allowFail: true });
      expect(r.code, args.join(' ')).not.toBe(0);
      expect(r.stderr.trim()).toMatch(msg);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    expect(await links()).toEqual(before);
  });

  it('detaches a container: its address stops working and can be reused', async () => {
    await weft(h1, ['detach', c3.name]);
    expect((await weft(h1, ['ps'])).stdout).not.toMatch(c3.name);
    expect((await c1.ping('10.32.1.2', { count: 1, timeoutMs: 1_500 })).received).toBe(0);
    const ns = await topo.addNamespace('cd');
    expect((await weft(h1, ['attach', '10.32.1.2/12', ns.name])).stdout.trim()).toBe('10.32.1.2');
    expect((await c1.ping('10.32.1.2', { count: 2, intervalS: 0.1 })).received).toBe(2);
  });

  it('keeps containers attached across a router restart', async () => {
    await weft(h2, ['stop']);
    await launch(h2, []);
    expect((await weft(h2, ['ps'])).stdout).toMatch(c2.name);
    await waitPeers(h1, 1);
    await waitPeers(h2, 1);
    expect((await c1.ping('10.32.2.1', { count: 3, intervalS: 0.1 })).received).toBe(3);
  });
});
