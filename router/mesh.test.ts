import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../common/clock.js';
import { noopLogger } from '../common/log.js';
import type { PeerName } from '../common/types.js';
import { PEER_GC_DELAY_MS } from './constants.js';
import type { Gossiper } from './gossip/gossip.js';
import { MeshCore, type MeshDialer } from './mesh.js';
import type { ConnectionSummary, PeerEntry } from './topology.js';

const LATENCY_MS = 1;
/** SETTLE_MS covers the announce and recompute delays and a few hops. */
const SETTLE_MS = 500;

function peer(n: number): PeerName {
  return `02:00:00:00:00:${n.toString(16).padStart(2, '0')}` as PeerName;
}

function addrOf(n: number): string {
  return `10.0.0.${n}`;
}

/** Node is one MeshCore whose links deliver after LATENCY_MS on a shared VirtualClock. */
class Node {
  readonly neighbours = new Set<PeerName>();
  /** targets is what discovery wants dialled now. */
  readonly targets = new Set<string>();
  readonly removed: string[] = [];
  readonly forgotten: PeerName[] = [];
  changes = 0;
  readonly core: MeshCore;
  constructor(
    readonly n: number,
    readonly net: Map<PeerName, Node>,
    clock: VirtualClock,
    opts: { degree?: number; discovery?: boolean; routesDelayMs?: number } = {},
  ) {
    this.core = new MeshCore({
      name: peer(n),
      clock,
      log: noopLogger,
      random: () => 0.5,
      discovery: opts.discovery,
      discoveryDegree: opts.degree,
      routesDelayMs: opts.routesDelayMs,
      links: {
        neighbours: () => [...this.neighbours],
        has: (p) => this.neighbours.has(p),
        send: (to, channel, payload) => {
          const copy = Uint8Array.from(payload);
          clock.setTimeout(() => {
            const dst = net.get(to);
            if (dst?.neighbours.has(peer(n))) dst.core.receive(peer(n), channel, copy);
          }, LATENCY_MS);
        },
      },
      onChange: () => this.changes++,
      onPeersForgotten: (gone) => this.forgotten.push(...gone),
    });
    const dialer: MeshDialer = {
      addTargets: (l) => {
        for (const t of l) this.targets.add(t);
      },
      removeTargets: (l) => {
        for (const t of l) this.targets.delete(t);
        this.removed.push(...l);
      },
      isPersistent: () => false,
    };
    this.core.dialer = dialer;
    net.set(peer(n), this);
    this.core.start(localEntry(n));
  }

  summaries(): ConnectionSummary[] {
    return [...this.neighbours].map((p) => ({
      peer: p,
      addr: addrOf(Number.parseInt(p.slice(-2), 16)),
      tcpPort: 6783,
      outbound: true,
      established: true,
    }));
  }

  publish(): void {
    this.core.setLocal({ connections: this.summaries(), cidrs: [] });
  }
}

function localEntry(n: number): PeerEntry {
  return {
    name: peer(n),
    nickname: `r${n}`,
    uid: String(1000 + n),
    incarnation: 1,
    version: 1,
    connections: [],
    cidrs: [],
    sleevePort: 6783,
    vxlanPort: 6784,
    encap: 'sleeve',
  };
}

/** link connects two nodes as the router does: both sides add the neighbour, send full state, publish. */
function link(a: Node, b: Node): void {
  a.neighbours.add(b.core.name);
  b.neighbours.add(a.core.name);
  for (const [x, y] of [
    [a, b],
    [b, a],
  ] as const) {
    x.core.neighbourUp(y.core.name);
    x.publish();
  }
}

function unlink(a: Node, b: Node): void {
  a.neighbours.delete(b.core.name);
  b.neighbours.delete(a.core.name);
  a.publish();
  b.publish();
}

function mesh(n: number, opts: { degree?: number; discovery?: boolean; routesDelayMs?: number } = {}) {
  const clock = new VirtualClock(0);
  const net = new Map<PeerName, Node>();
  const nodes = Array.from({ length: n }, (_, i) => new Node(i + 1, net, clock, opts));
  return { clock, net, nodes };
}

describe('MeshCore', () => {
  it('gossips each entry along a chain and routes through the neighbour in between', () => {
    const { clock, nodes } = mesh(3, { discovery: false });
    const [a, b, c] = nodes as [Node, Node, Node];
    link(a, b);
    link(b, c);
    clock.advance(SETTLE_MS);
    for (const x of nodes)
      expect(
        x.core
          .entries()
          .map((e) => e.name)
          .sort(),
      ).toEqual([a, b, c].map((y) => y.core.name));
    expect(a.core.routes.unicast.get(c.core.name)).toBe(b.core.name);
    expect(c.core.routes.unicast.get(a.core.name)).toBe(b.core.name);
    expect(a.changes).toBeGreaterThan(0);
    expect(a.targets.size).toBe(0); // discovery off
  });

  it('dials a peer learned from the topology, up to the discovery degree', () => {
    const { clock, nodes } = mesh(4, { degree: 2 });
    const [hub, ...spokes] = nodes as [Node, Node, Node, Node];
    for (const s of spokes) link(hub, s);
    clock.advance(SETTLE_MS);
    // Each spoke has one connection and room for one more of the two other spokes.
    for (const s of spokes) {
      const want = [...s.targets];
      expect(want).toHaveLength(1);
      expect(want[0]).toMatch(/^10\.0\.0\.[234]:6783$/);
      expect(want[0]).not.toBe(`${addrOf(s.n)}:6783`);
    }
    // The hub is at its degree already: it dials nobody.
    expect(hub.targets.size).toBe(0);
    // Once the spoke is connected to its choice, that target is no longer wanted: removed.
    const s = spokes[0]!;
    const target = [...s.targets][0]!;
    link(s, nodes[Number(target.split(':')[0]!.split('.')[3]) - 1]!);
    clock.advance(SETTLE_MS);
    expect(s.targets.size).toBe(0);
    expect(s.removed).toContain(target);
  });

  it('forgets a peer PEER_GC_DELAY_MS after it became unreachable, and says so', () => {
    const { clock, nodes } = mesh(3, { discovery: false });
    const [a, b, c] = nodes as [Node, Node, Node];
    link(a, b);
    link(b, c);
    clock.advance(SETTLE_MS);
    unlink(b, c);
    clock.advance(SETTLE_MS);
    expect(a.core.routes.reachable.has(c.core.name)).toBe(false);
    expect(a.core.entries().some((e) => e.name === c.core.name)).toBe(true);
    clock.advance(PEER_GC_DELAY_MS);
    expect(a.core.entries().some((e) => e.name === c.core.name)).toBe(false);
    expect(a.forgotten).toEqual([c.core.name]);
  });

  it('forgets only peers unreachable for PEER_GC_DELAY_MS: one learned just before the collector runs waits its turn', () => {
    const { clock, nodes } = mesh(3, { discovery: false });
    const [a, b, c] = nodes as [Node, Node, Node];
    link(a, b);
    link(b, c);
    clock.advance(SETTLE_MS + PEER_GC_DELAY_MS); // no collection pending
    unlink(b, c);
    clock.advance(PEER_GC_DELAY_MS - 10); // c unreachable at a for a little less than the delay
    // An entry of a peer whose connections have not arrived yet: unreachable for now.
    const lonely = { ...localEntry(9), connections: [] };
    a.core.topology!.merge([lonely]);
    a.core.recompute();
    clock.advance(SETTLE_MS);
    expect(a.forgotten).toEqual([c.core.name]);
    expect(a.core.topology!.get(lonely.name)).toEqual(lonely);
    clock.advance(PEER_GC_DELAY_MS);
    expect(a.forgotten).toEqual([c.core.name, lonely.name]);
  });

  it('does not take a forgotten peer back from a neighbour that still holds it, and restores it once reachable again', () => {
    const { clock, nodes } = mesh(4, { discovery: false });
    const [a, b, c, d] = nodes as [Node, Node, Node, Node];
    link(a, b);
    link(b, c);
    link(c, d);
    clock.advance(SETTLE_MS);
    unlink(b, c); // {a, b} | {c, d}
    clock.advance(SETTLE_MS);
    const cd = a.core.entries().filter((x) => x.name === c.core.name || x.name === d.core.name);
    clock.advance(PEER_GC_DELAY_MS);
    const names = (x: Node) => x.core.entries().map((e) => e.name);
    expect(names(a)).toEqual([a.core.name, b.core.name]);
    expect(a.forgotten.sort()).toEqual([c.core.name, d.core.name]);
    // A newcomer e still holds the copies of c and d that a forgot (it saw them before the split)
    // and joins a's side: its full state brings them to a and b again: not news, not gossiped on.
    const e = new Node(5, a.net, clock, { discovery: false });
    e.core.topology!.merge(cd);
    link(e, a);
    clock.advance(SETTLE_MS);
    expect(names(a)).toEqual([a.core.name, b.core.name, e.core.name]);
    expect(names(b)).toEqual([a.core.name, b.core.name, e.core.name]);
    // The split heals: b and c link again. a restores d from its store although d's entry never changed.
    link(b, c);
    clock.advance(SETTLE_MS);
    expect(names(a)).toContain(d.core.name);
    expect(a.core.routes.reachable.has(d.core.name)).toBe(true);
    expect(a.core.topology!.get(d.core.name)).toEqual(d.core.topology!.local);
  });

  it('repairs a lost message by anti-entropy on its gossip timer', () => {
    const { clock, nodes } = mesh(2, { discovery: false });
    const [a, b] = nodes as [Node, Node];
    // Links up on a's side only at first: b drops what a sends.
    a.neighbours.add(b.core.name);
    a.publish();
    clock.advance(SETTLE_MS);
    expect(b.core.entries()).toHaveLength(1);
    b.neighbours.add(a.core.name);
    clock.advance(30_000 + SETTLE_MS);
    expect(b.core.entries().map((e) => e.name)).toContain(a.core.name);
  });

  it('gives subsystems their own channels and refuses a name in use', () => {
    const { clock, nodes } = mesh(2, { discovery: false });
    const [a, b] = nodes as [Node, Node];
    const got: string[] = [];
    const gossiper = (into: string[]): Gossiper => ({
      onGossip: (_src, payload) => {
        into.push(Buffer.from(payload).toString());
        return undefined;
      },
      onGossipUnicast: () => {},
      fullState: () => new Uint8Array(0),
    });
    const send = a.core.addGossiper('names', gossiper([]));
    b.core.addGossiper('names', gossiper(got));
    expect(() => a.core.addGossiper('names', gossiper([]))).toThrow(/already in use/);
    expect(() => a.core.addGossiper('topology', gossiper([]))).toThrow(/already in use/);
    link(a, b);
    send.broadcast(Buffer.from('hello'));
    clock.advance(SETTLE_MS);
    expect(got).toContain('hello');
    expect(a.core.channels().map((c) => c.name)).toEqual(['topology', 'names']);
  });

  it('coalesces its own changes into one announcement, and merges from gossip into one recomputation', () => {
    const { clock, nodes } = mesh(3, { discovery: false, routesDelayMs: 100 });
    const [a, b, c] = nodes as [Node, Node, Node];
    link(a, b);
    link(b, c);
    clock.advance(SETTLE_MS);
    const version = () => c.core.topology!.get(a.core.name)?.version;
    const before = version()!;
    const changesBefore = c.changes;
    // Three changes in a row: c hears only the last version, and recomputes once.
    for (let i = 0; i < 3; i++) a.core.setLocal({ connections: a.summaries(), cidrs: [`10.32.0.${i}/32`] });
    clock.advance(SETTLE_MS);
    expect(version()).toBe(before + 3);
    expect(c.core.topology!.get(a.core.name)?.cidrs).toEqual(['10.32.0.2/32']);
    expect(c.changes - changesBefore).toBe(1);
  });

  it('stop drops the topology and timers; start makes a fresh one', () => {
    const { clock, nodes } = mesh(2, { discovery: false });
    const [a, b] = nodes as [Node, Node];
    link(a, b);
    clock.advance(SETTLE_MS);
    a.core.stop();
    expect(a.core.topology).toBeUndefined();
    expect(a.core.entries()).toEqual([]);
    expect(a.core.routes.unicast.size).toBe(0);
    a.core.start(localEntry(1));
    expect(a.core.entries()).toHaveLength(1);
  });
});
