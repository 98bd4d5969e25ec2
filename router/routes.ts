/**
 * Routes: unicast next hops and broadcast spanning trees computed from the gossiped topology.
 *
 * Only symmetric, established connections are edges: A–B is usable when A lists B with
 * `established` and B lists A with `established` (each end has proven the data path). Every router
 * runs the same breadth-first search over the same entries, so all agree on every tree:
 *
 * ```
 *   level 0      X                  each level is visited in peer-name order, so a peer's parent
 *               / \                 in X's tree is its smallest-named neighbour one hop closer
 *   level 1    a   c                to X; shortest hop count first, then names
 *             / \   \
 *   level 2  b   d   e     d is reached from a (a < c), never from c: one parent, no loops
 * ```
 *
 * Unicast: the first hop on our own tree's path to each peer. Broadcast from origin X: our children
 * in X's tree, so that in a stable topology every peer receives each broadcast exactly once.
 *
 * Over 400 lines because the search, the incremental RouteGraph and the lazily answered tables of
 * one snapshot share one Graph representation and one tie-break rule; apart, the rule every router
 * must apply identically would be written in several places.
 */
import type { PeerName } from '../common/types.js';
import { PEER_GC_DELAY_MS } from './constants.js';
import type { PeerEntry } from './topology.js';

// ---- Constants (candidates for router/constants.ts) ----

/**
 * Routes is one immutable snapshot of the routing tables; the owner swaps it by one assignment.
 */
export interface Routes {
  /** unicast maps each reachable peer (not ourselves) to the direct neighbour to send through. */
  readonly unicast: ReadonlyMap<PeerName, PeerName>;
  /** reachable holds every peer with a path from us, ourselves included. */
  readonly reachable: ReadonlySet<PeerName>;
  /**
   * broadcast maps each reachable origin (ourselves included) to the neighbours a broadcast from it
   * is passed to by us: our children in the origin's tree, sorted by name; empty for a leaf.
   * Filled lazily by computeRoutes (one search per origin looked up).
   */
  readonly broadcast: ReadonlyMap<PeerName, readonly PeerName[]>;
}

/** emptyRoutes returns the routes of a router that knows no one: only itself is reachable. */
export function emptyRoutes(local: PeerName): Routes {
  return { unicast: new Map(), reachable: new Set([local]), broadcast: new Map([[local, []]]) };
}

/**
 * Graph is the symmetric established graph over peers numbered in name order. Never changed once
 * built: Routes snapshots search it lazily, and a RouteGraph update makes a new one sharing the
 * rows that did not change.
 */
interface Graph {
  readonly names: readonly PeerName[];
  readonly index: ReadonlyMap<PeerName, number>;
  /** adj[i] lists i's neighbours in ascending index (= name) order. */
  readonly adj: readonly (readonly number[])[];
}

/** establishedPeers caches, per (immutable) entry, the peers it lists as established. */
const establishedPeers = new WeakMap<PeerEntry, Set<PeerName>>();

/** establishedOf returns the peers an entry lists as established (cached per entry: never modify it). */
export function establishedOf(e: PeerEntry): ReadonlySet<PeerName> {
  let s = establishedPeers.get(e);
  if (s === undefined) {
    s = new Set();
    for (const c of e.connections) if (c.established) s.add(c.peer);
    establishedPeers.set(e, s);
  }
  return s;
}

/** adjacency lists, in index order, the peers that `sorted[i]` and they both list as established. */
function adjacency(sorted: readonly PeerEntry[], index: ReadonlyMap<PeerName, number>, i: number): number[] {
  const e = sorted[i]!;
  const row: number[] = [];
  // An owner lists its connections sorted by peer, so the row usually comes out in index order.
  let ascending = true;
  for (const c of e.connections) {
    if (!c.established) continue;
    const j = index.get(c.peer);
    if (j === undefined || j === i || !establishedOf(sorted[j]!).has(e.name)) continue;
    if (row.length > 0 && j < row[row.length - 1]!) ascending = false;
    row.push(j);
  }
  return ascending ? row : row.sort((x, y) => x - y);
}

/** buildGraph keeps the edges both ends list as established; `sorted` has one entry per peer, in name order. O(N + E). */
function buildGraph(sorted: readonly PeerEntry[]): Graph {
  const names = sorted.map((e) => e.name);
  const index = new Map<PeerName, number>();
  names.forEach((n, i) => {
    index.set(n, i);
  });
  return { names, index, adj: sorted.map((_, i) => adjacency(sorted, index, i)) };
}

/** sameRow compares two adjacency rows. */
function sameRow(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** symmetricDifference lists what is in exactly one of two ascending rows. */
function symmetricDifference(a: readonly number[], b: readonly number[]): number[] {
  const out: number[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (j >= b.length || (i < a.length && a[i]! < b[j]!)) out.push(a[i++]!);
    else if (i >= a.length || b[j]! < a[i]!) out.push(b[j++]!);
    else {
      i++;
      j++;
    }
  }
  return out;
}

/** toggled returns an ascending row with `v` added if absent, removed if present (a new array). */
function toggled(row: readonly number[], v: number): number[] {
  let k = 0;
  while (k < row.length && row[k]! < v) k++;
  return row[k] === v ? [...row.slice(0, k), ...row.slice(k + 1)] : [...row.slice(0, k), v, ...row.slice(k)];
}

/** sameNames says whether two name-sorted entry lists are of the same peers. */
function sameNames(a: readonly PeerEntry[], b: readonly PeerEntry[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i] && a[i]!.name !== b[i]!.name) return false;
  return true;
}

/** Search is one breadth-first search: parents (-1 the root, -2 unreachable) and the visiting order. */
interface Search {
  readonly parent: Int32Array;
  readonly order: Int32Array;
}

/**
 * search runs the level-ordered breadth-first search from `root` and returns each peer's parent
 * index (-1 for the root, -2 for unreachable) and the visiting order.
 */
function search(g: Graph, root: number): Search {
  const parent = new Int32Array(g.names.length);
  const order = new Int32Array(g.names.length);
  return { parent, order: order.subarray(0, searchInto(g, root, parent, order)) };
}

/**
 * searchInto is the search itself, in the caller's arrays (each at least N long): it fills
 * `parent` and `order` and returns how many peers it visited. With `until`, an ascending row of
 * peers, it stops as soon as every one of them has its parent (a parent, once set, is final: each
 * level is expanded in index order), leaving the rest unsearched.
 */
function searchInto(g: Graph, root: number, parent: Int32Array, order: Int32Array, until?: readonly number[]): number {
  parent.fill(-2, 0, g.names.length);
  parent[root] = -1;
  let missing = until === undefined ? -1 : until.length - (until.includes(root) ? 1 : 0);
  // Which peers we wait for, by index (cleared again below): one load per visit, not a search.
  const wanted = until === undefined ? undefined : wantedMarks(g.names.length);
  if (wanted !== undefined) for (const v of until!) wanted[v] = 1;
  // order doubles as the queue: [start, end) is the level being expanded, [end, len) the next one.
  order[0] = root;
  let len = 1;
  levels: for (let start = 0; start < len && missing !== 0; ) {
    const end = len;
    for (let k = start; k < end; k++) {
      const u = order[k]!;
      for (const v of g.adj[u]!) {
        if (parent[v] !== -2) continue;
        parent[v] = u;
        order[len++] = v;
        if (wanted !== undefined && wanted[v] === 1 && --missing === 0) break levels;
      }
    }
    order.subarray(end, len).sort(); // the next level in index (= name) order
    start = end;
  }
  if (wanted !== undefined) for (const v of until!) wanted[v] = 0;
  return len;
}

/** Scratch marks of {@link searchInto}: all 0 between searches. */
let scratchWanted = new Uint8Array(0);

function wantedMarks(n: number): Uint8Array {
  if (scratchWanted.length < n) scratchWanted = new Uint8Array(n);
  return scratchWanted;
}

/** Scratch space of {@link childrenOf}: one search at a time, never kept. */
let scratchParent = new Int32Array(0);
let scratchOrder = new Int32Array(0);

/**
 * childrenOf returns `me`'s children in `root`'s broadcast tree, in index order: the same as
 * `search(g, root)` would give, from a search that stops once every neighbour of `me` has its
 * parent, in scratch arrays. Near the root that is a few levels of a graph of thousands.
 */
function childrenOf(g: Graph, root: number, me: number): number[] {
  if (scratchParent.length < g.names.length) {
    scratchParent = new Int32Array(g.names.length);
    scratchOrder = new Int32Array(g.names.length);
  }
  const mine = g.adj[me]!;
  searchInto(g, root, scratchParent, scratchOrder, mine);
  return mine.filter((v) => scratchParent[v] === me);
}

/**
 * BroadcastTable is the broadcast map of one Routes snapshot, filled lazily: an origin's tree is
 * searched (O(N+E)) the first time it is asked for and kept. Iterating searches every origin.
 */
class BroadcastTable implements ReadonlyMap<PeerName, readonly PeerName[]> {
  private readonly cache = new Map<number, readonly PeerName[]>();

  constructor(
    private readonly g: Graph,
    private readonly me: number,
    /** own is our own search: parents in our tree, and the reachable peers in visiting order. */
    private readonly own: Search,
  ) {}

  get size(): number {
    return this.own.order.length;
  }

  has(origin: PeerName): boolean {
    const i = this.g.index.get(origin);
    return i !== undefined && this.own.parent[i] !== -2;
  }

  get(origin: PeerName): readonly PeerName[] | undefined {
    const i = this.g.index.get(origin);
    if (i === undefined || this.own.parent[i] === -2) return undefined;
    let children = this.cache.get(i);
    if (children === undefined) {
      const tree = this.own.parent;
      const kids =
        i === this.me ? this.g.adj[this.me]!.filter((v) => tree[v] === this.me) : childrenOf(this.g, i, this.me);
      children = kids.map((v) => this.g.names[v]!);
      this.cache.set(i, children);
    }
    return children;
  }

  forEach(
    fn: (value: readonly PeerName[], key: PeerName, map: ReadonlyMap<PeerName, readonly PeerName[]>) => void,
  ): void {
    for (const [k, v] of this.all()) fn(v, k, this);
  }

  entries(): MapIterator<[PeerName, readonly PeerName[]]> {
    return this.all().entries();
  }

  keys(): MapIterator<PeerName> {
    return this.all().keys();
  }

  values(): MapIterator<readonly PeerName[]> {
    return this.all().values();
  }

  [Symbol.iterator](): MapIterator<[PeerName, readonly PeerName[]]> {
    return this.entries();
  }

  private all(): Map<PeerName, readonly PeerName[]> {
    const m = new Map<PeerName, readonly PeerName[]>();
    for (const v of this.own.order) m.set(this.g.names[v]!, this.get(this.g.names[v]!)!);
    return m;
  }
}

/**
 * computeRoutes computes the routes of `local` from topology entries. Pure and deterministic: the
 * same entries give the same routes on every router, whatever their order. Unicast and
 * reachability cost O(N log N + E) here; each origin's broadcast tree costs one more search, done
 * the first time the origin is looked up.
 */
export function computeRoutes(local: PeerName, entries: readonly PeerEntry[]): Routes {
  const byName = new Map<PeerName, PeerEntry>();
  for (const e of entries) byName.set(e.name, e);
  const sorted = [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
  return routesOf(buildGraph(sorted), local);
}

/**
 * RouteGraph keeps one router's routes up to date with its topology at the cost of what changed:
 * an entry that changed re-derives only its own edges and those of the peers it lists, and routes
 * are searched again only if an edge or a peer changed (otherwise the same snapshot is returned,
 * broadcast trees already searched included). Gives exactly what computeRoutes gives.
 */
export class RouteGraph {
  /** entries are the entries of the last update, in name order. */
  private entries: readonly PeerEntry[] = [];
  private graph: Graph | undefined;
  private routes: Routes;

  constructor(private readonly local: PeerName) {
    this.routes = emptyRoutes(local);
  }

  /**
   * update returns the routes of `sorted` (one entry per peer, in name order, as
   * Topology.sortedEntries gives them; entries are compared by identity). O(N) plus O(degree) per
   * changed entry when the same peers are known; O(N + E) when peers came or went.
   */
  update(sorted: readonly PeerEntry[]): Routes {
    const next = this.nextGraph(sorted);
    this.entries = [...sorted];
    if (next !== this.graph) {
      this.graph = next;
      this.routes = routesOf(next, this.local);
    }
    return this.routes;
  }

  /** nextGraph is the graph of `sorted`: the current one if no edge changed. */
  private nextGraph(sorted: readonly PeerEntry[]): Graph {
    const g = this.graph;
    const prev = this.entries;
    if (g === undefined || !sameNames(prev, sorted)) return buildGraph(sorted);
    // Only a changed entry's own edges can change: re-derive its row, and pass each edge that came
    // or went to the row at the other end. Rows are copied on write (older snapshots share them).
    let adj: (readonly number[])[] | undefined;
    for (let i = 0; i < sorted.length; i++) {
      if (sorted[i] === prev[i]) continue;
      const rows = adj ?? g.adj;
      const row = adjacency(sorted, g.index, i);
      const old = rows[i]!;
      if (sameRow(row, old)) continue;
      adj ??= [...g.adj];
      adj[i] = row;
      for (const j of symmetricDifference(old, row)) adj[j] = toggled(adj[j]!, i);
    }
    return adj === undefined ? g : { names: g.names, index: g.index, adj };
  }
}

/** routesOf searches a graph from `local` for its unicast next hops and reachable peers. */
function routesOf(g: Graph, local: PeerName): Routes {
  const me = g.index.get(local);
  if (me === undefined) return emptyRoutes(local);
  const own = search(g, me);
  const hop = new Int32Array(g.names.length).fill(-1);
  for (const v of own.order) {
    if (v === me) continue;
    const p = own.parent[v]!;
    hop[v] = p === me ? v : hop[p]!;
  }
  return {
    unicast: new UnicastTable(g, me, own, hop),
    reachable: new ReachableSet(g, own),
    broadcast: new BroadcastTable(g, me, own),
  };
}

/**
 * UnicastTable is the unicast map of one Routes snapshot, answered from our own search and its
 * first hops: a snapshot costs no map of N names unless someone iterates it (made then, once).
 */
class UnicastTable implements ReadonlyMap<PeerName, PeerName> {
  private map: Map<PeerName, PeerName> | undefined;

  constructor(
    private readonly g: Graph,
    private readonly me: number,
    private readonly own: Search,
    /** hop[v] is the neighbour on our path to v (-1 for ourselves and the unreachable). */
    private readonly hop: Int32Array,
  ) {}

  get size(): number {
    return this.own.order.length - 1;
  }

  has(dst: PeerName): boolean {
    return this.get(dst) !== undefined;
  }

  get(dst: PeerName): PeerName | undefined {
    const i = this.g.index.get(dst);
    const h = i === undefined ? -1 : this.hop[i]!;
    return h < 0 ? undefined : this.g.names[h];
  }

  forEach(fn: (value: PeerName, key: PeerName, map: ReadonlyMap<PeerName, PeerName>) => void): void {
    for (const [k, v] of this.all()) fn(v, k, this);
  }

  entries(): MapIterator<[PeerName, PeerName]> {
    return this.all().entries();
  }

  keys(): MapIterator<PeerName> {
    return this.all().keys();
  }

  values(): MapIterator<PeerName> {
    return this.all().values();
  }

  [Symbol.iterator](): MapIterator<[PeerName, PeerName]> {
    return this.entries();
  }

  /** all is the table as a map, in visiting order (as computeRoutes always listed it). */
  private all(): Map<PeerName, PeerName> {
    if (this.map === undefined) {
      this.map = new Map();
      for (const v of this.own.order) if (v !== this.me) this.map.set(this.g.names[v]!, this.g.names[this.hop[v]!]!);
    }
    return this.map;
  }
}

/** ReachableSet is the reachable set of one Routes snapshot, answered from our own search (a set made only to iterate). */
class ReachableSet implements ReadonlySet<PeerName> {
  private set: Set<PeerName> | undefined;

  constructor(
    private readonly g: Graph,
    private readonly own: Search,
  ) {}

  get size(): number {
    return this.own.order.length;
  }

  has(peer: PeerName): boolean {
    const i = this.g.index.get(peer);
    return i !== undefined && this.own.parent[i] !== -2;
  }

  forEach(fn: (value: PeerName, key: PeerName, set: ReadonlySet<PeerName>) => void): void {
    for (const p of this.all()) fn(p, p, this);
  }

  entries(): SetIterator<[PeerName, PeerName]> {
    return this.all().entries();
  }

  keys(): SetIterator<PeerName> {
    return this.all().keys();
  }

  values(): SetIterator<PeerName> {
    return this.all().values();
  }

  [Symbol.iterator](): SetIterator<PeerName> {
    return this.values();
  }

  private all(): Set<PeerName> {
    this.set ??= new Set(Array.from(this.own.order, (v) => this.g.names[v]!));
    return this.set;
  }
}

/** unreachable lists the peers in `entries` that `routes` cannot reach: the ones to forget (after PEER_GC_DELAY_MS). */
export function unreachable(entries: readonly PeerEntry[], routes: Routes): PeerName[] {
  return entries.filter((e) => !routes.reachable.has(e.name)).map((e) => e.name);
}

export { PEER_GC_DELAY_MS };
