/**
 * The kernel fast path (issue #14): two hosts on `--encap auto` carry ping and TCP through the
 * kernel's own vxlan device weft-vx, proven by counters (the TUN device's stay flat, weft-vx's
 * grow); blocking the VXLAN port on one host moves that peer back to sleeve with the reason in
 * status while traffic continues, unblocking brings the fast path back; a router killed with
 * SIGKILL leaves weft-vx behind and its relaunch removes the stale entries; `weft stop` removes
 * the device; with a password the fast path is not used.
 */
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, Lab, type Netns, requireRoot, waitUntil } from '../lab/netns.js';
import { expose, launch, removeStateDirs, routerPid, status, waitPeers, weft } from './weft.js';

const reason = requireRoot();
const VXLAN_PORT = 6784;
/** PEER_TIMEOUT_MS is short so that a fallback is quick; the waits below allow for a loaded machine. */
const PEER_TIMEOUT_MS = 3000;
const FLAGS = ['--encap', 'auto', '--peer-timeout', String(PEER_TIMEOUT_MS), '--no-dns'];

interface PeerJson {
  name: string;
  encap: string;
  encapReason?: string;
  state: string;
}

async function fullStatus(h: Host): Promise<{ device: string; vni: number; peers: PeerJson[] }> {
  return (await status(h)) as unknown as { device: string; vni: number; peers: PeerJson[] };
}

/** peerOf is `peer` as `h`'s status describes it. */
async function peerOf(h: Host, peer: Host): Promise<PeerJson | undefined> {
  return (await fullStatus(h)).peers.find((p) => (p as { addr?: string }).addr === peer.underlayIp);
}

/** waitEncap waits until `h` reaches `peer` directly over `encap`. */
async function waitEncap(h: Host, peer: Host, encap: string, timeoutMs = 30_000): Promise<PeerJson> {
  let last: PeerJson | undefined;
  await waitUntil(
    async () => {
      last = await peerOf(h, peer);
      return last?.encap === encap && last.state === 'established';
    },
    { timeoutMs, intervalMs: 200, what: `${h.name}: peer on ${encap} (last: ${JSON.stringify(last)})` },
  );
  return last as PeerJson;
}

async function linkStats(ns: Netns, dev: string): Promise<{ tx: number; rx: number; txBytes: number }> {
  const read = async (f: string) =>
    Number((await ns.exec('cat', [`/sys/class/net/${dev}/statistics/${f}`])).stdout.trim());
  return { tx: await read('tx_packets'), rx: await read('rx_packets'), txBytes: await read('tx_bytes') };
}

describe.skipIf(reason)('kernel fast path (--encap auto)', () => {
  let topo: Lab;
  let h1: Host;
  let h2: Host;
  /** h3 is a Weft host without a fast path (userspace VXLAN), launched late. */
  let h3: Host;
  let a1: string;
  let a2: string;
  let tun1: string;

  beforeAll(async () => {
    topo = await Lab.create({ hosts: 3 });
    [h1, h2, h3] = topo.hosts as [Host, Host, Host];
    await launch(h1, [], FLAGS);
    await launch(h2, [h1.underlayIp], FLAGS);
    a1 = await expose(h1);
    a2 = await expose(h2);
    await waitPeers(h1, 1);
    await waitPeers(h2, 1);
    tun1 = (await fullStatus(h1)).device;
  });

  afterAll(async () => {
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
  });

  it('creates weft-vx with the VNI, the VXLAN port and nolearning, and uses it towards the peer', async () => {
    const d = (await h1.exec('ip', ['-d', 'link', 'show', 'weft-vx'])).stdout;
    const s = await fullStatus(h1);
    expect(d).toMatch(new RegExp(`vxlan id ${s.vni} .*dstport ${VXLAN_PORT} nolearning`));
    expect(d).toMatch(/mtu 1450/);
    await waitEncap(h1, h2, 'fastdp');
    await waitEncap(h2, h1, 'fastdp');
    expect((await weft(h1, ['status', 'peers'])).stdout).toMatch(/ fastdp {2}established/);
    expect((await weft(h1, ['status'])).stdout).toMatch(/Fast path: weft-vx up/);
    // The peer's IPAM share is routed through weft-vx (proto 87 = Weft), more specific than the TUN's range.
    expect((await h1.exec('ip', ['route', 'show', 'proto', '87'])).stdout).toMatch(
      new RegExp(`via ${h2.underlayIp.replace(/\./g, '\\.')} dev weft-vx .*onlink`),
    );
    const metrics = (await h1.exec('curl', ['-sf', 'http://127.0.0.1:6784/metrics'])).stdout;
    expect(metrics).toMatch(/weft_peer_encap\{encap="fastdp"\} 1/);
    expect(metrics).toMatch(/weft_peer_encap\{encap="sleeve"\} 0/);
  });

  it('carries ping and TCP through the kernel: the TUN device stays flat, weft-vx counts the traffic', async () => {
    await waitEncap(h1, h2, 'fastdp');
    await waitEncap(h2, h1, 'fastdp');
    const tunBefore = await linkStats(h1, tun1);
    const vxBefore = await linkStats(h1, 'weft-vx');
    const p = await h1.ping(a2, { count: 5, intervalS: 0.05 });
    expect(p.received).toBe(5);
    const server = await h2.iperf3Server(5201);
    try {
      const r = await h1.iperf3Client(a2, { seconds: 2 });
      expect(r.bitsPerSecond).toBeGreaterThan(8_000_000);
    } finally {
      await server.stop();
    }
    const tunAfter = await linkStats(h1, tun1);
    const vxAfter = await linkStats(h1, 'weft-vx');
    const vxTx = vxAfter.tx - vxBefore.tx;
    expect(vxAfter.txBytes - vxBefore.txBytes).toBeGreaterThan(1_000_000);
    expect(vxAfter.rx - vxBefore.rx).toBeGreaterThan(5);
    // Only the odd packet may still cross the TUN device; the data did not.
    expect(tunAfter.tx - tunBefore.tx + (tunAfter.rx - tunBefore.rx)).toBeLessThan(Math.max(20, vxTx / 100));
  });

  it('carries containers attached on fast-path hosts through weft-vx', async () => {
    await waitEncap(h1, h2, 'fastdp');
    const c1 = await topo.addNamespace('ca');
    const c2 = await topo.addNamespace('cb');
    const ip1 = (await weft(h1, ['attach', c1.name])).stdout.trim();
    const ip2 = (await weft(h2, ['attach', c2.name])).stdout.trim();
    const vxBefore = await linkStats(h1, 'weft-vx');
    const tunBefore = await linkStats(h1, tun1);
    expect((await c1.ping(ip2, { count: 20, intervalS: 0.02 })).received).toBe(20);
    expect((await c2.ping(ip1, { count: 20, intervalS: 0.02 })).received).toBe(20);
    const vxAfter = await linkStats(h1, 'weft-vx');
    expect(vxAfter.tx - vxBefore.tx).toBeGreaterThanOrEqual(40);
    expect(vxAfter.rx - vxBefore.rx).toBeGreaterThanOrEqual(40);
    expect((await linkStats(h1, tun1)).tx - tunBefore.tx).toBeLessThan(20);
    await weft(h1, ['detach', c1.name]);
    await weft(h2, ['detach', c2.name]);
  });

  it('falls back to sleeve when the VXLAN port is blocked (status says why), and comes back when unblocked', async () => {
    await waitEncap(h1, h2, 'fastdp');
    await h2.exec('nft', ['-f', '-'], {
      input: `table inet weftvx {\n  chain in { type filter hook input priority 0; udp dport ${VXLAN_PORT} drop; }\n}\n`,
    });
    try {
      const fell = await waitEncap(h1, h2, 'sleeve');
      expect(fell.encapReason).toMatch(/^vxlan blocked: no heartbeat for \d+ s$/);
      expect((await weft(h1, ['status', 'peers'])).stdout).toMatch(/ sleeve \(vxlan blocked: no heartbeat for \d+ s\)/);
      await waitEncap(h2, h1, 'sleeve');
      expect((await h1.exec('ip', ['route', 'show', 'proto', '87'])).stdout.trim()).toBe('');
      const tunBefore = await linkStats(h1, tun1);
      const p = await h1.ping(a2, { count: 5, intervalS: 0.05 });
      expect(p.received).toBe(5);
      expect((await linkStats(h1, tun1)).tx - tunBefore.tx).toBeGreaterThanOrEqual(5);
    } finally {
      await h2.exec('nft', ['delete', 'table', 'inet', 'weftvx'], { allowFail: true });
    }
    await waitEncap(h1, h2, 'fastdp');
    await waitEncap(h2, h1, 'fastdp');
    expect((await h1.ping(a2, { count: 3, intervalS: 0.05 })).received).toBe(3);
  });

  it('a relaunch after kill -9 reconciles weft-vx: stale fdb, neighbour and route entries are removed', async () => {
    const pid = await routerPid(h1);
    process.kill(pid, 'SIGKILL');
    await waitUntil(async () => (await h1.exec('kill', ['-0', String(pid)], { allowFail: true })).code !== 0, {
      timeoutMs: 10_000,
      what: 'router gone',
    });
    // What a crashed router may leave: the device and its entries, plus some for a peer that is gone.
    expect((await h1.exec('ip', ['link', 'show', 'weft-vx'])).code).toBe(0);
    const ghost = '192.168.254.9';
    await h1.exec('bridge', ['fdb', 'add', '02:99:99:99:99:99', 'dst', ghost, 'dev', 'weft-vx', 'self', 'permanent']);
    await h1.exec('ip', ['neigh', 'add', ghost, 'lladdr', '02:99:99:99:99:99', 'dev', 'weft-vx', 'nud', 'permanent']);
    await h1.exec('ip', ['route', 'add', '10.47.0.0/24', 'via', ghost, 'dev', 'weft-vx', 'onlink', 'proto', '87']);
    await launch(h1, [], FLAGS);
    await waitPeers(h1, 1);
    await waitEncap(h1, h2, 'fastdp');
    await waitEncap(h2, h1, 'fastdp');
    const fdb = (await h1.exec('bridge', ['fdb', 'show', 'dev', 'weft-vx'])).stdout;
    expect(fdb).not.toMatch(/02:99:99:99:99:99/);
    expect(fdb).toMatch(new RegExp(`dst ${h2.underlayIp.replace(/\./g, '\\.')} self permanent`));
    expect((await h1.exec('ip', ['neigh', 'show', 'dev', 'weft-vx'])).stdout).not.toMatch(/192\.168\.254\.9/);
    expect((await h1.exec('ip', ['route'])).stdout).not.toMatch(/10\.47\.0\.0/);
    tun1 = (await fullStatus(h1)).device;
    expect((await h1.ping(a2, { count: 3, intervalS: 0.05 })).received).toBe(3);
    expect((await h2.ping(a1, { count: 3, intervalS: 0.05 })).received).toBe(3);
  });

  it('a fast-path host and a Weft host without one (userspace VXLAN) talk over sleeve, and say why', async () => {
    await launch(h3, [h1.underlayIp], ['--encap', 'vxlan', '--peer-timeout', String(PEER_TIMEOUT_MS), '--no-dns']);
    const a3 = await expose(h3);
    const p = await waitEncap(h1, h3, 'sleeve');
    expect(p.encapReason).toBe('peer has no fast path');
    expect((await h1.ping(a3, { count: 3, intervalS: 0.05 })).received).toBe(3);
    expect((await h3.ping(a2, { count: 3, intervalS: 0.05 })).received).toBe(3);
    // Meanwhile the two fast-path hosts stay on the fast path between themselves.
    await waitEncap(h1, h2, 'fastdp');
    await weft(h3, ['stop']);
  });

  it('weft stop removes weft-vx; with a password the fast path is not used (encrypted sleeve)', async () => {
    await weft(h1, ['stop']);
    await weft(h2, ['stop']);
    expect((await h1.exec('ip', ['link', 'show', 'weft-vx'], { allowFail: true })).code).not.toBe(0);
    expect((await h1.exec('ip', ['route'])).stdout).not.toMatch(/weft-vx/);
    const pw = `/tmp/weft-fastdp-pw-${process.pid}`;
    writeFileSync(pw, 'correct horse battery staple\n', { mode: 0o600 });
    await launch(h1, [], [...FLAGS, '--password-file', pw]);
    await launch(h2, [h1.underlayIp], [...FLAGS, '--password-file', pw]);
    await waitPeers(h1, 1);
    const p = await waitEncap(h1, h2, 'sleeve');
    expect(p.encapReason).toBe('fastdp off: encrypted');
    expect((await weft(h1, ['status'])).stdout).toMatch(/Fast path: weft-vx off \(encrypted\)/);
    expect((await h1.exec('ip', ['link', 'show', 'weft-vx'], { allowFail: true })).code).not.toBe(0);
    expect((await h1.ping(a2, { count: 3, intervalS: 0.05 })).received).toBe(3);
  });
});
