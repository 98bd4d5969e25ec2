/**
 * IpamService is IPAM as the router runs it: the {@link Ipam} of this peer plus what a daemon
 * needs around it — how the ring is first seeded, allocations that wait (for a seeded ring or for
 * space from another peer) with a deadline, persistence before anything is gossiped, `rmpeer`,
 * leaving, and a status report.
 *
 * How the ring starts (`--ipalloc-init`):
 *
 * - `auto` (default). A router launched with no peers may seed the ring alone ("seed-capable"),
 *   but only when an address is first needed, here or by any reachable peer, so a lone host that
 *   is connected to a cluster before its first container adopts the cluster's ring instead of
 *   making a rival one. A router launched with peers never seeds: it says it waits (see
 *   {@link SeedElection}), adopts the first seeded ring it hears and asks for space. Among several
 *   seed-capable routers that know each other, the one with the smallest name seeds, so the order
 *   of launches and first allocations does not matter. (If no router of a new cluster may seed,
 *   allocations fail after their deadline with a message that says so.)
 * - `seed=NAME,...`: every router given the same list builds the same ring at once (Weave's seed).
 * - `observer`: never seeds; only asks others for space.
 *
 * Persisted state (ring and allocations) always wins over the launch mode.
 *
 * Recovery. A router whose persisted state is missing although it belonged to a cluster
 * (`expectCluster`: the daemon knows persisted targets) must not seed a rival ring: it may not
 * seed at all, saves nothing, and waits for the cluster's ring by gossip, where its own tokens are
 * still recorded under its name. {@link IpamService.reclaim} then takes back the addresses its
 * containers still use, before any allocation is served, or refuses loudly when the ring gives
 * them to another peer.
 *
 * Saving. Every change of ours is saved (by `persist`) before it is gossiped or answered; when
 * saving throws, the change is undone and the operation fails with {@link IpamPersistError}, so
 * an address is never handed out that a restart would forget.
 *
 * Over 400 lines because it is one policy around one Ipam: seeding, waiting allocations, reclaim
 * and saving all decide when an allocation may be answered, and share its queue of waiting
 * allocations and its save-before-gossip rule; split, the order those rules apply in would no
 * longer be visible in one place. The ring, the allocator and the seed election are their own
 * files.
 */
import { type Clock, realClock, type Timer } from '../../common/clock.js';
import { WeftError } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import { noopLogger } from '../../common/log.js';
import { type Cidr, cidrContains, formatCidr, formatIPv4, type IPv4, type PeerName } from '../../common/types.js';
import type { Gossip } from '../gossip/gossip.js';
import { Allocator, type Persisted } from './allocator.js';
import { ALLOCATE_TIMEOUT_MS, formatIpamInit, type IpamInit } from './init.js';
import { Ipam, IpamGossiper } from './ipam.js';
import { Ring, type Span } from './ring.js';
import { SeedElection } from './seed-election.js';

export {
  ALLOCATE_TIMEOUT_MS,
  CLIENT_ALLOCATE_TIMEOUT_MS,
  formatIpamInit,
  type IpamInit,
  parseIpamInit,
} from './init.js';

/**
 * IpamPersistError: a change could not be saved in the state directory (disk full, read-only,
 * I/O error); it was undone. Code EWEFT_SYSTEM; `persist` is true so callers can tell it apart.
 */
export class IpamPersistError extends WeftError {
  readonly persist = true;
  constructor(message: string, options?: { cause?: unknown }) {
    super('EWEFT_SYSTEM', message, options);
    this.name = 'IpamPersistError';
  }
}

/**
 * IpamReclaimError: addresses this host's containers still use cannot be taken back, because the
 * cluster's ring gives them to another peer (EWEFT_CONFLICT), or no ring came in time
 * (EWEFT_UNAVAILABLE). The message says what to do.
 */
export class IpamReclaimError extends WeftError {
  constructor(
    code: 'EWEFT_CONFLICT' | 'EWEFT_UNAVAILABLE',
    message: string,
    readonly addresses: readonly { owner: string; addr: string; peer?: string }[],
  ) {
    super(code, message);
    this.name = 'IpamReclaimError';
  }
}

/** ReclaimEntry lists addresses an owner key (a container, or the host) still uses here. */
export interface ReclaimEntry {
  readonly owner: string;
  readonly addrs: readonly IPv4[];
}
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
  /**
   * persist saves the allocator (atomically, synced) before any change is gossiped. It throws when
   * it cannot: the change is then undone and the operation fails ({@link IpamPersistError}).
   */
  persist?: (state: Persisted) => void;
  /**
   * expectCluster says this router belonged to a cluster (the daemon has persisted targets). With
   * no persisted state it then recovers (see the module comment) instead of seeding.
   */
  expectCluster?: boolean;
  /** reachable lists the peers reachable now (for the seed election); default: none. */
  reachable?: () => Iterable<PeerName>;
  /** epoch is this run's start time for the seed election (default the clock's now; tests inject it). */
  epoch?: number;
  /** clock gives time and timers (default the real clock). */
  clock?: Clock;
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
  /** persistFailing is true while the last save failed (the state directory is failing). */
  persistFailing: boolean;
  /** persistError is the last save error, if any. */
  persistError: string | undefined;
  /** recovering: the persisted state was lost and the cluster's ring has not been heard yet. */
  recovering: boolean;
  /** reclaiming counts addresses waiting to be taken back from the cluster's ring. */
  reclaiming: number;
  /** seeder names the router expected to seed while unseeded (the election's choice), if known. */
  seeder: string | undefined;
}

interface PendingReclaim {
  readonly entries: readonly ReclaimEntry[];
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
  readonly timer: Timer;
}

interface Pending {
  readonly owner: string;
  readonly subnet: Cidr | undefined;
  readonly since: number;
  readonly resolve: (a: IPv4) => void;
  readonly reject: (e: Error) => void;
  readonly timer: Timer;
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
  private readonly reclaims: PendingReclaim[] = [];
  private readonly election: SeedElection;
  private retryTimer: Timer | undefined;
  private readonly clock: Clock;
  private persistErrors = 0;
  private persistError: string | undefined;
  private persistFailing = false;
  private lastSeed = 0;
  private recoveringValue: boolean;
  private electScheduled = false;
  private serving = false;
  private readonly allocateTimeoutMs: number;

  constructor(
    private readonly opts: IpamServiceOptions,
    gossip: Gossip,
  ) {
    this.clock = opts.clock ?? realClock;
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
    this.recoveringValue = opts.persisted === undefined && opts.expectCluster === true && opts.init.mode === 'auto';
    this.election = new SeedElection(opts.self, this.seedCapable(), opts.epoch ?? Math.floor(this.clock.now()));
    this.ipam = new Ipam(
      allocator,
      gossip,
      {
        onChange: (local) => this.changed(local),
        onConflict: (message) => this.conflict(message),
        onSeedRecords: () => this.scheduleElect(),
      },
      this.election,
    );
    this.gossiperValue = new IpamGossiper(this.ipam);
    this.lastSeed = allocator.ring.seedId;
    if (this.recoveringValue) {
      this.log.warn('ipam: no saved state, but this router belonged to a cluster: waiting for its ring', {
        range: formatCidr(opts.range),
      });
    }
    // A seed ring made now (not loaded) is saved at once, so a restart finds it.
    if (opts.persisted === undefined && !allocator.ring.isEmpty()) this.save(false);
  }

  /** reclaiming says a {@link IpamService.reclaim} waits for the ring. */
  get reclaiming(): boolean {
    return this.reclaims.length > 0;
  }

  /** recovering says the persisted state was lost and the cluster's ring is not known yet (see the module comment). */
  get recovering(): boolean {
    return this.recoveringValue;
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
    this.retryTimer ??= this.clock.setInterval(() => this.retry(true), SPACE_RETRY_MS);
    this.retryTimer.unref();
  }

  /** stop fails every waiting allocation and stops the retry timer. */
  stop(): void {
    if (this.retryTimer !== undefined) this.clock.clearInterval(this.retryTimer);
    this.retryTimer = undefined;
    for (const p of this.pending.splice(0)) {
      this.clock.clearTimeout(p.timer);
      p.reject(new WeftError('EWEFT_NOT_READY', 'router is stopping'));
    }
    for (const r of this.reclaims.splice(0)) {
      this.clock.clearTimeout(r.timer);
      r.reject(new WeftError('EWEFT_NOT_READY', 'router is stopping'));
    }
  }

  /** seeded says whether the ring exists yet. */
  get seeded(): boolean {
    return !this.ipam.ring.isEmpty();
  }

  /** seedId identifies the seed list of the ring (0 while unseeded; a hash of the seed list). */
  get seedId(): number {
    return this.ipam.ring.seedId;
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
    this.elect(true);
    let now: IPv4 | { reason: string };
    try {
      now = this.tryAllocate(owner, subnet);
    } catch (err) {
      return Promise.reject(err);
    }
    if (typeof now === 'number') return Promise.resolve(now);
    const reason = now.reason;
    return new Promise<IPv4>((resolve, reject) => {
      const p: Pending = {
        owner,
        subnet,
        since: this.clock.now(),
        resolve,
        reject,
        reason,
        timer: this.clock.setTimeout(() => {
          const i = this.pending.indexOf(p);
          if (i >= 0) this.pending.splice(i, 1);
          this.noteWaiting();
          reject(
            new WeftError(
              'EWEFT_UNAVAILABLE',
              `no address for ${owner} within ${this.allocateTimeoutMs} ms: ${this.seeded ? p.reason : this.awaitingSeedReason()}`,
            ),
          );
        }, this.allocateTimeoutMs),
      };
      p.timer.unref();
      this.pending.push(p);
      this.noteWaiting();
    });
  }

  /**
   * reclaim takes back, for their owners, addresses this host's containers (and the host itself)
   * still use, typically at start from what the daemon restores. With a known ring it checks and
   * records them at once. Without one it waits for the ring (seeding first if this router may,
   * unless it is recovering) up to the allocation deadline; reclaims are served before any waiting
   * allocation. Addresses outside the range are ignored. Rejects with {@link IpamReclaimError}:
   * EWEFT_CONFLICT (nothing taken) when the ring gives any of them to another peer or another
   * owner holds one, EWEFT_UNAVAILABLE when no ring came in time; {@link IpamPersistError} when
   * the result cannot be saved.
   */
  reclaim(entries: readonly ReclaimEntry[]): Promise<void> {
    const inRange = entries
      .map((e) => ({ owner: e.owner, addrs: e.addrs.filter((a) => cidrContains(this.range, a)) }))
      .filter((e) => e.addrs.length > 0);
    if (!this.seeded) this.elect(inRange.length > 0);
    if (this.seeded) {
      try {
        this.doReclaim(inRange);
        return Promise.resolve();
      } catch (err) {
        return Promise.reject(err);
      }
    }
    if (inRange.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const r: PendingReclaim = {
        entries: inRange,
        resolve,
        reject,
        timer: this.clock.setTimeout(() => {
          const i = this.reclaims.indexOf(r);
          if (i >= 0) this.reclaims.splice(i, 1);
          this.noteWaiting();
          const list = inRange.flatMap((e) => e.addrs.map((a) => ({ owner: e.owner, addr: formatIPv4(a) })));
          reject(
            new IpamReclaimError(
              'EWEFT_UNAVAILABLE',
              `cannot take back the ${list.length} addresses this host's containers still use (${describe(list)}): ` +
                `no address ring within ${this.allocateTimeoutMs} ms: ${this.awaitingSeedReason()}`,
              list,
            ),
          );
        }, this.allocateTimeoutMs),
      };
      r.timer.unref();
      this.reclaims.push(r);
      this.noteWaiting();
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
    this.elect(true);
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

  /** onTopologyChange retries waiting allocations (a donor may have become reachable) and re-runs the seed election. */
  onTopologyChange(): void {
    if (!this.seeded) this.scheduleElect();
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
    const now = this.clock.now();
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
      persistFailing: this.persistFailing,
      persistError: this.persistError,
      recovering: this.recoveringValue,
      reclaiming: this.reclaims.reduce((n, r) => n + r.entries.reduce((m, e) => m + e.addrs.length, 0), 0),
      seeder: this.seeded ? undefined : this.election.seeder(this.reachablePeers()),
    };
  }

  /** seedCapable: launched without peers in auto mode, and not recovering a lost state. */
  private seedCapable(): boolean {
    return this.init.mode === 'auto' && this.init.alone && !this.recoveringValue;
  }

  private reachablePeers(): PeerName[] {
    return [...(this.opts.reachable?.() ?? [])].filter((p) => p !== this.self);
  }

  /** noteWaiting updates (and gossips) our seed record's "waiting" while unseeded, then re-runs the election. */
  private noteWaiting(): void {
    if (this.seeded) return;
    const rec = this.election.set({ waiting: this.pending.length > 0 || this.reclaims.length > 0 });
    if (rec !== undefined) this.ipam.broadcastSeedRecord(rec);
    this.scheduleElect();
  }

  private scheduleElect(): void {
    if (this.electScheduled) return;
    this.electScheduled = true;
    queueMicrotask(() => {
      this.electScheduled = false;
      this.elect(false);
    });
  }

  /**
   * elect seeds the ring alone when the {@link SeedElection} says so; `selfNeeds` counts us as
   * waiting (an allocation or claim in progress).
   */
  private elect(selfNeeds: boolean): void {
    if (this.seeded || this.recoveringValue || !this.seedCapable()) return;
    const d = this.election.decide(this.reachablePeers(), selfNeeds);
    if (!d.seed) return;
    const ring = Ring.seeded(this.range, this.self, [this.self]);
    this.ipam.seedAlone(ring.state());
    this.log.info('ipam: seeded the ring alone', { range: formatCidr(this.range) });
  }

  private awaitingSeedReason(): string {
    if (this.recoveringValue) {
      return (
        'this router lost its saved ipam state and belonged to a cluster, so it waits for the cluster’s ring ' +
        'instead of seeding a rival (start a peer of the cluster; if the cluster is gone for good, launch with ' +
        `--ipalloc-init seed=${this.self})`
      );
    }
    if (this.init.mode === 'observer') return 'this router is an observer and no peer has shared its address space yet';
    const reachable = this.reachablePeers();
    const seeder = this.election.seeder(reachable);
    if (seeder !== undefined && seeder !== this.self) return `waiting for peer ${seeder} to seed the address ring`;
    if (seeder === this.self) {
      const d = this.election.decide(reachable);
      if (!d.seed) return `about to seed the address ring: ${d.reason}`;
    }
    return 'no reachable router may seed the address ring (launch one router without peers, or all with the same --ipalloc-init seed=...)';
  }

  /** doReclaim checks every entry against the ring, then records them all (or throws, taking none). */
  private doReclaim(entries: readonly ReclaimEntry[]): void {
    const bad: { owner: string; addr: string; peer?: string }[] = [];
    for (const e of entries) {
      for (const a of e.addrs) {
        const o = this.ipam.ring.ownerOf(a);
        const holder = this.ipam.allocator.holder(a);
        if (o !== this.self) bad.push({ owner: e.owner, addr: formatIPv4(a), ...(o !== undefined && { peer: o }) });
        else if (holder !== undefined && holder !== e.owner)
          bad.push({ owner: e.owner, addr: formatIPv4(a), peer: holder });
      }
    }
    if (bad.length > 0) {
      const peers = [...new Set(bad.map((b) => b.peer).filter((p) => p !== undefined))];
      const err = new IpamReclaimError(
        'EWEFT_CONFLICT',
        `refusing to start: addresses this host's containers still use belong to others now (${describe(bad)}), ` +
          `so they would be used twice (was this peer removed with \`weft rmpeer\`?). ` +
          `Remove those containers' interfaces here (\`ip link del <veth>\`, or delete the containers) and launch ` +
          `again, then attach them anew; or, if ${peers.join(', ') || 'that peer'} is gone for good and never used them, ` +
          `launch with --ipalloc-init seed=${this.self} alone (a new cluster)`,
        bad,
      );
      this.conflict(err.message);
      throw err;
    }
    const snap = { allocs: this.ipam.allocator.allocations() };
    try {
      for (const e of entries) for (const a of e.addrs) this.ipam.claim(e.owner, a);
    } catch (err) {
      for (const e of entries) {
        for (const a of e.addrs)
          if (!snap.allocs.some(([x, o]) => x === a && o === e.owner)) this.ipam.allocator.unclaim(e.owner, a);
      }
      this.ipam.allocator.refreshFree();
      throw err;
    }
    const n = entries.reduce((m, e) => m + e.addrs.length, 0);
    if (n > 0 && this.recoveringValue)
      this.log.info('ipam: took back the addresses still in use here', { addresses: n });
  }

  /** serveReclaims runs once the ring is known: reclaims first, then the end of recovery. */
  private serveReclaims(): void {
    if (this.serving) return;
    this.serving = true;
    try {
      this.serveReclaimsNow();
    } finally {
      this.serving = false;
    }
  }

  private serveReclaimsNow(): void {
    for (const r of this.reclaims.splice(0)) {
      this.clock.clearTimeout(r.timer);
      try {
        this.doReclaim(r.entries);
        r.resolve();
      } catch (err) {
        r.reject(err instanceof Error ? err : new Error(String(err)));
      }
    }
    if (this.recoveringValue) {
      this.recoveringValue = false;
      this.election.set({ seedCapable: this.seedCapable() });
      this.log.info('ipam: recovered the cluster’s ring', { owned: this.ipam.allocator.owned() });
      this.save(false);
    }
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
    if (!this.seeded) {
      this.elect(false);
      if (!this.seeded) {
        const rec = this.election.mine;
        if (rec.waiting) this.ipam.broadcastSeedRecord(rec);
      }
    }
    if (ask) this.ipam.forgetTried();
    for (const p of [...this.pending]) {
      let r: IPv4 | { reason: string };
      try {
        r = this.tryAllocate(p.owner, p.subnet);
      } catch (err) {
        this.clock.clearTimeout(p.timer);
        this.pending.splice(this.pending.indexOf(p), 1);
        p.reject(err instanceof Error ? err : new Error(String(err)));
        continue;
      }
      if (typeof r === 'number') {
        this.clock.clearTimeout(p.timer);
        this.pending.splice(this.pending.indexOf(p), 1);
        p.resolve(r);
      } else {
        p.reason = r.reason;
        break; // the rest wait for the same space
      }
    }
  }

  /** changed runs on every change of the ring or allocations, before the change is gossiped; throws when a local change cannot be saved. */
  private changed(local: boolean): void {
    this.save(local);
    if (this.seeded && (this.reclaims.length > 0 || this.recoveringValue)) this.serveReclaims();
    const seed = this.ipam.ring.seedId;
    if (seed !== this.lastSeed) {
      this.lastSeed = seed;
      this.log.info('ipam: ring known', { range: formatCidr(this.range), owners: this.ipam.ring.spans().length });
    }
    this.opts.onRingChange?.();
    // New space may have arrived; serve waiting allocations (not re-entrantly from inside allocate).
    if (this.pending.length > 0) queueMicrotask(() => this.retry(false));
  }

  /**
   * save writes the state (not while recovering: a ring without our allocations must not replace
   * what a later launch could still recover). A failure is counted and shown in status; for a
   * local change it throws {@link IpamPersistError} (the caller undoes the change).
   */
  private save(local: boolean): void {
    if (this.recoveringValue || this.opts.persist === undefined) return;
    try {
      this.opts.persist(this.ipam.allocator.toJSON());
      if (this.persistFailing) this.log.info('ipam: state saved again');
      this.persistFailing = false;
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      this.persistErrors++;
      this.persistFailing = true;
      this.persistError = msg;
      this.log.error('ipam: cannot save state', { err: msg, count: this.persistErrors });
      if (local) {
        throw new IpamPersistError(`cannot save the ipam state, so the change was undone: ${msg}`, { cause: err });
      }
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

/** describe lists a few addresses with their owners for a message. */
function describe(list: readonly { owner: string; addr: string; peer?: string }[]): string {
  const shown = list
    .slice(0, 8)
    .map((b) => `${b.addr} of ${b.owner}${b.peer !== undefined ? ` held by ${b.peer}` : ''}`);
  return list.length > 8 ? `${shown.join(', ')} and ${list.length - 8} more` : shown.join(', ');
}
