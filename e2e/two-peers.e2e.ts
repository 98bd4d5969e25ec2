import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, requireRoot } from '../lab/netns.js';
import { expose, launch, removeStateDirs, status, waitPeers, weft } from './weft.js';

const reason = requireRoot();

/** INTERVALS_S is how long iperf3 runs; every one-second interval must carry data (no stall). */
const IPERF_SECONDS = 3;

for (const encap of ['sleeve', 'vxlan'] as const) {
  describe.skipIf(reason)(`two hosts over ${encap}`, () => {
    let topo: Lab;
    /** a1 and a2 are the addresses IPAM gave hosts 1 and 2. */
    let a1: string;
    let a2: string;

    beforeAll(async () => {
      topo = await Lab.create({ hosts: 2 });
      const [h1, h2] = topo.hosts as [(typeof topo.hosts)[0], (typeof topo.hosts)[0]];
      await launch(h1, [], ['--encap', encap]);
      await launch(h2, [h1.underlayIp], ['--encap', encap]);
      // h1 exposes first: it seeds the IPAM ring, and h2 then asks it for space.
      a1 = await expose(h1);
      a2 = await expose(h2);
      expect(a2).not.toBe(a1);
      await waitPeers(h1, 1);
      await waitPeers(h2, 1);
    });

    afterAll(async () => {
      await topo?.destroy();
      if (topo) removeStateDirs(topo);
    });

    it('pings across the overlay both ways', async () => {
      const [h1, h2] = topo.hosts;
      const a = await h1!.ping(a2, { count: 5, intervalS: 0.05 });
      const b = await h2!.ping(a1, { count: 5, intervalS: 0.05 });
      expect(a.received).toBe(5);
      expect(b.received).toBe(5);
    });

    it('shows the connection and the encapsulation in status', async () => {
      const [h1, h2] = topo.hosts;
      const s1 = await status(h1!);
      const s2 = await status(h2!);
      expect(s1.connections.filter((c) => c.state === 'established')).toHaveLength(1);
      expect(s1.peers[0]?.name).toBe(s2.name);
      expect(s1.peers[0]?.encap).toBe(encap);
      // h2's address is in its own IPAM share: routed by the ring, not announced as a /32.
      expect(s1.peers[0]?.cidrs).toEqual([]);
      expect(s1.exposed).toEqual([`${a1}/12`]);
      expect(s2.exposed).toEqual([`${a2}/12`]);
      // Both hosts own a share of the range, and the shares add up to all of it.
      const ring = (s1 as unknown as { ipam: { size: number; peers: { name: string; owned: number }[] } }).ipam;
      expect(ring.peers.map((p) => p.name).sort()).toEqual([s1.name, s2.name].sort());
      for (const p of ring.peers) expect(p.owned).toBeGreaterThan(0);
      expect(ring.peers.reduce((n, p) => n + p.owned, 0)).toBe(ring.size);
      const text = (await weft(h2!, ['status', 'connections'])).stdout;
      expect(text).toMatch(new RegExp(`-> ${h1!.underlayIp}:6783\\s+established\\s+${encap}`));
      expect((await weft(h1!, ['status'])).stdout).toMatch(/Connections: 1 \(1 established\)/);
    });

    it('carries a ping that fills the overlay MTU with DF set, and answers one byte more with "frag needed"', async () => {
      const [h1] = topo.hosts;
      const { mtu } = await status(h1!);
      expect(mtu).toBe(1500 - 80); // underlay minus ENCAP_OVERHEAD_MAX (sleeve 56 + crypto reserve 24)
      const fits = await h1!.ping(a2, { count: 2, intervalS: 0.1, size: mtu - 28, dontFragment: true });
      expect(fits.received).toBe(2);
      const over = await h1!.ping(a2, { count: 1, size: mtu - 27, dontFragment: true });
      expect(over.received).toBe(0);
      expect(over.output).toMatch(new RegExp(`message too long, mtu=${mtu}`, 'i'));
    });

    it(`moves TCP for ${IPERF_SECONDS} s with no stall (iperf3)`, async () => {
      const [h1, h2] = topo.hosts;
      const server = await h2!.iperf3Server(5201);
      try {
        const r = await h1!.exec('iperf3', ['-c', a2, '-t', String(IPERF_SECONDS), '--json']);
        const j = JSON.parse(r.stdout) as {
          intervals: { sum: { bytes: number } }[];
          end: { sum_received: { bytes: number } };
        };
        expect(j.intervals.length).toBeGreaterThanOrEqual(IPERF_SECONDS);
        for (const iv of j.intervals) expect(iv.sum.bytes).toBeGreaterThan(0);
        expect(j.end.sum_received.bytes).toBeGreaterThan(1_000_000);
      } finally {
        await server.stop();
      }
    });

    it('recovers after `weft stop` and `weft launch` again (peer name, targets and address persisted)', async () => {
      const [h1, h2] = topo.hosts;
      const before = await status(h2!);
      await weft(h2!, ['stop']);
      const gone = await weft(h2!, ['status'], { allowFail: true });
      expect(gone.code).toBe(3);
      expect(gone.stderr).toMatch(/no weft router is running/);
      const name = await launch(h2!, [], ['--encap', encap]);
      expect(name).toBe(before.name);
      const after = await waitPeers(h2!, 1);
      expect(after.exposed).toEqual([`${a2}/12`]);
      // Asking again gives the address the host already has, not a new one.
      expect(await expose(h2!)).toBe(a2);
      await waitPeers(h1!, 1);
      const p = await h1!.ping(a2, { count: 3, intervalS: 0.1 });
      expect(p.received).toBe(3);
    });
  });
}
