/**
 * Three hosts on the default data path (`--encap auto`, issue #14): every pair of peers ends up
 * on the kernel fast path, and containers attached on each host reach the others by DNS name
 * with the kernel carrying the packets: each host's weft-vx counts them while its TUN device
 * stays flat.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, Lab, type Netns, requireRoot, waitUntil } from '../lab/netns.js';
import { launch, removeStateDirs, status, waitPeers, weft } from './weft.js';

const reason = requireRoot();
const NAMES = ['alpha', 'beta', 'gamma'] as const;

interface PeerJson {
  addr?: string;
  encap: string;
  state: string;
}

async function peersOf(h: Host): Promise<PeerJson[]> {
  return ((await status(h)) as unknown as { peers: PeerJson[] }).peers;
}

async function linkStats(ns: Netns, dev: string): Promise<{ tx: number; rx: number }> {
  const read = async (f: string) =>
    Number((await ns.exec('cat', [`/sys/class/net/${dev}/statistics/${f}`])).stdout.trim());
  return { tx: await read('tx_packets'), rx: await read('rx_packets') };
}

describe.skipIf(reason)('three hosts on the default data path (auto): all on the fast path', () => {
  let topo: Lab;
  let hosts: Host[];
  const containers: Netns[] = [];
  const addrs: string[] = [];
  const tuns: string[] = [];

  beforeAll(async () => {
    topo = await Lab.create({ hosts: 3 });
    hosts = topo.hosts as Host[];
    const [h1] = hosts as [Host];
    for (const [i, h] of hosts.entries()) await launch(h, i === 0 ? [] : [h1.underlayIp], []);
    for (const h of hosts) await waitPeers(h, 2);
    for (const [i, h] of hosts.entries()) {
      const c = await topo.addNamespace(`c${i}`);
      containers.push(c);
      addrs.push((await weft(h, ['attach', c.name, '--name', NAMES[i] as string])).stdout.trim());
      tuns.push(((await status(h)) as unknown as { device: string }).device);
    }
  });

  afterAll(async () => {
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
  });

  it('puts every peer of every host on fastdp (status, metrics)', async () => {
    for (const h of hosts) {
      await waitUntil(
        async () => {
          const ps = await peersOf(h);
          return ps.length === 2 && ps.every((p) => p.encap === 'fastdp' && p.state === 'established');
        },
        { timeoutMs: 30_000, intervalMs: 200, what: `${h.name}: both peers on fastdp` },
      );
      const text = (await weft(h, ['status', 'peers'])).stdout;
      expect(text.match(/ fastdp {2}established/g)).toHaveLength(2);
      const metrics = (await h.exec('curl', ['-sf', 'http://127.0.0.1:6784/metrics'])).stdout;
      expect(metrics).toMatch(/weft_peer_encap\{encap="fastdp"\} 2/);
    }
  });

  it('lets containers on each host ping the others by DNS name through weft-vx, the TUN devices flat', async () => {
    // Names first (gossiped over the control connections, which do not cross the TUN device).
    for (const [i, c] of containers.entries())
      for (const [j, name] of NAMES.entries()) {
        if (i === j) continue;
        await waitUntil(
          async () => {
            const r = await c.exec('dig', ['+short', '+time=2', '+tries=1', `${name}.weft.local`], { allowFail: true });
            return r.stdout.trim() === addrs[j];
          },
          { timeoutMs: 20_000, what: `${c.name} to resolve ${name}` },
        );
      }
    const tunBefore = await Promise.all(hosts.map((h, i) => linkStats(h, tuns[i] as string)));
    const vxBefore = await Promise.all(hosts.map((h) => linkStats(h, 'weft-vx')));
    for (const [i, c] of containers.entries())
      for (const [j, name] of NAMES.entries()) {
        if (i === j) continue;
        const r = await c.exec('ping', ['-c', '5', '-i', '0.05', '-W', '2', name], { allowFail: true });
        expect(r.stdout, `${c.name} → ${name}`).toMatch(/ 5 received/);
        expect(r.stdout).toContain(`(${addrs[j]})`);
      }
    for (const [i, h] of hosts.entries()) {
      const tun = await linkStats(h, tuns[i] as string);
      const vx = await linkStats(h, 'weft-vx');
      const before = tunBefore[i] as { tx: number; rx: number };
      const vxb = vxBefore[i] as { tx: number; rx: number };
      // Each host's container sent 10 echoes and answered 10: 20 packets out through weft-vx, 20 in.
      expect(vx.tx - vxb.tx, `${h.name} weft-vx tx`).toBeGreaterThanOrEqual(20);
      expect(vx.rx - vxb.rx, `${h.name} weft-vx rx`).toBeGreaterThanOrEqual(20);
      expect(tun.tx - before.tx + (tun.rx - before.rx), `${h.name} TUN`).toBeLessThan(10);
    }
  });
});
