/**
 * Ipam ties the {@link Ring} and the {@link Allocator} of one peer to the 'ipam' gossip channel.
 *
 * Protocol (one MessagePack array per message, names as 6 raw bytes, addresses as u32):
 *
 * ```
 * ring          [ 1, 1, [ rangeAddr u32, prefix, seedId u32,
 *                        [ [ start u32, owner bin6, version, free ], ... ] ] ]   gossip, and unicast reply
 * space request [ 1, 2, wantSize ]                                                 unicast to a donor
 * seed records  [ 1, 3, [ rangeAddr u32, prefix ],
 *                     [ [ name bin6, epoch, counter, flags ], ... ] ]              gossip while unseeded
 * ```

 * Seed records (flags: 1 = may seed, 2 = waits for a seed) are what an unseeded router gossips
 * instead of a ring, so that the {@link SeedElection} picks one seeder everywhere alike.
 *
 * The whole ring is gossiped (it is its own delta: merging it twice changes nothing). A peer with no
 * free space unicasts a space request to the peer advertising the most free addresses (the sum of
 * the `free` hints of its tokens); the donor carves an aligned block, bumps the versions and
 * answers with its ring by unicast (and broadcasts it). A donor with nothing to give answers with
 * its ring too, so the requester learns its hints are 0 and asks the next one. No timers here: the
 * owner retries {@link Ipam.allocate} when `onChange` fires.
 */
import { Packr, Unpackr } from 'msgpackr';
import { z } from 'zod';
import { ProtocolError, WeftError } from '../../common/errors.js';
import { type Cidr, type IPv4, type PeerName, peerNameFromBytes, peerNameToBytes } from '../../common/types.js';
import type { Gossip, Gossiper } from '../gossip/gossip.js';
import type { Allocator } from './allocator.js';
import { RING_TOKENS_MAX, type RingMergeResult, type RingState, ringProblem, type Token } from './ring.js';
import { SEED_RECORDS_MAX, type SeedElection, type SeedRecord } from './seed-election.js';

/** IPAM_CHANNEL is the gossip channel name. */
export const IPAM_CHANNEL = 'ipam';
/** IPAM_FORMAT is the first element of every message. */
export const IPAM_FORMAT = 1;
export const KIND_RING = 1;
export const KIND_SPACE_REQUEST = 2;
export const KIND_SEED_RECORDS = 3;
const FLAG_SEED_CAPABLE = 1;
const FLAG_WAITING = 2;
/**
 * DEFAULT_WANT is the block size asked for when out of space: as much as the donor will give
 * (it gives at most half of its free space), so a new peer gets a large share at once and asks
 * again only rarely, and the ring stays a few tokens per peer.
 */
export const DEFAULT_WANT = 2 ** 32;

const packr = new Packr({ useRecords: false, moreTypes: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, structuredClone: false, moreTypes: false });

const u32 = z.int().min(0).max(0xffffffff);
const wireName = z.custom<Uint8Array>((v) => v instanceof Uint8Array && v.length === 6, 'want a 6-byte peer name');
const WireToken = z.tuple([u32, wireName, z.int().min(1).max(Number.MAX_SAFE_INTEGER), u32]);
const WireRing = z.tuple([u32, z.int().min(0).max(32), u32, z.array(WireToken).max(RING_TOKENS_MAX)]);
const WireSeedRecord = z.tuple([
  wireName,
  z.int().min(0).max(Number.MAX_SAFE_INTEGER),
  z.int().min(0).max(Number.MAX_SAFE_INTEGER),
  z.int().min(0).max(3),
]);
const WireMessage = z.union([
  z.tuple([z.literal(IPAM_FORMAT), z.literal(KIND_RING), WireRing]),
  z.tuple([
    z.literal(IPAM_FORMAT),
    z.literal(KIND_SPACE_REQUEST),
    z
      .int()
      .min(1)
      .max(2 ** 32),
  ]),
  z.tuple([
    z.literal(IPAM_FORMAT),
    z.literal(KIND_SEED_RECORDS),
    z.tuple([u32, z.int().min(0).max(32)]),
    z.array(WireSeedRecord).max(SEED_RECORDS_MAX),
  ]),
]);

/** IpamMessage is a decoded message. */
export type IpamMessage =
  | { kind: 'ring'; ring: RingState }
  | { kind: 'space-request'; want: number }
  | { kind: 'seed-records'; range: Cidr; records: SeedRecord[] };

/** encodeMessage writes a message in the wire form. */
export function encodeMessage(m: IpamMessage): Uint8Array {
  if (m.kind === 'space-request') return packr.pack([IPAM_FORMAT, KIND_SPACE_REQUEST, m.want]).slice();
  if (m.kind === 'seed-records') {
    const recs = m.records.map((r) => {
      const b = new Uint8Array(6);
      peerNameToBytes(r.name, b, 0);
      return [b, r.epoch, r.counter, (r.seedCapable ? FLAG_SEED_CAPABLE : 0) | (r.waiting ? FLAG_WAITING : 0)];
    });
    return packr.pack([IPAM_FORMAT, KIND_SEED_RECORDS, [m.range.addr, m.range.prefix], recs]).slice();
  }
  const r = m.ring;
  const toks = r.tokens.map((t) => {
    const b = new Uint8Array(6);
    peerNameToBytes(t.owner, b, 0);
    return [t.start, b, t.version, t.free];
  });
  return packr.pack([IPAM_FORMAT, KIND_RING, [r.range.addr, r.range.prefix, r.seedId, toks]]).slice();
}

/** decodeMessage validates and decodes a message. Throws ProtocolError for anything malformed or out of bounds. */
export function decodeMessage(bytes: Uint8Array): IpamMessage {
  let value: unknown;
  try {
    value = unpackr.unpack(bytes);
  } catch (err) {
    throw new ProtocolError(`undecodable ipam message: ${err instanceof Error ? err.message.slice(0, 120) : 'error'}`, {
      cause: err,
    });
  }
  const r = WireMessage.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new ProtocolError(`invalid ipam message: ${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'bad value'}`);
  }
  const m = r.data;
  if (m[1] === KIND_SPACE_REQUEST) return { kind: 'space-request', want: m[2] };
  if (m[1] === KIND_SEED_RECORDS) {
    const records: SeedRecord[] = m[3].map(([name, epoch, counter, flags]) => ({
      name: peerNameFromBytes(name, 0),
      epoch,
      counter,
      seedCapable: (flags & FLAG_SEED_CAPABLE) !== 0,
      waiting: (flags & FLAG_WAITING) !== 0,
    }));
    return { kind: 'seed-records', range: { addr: m[2][0] as IPv4, prefix: m[2][1] }, records };
  }
  const [addr, prefix, seedId, toks] = m[2];
  const tokens: Token[] = toks.map(([start, owner, version, free]) => ({
    start: start as IPv4,
    owner: peerNameFromBytes(owner, 0),
    version,
    free,
  }));
  const ring: RingState = { range: { addr: addr as IPv4, prefix }, seedId, tokens };
  const problem = ringProblem(ring);
  if (problem !== undefined) throw new ProtocolError(`invalid ipam ring: ${problem}`);
  return { kind: 'ring', ring };
}

/** IpamEvents are the owner's hooks: persist before gossip, report conflicts and lost space. */
export interface IpamEvents {
  /**
   * onChange fires after our ring or allocations changed (persist, then retry pending
   * allocations); `local` says the change is ours (to be gossiped). It may throw for a local
   * change that cannot be saved: the change is then undone and nothing is gossiped.
   */
  onChange?(local: boolean): void;
  /** onConflict reports impossible states and space taken from us (with the allocations it orphaned). */
  onConflict?(message: string): void;
  /** onSeedRecords fires after seed records from peers were new to us (the owner re-runs the election). */
  onSeedRecords?(fresh: readonly SeedRecord[]): void;
}

/** AllocateResult: an address, or none yet (`requested` names the peer asked for space), or none anywhere. */
export type AllocateResult = { readonly addr: IPv4 } | { readonly pending: PeerName } | { readonly full: true };

/** Ipam is one peer's IPAM: local allocation from owned space, and space requests to others. */
export class Ipam {
  readonly allocator: Allocator;
  private readonly tried = new Set<PeerName>();

  constructor(
    allocator: Allocator,
    private readonly gossip: Gossip,
    private readonly events: IpamEvents = {},
    readonly election?: SeedElection,
  ) {
    this.allocator = allocator;
  }

  get ring() {
    return this.allocator.ring;
  }

  get self(): PeerName {
    return this.allocator.self;
  }

  /**
   * allocate returns an address from our space at once if we have one free. Otherwise it asks the
   * peer advertising the most free space (skipping those already asked since the last ring change)
   * and returns `pending`; call again after `onChange`.
   */
  allocate(owner: string, subnet?: Cidr): AllocateResult {
    const prior = this.allocator.lookup(owner);
    const addr = this.allocator.allocate(owner, subnet);
    if (addr !== undefined) {
      if (!prior.includes(addr)) this.commit(() => this.allocator.unclaim(owner, addr));
      return { addr };
    }
    const donor = this.requestSpace();
    return donor === undefined ? { full: true } : { pending: donor };
  }

  /** claim records a given address (see {@link Allocator.claim}). */
  claim(owner: string, addr: IPv4): void {
    if (this.allocator.holder(addr) === owner) return;
    this.allocator.claim(owner, addr);
    this.commit(() => this.allocator.unclaim(owner, addr));
  }

  /**
   * free releases an owner's addresses. Never throws: a free that cannot be saved stays done here
   * (a restart frees addresses no container holds), and the owner counts the failure.
   */
  free(owner: string): IPv4[] {
    const out = this.allocator.free(owner);
    if (out.length > 0) {
      try {
        this.changed(true);
      } catch {
        // counted and reported by the owner's onChange; gossiped with the next change
      }
    }
    return out;
  }

  /** forgetTried lets {@link requestSpace} ask every donor again (a request or its answer may have been lost). */
  forgetTried(): void {
    this.tried.clear();
  }

  /** requestSpace unicasts a space request to the best donor not yet tried; returns it, or undefined. */
  requestSpace(want = DEFAULT_WANT): PeerName | undefined {
    const candidates = [...this.ring.freeByPeer().entries()]
      .filter(([p, free]) => p !== this.self && free > 0 && !this.tried.has(p))
      .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
    for (const [p] of candidates) {
      this.tried.add(p);
      if (this.gossip.unicast(p, encodeMessage({ kind: 'space-request', want }))) return p;
    }
    return undefined;
  }

  /**
   * rmpeer takes over the space of a peer gone for good (the caller checks it is unreachable, and
   * runs it on one peer only). Returns the number of addresses taken over.
   */
  rmpeer(dead: PeerName): number {
    if (dead === this.self) throw new WeftError('EWEFT_INPUT', 'ipam: cannot rmpeer ourselves');
    const snap = this.ring.snapshot();
    const n = this.ring.rmpeer(dead);
    if (n > 0) this.commit(() => this.ring.restore(snap));
    return n;
  }

  /**
   * leave donates all our space to `heir` (for `weft reset`) and broadcasts the ring; returns the
   * number of addresses given. The caller frees our allocations first.
   */
  leave(heir: PeerName): number {
    let n = 0;
    const snap = this.ring.snapshot();
    for (const s of this.ring.rangesOf(this.self)) {
      this.ring.transfer(s.start, s.end, heir);
      n += s.end - s.start;
    }
    if (n > 0) this.commit(() => this.ring.restore(snap));
    return n;
  }

  /** mergeRing folds a received ring in and reports what happened. Throws on another range or seed. */
  mergeRing(state: RingState): RingMergeResult {
    let r: RingMergeResult;
    try {
      r = this.ring.merge(state);
    } catch (err) {
      this.events.onConflict?.(err instanceof Error ? err.message : String(err));
      throw err;
    }
    for (const c of r.conflicts) this.events.onConflict?.(`ipam conflict: ${c}`);
    if (r.lost.length > 0) {
      const orphans = this.allocator.orphans();
      this.events.onConflict?.(
        `ipam: ${r.lost.length} of our ranges were taken over by others; ${orphans.length} allocations orphaned`,
      );
    }
    if (r.changed) {
      this.tried.clear();
      this.changed(false);
    }
    return r;
  }

  /** encodeRing is our ring as a message. */
  encodeRing(): Uint8Array {
    return encodeMessage({ kind: 'ring', ring: this.ring.state() });
  }

  /** onSpaceRequest answers a request from `src`: donate if we can, reply with our ring either way. */
  onSpaceRequest(src: PeerName, want: number): void {
    const snap = this.ring.snapshot();
    const block = this.allocator.donate(src, want);
    if (block !== undefined) {
      try {
        this.commit(() => this.ring.restore(snap));
      } catch {
        // not saved, so not given: the requester hears our unchanged ring and asks again later
      }
    }
    this.gossip.unicast(src, this.encodeRing());
  }

  /** seedAlone makes the ring `state` ours (a seed), saves it and gossips it at once. */
  seedAlone(state: RingState): void {
    this.mergeRing(state);
    this.gossip.broadcast(this.encodeRing());
  }

  /** encodeSeedRecords is a seed-records message of `records` (default: every record we know). */
  encodeSeedRecords(records?: readonly SeedRecord[]): Uint8Array {
    const recs = records ?? this.election?.all() ?? [];
    return encodeMessage({ kind: 'seed-records', range: this.ring.range, records: [...recs] });
  }

  /** broadcastSeedRecord gossips a change of our own seed record (only while unseeded). */
  broadcastSeedRecord(record: SeedRecord): void {
    if (this.ring.isEmpty()) this.gossip.broadcast(this.encodeSeedRecords([record]));
  }

  /**
   * onSeedRecords merges records gossiped by peers; returns the new ones, to pass on. Records of
   * routers using another range count as heard but may not seed (their ring is never ours). A
   * router waiting for a seed while we have a ring is sent our ring.
   */
  onSeedRecords(range: Cidr, records: readonly SeedRecord[]): SeedRecord[] {
    const same = range.addr === this.ring.range.addr && range.prefix === this.ring.range.prefix;
    const recs = same ? records : records.map((r) => ({ ...r, seedCapable: false, waiting: false }));
    const fresh = this.election?.merge(recs) ?? [];
    if (!this.ring.isEmpty()) {
      for (const r of fresh) if (r.waiting && same) this.gossip.unicast(r.name, this.encodeRing());
    } else if (fresh.length > 0) this.events.onSeedRecords?.(fresh);
    return fresh;
  }

  /**
   * commit runs after a local change: it refreshes our free hints, has the owner save the change,
   * and gossips it. When saving throws, `undo` puts the change back, the hints are refreshed
   * again, nothing is gossiped, and the error is rethrown.
   */
  private commit(undo: () => void): void {
    try {
      this.changed(true);
    } catch (err) {
      undo();
      this.allocator.refreshFree();
      throw err;
    }
  }

  private changed(local: boolean): void {
    if (local) this.allocator.refreshFree();
    this.events.onChange?.(local);
    if (local) this.gossip.broadcast(this.encodeRing());
  }
}

/** IpamGossiper is the {@link Gossiper} of the 'ipam' channel. */
export class IpamGossiper implements Gossiper {
  constructor(private readonly ipam: Ipam) {}

  /** onGossip merges a full ring; returns our merged ring when it changed. Throws ProtocolError / WeftError. */
  onGossip(src: PeerName, payload: Uint8Array): Uint8Array | undefined {
    const m = decodeMessage(payload);
    if (m.kind === 'space-request') throw new ProtocolError('ipam: space request sent by broadcast');
    if (m.kind === 'seed-records') {
      const fresh = this.ipam.onSeedRecords(m.range, m.records);
      return fresh.length > 0 ? this.ipam.encodeSeedRecords(fresh) : undefined;
    }
    try {
      return this.ipam.mergeRing(m.ring).changed ? this.ipam.encodeRing() : undefined;
    } catch (err) {
      // A refused ring (another range) still tells the seed election we heard from its sender.
      this.ipam.election?.heard(src);
      throw err;
    }
  }

  /** onGossipUnicast handles a space request or a ring reply. */
  onGossipUnicast(src: PeerName, payload: Uint8Array): void {
    const m = decodeMessage(payload);
    if (m.kind === 'ring') this.ipam.mergeRing(m.ring);
    else if (m.kind === 'space-request') this.ipam.onSpaceRequest(src, m.want);
    else this.ipam.onSeedRecords(m.range, m.records);
  }

  /** fullState is our ring, or while unseeded the seed records we know (empty without an election). */
  fullState(): Uint8Array {
    if (!this.ipam.ring.isEmpty()) return this.ipam.encodeRing();
    return this.ipam.election === undefined ? new Uint8Array(0) : this.ipam.encodeSeedRecords();
  }
}
