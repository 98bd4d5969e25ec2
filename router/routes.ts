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

/** Graph is the symmetric established graph over peers numbered in name order. */
interface Graph {
  readonly names: PeerName[];
  readonly index: Map<PeerName, number>;
  /** adj[i] lists i's neighbours in ascending index (= name) order. */
  readonly adj: number[][];
}

/** establishedPeers caches, per (immutable) entry, the peers it lists as established. */
const establishedPeers = new WeakMap<PeerEntry, Set<PeerName>>();

function establishedOf(e: PeerEntry): Set<PeerName> {
  let s = establishedPeers.get(e);
  if (s === undefined) {
    s = new Set();
    for (const c of e.connections) if (c.established) s.add(c.peer);
    establishedPeers.set(e, s);
  }
  return s;
}

/** buildGraph keeps the edges both ends list as established; O(N log N + E). */
function buildGraph(entries: readonly PeerEntry[]): Graph {
  const byName = new Map<PeerName, PeerEntry>();
  for (const e of entries) byName.set(e.name, e);
  const names = [...byName.keys()].sort();
  const index = new Map<PeerName, number>();
  names.forEach((n, i) => {
    index.set(n, i);
  });
  const adj: number[][] = names.map(() => []);
  for (const e of byName.values()) {
    const i = index.get(e.name)!;
    for (const peer of establishedOf(e)) {
      const j = index.get(peer);
      const other = byName.get(peer);
      if (j === undefined || j === i || other === undefined || !establishedOf(other).has(e.name)) continue;
      adj[i]!.push(j);
    }
  }
  for (const a of adj) a.sort((x, y) => x - y);
  return { names, index, adj };
}

/**
 * search runs the level-ordered breadth-first search from `root` and returns each peer's parent
 * index (-1 for the root, -2 for unreachable) and the visiting order.
 */
function search(g: Graph, root: number): { parent: Int32Array; order: number[] } {
  const parent = new Int32Array(g.names.length).fill(-2);
  parent[root] = -1;
  const order = [root];
  let level = [root];
  while (level.length > 0) {
    const next: number[] = [];
    for (const u of level) {
      for (const v of g.adj[u]!) {
        if (parent[v] !== -2) continue;
        parent[v] = u;
        next.push(v);
      }
    }
    next.sort((x, y) => x - y);
    for (const v of next) order.push(v);
    level = next;
  }
  return { parent, order };
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
    private readonly own: { parent: Int32Array; order: number[] },
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
      const tree = i === this.me ? this.own.parent : search(this.g, i).parent;
      children = this.g.adj[this.me]!.filter((v) => tree[v] === this.me).map((v) => this.g.names[v]!);
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
  const g = buildGraph(entries);
  const me = g.index.get(local);
  if (me === undefined) return emptyRoutes(local);
  const own = search(g, me);
  const unicast = new Map<PeerName, PeerName>();
  const hop = new Int32Array(g.names.length).fill(-1);
  for (const v of own.order) {
    if (v === me) continue;
    const p = own.parent[v]!;
    hop[v] = p === me ? v : hop[p]!;
    unicast.set(g.names[v]!, g.names[hop[v]!]!);
  }
  const reachable = new Set(own.order.map((v) => g.names[v]!));
  return { unicast, reachable, broadcast: new BroadcastTable(g, me, own) };
}

/** unreachable lists the peers in `entries` that `routes` cannot reach: the ones to forget (after PEER_GC_DELAY_MS). */
export function unreachable(entries: readonly PeerEntry[], routes: Routes): PeerName[] {
  return entries.filter((e) => !routes.reachable.has(e.name)).map((e) => e.name);
}

export { PEER_GC_DELAY_MS };
