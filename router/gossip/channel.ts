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
 *  announce | 3 | ( origin peer (6) | id (idBytes) )+           lazy push: "I have these versions"
 *  graft    | 4 | ( origin peer (6) | id (idBytes) )+           "send me these, I lack them"
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
 * Lazy push (Plumtree: Leitão, Pereira, Rodrigues, "Epidemic Broadcast Trees", SRDS 2007), for a
 * gossiper that names its versions by ids ({@link Announcing}) on a channel with a clock: the tree
 * children get the delta itself (eager push), the random part only its ids, batched per
 * neighbour for LAZY_ANNOUNCE_DELAY_MS (one announcement per neighbour however many deltas came
 * meanwhile). A peer told of an id it does not hold waits GRAFT_DELAY_MS for the tree to bring it,
 * then asks (graft) the first neighbour that announced it, which answers with the delta (a gossip
 * envelope with the announced origin, so the answer goes on along that origin's tree); unanswered
 * for GRAFT_RETRY_MS, it asks the next announcer. So a change costs about one delta per peer plus
 * a few ids per neighbour, and where the trees of routers with slightly different views miss a
 * peer (a peer that has just died, say), it is repaired within milliseconds, not by anti-entropy.
 * Without a clock (a harness) or an announcing gossiper, the random part gets the delta itself.
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
import { concatBytes } from '../../common/bytes.js';
import type { Clock, Timer } from '../../common/clock.js';
import { InputError } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import { type PeerName, peerNameFromBytes, peerNameToBytes } from '../../common/types.js';
import { GOSSIP_INTERVAL_MS, GOSSIP_RELAY_TTL } from '../constants.js';
import { CHANNEL_MAX_CHARS } from '../protocol.js';
import type { Routes } from '../routes.js';
import type { Announcing, Gossip, Gossiper } from './gossip.js';

// ---- Constants (candidates for router/constants.ts) ----

/** ENVELOPE_GOSSIP and ENVELOPE_UNICAST are the first byte of a channel payload. */
export const ENVELOPE_GOSSIP = 1;
export const ENVELOPE_UNICAST = 2;
/** ENVELOPE_ANNOUNCE and ENVELOPE_GRAFT are the lazy-push envelopes: ids we have, ids we want. */
export const ENVELOPE_ANNOUNCE = 3;
export const ENVELOPE_GRAFT = 4;
/** GOSSIP_HEADER_LEN and UNICAST_HEADER_LEN are the envelope lengths before the body. */
export const GOSSIP_HEADER_LEN = 7;
export const UNICAST_HEADER_LEN = 14;
/** LAZY_HEADER_LEN is the envelope length before the first (origin, id) item of an announce or graft. */
export const LAZY_HEADER_LEN = 1;
/** LAZY_ORIGIN_LEN is the origin's part of each (origin, id) item. */
const LAZY_ORIGIN_LEN = 6;
/**
 * LAZY_ANNOUNCE_DELAY_MS batches announcements: ids for a neighbour wait this long for more, so
 * a burst of deltas costs one announcement per neighbour. Short next to GRAFT_DELAY_MS.
 */
export const LAZY_ANNOUNCE_DELAY_MS = 5;
/**
 * GRAFT_DELAY_MS is how long a peer told of an id it lacks waits for the broadcast tree to bring
 * it before asking for it: a few hops' latency, so that a graft is a repair, not a race.
 */
export const GRAFT_DELAY_MS = 20;
/** GRAFT_RETRY_MS: a graft unanswered this long goes to the next neighbour that announced the id. */
export const GRAFT_RETRY_MS = 100;
/** LAZY_WANTED_MAX bounds the ids a channel waits for (an announcement beyond it is dropped, counted as overflow). */
export const LAZY_WANTED_MAX = 65_536;

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
  /** overflow: announced ids not waited for because LAZY_WANTED_MAX are already. */
  overflow: number;
}

/** ChannelStats are live counters of one channel; read them, never write them. Bytes are channel payload bytes. */
export interface ChannelStats {
  messagesSent: number;
  bytesSent: number;
  messagesReceived: number;
  bytesReceived: number;
  /** relayed counts unicasts passed on for other peers. */
  relayed: number;
  /** announced and grafted count the ids we sent in announcements and in grafts (lazy push). */
  announced: number;
  grafted: number;
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
    announced: 0,
    grafted: 0,
    drops: { malformed: 0, refused: 0, noRoute: 0, ttlExpired: 0, unknownChannel: 0, overflow: 0 },
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
  /** clock, if given, times lazy push (announcement batches, grafts); without one every send is eager. */
  readonly clock?: Clock;
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
  if ((env[0] === ENVELOPE_ANNOUNCE || env[0] === ENVELOPE_GRAFT) && env.length > LAZY_HEADER_LEN) return env[0];
  return undefined;
}

/** lazyEnvelope frames (origin, id) items as an announce or graft envelope. */
function lazyEnvelope(kind: number, items: readonly Uint8Array[]): Uint8Array {
  let len = LAZY_HEADER_LEN;
  for (const c of items) len += c.length;
  const env = new Uint8Array(len);
  env[0] = kind;
  let off = LAZY_HEADER_LEN;
  for (const c of items) {
    env.set(c, off);
    off += c.length;
  }
  return env;
}

/** bytesKey is a Map key for a byte string (each byte one char). */
function bytesKey(b: Uint8Array, start: number, end: number): string {
  return Buffer.from(b.buffer, b.byteOffset + start, end - start).toString('latin1');
}

/** Want is an id we were told of and lack: who announced it, whom we asked, when to look again. */
interface Want {
  readonly key: string;
  /** item is the (origin, id) item as announced (our own copy). */
  readonly item: Uint8Array;
  readonly announcers: PeerName[];
  /** asked counts the announcers asked so far. */
  asked: number;
  due: number;
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
 * received payloads to that subsystem's {@link Gossiper}. Synchronous; its only timers are lazy
 * push's, on the transport's clock (the owner calls `tick()` every GOSSIP_INTERVAL_MS, and
 * `close()` when it stops).
 */
export class GossipChannel implements Gossip {
  /** name is the channel name. */
  readonly name: string;
  /** stats are this channel's live counters. */
  readonly stats: ChannelStats = newChannelStats();
  private readonly t: GossipChannelOptions;
  private readonly log: Logger;
  /** lazy is the gossiper's lazy-push side when the channel has a clock to time it (else undefined: all eager). */
  private readonly lazy: Announcing | undefined;
  /** itemBytes is the length of one (origin, id) item of an announce or graft. */
  private readonly itemBytes: number;
  /** announceTo holds, per neighbour, the (origin, id) items waiting for the next announcement. */
  private readonly announceTo = new Map<PeerName, Uint8Array[]>();
  private announceTimer: Timer | undefined;
  /** wanted are the ids announced to us that we lack, by id; wantQueue orders them by due time. */
  private readonly wanted = new Map<string, Want>();
  private wantQueue: Want[] = [];
  private wantHead = 0;
  private graftTimer: Timer | undefined;
  private graftTimerAt = Number.POSITIVE_INFINITY;

  /** Throws InputError for a channel name outside 1..CHANNEL_MAX_CHARS characters. */
  constructor(opts: GossipChannelOptions) {
    if (opts.name.length === 0 || opts.name.length > CHANNEL_MAX_CHARS) {
      throw new InputError(`invalid gossip channel name "${opts.name}": want 1-${CHANNEL_MAX_CHARS} characters`);
    }
    this.name = opts.name;
    this.t = opts;
    this.log = opts.log.child({ channel: opts.name });
    const lazy = opts.gossiper.announcing;
    if (lazy !== undefined && !(Number.isInteger(lazy.idBytes) && lazy.idBytes >= 1)) {
      throw new InputError(`gossip channel "${opts.name}": ids must be at least 1 byte, not ${lazy.idBytes}`);
    }
    this.lazy = opts.clock === undefined ? undefined : lazy;
    this.itemBytes = LAZY_ORIGIN_LEN + (lazy?.idBytes ?? 0);
  }

  /**
   * broadcast sends a delta to our broadcast-tree children and random neighbours up to fanout(N);
   * an empty delta sends nothing. `include` names neighbours that must be among them: a change to
   * our connection with P must reach P, which may have no other neighbour to hear it from.
   */
  broadcast(delta: Uint8Array, include: readonly PeerName[] = []): void {
    if (delta.length > 0) this.spread(delta, this.t.local, undefined, include);
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
      if (delta !== undefined && delta.length > 0) this.spread(delta, peerNameFromBytes(payload, 1), from);
    } else if (kind === ENVELOPE_UNICAST) {
      if (peerNameFromBytes(payload, 8) === this.t.local) {
        this.deliver(peerNameFromBytes(payload, 2), payload.subarray(UNICAST_HEADER_LEN), true);
      } else relay(this.t, this.name, payload, this.stats);
    } else if (kind === ENVELOPE_ANNOUNCE || kind === ENVELOPE_GRAFT) {
      const lazy = this.t.gossiper.announcing;
      if (lazy === undefined || (payload.length - LAZY_HEADER_LEN) % this.itemBytes !== 0) {
        this.stats.drops.malformed++;
        return;
      }
      try {
        if (kind === ENVELOPE_ANNOUNCE) this.onAnnounce(from, payload, lazy);
        else this.onGraft(from, payload, lazy);
      } catch (err) {
        this.refused(from, err);
      }
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
   * spread passes a delta from `origin` on (never back to `except`): the delta itself to our
   * children in `origin`'s broadcast tree and the neighbours in `include`, then to random other
   * neighbours until fanout(N) in all — those get only its ids when the channel is lazy.
   */
  private spread(
    delta: Uint8Array,
    origin: PeerName,
    except: PeerName | undefined,
    include: readonly PeerName[] = [],
  ): void {
    const env = wrapGossip(origin, delta);
    const neighbours = this.t.neighbours();
    const routes = this.t.routes();
    const must = new Set<PeerName>();
    for (const n of [...(routes.broadcast.get(origin) ?? []), ...include]) {
      if (n !== except && neighbours.includes(n)) must.add(n);
    }
    const others = neighbours.filter((n) => n !== except && !must.has(n));
    for (const n of must) this.sendTo(n, env);
    const random = pickRandom(others, gossipFanout(routes.reachable.size) - must.size, this.t.random);
    const lazy = this.lazy;
    if (lazy === undefined) {
      for (const n of random) this.sendTo(n, env);
      return;
    }
    if (random.length === 0) return;
    const items = this.items(origin, lazy.ids(delta));
    if (items === undefined) return;
    for (const n of random) {
      const queued = this.announceTo.get(n);
      if (queued === undefined) this.announceTo.set(n, [items]);
      else queued.push(items);
    }
    this.announceTimer ??= this.t.clock!.setTimeout(() => this.flushAnnouncements(), LAZY_ANNOUNCE_DELAY_MS).unref();
  }

  /** items prefixes each id with `origin`: the (origin, id) items of an announcement; undefined for none. */
  private items(origin: PeerName, ids: Uint8Array): Uint8Array | undefined {
    const idBytes = this.itemBytes - LAZY_ORIGIN_LEN;
    const n = Math.floor(ids.length / idBytes);
    if (n === 0) return undefined;
    const out = new Uint8Array(n * this.itemBytes);
    for (let i = 0; i < n; i++) {
      const at = i * this.itemBytes;
      peerNameToBytes(origin, out, at);
      out.set(ids.subarray(i * idBytes, (i + 1) * idBytes), at + LAZY_ORIGIN_LEN);
    }
    return out;
  }

  /** flushAnnouncements sends each neighbour one announcement of everything queued for it. */
  private flushAnnouncements(): void {
    this.announceTimer = undefined;
    const neighbours = this.t.neighbours();
    for (const [n, items] of this.announceTo) {
      if (!neighbours.includes(n)) continue;
      const env = lazyEnvelope(ENVELOPE_ANNOUNCE, items);
      this.stats.announced += (env.length - LAZY_HEADER_LEN) / this.itemBytes;
      this.sendTo(n, env);
    }
    this.announceTo.clear();
  }

  /**
   * onAnnounce notes the ids of an announcement that we lack (who announced them): each is asked
   * for GRAFT_DELAY_MS from now unless the tree brings it first. Throws ProtocolError (the
   * gossiper refused an id): ids before it stay noted.
   */
  private onAnnounce(from: PeerName, env: Uint8Array, lazy: Announcing): void {
    if (this.lazy === undefined) return; // no clock: we never graft, anti-entropy repairs
    try {
      this.noteWanted(from, env, lazy);
    } finally {
      this.armGraftTimer();
    }
  }

  private noteWanted(from: PeerName, env: Uint8Array, lazy: Announcing): void {
    const now = this.t.clock!.now();
    for (let off = LAZY_HEADER_LEN; off < env.length; off += this.itemBytes) {
      const idAt = off + LAZY_ORIGIN_LEN;
      if (lazy.holds(env, idAt)) continue;
      const key = bytesKey(env, idAt, off + this.itemBytes);
      const known = this.wanted.get(key);
      if (known !== undefined) {
        if (!known.announcers.includes(from)) known.announcers.push(from);
        continue;
      }
      if (this.wanted.size >= LAZY_WANTED_MAX) {
        this.stats.drops.overflow++;
        continue;
      }
      const w: Want = {
        key,
        item: env.slice(off, off + this.itemBytes),
        announcers: [from],
        asked: 0,
        due: now + GRAFT_DELAY_MS,
      };
      this.wanted.set(key, w);
      this.wantQueue.push(w);
    }
  }

  /** armGraftTimer sets the graft timer for the first wanted id due, unless one is set for then. */
  private armGraftTimer(): void {
    const first = this.wantQueue[this.wantHead];
    if (first === undefined || this.graftTimerAt <= first.due) return;
    const clock = this.t.clock!;
    clock.clearTimeout(this.graftTimer);
    this.graftTimerAt = first.due;
    this.graftTimer = clock.setTimeout(() => this.graft(), Math.max(0, first.due - clock.now())).unref();
  }

  /**
   * graft asks for the wanted ids that are due and still lacking: each from the next announcer
   * still a neighbour (one graft per neighbour), again GRAFT_RETRY_MS later from the one after;
   * once every announcer was asked, anti-entropy is left to repair it.
   */
  private graft(): void {
    this.graftTimer = undefined;
    this.graftTimerAt = Number.POSITIVE_INFINITY;
    const lazy = this.lazy!;
    const now = this.t.clock!.now();
    const neighbours = this.t.neighbours();
    const asks = new Map<PeerName, Uint8Array[]>();
    const again: Want[] = [];
    while (this.wantHead < this.wantQueue.length) {
      const w = this.wantQueue[this.wantHead]!;
      if (w.due > now) break;
      this.wantHead++;
      if (lazy.holds(w.item, LAZY_ORIGIN_LEN)) {
        this.wanted.delete(w.key);
        continue;
      }
      let to: PeerName | undefined;
      while (to === undefined && w.asked < w.announcers.length) {
        const a = w.announcers[w.asked++]!;
        if (neighbours.includes(a)) to = a;
      }
      if (to === undefined) {
        this.wanted.delete(w.key);
        continue;
      }
      const list = asks.get(to);
      if (list === undefined) asks.set(to, [w.item]);
      else list.push(w.item);
      w.due = now + GRAFT_RETRY_MS;
      again.push(w);
    }
    if (this.wantHead > 1024 && this.wantHead * 2 > this.wantQueue.length) {
      this.wantQueue = this.wantQueue.slice(this.wantHead);
      this.wantHead = 0;
    }
    for (const w of again) this.wantQueue.push(w);
    for (const [to, items] of asks) {
      this.stats.grafted += items.length;
      this.sendTo(to, lazyEnvelope(ENVELOPE_GRAFT, items));
    }
    this.armGraftTimer();
  }

  /** onGraft answers a graft: per origin, a gossip envelope of what we hold of the ids. Throws ProtocolError. */
  private onGraft(from: PeerName, env: Uint8Array, lazy: Announcing): void {
    const byOrigin = new Map<string, { origin: PeerName; ids: Uint8Array[] }>();
    for (let off = LAZY_HEADER_LEN; off < env.length; off += this.itemBytes) {
      const key = bytesKey(env, off, off + LAZY_ORIGIN_LEN);
      const id = env.subarray(off + LAZY_ORIGIN_LEN, off + this.itemBytes);
      const group = byOrigin.get(key);
      if (group === undefined) byOrigin.set(key, { origin: peerNameFromBytes(env, off), ids: [id] });
      else group.ids.push(id);
    }
    for (const { origin, ids } of byOrigin.values()) {
      const delta = lazy.answer(concatBytes(ids));
      if (delta.length > 0) this.sendTo(from, wrapGossip(origin, delta));
    }
  }

  /** close cancels lazy push's timers and forgets what they were for (the owner stopped). */
  close(): void {
    const clock = this.t.clock;
    clock?.clearTimeout(this.announceTimer);
    clock?.clearTimeout(this.graftTimer);
    this.announceTimer = undefined;
    this.graftTimer = undefined;
    this.graftTimerAt = Number.POSITIVE_INFINITY;
    this.announceTo.clear();
    this.wanted.clear();
    this.wantQueue = [];
    this.wantHead = 0;
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
      this.refused(src, err);
    }
    return undefined;
  }

  /** refused counts and logs a payload the gossiper refused. */
  private refused(src: PeerName, err: unknown): void {
    this.stats.drops.refused++;
    this.log.warn('gossip refused', {
      peer: src,
      reason: err instanceof Error ? err.message : String(err),
      count: this.stats.drops.refused,
    });
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

  /** close cancels every channel's timers (the owner stopped); the channels stay usable. */
  close(): void {
    for (const ch of this.byName.values()) ch.close();
  }
}

export { GOSSIP_INTERVAL_MS, GOSSIP_RELAY_TTL };
