import { describe, expect, it } from 'vitest';
import { noopLogger } from '../../common/log.js';
import type { PeerName } from '../../common/types.js';
import { emptyRoutes, type Routes } from '../routes.js';
import { mulberry32 } from '../testing/gossip-sim.js';
import { decodeStringSet, encodeStringSet, linkRoutes, testPeer } from '../testing/link-routes.js';
import {
  ENVELOPE_GOSSIP,
  GOSSIP_HEADER_LEN,
  GOSSIP_RELAY_TTL,
  type GossipChannel,
  GossipMux,
  gossipFanout,
} from './channel.js';
import { type Gossiper, NullGossip, NullGossiper } from './gossip.js';

// ---- helpers ----

const CHANNEL = 'set';

const p = testPeer;

const text = new TextEncoder();
const untext = new TextDecoder();

const encodeSet = encodeStringSet;
const decodeSet = (payload: Uint8Array): string[] => decodeStringSet(payload);

/** SetGossiper gossips a grow-only set of strings (a JSON array): the smallest mergeable data. */
class SetGossiper implements Gossiper {
  readonly items = new Set<string>();
  readonly unicasts: [PeerName, string][] = [];

  onGossip(_src: PeerName, payload: Uint8Array): Uint8Array | undefined {
    const fresh = decodeSet(payload).filter((x) => !this.items.has(x));
    for (const x of fresh) this.items.add(x);
    return fresh.length === 0 ? undefined : encodeSet(fresh);
  }

  onGossipUnicast(src: PeerName, payload: Uint8Array): void {
    this.unicasts.push([src, untext.decode(payload)]);
  }

  fullState(): Uint8Array {
    return this.items.size === 0 ? new Uint8Array(0) : encodeSet([...this.items]);
  }
}

interface Sent {
  from: PeerName;
  to: PeerName;
  channel: string;
  payload: Uint8Array;
}

interface TestNode {
  readonly name: PeerName;
  readonly mux: GossipMux;
  readonly gossiper: SetGossiper;
  readonly channel: GossipChannel | undefined;
  readonly links: Set<PeerName>;
  routes: Routes;
}

/**
 * Net wires muxes together in memory: `send` queues, `run` delivers in order. Every link is a
 * control connection; `establish` derives each node's routes from the links (all established).
 */
class Net {
  readonly nodes = new Map<PeerName, TestNode>();
  readonly queue: Sent[] = [];
  readonly log: Sent[] = [];
  private readonly random: () => number;

  constructor(seed = 1) {
    this.random = mulberry32(seed);
  }

  add(name: PeerName, opts: { channel?: boolean } = {}): TestNode {
    const gossiper = new SetGossiper();
    const links = new Set<PeerName>();
    const node: TestNode = {
      name,
      gossiper,
      links,
      routes: emptyRoutes(name),
      channel: undefined,
      mux: new GossipMux({
        local: name,
        send: (to, channel, payload) => {
          const s = { from: name, to, channel, payload };
          this.queue.push(s);
          this.log.push(s);
        },
        neighbours: () => [...links],
        routes: () => node.routes,
        random: this.random,
        log: noopLogger,
      }),
    };
    if (opts.channel !== false) Object.assign(node, { channel: node.mux.addChannel(CHANNEL, gossiper) });
    this.nodes.set(name, node);
    return node;
  }

  link(a: PeerName, b: PeerName): void {
    this.nodes.get(a)!.links.add(b);
    this.nodes.get(b)!.links.add(a);
  }

  establish(): void {
    linkRoutes(this.nodes.values());
  }

  run(): void {
    for (let s = this.queue.shift(); s !== undefined; s = this.queue.shift()) {
      if (this.nodes.get(s.from)!.links.has(s.to)) this.nodes.get(s.to)!.mux.receive(s.from, s.channel, s.payload);
    }
  }

  node(name: PeerName): TestNode {
    return this.nodes.get(name)!;
  }

  channel(name: PeerName): GossipChannel {
    return this.nodes.get(name)!.channel!;
  }
}

/** stubRoutes claims `n` known peers with no unicast routes and the given broadcast children. */
function stubRoutes(n: number, broadcast: Map<PeerName, PeerName[]> = new Map()): Routes {
  return { unicast: new Map(), reachable: new Set(Array.from({ length: n }, (_, i) => p(200 + i))), broadcast };
}

/** star makes a hub p(1) with `leaves` neighbours p(2)...; nothing established (no tree). */
function star(leaves: number, seed = 1): Net {
  const net = new Net(seed);
  net.add(p(1));
  for (let i = 0; i < leaves; i++) {
    net.add(p(2 + i));
    net.link(p(1), p(2 + i));
  }
  return net;
}

function gossipBody(s: Sent): string[] {
  expect(s.payload[0]).toBe(ENVELOPE_GOSSIP);
  return decodeSet(s.payload.subarray(GOSSIP_HEADER_LEN));
}

// ---- tests ----

describe('gossipFanout', () => {
  it('is ceil(log2(N+1)) + 1', () => {
    expect([0, 1, 2, 3, 7, 8, 50, 100, 200, 1000].map(gossipFanout)).toEqual([2, 2, 3, 3, 4, 5, 7, 8, 9, 11]);
  });
});

describe('GossipChannel.broadcast', () => {
  it('sends to fanout(N) distinct random neighbours when no broadcast tree covers them', () => {
    const net = star(20);
    const hub = net.node(p(1));
    hub.routes = stubRoutes(20);
    const recipients = new Set<PeerName>();
    for (let i = 0; i < 30; i++) {
      net.log.length = 0;
      hub.channel!.broadcast(encodeSet([`x${i}`]));
      const to = net.log.map((s) => s.to);
      expect(new Set(to).size).toBe(to.length);
      expect(to).toHaveLength(gossipFanout(20));
      for (const t of to) recipients.add(t);
    }
    expect(recipients.size).toBeGreaterThan(gossipFanout(20));
  });

  it('sends to every neighbour when there are fewer than fanout(N), and nothing for an empty delta', () => {
    const net = star(3);
    net.node(p(1)).routes = stubRoutes(100);
    net.channel(p(1)).broadcast(encodeSet(['a']));
    expect(net.log.map((s) => s.to).sort()).toEqual([p(2), p(3), p(4)]);
    net.channel(p(1)).broadcast(new Uint8Array(0));
    expect(net.log).toHaveLength(3);
  });

  it('always sends to broadcast-tree children and included neighbours; they count toward the fanout', () => {
    const net = star(20);
    const hub = net.node(p(1));
    hub.routes = stubRoutes(20, new Map([[p(1), [p(5), p(6)]]]));
    for (let i = 0; i < 10; i++) {
      net.log.length = 0;
      hub.channel!.broadcast(encodeSet([`x${i}`]), [p(9), p(42)]); // p(42) is no neighbour: skipped
      const to = net.log.map((s) => s.to);
      expect(to.slice(0, 3)).toEqual([p(5), p(6), p(9)]);
      expect(to).toHaveLength(gossipFanout(20));
    }
  });

  it('has a hub pass a leaf delta to all its tree children, beyond the fanout', () => {
    const net = star(20);
    net.establish();
    net.node(p(2)).gossiper.items.add('news');
    net.channel(p(2)).broadcast(encodeSet(['news']));
    net.run();
    for (const n of net.nodes.values()) expect(n.gossiper.items.has('news')).toBe(true);
    expect(net.log.filter((s) => s.from === p(1))).toHaveLength(19);
    expect(gossipFanout(21)).toBeLessThan(19);
  });

  it('reaches every peer of an established mesh through the tree, whatever the random choices', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const net = new Net(seed);
      const random = mulberry32(seed + 100);
      for (let i = 1; i <= 30; i++) net.add(p(i));
      for (let i = 2; i <= 30; i++) {
        net.link(p(i), p(1 + Math.floor(random() * (i - 1))));
        net.link(p(i), p(1 + Math.floor(random() * (i - 1))));
      }
      net.establish();
      net.node(p(7)).gossiper.items.add('news'); // the owner merges its own change first
      net.channel(p(7)).broadcast(encodeSet(['news']));
      net.run();
      for (const n of net.nodes.values()) expect(n.gossiper.items.has('news'), `seed ${seed} ${n.name}`).toBe(true);
    }
  });
});

describe('GossipChannel.receive', () => {
  it('forwards only what was new, never back to the sender, and stops when nothing is new', () => {
    const net = new Net();
    for (const i of [1, 2, 3, 4]) net.add(p(i));
    net.link(p(2), p(1));
    net.link(p(2), p(3));
    net.link(p(2), p(4));
    net.node(p(2)).routes = stubRoutes(4);
    net.node(p(2)).gossiper.items.add('x');
    net.node(p(2)).mux.receive(p(1), CHANNEL, wrapFrom(p(1), ['x', 'y']));
    expect(net.log.map((s) => s.to).sort()).toEqual([p(3), p(4)]);
    for (const s of net.log) expect(gossipBody(s)).toEqual(['y']);
    net.log.length = 0;
    net.node(p(2)).mux.receive(p(3), CHANNEL, wrapFrom(p(1), ['x', 'y']));
    expect(net.log).toEqual([]);
  });

  it('counts and survives malformed envelopes and payloads the gossiper refuses', () => {
    const net = star(1);
    const ch = net.channel(p(1));
    for (const bad of [[], [9, 1, 2], [ENVELOPE_GOSSIP, 0, 0, 0, 0, 0, 0], [2, 16, 0, 0]]) {
      ch.receive(p(2), new Uint8Array(bad));
    }
    ch.receive(p(2), wrapFrom(p(2), ['ok']));
    ch.receive(p(2), wrapRaw(p(2), text.encode('{"no":1}')));
    expect(ch.stats.drops.malformed).toBe(4);
    expect(ch.stats.drops.refused).toBe(1);
    expect(ch.stats.messagesReceived).toBe(6);
    expect(net.node(p(1)).gossiper.items.has('ok')).toBe(true);
  });
});

describe('GossipChannel full state', () => {
  it('pushes the full state to a new neighbour, and on tick to one random neighbour', () => {
    const net = star(5);
    const hub = net.node(p(1));
    hub.mux.onNewNeighbour(p(2));
    hub.mux.tick();
    expect(net.log).toEqual([]); // nothing known yet: nothing to push
    hub.gossiper.items.add('a');
    hub.gossiper.items.add('b');
    hub.mux.onNewNeighbour(p(2));
    expect(net.log.map((s) => [s.to, gossipBody(s)])).toEqual([[p(2), ['a', 'b']]]);
    const ticked = new Set<PeerName>();
    for (let i = 0; i < 20; i++) {
      net.log.length = 0;
      hub.mux.tick();
      expect(net.log).toHaveLength(1);
      ticked.add(net.log[0]!.to);
    }
    expect(ticked.size).toBeGreaterThan(1);
  });
});

describe('unicast and GossipMux relaying', () => {
  /** line makes p(1) - p(2) - p(3) with established routes; p(2) may lack the channel. */
  function line(middleHasChannel: boolean): Net {
    const net = new Net();
    net.add(p(1));
    net.add(p(2), { channel: middleHasChannel });
    net.add(p(3));
    net.link(p(1), p(2));
    net.link(p(2), p(3));
    net.establish();
    return net;
  }

  it('relays a unicast through an intermediate that has no such channel', () => {
    const net = line(false);
    expect(net.channel(p(1)).unicast(p(3), text.encode('hello'))).toBe(true);
    net.run();
    expect(net.node(p(3)).gossiper.unicasts).toEqual([[p(1), 'hello']]);
    expect(net.log.map((s) => `${s.from.slice(-1)}>${s.to.slice(-1)}`)).toEqual(['1>2', '2>3']);
    expect(net.node(p(2)).mux.unknown.relayed).toBe(1);
    expect(net.node(p(2)).mux.unknown.bytesReceived).toBe(net.log[0]!.payload.length);
  });

  it('relays a unicast through an intermediate that has the channel, without delivering it there', () => {
    const net = line(true);
    net.channel(p(3)).unicast(p(1), text.encode('back'));
    net.run();
    expect(net.node(p(1)).gossiper.unicasts).toEqual([[p(3), 'back']]);
    expect(net.node(p(2)).gossiper.unicasts).toEqual([]);
    expect(net.channel(p(2)).stats.relayed).toBe(1);
  });

  it('drops gossip, and unicasts addressed to it, on a channel this peer does not have', () => {
    const net = line(false);
    net.channel(p(1)).broadcast(encodeSet(['a']));
    net.node(p(1)).channel!.unicast(p(2), text.encode('to the middle'));
    net.run();
    expect(net.node(p(2)).mux.unknown.drops.unknownChannel).toBe(2);
    expect(net.node(p(3)).gossiper.items.size).toBe(0);
    net.node(p(2)).mux.receive(p(1), 'other', new Uint8Array([7]));
    expect(net.node(p(2)).mux.unknown.drops.malformed).toBe(1);
  });

  it('delivers a unicast to ourselves at once, and refuses one with no route', () => {
    const net = line(true);
    expect(net.channel(p(1)).unicast(p(1), text.encode('me'))).toBe(true);
    expect(net.node(p(1)).gossiper.unicasts).toEqual([[p(1), 'me']]);
    expect(net.channel(p(1)).unicast(p(99), text.encode('nobody'))).toBe(false);
    expect(net.channel(p(1)).stats.drops.noRoute).toBe(1);
    expect(net.log).toEqual([]);
  });

  it('drops a unicast that runs out of hops in a routing loop', () => {
    const net = new Net();
    net.add(p(1));
    net.add(p(2), { channel: false });
    net.link(p(1), p(2));
    // Stale routes: each thinks the other is the way to p(9).
    net.node(p(1)).routes = { ...stubRoutes(3), unicast: new Map([[p(9), p(2)]]) };
    net.node(p(2)).routes = { ...stubRoutes(3), unicast: new Map([[p(9), p(1)]]) };
    net.channel(p(1)).unicast(p(9), text.encode('lost'));
    net.run();
    expect(net.log).toHaveLength(GOSSIP_RELAY_TTL);
    expect(net.channel(p(1)).stats.drops.ttlExpired + net.node(p(2)).mux.unknown.drops.ttlExpired).toBe(1);
  });

  it('counts messages and bytes per channel', () => {
    const net = line(true);
    net.channel(p(1)).broadcast(encodeSet(['a']));
    net.run();
    const sent = net.log.filter((s) => s.from === p(1));
    const ch = net.channel(p(1)).stats;
    expect(ch.messagesSent).toBe(sent.length);
    expect(ch.bytesSent).toBe(sent.reduce((n, s) => n + s.payload.length, 0));
    expect(net.channel(p(3)).stats.messagesReceived).toBe(1);
  });

  it('refuses a second channel of one name, or a bad name', () => {
    const net = line(true);
    expect(() => net.node(p(1)).mux.addChannel(CHANNEL, new NullGossiper())).toThrow(/already exists/);
    expect(() => net.node(p(1)).mux.addChannel('', new NullGossiper())).toThrow(/invalid gossip channel name/);
    expect(() => net.node(p(1)).mux.addChannel('x'.repeat(65), new NullGossiper())).toThrow(/invalid/);
    expect(
      net
        .node(p(1))
        .mux.channels()
        .map((c) => c.name),
    ).toEqual([CHANNEL]);
    expect(net.node(p(1)).mux.channel(CHANNEL)).toBe(net.channel(p(1)));
  });
});

describe('NullGossiper and NullGossip', () => {
  it('know nothing and send nothing', () => {
    const g = new NullGossiper();
    expect(g.onGossip()).toBeUndefined();
    expect(g.fullState()).toHaveLength(0);
    g.onGossipUnicast();
    const s = new NullGossip();
    s.broadcast();
    expect(s.unicast()).toBe(false);
  });
});

/** wrapFrom builds a gossip envelope from `origin` carrying a set. */
function wrapFrom(origin: PeerName, items: string[]): Uint8Array {
  return wrapRaw(origin, encodeSet(items));
}

/** wrapRaw builds a gossip envelope from `origin` around any body. */
function wrapRaw(origin: PeerName, body: Uint8Array): Uint8Array {
  const env = new Uint8Array(GOSSIP_HEADER_LEN + body.length);
  env[0] = ENVELOPE_GOSSIP;
  for (let i = 0; i < 6; i++) env[1 + i] = Number.parseInt(origin.slice(i * 3, i * 3 + 2), 16);
  env.set(body, GOSSIP_HEADER_LEN);
  return env;
}
