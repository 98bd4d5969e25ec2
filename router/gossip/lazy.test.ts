import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../../common/clock.js';
import { ProtocolError } from '../../common/errors.js';
import { noopLogger } from '../../common/log.js';
import { type PeerName, peerNameToBytes } from '../../common/types.js';
import type { Routes } from '../routes.js';
import { mulberry32 } from '../testing/gossip-sim.js';
import { decodeStringSet, encodeStringSet, linkRoutes, testPeer } from '../testing/link-routes.js';
import {
  ENVELOPE_ANNOUNCE,
  ENVELOPE_GOSSIP,
  ENVELOPE_GRAFT,
  GOSSIP_HEADER_LEN,
  type GossipChannel,
  GossipMux,
  GRAFT_DELAY_MS,
  GRAFT_RETRY_MS,
  LAZY_ANNOUNCE_DELAY_MS,
  LAZY_HEADER_LEN,
  LAZY_WANTED_MAX,
} from './channel.js';
import type { Announcing, Gossiper } from './gossip.js';

// Lazy push (channel.ts): tree children get deltas, the random part their ids; grafts repair.

const CHANNEL = 'set';
/** ID_BYTES: every item of the test set is 4 ASCII characters, and its id is those 4 bytes. */
const ID_BYTES = 4;
const ITEM_BYTES = 6 + ID_BYTES;

const p = testPeer;

const text = new TextEncoder();
const untext = new TextDecoder();

const encodeSet = encodeStringSet;
const decodeSet = (payload: Uint8Array): string[] => decodeStringSet(payload, ID_BYTES);

/** LazySet gossips a grow-only set of 4-character strings, each its own id. */
class LazySet implements Gossiper, Announcing {
  readonly items = new Set<string>();
  readonly idBytes = ID_BYTES;
  readonly announcing: Announcing = this;

  onGossip(_src: PeerName, payload: Uint8Array): Uint8Array | undefined {
    const fresh = decodeSet(payload).filter((x) => !this.items.has(x));
    for (const x of fresh) this.items.add(x);
    return fresh.length === 0 ? undefined : encodeSet(fresh);
  }

  onGossipUnicast(): void {}

  fullState(): Uint8Array {
    return this.items.size === 0 ? new Uint8Array(0) : encodeSet([...this.items]);
  }

  ids(delta: Uint8Array): Uint8Array {
    return text.encode(decodeSet(delta).join(''));
  }

  holds(ids: Uint8Array, off: number): boolean {
    const id = untext.decode(ids.subarray(off, off + ID_BYTES));
    if (id.includes('!')) throw new ProtocolError(`invalid id ${id}`);
    return this.items.has(id);
  }

  answer(ids: Uint8Array): Uint8Array {
    const want = untext.decode(ids).match(/.{4}/g) ?? [];
    const have = want.filter((x) => this.items.has(x));
    return have.length === 0 ? new Uint8Array(0) : encodeSet(have);
  }
}

interface Sent {
  readonly at: number;
  readonly from: PeerName;
  readonly to: PeerName;
  readonly payload: Uint8Array;
}

interface LazyNode {
  readonly name: PeerName;
  readonly mux: GossipMux;
  readonly set: LazySet;
  readonly channel: GossipChannel;
  readonly links: Set<PeerName>;
  routes: Routes;
}

/** Net delivers every message LATENCY_MS after it is sent, on one VirtualClock. */
const LATENCY_MS = 1;

class Net {
  readonly clock = new VirtualClock(0);
  readonly nodes = new Map<PeerName, LazyNode>();
  readonly log: Sent[] = [];
  private readonly random: () => number;

  constructor(seed = 1) {
    this.random = mulberry32(seed);
  }

  add(name: PeerName): LazyNode {
    const set = new LazySet();
    const links = new Set<PeerName>();
    const mux: GossipMux = new GossipMux({
      local: name,
      send: (to, channel, payload) => {
        this.log.push({ at: this.clock.now(), from: name, to, payload });
        this.clock.setTimeout(() => {
          if (links.has(to)) this.nodes.get(to)?.mux.receive(name, channel, payload);
        }, LATENCY_MS);
      },
      neighbours: () => [...links],
      routes: () => node.routes,
      random: this.random,
      log: noopLogger,
      clock: this.clock,
    });
    const node: LazyNode = {
      name,
      mux,
      set,
      links,
      channel: mux.addChannel(CHANNEL, set),
      routes: { unicast: new Map(), reachable: new Set([name]), broadcast: new Map() },
    };
    this.nodes.set(name, node);
    return node;
  }

  link(a: PeerName, b: PeerName): void {
    this.nodes.get(a)!.links.add(b);
    this.nodes.get(b)!.links.add(a);
  }

  /** establish gives every node the routes of the links as they are (all established). */
  establish(): void {
    linkRoutes(this.nodes.values());
  }

  node(name: PeerName): LazyNode {
    return this.nodes.get(name)!;
  }

  /** publish is what an owner does: merge its own change, then broadcast it. */
  publish(name: PeerName, item: string): void {
    this.node(name).set.items.add(item);
    this.node(name).channel.broadcast(encodeSet([item]));
  }

  kinds(filter: (s: Sent) => boolean = () => true): number[] {
    return this.log.filter(filter).map((s) => s.payload[0]!);
  }
}

/** stubRoutes claims `n` known peers with the given broadcast children and no unicast routes. */
function stubRoutes(n: number, broadcast: Map<PeerName, PeerName[]> = new Map()): Routes {
  return { unicast: new Map(), reachable: new Set(Array.from({ length: n }, (_, i) => p(200 + i))), broadcast };
}

/** star makes a hub p(1) with `leaves` neighbours p(2)... */
function star(leaves: number): Net {
  const net = new Net();
  net.add(p(1));
  for (let i = 0; i < leaves; i++) {
    net.add(p(2 + i));
    net.link(p(1), p(2 + i));
  }
  return net;
}

/** announced lists the ids of an announce or graft envelope, with their origins. */
function itemsOf(env: Uint8Array): [PeerName, string][] {
  const out: [PeerName, string][] = [];
  for (let off = LAZY_HEADER_LEN; off < env.length; off += ITEM_BYTES) {
    const origin = Array.from(env.subarray(off, off + 6), (b) => b.toString(16).padStart(2, '0')).join(':');
    out.push([origin as PeerName, untext.decode(env.subarray(off + 6, off + ITEM_BYTES))]);
  }
  return out;
}

function lazyEnv(kind: number, items: readonly [PeerName, string][]): Uint8Array {
  const env = new Uint8Array(LAZY_HEADER_LEN + items.length * ITEM_BYTES);
  env[0] = kind;
  items.forEach(([origin, id], i) => {
    peerNameToBytes(origin, env, LAZY_HEADER_LEN + i * ITEM_BYTES);
    env.set(text.encode(id), LAZY_HEADER_LEN + i * ITEM_BYTES + 6);
  });
  return env;
}

describe('lazy push', () => {
  it('sends deltas to tree children and only ids to the random part, one announcement per neighbour per batch', () => {
    const net = star(20);
    const hub = net.node(p(1));
    hub.routes = stubRoutes(20, new Map([[p(1), [p(5), p(6)]]]));
    for (const item of ['aaaa', 'bbbb', 'cccc']) net.publish(p(1), item);
    // At once: the deltas themselves, to the tree children only.
    expect(net.log.map((s) => [s.to, s.payload[0]])).toEqual(
      [p(5), p(6), p(5), p(6), p(5), p(6)].map((to) => [to, ENVELOPE_GOSSIP]),
    );
    net.clock.advance(LAZY_ANNOUNCE_DELAY_MS);
    const announces = net.log.filter((s) => s.payload[0] === ENVELOPE_ANNOUNCE);
    const to = announces.map((s) => s.to);
    expect(new Set(to).size).toBe(to.length); // one per neighbour, however many deltas
    expect(to).not.toContain(p(5));
    expect(to).not.toContain(p(6));
    // Each delta's ids went to fanout(N) - 2 random neighbours: 3 × (6 - 2) ids in all.
    const ids = announces.flatMap((s) => itemsOf(s.payload));
    expect(ids).toHaveLength(3 * 4);
    for (const [origin, id] of ids) {
      expect(origin).toBe(p(1));
      expect(['aaaa', 'bbbb', 'cccc']).toContain(id);
    }
    expect(hub.channel.stats.announced).toBe(12);
  });

  it('grafts an announced id it lacks after GRAFT_DELAY_MS, and gets the delta from the announcer', () => {
    const net = new Net();
    const [a, b] = [net.add(p(1)), net.add(p(2))];
    net.link(a.name, b.name);
    a.routes = stubRoutes(10); // no tree: b is in a's random part
    net.publish(a.name, 'news');
    net.clock.advance(LAZY_ANNOUNCE_DELAY_MS + LATENCY_MS);
    expect(net.kinds()).toEqual([ENVELOPE_ANNOUNCE]);
    expect(b.set.items.has('news')).toBe(false);
    net.clock.advance(GRAFT_DELAY_MS - 1);
    expect(net.kinds()).toEqual([ENVELOPE_ANNOUNCE]); // still waiting for the tree
    net.clock.advance(1);
    expect(net.kinds()).toEqual([ENVELOPE_ANNOUNCE, ENVELOPE_GRAFT]);
    expect(itemsOf(net.log[1]!.payload)).toEqual([[a.name, 'news']]);
    net.clock.advance(2 * LATENCY_MS);
    expect(b.set.items.has('news')).toBe(true);
    const answer = net.log[2]!;
    expect([answer.from, answer.to, answer.payload[0]]).toEqual([a.name, b.name, ENVELOPE_GOSSIP]);
    expect(decodeSet(answer.payload.subarray(GOSSIP_HEADER_LEN))).toEqual(['news']);
    expect(b.channel.stats.grafted).toBe(1);
    net.clock.advance(10 * GRAFT_RETRY_MS);
    expect(net.log).toHaveLength(3); // nothing asked again
  });

  it('does not graft what the tree brought meanwhile', () => {
    const net = new Net();
    const [a, b, c] = [net.add(p(1)), net.add(p(2)), net.add(p(3))];
    net.link(a.name, b.name);
    net.link(b.name, c.name);
    a.routes = stubRoutes(10);
    net.publish(a.name, 'news');
    net.clock.advance(LAZY_ANNOUNCE_DELAY_MS + LATENCY_MS); // b noted the id it lacks
    c.set.items.add('news');
    b.mux.receive(c.name, CHANNEL, wrap(c.name, ['news'])); // ... and the tree brings it
    net.clock.advance(GRAFT_DELAY_MS + GRAFT_RETRY_MS);
    expect(net.kinds((s) => s.from === b.name && s.payload[0] === ENVELOPE_GRAFT)).toEqual([]);
    expect(b.set.items.has('news')).toBe(true);
  });

  it('asks the next announcer when a graft goes unanswered, and gives up after the last', () => {
    const net = new Net();
    const [a, b, c] = [net.add(p(1)), net.add(p(2)), net.add(p(3))];
    net.link(a.name, b.name);
    net.link(c.name, b.name);
    b.mux.receive(a.name, CHANNEL, lazyEnv(ENVELOPE_ANNOUNCE, [[a.name, 'news']]));
    b.mux.receive(c.name, CHANNEL, lazyEnv(ENVELOPE_ANNOUNCE, [[a.name, 'news']]));
    // a announced an id it cannot answer for (it holds nothing): its answer is empty, so none comes.
    net.clock.advance(GRAFT_DELAY_MS);
    expect(net.log.map((s) => [s.from, s.to, s.payload[0]])).toEqual([[b.name, a.name, ENVELOPE_GRAFT]]);
    net.clock.advance(LATENCY_MS);
    expect(net.log).toHaveLength(1);
    c.set.items.add('news');
    net.clock.advance(GRAFT_RETRY_MS + 2 * LATENCY_MS);
    expect(net.log.slice(1).map((s) => [s.from, s.to, s.payload[0]])).toEqual([
      [b.name, c.name, ENVELOPE_GRAFT],
      [c.name, b.name, ENVELOPE_GOSSIP],
    ]);
    expect(b.set.items.has('news')).toBe(true);
    // An id nobody answers for: asked of each announcer once, then left to anti-entropy.
    net.clock.advance(GRAFT_DELAY_MS + GRAFT_RETRY_MS); // (a grafts 'news' from b meanwhile)
    b.mux.receive(a.name, CHANNEL, lazyEnv(ENVELOPE_ANNOUNCE, [[a.name, 'gone']]));
    net.log.length = 0;
    net.clock.advance(GRAFT_DELAY_MS + 5 * GRAFT_RETRY_MS);
    expect(net.log.map((s) => [s.from, s.to, s.payload[0]])).toEqual([[b.name, a.name, ENVELOPE_GRAFT]]);
  });

  it('repairs the holes of stale broadcast trees without anti-entropy (20 random meshes)', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const net = new Net(seed);
      const random = mulberry32(seed + 100);
      for (let i = 1; i <= 40; i++) net.add(p(i));
      for (let i = 2; i <= 40; i++) {
        net.link(p(i), p(1 + Math.floor(random() * (i - 1))));
        net.link(p(i), p(1 + Math.floor(random() * (i - 1))));
      }
      net.establish();
      // A quarter of the routers hold trees of another time: they pass the delta to no one.
      for (const n of net.nodes.values()) {
        if (random() < 0.25) n.routes = { ...n.routes, broadcast: new Map() };
      }
      net.publish(p(7), 'news');
      net.clock.advance(2_000);
      for (const n of net.nodes.values()) expect(n.set.items.has('news'), `seed ${seed} ${n.name}`).toBe(true);
      const grafts = net.kinds((s) => s.payload[0] === ENVELOPE_GRAFT).length;
      expect(grafts, `seed ${seed}`).toBeGreaterThan(0);
      // About one delta per router: the tree's, plus the grafts' answers.
      const deltas = net.kinds((s) => s.payload[0] === ENVELOPE_GOSSIP).length;
      expect(deltas).toBeLessThanOrEqual(net.nodes.size - 1 + grafts);
    }
  });

  it('counts malformed and refused announcements and grafts, and answers nothing it does not hold', () => {
    const net = star(1);
    const hub = net.node(p(1));
    const ch = hub.channel;
    hub.set.items.add('have');
    const bad = [
      [ENVELOPE_ANNOUNCE], // no items
      [ENVELOPE_ANNOUNCE, 1, 2, 3], // not a whole item
      [ENVELOPE_GRAFT, ...new Array(ITEM_BYTES + 1).fill(0)],
    ];
    for (const b of bad) hub.mux.receive(p(2), CHANNEL, new Uint8Array(b));
    expect(ch.stats.drops.malformed).toBe(3);
    // An id the gossiper refuses: counted, and the ids before it are still noted.
    hub.mux.receive(
      p(2),
      CHANNEL,
      lazyEnv(ENVELOPE_ANNOUNCE, [
        [p(2), 'want'],
        [p(2), 'bad!'],
        [p(2), 'more'],
      ]),
    );
    expect(ch.stats.drops.refused).toBe(1);
    net.clock.advance(GRAFT_DELAY_MS);
    expect(net.log.map((s) => itemsOf(s.payload))).toEqual([[[p(2), 'want']]]);
    // A graft for what we do not hold gets no answer; for what we hold, the delta.
    net.log.length = 0;
    hub.mux.receive(p(2), CHANNEL, lazyEnv(ENVELOPE_GRAFT, [[p(9), 'nope']]));
    expect(net.log).toEqual([]);
    hub.mux.receive(
      p(2),
      CHANNEL,
      lazyEnv(ENVELOPE_GRAFT, [
        [p(9), 'nope'],
        [p(9), 'have'],
      ]),
    );
    expect(net.log.map((s) => decodeSet(s.payload.subarray(GOSSIP_HEADER_LEN)))).toEqual([['have']]);
    expect(net.log[0]!.payload.subarray(1, 7)).toEqual(lazyEnv(ENVELOPE_GRAFT, [[p(9), 'xxxx']]).subarray(1, 7));
    // On a channel we do not have, or one whose gossiper cannot announce: dropped and counted.
    hub.mux.receive(p(2), 'other', lazyEnv(ENVELOPE_ANNOUNCE, [[p(2), 'want']]));
    expect(hub.mux.unknown.drops.unknownChannel).toBe(1);
    const plain = hub.mux.addChannel('plain', {
      onGossip: () => undefined,
      onGossipUnicast: () => {},
      fullState: () => new Uint8Array(0),
    });
    hub.mux.receive(p(2), 'plain', lazyEnv(ENVELOPE_ANNOUNCE, [[p(2), 'want']]));
    expect(plain.stats.drops.malformed).toBe(1);
  });

  it('waits for at most LAZY_WANTED_MAX ids and counts the rest as overflow', () => {
    const net = star(1);
    const hub = net.node(p(1));
    const items: [PeerName, string][] = [];
    for (let i = 0; items.length < LAZY_WANTED_MAX + 10; i++) items.push([p(2), i.toString(36).padStart(4, '0')]);
    hub.mux.receive(p(2), CHANNEL, lazyEnv(ENVELOPE_ANNOUNCE, items));
    expect(hub.channel.stats.drops.overflow).toBe(10);
    net.clock.advance(GRAFT_DELAY_MS);
    expect(net.log).toHaveLength(1);
    expect(itemsOf(net.log[0]!.payload)).toHaveLength(LAZY_WANTED_MAX);
  });

  it('without a clock sends every delta whole, and close() cancels what is pending', () => {
    const net = star(20);
    const hub = net.node(p(1));
    hub.routes = stubRoutes(20);
    net.publish(p(1), 'aaaa');
    hub.mux.receive(p(2), CHANNEL, lazyEnv(ENVELOPE_ANNOUNCE, [[p(2), 'want']]));
    const before = net.log.length;
    hub.mux.close();
    net.clock.advance(GRAFT_DELAY_MS + GRAFT_RETRY_MS);
    expect(net.log).toHaveLength(before);

    const eager = new GossipMux({
      local: p(1),
      send: (to, _channel, payload) => net.log.push({ at: 0, from: p(1), to, payload }),
      neighbours: () => Array.from({ length: 20 }, (_, i) => p(2 + i)),
      routes: () => stubRoutes(20),
      random: mulberry32(1),
      log: noopLogger,
    });
    net.log.length = 0;
    const set = new LazySet();
    eager.addChannel(CHANNEL, set).broadcast(encodeSet(['aaaa']));
    expect(net.kinds()).toEqual(new Array(6).fill(ENVELOPE_GOSSIP));
  });
});

function wrap(origin: PeerName, items: readonly string[]): Uint8Array {
  const body = encodeSet(items);
  const env = new Uint8Array(GOSSIP_HEADER_LEN + body.length);
  env[0] = ENVELOPE_GOSSIP;
  peerNameToBytes(origin, env, 1);
  env.set(body, GOSSIP_HEADER_LEN);
  return env;
}
