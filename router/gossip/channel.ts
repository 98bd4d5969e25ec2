/**
 * GossipChannel and GossipMux: named gossip channels multiplexed over the control connections.
 *
 * Every channel message rides in the control protocol's `{t:'gossip', channel, payload}` and its
 * payload starts with a small envelope, so a peer can relay a unicast for a channel it does not
 * know without understanding it:
 *
 * ```
 *  gossip   | 1 | origin peer (6) | body ...                     a delta or a full state
 *  unicast  | 2 | ttl | src peer (6) | dst peer (6) | body ...   relayed hop by hop along unicast routes
 *           0   1     2              8                14
 * ```
 *
 * Dissemination (what a channel sends, and when):
 *
 * ```
 *  broadcast(delta) ──▶ our children in our broadcast tree + random neighbours up to fanout(N)
 *  receive(delta)   ──▶ merge; what was new ──▶ our children in the origin's tree + random other
 *                       neighbours up to fanout(N); nothing new ──▶ stop
 *  new neighbour    ──▶ our full state to it
 *  tick()           ──▶ our full state to one random neighbour (anti-entropy: repairs anything lost)
 * ```
 *
 * with fanout(N) = min(candidates, ceil(log2(N+1)) + 1) for N known peers. The random part is the
 * epidemic; the tree part (mesh's broadcast routes) makes delivery certain in a stable topology.
 * Random push alone left some peer without a delta after roughly one join in 30 in the simulator,
 * and that peer then waited for anti-entropy, up to GOSSIP_INTERVAL_MS. Forwarding happens once per
 * peer per new piece of data, so the tree adds no messages beyond fanout(N) per peer except where
 * a peer has more tree children than that (the origin: all its established neighbours).
 *
 * Unknown channels: a unicast for someone else is relayed by route whatever the channel; one for us,
 * or any gossip, on a channel this peer does not have is dropped and counted. Relaying epidemic
 * gossip needs a merge to know when to stop (mesh keeps a hash of every message for that); we do
 * without, at the cost that a peer lacking a channel is a hole in that channel's epidemic. The
 * fanout and the anti-entropy of the peers that have the channel route around it, unless it is the
 * only path between them.
 */
import { InputError } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import { type PeerName, peerNameFromBytes, peerNameToBytes } from '../../common/types.js';
import { GOSSIP_INTERVAL_MS, GOSSIP_RELAY_TTL } from '../constants.js';
import { CHANNEL_MAX_CHARS } from '../protocol.js';
import type { Routes } from '../routes.js';
import type { Gossip, Gossiper } from './gossip.js';

// ---- Constants (candidates for router/constants.ts) ----

/** ENVELOPE_GOSSIP and ENVELOPE_UNICAST are the first byte of a channel payload. */
export const ENVELOPE_GOSSIP = 1;
export const ENVELOPE_UNICAST = 2;
/** GOSSIP_HEADER_LEN and UNICAST_HEADER_LEN are the envelope lengths before the body. */
export const GOSSIP_HEADER_LEN = 7;
export const UNICAST_HEADER_LEN = 14;

/** gossipFanout is how many neighbours a delta goes to when `knownPeers` peers are known: ceil(log2(N+1)) + 1. */
export function gossipFanout(knownPeers: number): number {
  return Math.ceil(Math.log2(Math.max(1, knownPeers) + 1)) + 1;
}

// ---- Statistics ----

/** ChannelDrops counts received or outgoing messages that went nowhere, by reason. */
export interface ChannelDrops {
  /** malformed: an envelope too short or of an unknown kind. */
  malformed: number;
  /** refused: the gossiper threw (bad contents). */
  refused: number;
  /** noRoute: a unicast whose destination we cannot reach. */
  noRoute: number;
  /** ttlExpired: a unicast that ran out of hops (a routing loop while routes settle). */
  ttlExpired: number;
  /** unknownChannel: gossip, or a unicast for us, on a channel this peer does not have. */
  unknownChannel: number;
}

/** ChannelStats are live counters of one channel; read them, never write them. Bytes are channel payload bytes. */
export interface ChannelStats {
  messagesSent: number;
  bytesSent: number;
  messagesReceived: number;
  bytesReceived: number;
  /** relayed counts unicasts passed on for other peers. */
  relayed: number;
  readonly drops: ChannelDrops;
}

/** newChannelStats returns zeroed counters. */
export function newChannelStats(): ChannelStats {
  return {
    messagesSent: 0,
    bytesSent: 0,
    messagesReceived: 0,
    bytesReceived: 0,
    relayed: 0,
    drops: { malformed: 0, refused: 0, noRoute: 0, ttlExpired: 0, unknownChannel: 0 },
  };
}

// ---- Options ----

/** GossipTransport is what a channel needs from its owner (the router, or a simulator). */
export interface GossipTransport {
  /** local is our own peer name. */
  readonly local: PeerName;
  /**
   * send queues one channel payload on the control connection to a neighbour; it drops silently
   * if there is none. The payload may be shared between several sends: never modify it.
   */
  readonly send: (neighbour: PeerName, channel: string, payload: Uint8Array) => void;
  /** neighbours lists the peers with a live control connection (established data path or not). */
  readonly neighbours: () => readonly PeerName[];
  /** routes returns the current routes: unicast next hops, broadcast-tree children, and N (reachable peers) for the fanout. */
  readonly routes: () => Routes;
  /** random returns a number in [0, 1) (seeded in tests and the simulator). */
  readonly random: () => number;
  readonly log: Logger;
}

/** GossipChannelOptions configure one {@link GossipChannel}. */
export interface GossipChannelOptions extends GossipTransport {
  /** name is the channel name, 1..CHANNEL_MAX_CHARS characters. */
  readonly name: string;
  readonly gossiper: Gossiper;
}

// ---- Envelope and relaying ----

function wrapGossip(origin: PeerName, body: Uint8Array): Uint8Array {
  const env = new Uint8Array(GOSSIP_HEADER_LEN + body.length);
  env[0] = ENVELOPE_GOSSIP;
  peerNameToBytes(origin, env, 1);
  env.set(body, GOSSIP_HEADER_LEN);
  return env;
}

function wrapUnicast(src: PeerName, dst: PeerName, body: Uint8Array): Uint8Array {
  const env = new Uint8Array(UNICAST_HEADER_LEN + body.length);
  env[0] = ENVELOPE_UNICAST;
  env[1] = GOSSIP_RELAY_TTL;
  peerNameToBytes(src, env, 2);
  peerNameToBytes(dst, env, 8);
  env.set(body, UNICAST_HEADER_LEN);
  return env;
}

/** nextHop is the neighbour to send to for `dst`: itself when it is a neighbour, else the unicast route. */
function nextHop(t: GossipTransport, dst: PeerName): PeerName | undefined {
  return t.neighbours().includes(dst) ? dst : t.routes().unicast.get(dst);
}

function countSend(stats: ChannelStats, env: Uint8Array): void {
  stats.messagesSent++;
  stats.bytesSent += env.length;
}

/** relay passes a unicast envelope for another peer one hop on, with one hop less to live. */
function relay(t: GossipTransport, channel: string, env: Uint8Array, stats: ChannelStats): void {
  const ttl = env[1]!;
  if (ttl <= 1) {
    stats.drops.ttlExpired++;
    return;
  }
  const hop = nextHop(t, peerNameFromBytes(env, 8));
  if (hop === undefined) {
    stats.drops.noRoute++;
    return;
  }
  const out = env.slice();
  out[1] = ttl - 1;
  stats.relayed++;
  countSend(stats, out);
  t.send(hop, channel, out);
}

/** envelopeKind returns the kind of a well-formed envelope, or undefined. */
function envelopeKind(env: Uint8Array): number | undefined {
  if (env[0] === ENVELOPE_GOSSIP && env.length > GOSSIP_HEADER_LEN) return ENVELOPE_GOSSIP;
  if (env[0] === ENVELOPE_UNICAST && env.length >= UNICAST_HEADER_LEN) return ENVELOPE_UNICAST;
  return undefined;
}

/** pickRandom returns k distinct items chosen uniformly (a partial Fisher–Yates on a copy). */
function pickRandom<T>(items: readonly T[], k: number, random: () => number): T[] {
  const a = [...items];
  const n = Math.max(0, Math.min(k, a.length));
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(random() * (a.length - i));
    const tmp = a[i]!;
    a[i] = a[j]!;
    a[j] = tmp;
  }
  a.length = n;
  return a;
}

// ---- Channel ----

/**
 * GossipChannel is one named channel: it implements {@link Gossip} for its subsystem and feeds
 * received payloads to that subsystem's {@link Gossiper}. Synchronous; no timers of its own (the
 * owner calls `tick()` every GOSSIP_INTERVAL_MS).
 */
export class GossipChannel implements Gossip {
  /** name is the channel name. */
  readonly name: string;
  /** stats are this channel's live counters. */
  readonly stats: ChannelStats = newChannelStats();
  private readonly t: GossipChannelOptions;
  private readonly log: Logger;

  /** Throws InputError for a channel name outside 1..CHANNEL_MAX_CHARS characters. */
  constructor(opts: GossipChannelOptions) {
    if (opts.name.length === 0 || opts.name.length > CHANNEL_MAX_CHARS) {
      throw new InputError(`invalid gossip channel name "${opts.name}": want 1-${CHANNEL_MAX_CHARS} characters`);
    }
    this.name = opts.name;
    this.t = opts;
    this.log = opts.log.child({ channel: opts.name });
  }

  /**
   * broadcast sends a delta to our broadcast-tree children and random neighbours up to fanout(N);
   * an empty delta sends nothing. `include` names neighbours that must be among them: a change to
   * our connection with P must reach P, which may have no other neighbour to hear it from.
   */
  broadcast(delta: Uint8Array, include: readonly PeerName[] = []): void {
    if (delta.length > 0) this.spread(wrapGossip(this.t.local, delta), this.t.local, undefined, include);
  }

  /** unicast sends a payload to one peer by route (to ourselves: delivered at once); false when unreachable. */
  unicast(dst: PeerName, payload: Uint8Array): boolean {
    if (dst === this.t.local) {
      this.t.gossiper.onGossipUnicast(dst, payload);
      return true;
    }
    const hop = nextHop(this.t, dst);
    if (hop === undefined) {
      this.stats.drops.noRoute++;
      return false;
    }
    this.sendTo(hop, wrapUnicast(this.t.local, dst, payload));
    return true;
  }

  /**
   * receive handles a payload of this channel from neighbour `from`: merges gossip and passes on
   * what was new to fanout(N) of its other neighbours; delivers or relays a unicast. Never throws:
   * a bad payload is counted (and logged) and goes no further.
   *
   * @param payload borrowed: valid until the call returns.
   */
  receive(from: PeerName, payload: Uint8Array): void {
    this.stats.messagesReceived++;
    this.stats.bytesReceived += payload.length;
    const kind = envelopeKind(payload);
    if (kind === ENVELOPE_GOSSIP) {
      const delta = this.deliver(from, payload.subarray(GOSSIP_HEADER_LEN), false);
      if (delta !== undefined && delta.length > 0) {
        const origin = peerNameFromBytes(payload, 1);
        this.spread(wrapGossip(origin, delta), origin, from);
      }
    } else if (kind === ENVELOPE_UNICAST) {
      if (peerNameFromBytes(payload, 8) === this.t.local) {
        this.deliver(peerNameFromBytes(payload, 2), payload.subarray(UNICAST_HEADER_LEN), true);
      } else relay(this.t, this.name, payload, this.stats);
    } else this.stats.drops.malformed++;
  }

  /** onNewNeighbour pushes our full state to a peer we just connected to. */
  onNewNeighbour(peer: PeerName): void {
    this.pushFullState(peer);
  }

  /** tick pushes our full state to one random neighbour (anti-entropy). */
  tick(): void {
    const [peer] = pickRandom(this.t.neighbours(), 1, this.t.random);
    if (peer !== undefined) this.pushFullState(peer);
  }

  private pushFullState(peer: PeerName): void {
    const state = this.t.gossiper.fullState();
    if (state.length > 0) this.sendTo(peer, wrapGossip(this.t.local, state));
  }

  /**
   * spread sends an envelope (never back to `except`) to: our children in `origin`'s broadcast
   * tree and the neighbours in `include`, then random other neighbours until fanout(N) in all.
   */
  private spread(
    env: Uint8Array,
    origin: PeerName,
    except: PeerName | undefined,
    include: readonly PeerName[] = [],
  ): void {
    const neighbours = this.t.neighbours();
    const routes = this.t.routes();
    const must = new Set<PeerName>();
    for (const n of [...(routes.broadcast.get(origin) ?? []), ...include]) {
      if (n !== except && neighbours.includes(n)) must.add(n);
    }
    const others = neighbours.filter((n) => n !== except && !must.has(n));
    for (const n of must) this.sendTo(n, env);
    for (const n of pickRandom(others, gossipFanout(routes.reachable.size) - must.size, this.t.random)) {
      this.sendTo(n, env);
    }
  }

  private sendTo(peer: PeerName, env: Uint8Array): void {
    countSend(this.stats, env);
    this.t.send(peer, this.name, env);
  }

  /** deliver hands a body to the gossiper, counting and logging a refusal. */
  private deliver(src: PeerName, body: Uint8Array, unicast: boolean): Uint8Array | undefined {
    try {
      if (!unicast) return this.t.gossiper.onGossip(src, body);
      this.t.gossiper.onGossipUnicast(src, body);
    } catch (err) {
      this.stats.drops.refused++;
      this.log.warn('gossip refused', {
        peer: src,
        reason: err instanceof Error ? err.message : String(err),
        count: this.stats.drops.refused,
      });
    }
    return undefined;
  }
}

// ---- Mux ----

/** GossipMuxOptions configure a {@link GossipMux}: the transport its channels share. */
export type GossipMuxOptions = GossipTransport;

/**
 * GossipMux owns this peer's channels by name and is what the router talks to: every received
 * `{t:'gossip'}` message goes to `receive`, every new control connection to `onNewNeighbour`, and
 * `tick()` runs every GOSSIP_INTERVAL_MS. Traffic on channels this peer does not have is relayed
 * (unicast for others) or dropped (see the module comment) and counted in `unknown`.
 */
export class GossipMux {
  /** unknown counts traffic on channels this peer does not have. */
  readonly unknown: ChannelStats = newChannelStats();
  private readonly t: GossipMuxOptions;
  private readonly byName = new Map<string, GossipChannel>();

  constructor(opts: GossipMuxOptions) {
    this.t = opts;
  }

  /** addChannel creates a channel for a gossiper. Throws InputError for a name in use or invalid. */
  addChannel(name: string, gossiper: Gossiper): GossipChannel {
    if (this.byName.has(name)) throw new InputError(`gossip channel "${name}" already exists`);
    const ch = new GossipChannel({ ...this.t, name, gossiper });
    this.byName.set(name, ch);
    return ch;
  }

  /** channel returns a channel by name. */
  channel(name: string): GossipChannel | undefined {
    return this.byName.get(name);
  }

  /** channels lists every channel, in creation order. */
  channels(): GossipChannel[] {
    return [...this.byName.values()];
  }

  /**
   * receive dispatches one received gossip message. Never throws.
   *
   * @param payload borrowed: valid until the call returns.
   */
  receive(from: PeerName, channel: string, payload: Uint8Array): void {
    const ch = this.byName.get(channel);
    if (ch !== undefined) {
      ch.receive(from, payload);
      return;
    }
    const s = this.unknown;
    s.messagesReceived++;
    s.bytesReceived += payload.length;
    const kind = envelopeKind(payload);
    if (kind === ENVELOPE_UNICAST && peerNameFromBytes(payload, 8) !== this.t.local) relay(this.t, channel, payload, s);
    else if (kind === undefined) s.drops.malformed++;
    else s.drops.unknownChannel++;
  }

  /** onNewNeighbour pushes every channel's full state to a newly connected peer. */
  onNewNeighbour(peer: PeerName): void {
    for (const ch of this.byName.values()) ch.onNewNeighbour(peer);
  }

  /** tick runs every channel's anti-entropy round. */
  tick(): void {
    for (const ch of this.byName.values()) ch.tick();
  }
}

export { GOSSIP_INTERVAL_MS, GOSSIP_RELAY_TTL };
