/**
 * MeshCore is the part of a router that the product, the multi-router tests and the simulator all
 * run: the topology (our entry and everyone else's), the gossip channels over the neighbours,
 * routes derived from the topology, discovery (which learned peers to dial) and forgetting peers
 * that stay unreachable. It knows nothing of sockets: its owner tells it when a neighbour comes
 * and goes and hands it the gossip that arrives, and it sends through `MeshLinks`. Time and timers
 * come from the injected Clock.
 *
 * Over 400 lines because it is the one place where topology, gossip, routes, discovery and peer GC
 * react to each other: the order of those reactions (merge, then coalesced recomputation, then
 * discovery and GC) is the core's contract, and each reaction is short.
 *
 * ```
 *  owner ── neighbourUp / receive / setLocal ──▶ MeshCore ── links.send ──▶ neighbours
 *                                                   │ merge → routes (RouteGraph) → rediscover (dialer)
 *                                                   └──────▶ onChange (IPAM, forwarding table)
 * ```
 */
import type { Clock, Timer } from '../common/clock.js';
import { InputError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { PeerName } from '../common/types.js';
import { DISCOVERY_DEGREE, FORGOTTEN_KEEP_MS, TOPOLOGY_ANNOUNCE_DELAY_MS } from './constants.js';
import { GOSSIP_INTERVAL_MS, type GossipChannel, GossipMux } from './gossip/channel.js';
import type { Gossip, Gossiper } from './gossip/gossip.js';
import { emptyRoutes, establishedOf, PEER_GC_DELAY_MS, RouteGraph, type Routes, unreachable } from './routes.js';
import {
  type ConnectionSummary,
  type MergeResult,
  type PeerEntry,
  REJECT_COLLISION,
  TOPOLOGY_CHANNEL,
  Topology,
  TopologyGossiper,
} from './topology.js';

/** REFUSAL_LOG_INTERVAL_MS: the same refused topology entry is logged at most this often. */
export const REFUSAL_LOG_INTERVAL_MS = 60_000;
/**
 * ROUTES_DELAY_MS is the default routesDelayMs: a change gossiped through the mesh arrives as a
 * burst of deltas (one per origin, each from several neighbours), and everything a recomputation
 * starts (discovery scans every entry, the owner rebuilds its forwarding table) is then done once
 * per burst rather than once per delta. Small next to a heartbeat; gossip itself never waits (it
 * relays along the current topology's trees, see latestRoutes).
 */
export const ROUTES_DELAY_MS = 10;
/**
 * RELAY_ROUTES_MAX_AGE_MS is the default relayRoutesMaxAgeMs: gossip relays along broadcast trees
 * of the topology as it was at most this long ago. During a burst (a heal reconnects hundreds of
 * links within a second) nearly every delta changes an edge, and searching the whole graph twice
 * per new delta (our tree, the origin's) is what made a burst cost O(N) per message; a tree a few
 * ms old differs from the current one in a few edges, and the random part of the fanout covers a
 * child it misses.
 */
export const RELAY_ROUTES_MAX_AGE_MS = 5;

/** MeshLinks is how the core reaches its neighbours (peers with a working control connection). */
export interface MeshLinks {
  /** neighbours lists the connected peers. */
  neighbours(): readonly PeerName[];
  /** has says whether `peer` is a connected neighbour. */
  has(peer: PeerName): boolean;
  /** send passes one gossip message to a neighbour; dropped if it is gone. */
  send(neighbour: PeerName, channel: string, payload: Uint8Array): void;
}

/** MeshDialer is the connection maker as discovery sees it: targets are `host:port` strings. */
export interface MeshDialer {
  addTargets(list: readonly string[]): void;
  removeTargets(list: readonly string[]): void;
  /** isPersistent says whether a target was given by the operator (discovery never removes those). */
  isPersistent(target: string): boolean;
}

/** MeshCoreOptions configure a MeshCore. */
export interface MeshCoreOptions {
  readonly name: PeerName;
  readonly clock: Clock;
  readonly log: Logger;
  readonly links: MeshLinks;
  /** random returns a number in [0, 1) for gossip fanout (default Math.random). */
  readonly random?: () => number;
  /** discovery connects to peers learned from the topology (default true). */
  readonly discovery?: boolean;
  /** discoveryDegree caps how many connections discovery makes (default DISCOVERY_DEGREE). */
  readonly discoveryDegree?: number;
  /** gossipIntervalMs is the anti-entropy period (default GOSSIP_INTERVAL_MS). */
  readonly gossipIntervalMs?: number;
  /** gcDelayMs: peers unreachable this long after a topology change are forgotten (default PEER_GC_DELAY_MS). */
  readonly gcDelayMs?: number;
  /**
   * routesDelayMs coalesces recomputation after merges from gossip: once, this long after the
   * first (default ROUTES_DELAY_MS; 0: at once, so status, routes and the forwarding table always
   * agree). Our own changes (setLocal) and forgetting peers recompute at once.
   */
  readonly routesDelayMs?: number;
  /** announceDelayMs coalesces gossip of our own entry (default TOPOLOGY_ANNOUNCE_DELAY_MS; 0: at once). */
  readonly announceDelayMs?: number;
  /** relayRoutesMaxAgeMs: how old the routes gossip relays along may be (default RELAY_ROUTES_MAX_AGE_MS; 0: always current). */
  readonly relayRoutesMaxAgeMs?: number;
  /** onChange fires after routes were recomputed (the owner rebuilds what depends on them). */
  readonly onChange?: () => void;
  /** onPeersForgotten fires with the peers dropped from the topology as unreachable. */
  readonly onPeersForgotten?: (peers: PeerName[]) => void;
  /** onPeersRestored fires with forgotten peers taken back from the store (reachable again, unchanged). */
  readonly onPeersRestored?: (peers: PeerName[]) => void;
  /** onMerge sees every topology merge (what changed, what was refused) from neighbour `src`; for harnesses. */
  readonly onMerge?: (result: MergeResult, src: PeerName) => void;
}

/**
 * MeshCore: see the module comment. `start(local)` creates the topology with our entry and starts
 * anti-entropy; `stop()` drops all of it (channels registered with addGossiper stay registered and
 * are re-created by the next start). Both idempotent.
 */
export class MeshCore {
  readonly name: PeerName;
  /** dialer receives discovery's targets; unset, discovery does nothing. */
  dialer: MeshDialer | undefined;
  private readonly opts: MeshCoreOptions;
  private readonly clock: Clock;
  private readonly log: Logger;
  private topologyValue: Topology | undefined;
  private mux: GossipMux | undefined;
  private topoChannel: GossipChannel | undefined;
  /** routesValue are the routes of the last recomputation: what the owner has installed. */
  private routesValue: Routes;
  /** latest are the routes of the topology as it is now (computed on demand, see latestRoutes). */
  private latest: Routes;
  /** routesDirty: the topology changed since `latest` was computed. */
  private routesDirty = false;
  /** latestAt is when `latest` was computed. */
  private latestAt = Number.NEGATIVE_INFINITY;
  /** graph derives `latest` from the topology, redoing only what a change touched. */
  private graph: RouteGraph;
  /** discovered are targets learned from the topology (not persisted). */
  private discovered = new Set<string>();
  private gossipTimer: Timer | undefined;
  private gcTimer: Timer | undefined;
  /** unreachableSince: when each known peer was first seen unreachable by a recomputation (reachable peers absent). */
  private unreachableSince = new Map<PeerName, number>();
  private routesTimer: Timer | undefined;
  private announceTimer: Timer | undefined;
  /** announceTo are neighbours that must receive our next announcement (their link to us changed). */
  private readonly announceTo = new Set<PeerName>();
  /** collisionsValue counts topology entries refused because another router uses our name. */
  private collisionsValue = 0;
  private readonly refusalsLogged = new Map<string, number>();
  private readonly gossipers: { name: string; gossiper: Gossiper; channel: GossipChannel | undefined }[] = [];
  /** rank caches pairHash(name, peer): discovery sorts every known peer by it on each change. */
  private readonly rank = new Map<PeerName, number>();

  constructor(opts: MeshCoreOptions) {
    this.opts = opts;
    this.name = opts.name;
    this.clock = opts.clock;
    this.log = opts.log;
    this.routesValue = emptyRoutes(opts.name);
    this.latest = this.routesValue;
    this.graph = new RouteGraph(opts.name);
  }

  /** topology is the current topology (undefined while stopped). */
  get topology(): Topology | undefined {
    return this.topologyValue;
  }

  /**
   * routes are the routes as of the last recomputation (at once after our own change, within
   * routesDelayMs of a merge from gossip): the ones the forwarding table, IPAM and discovery were given.
   */
  get routes(): Routes {
    return this.routesValue;
  }

  /**
   * latestRoutes are the routes of the topology as it is now, computed on first use after a
   * change; with `maxAgeMs`, routes computed less than that long ago do (gossip relays along
   * trees at most RELAY_ROUTES_MAX_AGE_MS old: fresh enough that the epidemic has no holes for
   * anti-entropy to fill, without a search of the whole graph per delta of a burst) while the
   * rest of the work a change starts is coalesced.
   */
  private latestRoutes(maxAgeMs = 0): Routes {
    const topology = this.topologyValue;
    if (this.routesDirty && topology !== undefined) {
      const now = this.clock.now();
      if (maxAgeMs <= 0 || now - this.latestAt >= maxAgeMs) {
        this.latest = this.graph.update(topology.sortedEntries());
        this.latestAt = now;
        this.routesDirty = false;
      }
    }
    return this.latest;
  }

  get collisions(): number {
    return this.collisionsValue;
  }

  /** entries lists every topology entry, ours included (empty while stopped). */
  entries(): PeerEntry[] {
    return this.topologyValue?.entries() ?? [];
  }

  /** channels lists the gossip channels with their counters (empty while stopped). */
  channels(): GossipChannel[] {
    return this.mux?.channels() ?? [];
  }

  /** unknownChannels counts gossip for channels nobody registered (undefined while stopped). */
  get unknownChannels(): GossipMux['unknown'] | undefined {
    return this.mux?.unknown;
  }

  /** start creates the topology with our entry, the gossip channels and the anti-entropy timer. */
  start(local: PeerEntry): void {
    if (this.topologyValue !== undefined) return;
    const topology = new Topology(local);
    this.topologyValue = topology;
    const links = this.opts.links;
    this.mux = new GossipMux({
      local: this.name,
      send: (neighbour, channel, payload) => links.send(neighbour, channel, payload),
      neighbours: () => links.neighbours(),
      routes: () => this.latestRoutes(this.opts.relayRoutesMaxAgeMs ?? RELAY_ROUTES_MAX_AGE_MS),
      random: this.opts.random ?? Math.random,
      log: this.log,
      clock: this.clock,
    });
    this.topoChannel = this.mux.addChannel(
      TOPOLOGY_CHANNEL,
      new TopologyGossiper(topology, (result, src) => this.onMerge(result, src)),
    );
    for (const g of this.gossipers) g.channel = this.mux.addChannel(g.name, g.gossiper);
    this.gossipTimer = this.clock.setInterval(() => this.mux?.tick(), this.opts.gossipIntervalMs ?? GOSSIP_INTERVAL_MS);
    this.gossipTimer.unref();
  }

  /** stop drops the topology, channels, routes, discovered targets and timers. */
  stop(): void {
    this.clock.clearInterval(this.gossipTimer);
    this.gossipTimer = undefined;
    this.clock.clearTimeout(this.gcTimer);
    this.gcTimer = undefined;
    this.unreachableSince.clear();
    this.clock.clearTimeout(this.routesTimer);
    this.routesTimer = undefined;
    this.clock.clearTimeout(this.announceTimer);
    this.announceTimer = undefined;
    this.announceTo.clear();
    this.topologyValue = undefined;
    this.mux?.close();
    this.mux = undefined;
    this.topoChannel = undefined;
    for (const g of this.gossipers) g.channel = undefined;
    this.routesValue = emptyRoutes(this.name);
    this.latest = this.routesValue;
    this.graph = new RouteGraph(this.name);
    this.routesDirty = false;
    this.discovered.clear();
  }

  /**
   * addGossiper gives a subsystem its own gossip channel over the mesh; returns the channel's
   * sending side, usable at once (sends while stopped are dropped). Names are unique.
   */
  addGossiper(name: string, gossiper: Gossiper): Gossip {
    if (name === TOPOLOGY_CHANNEL || this.gossipers.some((g) => g.name === name)) {
      throw new InputError(`gossip channel "${name}" is already in use`);
    }
    const entry = { name, gossiper, channel: this.mux?.addChannel(name, gossiper) };
    this.gossipers.push(entry);
    return {
      broadcast: (payload, include) => entry.channel?.broadcast(payload, include),
      unicast: (dst, payload) => entry.channel?.unicast(dst, payload) ?? false,
    };
  }

  /** neighbourUp tells the core a neighbour connected: it is sent our full state. */
  neighbourUp(peer: PeerName): void {
    this.mux?.onNewNeighbour(peer);
  }

  /** receive hands the core gossip that arrived from a neighbour. */
  receive(from: PeerName, channel: string, payload: Uint8Array): void {
    this.mux?.receive(from, channel, payload);
  }

  /** tick runs one round of anti-entropy now (the timer does this every gossip interval). */
  tick(): void {
    this.mux?.tick();
  }

  /**
   * setLocal publishes our own connections and addresses: a new version of our entry, gossiped
   * within announceDelayMs (changes meanwhile go in the same delta) to our neighbours among others
   * (they always hear of a change to their own link from us). Routes are recomputed at once
   * (coalescing them with merges for routesDelayMs halved recomputations in the partition phase at
   * 200 routers but moved the connection makers' retries: 10 routers then healed by their fourth
   * backoff step, 5.5 s, on every seed tried, instead of 0.1-0.3 s).
   */
  setLocal(patch: { connections: ConnectionSummary[]; cidrs: string[] }): void {
    const topology = this.topologyValue;
    if (topology === undefined) return;
    topology.setLocal(patch);
    this.routesDirty = true;
    for (const p of this.opts.links.neighbours()) this.announceTo.add(p);
    const delay = this.opts.announceDelayMs ?? TOPOLOGY_ANNOUNCE_DELAY_MS;
    if (delay <= 0) this.announce();
    else if (this.announceTimer === undefined) {
      this.announceTimer = this.clock.setTimeout(() => this.announce(), delay);
      this.announceTimer.unref();
    }
    this.recompute();
  }

  /** announce gossips our own entry as it is now. */
  private announce(): void {
    this.clock.clearTimeout(this.announceTimer);
    this.announceTimer = undefined;
    const topology = this.topologyValue;
    if (topology === undefined) return;
    const links = this.opts.links;
    const include = [...this.announceTo].filter((p) => links.has(p));
    this.announceTo.clear();
    this.topoChannel?.broadcast(topology.encode([this.name]), include);
  }

  private onMerge(result: MergeResult, src: PeerName): void {
    this.opts.onMerge?.(result, src);
    const now = this.clock.now();
    for (const r of result.rejected) {
      if (r.reason === REJECT_COLLISION) this.collisionsValue++;
      // The same refusal comes back with every full state a peer sends: log it once a minute.
      const key = `${r.entry.name} ${r.reason}`;
      if ((this.refusalsLogged.get(key) ?? Number.NEGATIVE_INFINITY) + REFUSAL_LOG_INTERVAL_MS > now) continue;
      this.refusalsLogged.set(key, now);
      const fields = { peer: r.entry.name, nickname: r.entry.nickname, reason: r.reason };
      if (r.reason === REJECT_COLLISION) {
        this.log.error('another router uses our peer name', { ...fields, code: 'EWEFT_PEER_NAME_COLLISION' });
      } else {
        this.log.warn('topology entry refused', fields);
      }
    }
    if (result.changed.length > 0) {
      this.routesDirty = true;
      this.scheduleRecompute();
    }
  }

  /** scheduleRecompute recomputes routesDelayMs from now, once however many changes come meanwhile. */
  private scheduleRecompute(): void {
    const delay = this.opts.routesDelayMs ?? ROUTES_DELAY_MS;
    if (delay <= 0) this.recompute();
    else if (this.routesTimer === undefined) {
      this.routesTimer = this.clock.setTimeout(() => this.recompute(), delay);
      this.routesTimer.unref();
    }
  }

  /**
   * recompute brings everything derived from the topology up to date: routes, discovery's
   * targets, forgetting unreachable peers (scheduled), and the owner (onChange). Off the hot path.
   */
  recompute(): void {
    this.clock.clearTimeout(this.routesTimer);
    this.routesTimer = undefined;
    const topology = this.topologyValue;
    if (topology === undefined) return;
    const entries = topology.sortedEntries();
    // From the topology as it is now (an owner may have loaded entries into it directly): the
    // route graph redoes only what changed since it last looked.
    this.routesDirty = true;
    let routes = this.latestRoutes();
    if (this.restoreForgotten(topology, routes)) {
      this.routesDirty = true;
      routes = this.latestRoutes();
    }
    this.routesValue = routes;
    this.rediscover(entries);
    this.trackUnreachable(entries, routes);
    this.opts.onChange?.();
  }

  /**
   * trackUnreachable notes since when each peer is unreachable and arms the collector for the
   * first of them to have been so for gcDelayMs. Routes reach only known peers, so as many
   * reachable as entries means none is unreachable.
   */
  private trackUnreachable(entries: readonly PeerEntry[], routes: Routes): void {
    if (routes.reachable.size >= entries.length) {
      this.unreachableSince.clear();
      return;
    }
    const now = this.clock.now();
    const since = new Map<PeerName, number>();
    for (const e of entries) {
      if (!routes.reachable.has(e.name)) since.set(e.name, this.unreachableSince.get(e.name) ?? now);
    }
    this.unreachableSince = since;
    this.armCollector(now);
  }

  /** armCollector sets the collector's timer for the earliest peer due to be forgotten (if none is set). */
  private armCollector(now: number): void {
    if (this.gcTimer !== undefined || this.unreachableSince.size === 0) return;
    let first = Number.POSITIVE_INFINITY;
    for (const at of this.unreachableSince.values()) first = Math.min(first, at);
    const delay = Math.max(0, first + (this.opts.gcDelayMs ?? PEER_GC_DELAY_MS) - now);
    this.gcTimer = this.clock.setTimeout(() => this.collect(), delay);
    this.gcTimer.unref();
  }

  /**
   * collect forgets the peers unreachable for at least gcDelayMs (a peer learned a moment ago,
   * whose connections have not arrived yet, is not one of them).
   */
  private collect(): void {
    this.gcTimer = undefined;
    const t = this.topologyValue;
    if (t === undefined) return;
    const now = this.clock.now();
    t.expireForgotten(now - FORGOTTEN_KEEP_MS);
    const due = now - (this.opts.gcDelayMs ?? PEER_GC_DELAY_MS);
    const stale = unreachable(t.entries(), this.latestRoutes()).filter(
      (p) => (this.unreachableSince.get(p) ?? Number.POSITIVE_INFINITY) <= due,
    );
    const gone = t.forget(stale, now);
    for (const p of gone) this.unreachableSince.delete(p);
    this.armCollector(now);
    if (gone.length > 0) {
      this.routesDirty = true;
      this.log.info('forgot unreachable peers', { count: gone.length });
      this.recompute();
      this.opts.onPeersForgotten?.(gone);
    }
  }

  /**
   * restoreForgotten takes back the forgotten peers that the topology reaches again: a forgotten
   * entry with an established connection to a reachable peer (or to one restored here) that lists
   * it as established in return — the same rule that makes an edge in routes. Returns whether any
   * came back. O(forgotten) map lookups, plus O(degree) per forgotten peer some held entry lists.
   */
  private restoreForgotten(topology: Topology, routes: Routes): boolean {
    if (topology.forgottenCount === 0) return false;
    const back = new Set<PeerName>();
    const lists = (e: PeerEntry | undefined, peer: PeerName): boolean => e !== undefined && establishedOf(e).has(peer);
    const queue: PeerEntry[] = [];
    // Only a forgotten peer that a held entry lists can have an edge to a reachable one.
    for (const f of topology.forgottenListed()) {
      for (const peer of establishedOf(f)) {
        if (routes.reachable.has(peer) && lists(topology.get(peer), f.name)) {
          back.add(f.name);
          queue.push(f);
          break;
        }
      }
    }
    if (back.size === 0) return false;
    // Forgotten peers reached through restored ones.
    const forgotten = new Map<PeerName, PeerEntry>();
    for (const e of topology.forgotten()) forgotten.set(e.name, e);
    for (let e = queue.pop(); e !== undefined; e = queue.pop()) {
      for (const peer of establishedOf(e)) {
        const f = forgotten.get(peer);
        if (f === undefined || back.has(f.name) || !lists(f, e.name)) continue;
        back.add(f.name);
        queue.push(f);
      }
    }
    if (back.size === 0) return false;
    topology.restore(back);
    this.log.info('restored forgotten peers reachable again', { count: back.size });
    this.opts.onPeersRestored?.([...back]);
    return true;
  }

  /**
   * rediscover targets the peers our peers are connected to and we are not (unless discovery is
   * off). Up to `discoveryDegree` connections that makes a full mesh; past it, each router dials
   * only enough discovered peers to reach the degree (chosen by a hash of both names, so choices
   * spread evenly) and reaches the rest through relays: gossip then grows O(N), not O(N²).
   */
  private rediscover(entries: readonly PeerEntry[]): void {
    const dialer = this.dialer;
    if (this.opts.discovery === false || dialer === undefined) return;
    const links = this.opts.links;
    const room = Math.max(0, (this.opts.discoveryDegree ?? DISCOVERY_DEGREE) - links.neighbours().length);
    // The `room` best-ranked candidates, kept sorted while every connection listed is looked at
    // once (no map of every candidate, no sort of them all). A candidate's target is the last one
    // listed for it; one not taken at its first sight never is (the bar only rises).
    const peers: PeerName[] = [];
    const ranks: number[] = [];
    const targets: string[] = [];
    for (const e of room === 0 ? [] : entries) {
      const listed = targetsOf(e);
      for (let i = 0; i < e.connections.length; i++) {
        const peer = e.connections[i]!.peer;
        if (peer === this.name) continue;
        const r = this.rankOf(peer);
        const full = peers.length === room;
        if (full && !before(r, peer, ranks[room - 1]!, peers[room - 1]!)) continue;
        const at = peers.indexOf(peer);
        if (at >= 0) {
          targets[at] = listed[i]!;
          continue;
        }
        if (links.has(peer)) continue;
        let k = full ? room - 1 : peers.length;
        while (k > 0 && before(r, peer, ranks[k - 1]!, peers[k - 1]!)) {
          peers[k] = peers[k - 1]!;
          ranks[k] = ranks[k - 1]!;
          targets[k] = targets[k - 1]!;
          k--;
        }
        peers[k] = peer;
        ranks[k] = r;
        targets[k] = listed[i]!;
      }
    }
    const want = new Set(targets);
    const stale = [...this.discovered].filter((t) => !want.has(t) && !dialer.isPersistent(t));
    if (stale.length > 0) dialer.removeTargets(stale);
    const fresh = [...want].filter((t) => !this.discovered.has(t));
    this.discovered = want;
    if (fresh.length > 0) dialer.addTargets(fresh);
  }

  private rankOf(peer: PeerName): number {
    let r = this.rank.get(peer);
    if (r === undefined) {
      r = pairHash(this.name, peer);
      if (this.rank.size >= RANK_CACHE_MAX) this.rank.clear();
      this.rank.set(peer, r);
    }
    return r;
  }
}

/** before orders discovery candidates: by rank, then by name. */
function before(rank: number, peer: PeerName, otherRank: number, other: PeerName): boolean {
  return rank < otherRank || (rank === otherRank && peer < other);
}

/** targetCache holds, per (immutable) entry, the `addr:port` targets of its connections, in order. */
const targetCache = new WeakMap<PeerEntry, readonly string[]>();

function targetsOf(e: PeerEntry): readonly string[] {
  let t = targetCache.get(e);
  if (t === undefined) {
    t = e.connections.map((c) => `${c.addr}:${c.tcpPort}`);
    targetCache.set(e, t);
  }
  return t;
}

/** RANK_CACHE_MAX bounds the pairHash cache (it is cleared when full; entries are cheap to redo). */
const RANK_CACHE_MAX = 65_536;

/** pairHash mixes two peer names into a 32-bit number (FNV-1a), the same on both peers' sides. */
export function pairHash(a: string, b: string): number {
  const s = a < b ? `${a}${b}` : `${b}${a}`;
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}
