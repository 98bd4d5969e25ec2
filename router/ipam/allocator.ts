/**
 * Allocator: one peer's allocations inside the space the {@link Ring} says it owns. It hands out
 * the lowest free address first, never the network or broadcast address of the subnet asked for,
 * and donates free aligned blocks to peers that ask. Pure and synchronous.
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
  private readonly byAddr = new Map<number, string>();
  private readonly byOwner = new Map<string, Set<number>>();

  constructor(readonly ring: Ring) {}

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
    for (const a of this.byAddr.keys()) if (this.isOurs(a)) n++;
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
    for (const s of this.ring.rangesOf(this.self)) {
      for (let a = Math.max(s.start, lo); a < Math.min(s.end, hi); a++) {
        if (!this.byAddr.has(a)) {
          this.take(owner, a);
          return a as IPv4;
        }
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

  /** free releases every address of `owner`; returns them (sorted). */
  free(owner: string): IPv4[] {
    const addrs = this.lookup(owner);
    for (const a of addrs) this.byAddr.delete(a);
    this.byOwner.delete(owner);
    return addrs;
  }

  /** freeRuns returns the maximal runs of unused addresses in our space. */
  freeRuns(): Span[] {
    const used = [...this.byAddr.keys()].sort((a, b) => a - b);
    const out: Span[] = [];
    let u = 0;
    for (const s of this.ring.rangesOf(this.self)) {
      let cur = s.start;
      while (u < used.length && used[u]! < s.start) u++;
      while (u < used.length && used[u]! < s.end) {
        if (used[u]! > cur) out.push({ start: cur, end: used[u]!, owner: this.self });
        cur = used[u]! + 1;
        u++;
      }
      if (cur < s.end) out.push({ start: cur, end: s.end, owner: this.self });
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
    const toks = this.ring.tokens();
    const counts = new Array<number>(toks.length).fill(0);
    for (const a of this.byAddr.keys()) {
      const i = this.ring.indexOf(a);
      if (i >= 0) counts[i]!++;
    }
    let changed = false;
    toks.forEach((t, i) => {
      if (t.owner === this.self) {
        const free = this.ring.tokenEnd(i) - t.start - counts[i]!;
        if (this.ring.setFree(i, free)) changed = true;
      }
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

  private take(owner: string, addr: number): void {
    this.byAddr.set(addr, owner);
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
}
