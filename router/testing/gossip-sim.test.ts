import { describe, expect, it } from 'vitest';
import type { PeerName } from '../../common/types.js';
import { GOSSIP_INTERVAL_MS } from '../gossip/channel.js';
import { encodeFrame } from '../protocol.js';
import { computeRoutes } from '../routes.js';
import { decodeEntries } from '../topology.js';
import { GossipSim, type GossipSimOptions, gossipFrameBytes, mulberry32 } from './gossip-sim.js';

// ---- helpers ----

/** views returns each running node's entries of running peers, encoded: identical strings mean identical views. */
function views(sim: GossipSim): Map<PeerName, string> {
  const live = sim.live();
  return new Map(
    live.map((n) => {
      const t = sim.topology(n)!;
      const own = live.map((p) => t.get(p)).filter((e) => e !== undefined);
      return [n, JSON.stringify(own)];
    }),
  );
}

function expectConverged(sim: GossipSim, timeoutMs = 60_000): number {
  const r = sim.runUntilConverged(timeoutMs);
  expect(r.converged).toBe(true);
  expect(new Set(views(sim).values()).size).toBe(1);
  for (const n of sim.live()) {
    const routes = computeRoutes(n, sim.topology(n)!.entries());
    for (const p of sim.live()) expect(routes.reachable.has(p)).toBe(true);
  }
  return r.timeMs;
}

// ---- tests ----

describe('gossipFrameBytes', () => {
  it('is the length encodeFrame gives a gossip message', () => {
    for (const channel of ['topology', 'x', 'c'.repeat(40)]) {
      for (const size of [0, 1, 255, 256, 65_535, 65_536, 300_000]) {
        const frame = encodeFrame({ t: 'gossip', channel, payload: new Uint8Array(size) });
        expect(gossipFrameBytes(channel, size), `${channel} ${size}`).toBe(frame.length);
      }
    }
  });
});

describe('GossipSim', () => {
  it('converges two nodes, and a lone node is converged at once', () => {
    const sim = new GossipSim({ seed: 3 });
    const a = sim.join();
    expect(sim.runUntilConverged().timeMs).toBe(0);
    const b = sim.join();
    expectConverged(sim);
    expect(sim.neighbours(a)).toEqual([b]);
    expect(sim.topology(a)!.get(b)!.connections[0]).toMatchObject({ peer: a, established: true, outbound: true });
  });

  it('converges as nodes join one by one up to 50, each knowing one running node, within 2 s each', () => {
    const sim = new GossipSim({ seed: 11 });
    for (let i = 0; i < 50; i++) {
      sim.join();
      expect(expectConverged(sim)).toBeLessThan(2_000);
    }
    // Discovery built a mesh of degree at least 8 everywhere.
    for (const n of sim.live()) expect(sim.neighbours(n).length).toBeGreaterThanOrEqual(8);
  }, 90_000);

  it('converges after nodes leave, and every survivor forgets them', () => {
    const sim = new GossipSim({ seed: 5 });
    sim.bootstrap(30);
    const gone = sim.live().slice(0, 5);
    for (const n of gone) sim.kill(n);
    expectConverged(sim);
    sim.runFor(5_000); // past the peer GC delay
    for (const n of sim.live()) for (const g of gone) expect(sim.topology(n)!.get(g)).toBeUndefined();
  });

  it('converges when failures are noticed only after a heartbeat timeout', () => {
    const sim = new GossipSim({ seed: 6 });
    sim.bootstrap(20);
    sim.kill(sim.live()[3]!, 5_000);
    const t = expectConverged(sim);
    expect(t).toBeGreaterThanOrEqual(5_000);
    expect(t).toBeLessThan(7_000);
  });

  it('lets a restarted node supersede its old incarnation everywhere', () => {
    const sim = new GossipSim({ seed: 7 });
    sim.bootstrap(25);
    const victim = sim.live()[10]!;
    const old = sim.topology(victim)!.local;
    // Push its version up so that the old self looks "newer" by version alone.
    for (let i = 0; i < 3; i++) sim.disconnect(victim, sim.neighbours(victim)[0]!);
    expectConverged(sim);
    sim.restart(victim);
    expectConverged(sim);
    const fresh = sim.topology(victim)!.local;
    expect(fresh.uid).not.toBe(old.uid);
    expect(fresh.incarnation).toBeGreaterThan(old.incarnation);
    expect(fresh.version).toBeLessThan(sim.topology(sim.live()[0]!)!.get(victim)!.version + 1);
    for (const n of sim.live()) expect(sim.topology(n)!.get(victim)!.uid).toBe(fresh.uid);
    expect(sim.rejections).toEqual([]);
  });

  it('restarts that are noticed late (the old connections linger) still converge', () => {
    const sim = new GossipSim({ seed: 8 });
    sim.bootstrap(15);
    const victim = sim.live()[2]!;
    sim.restart(victim, 3_000);
    expectConverged(sim);
  });

  it('does not converge while partitioned, and converges after healing', () => {
    const sim = new GossipSim({ seed: 9 });
    sim.bootstrap(40);
    const live = sim.live();
    const side = live.slice(0, 15);
    sim.partition(side);
    expect(sim.runUntilConverged(20_000).converged).toBe(false);
    // Each side has forgotten the other by now.
    expect(sim.topology(side[0]!)!.get(live[30]!)).toBeUndefined();
    // A change on each side while apart.
    sim.join([side[1]!]);
    sim.kill(live[20]!);
    sim.runFor(5_000);
    sim.heal();
    expectConverged(sim);
  });

  it('converges through a mix of joins, leaves, restarts and partitions (random scenarios)', () => {
    for (let seed = 1; seed <= 4; seed++) {
      const random = mulberry32(seed * 977);
      const sim = new GossipSim({ seed });
      sim.bootstrap(10 + Math.floor(random() * 20));
      for (let step = 0; step < 6; step++) {
        const live = sim.live();
        const pick = () => live[Math.floor(random() * live.length)]!;
        const r = random();
        if (r < 0.3) sim.join();
        else if (r < 0.5 && live.length > 4) sim.kill(pick(), Math.floor(random() * 3_000));
        else if (r < 0.7) sim.restart(pick());
        else if (r < 0.85) sim.disconnect(pick(), pick());
        else {
          sim.partition(live.filter(() => random() < 0.3));
          sim.runFor(3_000);
          sim.heal();
        }
        sim.runFor(random() * 500);
      }
      expectConverged(sim, 120_000);
    }
  }, 90_000);

  it('converges to identical views whatever the delivery order (no FIFO, heavy jitter, 6 seeds)', () => {
    for (let seed = 1; seed <= 6; seed++) {
      const opts: GossipSimOptions = { seed, fifo: false, jitterMs: 20 };
      const sim = new GossipSim(opts);
      sim.bootstrap(12);
      // Launched with a peer that stays up: a router whose only peer dies before it connects
      // never joins (nobody knows of it), and that is not what this test is about.
      const via = [sim.live()[0]!];
      sim.join(via);
      sim.join(via);
      sim.restart(sim.live()[1]!);
      sim.kill(sim.live()[4]!);
      expectConverged(sim);
      const encoded = new Set(
        sim.live().map((n) => {
          const t = sim.topology(n)!;
          return JSON.stringify(decodeEntries(t.encode(sim.live())));
        }),
      );
      expect(encoded.size).toBe(1);
    }
  });

  it('is deterministic for a seed', () => {
    const run = () => {
      const sim = new GossipSim({ seed: 21 });
      sim.bootstrap(20);
      sim.join();
      const a = sim.runUntilConverged();
      sim.kill(sim.live()[5]!);
      const b = sim.runUntilConverged();
      return [a, b, sim.sent];
    };
    expect(run()).toEqual(run());
  });

  it('repairs by grafts, not anti-entropy: joins and failures converge with no anti-entropy round', () => {
    const sim = new GossipSim({ seed: 5, gossipIntervalMs: 1e9 });
    sim.bootstrap(60);
    sim.runUntilConverged();
    for (let t = 0; t < 4; t++) {
      sim.join();
      const joined = sim.runUntilConverged(2_000);
      expect(joined.converged, `join ${t}`).toBe(true);
      const alive = sim.live();
      sim.kill(alive[(t * 17) % alive.length]!);
      const failed = sim.runUntilConverged(2_000);
      expect(failed.converged, `failure ${t}`).toBe(true);
    }
    const topology = sim.live().map((n) => sim.channels(n).find((c) => c.name === 'topology')!.stats);
    const sum = (f: (s: (typeof topology)[number]) => number) => topology.reduce((a, s) => a + f(s), 0);
    expect(sum((s) => s.announced)).toBeGreaterThan(0);
    expect(sum((s) => s.grafted)).toBeGreaterThan(0);
    expect(sum((s) => s.drops.malformed + s.drops.refused + s.drops.overflow)).toBe(0);
  });

  it('in steady state sends one full state per node per gossip interval', () => {
    const sim = new GossipSim({ seed: 4 });
    sim.bootstrap(20);
    sim.runUntilConverged();
    const before = { ...sim.sent };
    sim.runFor(10 * GOSSIP_INTERVAL_MS);
    const messages = sim.sent.messages - before.messages;
    expect(messages).toBeGreaterThanOrEqual(20 * 9);
    expect(messages).toBeLessThanOrEqual(20 * 11);
    expect(sim.runUntilConverged().timeMs).toBe(0);
  });
});
