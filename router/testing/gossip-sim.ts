/**
 * GossipSim runs N routers' real mesh cores (router/mesh.ts: Topology, the gossip channels, routes,
 * discovery by pairHash up to DISCOVERY_DEGREE, peer GC) in one process on one VirtualClock, so
 * what it measures is the product's own behaviour. Only what lies below the core is modelled: the
 * control connections (a link with a latency), the connection maker's dialling (targets, backoff)
 * and the data path's proof that a link works. All randomness comes from one seed and all time
 * from the clock (ordered by due time, then scheduling), so a run is exactly repeatable.
 *
 * Per node, the same wiring as router/router.ts:
 *
 * ```
 *  core.dialer.addTargets ──▶ dial ──3 one-way delays (SYN, SYN-ACK, Hellos)──▶ link up on both
 *        ends: neighbourUp (full state to the new neighbour), our entry republished (pending)
 *        ──2 one-way delays (data-path heartbeat + ack)──▶ republished (established)
 *  dial fails (peer down, partitioned) ──▶ retried while it is a target, with the connection
 *        maker's backoff (backoffMs: RECONNECT_* with jitter); a link that drops is redialled from
 *        the initial delay if it is a target
 *  message ──link latency (+ jitter; FIFO per direction like TCP)──▶ queued behind the receiver's
 *        earlier messages, processingMs each ──▶ core.receive
 * ```
 *
 * Everything else (when routes are recomputed, what is gossiped to whom, when a peer is forgotten,
 * whom discovery dials) is MeshCore's. Converged: every live node holds, for every live peer,
 * exactly that peer's own current entry (same uid, incarnation and version), and its routes reach
 * every live peer.
 *
 * Over 400 lines because it is one harness: the link model, the dialler and the convergence
 * bookkeeping only make sense together.
 */

import { type Timer, VirtualClock } from '../../common/clock.js';
import { noopLogger } from '../../common/log.js';
import { mulberry32 } from '../../common/random.js';
import type { PeerName } from '../../common/types.js';
import { backoffMs } from '../connection-maker.js';
import { DISCOVERY_DEGREE } from '../constants.js';
import { GOSSIP_INTERVAL_MS } from '../gossip/channel.js';
import { MeshCore, pairHash } from '../mesh.js';
import { FRAME_HEADER_LEN } from '../protocol.js';
import { PEER_GC_DELAY_MS } from '../routes.js';
import type { ConnectionSummary, PeerEntry, Topology } from '../topology.js';

export { mulberry32 };

/** SIM_EPOCH_MS is the wall-clock time virtual time 0 stands for (incarnations are ms timestamps). */
export const SIM_EPOCH_MS = 1_700_000_000_000;
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
  /** seed drives every random choice (names, latencies, fanout, backoff jitter). Default 1. */
  readonly seed?: number;
  /** latencyMs is the range one link's one-way latency is drawn from, once per link. Default [0.5, 2]. */
  readonly latencyMs?: readonly [number, number];
  /** jitterMs is the most added to each message's latency (uniform). Default 0.2. */
  readonly jitterMs?: number;
  /** processingMs is the receiver's time per message; a busy receiver queues. Default 0.2. */
  readonly processingMs?: number;
  /** gossipIntervalMs is the anti-entropy period. Default GOSSIP_INTERVAL_MS. */
  readonly gossipIntervalMs?: number;
  /** gcDelayMs is how long after a topology change unreachable peers are forgotten. Default PEER_GC_DELAY_MS. */
  readonly gcDelayMs?: number;
  /** degree is the discovery degree. Default DISCOVERY_DEGREE (the router's). */
  readonly degree?: number;
  /** discovery dials peers learned from the topology (default true); off, only launch targets are dialled. */
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
  /** dialler is the end that dialled (its connection is outbound). */
  readonly dialler: PeerName;
  up: boolean;
  /** established: the data path has been proven (heartbeats both ways). */
  established: boolean;
  /** lastAt is the arrival time of the last message per direction, keyed by sender (FIFO). */
  readonly lastAt: Map<PeerName, number>;
}

/** Target is a connection maker target: dialled, and redialled with backoff while it is held. */
interface Target {
  readonly address: string;
  readonly peer: PeerName;
  failures: number;
  dialling: boolean;
  timer: Timer | undefined;
}

interface SimNode {
  readonly name: PeerName;
  readonly index: number;
  readonly addr: string;
  /** launch are the node's launch targets (persistent). */
  readonly launch: readonly PeerName[];
  readonly core: MeshCore;
  readonly links: Map<PeerName, Link>;
  readonly targets: Map<string, Target>;
  readonly sent: SimCounters;
  readonly cidrs: string[];
  alive: boolean;
  neighbourList: PeerName[] | undefined;
  /** lastTopology is the topology the node held when it died. */
  lastTopology: Topology | undefined;
  busyUntil: number;
}

function pairKey(a: PeerName, b: PeerName): string {
  return a < b ? `${a}|${b}` : `${b}|${a}`;
}

/**
 * GossipSim runs N routers' mesh cores on a virtual clock. Build with `join` or `bootstrap`,
 * disturb with `kill`, `restart`, `disconnect`, `partition` and `heal`, then `runUntilConverged`
 * or `runFor`.
 */
export class GossipSim {
  /** sent totals every frame any node sent since the simulation began. */
  readonly sent: SimCounters = { messages: 0, bytes: 0 };
  /** rejections lists every entry a node refused, oldest first. */
  readonly rejections: SimRejection[] = [];
  /** clock is the simulation's time; virtual time 0 is SIM_EPOCH_MS. */
  readonly clock = new VirtualClock(SIM_EPOCH_MS);

  private readonly random: () => number;
  private readonly latencyMs: readonly [number, number];
  private readonly jitterMs: number;
  private readonly processingMs: number;
  private readonly gossipIntervalMs: number;
  private readonly gcDelayMs: number;
  private readonly degree: number;
  private readonly discovery: boolean;
  private readonly fifo: boolean;
  private readonly nodes = new Map<PeerName, SimNode>();
  private readonly byAddr = new Map<string, PeerName>();
  private readonly linkLatency = new Map<string, number>();
  /**
   * holders[p] holds the live nodes that hold live peer p's own current entry: a new version of
   * p's entry empties it at once (nobody else holds it yet), where checking every node's copy would
   * cost O(N) per change of anyone's connections.
   */
  private readonly holders = new Map<PeerName, Set<PeerName>>();
  /** missing counts the pairs (live node n, live peer p ≠ n) where n lacks p's current entry. */
  private missing = 0;
  private dirty = true;
  /**
   * unrouted holds the live nodes whose routes miss a live peer, kept per node as routes change;
   * undefined when the live set changed and every node needs checking again (done on demand).
   */
  private unrouted: Set<PeerName> | undefined;
  /** liveNames caches live() while unrouted is defined. */
  private liveNames: PeerName[] = [];
  private convergedSince: number | undefined;
  /** sentAtConverged is `sent` when convergedSince was set. */
  private sentAtConverged: SimCounters = { messages: 0, bytes: 0 };
  /** activeEvents counts work in flight (messages, dials, link changes); retries and ticks are not. */
  private activeEvents = 0;
  private joined = 0;
  private partitionSide: ReadonlySet<PeerName> | undefined;

  constructor(opts: GossipSimOptions = {}) {
    this.random = mulberry32(opts.seed ?? 1);
    this.latencyMs = opts.latencyMs ?? [0.5, 2];
    this.jitterMs = opts.jitterMs ?? 0.2;
    this.processingMs = opts.processingMs ?? 0.2;
    this.gossipIntervalMs = opts.gossipIntervalMs ?? GOSSIP_INTERVAL_MS;
    this.gcDelayMs = opts.gcDelayMs ?? PEER_GC_DELAY_MS;
    this.degree = opts.degree ?? DISCOVERY_DEGREE;
    this.discovery = opts.discovery ?? true;
    this.fifo = opts.fifo ?? true;
  }

  /** now is the virtual time in ms since the simulation began. */
  get now(): number {
    return this.clock.now() - SIM_EPOCH_MS;
  }

  /** live lists the names of the nodes that are running. */
  live(): PeerName[] {
    return [...this.nodes.values()].filter((n) => n.alive).map((n) => n.name);
  }

  /** topology returns a node's Topology (also after it died: its last state). */
  topology(name: PeerName): Topology | undefined {
    const n = this.nodes.get(name);
    return n?.core.topology ?? n?.lastTopology;
  }

  /** neighbours lists a node's live control connections. */
  neighbours(name: PeerName): PeerName[] {
    const n = this.nodes.get(name);
    return n === undefined ? [] : [...n.links.keys()];
  }

  /** channels returns a node's gossip channels with their counters (empty once it died). */
  channels(name: PeerName): ReturnType<MeshCore['channels']> {
    return this.nodes.get(name)?.core.channels() ?? [];
  }

  /** sentBy returns what one node (its current incarnation) has sent. */
  sentBy(name: PeerName): SimCounters | undefined {
    return this.nodes.get(name)?.sent;
  }

  /**
   * join starts a new node launched with `via` as its peers (default: one random live node; none
   * for the first). Returns its name. Nothing happens until the simulation runs.
   */
  join(via?: readonly PeerName[]): PeerName {
    const live = this.live();
    const targets = via ?? (live.length === 0 ? [] : [live[Math.floor(this.random() * live.length)]!]);
    let name: PeerName;
    do name = this.randomName();
    while (this.nodes.has(name));
    this.start(name, this.joined++, targets, Math.floor(this.clock.now()));
    return name;
  }

  /**
   * bootstrap adds `n` nodes at once in the shape the router's discovery gives a mesh grown one
   * join at a time (each new node is connected to the node it was launched with, then to the
   * peers ranking first by pairHash until `degree`; a node still short of `degree` at the end is
   * connected to more the same way), with every link established and every node already holding
   * every entry, so that large meshes start converged without simulating their growth. The cores
   * then recompute (and discovery may still dial). Returns the new names.
   */
  bootstrap(n: number): PeerName[] {
    const added: SimNode[] = [];
    const link = (a: SimNode, b: SimNode) => {
      const l: Link = {
        latencyMs: this.latencyOf(a.name, b.name),
        dialler: a.name,
        up: true,
        established: true,
        lastAt: new Map(),
      };
      a.links.set(b.name, l);
      b.links.set(a.name, l);
    };
    const linkRanked = (node: SimNode, pool: readonly SimNode[]) => {
      if (node.links.size >= this.degree) return;
      const candidates = pool
        .filter((p) => p !== node && !node.links.has(p.name))
        .map((p) => ({ p, rank: pairHash(node.name, p.name) }))
        .sort((x, y) => x.rank - y.rank || (x.p.name < y.p.name ? -1 : 1));
      for (const { p } of candidates) {
        if (node.links.size >= this.degree) break;
        link(node, p);
      }
    };
    for (let i = 0; i < n; i++) {
      const pool = [...this.nodes.values()].filter((x) => x.alive);
      const first = pool.length === 0 ? undefined : pool[Math.floor(this.random() * pool.length)]!;
      let name: PeerName;
      do name = this.randomName();
      while (this.nodes.has(name));
      const node = this.makeNode(name, this.joined++, first === undefined ? [] : [first.name]);
      this.nodes.set(name, node);
      this.byAddr.set(node.addr, name);
      node.core.start(this.localEntry(node, Math.floor(this.clock.now())));
      added.push(node);
      if (first !== undefined) {
        link(node, first);
        this.hold(node, first.name);
      }
      linkRanked(node, pool);
    }
    const live = [...this.nodes.values()].filter((x) => x.alive);
    for (const node of added) linkRanked(node, live);
    for (const node of live) {
      node.neighbourList = undefined;
      node.core.topology!.setLocal({ connections: this.summaries(node), cidrs: node.cidrs });
    }
    const all = live.map((x) => x.core.topology!.local);
    for (const node of live) node.core.topology!.merge(all);
    for (const node of live) node.core.recompute();
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
    node.lastTopology = node.core.topology;
    node.core.stop();
    for (const t of node.targets.values()) this.clock.clearTimeout(t.timer);
    node.targets.clear();
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
   * newer incarnation, launched with the targets it was launched with before.
   */
  restart(name: PeerName, detectMs = 0): void {
    const old = this.nodes.get(name);
    if (old === undefined) return;
    this.kill(name, detectMs);
    const incarnation = Math.max(Math.floor(this.clock.now()), (old.lastTopology?.local.incarnation ?? 0) + 1);
    this.start(name, old.index, old.launch, incarnation);
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
   * fails dials across until `heal`.
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
        const nb = this.nodes.get(b)!;
        this.after(detectMs, true, () => this.linkDown(na, b, link));
        this.after(detectMs, true, () => this.linkDown(nb, a, link));
      }
    }
  }

  /**
   * heal lifts the partition. Nothing is redialled at once: as in the router, links come back when
   * a connection maker's next retry of a target across succeeds (its backoff), and discovery does
   * the rest.
   */
  heal(): void {
    this.partitionSide = undefined;
  }

  /** converged says whether the convergence condition (module comment) holds now. */
  converged(): boolean {
    this.evaluate();
    return this.convergedSince !== undefined;
  }

  /**
   * runUntilConverged runs until the mesh has converged and no work is in flight (messages, dials,
   * link changes), or until `timeoutMs` of virtual time. `timeMs` is when it converged for good:
   * the last moment the condition became true before the quiet.
   */
  runUntilConverged(timeoutMs = 120_000): ConvergenceResult {
    const start = this.clock.now();
    const before = { ...this.sent };
    const deadline = start + timeoutMs;
    for (;;) {
      this.evaluate();
      if (this.activeEvents === 0 && this.convergedSince !== undefined) break;
      const next = this.clock.nextAt();
      if (next === undefined || next > deadline) {
        this.clock.advanceTo(deadline);
        break;
      }
      this.clock.advanceTo(next);
    }
    this.evaluate();
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
      elapsedMs: this.clock.now() - start,
    };
  }

  /** runFor runs every event due in the next `ms` and leaves the clock `ms` later. */
  runFor(ms: number): void {
    const end = this.clock.now() + ms;
    for (;;) {
      this.evaluate();
      const next = this.clock.nextAt();
      if (next === undefined || next > end) break;
      this.clock.advanceTo(next);
    }
    this.clock.advanceTo(end);
    this.evaluate();
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

  private start(name: PeerName, index: number, launch: readonly PeerName[], incarnation: number): void {
    const node = this.makeNode(name, index, launch);
    this.nodes.set(name, node);
    this.byAddr.set(node.addr, name);
    node.core.start(this.localEntry(node, incarnation));
    this.refreshNode(name);
    for (const t of launch) this.addTarget(node, t);
  }

  private localEntry(node: SimNode, incarnation: number): PeerEntry {
    return {
      name: node.name,
      nickname: `sim${node.index}`,
      uid: this.randomUid(),
      incarnation,
      version: 1,
      connections: [],
      cidrs: node.cidrs,
      sleevePort: 6783,
      vxlanPort: 6784,
      encap: 'sleeve',
    };
  }

  private makeNode(name: PeerName, index: number, launch: readonly PeerName[]): SimNode {
    // The callbacks close over `node`, which exists by the time any of them runs.
    const core: MeshCore = new MeshCore({
      name,
      clock: this.clock,
      log: noopLogger,
      random: this.random,
      discovery: this.discovery,
      discoveryDegree: this.degree,
      gossipIntervalMs: this.gossipIntervalMs,
      gcDelayMs: this.gcDelayMs,
      links: {
        neighbours: () => {
          node.neighbourList ??= [...node.links.keys()];
          return node.neighbourList;
        },
        has: (p) => node.links.has(p),
        send: (to, channel, payload) => this.send(node, to, channel, payload),
      },
      onChange: () => {
        this.dirty = true;
        this.refreshRoutes(node);
      },
      onMerge: (result, src) => {
        for (const r of result.rejected) this.rejections.push({ node: name, from: src, reason: r.reason });
        for (const e of result.changed) this.refreshPair(node, e.name);
      },
      onPeersForgotten: (gone) => {
        for (const p of gone) this.refreshPair(node, p);
      },
      onPeersRestored: (back) => {
        for (const p of back) this.refreshPair(node, p);
      },
    });
    core.dialer = {
      addTargets: (list) => {
        for (const a of list) this.addTarget(node, this.byAddr.get(a.slice(0, a.lastIndexOf(':')))!);
      },
      removeTargets: (list) => {
        for (const a of list) {
          const t = node.targets.get(a);
          if (t === undefined) continue;
          this.clock.clearTimeout(t.timer);
          node.targets.delete(a);
        }
      },
      isPersistent: (a) => {
        const p = this.byAddr.get(a.slice(0, a.lastIndexOf(':')));
        return p !== undefined && node.launch.includes(p);
      },
    };
    const node: SimNode = {
      name,
      index,
      addr: `192.168.${(index >> 8) & 255}.${index & 255}`,
      launch,
      core,
      links: new Map(),
      targets: new Map(),
      sent: { messages: 0, bytes: 0 },
      cidrs: [`10.${32 + (index >> 16)}.${(index >> 8) & 255}.${index & 255}/32`],
      alive: true,
      neighbourList: undefined,
      lastTopology: undefined,
      busyUntil: 0,
    };
    return node;
  }

  /** summaries are a node's connections as its topology entry lists them. */
  private summaries(node: SimNode): ConnectionSummary[] {
    const out: ConnectionSummary[] = [];
    for (const [p, link] of node.links) {
      out.push({
        peer: p,
        addr: this.nodes.get(p)!.addr,
        tcpPort: SIM_CONTROL_PORT,
        outbound: link.dialler === node.name,
        established: link.established,
      });
    }
    return out;
  }

  /** publish is the router's updateLocal: our connections as they are now, gossiped. */
  private publish(node: SimNode): void {
    if (!node.alive) return;
    node.core.setLocal({ connections: this.summaries(node), cidrs: node.cidrs });
    this.renewed(node.name);
  }

  // ---- the connection maker ----

  private targetAddress(peer: PeerName): string {
    return `${this.nodes.get(peer)!.addr}:${SIM_CONTROL_PORT}`;
  }

  /** hold records a target whose connection exists already (bootstrap). */
  private hold(node: SimNode, peer: PeerName): void {
    const address = this.targetAddress(peer);
    node.targets.set(address, { address, peer, failures: 0, dialling: false, timer: undefined });
  }

  private addTarget(node: SimNode, peer: PeerName): void {
    const address = this.targetAddress(peer);
    if (node.targets.has(address)) return;
    const t: Target = { address, peer, failures: 0, dialling: false, timer: undefined };
    node.targets.set(address, t);
    this.dial(node, t);
  }

  private dial(node: SimNode, t: Target): void {
    if (t.dialling || !node.alive) return;
    this.clock.clearTimeout(t.timer);
    t.timer = undefined;
    if (node.links.has(t.peer)) {
      t.failures = 0;
      return;
    }
    t.dialling = true;
    this.after(3 * this.latencyOf(node.name, t.peer), true, () => {
      t.dialling = false;
      if (!node.alive) return;
      if (node.links.has(t.peer)) {
        t.failures = 0;
        return;
      }
      const other = this.nodes.get(t.peer);
      if (other === undefined || !other.alive || this.blocked(node.name, t.peer)) {
        if (node.targets.get(t.address) === t) this.retry(node, t, false);
        return;
      }
      t.failures = 0;
      this.linkUp(node, other);
    });
  }

  /** retry dials a held target again after the backoff (from the initial delay when `reset`). */
  private retry(node: SimNode, t: Target, reset: boolean): void {
    if (reset) t.failures = 0;
    const delay = backoffMs(t.failures, this.random);
    t.failures++;
    this.clock.clearTimeout(t.timer);
    t.timer = this.clock.setTimeout(() => {
      t.timer = undefined;
      if (node.alive && node.targets.get(t.address) === t) this.dial(node, t);
    }, delay);
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

  /** linkUp: `a` dialled `b` and both handshakes completed (Router.onEstablished on both ends). */
  private linkUp(a: SimNode, b: SimNode): void {
    const link: Link = {
      latencyMs: this.latencyOf(a.name, b.name),
      dialler: a.name,
      up: true,
      established: false,
      lastAt: new Map(),
    };
    for (const [x, y] of [
      [a, b],
      [b, a],
    ] as const) {
      const old = x.links.get(y.name);
      if (old !== undefined) old.up = false; // replaced: the peer restarted before we noticed
      x.links.set(y.name, link);
      x.neighbourList = undefined;
    }
    for (const [x, y] of [
      [a, b],
      [b, a],
    ] as const) {
      x.core.neighbourUp(y.name);
      this.publish(x);
    }
    // The data path: each end's first heartbeat is heard, and acked, within two one-way delays.
    this.after(2 * link.latencyMs, true, () => {
      if (!link.up) return;
      link.established = true;
      this.publish(a);
      this.publish(b);
    });
  }

  /** linkDown: the node noticed its connection to `peer` closed (Router.onClosed). */
  private linkDown(node: SimNode, peer: PeerName, link: Link): void {
    if (!node.alive || node.links.get(peer) !== link) return;
    node.links.delete(peer);
    node.neighbourList = undefined;
    const other = this.nodes.get(peer);
    const t = other === undefined ? undefined : node.targets.get(`${other.addr}:${SIM_CONTROL_PORT}`);
    if (t !== undefined && !t.dialling) this.retry(node, t, true);
    this.publish(node);
  }

  // ---- messages ----

  private send(from: SimNode, to: PeerName, channel: string, payload: Uint8Array): void {
    const link = from.links.get(to);
    if (!from.alive || link === undefined || !link.up) return;
    const bytes = gossipFrameBytes(channel, payload.length);
    // No copy: a channel payload is never modified once sent (GossipTransport.send), so the
    // receiver may be handed the sender's bytes, as every receiver of one broadcast may.
    this.sent.messages++;
    this.sent.bytes += bytes;
    from.sent.messages++;
    from.sent.bytes += bytes;
    const now = this.clock.now();
    let at = now + link.latencyMs + this.random() * this.jitterMs;
    if (this.fifo) at = Math.max(at, link.lastAt.get(from.name) ?? 0);
    link.lastAt.set(from.name, at);
    this.after(at - now, true, () => {
      const dst = this.nodes.get(to);
      if (dst === undefined || !dst.alive || !link.up || dst.links.get(from.name) !== link) return;
      const t = this.clock.now();
      const done = Math.max(t, dst.busyUntil) + this.processingMs;
      dst.busyUntil = done;
      this.after(done - t, true, () => {
        if (dst.alive && dst.links.get(from.name) === link) dst.core.receive(from.name, channel, payload);
      });
    });
  }

  // ---- convergence bookkeeping ----

  /** refreshPair records whether live node `n` holds live peer `p`'s own current entry. */
  private refreshPair(n: SimNode, p: PeerName): void {
    this.dirty = true;
    if (!n.alive || n.name === p) return;
    const peer = this.nodes.get(p);
    const own = peer?.alive === true ? peer.core.topology?.local : undefined;
    if (own === undefined) return;
    let set = this.holders.get(p);
    if (set === undefined) {
      set = new Set();
      this.holders.set(p, set);
    }
    if (sameVersion(n.core.topology?.get(p), own)) {
      if (!set.has(n.name)) {
        set.add(n.name);
        this.missing--;
      }
    } else if (set.delete(n.name)) this.missing++;
  }

  /** renewed records that live peer `p` has a new version of its own entry, which no other node holds yet. */
  private renewed(p: PeerName): void {
    this.dirty = true;
    const set = this.holders.get(p);
    if (set === undefined) return;
    this.missing += set.size;
    set.clear();
  }

  /** refreshNode re-checks every pair involving `name` (it started or died) and counts `missing` again. */
  private refreshNode(name: PeerName): void {
    const node = this.nodes.get(name)!;
    if (!node.alive) {
      this.holders.delete(name);
      for (const set of this.holders.values()) set.delete(name);
    } else {
      this.holders.set(name, new Set());
      for (const p of this.nodes.keys()) if (p !== name) this.refreshPair(node, p);
      for (const n of this.nodes.values()) this.refreshPair(n, name);
    }
    let live = 0;
    for (const n of this.nodes.values()) if (n.alive) live++;
    this.missing = 0;
    for (const n of this.nodes.values()) {
      if (n.alive && n.core.topology !== undefined) this.missing += live - 1 - (this.holders.get(n.name)?.size ?? 0);
    }
    this.unrouted = undefined;
    this.dirty = true;
  }

  /** refreshRoutes records whether a node's routes reach every live peer (unless all need checking anyway). */
  private refreshRoutes(n: SimNode): void {
    const unrouted = this.unrouted;
    if (unrouted === undefined) return;
    if (!n.alive || this.routesReachAll(n)) unrouted.delete(n.name);
    else unrouted.add(n.name);
  }

  private routesReachAll(n: SimNode): boolean {
    const reach = n.core.routes.reachable;
    const live = this.liveNames;
    if (reach.size < live.length) return false;
    for (const p of live) if (!reach.has(p)) return false;
    return true;
  }

  /** evaluate updates `convergedSince` after a change. */
  private evaluate(): void {
    if (!this.dirty) return;
    this.dirty = false;
    if (this.missing > 0 || !this.routesComplete()) this.convergedSince = undefined;
    else if (this.convergedSince === undefined) {
      this.convergedSince = this.clock.now();
      this.sentAtConverged = { ...this.sent };
    }
  }

  private routesComplete(): boolean {
    if (this.unrouted === undefined) {
      this.liveNames = this.live();
      this.unrouted = new Set(this.liveNames.filter((p) => !this.routesReachAll(this.nodes.get(p)!)));
    }
    return this.unrouted.size === 0;
  }

  // ---- events ----

  /** after schedules `run` on the clock; active events are work in flight (see activeEvents). */
  private after(ms: number, active: boolean, run: () => void): void {
    if (active) this.activeEvents++;
    this.clock.setTimeout(() => {
      if (active) this.activeEvents--;
      run();
    }, ms);
  }
}

function sameVersion(
  a: { uid: string; incarnation: number; version: number } | undefined,
  b: { uid: string; incarnation: number; version: number },
): boolean {
  return a !== undefined && a.uid === b.uid && a.incarnation === b.incarnation && a.version === b.version;
}
