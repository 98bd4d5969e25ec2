import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireRoot, Topology } from './netns.js';
import { launch, removeStateDirs, status, waitPeers, weft } from './weft.js';

const reason = requireRoot();

/** INTERVALS_S is how long iperf3 runs; every one-second interval must carry data (no stall). */
const IPERF_SECONDS = 3;

for (const encap of ['sleeve', 'vxlan'] as const) {
  describe.skipIf(reason)(`two hosts over ${encap}`, () => {
    let topo: Topology;

    beforeAll(async () => {
      topo = await Topology.create({ hosts: 2 });
      const [h1, h2] = topo.hosts as [(typeof topo.hosts)[0], (typeof topo.hosts)[0]];
      await launch(h1, [], ['--encap', encap]);
      await launch(h2, [h1.underlayIp], ['--encap', encap]);
      await weft(h1, ['expose', '10.32.0.1/12']);
      await weft(h2, ['expose', '10.32.0.2/12']);
      await waitPeers(h1, 1);
      await waitPeers(h2, 1);
    });

    afterAll(async () => {
      await topo?.destroy();
      if (topo) removeStateDirs(topo);
    });

    it('pings across the overlay both ways', async () => {
      const [h1, h2] = topo.hosts;
      const a = await h1!.ping('10.32.0.2', { count: 5, intervalS: 0.05 });
      const b = await h2!.ping('10.32.0.1', { count: 5, intervalS: 0.05 });
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
      expect(s1.peers[0]?.cidrs).toEqual(['10.32.0.2/32']);
      const text = (await weft(h2!, ['status', 'connections'])).stdout;
      expect(text).toMatch(new RegExp(`-> ${h1!.underlayIp}:6783\\s+established\\s+${encap}`));
      expect((await weft(h1!, ['status'])).stdout).toMatch(/Connections: 1 \(1 established\)/);
    });

    it('carries a ping that fills the overlay MTU with DF set, and answers one byte more with "frag needed"', async () => {
      const [h1] = topo.hosts;
      const { mtu } = await status(h1!);
      expect(mtu).toBe(1450);
      const fits = await h1!.ping('10.32.0.2', { count: 2, intervalS: 0.1, size: mtu - 28, dontFragment: true });
      expect(fits.received).toBe(2);
      const over = await h1!.ping('10.32.0.2', { count: 1, size: mtu - 27, dontFragment: true });
      expect(over.received).toBe(0);
      expect(over.output).toMatch(new RegExp(`message too long, mtu=${mtu}`, 'i'));
    });

    it(`moves TCP for ${IPERF_SECONDS} s with no stall (iperf3)`, async () => {
      const [h1, h2] = topo.hosts;
      const server = await h2!.iperf3Server(5201);
      try {
        const r = await h1!.exec('iperf3', ['-c', '10.32.0.2', '-t', String(IPERF_SECONDS), '--json']);
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
      expect(after.exposed).toEqual(['10.32.0.2/12']);
      await waitPeers(h1!, 1);
      const p = await h1!.ping('10.32.0.2', { count: 3, intervalS: 0.1 });
      expect(p.received).toBe(3);
    });
  });
}
