/**
 * Interop on the fast path (issue #14 part 3): host A runs Weft on the default data path (auto:
 * the kernel's weft-vx owns the VXLAN port), host B runs Weft with userspace VXLAN (`--encap
 * vxlan`), host C runs no router at all — only a kernel vxlan device (`ip link add … type vxlan`,
 * Weft's VNI and port, all-zeros fdb entries towards A and B). A and B name C with `--vxlan-peer`.
 *
 * Every pair exchanges ping and TCP (iperf3) between overlay addresses: containers attached on A
 * and B, and C's own vxlan address, which lies in A's IPAM share (a bare host's addresses are the
 * ones no Weft peer owns or announces, as in userspace VXLAN mode). A↔C goes through weft-vx (its
 * counters grow while the TUN device's stay nearly flat); B↔C goes from C straight to B's VXLAN
 * socket and back through A (B's route for C's address is A's share: sleeve to A, then weft-vx);
 * A↔B is sleeve (B has no fast path). Onward: with a route on C through A's exposed address,
 * C reaches a container on D (a fourth host, Weft on auto: A↔D on the fast path) and one on B,
 * A's kernel forwarding what arrives on weft-vx out through weft-vx or the TUN device (sleeve).
 * kill -9 of A and a relaunch leave no stale fdb, proxy or route entry; a relaunch without
 * --vxlan-peer removes the bare host's entries.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, Lab, type Netns, requireRoot, waitUntil } from '../lab/netns.js';
import { addBareVxlan, expose, launch, removeStateDirs, routerPid, status, waitPeers, weft } from './weft.js';

const reason = requireRoot();
/** VNI is Weft's default VXLAN network identifier (router/constants.ts VXLAN_VNI_DEFAULT). */
const VNI = 22342;
const COMMON = ['--no-dns', '--peer-timeout', '3000'];

interface PathJson {
  addr: string;
  via: string;
  reason?: string;
  seen: string[];
  routed?: string[];
}

interface StatusJsonish {
  device: string;
  vxlanPeerPaths?: PathJson[];
  peers: { addr?: string; encap: string; state: string }[];
  ipam: { allocations: { addr: string }[] };
}

async function full(h: Host): Promise<StatusJsonish> {
  return (await status(h)) as unknown as StatusJsonish;
}

async function linkStats(ns: Netns, dev: string): Promise<{ tx: number; rx: number; txBytes: number }> {
  const read = async (f: string) =>
    Number((await ns.exec('cat', [`/sys/class/net/${dev}/statistics/${f}`])).stdout.trim());
  return { tx: await read('tx_packets'), rx: await read('rx_packets'), txBytes: await read('tx_bytes') };
}

const u32 = (ip: string): number => ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);
const dotted = (a: number): string => [a >>> 24, (a >>> 16) & 255, (a >>> 8) & 255, a & 255].join('.');

/** tcpBothWays runs 2 s of iperf3 from `client` to `server` at `dst`, and reversed. */
async function tcpBothWays(client: Netns, server: Netns, dst: string): Promise<void> {
  const s = await server.iperf3Server(5201);
  try {
    const up = await client.iperf3Client(dst, { seconds: 2 });
    const down = await client.iperf3Client(dst, { seconds: 2, reverse: true });
    expect(up.bitsPerSecond, `${client.name} → ${dst}`).toBeGreaterThan(1e6);
    expect(down.bitsPerSecond, `${dst} → ${client.name}`).toBeGreaterThan(1e6);
  } finally {
    await s.stop();
  }
}

describe.skipIf(reason)('a fast-path host, a userspace-VXLAN host and a bare kernel vxlan host', () => {
  let topo: Lab;
  let a: Host;
  let b: Host;
  let c: Host;
  let d: Host;
  let ca: Netns;
  let cb: Netns;
  let cd: Netns;
  let ipA: string;
  let ipB: string;
  let ipD: string;
  /** exposedA is A's own overlay address: C's gateway to the rest of the overlay. */
  let exposedA: string;
  /** ipC is C's vxlan address: in A's share, allocated to nobody. */
  let ipC: string;
  let flagsA: string[];

  beforeAll(async () => {
    topo = await Lab.create({ hosts: 4 });
    [a, b, c, d] = topo.hosts as [Host, Host, Host, Host];
    flagsA = [...COMMON, '--vxlan-peer', c.underlayIp];
    await launch(a, [], flagsA);
    await launch(b, [a.underlayIp], [...COMMON, '--encap', 'vxlan', '--vxlan-peer', c.underlayIp]);
    await launch(d, [a.underlayIp], COMMON);
    await waitPeers(a, 2);
    await waitPeers(b, 1);
    await waitPeers(d, 1);
    ca = await topo.addNamespace('ca');
    cb = await topo.addNamespace('cb');
    cd = await topo.addNamespace('cd');
    ipA = (await weft(a, ['attach', ca.name])).stdout.trim();
    ipB = (await weft(b, ['attach', cb.name])).stdout.trim();
    ipD = (await weft(d, ['attach', cd.name])).stdout.trim();
    exposedA = await expose(a);
    // C's address: the top of the largest block of A's share that A routes to bare hosts.
    let routed: string[] = [];
    await waitUntil(
      async () => {
        routed = (await full(a)).vxlanPeerPaths?.[0]?.routed ?? [];
        return routed.length > 0;
      },
      { timeoutMs: 10_000, what: "A's share routed through weft-vx" },
    );
    const [net, len] = [...routed]
      .map((r) => r.split('/') as [string, string])
      .sort((x, y) => Number(x[1]) - Number(y[1]))[0] as [string, string];
    ipC = dotted(u32(net) + 2 ** (32 - Number(len)) - 2);
    const used = (await full(a)).ipam.allocations.map((x) => x.addr);
    expect(used).not.toContain(ipC);

    await addBareVxlan(c, VNI, `${ipC}/12`, [a.underlayIp, b.underlayIp]);
  });

  afterAll(async () => {
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
  });

  it('says how each router reaches the bare host: A through weft-vx, B through its VXLAN socket', async () => {
    const pa = (await full(a)).vxlanPeerPaths;
    expect(pa).toEqual([expect.objectContaining({ addr: c.underlayIp, via: 'fastdp' })]);
    expect((await full(b)).vxlanPeerPaths).toEqual([expect.objectContaining({ addr: c.underlayIp, via: 'vxlan' })]);
    const text = (await weft(a, ['status', 'peers'])).stdout;
    expect(text).toMatch(new RegExp(`${c.underlayIp.replace(/\./g, '\\.')} {2}kernel vxlan host {2}fastdp \\(weft-vx`));
    // The kernel state: a flood entry towards C, a proxy entry for the container, A's share on-link.
    const fdb = (await a.exec('bridge', ['fdb', 'show', 'dev', 'weft-vx'])).stdout;
    expect(fdb).toMatch(new RegExp(`00:00:00:00:00:00 dst ${c.underlayIp.replace(/\./g, '\\.')} self permanent`));
    expect((await a.exec('ip', ['neigh', 'show', 'proxy', 'dev', 'weft-vx'])).stdout).toContain(ipA);
    expect((await a.exec('ip', ['route', 'show', 'dev', 'weft-vx', 'proto', '87'])).stdout).toMatch(/scope link/);
    // Proxy ARP answers at once (the kernel's default waits up to 0.8 s).
    expect((await a.exec('ip', ['ntable', 'show', 'dev', 'weft-vx', 'name', 'arp_cache'])).stdout).toMatch(
      /proxy_delay 0\b/,
    );
  });

  it('A ↔ C: ping and TCP both ways through weft-vx, the TUN device nearly flat', async () => {
    const tun = (await full(a)).device;
    const tunBefore = await linkStats(a, tun);
    const vxBefore = await linkStats(a, 'weft-vx');
    // C speaks first (as a bare host learns nothing before), then A's container.
    expect((await c.ping(ipA, { count: 5, intervalS: 0.05 })).received).toBe(5);
    expect((await ca.ping(ipC, { count: 5, intervalS: 0.05 })).received).toBe(5);
    await tcpBothWays(ca, c, ipC);
    const tunAfter = await linkStats(a, tun);
    const vxAfter = await linkStats(a, 'weft-vx');
    const vxTx = vxAfter.tx - vxBefore.tx;
    expect(vxAfter.txBytes - vxBefore.txBytes).toBeGreaterThan(1_000_000);
    expect(vxAfter.rx - vxBefore.rx).toBeGreaterThan(100);
    expect(tunAfter.tx - tunBefore.tx + (tunAfter.rx - tunBefore.rx)).toBeLessThan(Math.max(20, vxTx / 100));
    // A learned C's address by ARP (a kernel neighbour, not a permanent entry of Weft's) and says so.
    expect((await a.exec('ip', ['neigh', 'show', ipC, 'dev', 'weft-vx'])).stdout).not.toMatch(/PERMANENT/);
    expect((await full(a)).vxlanPeerPaths?.[0]?.seen).toContain(ipC);
    expect((await weft(a, ['status', 'peers'])).stdout).toMatch(new RegExp(`seen ${ipC.replace(/\./g, '\\.')}`));
  });

  it('B ↔ C: ping and TCP both ways (C straight to B, B back through A)', async () => {
    expect((await c.ping(ipB, { count: 5, intervalS: 0.05 })).received).toBe(5);
    expect((await cb.ping(ipC, { count: 5, intervalS: 0.05 })).received).toBe(5);
    await tcpBothWays(cb, c, ipC);
  });

  it('A ↔ B: ping and TCP both ways (sleeve: B has no fast path)', async () => {
    expect((await ca.ping(ipB, { count: 5, intervalS: 0.05 })).received).toBe(5);
    expect((await cb.ping(ipA, { count: 5, intervalS: 0.05 })).received).toBe(5);
    await tcpBothWays(ca, cb, ipB);
  });

  it('onward: C reaches a fast-path peer and a sleeve peer through A, which forwards in the kernel', async () => {
    await waitUntil(async () => (await full(a)).peers.some((p) => p.addr === d.underlayIp && p.encap === 'fastdp'), {
      timeoutMs: 30_000,
      intervalMs: 200,
      what: 'A reaches D on the fast path',
    });
    const vx = c.ifname('vx');
    const tun = (await full(a)).device;
    // Through the fast path: weft-vx in, weft-vx out (towards D), the TUN device not involved.
    await c.ip('route', 'add', `${ipD}/32`, 'via', exposedA, 'dev', vx, 'onlink');
    let tunBefore = await linkStats(a, tun);
    const vxBefore = await linkStats(a, 'weft-vx');
    expect((await c.ping(ipD, { count: 10, intervalS: 0.05 })).received).toBe(10);
    const vxAfter = await linkStats(a, 'weft-vx');
    // Each echo and each reply crosses A's weft-vx twice (in from one side, out to the other).
    expect(vxAfter.rx - vxBefore.rx).toBeGreaterThanOrEqual(20);
    expect(vxAfter.tx - vxBefore.tx).toBeGreaterThanOrEqual(20);
    let tunAfter = await linkStats(a, tun);
    expect(tunAfter.tx - tunBefore.tx + (tunAfter.rx - tunBefore.rx)).toBeLessThan(10);
    // Through sleeve: weft-vx in, the TUN device out towards B (and back).
    await c.ip('route', 'add', `${ipB}/32`, 'via', exposedA, 'dev', vx, 'onlink');
    tunBefore = await linkStats(a, tun);
    expect((await c.ping(ipB, { count: 10, intervalS: 0.05 })).received).toBe(10);
    tunAfter = await linkStats(a, tun);
    expect(tunAfter.rx - tunBefore.rx).toBeGreaterThanOrEqual(10);
    expect(tunAfter.tx - tunBefore.tx).toBeGreaterThanOrEqual(10);
    await c.ip('route', 'del', `${ipB}/32`);
  });

  it('kill -9 of A and a relaunch reconcile weft-vx: stale flood, proxy and route entries removed', async () => {
    const pid = await routerPid(a);
    process.kill(pid, 'SIGKILL');
    await waitUntil(async () => (await a.exec('kill', ['-0', String(pid)], { allowFail: true })).code !== 0, {
      timeoutMs: 10_000,
      what: 'router gone',
    });
    expect((await a.exec('ip', ['link', 'show', 'weft-vx'])).code).toBe(0);
    // What a crashed router with other bare hosts may leave behind.
    const ghost = '192.168.254.9';
    await a.exec('bridge', ['fdb', 'append', '00:00:00:00:00:00', 'dst', ghost, 'dev', 'weft-vx', 'self', 'permanent']);
    await a.exec('ip', ['neigh', 'add', 'proxy', '10.47.1.1', 'dev', 'weft-vx']);
    await a.exec('ip', ['route', 'add', '10.47.2.0/24', 'dev', 'weft-vx', 'proto', '87']);
    await launch(a, [], flagsA);
    await waitPeers(a, 2);
    await waitUntil(
      async () => {
        const fdb = (await a.exec('bridge', ['fdb', 'show', 'dev', 'weft-vx'])).stdout;
        return !fdb.includes(ghost) && fdb.includes(`00:00:00:00:00:00 dst ${c.underlayIp} self permanent`);
      },
      { timeoutMs: 10_000, what: "the ghost flood entry gone, C's back" },
    );
    const proxies = (await a.exec('ip', ['neigh', 'show', 'proxy', 'dev', 'weft-vx'])).stdout;
    expect(proxies).not.toContain('10.47.1.1');
    expect(proxies).toContain(ipA);
    expect((await a.exec('ip', ['route'])).stdout).not.toMatch(/10\.47\.2\.0/);
    expect((await c.ping(ipA, { count: 3, intervalS: 0.05 })).received).toBe(3);
    expect((await ca.ping(ipC, { count: 3, intervalS: 0.05 })).received).toBe(3);
    expect((await cb.ping(ipC, { count: 3, intervalS: 0.05 })).received).toBe(3);
    expect((await c.ping(ipD, { count: 3, intervalS: 0.05 })).received).toBe(3);
  });

  it('a relaunch without --vxlan-peer removes the bare host entries (and status lists none)', async () => {
    const pid = await routerPid(a);
    process.kill(pid, 'SIGKILL');
    await waitUntil(async () => (await a.exec('kill', ['-0', String(pid)], { allowFail: true })).code !== 0, {
      timeoutMs: 10_000,
      what: 'router gone',
    });
    await launch(a, [], COMMON);
    await waitPeers(a, 2);
    await waitUntil(
      async () => !(await a.exec('bridge', ['fdb', 'show', 'dev', 'weft-vx'])).stdout.includes('00:00:00:00:00:00'),
      { timeoutMs: 10_000, what: 'no flood entry left' },
    );
    expect((await a.exec('ip', ['neigh', 'show', 'proxy', 'dev', 'weft-vx'])).stdout.trim()).toBe('');
    expect((await a.exec('ip', ['route', 'show', 'dev', 'weft-vx', 'proto', '87'])).stdout).not.toMatch(/scope link/);
    expect((await full(a)).vxlanPeerPaths).toBeUndefined();
    // A's own peers are unaffected: the container still reaches B's.
    expect((await ca.ping(ipB, { count: 3, intervalS: 0.05 })).received).toBe(3);
  });
});
