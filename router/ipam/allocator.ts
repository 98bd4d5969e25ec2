/**
 * Allocator: one peer's allocations inside the space the {@link Ring} says it owns. It hands out
 * the lowest free address first, never the network or broadcast address of the subnet asked for,
 * and donates free aligned blocks to peers that ask. Pure and synchronous.
 *
 * Cost: the addresses in use are also kept in a {@link UsedBitmap} (used-bitmap.ts) over the
 * range, so the lowest free address at or above any point costs O(log₃₂ range) word operations,
 * however many addresses are allocated. allocate is that for each of our tokens it has to look in
 * (one, unless the first ones are full), plus a binary search of the ring; claim and free cost O(1)
 * per address plus that search. used(), refreshFree() and freeRuns() (hence donate()) walk our
 * tokens and count or scan the bitmap 1024 addresses at a time where they can: O(tokens + owned /
 * 1024), plus O(log₃₂ range) per free run for freeRuns(). None of them looks at the allocations one
 * by one.
 *
 * Persistence ({@link Allocator.toJSON}): the ring and the allocations, as JSON validated with zod
 * on load. Write it (fsync + rename) before acting on or gossiping a change, so that a restart,
 * even after `kill -9`, never forgets a donation or an allocation.
 */
import { z } from 'zod';
import { WeftError } from '../../common/errors.js';
import {
  type Cidr,
  cidrContains,
  cidrNetwork,
  formatCidr,
  formatIPv4,
  type IPv4,
  type PeerName,
  parseCidr,
  parseIPv4,
  parsePeerName,
} from '../../common/types.js';
import { Ring, type Span, type Token } from './ring.js';
import { UsedBitmap } from './used-bitmap.js';

/** Block is a donated run of addresses. */
export interface Block {
  readonly start: IPv4;
  readonly size: number;
}

/** ALLOCATOR_FORMAT versions the persisted JSON. */
export const ALLOCATOR_FORMAT = 1;
/** OWNER_KEY_MAX_CHARS bounds a container key. */
export const OWNER_KEY_MAX_CHARS = 256;

const ip = z.string().max(15);
const PersistedSchema = z.strictObject({
  format: z.literal(ALLOCATOR_FORMAT),
  self: z.string().max(17),
  range: z.string().max(18),
  seedId: z.int().min(0).max(0xffffffff),
  tokens: z
    .array(
      z.strictObject({
        start: ip,
        owner: z.string().max(17),
        version: z.int().min(1),
        free: z.int().min(0),
      }),
    )
    .max(65_536),
  allocations: z.record(z.string().min(1).max(OWNER_KEY_MAX_CHARS), z.array(ip).max(65_536)),
});

/** Persisted is the JSON form of an allocator. */
export type Persisted = z.infer<typeof PersistedSchema>;

function pow2Floor(n: number): number {
  return n < 1 ? 0 : 2 ** Math.floor(Math.log2(n));
}

/** Allocator tracks which addresses of our space are in use, and by which owner key (container id). */
export class Allocator {
  /** byAddr holds every allocation, including orphans (no longer in our space, or, from a state file, outside the range). */
  private readonly byAddr = new Map<number, string>();
  private readonly byOwner = new Map<string, Set<number>>();
  /** inUse mirrors the keys of byAddr that lie inside the range, as offsets from `ring.base`. */
  private readonly inUse: UsedBitmap;

  constructor(readonly ring: Ring) {
    this.inUse = new UsedBitmap(ring.end - ring.base);
  }

  get self(): PeerName {
    return this.ring.self;
  }

  /** isOurs says whether the ring gives addr to us. */
  isOurs(addr: number): boolean {
    return this.ring.ownerOf(addr) === this.self;
  }

  /** lookup returns an owner's addresses, sorted. */
  lookup(owner: string): IPv4[] {
    return [...(this.byOwner.get(owner) ?? [])].sort((a, b) => a - b) as IPv4[];
  }

  /** ownerOfAddr returns the key holding an address here. */
  holder(addr: number): string | undefined {
    return this.byAddr.get(addr);
  }

  /** allocations returns [addr, owner key] pairs sorted by address. */
  allocations(): [IPv4, string][] {
    return [...this.byAddr.entries()].sort((a, b) => a[0] - b[0]) as [IPv4, string][];
  }

  /** owned counts the addresses we own; used counts those of them in use; free is the rest. */
  owned(): number {
    return this.ring.ownedBy(this.self);
  }

  used(): number {
    let n = 0;
    this.forOurTokens((_, start, end) => {
      n += this.usedIn(start, end);
    });
    return n;
  }

  freeCount(): number {
    return this.owned() - this.used();
  }

  /**
   * allocate returns `owner`'s address in `subnet` (default: the whole range) if it has one, else
   * the lowest free address of our space in it (never the subnet's network or broadcast address),
   * or undefined when we have none free there. Throws EWEFT_INPUT for a subnet outside the range.
   */
  allocate(owner: string, subnet?: Cidr): IPv4 | undefined {
    checkKey(owner);
    const net = subnet === undefined ? this.ring.range : { addr: cidrNetwork(subnet), prefix: subnet.prefix };
    if (net.prefix > 30 || net.prefix < this.ring.range.prefix || !cidrContains(this.ring.range, net.addr)) {
      throw new WeftError(
        'EWEFT_INPUT',
        `subnet ${formatCidr(net)} is not inside the range ${formatCidr(this.ring.range)}`,
      );
    }
    for (const a of this.byOwner.get(owner) ?? []) if (cidrContains(net, a) && this.isOurs(a)) return a as IPv4;
    const lo = net.addr + 1;
    const hi = net.addr + 2 ** (32 - net.prefix) - 1; // broadcast, excluded
    // Our tokens in address order, from the one holding lo: the first free address found in one
    // of them is the lowest free address of our space in [lo, hi).
    const toks = this.ring.tokens();
    for (let i = Math.max(0, this.ring.indexOf(lo)); i < toks.length && toks[i]!.start < hi; i++) {
      if (toks[i]!.owner !== this.self) continue;
      const start = Math.max(toks[i]!.start, lo);
      const end = Math.min(this.ring.tokenEnd(i), hi);
      if (start >= end) continue;
      const a = this.ring.base + this.inUse.nextClear(start - this.ring.base);
      if (a < end) {
        this.take(owner, a);
        return a as IPv4;
      }
    }
    return undefined;
  }

  /**
   * claim records a specific address for `owner`. Idempotent for the same owner. Throws
   * EWEFT_CONFLICT if the address is not in our space or is held by another owner.
   */
  claim(owner: string, addr: IPv4): void {
    checkKey(owner);
    if (!this.isOurs(addr)) {
      const o = this.ring.ownerOf(addr);
      throw new WeftError(
        'EWEFT_CONFLICT',
        `${formatIPv4(addr)} is ${o === undefined ? 'outside the ipam range' : `owned by peer ${o}`}`,
      );
    }
    const holder = this.byAddr.get(addr);
    if (holder !== undefined && holder !== owner) {
      throw new WeftError('EWEFT_CONFLICT', `${formatIPv4(addr)} is in use by ${holder}`);
    }
    this.take(owner, addr);
  }

  /** unclaim releases one address of `owner` (undoing an allocation or claim that could not be saved). */
  unclaim(owner: string, addr: number): void {
    if (this.byAddr.get(addr) !== owner) return;
    this.byAddr.delete(addr);
    if (this.inRange(addr)) this.inUse.delete(addr - this.ring.base);
    const set = this.byOwner.get(owner);
    set?.delete(addr);
    if (set?.size === 0) this.byOwner.delete(owner);
  }

  /** free releases every address of `owner`; returns them (sorted). */
  free(owner: string): IPv4[] {
    const addrs = this.lookup(owner);
    for (const a of addrs) {
      this.byAddr.delete(a);
      if (this.inRange(a)) this.inUse.delete(a - this.ring.base);
    }
    this.byOwner.delete(owner);
    return addrs;
  }

  /** freeRuns returns the maximal runs of unused addresses in our space. */
  freeRuns(): Span[] {
    const base = this.ring.base;
    const toks = this.ring.tokens();
    const out: Span[] = [];
    for (let i = 0; i < toks.length; ) {
      if (toks[i]!.owner !== this.self) {
        i++;
        continue;
      }
      // Our adjacent tokens make one span, as in Ring.rangesOf (without building the list).
      const spanStart = toks[i]!.start;
      while (i < toks.length && toks[i]!.owner === this.self) i++;
      const spanEnd = this.ring.tokenEnd(i - 1);
      let cur: number = spanStart;
      while (cur < spanEnd) {
        const start = base + this.inUse.nextClear(cur - base);
        if (start >= spanEnd) break;
        const end = Math.min(base + this.inUse.nextSet(start - base), spanEnd);
        out.push({ start, end, owner: this.self });
        cur = end + 1; // end is in use, or the end of the span
      }
    }
    return out;
  }

  /**
   * donate gives `requester` an aligned free block of at most `wantSize` addresses (a power of two,
   * at most half our free space unless we have a single free address) from our largest free run,
   * and updates the ring. Returns undefined when we have nothing to give.
   */
  donate(requester: PeerName, wantSize: number): Block | undefined {
    if (requester === this.self) return undefined;
    const runs = this.freeRuns();
    if (runs.length === 0) return undefined;
    const total = runs.reduce((n, r) => n + r.end - r.start, 0);
    const run = runs.reduce((best, r) => (r.end - r.start > best.end - best.start ? r : best));
    let k = pow2Floor(Math.min(Math.max(1, Math.floor(wantSize)), Math.max(1, Math.floor(total / 2))));
    for (; k >= 1; k /= 2) {
      const a = Math.ceil(run.start / k) * k;
      if (a + k <= run.end) {
        this.ring.transfer(a, a + k, requester);
        this.refreshFree();
        return { start: a as IPv4, size: k };
      }
    }
    return undefined;
  }

  /** refreshFree sets the free hints of our tokens from our allocations; true if any changed. */
  refreshFree(): boolean {
    let changed = false;
    this.forOurTokens((i, start, end) => {
      if (this.ring.setFree(i, end - start - this.usedIn(start, end))) changed = true;
    });
    return changed;
  }

  /**
   * orphans lists allocations that are no longer in our space (the ring moved them away: an rmpeer
   * of us, or a donation forgotten by a crash). They should be reported and released.
   */
  orphans(): [IPv4, string][] {
    return this.allocations().filter(([a]) => !this.isOurs(a));
  }

  /** toJSON is the persisted form (ring and allocations). */
  toJSON(): Persisted {
    const allocations: Record<string, string[]> = {};
    for (const [owner, set] of [...this.byOwner.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
      allocations[owner] = [...set].sort((a, b) => a - b).map(formatIPv4);
    }
    return {
      format: ALLOCATOR_FORMAT,
      self: this.self,
      range: formatCidr(this.ring.range),
      seedId: this.ring.seedId,
      tokens: this.ring
        .tokens()
        .map((t) => ({ start: formatIPv4(t.start), owner: t.owner, version: t.version, free: t.free })),
      allocations,
    };
  }

  /**
   * fromJSON restores an allocator. Throws EWEFT_CONFIG for malformed data, or data of another
   * peer or range (`expect`), never silently starting from scratch.
   */
  static fromJSON(json: unknown, expect?: { self?: PeerName; range?: Cidr }): Allocator {
    const r = PersistedSchema.safeParse(json);
    if (!r.success) {
      const issue = r.error.issues[0];
      throw new WeftError('EWEFT_CONFIG', `invalid ipam state: ${issue?.path.join('.')}: ${issue?.message}`);
    }
    const d = r.data;
    try {
      const self = parsePeerName(d.self);
      const range = parseCidr(d.range);
      if (expect?.self !== undefined && expect.self !== self) throw new Error(`state belongs to peer ${self}`);
      if (expect?.range !== undefined && formatCidr(expect.range) !== formatCidr(range)) {
        throw new Error(`state is for range ${d.range}, launched with ${formatCidr(expect.range)}`);
      }
      const tokens: Token[] = d.tokens.map((t) => ({
        start: parseIPv4(t.start),
        owner: parsePeerName(t.owner),
        version: t.version,
        free: t.free,
      }));
      const alloc = new Allocator(new Ring(range, self, { seedId: d.seedId, tokens }));
      for (const [owner, addrs] of Object.entries(d.allocations)) {
        for (const a of addrs) {
          const addr = parseIPv4(a);
          if (alloc.byAddr.has(addr)) throw new Error(`${a} allocated twice`);
          alloc.take(owner, addr);
        }
      }
      return alloc;
    } catch (err) {
      if (err instanceof WeftError && err.code === 'EWEFT_CONFIG') throw err;
      throw new WeftError('EWEFT_CONFIG', `invalid ipam state: ${err instanceof Error ? err.message : String(err)}`, {
        cause: err,
      });
    }
  }

  /** forOurTokens calls fn with the index and [start, end) of each of our tokens, in address order. */
  private forOurTokens(fn: (index: number, start: number, end: number) => void): void {
    const toks = this.ring.tokens();
    for (let i = 0; i < toks.length; i++) {
      if (toks[i]!.owner === this.self) fn(i, toks[i]!.start, this.ring.tokenEnd(i));
    }
  }

  /** usedIn counts the allocated addresses in [start, end), which must lie inside the range. */
  private usedIn(start: number, end: number): number {
    return this.inUse.count(start - this.ring.base, end - this.ring.base);
  }

  private inRange(addr: number): boolean {
    return addr >= this.ring.base && addr < this.ring.end;
  }

  private take(owner: string, addr: number): void {
    this.byAddr.set(addr, owner);
    if (this.inRange(addr)) this.inUse.add(addr - this.ring.base);
    let set = this.byOwner.get(owner);
    if (set === undefined) {
      set = new Set();
      this.byOwner.set(owner, set);
    }
    set.add(addr);
  }
}

function checkKey(owner: string): void {
  if (typeof owner !== 'string' || owner.length === 0 || owner.length > OWNER_KEY_MAX_CHARS) {
    throw new WeftError('EWEFT_INPUT', 'ipam: owner key must be 1-256 characters');
  }
  // Keys become JSON object keys when persisted: one that is not a plain data key would be lost.
  if (owner === '__proto__' || owner === 'constructor' || owner === 'prototype') {
    throw new WeftError('EWEFT_INPUT', `ipam: "${owner}" cannot be an owner key`);
  }
}
