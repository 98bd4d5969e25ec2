/**
 * SeedElection decides, the same way on every router, who seeds an unseeded ring in `auto` mode,
 * whatever the order of launches and first allocations.
 *
 * While the ring is unseeded every router gossips a small record of itself: whether it may seed
 * (`seedCapable`: launched without peers in `auto` mode, and not recovering a lost state) and
 * whether it waits for a seed (an allocation or a reclaim is pending). Records are a per-peer
 * last-writer-wins map (the peer's own start time, then a counter: a restart always wins over its
 * previous run), gossiped as a full state on every new connection and as deltas on change, so
 * they reach peers several hops away.
 *
 * The rule, computed by each seed-capable router from what it knows:
 *
 *   seed alone ⇔ somebody reachable (we, or a peer) waits for a seed
 *              ∧ every reachable peer has told us its record
 *              ∧ no reachable peer that may seed has a smaller name than ours
 *
 * Two seed-capable routers that know each other therefore never both seed; a router that is not
 * seed-capable never seeds, it only says it waits, and the smallest seed-capable router then seeds
 * at once. A lone router (nobody reachable) seeds on its first allocation, as before. Two routers
 * that allocate while not yet connected each seed alone: that is a real split (as in Weave without
 * consensus), and the ring merge refuses it loudly.
 */
import type { PeerName } from '../../common/types.js';

/** SeedRecord is what one router says about itself while the ring is unseeded. */
export interface SeedRecord {
  readonly name: PeerName;
  /** epoch is the start time (ms) of the run that wrote the record; a later run wins. */
  readonly epoch: number;
  /** counter orders the records of one run. */
  readonly counter: number;
  readonly seedCapable: boolean;
  readonly waiting: boolean;
}

/** SEED_RECORDS_MAX bounds the records a message may carry (and the map keeps). */
export const SEED_RECORDS_MAX = 4_096;

function newer(a: SeedRecord, b: SeedRecord): boolean {
  return a.epoch !== b.epoch ? a.epoch > b.epoch : a.counter > b.counter;
}

/** SeedElection holds the records (see the module comment). */
export class SeedElection {
  private readonly records = new Map<PeerName, SeedRecord>();
  private own: SeedRecord;

  /** @param epoch this run's start time in ms (injected: tests use their own). */
  constructor(
    readonly self: PeerName,
    seedCapable: boolean,
    epoch: number = Date.now(),
  ) {
    this.own = { name: self, epoch, counter: 0, seedCapable, waiting: false };
    this.records.set(self, this.own);
  }

  /** mine is our own record. */
  get mine(): SeedRecord {
    return this.own;
  }

  /** set updates our own record; returns it when it changed (to be broadcast), else undefined. */
  set(change: { seedCapable?: boolean; waiting?: boolean }): SeedRecord | undefined {
    const seedCapable = change.seedCapable ?? this.own.seedCapable;
    const waiting = change.waiting ?? this.own.waiting;
    if (seedCapable === this.own.seedCapable && waiting === this.own.waiting) return undefined;
    this.own = { ...this.own, counter: this.own.counter + 1, seedCapable, waiting };
    this.records.set(this.self, this.own);
    return this.own;
  }

  /** get returns what a peer last said, or undefined. */
  get(name: PeerName): SeedRecord | undefined {
    return this.records.get(name);
  }

  /** heard marks a peer as heard from (it may not seed) when it sent something other than a record, e.g. a refused ring. */
  heard(name: PeerName): void {
    if (name !== this.self && !this.records.has(name) && this.records.size < SEED_RECORDS_MAX) {
      this.records.set(name, { name, epoch: 0, counter: 0, seedCapable: false, waiting: false });
    }
  }

  /** all returns every record (ours first). */
  all(): SeedRecord[] {
    return [this.own, ...[...this.records.values()].filter((r) => r.name !== this.self)];
  }

  /**
   * merge folds records in; returns those that were new (the delta to pass on). Records about us
   * are ignored (only we write ours), as are records beyond {@link SEED_RECORDS_MAX}.
   */
  merge(records: readonly SeedRecord[]): SeedRecord[] {
    const fresh: SeedRecord[] = [];
    for (const r of records) {
      if (r.name === this.self) continue;
      const have = this.records.get(r.name);
      if (have !== undefined && !newer(r, have)) continue;
      if (have === undefined && this.records.size >= SEED_RECORDS_MAX) continue;
      this.records.set(r.name, r);
      fresh.push(r);
    }
    return fresh;
  }

  /**
   * decide says whether we seed now, given the peers reachable now (ourselves excluded or not);
   * `selfWaits` counts us as waiting beyond our record. Otherwise it says why not.
   */
  decide(reachable: Iterable<PeerName>, selfWaits = false): { seed: true } | { seed: false; reason: string } {
    if (!this.own.seedCapable) return { seed: false, reason: 'this router may not seed' };
    let someoneWaits = this.own.waiting || selfWaits;
    const unknown: PeerName[] = [];
    for (const p of reachable) {
      if (p === this.self) continue;
      const r = this.records.get(p);
      if (r === undefined) {
        unknown.push(p);
        continue;
      }
      if (r.waiting) someoneWaits = true;
      if (r.seedCapable && r.name < this.self) {
        return { seed: false, reason: `peer ${r.name} seeds the ring (the smallest name that may)` };
      }
    }
    if (!someoneWaits) return { seed: false, reason: 'nobody needs an address yet' };
    if (unknown.length > 0) return { seed: false, reason: `waiting to hear from ${unknown.join(', ')}` };
    return { seed: true };
  }

  /** seeder names the reachable peer expected to seed (the smallest seed-capable one we know), if any. */
  seeder(reachable: Iterable<PeerName>): PeerName | undefined {
    let best: PeerName | undefined = this.own.seedCapable ? this.self : undefined;
    for (const p of reachable) {
      const r = this.records.get(p);
      if (r?.seedCapable === true && (best === undefined || r.name < best)) best = r.name;
    }
    return best;
  }
}
