/**
 * Ring: the IPAM CRDT. The cluster range (e.g. 10.32.0.0/12) is cut by an ordered set of tokens;
 * a token owns the addresses from its start up to the next token's start (the last one up to the
 * end of the range). There is always a token at the start of the range once the ring is seeded.
 *
 * Rules (what makes a partition unable to produce two owners of one address):
 *
 * - Only the owner of a token changes it, bumping its version: its free-count hint, or its owner
 *   (a donation). `rmpeer` is the one administrative exception (taking over a dead peer's tokens).
 * - Tokens are never deleted. A new token is only ever created by the owner of the range it falls
 *   in (to split off a block it donates), so one start is never created by two peers.
 * - Merge: union of tokens by start; for one start the higher version wins. Equal versions with
 *   different contents cannot happen under the rules (only a double `rmpeer` or lost state makes
 *   them): the larger (owner, free) wins everywhere, and the merge reports a conflict.
 *
 * Initial division ("seed"): every peer launched with the same list of peer names computes the
 * same ring at once: the range cut into equal consecutive shares, one per name in sorted order, all
 * at version 1. Nothing waits for consensus; a host alone (seed = itself) owns the whole range.
 * Peers outside the seed start with an empty ring, adopt the first seeded ring they hear of, and
 * ask for space. Rings with different seeds (or ranges) are never merged: that would give two
 * owners to one address, so it is refused (the `seedId` is a hash of the sorted seed list).
 */
import { WeftError } from '../../common/errors.js';
import { type Cidr, cidrNetwork, formatCidr, formatIPv4, type IPv4, type PeerName } from '../../common/types.js';

/** Token is one cut of the ring: `owner` holds [start, next token's start). */
export interface Token {
  readonly start: IPv4;
  readonly owner: PeerName;
  /** version is bumped on every change; the highest copy wins a merge. */
  readonly version: number;
  /** free is the owner's hint of unallocated addresses in this token's range (for choosing a donor). */
  readonly free: number;
}

/** RingState is the whole content of a ring (what is gossiped and persisted). */
export interface RingState {
  readonly range: Cidr;
  /** seedId identifies the seed list the ring was built from; 0 means unseeded (empty ring). */
  readonly seedId: number;
  /** tokens are sorted by start, all inside the range. */
  readonly tokens: readonly Token[];
}

/** Span is a run of addresses [start, end) (end exclusive, may be 2^32) owned by one peer. */
export interface Span {
  readonly start: number;
  readonly end: number;
  readonly owner: PeerName;
}

/** RingMergeResult says what a merge did. */
export interface RingMergeResult {
  /** changed is true when our ring differs from before. */
  readonly changed: boolean;
  /** conflicts describes impossible equal-version disagreements (resolved deterministically). */
  readonly conflicts: string[];
  /** lost lists starts of tokens we owned before the merge and no longer own (rmpeer of us, or a forgotten donation). */
  readonly lost: IPv4[];
}

/** RING_TOKENS_MAX bounds the tokens a ring may hold (and a message may carry). */
export const RING_TOKENS_MAX = 65_536;
/** RING_MIN_PREFIX / RING_MAX_PREFIX bound the size of the cluster range (/8 … /30). */
export const RING_MIN_PREFIX = 8;
export const RING_MAX_PREFIX = 30;

/** seedIdOf hashes a seed list (order-insensitive, duplicates ignored) with FNV-1a; never 0. */
export function seedIdOf(seed: readonly PeerName[]): number {
  const s = [...new Set(seed)].sort().join(',');
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h === 0 ? 1 : h;
}

/** ringProblem says why a state is not a valid ring, or undefined. Never throws. */
export function ringProblem(s: RingState): string | undefined {
  const { prefix } = s.range;
  if (!Number.isInteger(prefix) || prefix < RING_MIN_PREFIX || prefix > RING_MAX_PREFIX)
    return `bad range prefix ${prefix}`;
  const base = cidrNetwork(s.range);
  if (base !== s.range.addr) return `range ${formatCidr(s.range)} has host bits set`;
  const end = base + 2 ** (32 - prefix);
  if (!Number.isInteger(s.seedId) || s.seedId < 0 || s.seedId > 0xffffffff) return 'bad seed id';
  if (s.tokens.length > RING_TOKENS_MAX) return 'too many tokens';
  if (s.seedId === 0 && s.tokens.length > 0) return 'tokens in an unseeded ring';
  if (s.seedId !== 0 && s.tokens[0]?.start !== base) return 'no token at the start of the range';
  let prev = -1;
  for (const t of s.tokens) {
    if (!Number.isInteger(t.start) || t.start < base || t.start >= end) return `token ${t.start} outside the range`;
    if (t.start <= prev) return 'tokens not strictly sorted';
    prev = t.start;
    if (!Number.isSafeInteger(t.version) || t.version < 1) return `bad version at ${formatIPv4(t.start)}`;
    if (!Number.isSafeInteger(t.free) || t.free < 0 || t.free > end - base) return `bad free at ${formatIPv4(t.start)}`;
    if (typeof t.owner !== 'string' || !/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(t.owner)) return 'bad owner';
  }
  return undefined;
}

function compareToken(a: Token, b: Token): number {
  if (a.version !== b.version) return a.version - b.version;
  if (a.owner !== b.owner) return a.owner < b.owner ? -1 : 1;
  return a.free - b.free;
}

/** Ring is one peer's copy of the CRDT; `self` is the peer allowed to change its own tokens. */
export class Ring {
  readonly range: Cidr;
  readonly base: number;
  /** end is one past the last address of the range. */
  readonly end: number;
  private seed: number;
  private toks: Token[];

  constructor(
    range: Cidr,
    readonly self: PeerName,
    state?: { seedId: number; tokens: readonly Token[] },
  ) {
    this.range = { addr: cidrNetwork(range), prefix: range.prefix };
    this.base = this.range.addr;
    this.end = this.base + 2 ** (32 - range.prefix);
    this.seed = state?.seedId ?? 0;
    this.toks = [...(state?.tokens ?? [])];
    const problem = ringProblem(this.state());
    if (problem !== undefined) throw new WeftError('EWEFT_CONFIG', `invalid ipam ring: ${problem}`);
  }

  /** seeded builds the ring every peer given `seed` computes alike: equal consecutive shares in name order. */
  static seeded(range: Cidr, self: PeerName, seed: readonly PeerName[]): Ring {
    const names = [...new Set(seed)].sort();
    if (names.length === 0) throw new WeftError('EWEFT_CONFIG', 'ipam seed: want at least one peer');
    const r = new Ring(range, self);
    const size = r.end - r.base;
    if (names.length > size) throw new WeftError('EWEFT_CONFIG', 'ipam seed: more peers than addresses');
    const tokens: Token[] = names.map((owner, i) => {
      const start = r.base + Math.floor((i * size) / names.length);
      const next = r.base + Math.floor(((i + 1) * size) / names.length);
      return { start: start as IPv4, owner, version: 1, free: next - start };
    });
    return new Ring(range, self, { seedId: seedIdOf(names), tokens });
  }

  get seedId(): number {
    return this.seed;
  }

  get size(): number {
    return this.end - this.base;
  }

  isEmpty(): boolean {
    return this.toks.length === 0;
  }

  tokens(): readonly Token[] {
    return this.toks;
  }

  state(): RingState {
    return { range: this.range, seedId: this.seed, tokens: this.toks };
  }

  /** snapshot copies the ring's content, for {@link Ring.restore} (undoing a change that could not be saved). */
  snapshot(): { seedId: number; tokens: readonly Token[] } {
    return { seedId: this.seed, tokens: [...this.toks] };
  }

  /** restore puts back a {@link Ring.snapshot} of this ring (nothing changed since may have been gossiped). */
  restore(snap: { seedId: number; tokens: readonly Token[] }): void {
    this.seed = snap.seedId;
    this.toks = [...snap.tokens];
  }

  /** tokenEnd is one past the last address of the i-th token. */
  tokenEnd(i: number): number {
    return this.toks[i + 1]?.start ?? this.end;
  }

  /** indexOf returns the index of the token whose range holds addr, or -1. */
  indexOf(addr: number): number {
    if (addr < this.base || addr >= this.end) return -1;
    let lo = 0;
    let hi = this.toks.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.toks[mid]!.start <= addr) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found;
  }

  /** ownerOf returns the owner of an address, or undefined (outside the range, or unseeded). */
  ownerOf(addr: number): PeerName | undefined {
    const i = this.indexOf(addr);
    return i < 0 ? undefined : this.toks[i]!.owner;
  }

  /** spans returns every owner's runs, adjacent tokens of one owner joined. */
  spans(): Span[] {
    const out: Span[] = [];
    this.toks.forEach((t, i) => {
      const end = this.tokenEnd(i);
      const last = out[out.length - 1];
      if (last !== undefined && last.owner === t.owner && last.end === t.start) {
        out[out.length - 1] = { ...last, end };
      } else out.push({ start: t.start, end, owner: t.owner });
    });
    return out;
  }

  /** rangesOf returns the runs a peer owns. */
  rangesOf(peer: PeerName): Span[] {
    return this.spans().filter((s) => s.owner === peer);
  }

  /** ownedBy counts the addresses a peer owns. */
  ownedBy(peer: PeerName): number {
    return this.rangesOf(peer).reduce((n, s) => n + s.end - s.start, 0);
  }

  /** freeByPeer sums the advertised free hints per owner. */
  freeByPeer(): Map<PeerName, number> {
    const m = new Map<PeerName, number>();
    for (const t of this.toks) m.set(t.owner, (m.get(t.owner) ?? 0) + t.free);
    return m;
  }

  /** setFree updates the hint of one of our tokens (bumping its version only if it changed). */
  setFree(index: number, free: number): boolean {
    const t = this.toks[index];
    if (t === undefined || t.owner !== this.self || t.free === free) return false;
    this.toks[index] = { ...t, version: t.version + 1, free };
    return true;
  }

  /**
   * transfer donates [start, end) to `to`. Every address in it must be ours. Splits tokens as
   * needed (a new token at `end` keeps the rest ours), changes the owner of each token inside and
   * bumps their versions. Throws EWEFT_CONFLICT if the block is not entirely ours.
   */
  transfer(start: number, end: number, to: PeerName): void {
    if (!(start >= this.base && end <= this.end && start < end)) {
      throw new WeftError('EWEFT_INPUT', `ipam: block ${formatIPv4(start)}+${end - start} outside the range`);
    }
    for (const s of this.rangesOf(this.self)) {
      if (s.start <= start && end <= s.end) {
        this.doTransfer(start, end, to);
        return;
      }
    }
    throw new WeftError('EWEFT_CONFLICT', `ipam: cannot donate ${formatIPv4(start)}+${end - start}: not ours`);
  }

  private doTransfer(start: number, end: number, to: PeerName): void {
    if (to === this.self) return;
    if (end < this.end && this.toks[this.indexOf(end)]!.start !== end) this.insert(end, this.self);
    if (this.toks[this.indexOf(start)]!.start !== start) this.insert(start, to);
    for (let i = this.indexOf(start); i < this.toks.length && this.toks[i]!.start < end; i++) {
      const t = this.toks[i]!;
      const free = this.tokenEnd(i) - t.start;
      if (t.owner !== to || t.version === 0) this.toks[i] = { start: t.start, owner: to, version: t.version + 1, free };
    }
  }

  private insert(start: number, owner: PeerName): void {
    if (this.toks.length >= RING_TOKENS_MAX) throw new WeftError('EWEFT_CONFLICT', 'ipam: ring full of tokens');
    const i = this.indexOf(start) + 1;
    // version 0 here becomes 1 in doTransfer (the token inside the block) or stays ours at version 1.
    this.toks.splice(i, 0, { start: start as IPv4, owner, version: owner === this.self ? 1 : 0, free: 0 });
  }

  /**
   * rmpeer takes over every token of `dead` for us (administrative: the caller must know it is gone
   * for good). Returns the number of addresses taken over.
   */
  rmpeer(dead: PeerName): number {
    if (dead === this.self) return 0;
    let n = 0;
    this.toks = this.toks.map((t, i) => {
      if (t.owner !== dead) return t;
      const size = this.tokenEnd(i) - t.start;
      n += size;
      return { start: t.start, owner: this.self, version: t.version + 1, free: size };
    });
    return n;
  }

  /**
   * merge folds another ring in (commutative, associative, idempotent). Throws EWEFT_CONFLICT,
   * changing nothing, for another range or another seed: those rings must never be mixed. An
   * unseeded ring adopts the other's seed.
   */
  merge(other: RingState): RingMergeResult {
    if (other.range.addr !== this.range.addr || other.range.prefix !== this.range.prefix) {
      throw new WeftError(
        'EWEFT_CONFLICT',
        `ipam: peer uses range ${formatCidr(other.range)}, we use ${formatCidr(this.range)}`,
      );
    }
    if (other.seedId === 0) return { changed: false, conflicts: [], lost: [] };
    if (this.seed !== 0 && other.seedId !== this.seed) {
      throw new WeftError('EWEFT_CONFLICT', 'ipam: peer was seeded with a different list of peers');
    }
    const mine = new Map(this.toks.filter((t) => t.owner === this.self).map((t) => [t.start, t]));
    const a = this.toks;
    const b = other.tokens;
    const out: Token[] = [];
    const conflicts: string[] = [];
    let changed = this.seed === 0;
    let i = 0;
    let j = 0;
    while (i < a.length || j < b.length) {
      const x = a[i];
      const y = b[j];
      if (y === undefined || (x !== undefined && x.start < y.start)) {
        out.push(x!);
        i++;
      } else if (x === undefined || y.start < x.start) {
        out.push(y);
        changed = true;
        j++;
      } else {
        const c = compareToken(x, y);
        if (x.version === y.version && x.owner !== y.owner) {
          conflicts.push(`token ${formatIPv4(x.start)} v${x.version} owned by both ${x.owner} and ${y.owner}`);
        }
        if (c < 0) changed = true;
        out.push(c < 0 ? y : x);
        i++;
        j++;
      }
    }
    if (out.length > RING_TOKENS_MAX) throw new WeftError('EWEFT_CONFLICT', 'ipam: merged ring has too many tokens');
    this.seed = other.seedId;
    this.toks = out;
    const lost: IPv4[] = [];
    for (const [start] of mine) if (this.ownerOf(start) !== this.self) lost.push(start);
    return { changed, conflicts, lost };
  }
}
