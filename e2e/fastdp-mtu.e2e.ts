/**
 * The fast path proves its MTU, not only its heartbeats (issue #14): host 2 drops, without a
 * word, every IPv4 packet longer than 1400 bytes arriving on its underlay (an nftables rule in its own
 * namespace: what a smaller MTU somewhere on the path that sends no ICMP does), so host 1's
 * full-size VXLAN frames (weft-vx MTU 1450 + 50 = 1500 bytes) never arrive while the small
 * heartbeats do. Host 1 must put host 2 on sleeve, saying why, and its containers' large
 * packets must still arrive (sleeve finds the path MTU by probing and answers "fragmentation
 * needed"); without the MTU proof they would vanish into weft-vx. Host 2's frames to host 1 do
 * cross, but host 1's heartbeats say its proof failed, so host 2 uses sleeve too: both ends on
 * the same path (host 2 has no fast-path route: checked below). Both hosts filter reverse paths
 * loosely (rp_filter 2, systemd's default); weft-vx and the TUN device carry an IPv4 address so
 * that loose mode lets in what arrives on the device the route back does not use
 * (e2e/fastdp-transition.e2e.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, Lab, type Netns, requireRoot, waitUntil } from '../lab/netns.js';
import { launch, removeStateDirs, status, waitPeers, weft } from './weft.js';

const reason = requireRoot();
const FLAGS = ['--peer-timeout', '3000', '--no-dns'];

interface PeerJson {
  addr?: string;
  encap: string;
  encapReason?: string;
  state: string;
}

async function peerOf(h: Host, peer: Host): Promise<PeerJson | undefined> {
  return ((await status(h)) as unknown as { peers: PeerJson[] }).peers.find((p) => p.addr === peer.underlayIp);
}

describe.skipIf(reason)('kernel fast path: a path that drops full-size VXLAN frames', () => {
  let topo: Lab;
  let h1: Host;
  let h2: Host;
  let c1: Netns;
  let c2: Netns;
  let a2 = '';

  beforeAll(async () => {
    topo = await Lab.create({ hosts: 2 });
    [h1, h2] = topo.hosts as [Host, Host];
    for (const h of [h1, h2])
      for (const k of ['all', 'default']) await h.exec('sysctl', ['-qw', `net.ipv4.conf.${k}.rp_filter=2`]);
    await h2.exec('nft', ['-f', '-'], {
      input: `table ip weftmtu {\n  chain pre { type filter hook prerouting priority -300; iifname "${h2.underlayDev}" ip length > 1400 drop; }\n}\n`,
    });
    await launch(h1, [], FLAGS); // the default data path: auto
    await launch(h2, [h1.underlayIp], FLAGS);
    await waitPeers(h1, 1);
    await waitPeers(h2, 1);
    c1 = await topo.addNamespace('ma');
    c2 = await topo.addNamespace('mb');
    await weft(h1, ['attach', c1.name]);
    a2 = (await weft(h2, ['attach', c2.name])).stdout.trim();
  });

  afterAll(async () => {
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
  });

  it('puts that peer on sleeve with the reason in status, and the peer its end too', async () => {
    expect((await h1.exec('ip', ['-d', 'link', 'show', 'weft-vx'])).stdout).toMatch(/df set/);
    let last: PeerJson | undefined;
    await waitUntil(
      async () => {
        last = await peerOf(h1, h2);
        return last?.encap === 'sleeve' && /^vxlan: MTU 1450 not carried/.test(last.encapReason ?? '');
      },
      { timeoutMs: 30_000, intervalMs: 200, what: `h1: h2 on sleeve for its MTU (last: ${JSON.stringify(last)})` },
    );
    expect((await weft(h1, ['status', 'peers'])).stdout).toMatch(/ sleeve \(vxlan: MTU 1450 not carried/);
    expect((await h1.exec('ip', ['route', 'show', 'proto', '87'])).stdout.trim()).toBe('');
    // Host 2's frames cross, but host 1 says its own did not: host 2 stays on sleeve too.
    let back: PeerJson | undefined;
    await waitUntil(
      async () => {
        back = await peerOf(h2, h1);
        return back?.encapReason === 'vxlan: MTU not proven by peer';
      },
      { timeoutMs: 30_000, intervalMs: 200, what: `h2: its own proof ok, h1's not (last: ${JSON.stringify(back)})` },
    );
    expect(back?.encap).toBe('sleeve');
    expect((await h2.exec('ip', ['route', 'show', 'proto', '87'])).stdout.trim()).toBe('');
  });

  it('still carries large packets and TCP from the container behind it', async () => {
    // Sleeve finds the path MTU (1400) by probing: the silent drops send no ICMP to learn from.
    await waitUntil(
      async () => {
        const p = (await peerOf(h1, h2)) as { pmtu?: { pmtu: number; state: string } } | undefined;
        return p?.pmtu?.state === 'confirmed' && p.pmtu.pmtu === 1400;
      },
      { timeoutMs: 30_000, intervalMs: 200, what: 'h1: the path MTU to h2 confirmed at 1400' },
    );
    for (const size of [56, 1000, 1300, 1392]) {
      // ping's default PMTU discovery: a "fragmentation needed" from the router ends that ping
      // (iputils stops at an error with a deadline); the container's kernel then sends inner
      // fragments that fit the path, so a second ping of that size gets through.
      await c1.ping(a2, { count: 1, size });
      const r = await c1.ping(a2, { count: 3, intervalS: 0.2, size });
      expect(r.received, `ping -s ${size}: ${r.output}`).toBeGreaterThanOrEqual(2);
    }
    const server = await c2.iperf3Server(5201);
    try {
      const r = await c1.iperf3Client(a2, { seconds: 2 });
      // TCP gets through, slowly: over a path that drops large packets without ICMP, sleeve moves
      // ~0.2 Mbit/s here with `--encap sleeve` on both hosts too (measured: 0.22 Mbit/s, path MTU
      // confirmed at 1400) — a sleeve matter, not the fast path's; the routed path with ICMP in
      // e2e/path-mtu.e2e.ts is fast.
      expect(r.bitsPerSecond).toBeGreaterThan(50_000);
    } finally {
      await server.stop();
    }
    expect((await peerOf(h1, h2))?.encap).toBe('sleeve');
  });
});
