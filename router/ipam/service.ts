/**
 * IpamService is IPAM as the router runs it: the {@link Ipam} of this peer plus what a daemon
 * needs around it — how the ring is first seeded, allocations that wait (for a seeded ring or for
 * space from another peer) with a deadline, persistence before anything is gossiped, `rmpeer`,
 * leaving, and a status report.
 *
 * How the ring starts (`--ipalloc-init`):
 *
 * - `auto` (default). A router launched with no peers seeds the ring alone, but only when it first
 *   needs an address, so a lone host that is connected to a cluster before its first container
 *   adopts the cluster's ring instead of making a rival one. A router launched with peers never
 *   seeds: it adopts the first seeded ring it hears and asks for space. (If every router of a new
 *   cluster was launched with peers, nobody seeds; allocations then fail after their deadline
 *   with a message that says so, and status says "awaiting a seeded ring".)
 * - `seed=NAME,...`: every router given the same list builds the same ring at once (Weave's seed).
 * - `observer`: never seeds; only asks others for space.
 *
 * Persisted state (ring and allocations) always wins over the launch mode.
 */
import { WeftError } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import { noopLogger } from '../../common/log.js';
import { type Cidr, cidrContains, formatCidr, formatIPv4, type IPv4, type PeerName } from '../../common/types.js';
import type { Gossip } from '../gossip/gossip.js';
import { Allocator, type Persisted } from './allocator.js';
import { formatIpamInit, type IpamInit } from './init.js';
import { Ipam, IpamGossiper } from './ipam.js';
import { Ring, type Span } from './ring.js';

export { formatIpamInit, type IpamInit, parseIpamInit } from './init.js';

/** ALLOCATE_TIMEOUT_MS is how long an allocation waits for a seeded ring or for space. */
export const ALLOCATE_TIMEOUT_MS = 20_000;
/** SPACE_RETRY_MS: a waiting allocation asks donors again this often (a request or its answer may be lost). */
export const SPACE_RETRY_MS = 2_000;
/** CONFLICTS_KEPT bounds the recent conflicts kept for status. */
const CONFLICTS_KEPT = 20;

/** IpamServiceOptions wires the service to its router. */
export interface IpamServiceOptions {
  self: PeerName;
  range: Cidr;
  init: IpamInit;
  /** persisted is the allocator's saved JSON, if any (validated here). */
  persisted?: unknown;
  /** persist saves the allocator (atomically, synced) before any change is gossiped. */
  persist?: (state: Persisted) => void;
  /** onRingChange fires after the ring changed (the router re-derives routes). */
  onRingChange?: () => void;
  log?: Logger;
  allocateTimeoutMs?: number;
}

/** IpamPeer is what status needs to know about a peer: its nickname and whether we reach it. */
export interface IpamPeer {
  readonly nickname: string | undefined;
  readonly reachable: boolean;
}

/** IpamStatus is `weft status ipam`. */
export interface IpamStatus {
  range: string;
  init: string;
  /** state: ready, awaiting a seeded ring, waiting for space, or an unresolved conflict. */
  state: 'ready' | 'awaiting-seed' | 'waiting-for-space';
  message: string | undefined;
  seeded: boolean;
  size: number;
  owned: number;
  used: number;
  /** peers owning space: addresses owned, their free hint, reachable or not. */
  peers: {
    name: string;
    nickname: string | undefined;
    self: boolean;
    owned: number;
    free: number;
    reachable: boolean;
  }[];
  /** unreachableOwned counts addresses owned by peers we cannot reach (rmpeer them if they are gone for good). */
  unreachableOwned: number;
  allocations: { addr: string; owner: string }[];
  pending: { owner: string; sinceMs: number; reason: string }[];
  conflicts: string[];
  persistErrors: number;
}

interface Pending {
  readonly owner: string;
  readonly subnet: Cidr | undefined;
  readonly since: number;
  readonly resolve: (a: IPv4) => void;
  readonly reject: (e: Error) => void;
  readonly timer: NodeJS.Timeout;
  reason: string;
}

/** IpamService is one router's IPAM (see the module comment). */
export class IpamService {
  readonly range: Cidr;
  readonly init: IpamInit;
  private readonly ipam: Ipam;
  private readonly gossiperValue: IpamGossiper;
  private readonly log: Logger;
  private readonly pending: Pending[] = [];
  private readonly conflicts: string[] = [];
  private retryTimer: NodeJS.Timeout | undefined;
  private persistErrors = 0;
  private lastSeed = 0;
  private readonly allocateTimeoutMs: number;

  constructor(
    private readonly opts: IpamServiceOptions,
    gossip: Gossip,
  ) {
    this.range = opts.range;
    this.init = opts.init;
    this.log = opts.log ?? noopLogger;
    this.allocateTimeoutMs = opts.allocateTimeoutMs ?? ALLOCATE_TIMEOUT_MS;
    let allocator: Allocator;
    if (opts.persisted !== undefined) {
      allocator = Allocator.fromJSON(opts.persisted, { self: opts.self, range: opts.range });
    } else if (opts.init.mode === 'seed') {
      allocator = new Allocator(Ring.seeded(opts.range, opts.self, opts.init.seed));
    } else {
      allocator = new Allocator(new Ring(opts.range, opts.self));
    }
    this.ipam = new Ipam(allocator, gossip, {
      onChange: () => this.changed(),
      onConflict: (message) => this.conflict(message),
    });
    this.gossiperValue = new IpamGossiper(this.ipam);
    this.lastSeed = allocator.ring.seedId;
    // A seed ring made now (not loaded) is saved at once, so a restart finds it.
    if (opts.persisted === undefined && !allocator.ring.isEmpty()) this.save();
  }

  /** gossiper is the 'ipam' channel's receiver. */
  get gossiper(): IpamGossiper {
    return this.gossiperValue;
  }

  get self(): PeerName {
    return this.ipam.self;
  }

  /** start begins re-asking for space for waiting allocations. */
  start(): void {
    this.retryTimer ??= setInterval(() => this.retry(true), SPACE_RETRY_MS);
    this.retryTimer.unref();
  }

  /** stop fails every waiting allocation and stops the retry timer. */
  stop(): void {
    if (this.retryTimer !== undefined) clearInterval(this.retryTimer);
    this.retryTimer = undefined;
    for (const p of this.pending.splice(0)) {
      clearTimeout(p.timer);
      p.reject(new WeftError('EWEFT_NOT_READY', 'router is stopping'));
    }
  }

  /** seeded says whether the ring exists yet. */
  get seeded(): boolean {
    return !this.ipam.ring.isEmpty();
  }

  /** spans lists every owner's runs of the ring (for routing). */
  spans(): Span[] {
    return this.ipam.ring.spans();
  }

  /** ownerOf returns the peer owning an address by the ring, or undefined. */
  ownerOf(addr: number): PeerName | undefined {
    return this.ipam.ring.ownerOf(addr);
  }

  /** isOurs says whether the ring gives an address to this peer. */
  isOurs(addr: number): boolean {
    return this.ipam.allocator.isOurs(addr);
  }

  /** owners lists the keys holding addresses here. */
  owners(): string[] {
    return [...new Set(this.ipam.allocator.allocations().map(([, owner]) => owner))];
  }

  /** lookup returns an owner's addresses. */
  lookup(owner: string): IPv4[] {
    return this.ipam.allocator.lookup(owner);
  }

  /**
   * allocate gives `owner` an address from our space (the same one again if it has one), waiting
   * up to the deadline for a seeded ring or for space from a peer. Rejects with EWEFT_UNAVAILABLE
   * (saying why) when none comes, EWEFT_INPUT for a subnet outside the range.
   */
  allocate(owner: string, subnet?: Cidr): Promise<IPv4> {
    this.maybeSeed();
    const now = this.tryAllocate(owner, subnet);
    if (typeof now === 'number') return Promise.resolve(now);
    return new Promise<IPv4>((resolve, reject) => {
      const p: Pending = {
        owner,
        subnet,
        since: Date.now(),
        resolve,
        reject,
        reason: now.reason,
        timer: setTimeout(() => {
          const i = this.pending.indexOf(p);
          if (i >= 0) this.pending.splice(i, 1);
          reject(new WeftError('EWEFT_UNAVAILABLE', `no address for ${owner}: ${p.reason}`));
        }, this.allocateTimeoutMs),
      };
      p.timer.unref();
      this.pending.push(p);
    });
  }

  /**
   * claim records a given address for `owner`. Inside the range it must be in our space (a peer
   * only ever hands out its own addresses) and not held by another owner; outside the range
   * nothing is recorded (the caller announces it). Throws EWEFT_CONFLICT saying who owns it, or
   * EWEFT_UNAVAILABLE while the ring is not known yet.
   */
  claim(owner: string, addr: IPv4): void {
    if (!cidrContains(this.range, addr)) return;
    this.maybeSeed();
    if (!this.seeded) {
      throw new WeftError('EWEFT_UNAVAILABLE', `cannot claim ${formatIPv4(addr)} yet: ${this.awaitingSeedReason()}`);
    }
    const o = this.ipam.ring.ownerOf(addr);
    if (o !== this.self) {
      throw new WeftError(
        'EWEFT_CONFLICT',
        `${formatIPv4(addr)} is in the address space of peer ${o}: use it on that host, or let IPAM choose`,
      );
    }
    if (this.ipam.allocator.holder(addr) === owner) return;
    this.ipam.claim(owner, addr);
  }

  /** free releases every address of `owner`; returns them. */
  free(owner: string): IPv4[] {
    return this.ipam.free(owner);
  }

  /** keepOnly frees `owner`'s addresses except `keep` (e.g. one of several exposed addresses hidden). */
  keepOnly(owner: string, keep: readonly IPv4[]): void {
    const had = this.lookup(owner);
    if (had.length === keep.length && had.every((a) => keep.includes(a))) return;
    this.ipam.free(owner);
    for (const a of keep) if (this.isOurs(a)) this.ipam.claim(owner, a);
  }

  /** rmpeer takes over a dead peer's space (the caller checked it is unreachable). */
  rmpeer(dead: PeerName): number {
    const n = this.ipam.rmpeer(dead);
    if (n > 0) this.log.warn('ipam: took over the space of a peer', { peer: dead, addresses: n });
    return n;
  }

  /** leave hands all our space to `heir` and gossips it; returns the addresses given. */
  leave(heir: PeerName): number {
    for (const [, owner] of this.ipam.allocator.allocations()) this.ipam.free(owner);
    return this.ipam.leave(heir);
  }

  /** onReachable retries waiting allocations (a donor may have become reachable). */
  onTopologyChange(): void {
    if (this.pending.length > 0) this.retry(true);
  }

  /** status describes the ring, our share and what waits; `peers` tells nicknames and reachability. */
  status(peers: (name: PeerName) => IpamPeer | undefined): IpamStatus {
    const ring = this.ipam.ring;
    const a = this.ipam.allocator;
    const owned = new Map<PeerName, number>();
    for (const s of ring.spans()) owned.set(s.owner, (owned.get(s.owner) ?? 0) + s.end - s.start);
    const free = ring.freeByPeer();
    let unreachableOwned = 0;
    const list = [...owned.entries()]
      .sort((x, y) => (x[0] < y[0] ? -1 : 1))
      .map(([name, n]) => {
        const self = name === this.self;
        const info = self ? undefined : peers(name);
        const reachable = self || info?.reachable === true;
        if (!reachable) unreachableOwned += n;
        return { name, nickname: info?.nickname, self, owned: n, free: free.get(name) ?? 0, reachable };
      });
    const now = Date.now();
    const waiting = this.pending.length > 0;
    return {
      range: formatCidr(this.range),
      init: formatIpamInit(this.init),
      state: !this.seeded ? 'awaiting-seed' : waiting ? 'waiting-for-space' : 'ready',
      message: !this.seeded ? this.awaitingSeedReason() : waiting ? this.pending[0]!.reason : undefined,
      seeded: this.seeded,
      size: ring.size,
      owned: a.owned(),
      used: a.used(),
      peers: list,
      unreachableOwned,
      allocations: a.allocations().map(([addr, owner]) => ({ addr: formatIPv4(addr), owner })),
      pending: this.pending.map((p) => ({ owner: p.owner, sinceMs: now - p.since, reason: p.reason })),
      conflicts: [...this.conflicts],
      persistErrors: this.persistErrors,
    };
  }

  /** maySeedAlone says whether this router may make the ring by itself now. */
  private maybeSeed(): void {
    if (this.seeded || this.init.mode !== 'auto' || !this.init.alone) return;
    const ring = Ring.seeded(this.range, this.self, [this.self]);
    this.ipam.mergeRing(ring.state());
    this.log.info('ipam: seeded the ring alone', { range: formatCidr(this.range) });
  }

  private awaitingSeedReason(): string {
    if (this.init.mode === 'observer') return 'this router is an observer and no peer has shared its address space yet';
    return 'no peer has seeded the address ring yet (launch one router without peers, or all with the same --ipalloc-init seed=...)';
  }

  /** tryAllocate allocates now, or says why it cannot (having asked a donor if there is one). */
  private tryAllocate(owner: string, subnet: Cidr | undefined): IPv4 | { reason: string } {
    if (!this.seeded) return { reason: this.awaitingSeedReason() };
    const r = this.ipam.allocate(owner, subnet);
    if ('addr' in r) return r.addr;
    if ('pending' in r) return { reason: `asked peer ${r.pending} for address space` };
    const others = [...this.ipam.ring.freeByPeer().entries()].filter(([p, f]) => p !== this.self && f > 0);
    if (others.length === 0) return { reason: `the range ${formatCidr(this.range)} is full` };
    return { reason: `every peer with free space (${others.map(([p]) => p).join(', ')}) was asked; none gave any yet` };
  }

  /** retry serves waiting allocations in order; `ask` forgets which donors were tried. */
  private retry(ask: boolean): void {
    if (ask) this.ipam.forgetTried();
    for (const p of [...this.pending]) {
      const r = this.tryAllocate(p.owner, p.subnet);
      if (typeof r === 'number') {
        clearTimeout(p.timer);
        this.pending.splice(this.pending.indexOf(p), 1);
        p.resolve(r);
      } else {
        p.reason = r.reason;
        break; // the rest wait for the same space
      }
    }
  }

  /** changed runs on every change of the ring or allocations, before the change is gossiped. */
  private changed(): void {
    this.save();
    const seed = this.ipam.ring.seedId;
    if (seed !== this.lastSeed) {
      this.lastSeed = seed;
      this.log.info('ipam: ring known', { range: formatCidr(this.range), owners: this.ipam.ring.spans().length });
    }
    this.opts.onRingChange?.();
    // New space may have arrived; serve waiting allocations (not re-entrantly from inside allocate).
    if (this.pending.length > 0) queueMicrotask(() => this.retry(false));
  }

  private save(): void {
    try {
      this.opts.persist?.(this.ipam.allocator.toJSON());
    } catch (err) {
      this.persistErrors++;
      this.log.error('ipam: cannot save state', { err: err instanceof Error ? err.message : String(err) });
    }
  }

  private conflict(message: string): void {
    // The same refusal comes back with every full state a peer sends: keep and log it once.
    if (this.conflicts.some((c) => c.endsWith(` ${message}`))) return;
    this.log.error(message, { code: 'EWEFT_CONFLICT' });
    this.conflicts.push(`${new Date().toISOString()} ${message}`);
    if (this.conflicts.length > CONFLICTS_KEPT) this.conflicts.shift();
  }
}
