import { describe, expect, it } from 'vitest';
import type { PeerName } from '../common/types.js';
import { computeRoutes, emptyRoutes, RouteGraph, type Routes, unreachable } from './routes.js';
import { mulberry32 } from './testing/gossip-sim.js';
import type { PeerEntry } from './topology.js';

// ---- helpers ----

/** Peers are named by letter; the names sort in letter order. */
function p(letter: string): PeerName {
  return `02:00:00:00:00:${letter.charCodeAt(0).toString(16).padStart(2, '0')}` as PeerName;
}

function letter(name: PeerName): string {
  return String.fromCharCode(Number.parseInt(name.slice(-2), 16));
}

/**
 * graph builds entries from edges written 'ab' (both ends list each other as established); `oneWay`
 * edges 'ab' are listed by a only, `pending` edges by both but not established.
 */
function graph(nodes: string, edges: string[], opts: { oneWay?: string[]; pending?: string[] } = {}): PeerEntry[] {
  const conns = new Map<string, { peer: PeerName; established: boolean }[]>();
  for (const n of nodes) conns.set(n, []);
  const add = (a: string, b: string, established: boolean) => conns.get(a)!.push({ peer: p(b), established });
  for (const [a, b] of edges.map((e) => [e[0]!, e[1]!])) {
    add(a!, b!, true);
    add(b!, a!, true);
  }
  for (const e of opts.oneWay ?? []) add(e[0]!, e[1]!, true);
  for (const e of opts.pending ?? []) {
    add(e[0]!, e[1]!, false);
    add(e[1]!, e[0]!, false);
  }
  return [...nodes].map((n) => ({
    name: p(n),
    nickname: n,
    uid: '1',
    incarnation: 1,
    version: 1,
    connections: conns.get(n)!.map((c) => ({ ...c, addr: '10.0.0.1', tcpPort: 6783, outbound: true })),
    cidrs: [],
    sleevePort: 6783,
    vxlanPort: 6784,
    encap: 'sleeve' as const,
  }));
}

/** hops renders the unicast table as 'dest:hop' pairs in letter order. */
function hops(r: Routes): string {
  return [...r.unicast]
    .map(([d, h]) => `${letter(d)}:${letter(h)}`)
    .sort()
    .join(' ');
}

function bcast(r: Routes, origin: string): string {
  return (r.broadcast.get(p(origin)) ?? []).map(letter).join('');
}

// ---- tests ----

describe('computeRoutes', () => {
  it('routes along a line', () => {
    const entries = graph('abcd', ['ab', 'bc', 'cd']);
    const a = computeRoutes(p('a'), entries);
    expect(hops(a)).toBe('b:b c:b d:b');
    expect([...a.reachable].map(letter).sort().join('')).toBe('abcd');
    expect(bcast(a, 'a')).toBe('b');
    const b = computeRoutes(p('b'), entries);
    expect(hops(b)).toBe('a:a c:c d:c');
    expect(bcast(b, 'a')).toBe('c');
    expect(bcast(b, 'd')).toBe('a');
    expect(bcast(computeRoutes(p('d'), entries), 'a')).toBe('');
  });

  it('takes the shortest way round a ring, breaking the tie for the far side by name', () => {
    const entries = graph('abcdef', ['ab', 'bc', 'cd', 'de', 'ef', 'fa']);
    // d is three hops either way from a: via b (b < f) wins.
    expect(hops(computeRoutes(p('a'), entries))).toBe('b:b c:b d:b e:f f:f');
    // From d, a is three hops either way: via c (c < e).
    expect(hops(computeRoutes(p('d'), entries))).toBe('a:c b:c c:c e:e f:e');
  });

  it('relays everything through the hub of a star', () => {
    const entries = graph('hwxyz', ['hw', 'hx', 'hy', 'hz']);
    expect(hops(computeRoutes(p('w'), entries))).toBe('h:h x:h y:h z:h');
    const hub = computeRoutes(p('h'), entries);
    expect(bcast(hub, 'w')).toBe('xyz');
    expect(bcast(hub, 'h')).toBe('wxyz');
    expect(bcast(computeRoutes(p('x'), entries), 'w')).toBe('');
  });

  it('goes direct in a full mesh, and only the origin forwards a broadcast', () => {
    const nodes = 'abcde';
    const edges = [...nodes].flatMap((x, i) => [...nodes.slice(i + 1)].map((y) => x + y));
    const entries = graph(nodes, edges);
    const c = computeRoutes(p('c'), entries);
    expect(hops(c)).toBe('a:a b:b d:d e:e');
    expect(bcast(c, 'c')).toBe('abde');
    expect(bcast(c, 'a')).toBe('');
  });

  it('ignores an edge only one end lists, or that is not established', () => {
    const entries = graph('abcd', ['ab'], { oneWay: ['bc'], pending: ['ad'] });
    const a = computeRoutes(p('a'), entries);
    expect(hops(a)).toBe('b:b');
    expect(unreachable(entries, a).map(letter)).toEqual(['c', 'd']);
  });

  it('lists the other side of a partition as unreachable, never ourselves', () => {
    const entries = graph('abcdef', ['ab', 'bc', 'de', 'ef']);
    const a = computeRoutes(p('a'), entries);
    expect(unreachable(entries, a).map(letter)).toEqual(['d', 'e', 'f']);
    expect(a.broadcast.has(p('d'))).toBe(false);
    expect(a.broadcast.get(p('d'))).toBeUndefined();
    expect(unreachable(entries, computeRoutes(p('e'), entries)).map(letter)).toEqual(['a', 'b', 'c']);
  });

  it('ignores connections to peers it has no entry for, and routes nowhere when we are unknown', () => {
    const entries = graph('abz', ['ab', 'bz']).filter((e) => e.name !== p('z'));
    expect(hops(computeRoutes(p('a'), entries))).toBe('b:b');
    const lost = computeRoutes(p('q'), entries);
    expect(lost).toEqual(emptyRoutes(p('q')));
    expect([...lost.reachable]).toEqual([p('q')]);
  });

  it('iterates the lazily filled broadcast table like a map', () => {
    const r = computeRoutes(p('b'), graph('abc', ['ab', 'bc']));
    expect(r.broadcast.size).toBe(3);
    expect([...r.broadcast.keys()].map(letter)).toEqual(['b', 'a', 'c']);
    expect([...r.broadcast].map(([o, c]) => `${letter(o)}>${c.map(letter).join('')}`)).toEqual(['b>ac', 'a>c', 'c>a']);
    const seen: string[] = [];
    r.broadcast.forEach((c, o) => {
      seen.push(letter(o) + c.length);
    });
    expect(seen).toEqual(['b2', 'a1', 'c1']);
    expect([...r.broadcast.values()]).toHaveLength(3);
  });
});

describe('computeRoutes on random graphs (property)', () => {
  /** randomGraph makes a random graph on up to 26 letters with some one-way and pending edges. */
  function randomGraph(random: () => number): { nodes: string; entries: PeerEntry[]; adj: Map<string, Set<string>> } {
    const n = 2 + Math.floor(random() * 24);
    const nodes = 'abcdefghijklmnopqrstuvwxyz'.slice(0, n);
    const edges: string[] = [];
    const oneWay: string[] = [];
    const adj = new Map([...nodes].map((x) => [x, new Set<string>()]));
    const density = random() * 0.4;
    for (let i = 0; i < n; i++) {
      for (let j = i + 1; j < n; j++) {
        const r = random();
        if (r < density) {
          edges.push(nodes[i]! + nodes[j]!);
          adj.get(nodes[i]!)!.add(nodes[j]!);
          adj.get(nodes[j]!)!.add(nodes[i]!);
        } else if (r < density * 1.2) oneWay.push(nodes[i]! + nodes[j]!);
      }
    }
    return { nodes, entries: graph(nodes, edges, { oneWay }), adj };
  }

  function distances(adj: Map<string, Set<string>>, from: string): Map<string, number> {
    const d = new Map([[from, 0]]);
    let level = [from];
    while (level.length > 0) {
      const next: string[] = [];
      for (const u of level) {
        for (const v of adj.get(u)!) {
          if (d.has(v)) continue;
          d.set(v, d.get(u)! + 1);
          next.push(v);
        }
      }
      level = next;
    }
    return d;
  }

  /** eachRandomGraph calls `check` for `count` random graphs, with every router's routes. */
  function eachRandomGraph(
    seed: number,
    count: number,
    check: (g: ReturnType<typeof randomGraph> & { routes: Map<string, Routes>; random: () => number }) => void,
  ): void {
    const random = mulberry32(seed);
    for (let i = 0; i < count; i++) {
      const g = randomGraph(random);
      check({ ...g, random, routes: new Map([...g.nodes].map((x) => [x, computeRoutes(p(x), g.entries)])) });
    }
  }

  it('gives shortest next hops, the same whatever the entry order, and no loops (200 graphs)', () => {
    eachRandomGraph(7, 200, ({ nodes, entries, adj, routes, random }) => {
      for (const x of nodes) {
        const shuffled = [...entries].sort(() => random() - 0.5);
        expect(hops(computeRoutes(p(x), shuffled))).toBe(hops(routes.get(x)!));
        const dist = distances(adj, x);
        expect(routes.get(x)!.reachable.size).toBe(dist.size);
        for (const [dest, hop] of routes.get(x)!.unicast) {
          // The hop is a neighbour one step closer to the destination...
          expect(adj.get(x)!.has(letter(hop))).toBe(true);
          expect(distances(adj, letter(dest)).get(letter(hop))).toBe(dist.get(letter(dest))! - 1);
          // ...and following hops from router to router reaches it in exactly that many steps.
          let at = x;
          let steps = 0;
          while (at !== letter(dest)) {
            at = letter(routes.get(at)!.unicast.get(dest)!);
            steps++;
            expect(steps).toBeLessThanOrEqual(nodes.length);
          }
          expect(steps).toBe(dist.get(letter(dest)));
        }
      }
    });
  });

  it('delivers a broadcast from any origin to every reachable peer exactly once (300 graphs)', () => {
    eachRandomGraph(8, 300, ({ nodes, adj, routes }) => {
      for (const origin of nodes) {
        const received = new Map<string, number>([[origin, 1]]);
        const queue = [origin];
        while (queue.length > 0) {
          const at = queue.shift()!;
          for (const next of routes.get(at)!.broadcast.get(p(origin)) ?? []) {
            const n = letter(next);
            expect(adj.get(at)!.has(n)).toBe(true);
            received.set(n, (received.get(n) ?? 0) + 1);
            queue.push(n);
          }
        }
        expect([...received.keys()].sort()).toEqual([...distances(adj, origin).keys()].sort());
        for (const count of received.values()) expect(count).toBe(1);
        // Exactly the tree the rule defines: v's parent is its smallest-named neighbour one level closer.
        const dist = distances(adj, origin);
        for (const at of dist.keys()) {
          const want = [...adj.get(at)!]
            .filter((v) => dist.get(v) === dist.get(at)! + 1)
            .filter((v) => [...adj.get(v)!].filter((u) => dist.get(u) === dist.get(at)).sort()[0] === at)
            .sort();
          expect((routes.get(at)!.broadcast.get(p(origin)) ?? []).map(letter)).toEqual(want);
        }
      }
    });
  });
});

describe('RouteGraph', () => {
  /** same expects two Routes snapshots to agree on next hops, reachability and every broadcast tree. */
  function expectSame(a: Routes, b: Routes, nodes: string): void {
    expect(hops(a)).toBe(hops(b));
    expect([...a.reachable].sort()).toEqual([...b.reachable].sort());
    expect(a.reachable.size).toBe(b.reachable.size);
    for (const x of nodes) {
      expect(a.reachable.has(p(x))).toBe(b.reachable.has(p(x)));
      expect(a.unicast.get(p(x))).toBe(b.unicast.get(p(x)));
      expect(bcast(a, x)).toBe(bcast(b, x));
    }
  }

  it('gives what computeRoutes gives through 3000 random changes: edges, one-way and pending links, peers coming and going', () => {
    const random = mulberry32(0x96a9);
    const all = 'abcdefghijklmnop';
    for (let run = 0; run < 30; run++) {
      // State: the letters present and, per ordered pair, how a lists b (none, pending, established).
      const present = new Set([...all].filter(() => random() < 0.7));
      present.add('a');
      const lists = new Map<string, 'pending' | 'established'>();
      const version = new Map<string, number>();
      let entries = new Map<string, PeerEntry>();
      const rebuild = (changed: Iterable<string>): void => {
        const next = new Map(entries);
        for (const x of changed) {
          if (!present.has(x)) {
            next.delete(x);
            continue;
          }
          version.set(x, (version.get(x) ?? 0) + 1);
          const connections = [...present]
            .filter((y) => y !== x && lists.has(x + y))
            .sort()
            .map((y) => ({
              peer: p(y),
              established: lists.get(x + y) === 'established',
              addr: '10.0.0.1',
              tcpPort: 6783,
              outbound: true,
            }));
          next.set(x, { ...graph(x, [])[0]!, version: version.get(x)!, connections });
        }
        entries = next;
      };
      rebuild(present);
      const local = [...present][Math.floor(random() * present.size)]!;
      const rg = new RouteGraph(p(local));
      for (let step = 0; step < 100; step++) {
        const r = random();
        const x = all[Math.floor(random() * all.length)]!;
        const y = all[Math.floor(random() * all.length)]!;
        const touched: string[] = [];
        if (r < 0.1 && x !== local) {
          // A peer comes or goes (forgotten peers take their entry with them).
          if (present.has(x)) present.delete(x);
          else present.add(x);
          touched.push(x);
        } else if (x !== y && present.has(x)) {
          const kind = random();
          if (kind < 0.3) lists.delete(x + y);
          else lists.set(x + y, kind < 0.45 ? 'pending' : 'established');
          if (random() < 0.5 && present.has(y)) {
            // Usually both ends report the same link.
            if (lists.has(x + y)) lists.set(y + x, lists.get(x + y)!);
            else lists.delete(y + x);
            touched.push(y);
          }
          touched.push(x);
        }
        if (random() < 0.1) touched.push(...present); // a full rebuild of every entry now and then
        rebuild(touched);
        const sorted = [...entries.values()].sort((e1, e2) => (e1.name < e2.name ? -1 : 1));
        const got = rg.update(sorted);
        expectSame(got, computeRoutes(p(local), sorted), all);
        // Asking again without a change returns the same snapshot.
        if (random() < 0.2) expect(rg.update(sorted)).toBe(got);
      }
    }
  });
});
