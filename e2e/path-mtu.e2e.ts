import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readIpFragments } from '../bench/proc-counters.js';
import { type Host, Lab, type Netns, requireRoot, waitUntil } from '../lab/netns.js';
import { launch, removeStateDirs, status, waitPeers, weft } from './weft.js';

const reason = requireRoot();

/** OVERLAY_MTU is the default on a 1500-byte underlay: 1500 - ENCAP_OVERHEAD_MAX (80). */
const OVERLAY_MTU = 1420;
/** PATH_INNER_MTU is the largest inner packet over a 1400-byte path: 1400 - sleeve's 56. */
const PATH_INNER_MTU = 1400 - 56;

interface PeerPmtu {
  state: string;
  pmtu?: { pmtu: number; state: string };
}

async function peerPmtu(h: Host): Promise<PeerPmtu | undefined> {
  const s = JSON.parse((await weft(h, ['status', 'peers', '--json'])).stdout) as PeerPmtu[] | { peers: PeerPmtu[] };
  const peers = Array.isArray(s) ? s : s.peers;
  return peers[0];
}

interface PathLab {
  topo: Lab;
  h1: Host;
  h2: Host;
  c1: Netns;
  c2: Netns;
  /** a2 is c2's overlay address. */
  a2: string;
}

/** lab builds two hosts (routers launched with `flags`) and attaches a container on each. */
async function lab(topoOpts: { midPathMtu?: number }, flags: string[]): Promise<PathLab> {
  const topo = await Lab.create({ hosts: 2, ...topoOpts });
  try {
    const [h1, h2] = topo.hosts as [Host, Host];
    const c1 = await topo.addNamespace('ca');
    const c2 = await topo.addNamespace('cb');
    await launch(h1, [], [...flags, '--no-dns']);
    await launch(h2, [h1.underlayIp], [...flags, '--no-dns']);
    await waitPeers(h1, 1);
    await waitPeers(h2, 1);
    await weft(h1, ['attach', c1.name]);
    const a2 = (await weft(h2, ['attach', c2.name])).stdout.trim();
    return { topo, h1, h2, c1, c2, a2 };
  } catch (err) {
    await topo.destroy();
    removeStateDirs(topo);
    throw err;
  }
}

/** underlay lists the namespaces whose kernels could fragment datagrams on the way: hosts and routers. */
function underlay(topo: Lab): Netns[] {
  return [...topo.hosts, ...topo.routers];
}

/**
 * Every datagram fits the path: two hosts with a container each, sleeve and VXLAN, no IP fragment
 * is made on the underlay for any inner packet up to the overlay MTU, TCP included; and across a
 * routed path whose middle link has MTU 1400, the routers find the path MTU themselves, an
 * oversized DF packet is answered with "fragmentation needed", and pings of every size and TCP
 * still work without a fragment on the underlay.
 */
describe.skipIf(reason)('path MTU: no IP fragments on the underlay', () => {
  for (const encap of ['sleeve', 'vxlan'] as const) {
    describe(`flat 1500-byte underlay, ${encap}`, () => {
      let topo: Lab;
      let h1: Host;
      let c1: Netns;
      let c2: Netns;
      let a2 = '';

      beforeAll(async () => {
        ({ topo, h1, c1, c2, a2 } = await lab({}, ['--encap', encap]));
      });

      afterAll(async () => {
        await topo?.destroy();
        if (topo) removeStateDirs(topo);
      });

      it('gives containers the MTU that fits: underlay minus every byte Weft adds', async () => {
        expect((await status(h1)).mtu).toBe(OVERLAY_MTU);
      });

      it('carries DF pings of every size up to the overlay MTU with 0 fragments, and refuses one byte more', async () => {
        const before = await readIpFragments(underlay(topo));
        for (const size of [0, 56, 512, 1000, 1300, OVERLAY_MTU - 29, OVERLAY_MTU - 28]) {
          const r = await c1.ping(a2, { count: 2, intervalS: 0.1, size, dontFragment: true });
          expect(r.received, `ping -s ${size}`).toBe(2);
        }
        const over = await c1.ping(a2, { count: 1, size: OVERLAY_MTU - 27, dontFragment: true });
        expect(over.received).toBe(0);
        expect(over.output).toMatch(new RegExp(`mtu[ =]+${OVERLAY_MTU}`, 'i'));
        const after = await readIpFragments(underlay(topo));
        expect(after.created - before.created).toBe(0);
        expect(after.reassembly - before.reassembly).toBe(0);
      });

      it('moves TCP container to container (iperf3) with 0 fragments, super-packets cut into segments', async () => {
        const before = await readIpFragments(underlay(topo));
        const server = await c2.iperf3Server(5201);
        try {
          const r = await c1.iperf3Client(a2, { seconds: 2 });
          expect(r.bitsPerSecond).toBeGreaterThan(10_000_000);
        } finally {
          await server.stop();
        }
        const after = await readIpFragments(underlay(topo));
        expect(after.created - before.created).toBe(0);
        const s = await status(h1);
        expect((s.counters as unknown as { segmented: number }).segmented).toBeGreaterThan(0);
      });
    });
  }

  describe('routed path with a 1400-byte middle link (sleeve)', () => {
    let topo: Lab;
    let h1: Host;
    let h2: Host;
    let c1: Netns;
    let c2: Netns;
    let a2 = '';

    beforeAll(async () => {
      ({ topo, h1, h2, c1, c2, a2 } = await lab({ midPathMtu: 1400 }, ['--encap', 'sleeve']));
    });

    afterAll(async () => {
      await topo?.destroy();
      if (topo) removeStateDirs(topo);
    });

    it('finds the path MTU (1400) to its peer and shows it in status', async () => {
      // Large datagrams (probes) make the routers send ICMP; probing confirms what gets through.
      await waitUntil(async () => (await peerPmtu(h1))?.pmtu?.pmtu === 1400, { timeoutMs: 20_000 });
      await waitUntil(async () => (await peerPmtu(h2))?.pmtu?.pmtu === 1400, { timeoutMs: 20_000 });
      expect((await peerPmtu(h1))?.pmtu?.state).toBe('confirmed');
      const text = (await weft(h1, ['status', 'peers'])).stdout;
      expect(text).toMatch(/pmtu=1400/);
    });

    it('answers an oversized DF packet with "fragmentation needed" and the MTU that fits', async () => {
      const r = await c1.ping(a2, { count: 2, intervalS: 0.3, size: OVERLAY_MTU - 28, dontFragment: true });
      expect(r.received).toBe(0);
      expect(r.output).toMatch(new RegExp(`mtu[ =]+${PATH_INNER_MTU}`, 'i'));
      const s = await status(h1);
      expect((s.counters as unknown as { icmpFragNeeded: number }).icmpFragNeeded).toBeGreaterThan(0);
      expect(s.counters.drops.too_big_for_path).toBeGreaterThan(0);
    });

    it('carries pings of every size up to the overlay MTU and TCP, with 0 fragments on the underlay', async () => {
      const before = await readIpFragments(underlay(topo));
      for (const size of [56, 1000, PATH_INNER_MTU - 28, PATH_INNER_MTU - 27, 1380, OVERLAY_MTU - 28]) {
        // ping's default PMTU discovery: after a "fragmentation needed" the container's kernel
        // sends inner fragments that fit the path; the first echo of a new size may be lost to it.
        const r = await c1.ping(a2, { count: 3, intervalS: 0.2, size });
        expect(r.received, `ping -s ${size}`).toBeGreaterThanOrEqual(2);
      }
      const server = await c2.iperf3Server(5201);
      try {
        const r = await c1.iperf3Client(a2, { seconds: 2 });
        expect(r.bitsPerSecond).toBeGreaterThan(10_000_000);
      } finally {
        await server.stop();
      }
      const after = await readIpFragments(underlay(topo));
      expect(after.created - before.created).toBe(0);
      expect(after.reassembly - before.reassembly).toBe(0);
    });
  });
});
