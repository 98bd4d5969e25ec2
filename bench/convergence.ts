/**
 * Convergence benchmark: how fast Weft's own mesh core agrees after a join, a failure and a
 * partition heal, and what its gossip costs, for N routers (router/testing/gossip-sim.ts: N real
 * MeshCores — topology, gossip channels, routes, discovery, peer GC — on one virtual clock over
 * simulated links, so results are exact and repeatable and no timing decides anything).
 *
 * The mesh is built in the shape the router's discovery gives (GossipSim.bootstrap: each router
 * linked to the router it was launched with, then to the peers ranking first by pairHash, up to
 * DISCOVERY_DEGREE = 16 connections), converged; then, all simulated with the product's policy:
 *
 * - steady state: `steadyWindowMs` with only anti-entropy (one full state per router per
 *   GOSSIP_INTERVAL_MS to one random neighbour);
 * - one more join, launched with one random router: time until every router holds every router's
 *   current entry and routes reach all, and the bytes sent until then;
 * - one failure (a router killed, its connections reset at once: the heartbeat timeout adds up to
 *   5 s for a host that vanishes silently): the same;
 * - one partition (a third of the routers cut off until each side has forgotten the other) and
 *   its heal: no link is redialled at once; connections come back when a connection maker's next
 *   retry (RECONNECT_* backoff) of a launch target across succeeds, as in the product.
 *
 * Join and failure alternate `trials` times (default 3, 1 from 500 routers); times are reported as
 * mean and worst, bytes as the mean.
 *
 * Wall time is mostly the partition phase: each router's connections change ~20 times while the
 * sides re-knit (gossiped as 2-3 versions of its entry: announcements wait TOPOLOGY_ANNOUNCE_DELAY_MS),
 * every router of its side merges each version about once (lazy push sends the delta itself only
 * along the broadcast tree), and each new version costs the receiver O(N) of route and discovery
 * work, so the phase grows about as N³ (bench/RESULTS.md).
 */
import { GossipSim } from '../router/testing/gossip-sim.js';

/**
 * CONVERGENCE_SIZES are the mesh sizes reported by default. 500 routers (`sizes: [500]`, or
 * `--sizes 500`) take minutes of wall time today, see the module comment.
 */
export const CONVERGENCE_SIZES = [10, 50, 100, 200] as const;

/** ConvergenceOptions configure {@link runConvergence}; times are virtual milliseconds. */
export interface ConvergenceOptions {
  /** sizes are the mesh sizes N (default CONVERGENCE_SIZES). */
  readonly sizes?: readonly number[];
  readonly seed?: number;
  /** degree is the discovery degree (default the router's, DISCOVERY_DEGREE). */
  readonly degree?: number;
  /** latencyMs is the one-way link latency range (default 1 ms ± 0.2). */
  readonly latencyMs?: readonly [number, number];
  /** jitterMs is the most added per message (default 0.2). */
  readonly jitterMs?: number;
  /** processingMs is the receiver's cost per message (default 0.2). */
  readonly processingMs?: number;
  /** gossipIntervalMs is the anti-entropy period (default GOSSIP_INTERVAL_MS, 30 s). */
  readonly gossipIntervalMs?: number;
  /** steadyWindowMs is how long steady-state traffic is measured (default 60 s, two intervals). */
  readonly steadyWindowMs?: number;
  /** trials is how many joins and failures are measured per size (default 3; 1 from 500 routers). */
  readonly trials?: number;
  /** heal measures a partition and its heal (default true). */
  readonly heal?: boolean;
  /** progress, if given, is told when each size starts and how long (wall) each phase took. */
  readonly progress?: (line: string) => void;
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
  /** healConverged/healMs/healBytesPerPeer: after a partition heals (undefined when not measured). */
  readonly healConverged?: boolean;
  readonly healMs?: number;
  readonly healBytesPerPeer?: number;
  /** wallMs is the real time this size took to simulate. */
  readonly wallMs: number;
}

interface Trial {
  readonly converged: boolean;
  readonly ms: number;
  readonly bytesPerPeer: number;
}

/** trial runs until converged and returns the time and the bytes per running router sent until then. */
function trial(sim: GossipSim, timeoutMs?: number): Trial {
  const r = sim.runUntilConverged(timeoutMs);
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
  for (const n of opts.sizes ?? CONVERGENCE_SIZES) {
    opts.progress?.(`simulating ${n} routers`);
    const started = performance.now();
    let phaseStarted = started;
    const phase = (name: string): void => {
      const now = performance.now();
      opts.progress?.(`${n} routers: ${name} in ${((now - phaseStarted) / 1000).toFixed(1)} s wall`);
      phaseStarted = now;
    };
    const sim = new GossipSim({
      seed: opts.seed ?? 1,
      ...(opts.degree === undefined ? {} : { degree: opts.degree }),
      latencyMs: opts.latencyMs ?? [0.8, 1.2],
      jitterMs: opts.jitterMs ?? 0.2,
      processingMs: opts.processingMs ?? 0.2,
      ...(opts.gossipIntervalMs === undefined ? {} : { gossipIntervalMs: opts.gossipIntervalMs }),
    });
    sim.bootstrap(n);
    sim.runUntilConverged();
    phase('bootstrap');

    const windowMs = opts.steadyWindowMs ?? 60_000;
    const before = sim.sent.bytes;
    sim.runFor(windowMs);
    const steady = (sim.sent.bytes - before) / n / (windowMs / 1000);
    const live = sim.live();
    const degreeMean = live.reduce((sum, p) => sum + sim.neighbours(p).length, 0) / live.length;
    const fullStateBytes = sim.topology(live[0]!)!.encode().length;
    phase('steady window');

    const joins: Trial[] = [];
    const failures: Trial[] = [];
    for (let t = 0; t < (opts.trials ?? (n >= 500 ? 1 : 3)); t++) {
      sim.join();
      joins.push(trial(sim));
      const alive = sim.live();
      sim.kill(alive[Math.floor(alive.length / 2)]!);
      failures.push(trial(sim));
    }
    phase('joins and failures');
    const join = summarise(joins);
    const failure = summarise(failures);

    let heal: Trial | undefined;
    if (opts.heal !== false) {
      const alive = sim.live();
      sim.partition(alive.filter((_, i) => i % 3 === 0));
      sim.runFor(10_000); // each side forgets the other (PEER_GC_DELAY_MS), the makers back off
      sim.heal();
      heal = trial(sim, 600_000);
      phase('partition and heal');
    }

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
      ...(heal === undefined
        ? {}
        : { healConverged: heal.converged, healMs: heal.ms, healBytesPerPeer: heal.bytesPerPeer }),
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

function healMs(row: ConvergenceRow): string {
  if (row.healConverged === undefined) return '-';
  return row.healConverged ? `${(row.healMs ?? 0).toFixed(0)} ms` : 'not converged';
}

/** renderConvergenceTable renders rows as a markdown table, then the growth ratios between sizes. */
export function renderConvergenceTable(rows: readonly ConvergenceRow[]): string {
  const lines = [
    '| routers | mean degree | full state | steady B/peer/s | join: converged (mean / worst) | join: sent/peer | join: B/peer/s | failure: converged (mean / worst) | failure: sent/peer | heal: converged | heal: sent/peer | wall |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.routers} | ${r.degreeMean.toFixed(1)} | ${kib(r.fullStateBytes)} | ${r.steadyBytesPerPeerPerSecond.toFixed(0)} | ${ms(r, 'join')} | ${kib(r.joinBytesPerPeer)} | ${kib(r.joinBytesPerPeerPerSecond)} | ${ms(r, 'failure')} | ${kib(r.failureBytesPerPeer)} | ${healMs(r)} | ${r.healBytesPerPeer === undefined ? '-' : kib(r.healBytesPerPeer)} | ${(r.wallMs / 1000).toFixed(1)} s |`,
    );
  }
  const ratios: string[] = [];
  const by = new Map(rows.map((r) => [r.routers, r]));
  for (const [hi, lo] of [
    [500, 200],
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
  const two = by.get(200);
  if (two !== undefined) {
    const join = two.joinConverged && two.joinMsMax <= 2_000;
    const fail = two.failureConverged && two.failureMsMax <= 2_000;
    ratios.push(
      `- target "200 routers converge within 2 s (virtual) of a join and of a failure": ${join && fail ? 'met' : 'MISSED'} ` +
        `(join ${ms(two, 'join')}, failure ${ms(two, 'failure')})`,
    );
  }
  const big = by.get(500);
  if (big !== undefined) {
    ratios.push(
      `- target "500 routers simulated in under 2 minutes of wall time": ${big.wallMs <= 120_000 ? 'met' : 'MISSED'} (${(big.wallMs / 1000).toFixed(1)} s)`,
    );
  }
  return [...lines, '', ...ratios].join('\n');
}
