/**
 * Ipam ties the {@link Ring} and the {@link Allocator} of one peer to the 'ipam' gossip channel.
 *
 * Protocol (one MessagePack array per message, names as 6 raw bytes, addresses as u32):
 *
 * ```
 * ring          [ 1, 1, [ rangeAddr u32, prefix, seedId u32,
 *                        [ [ start u32, owner bin6, version, free ], ... ] ] ]   gossip, and unicast reply
 * space request [ 1, 2, wantSize ]                                                 unicast to a donor
 * ```
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

/** IPAM_CHANNEL is the gossip channel name. */
export const IPAM_CHANNEL = 'ipam';
/** IPAM_FORMAT is the first element of every message. */
export const IPAM_FORMAT = 1;
export const KIND_RING = 1;
export const KIND_SPACE_REQUEST = 2;
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
]);

/** IpamMessage is a decoded message. */
export type IpamMessage = { kind: 'ring'; ring: RingState } | { kind: 'space-request'; want: number };

/** encodeMessage writes a message in the wire form. */
export function encodeMessage(m: IpamMessage): Uint8Array {
  if (m.kind === 'space-request') return packr.pack([IPAM_FORMAT, KIND_SPACE_REQUEST, m.want]).slice();
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
  /** onChange fires after our ring or allocations changed (persist, then retry pending allocations). */
  onChange?(): void;
  /** onConflict reports impossible states and space taken from us (with the allocations it orphaned). */
  onConflict?(message: string): void;
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
    const addr = this.allocator.allocate(owner, subnet);
    if (addr !== undefined) {
      this.changed(true);
      return { addr };
    }
    const donor = this.requestSpace();
    return donor === undefined ? { full: true } : { pending: donor };
  }

  /** claim records a given address (see {@link Allocator.claim}). */
  claim(owner: string, addr: IPv4): void {
    this.allocator.claim(owner, addr);
    this.changed(true);
  }

  /** free releases an owner's addresses. */
  free(owner: string): IPv4[] {
    const out = this.allocator.free(owner);
    if (out.length > 0) this.changed(true);
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
    const n = this.ring.rmpeer(dead);
    if (n > 0) this.changed(true);
    return n;
  }

  /**
   * leave donates all our space to `heir` (for `weft reset`) and broadcasts the ring; returns the
   * number of addresses given. The caller frees our allocations first.
   */
  leave(heir: PeerName): number {
    let n = 0;
    for (const s of this.ring.rangesOf(this.self)) {
      this.ring.transfer(s.start, s.end, heir);
      n += s.end - s.start;
    }
    if (n > 0) this.changed(true);
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
    const block = this.allocator.donate(src, want);
    if (block !== undefined) this.changed(true);
    this.gossip.unicast(src, this.encodeRing());
  }

  private changed(local: boolean): void {
    if (local) this.allocator.refreshFree();
    this.events.onChange?.();
    if (local) this.gossip.broadcast(this.encodeRing());
  }
}

/** IpamGossiper is the {@link Gossiper} of the 'ipam' channel. */
export class IpamGossiper implements Gossiper {
  constructor(private readonly ipam: Ipam) {}

  /** onGossip merges a full ring; returns our merged ring when it changed. Throws ProtocolError / WeftError. */
  onGossip(_src: PeerName, payload: Uint8Array): Uint8Array | undefined {
    const m = decodeMessage(payload);
    if (m.kind !== 'ring') throw new ProtocolError('ipam: space request sent by broadcast');
    return this.ipam.mergeRing(m.ring).changed ? this.ipam.encodeRing() : undefined;
  }

  /** onGossipUnicast handles a space request or a ring reply. */
  onGossipUnicast(src: PeerName, payload: Uint8Array): void {
    const m = decodeMessage(payload);
    if (m.kind === 'ring') this.ipam.mergeRing(m.ring);
    else this.ipam.onSpaceRequest(src, m.want);
  }

  /** fullState is our ring (empty when unseeded). */
  fullState(): Uint8Array {
    return this.ipam.ring.isEmpty() ? new Uint8Array(0) : this.ipam.encodeRing();
  }
}
