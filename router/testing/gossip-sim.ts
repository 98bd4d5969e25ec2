/**
 * GossipSim: many routers' mesh cores (Topology + GossipMux + topology channel + discovery + peer
 * GC) in one process, on a virtual clock. No sockets, no timers: every delivery, handshake and tick
 * is an event in one queue ordered by (virtual time, insertion), and all randomness comes from one
 * seed, so a run is exactly repeatable.
 *
 * What is modelled, per node:
 *
 * ```
 *  dial ──3 one-way delays (SYN, SYN-ACK, Hellos)──▶ link up: connection listed as pending, full state
 *        pushed both ways ──2 one-way delays (data-path heartbeat + ack)──▶ listed as established
 *  dial fails (peer down, partitioned) ──▶ a launch target is redialled with RECONNECT_* backoff; a
 *        discovered peer is skipped for SIM_DIAL_RETRY_MS
 *  message ──link latency (+ jitter; FIFO per direction like TCP)──▶ queued behind the receiver's
 *        earlier messages, processingMs each ──▶ GossipMux.receive
 *  own entry changes ──▶ gossiped once per announceDelayMs (coalesced, like mesh's batching)
 *  topology change ──▶ routes recomputed routesDelayMs later (coalesced); then discovery dials
 *        reachable peers until `degree` connections; PEER_GC_DELAY_MS later unreachable peers are
 *        forgotten
 * ```
 *
 * Converged: every live node holds, for every live peer, exactly that peer's own current entry
 * (same uid, incarnation and version), and its routes reach every live peer.
 */

import { noopLogger } from '../../common/log.js';
import { mulberry32 } from '../../common/random.js';
import type { PeerName } from '../../common/types.js';
import { RECONNECT_FACTOR, RECONNECT_INITIAL_MS, RECONNECT_MAX_MS } from '../constants.js';
import { GOSSIP_INTERVAL_MS, type GossipChannel, GossipMux } from '../gossip/channel.js';
import { FRAME_HEADER_LEN } from '../protocol.js';
import { computeRoutes, emptyRoutes, PEER_GC_DELAY_MS, type Routes, unreachable } from '../routes.js';
import { type ConnectionSummary, type MergeResult, TOPOLOGY_CHANNEL, Topology, TopologyGossiper } from '../topology.js';

export { mulberry32 };

// ---- Defaults (candidates for router/constants.ts where the router shares them) ----

/** SIM_EPOCH_MS is the wall-clock time virtual time 0 stands for (incarnations are ms timestamps). */
export const SIM_EPOCH_MS = 1_700_000_000_000;
/** SIM_DEGREE is the default discovery target: dial discovered peers until this many connections. */
export const SIM_DEGREE = 8;
/** SIM_DIAL_RETRY_MS is how long a node waits before dialling a peer again after a failed dial. */
export const SIM_DIAL_RETRY_MS = 2_000;
/**
 * ROUTES_RECALC_DELAY_MS coalesces route recomputation after topology changes (mesh: 100 ms); the
 * router should do the same, off the hot path.
 */
export const ROUTES_RECALC_DELAY_MS = 100;
/**
 * TOPOLOGY_ANNOUNCE_DELAY_MS coalesces gossip of our own entry: a connection's pending and
 * established states, and a new router's first connections, go out as one delta (mesh batches 1 s).
 */
export const TOPOLOGY_ANNOUNCE_DELAY_MS = 50;
/** SIM_CONTROL_PORT is the control port every simulated node announces. */
export const SIM_CONTROL_PORT = 6783;

/**
 * gossipFrameBytes is the size on the control connection of one `{t:'gossip', channel, payload}`
 * frame: the 4-byte length, then the MessagePack map (checked against encodeFrame by the tests).
 */
export function gossipFrameBytes(channel: string, payloadBytes: number): number {
  const chan = Buffer.byteLength(channel);
  const str = chan < 32 ? 1 : chan < 256 ? 2 : 3;
  const bin = payloadBytes < 256 ? 2 : payloadBytes < 0x10000 ? 3 : 5;
  // map16 (msgpackr's choice for objects: 3) + "t"(2) + "gossip"(7) + "channel"(8) + channel +
  // "payload"(8) + bin header + payload
  return FRAME_HEADER_LEN + 3 + 2 + 7 + 8 + str + chan + 8 + bin + payloadBytes;
}

/** GossipSimOptions configure a simulation; times are virtual milliseconds. */
export interface GossipSimOptions {
  /** seed drives every random choice (names, latencies, fanout, discovery). Default 1. */
  readonly seed?: number;
  /** latencyMs is the range one link's one-way latency is drawn from, once per link. Default [0.5, 2]. */
  readonly latencyMs?: readonly [number, number];
  /** jitterMs is the most added to each message's latency (uniform). Default 0.2. */
  readonly jitterMs?: number;
  /** processingMs is the receiver's time per message; a busy receiver queues. Default 0.2. */
  readonly processingMs?: number;
  /** gossipIntervalMs is the anti-entropy period (each node's phase is random). Default GOSSIP_INTERVAL_MS. */
  readonly gossipIntervalMs?: number;
  /** gcDelayMs is how long after a topology change unreachable peers are forgotten. Default PEER_GC_DELAY_MS. */
  readonly gcDelayMs?: number;
  /** routesDelayMs coalesces route recomputation. Default ROUTES_RECALC_DELAY_MS. */
  readonly routesDelayMs?: number;
  /** announceDelayMs coalesces gossip of a node's own entry. Default TOPOLOGY_ANNOUNCE_DELAY_MS. */
  readonly announceDelayMs?: number;
  /** degree is the discovery target. Default SIM_DEGREE. */
  readonly degree?: number;
  /** discovery dials peers learned from the topology (default true); off, only explicit targets are dialled. */
  readonly discovery?: boolean;
  /** fifo keeps each link direction in order, as TCP does (default true); false lets jitter reorder messages. */
  readonly fifo?: boolean;
}

/** SimCounters are message and byte totals (frames on control connections). */
export interface SimCounters {
  messages: number;
  bytes: number;
}

/** ConvergenceResult is what {@link GossipSim.runUntilConverged} measured. */
export interface ConvergenceResult {
  readonly converged: boolean;
  /** timeMs is the virtual time from the call until convergence (the timeout if it never came). */
  readonly timeMs: number;
  /** messages and bytes were sent between the call and its return (quiescence after convergence). */
  readonly messages: number;
  readonly bytes: number;
  /** messagesToConverge and bytesToConverge were sent between the call and convergence. */
  readonly messagesToConverge: number;
  readonly bytesToConverge: number;
  /** elapsedMs is the virtual time from the call to its return. */
  readonly elapsedMs: number;
}

/** SimRejection is a topology entry a node refused (a name collision, say). */
export interface SimRejection {
  readonly node: PeerName;
  readonly from: PeerName;
  readonly reason: string;
}

interface Link {
  readonly latencyMs: number;
  up: boolean;
  /** lastAt is the arrival time of the last message per direction, keyed by sender (FIFO). */
  readonly lastAt: Map<PeerName, number>;
}

interface SimNode {
  readonly name: PeerName;
  readonly index: number;
  readonly addr: string;
  readonly targets: readonly PeerName[];
  readonly topology: Topology;
  readonly mux: GossipMux;
  readonly channel: GossipChannel;
  readonly links: Map<PeerName, Link>;
  readonly dialing: Set<PeerName>;
  readonly failedAt: Map<PeerName, number>;
  /** failures counts consecutive failed dials of a launch target (its backoff). */
  readonly failures: Map<PeerName, number>;
  readonly sent: SimCounters;
  alive: boolean;
  neighbourList: PeerName[] | undefined;
  /** routes is the snapshot the node gossips and discovers by, recomputed routesDelayMs after changes. */
  routes: Routes;
  /** fresh is computed from the current topology when needed (GC, convergence check). */
  fresh: Routes | undefined;
  /** announceTo collects the peers whose connection changed since our entry was last gossiped. */
  readonly announceTo: Set<PeerName>;
  busyUntil: number;
  gcPending: boolean;
  routesPending: boolean;
  announcePending: boolean;
}

interface SimEvent {
  readonly at: number;
  readonly seq: number;
  /** active events are work in progress; the run is quiescent when none is queued. Ticks and retries are not. */
  readonly active: boolean;
  readonly run: () => void;
}

/** EventQueue is a binary min-heap of events by (at, seq). */
class EventQueue {
  private readonly heap: SimEvent[] = [];

  get size(): number {
    return this.heap.length;
  }

  peek(): SimEvent | undefined {
    return this.heap[0];
  }

  push(e: SimEvent): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  pop(): SimEvent | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last !== undefined) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && before(h[l]!, h[m]!)) m = l;
        if (r < h.length && before(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}

function before(a: SimEvent, b: SimEvent): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

function pairKey(a: PeerName, b: PeerName): string {
  return a < b ? `${a}|${b}` : `${b}|${a}`;
}

/**
 * GossipSim runs N routers' mesh cores on a virtual clock. Build with `join`, disturb with `kill`,
 * `restart`, `disconnect`, `partition` and `heal`, then `runUntilConverged` or `runFor`.
 */
export class GossipSim {
  /** sent totals every frame any node sent since the simulation began. */
  readonly sent: SimCounters = { messages: 0, bytes: 0 };
  /** rejections lists every entry a node refused, oldest first. */
  readonly rejections: SimRejection[] = [];

  private readonly random: () => number;
  private readonly latencyMs: readonly [number, number];
  private readonly jitterMs: number;
  private readonly processingMs: number;
  private readonly gossipIntervalMs: number;
  private readonly gcDelayMs: number;
  private readonly routesDelayMs: number;
  private readonly announceDelayMs: number;
  private readonly degree: number;
  private readonly discovery: boolean;
  private readonly fifo: boolean;
  private readonly queue = new EventQueue();
  private readonly nodes = new Map<PeerName, SimNode>();
  private readonly linkLatency = new Map<string, number>();
  /** mismatched[n] holds the live peers whose entry at live node n differs from their own. */
  private readonly mismatched = new Map<PeerName, Set<PeerName>>();
  private mismatches = 0;
  private dirty = true;
  private convergedSince: number | undefined;
  /** sentAtConverged is `sent` when convergedSince was set. */
  private sentAtConverged: SimCounters = { messages: 0, bytes: 0 };
  private activeEvents = 0;
  private seq = 0;
  private clock = 0;
  private joined = 0;
  private partitionSide: ReadonlySet<PeerName> | undefined;
  private cuts: [PeerName, PeerName][] = [];

  constructor(opts: GossipSimOptions = {}) {
    this.random = mulberry32(opts.seed ?? 1);
    this.latencyMs = opts.latencyMs ?? [0.5, 2];
    this.jitterMs = opts.jitterMs ?? 0.2;
    this.processingMs = opts.processingMs ?? 0.2;
    this.gossipIntervalMs = opts.gossipIntervalMs ?? GOSSIP_INTERVAL_MS;
    this.gcDelayMs = opts.gcDelayMs ?? PEER_GC_DELAY_MS;
    this.routesDelayMs = opts.routesDelayMs ?? ROUTES_RECALC_DELAY_MS;
    this.announceDelayMs = opts.announceDelayMs ?? TOPOLOGY_ANNOUNCE_DELAY_MS;
    this.degree = opts.degree ?? SIM_DEGREE;
    this.discovery = opts.discovery ?? true;
    this.fifo = opts.fifo ?? true;
  }

  /** now is the virtual time in ms. */
  get now(): number {
    return this.clock;
  }

  /** live lists the names of the nodes that are running. */
  live(): PeerName[] {
    return [...this.nodes.values()].filter((n) => n.alive).map((n) => n.name);
  }

  /** topology returns a node's Topology (also after it died: its last state). */
  topology(name: PeerName): Topology | undefined {
    return this.nodes.get(name)?.topology;
  }

  /** neighbours lists a node's live control connections. */
  neighbours(name: PeerName): PeerName[] {
    const n = this.nodes.get(name);
    return n === undefined ? [] : [...n.links.keys()];
  }

  /** sentBy returns what one node (its current incarnation) has sent. */
  sentBy(name: PeerName): SimCounters | undefined {
    return this.nodes.get(name)?.sent;
  }

  /**
   * join starts a new node that dials `via` (default: one random live node; none for the first).
   * Returns its name. Nothing happens until the simulation runs.
   */
  join(via?: readonly PeerName[]): PeerName {
    const live = this.live();
    const targets = via ?? (live.length === 0 ? [] : [live[Math.floor(this.random() * live.length)]!]);
    let name: PeerName;
    do name = this.randomName();
    while (this.nodes.has(name));
    this.start(name, this.joined++, targets, SIM_EPOCH_MS + Math.floor(this.clock));
    return name;
  }

  /**
   * bootstrap adds `n` nodes at once, in the shape discovery gives a mesh (each new node links to
   * one random existing node and then to random others until `degree`; a node still short of
   * `degree` at the end links to more), with every link established and every node already holding
   * every entry, so that large meshes start converged without simulating their growth. Returns the
   * new names.
   */
  bootstrap(n: number): PeerName[] {
    const added: SimNode[] = [];
    const link = (a: SimNode, b: SimNode) => {
      const l: Link = { latencyMs: this.latencyOf(a.name, b.name), up: true, lastAt: new Map() };
      a.links.set(b.name, l);
      b.links.set(a.name, l);
    };
    const linkRandom = (node: SimNode, pool: readonly SimNode[]) => {
      const candidates = pool.filter((p) => p !== node && !node.links.has(p.name));
      while (node.links.size < this.degree && candidates.length > 0) {
        const [p] = candidates.splice(Math.floor(this.random() * candidates.length), 1);
        link(node, p!);
      }
    };
    for (let i = 0; i < n; i++) {
      const pool = [...this.nodes.values()].filter((x) => x.alive);
      const first = pool.length === 0 ? undefined : pool[Math.floor(this.random() * pool.length)]!;
      let name: PeerName;
      do name = this.randomName();
      while (this.nodes.has(name));
      const node = this.makeNode(name, this.joined++, first === undefined ? [] : [first.name], SIM_EPOCH_MS);
      this.nodes.set(name, node);
      added.push(node);
      if (first !== undefined) link(node, first);
      linkRandom(node, pool);
    }
    const live = [...this.nodes.values()].filter((x) => x.alive);
    for (const node of added) linkRandom(node, live);
    for (const node of live) {
      node.neighbourList = undefined;
      node.topology.setLocal({
        connections: [...node.links.keys()].map((p) => {
          const other = this.nodes.get(p)!;
          const outbound = other.targets.includes(node.name) === false && node.targets.includes(p);
          return { peer: p, addr: other.addr, tcpPort: SIM_CONTROL_PORT, outbound, established: true };
        }),
      });
    }
    const all = live.map((x) => x.topology.local);
    for (const node of live) {
      node.topology.merge(all);
      node.fresh = undefined;
      node.routes = this.routesOf(node);
    }
    for (const node of added) this.scheduleTicks(node);
    for (const node of live) this.refreshNode(node.name);
    return added.map((x) => x.name);
  }

  /**
   * kill stops a node at once (a crash, or `weft stop`): its links go dead and each neighbour drops
   * its connection `detectMs` later (0: the peer's kernel resets the TCP connections at once; a host
   * that vanishes is noticed after the heartbeat timeout).
   */
  kill(name: PeerName, detectMs = 0): void {
    const node = this.nodes.get(name);
    if (node === undefined || !node.alive) return;
    node.alive = false;
    for (const [peer, link] of node.links) {
      link.up = false;
      const other = this.nodes.get(peer);
      if (other !== undefined) this.after(detectMs, true, () => this.linkDown(other, name, link));
    }
    node.links.clear();
    node.neighbourList = undefined;
    this.refreshNode(name);
  }

  /**
   * restart kills a node (if running) and starts it again under the same name with a new uid and a
   * newer incarnation, dialling the targets it was launched with.
   */
  restart(name: PeerName, detectMs = 0): void {
    const old = this.nodes.get(name);
    if (old === undefined) return;
    this.kill(name, detectMs);
    const incarnation = Math.max(SIM_EPOCH_MS + Math.floor(this.clock), old.topology.local.incarnation + 1);
    this.start(name, old.index, old.targets, incarnation);
  }

  /** disconnect closes the control connection between two nodes (both notice at once). */
  disconnect(a: PeerName, b: PeerName): void {
    const na = this.nodes.get(a);
    const link = na?.links.get(b);
    if (na === undefined || link === undefined) return;
    link.up = false;
    this.linkDown(na, b, link);
    const nb = this.nodes.get(b);
    if (nb !== undefined) this.linkDown(nb, a, link);
  }

  /**
   * partition cuts every link between `side` and the rest (both ends notice after `detectMs`) and
   * refuses dials across until `heal`.
   */
  partition(side: readonly PeerName[], detectMs = 0): void {
    const s = new Set(side);
    this.partitionSide = s;
    for (const a of s) {
      const na = this.nodes.get(a);
      if (na === undefined || !na.alive) continue;
      for (const [b, link] of [...na.links]) {
        if (s.has(b)) continue;
        link.up = false;
        this.cuts.push([a, b]);
        const nb = this.nodes.get(b)!;
        this.after(detectMs, true, () => this.linkDown(na, b, link));
        this.after(detectMs, true, () => this.linkDown(nb, a, link));
      }
    }
  }

  /** heal lifts the partition and redials the links it cut (their connection makers retry). */
  heal(): void {
    this.partitionSide = undefined;
    for (const [a, b] of this.cuts) {
      const na = this.nodes.get(a);
      if (na?.alive) this.dial(na, b);
    }
    this.cuts = [];
  }

  /** converged says whether the convergence condition (module comment) holds now. */
  converged(): boolean {
    this.evaluate();
    return this.convergedSince !== undefined;
  }

  /**
   * runUntilConverged runs until the mesh has converged and no work is in flight (messages,
   * handshakes, pending GC), or until `timeoutMs` of virtual time. `timeMs` is when it converged
   * for good: the last moment the condition became true before the quiet.
   */
  runUntilConverged(timeoutMs = 120_000): ConvergenceResult {
    const start = this.clock;
    const before = { ...this.sent };
    const deadline = start + timeoutMs;
    for (;;) {
      this.evaluate();
      if (this.activeEvents === 0 && this.convergedSince !== undefined) break;
      const next = this.queue.peek();
      if (next === undefined || next.at > deadline) {
        this.clock = Math.max(this.clock, Math.min(deadline, next?.at ?? deadline));
        break;
      }
      this.step();
    }
    const converged = this.activeEvents === 0 && this.convergedSince !== undefined;
    const early = converged && this.convergedSince! <= start;
    const at = early ? before : converged ? this.sentAtConverged : this.sent;
    return {
      converged,
      timeMs: converged ? Math.max(0, this.convergedSince! - start) : timeoutMs,
      messages: this.sent.messages - before.messages,
      bytes: this.sent.bytes - before.bytes,
      messagesToConverge: at.messages - before.messages,
      bytesToConverge: at.bytes - before.bytes,
      elapsedMs: this.clock - start,
    };
  }

  /** runFor runs every event due in the next `ms` and leaves the clock `ms` later. */
  runFor(ms: number): void {
    const end = this.clock + ms;
    for (;;) {
      const next = this.queue.peek();
      if (next === undefined || next.at > end) break;
      this.step();
    }
    this.clock = end;
  }

  // ---- nodes ----

  private randomName(): PeerName {
    let s = '02';
    for (let i = 0; i < 5; i++)
      s += `:${Math.floor(this.random() * 256)
        .toString(16)
        .padStart(2, '0')}`;
    return s as PeerName;
  }

  private randomUid(): string {
    const hi = BigInt(Math.floor(this.random() * 0x100000000));
    const lo = BigInt(Math.floor(this.random() * 0x100000000));
    return ((hi << 32n) | lo | 1n).toString();
  }

  private start(name: PeerName, index: number, targets: readonly PeerName[], incarnation: number): void {
    const node = this.makeNode(name, index, targets, incarnation);
    this.nodes.set(name, node);
    this.refreshNode(name);
    this.scheduleTicks(node);
    for (const t of targets) this.dial(node, t);
  }

  private makeNode(name: PeerName, index: number, targets: readonly PeerName[], incarnation: number): SimNode {
    const topology = new Topology({
      name,
      nickname: `sim${index}`,
      uid: this.randomUid(),
      incarnation,
      version: 1,
      connections: [],
      cidrs: [`10.${32 + (index >> 16)}.${(index >> 8) & 255}.${index & 255}/32`],
      sleevePort: 6783,
      vxlanPort: 6784,
      encap: 'sleeve',
    });
    // The callbacks close over `node`, which exists by the time any of them runs.
    const mux = new GossipMux({
      local: name,
      send: (to, channel, payload) => this.send(node, to, channel, payload),
      neighbours: () => {
        node.neighbourList ??= [...node.links.keys()];
        return node.neighbourList;
      },
      routes: () => node.routes,
      random: this.random,
      log: noopLogger,
    });
    const gossiper = new TopologyGossiper(topology, (result, src) => this.onMerge(node, result, src));
    const node: SimNode = {
      name,
      index,
      addr: `192.168.${(index >> 8) & 255}.${index & 255}`,
      targets,
      topology,
      mux,
      channel: mux.addChannel(TOPOLOGY_CHANNEL, gossiper),
      links: new Map(),
      dialing: new Set(),
      failedAt: new Map(),
      failures: new Map(),
      sent: { messages: 0, bytes: 0 },
      alive: true,
      neighbourList: undefined,
      routes: emptyRoutes(name),
      fresh: undefined,
      announceTo: new Set(),
      busyUntil: 0,
      gcPending: false,
      routesPending: false,
      announcePending: false,
    };
    return node;
  }

  private scheduleTicks(node: SimNode): void {
    const tick = () => {
      if (!node.alive) return;
      node.mux.tick();
      this.after(this.gossipIntervalMs, false, tick);
    };
    this.after(this.random() * this.gossipIntervalMs, false, tick);
  }

  /** routesOf returns routes computed from the node's current topology. */
  private routesOf(node: SimNode): Routes {
    node.fresh ??= computeRoutes(node.name, node.topology.entries());
    return node.fresh;
  }

  // ---- links ----

  private latencyOf(a: PeerName, b: PeerName): number {
    const key = pairKey(a, b);
    let l = this.linkLatency.get(key);
    if (l === undefined) {
      const [lo, hi] = this.latencyMs;
      l = lo + this.random() * (hi - lo);
      this.linkLatency.set(key, l);
    }
    return l;
  }

  private blocked(a: PeerName, b: PeerName): boolean {
    const s = this.partitionSide;
    return s !== undefined && s.has(a) !== s.has(b);
  }

  private dial(node: SimNode, peer: PeerName): void {
    if (peer === node.name || node.links.has(peer) || node.dialing.has(peer)) return;
    node.dialing.add(peer);
    this.after(3 * this.latencyOf(node.name, peer), true, () => {
      node.dialing.delete(peer);
      const other = this.nodes.get(peer);
      if (!node.alive || node.links.has(peer)) return;
      if (other === undefined || !other.alive || this.blocked(node.name, peer)) {
        node.failedAt.set(peer, this.clock);
        if (node.targets.includes(peer)) this.redial(node, peer);
        else this.after(SIM_DIAL_RETRY_MS, false, () => this.discover(node));
        return;
      }
      this.linkUp(node, other);
    });
  }

  /** redial dials a launch target again after the connection maker's backoff (RECONNECT_*, no jitter). */
  private redial(node: SimNode, peer: PeerName): void {
    const failures = (node.failures.get(peer) ?? 0) + 1;
    node.failures.set(peer, failures);
    const delay = Math.min(RECONNECT_INITIAL_MS * RECONNECT_FACTOR ** (failures - 1), RECONNECT_MAX_MS);
    this.after(delay, false, () => {
      if (node.alive && !node.links.has(peer)) this.dial(node, peer);
    });
  }

  private linkUp(a: SimNode, b: SimNode): void {
    const link: Link = { latencyMs: this.latencyOf(a.name, b.name), up: true, lastAt: new Map() };
    for (const [x, y] of [
      [a, b],
      [b, a],
    ] as const) {
      const old = x.links.get(y.name);
      if (old !== undefined) old.up = false; // replaced: the peer restarted before we noticed
      x.links.set(y.name, link);
      x.neighbourList = undefined;
      x.failedAt.delete(y.name);
      x.failures.delete(y.name);
      this.setConnection(x, y, x === a, false);
      x.mux.onNewNeighbour(y.name);
    }
    this.after(2 * link.latencyMs, true, () => {
      if (!link.up) return;
      this.setConnection(a, b, true, true);
      this.setConnection(b, a, false, true);
    });
  }

  private linkDown(node: SimNode, peer: PeerName, link: Link): void {
    if (!node.alive || node.links.get(peer) !== link) return;
    node.links.delete(peer);
    node.neighbourList = undefined;
    if (node.targets.includes(peer)) this.redial(node, peer);
    this.changeLocal(
      node,
      node.topology.local.connections.filter((c) => c.peer !== peer),
      peer,
    );
  }

  /** setConnection lists (or updates) the connection to `peer` in our entry and gossips the change. */
  private setConnection(node: SimNode, peer: SimNode, outbound: boolean, established: boolean): void {
    const summary: ConnectionSummary = {
      peer: peer.name,
      addr: peer.addr,
      tcpPort: SIM_CONTROL_PORT,
      outbound,
      established,
    };
    this.changeLocal(
      node,
      [...node.topology.local.connections.filter((c) => c.peer !== peer.name), summary],
      peer.name,
    );
  }

  /**
   * changeLocal replaces our connections; our entry is gossiped announceDelayMs later, to the peers
   * whose connection changed (those still connected) among others.
   */
  private changeLocal(node: SimNode, connections: ConnectionSummary[], concerned: PeerName): void {
    node.topology.setLocal({ connections });
    this.afterTopologyChange(node, [node.name]);
    node.announceTo.add(concerned);
    if (node.announcePending) return;
    node.announcePending = true;
    this.after(this.announceDelayMs, true, () => {
      node.announcePending = false;
      if (!node.alive) return;
      const include = [...node.announceTo];
      node.announceTo.clear();
      node.channel.broadcast(node.topology.encode([node.name]), include);
    });
  }

  // ---- messages ----

  private send(from: SimNode, to: PeerName, channel: string, payload: Uint8Array): void {
    const link = from.links.get(to);
    if (!from.alive || link === undefined || !link.up) return;
    const bytes = gossipFrameBytes(channel, payload.length);
    this.sent.messages++;
    this.sent.bytes += bytes;
    from.sent.messages++;
    from.sent.bytes += bytes;
    let at = this.clock + link.latencyMs + this.random() * this.jitterMs;
    if (this.fifo) at = Math.max(at, link.lastAt.get(from.name) ?? 0);
    link.lastAt.set(from.name, at);
    this.at(at, true, () => {
      const dst = this.nodes.get(to);
      if (dst === undefined || !dst.alive || !link.up || dst.links.get(from.name) !== link) return;
      const done = Math.max(this.clock, dst.busyUntil) + this.processingMs;
      dst.busyUntil = done;
      this.at(done, true, () => {
        if (dst.alive) dst.mux.receive(from.name, channel, payload);
      });
    });
  }

  private onMerge(node: SimNode, result: MergeResult, src: PeerName): void {
    for (const r of result.rejected) this.rejections.push({ node: node.name, from: src, reason: r.reason });
    if (result.changed.length > 0)
      this.afterTopologyChange(
        node,
        result.changed.map((e) => e.name),
      );
  }

  /** afterTopologyChange invalidates routes, updates the convergence bookkeeping and schedules discovery and GC. */
  private afterTopologyChange(node: SimNode, names: readonly PeerName[]): void {
    node.fresh = undefined;
    for (const p of names) {
      if (p === node.name) this.refreshPeer(p);
      else this.refreshPair(node, p);
    }
    if (!node.routesPending) {
      node.routesPending = true;
      this.after(this.routesDelayMs, true, () => {
        node.routesPending = false;
        if (!node.alive) return;
        node.routes = this.routesOf(node);
        this.discover(node);
      });
    }
    if (!node.gcPending) {
      node.gcPending = true;
      this.after(this.gcDelayMs, true, () => {
        node.gcPending = false;
        this.collect(node);
      });
    }
  }

  /** discover dials reachable peers we are not connected to until we have `degree` connections. */
  private discover(node: SimNode): void {
    if (!node.alive || !this.discovery) return;
    let want = this.degree - node.links.size - node.dialing.size;
    if (want <= 0) return;
    const candidates: PeerName[] = [];
    for (const p of node.routes.reachable) {
      const failed = node.failedAt.get(p);
      if (p === node.name || node.links.has(p) || node.dialing.has(p)) continue;
      if (failed !== undefined && this.clock - failed < SIM_DIAL_RETRY_MS) continue;
      candidates.push(p);
    }
    while (want-- > 0 && candidates.length > 0) {
      const i = Math.floor(this.random() * candidates.length);
      const [p] = candidates.splice(i, 1);
      this.dial(node, p!);
    }
  }

  /** collect forgets the peers a node's routes no longer reach. */
  private collect(node: SimNode): void {
    if (!node.alive) return;
    const removed = node.topology.remove(unreachable(node.topology.entries(), this.routesOf(node)));
    if (removed.length > 0) this.afterTopologyChange(node, removed);
  }

  // ---- convergence bookkeeping ----

  /** refreshPair records whether live node `n` holds live peer `p`'s own current entry. */
  private refreshPair(n: SimNode, p: PeerName): void {
    this.dirty = true;
    const peer = this.nodes.get(p);
    let set = this.mismatched.get(n.name);
    const ok = !n.alive || peer === undefined || !peer.alive || sameVersion(n.topology.get(p), peer.topology.local);
    if (ok) {
      if (set?.delete(p)) this.mismatches--;
      return;
    }
    if (set === undefined) {
      set = new Set();
      this.mismatched.set(n.name, set);
    }
    if (!set.has(p)) {
      set.add(p);
      this.mismatches++;
    }
  }

  /** refreshPeer re-checks every live node's view of `p` (its own entry changed). */
  private refreshPeer(p: PeerName): void {
    for (const n of this.nodes.values()) if (n.alive && n.name !== p) this.refreshPair(n, p);
  }

  /** refreshNode re-checks every pair involving `name` (it started or died). */
  private refreshNode(name: PeerName): void {
    const node = this.nodes.get(name)!;
    if (!node.alive) {
      const set = this.mismatched.get(name);
      if (set !== undefined) this.mismatches -= set.size;
      this.mismatched.delete(name);
    } else for (const p of this.nodes.keys()) if (p !== name) this.refreshPair(node, p);
    this.refreshPeer(name);
  }

  /** evaluate updates `convergedSince` after a change. */
  private evaluate(): void {
    if (!this.dirty) return;
    this.dirty = false;
    if (this.mismatches > 0 || !this.routesComplete()) this.convergedSince = undefined;
    else if (this.convergedSince === undefined) {
      this.convergedSince = this.clock;
      this.sentAtConverged = { ...this.sent };
    }
  }

  private routesComplete(): boolean {
    const live = this.live();
    for (const name of live) {
      const reach = this.routesOf(this.nodes.get(name)!).reachable;
      if (reach.size < live.length) return false;
      for (const p of live) if (!reach.has(p)) return false;
    }
    return true;
  }

  // ---- events ----

  private at(at: number, active: boolean, run: () => void): void {
    if (active) this.activeEvents++;
    this.queue.push({ at, seq: this.seq++, active, run });
  }

  private after(ms: number, active: boolean, run: () => void): void {
    this.at(this.clock + ms, active, run);
  }

  private step(): void {
    const e = this.queue.pop()!;
    this.clock = Math.max(this.clock, e.at);
    if (e.active) this.activeEvents--;
    e.run();
    this.evaluate();
  }
}

function sameVersion(
  a: { uid: string; incarnation: number; version: number } | undefined,
  b: { uid: string; incarnation: number; version: number },
): boolean {
  return a !== undefined && a.uid === b.uid && a.incarnation === b.incarnation && a.version === b.version;
}
