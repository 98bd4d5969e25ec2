/**
 * Convergence benchmark: how fast the mesh agrees after a join and after a failure, and what the
 * topology gossip costs, for simulated meshes of N routers (router/testing/gossip-sim.ts: the real
 * Topology, routes and gossip channel code on a virtual clock, so results are exact and repeatable
 * and no timing decides anything).
 *
 * The mesh: each router joins knowing one random running router and discovery dials peers it
 * learns from the topology until it has `degree` connections (default min(N-1, 8)); inbound
 * connections are always accepted, so early routers end with more. That keeps each entry O(degree)
 * and the whole topology O(N) bytes, where Weave's discovery builds a full mesh (every entry
 * O(N), the topology O(N²), the scaling complaint of reference §8). The mesh is built directly in
 * that shape (GossipSim.bootstrap) rather than by simulating N joins; what is measured is then
 * fully simulated:
 *
 * - steady state: `steadyWindowMs` with only anti-entropy (one full state per router per
 *   gossipIntervalMs to one random neighbour);
 * - one more join, knowing one random router: time until every router holds every router's current
 *   entry and routes reach all, and the bytes sent until then;
 * - one failure (a router killed, its connections reset at once: the heartbeat timeout adds up to
 *   5 s for a host that vanishes silently): the same.
 *
 * Join and failure alternate `trials` times (default 3); times are reported as mean and worst,
 * bytes as the mean.
 */
import { GossipSim } from '../router/testing/gossip-sim.js';

/** ConvergenceOptions configure {@link runConvergence}; times are virtual milliseconds. */
export interface ConvergenceOptions {
  /** sizes are the mesh sizes N (default 10, 50, 100, 200). */
  readonly sizes?: readonly number[];
  readonly seed?: number;
  /** degree is the discovery target (default min(N-1, 8)). */
  readonly degree?: number;
  /** latencyMs is the one-way link latency range (default 1 ms ± 0.2). */
  readonly latencyMs?: readonly [number, number];
  /** jitterMs is the most added per message (default 0.2). */
  readonly jitterMs?: number;
  /** processingMs is the receiver's cost per message (default 0.2). */
  readonly processingMs?: number;
  /** gossipIntervalMs is the anti-entropy period (default GOSSIP_INTERVAL_MS, 30 s). */
  readonly gossipIntervalMs?: number;
  /** steadyWindowMs is how long steady-state traffic is measured (default 120 s, four intervals). */
  readonly steadyWindowMs?: number;
  /** trials is how many joins and failures are measured per size (default 3). */
  readonly trials?: number;
  /** progress, if given, is told when each size starts. */
  readonly progress?: (n: number) => void;
}

/** ConvergenceRow is the result for one mesh size. Bytes are control-connection frame bytes. */
export interface ConvergenceRow {
  readonly routers: number;
  /** degreeMean is the mean number of connections per router. */
  readonly degreeMean: number;
  /** fullStateBytes is one router's full topology state as gossiped. */
  readonly fullStateBytes: number;
  /** steadyBytesPerPeerPerSecond is what each router sends per second with nothing changing. */
  readonly steadyBytesPerPeerPerSecond: number;
  /** joinConverged is true when every trial converged. */
  readonly joinConverged: boolean;
  /** joinMs is the mean time to converge after a join; joinMsMax the worst trial. */
  readonly joinMs: number;
  readonly joinMsMax: number;
  /** joinBytesPerPeer is what each router sent, on average, from the join until convergence. */
  readonly joinBytesPerPeer: number;
  /** joinBytesPerPeerPerSecond is joinBytesPerPeer over the time to converge. */
  readonly joinBytesPerPeerPerSecond: number;
  readonly failureConverged: boolean;
  readonly failureMs: number;
  readonly failureMsMax: number;
  readonly failureBytesPerPeer: number;
  /** wallMs is the real time this size took to simulate. */
  readonly wallMs: number;
}

interface Trial {
  readonly converged: boolean;
  readonly ms: number;
  readonly bytesPerPeer: number;
}

/** trial runs until converged and returns the time and the bytes per running router sent until then. */
function trial(sim: GossipSim): Trial {
  const r = sim.runUntilConverged();
  return { converged: r.converged, ms: r.timeMs, bytesPerPeer: r.bytesToConverge / sim.live().length };
}

function summarise(trials: readonly Trial[]): {
  converged: boolean;
  meanMs: number;
  maxMs: number;
  bytesPerPeer: number;
} {
  const mean = (f: (t: Trial) => number) => trials.reduce((sum, t) => sum + f(t), 0) / trials.length;
  return {
    converged: trials.every((t) => t.converged),
    meanMs: mean((t) => t.ms),
    maxMs: Math.max(...trials.map((t) => t.ms)),
    bytesPerPeer: mean((t) => t.bytesPerPeer),
  };
}

/** runConvergence simulates each mesh size in turn and returns one row per size. */
export function runConvergence(opts: ConvergenceOptions = {}): ConvergenceRow[] {
  const rows: ConvergenceRow[] = [];
  for (const n of opts.sizes ?? [10, 50, 100, 200]) {
    opts.progress?.(n);
    const started = performance.now();
    const sim = new GossipSim({
      seed: opts.seed ?? 1,
      degree: opts.degree ?? Math.min(n - 1, 8),
      latencyMs: opts.latencyMs ?? [0.8, 1.2],
      jitterMs: opts.jitterMs ?? 0.2,
      processingMs: opts.processingMs ?? 0.2,
      ...(opts.gossipIntervalMs === undefined ? {} : { gossipIntervalMs: opts.gossipIntervalMs }),
    });
    sim.bootstrap(n);
    sim.runUntilConverged();

    const windowMs = opts.steadyWindowMs ?? 120_000;
    const before = sim.sent.bytes;
    sim.runFor(windowMs);
    const steady = (sim.sent.bytes - before) / n / (windowMs / 1000);
    const live = sim.live();
    const degreeMean = live.reduce((sum, p) => sum + sim.neighbours(p).length, 0) / live.length;
    const fullStateBytes = sim.topology(live[0]!)!.encode().length;

    const joins: Trial[] = [];
    const failures: Trial[] = [];
    for (let t = 0; t < (opts.trials ?? 3); t++) {
      sim.join();
      joins.push(trial(sim));
      const alive = sim.live();
      sim.kill(alive[Math.floor(alive.length / 2)]!);
      failures.push(trial(sim));
    }
    const join = summarise(joins);
    const failure = summarise(failures);

    rows.push({
      routers: n,
      degreeMean,
      fullStateBytes,
      steadyBytesPerPeerPerSecond: steady,
      joinConverged: join.converged,
      joinMs: join.meanMs,
      joinMsMax: join.maxMs,
      joinBytesPerPeer: join.bytesPerPeer,
      joinBytesPerPeerPerSecond: join.bytesPerPeer / (Math.max(join.meanMs, 1) / 1000),
      failureConverged: failure.converged,
      failureMs: failure.meanMs,
      failureMsMax: failure.maxMs,
      failureBytesPerPeer: failure.bytesPerPeer,
      wallMs: performance.now() - started,
    });
  }
  return rows;
}

function kib(bytes: number): string {
  return bytes >= 1024 ? `${(bytes / 1024).toFixed(1)} KiB` : `${bytes.toFixed(0)} B`;
}

function ms(row: ConvergenceRow, which: 'join' | 'failure'): string {
  const ok = which === 'join' ? row.joinConverged : row.failureConverged;
  const mean = which === 'join' ? row.joinMs : row.failureMs;
  const max = which === 'join' ? row.joinMsMax : row.failureMsMax;
  return ok ? `${mean.toFixed(0)} / ${max.toFixed(0)} ms` : 'not converged';
}

/** renderConvergenceTable renders rows as a markdown table, then the growth ratios between sizes. */
export function renderConvergenceTable(rows: readonly ConvergenceRow[]): string {
  const lines = [
    '| routers | mean degree | full state | steady B/peer/s | join: converged (mean / worst) | join: sent/peer | join: B/peer/s | failure: converged (mean / worst) | failure: sent/peer | wall |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.routers} | ${r.degreeMean.toFixed(1)} | ${kib(r.fullStateBytes)} | ${r.steadyBytesPerPeerPerSecond.toFixed(0)} | ${ms(r, 'join')} | ${kib(r.joinBytesPerPeer)} | ${kib(r.joinBytesPerPeerPerSecond)} | ${ms(r, 'failure')} | ${kib(r.failureBytesPerPeer)} | ${(r.wallMs / 1000).toFixed(1)} s |`,
    );
  }
  const ratios: string[] = [];
  const by = new Map(rows.map((r) => [r.routers, r]));
  for (const [hi, lo] of [
    [200, 100],
    [100, 50],
  ] as const) {
    const a = by.get(hi);
    const b = by.get(lo);
    if (a === undefined || b === undefined) continue;
    const nlogn = (hi * Math.log2(hi)) / (lo * Math.log2(lo));
    ratios.push(
      `- N=${hi} vs N=${lo}: steady B/peer/s ×${(a.steadyBytesPerPeerPerSecond / b.steadyBytesPerPeerPerSecond).toFixed(2)}, ` +
        `join sent/peer ×${(a.joinBytesPerPeer / b.joinBytesPerPeer).toFixed(2)}, ` +
        `failure sent/peer ×${(a.failureBytesPerPeer / b.failureBytesPerPeer).toFixed(2)} ` +
        `(O(N) would be ×${(hi / lo).toFixed(2)}, O(N log N) ×${nlogn.toFixed(2)})`,
    );
  }
  const hundred = by.get(100);
  if (hundred !== undefined) {
    const ok = hundred.joinConverged && hundred.joinMsMax <= 2_000;
    ratios.push(
      `- target "100 routers converge within 2 s of a join": ${ok ? 'met' : 'MISSED'} (${ms(hundred, 'join')})`,
    );
  }
  return [...lines, '', ...ratios].join('\n');
}
