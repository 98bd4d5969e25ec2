/**
 * DnsRecords: the cluster-wide set of weftDNS records, gossiped on the {@link DNS_CHANNEL} channel,
 * and {@link DnsGossiper}, its {@link Gossiper}.
 *
 * A record says "`name` resolves to `addr`", registered on peer `origin` for `owner` (a container
 * reference such as its netns name, or {@link DNS_EXTERN_OWNER} for `weft dns-add` without one).
 * Several owners may share a name (every address is answered), and one name+address pair may come
 * from several origins: each is its own record, keyed by (origin, owner, name, addr).
 *
 * ## Versions, not clocks
 *
 * Only the origin changes its own records. It stamps every write (an add, or a removal, which
 * leaves a tombstone: the record with `deleted` set) with the next value of its logical clock, in
 * its current incarnation. Copies of one record are ordered by version, higher wins; two copies
 * with an equal version (only a fault makes them) resolve to the tombstone, so every replica picks
 * the same one. An origin's incarnation supersedes its older incarnations wholesale: on seeing
 * incarnation I of an origin, a replica drops everything it holds of that origin's older ones (a
 * restarted origin that forgot its clock re-adds, in its new incarnation, the records that
 * survived). No wall-clock time takes part in any of this, so skewed or jumping clocks cannot order
 * anything wrongly.
 *
 * ## Floors: a tombstone may be forgotten once it is implied
 *
 * A tombstone must outlive every stale copy of the record it buries, or anti-entropy from a
 * lagging replica brings the record back. Rather than guessing how long that is, each replica
 * keeps per origin a floor F, with this invariant:
 *
 * ```
 *   every record of the origin with version <= F that is still current at the origin (not yet
 *   overwritten by a later write to its key) is among the live records we hold
 * ```
 *
 * so a live record with version <= F that we do not hold is stale and is refused, and a tombstone
 * with version <= F is implied: dropping it changes nothing. Floors move like this:
 *
 * - the origin is authoritative: its own floor is its clock (it holds exactly its current state);
 * - a full state carries, per origin, the sender's floor and every record it holds of that origin.
 *   By the sender's invariant that list has every current record up to its floor, so a receiver
 *   merges the listed records by version, raises its floor to the sender's, and drops its live
 *   records of that origin up to that floor that are not listed (they were overwritten);
 * - deltas (local changes, and what a merge passes on) claim nothing (floor 0);
 * - a record refused for lack of room leaves a hole: the floor is raised (and unlisted records
 *   dropped) only up to just below it, so we never claim what we do not hold.
 *
 * Tombstone GC drops a tombstone once it is at or below its origin's floor and was learned at
 * least the TTL ago on OUR clock (`now()`, never compared with another host's). The TTL only keeps
 * recent removals visible in status; safety comes from the floor alone, so no clock, skewed or
 * jumping, can resurrect a record: a stale live copy arriving later is either older than the
 * tombstone we still hold, or at or below the floor that let us drop it. Nor can one be lost: we
 * drop a live record only for a newer write, a newer incarnation, a full state whose sender's floor
 * proves it overwritten, or `dropOrigin`; and each of these also keeps its stale copies out (a
 * newer copy held, a newer incarnation known, a floor at or above it, a dropped origin's marker).
 * A tombstone above the floor waits for the origin's next full state to reach us (full states go
 * to one neighbour every GOSSIP_INTERVAL_MS, hop by hop), however old it is; the caps bound them.
 *
 * Our own records are never taken from others. A copy of one that is newer than our clock, or
 * conflicts with what we hold at the same version (a restart that lost its clock in the same
 * incarnation), makes us start a new incarnation above it and re-stamp our live records, so ours
 * win everywhere; `incarnation` and `clock` are the values to persist. (Two live routers sharing a
 * name would take turns doing so; the topology reports that collision.)
 *
 * ## Wire form
 *
 * One MessagePack array per message, peer names as 6 raw bytes, addresses as u32:
 *
 * ```
 * [ DNS_FORMAT,
 *   [ [ origin(bin 6), incarnation, floor,              one section per origin, at most once
 *       [ [ owner, [ [ name, addr(u32), version, deleted ], ... ] ], ... ] ],
 *     ... ] ]
 * ```
 *
 * A delta has floor 0; a full state lists, per origin, our floor and every record we hold above it
 * plus every live one. Malformed or out-of-bounds messages are refused whole with ProtocolError
 * before anything is merged.
 *
 * Over 400 lines because the record set, its wire form and its gossiper are one replicated data
 * type: the versions, floors and tombstone GC described above are invariants that encode, decode
 * and merge must keep together, and the codec's bounds are the store's caps. Split, each rule would
 * have to be checked against code in several files.
 */
import { Packr, Unpackr } from 'msgpackr';
import { z } from 'zod';
import { InputError, ProtocolError, WeftError } from '../common/errors.js';
import { type IPv4, type PeerName, peerNameFromBytes, peerNameToBytes } from '../common/types.js';
import type { Gossiper } from '../router/index.js';

// ---- Constants ----

/** DNS_CHANNEL is the name of the gossip channel that carries DNS records. */
export const DNS_CHANNEL = 'dns';
/** DNS_FORMAT is the first element of every message; another value is refused. */
export const DNS_FORMAT = 1;
/** DNS_EXTERN_OWNER is the owner of records added with `weft dns-add` without a container. */
export const DNS_EXTERN_OWNER = 'weft:extern';
/** DNS_NAME_MAX_CHARS bounds a name in text form without the trailing dot (RFC 1035: 255 octets on the wire). */
export const DNS_NAME_MAX_CHARS = 253;
/** DNS_LABEL_MAX_CHARS bounds one label of a name (RFC 1035). */
export const DNS_LABEL_MAX_CHARS = 63;
/** DNS_OWNER_MAX_CHARS bounds an owner key (a netns name or container id fits easily). */
export const DNS_OWNER_MAX_CHARS = 255;
/** DNS_ENTRIES_MAX bounds the records (live and tombstones) we hold, and the records of one message. */
export const DNS_ENTRIES_MAX = 100_000;
/** DNS_ORIGIN_ENTRIES_MAX bounds the records (live and tombstones) we hold of one origin. */
export const DNS_ORIGIN_ENTRIES_MAX = 20_000;
/** DNS_ORIGINS_MAX bounds the origins we track (dropped ones included), and the sections of one message. */
export const DNS_ORIGINS_MAX = 16_384;
/**
 * DNS_TOMBSTONE_TTL_MS is the least time, on our clock from when we stored it, a tombstone is kept;
 * gc drops it only once its origin's floor implies it as well.
 */
export const DNS_TOMBSTONE_TTL_MS = 10 * 60_000;
/** DNS_INCARNATION_MAX is the largest incarnation: one below 2^53 - 1 so a re-stamp can always add 1. */
export const DNS_INCARNATION_MAX = Number.MAX_SAFE_INTEGER - 1;

// ---- Types ----

/** DnsRecord is one copy of a record: immutable, plain and JSON-safe. */
export interface DnsRecord {
  /** origin is the peer that registered the record; only it changes it. */
  readonly origin: PeerName;
  /** owner is the container reference (netns name, container id) or {@link DNS_EXTERN_OWNER}. */
  readonly owner: string;
  /** name is lower-case, without the trailing dot (`db.weft.local`). */
  readonly name: string;
  readonly addr: IPv4;
  /** incarnation is the origin's incarnation the record was written in. */
  readonly incarnation: number;
  /** version is the origin's clock at the write (>= 1, unique per write within an incarnation). */
  readonly version: number;
  /** deleted marks a tombstone: the record was removed at `version`. */
  readonly deleted: boolean;
}

/** DnsWireRecord is one record of a section: the section gives its origin and incarnation. */
export interface DnsWireRecord {
  readonly owner: string;
  readonly name: string;
  readonly addr: IPv4;
  readonly version: number;
  readonly deleted: boolean;
}

/**
 * DnsSection is what a message says about one origin. `floor` > 0 claims `records` holds every
 * record of the origin current at the sender with version <= floor (see the module comment); 0
 * claims nothing.
 */
export interface DnsSection {
  readonly origin: PeerName;
  readonly incarnation: number;
  readonly floor: number;
  readonly records: readonly DnsWireRecord[];
}

/** DnsOriginStatus is what we know of one origin, for status. */
export interface DnsOriginStatus {
  readonly origin: PeerName;
  readonly incarnation: number;
  /** floor is the version up to which our view of the origin is complete (0 for a dropped origin). */
  readonly floor: number;
  /** records counts live records and tombstones. */
  readonly records: number;
  /** dropped is set once `dropOrigin` forgot the origin: its records in `incarnation` and older are refused. */
  readonly dropped: boolean;
}

/** DnsRecordsStats are counters of what merges refused or resolved; they only grow. */
export interface DnsRecordsStats {
  /**
   * stale counts received records ignored as older than the copy we hold, or as from an older
   * incarnation; those at or below our floor are skipped uncounted (duplicates, mostly).
   */
  stale: number;
  /** overflow counts records (received or local) refused because a table was full. */
  overflow: number;
  /** superseded counts live records dropped because a full state proved them overwritten. */
  superseded: number;
  /** droppedOrigin counts received records refused because their origin was dropped. */
  droppedOrigin: number;
  /** selfConflicts counts re-stamps: copies of our own records newer than our clock. */
  selfConflicts: number;
  /** collected counts tombstones dropped by gc. */
  collected: number;
}

/** DnsRecordsOptions configures a {@link DnsRecords}. */
export interface DnsRecordsOptions {
  /** self is the local peer: the origin of the records `add` and `remove` write. */
  readonly self: PeerName;
  /**
   * incarnation must grow from one start of this peer to the next unless `clock` is restored with
   * it (a persisted start count, or the start time in ms kept above the last one). 0..DNS_INCARNATION_MAX.
   */
  readonly incarnation: number;
  /**
   * clock is the last version written in `incarnation`, when it was persisted with it; 0
   * otherwise. We continue from one past it.
   */
  readonly clock?: number;
  /** now is the local clock in ms for tombstone GC; any monotonic-ish clock (default performance.now). */
  readonly now?: () => number;
  /** tombstoneTtlMs: see {@link DNS_TOMBSTONE_TTL_MS}. */
  readonly tombstoneTtlMs?: number;
  /** maxEntries: see {@link DNS_ENTRIES_MAX}. */
  readonly maxEntries?: number;
  /** maxEntriesPerOrigin: see {@link DNS_ORIGIN_ENTRIES_MAX}. */
  readonly maxEntriesPerOrigin?: number;
  /** maxOrigins: see {@link DNS_ORIGINS_MAX}. */
  readonly maxOrigins?: number;
  /** onChange fires after the live set changed (and after a re-stamp): persist, invalidate caches. */
  readonly onChange?: () => void;
}

// ---- Names ----

function isLabelChar(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x5f; // a-z 0-9 - _
}

/**
 * dnsNameProblem says why `s` is not a name in canonical form, or undefined if it is: 1 to 253
 * characters, labels of 1 to 63 of `a-z 0-9 - _` not starting or ending with `-`, no trailing dot.
 * Never throws.
 */
export function dnsNameProblem(s: string): string | undefined {
  if (typeof s !== 'string' || s.length === 0 || s.length > DNS_NAME_MAX_CHARS) {
    return `want 1-${DNS_NAME_MAX_CHARS} characters`;
  }
  let start = 0;
  for (let i = 0; i <= s.length; i++) {
    const c = i === s.length ? 0x2e : s.charCodeAt(i);
    if (c === 0x2e) {
      const len = i - start;
      if (len === 0) return 'empty label';
      if (len > DNS_LABEL_MAX_CHARS) return `label longer than ${DNS_LABEL_MAX_CHARS} characters`;
      if (s.charCodeAt(start) === 0x2d || s.charCodeAt(i - 1) === 0x2d) return 'label starts or ends with -';
      start = i + 1;
    } else if (!isLabelChar(c)) return 'want lower-case letters, digits, - and _ in labels';
  }
  return undefined;
}

/** normalizeDnsName lower-cases a name and strips one trailing dot. Throws InputError if the result is invalid. */
export function normalizeDnsName(s: string): string {
  let v = s.toLowerCase();
  if (v.endsWith('.')) v = v.slice(0, -1);
  const problem = dnsNameProblem(v);
  if (problem !== undefined) throw new InputError(`invalid dns name ${JSON.stringify(s.slice(0, 64))}: ${problem}`);
  return v;
}

/** ownerProblem says why `s` cannot be an owner key (empty, too long, control characters), or undefined. */
export function ownerProblem(s: string): string | undefined {
  if (typeof s !== 'string' || s.length === 0 || s.length > DNS_OWNER_MAX_CHARS) {
    return `want 1-${DNS_OWNER_MAX_CHARS} characters`;
  }
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return 'control character';
  }
  return undefined;
}

// ---- Wire form ----

const packr = new Packr({ useRecords: false, moreTypes: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, structuredClone: false, moreTypes: false });

const wirePeer = z.custom<Uint8Array>((v) => v instanceof Uint8Array && v.length === 6, 'want a 6-byte peer name');
const wireOwner = z
  .string()
  .max(DNS_OWNER_MAX_CHARS)
  .refine((s) => ownerProblem(s) === undefined, 'invalid owner');

type WireRecordTuple = [name: string, addr: number, version: number, deleted: boolean];

/**
 * wireRecordProblem checks one `[name, addr, version, deleted]` by hand, for {@link WireRecords}:
 * zod's cost per tuple (a few microseconds) would make merging a 100k-record full state spend
 * 200 ms validating it. Never throws.
 */
function wireRecordProblem(v: unknown): string | undefined {
  if (!Array.isArray(v) || v.length !== 4) return 'want [name, addr, version, deleted]';
  const [name, addr, version, deleted] = v as unknown[];
  if (typeof name !== 'string') return 'name: want a string';
  const problem = dnsNameProblem(name);
  if (problem !== undefined) return `name: ${problem}`;
  if (!Number.isInteger(addr) || (addr as number) < 0 || (addr as number) > 0xffffffff) return 'addr: want a u32';
  if (!Number.isSafeInteger(version) || (version as number) < 1) return 'version: want an integer >= 1';
  if (typeof deleted !== 'boolean') return 'deleted: want a boolean';
  return undefined;
}

/** WireRecords is the record list of one owner: 1..DNS_ORIGIN_ENTRIES_MAX tuples, each checked by wireRecordProblem. */
const WireRecords = z
  .custom<WireRecordTuple[]>(
    (v) => Array.isArray(v) && v.length >= 1 && v.length <= DNS_ORIGIN_ENTRIES_MAX,
    `want 1-${DNS_ORIGIN_ENTRIES_MAX} records`,
  )
  .superRefine((list, ctx) => {
    for (let i = 0; i < list.length; i++) {
      const problem = wireRecordProblem(list[i]);
      if (problem !== undefined) {
        ctx.addIssue({ code: 'custom', message: problem, path: [i] });
        return;
      }
    }
  });
const WireOwner = z.tuple([wireOwner, WireRecords]);
const WireSection = z.tuple([
  wirePeer,
  z.int().min(0).max(DNS_INCARNATION_MAX),
  z.int().min(0).max(Number.MAX_SAFE_INTEGER),
  z.array(WireOwner).max(DNS_ORIGIN_ENTRIES_MAX),
]);
const WireMessage = z.tuple([z.literal(DNS_FORMAT), z.array(WireSection).max(DNS_ORIGINS_MAX)]);

/**
 * encodeDnsMessage writes sections in the wire form into a new buffer, records grouped by owner.
 * The caller passes valid sections (what DnsRecords makes); nothing is checked here.
 */
export function encodeDnsMessage(sections: readonly DnsSection[]): Uint8Array {
  const wire = sections.map((s) => {
    const byOwner = new Map<string, unknown[]>();
    for (const r of s.records) {
      let list = byOwner.get(r.owner);
      if (list === undefined) {
        list = [];
        byOwner.set(r.owner, list);
      }
      list.push([r.name, r.addr, r.version, r.deleted]);
    }
    const origin = new Uint8Array(6);
    peerNameToBytes(s.origin, origin, 0);
    return [origin, s.incarnation, s.floor, [...byOwner]];
  });
  // packr returns a Buffer view into its scratch space (and Buffer#slice does not copy): copy it out.
  return new Uint8Array(packr.pack([DNS_FORMAT, wire]));
}

/**
 * decodeDnsMessage validates and decodes a message. Throws ProtocolError for anything malformed or
 * out of bounds: bad names or owners, more than {@link DNS_ENTRIES_MAX} records in all or
 * {@link DNS_ORIGIN_ENTRIES_MAX} in one section, an origin listed twice.
 *
 * @param bytes borrowed: nothing in the result refers to it.
 */
export function decodeDnsMessage(bytes: Uint8Array): DnsSection[] {
  let value: unknown;
  try {
    value = unpackr.unpack(bytes);
  } catch (err) {
    throw new ProtocolError(`undecodable dns message: ${err instanceof Error ? err.message.slice(0, 120) : 'error'}`, {
      cause: err,
    });
  }
  const r = WireMessage.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0];
    const where = issue !== undefined && issue.path.length > 0 ? `${issue.path.map(String).join('.')}: ` : '';
    throw new ProtocolError(`invalid dns message: ${where}${issue?.message ?? 'bad value'}`, { cause: r.error });
  }
  const seen = new Set<PeerName>();
  let total = 0;
  return r.data[1].map(([originBytes, incarnation, floor, owners], i) => {
    const origin = peerNameFromBytes(originBytes, 0);
    if (seen.has(origin)) throw new ProtocolError(`invalid dns message: section ${i}: origin ${origin} listed twice`);
    seen.add(origin);
    const records: DnsWireRecord[] = [];
    for (const [owner, list] of owners) {
      for (const [name, addr, version, deleted] of list) {
        records.push({ owner, name, addr: addr as IPv4, version, deleted });
      }
    }
    if (records.length > DNS_ORIGIN_ENTRIES_MAX) {
      throw new ProtocolError(
        `invalid dns message: section ${i}: ${records.length} records (max ${DNS_ORIGIN_ENTRIES_MAX})`,
      );
    }
    total += records.length;
    if (total > DNS_ENTRIES_MAX) {
      throw new ProtocolError(`invalid dns message: more than ${DNS_ENTRIES_MAX} records`);
    }
    return { origin, incarnation, floor, records };
  });
}

// ---- DnsRecords ----

/** Stored is a record as we hold it: the record itself, one object per record. */
interface Stored extends DnsRecord {
  /** learnedAt is our clock when we stored this copy (tombstone GC). */
  readonly learnedAt: number;
}

/** copyRecord returns a plain copy of a record without our bookkeeping. */
function copyRecord(s: DnsRecord): DnsRecord {
  return {
    origin: s.origin,
    owner: s.owner,
    name: s.name,
    addr: s.addr,
    incarnation: s.incarnation,
    version: s.version,
    deleted: s.deleted,
  };
}

/** OriginState is everything we hold of one origin, in one incarnation. */
interface OriginState {
  incarnation: number;
  /** floor: see the module comment. Always our clock for ourselves. */
  floor: number;
  /** dropped marks an origin forgotten by dropOrigin: it holds nothing and refuses its incarnation and older. */
  dropped: boolean;
  /** size counts records (live and tombstones) over all owners. */
  size: number;
  /** owners maps owner → `name/addr` → record. */
  readonly owners: Map<string, Map<string, Stored>>;
}

function newOrigin(incarnation: number): OriginState {
  return { incarnation, floor: 0, dropped: false, size: 0, owners: new Map() };
}

function recordKey(name: string, addr: number): string {
  return `${name}/${addr}`;
}

const EMPTY_ADDRS: readonly IPv4[] = Object.freeze([]);
const EMPTY_NAMES: readonly string[] = Object.freeze([]);

/** SnapshotPlan: see DnsRecords.planSnapshot. */
interface SnapshotPlan {
  /** fresh counts keys the section brings that we would store anew. */
  readonly fresh: number;
  /** unlisted are our records of the origin at or below the section's floor that it does not list: [owner, key, record]. */
  readonly unlisted: readonly (readonly [string, string, DnsRecord])[];
}

/** Outcome of merging one received record: stored, ignored (stale or a duplicate), or refused for lack of room. */
type Outcome = 'stored' | 'ignored' | 'overflow';

/**
 * DnsRecords holds every record we know (ours and the cluster's) with indexes for the DNS server.
 * It is pure and synchronous with no timers: the owner broadcasts what `add`/`remove` return,
 * feeds received payloads to {@link merge} (through {@link DnsGossiper}), and calls {@link gc}
 * now and then (every minute, say).
 */
export class DnsRecords {
  /** self is the local peer. */
  readonly self: PeerName;
  /** stats are live counters; read them, do not write. */
  readonly stats: DnsRecordsStats = {
    stale: 0,
    overflow: 0,
    superseded: 0,
    droppedOrigin: 0,
    selfConflicts: 0,
    collected: 0,
  };
  private inc: number;
  private readonly now: () => number;
  private readonly ttlMs: number;
  private readonly maxEntries: number;
  private readonly maxPerOrigin: number;
  private readonly maxOrigins: number;
  private readonly onChange: (() => void) | undefined;
  private readonly byOrigin = new Map<PeerName, OriginState>();
  /** total counts records (live and tombstones) of all origins. */
  private total = 0;
  private live = 0;
  /** byName maps name → addr → number of live records with that pair; byAddr the reverse. */
  private readonly byName = new Map<string, Map<IPv4, number>>();
  private readonly byAddr = new Map<IPv4, Map<string, number>>();
  private readonly nameCache = new Map<string, readonly IPv4[]>();
  private readonly addrCache = new Map<IPv4, readonly string[]>();
  private gen = 0;
  private liveChanged = false;
  /** forced is set while a forced collection already ran in this operation (run it at most once). */
  private forced = false;

  /** Throws InputError for an out-of-range incarnation or clock. */
  constructor(opts: DnsRecordsOptions) {
    if (!Number.isSafeInteger(opts.incarnation) || opts.incarnation < 0 || opts.incarnation > DNS_INCARNATION_MAX) {
      throw new InputError(`invalid dns incarnation ${opts.incarnation}: want 0-${DNS_INCARNATION_MAX}`);
    }
    const clock = opts.clock ?? 0;
    if (!Number.isSafeInteger(clock) || clock < 0 || clock >= Number.MAX_SAFE_INTEGER) {
      throw new InputError(`invalid dns clock ${clock}`);
    }
    this.self = opts.self;
    this.inc = opts.incarnation;
    this.now = opts.now ?? (() => performance.now());
    this.ttlMs = opts.tombstoneTtlMs ?? DNS_TOMBSTONE_TTL_MS;
    this.maxEntries = opts.maxEntries ?? DNS_ENTRIES_MAX;
    this.maxPerOrigin = opts.maxEntriesPerOrigin ?? DNS_ORIGIN_ENTRIES_MAX;
    this.maxOrigins = opts.maxOrigins ?? DNS_ORIGINS_MAX;
    this.onChange = opts.onChange;
    const own = newOrigin(this.inc);
    // A restart that keeps its incarnation is itself a change (the records not re-added are
    // gone): it takes a version, so that our first full state, listing none of them, sits above
    // every floor that still lists them.
    own.floor = clock > 0 ? clock + 1 : 0;
    this.byOrigin.set(this.self, own);
  }

  /** incarnation is our current incarnation (it changes only on a re-stamp; persist it with `clock`). */
  get incarnation(): number {
    return this.inc;
  }

  /** clock is the version of our last write in `incarnation`. */
  get clock(): number {
    return this.ownState().floor;
  }

  /** version grows by one after every operation that changed the live set: key answer caches on it. */
  get version(): number {
    return this.gen;
  }

  /** liveCount counts live records. */
  get liveCount(): number {
    return this.live;
  }

  /** size counts every record held, tombstones included. */
  get size(): number {
    return this.total;
  }

  // ---- Lookups ----

  /**
   * lookupName returns the addresses of every live record named `name` (canonical form:
   * lower-case, no trailing dot), deduplicated and ascending; empty when none. The array is shared
   * and frozen: valid until the next change, never mutated.
   */
  lookupName(name: string): readonly IPv4[] {
    const hit = this.nameCache.get(name);
    if (hit !== undefined) return hit;
    const m = this.byName.get(name);
    if (m === undefined) return EMPTY_ADDRS;
    const out = Object.freeze([...m.keys()].sort((a, b) => a - b));
    this.nameCache.set(name, out);
    return out;
  }

  /** lookupAddr returns the names of every live record with address `addr` (for PTR), deduplicated and sorted. */
  lookupAddr(addr: number): readonly string[] {
    const hit = this.addrCache.get(addr as IPv4);
    if (hit !== undefined) return hit;
    const m = this.byAddr.get(addr as IPv4);
    if (m === undefined) return EMPTY_NAMES;
    const out = Object.freeze([...m.keys()].sort());
    this.addrCache.set(addr as IPv4, out);
    return out;
  }

  /** entries returns copies of every record held, tombstones included, sorted by name, addr, origin, owner. */
  entries(): DnsRecord[] {
    const out: DnsRecord[] = [];
    for (const os of this.byOrigin.values()) {
      for (const m of os.owners.values()) for (const s of m.values()) out.push(copyRecord(s));
    }
    return out.sort(compareRecords);
  }

  /** origins describes every origin we track, sorted by name. */
  origins(): DnsOriginStatus[] {
    return [...this.byOrigin]
      .map(([origin, os]) => ({
        origin,
        incarnation: os.incarnation,
        floor: os.dropped ? 0 : os.floor,
        records: os.size,
        dropped: os.dropped,
      }))
      .sort((a, b) => (a.origin < b.origin ? -1 : a.origin > b.origin ? 1 : 0));
  }

  // ---- Local operations ----

  /**
   * add registers `name` → `addr` for `owner` on this peer and returns the delta to broadcast, or
   * undefined when the record was already live. `name` is normalised (lower-case, no trailing dot);
   * keeping it inside the DNS domain is the caller's business. Throws InputError for a bad name, owner or address, and WeftError EWEFT_UNAVAILABLE (counted
   * in `stats.overflow`) when the table is full.
   */
  add(owner: string, name: string, addr: number): Uint8Array | undefined {
    const n = normalizeDnsName(name);
    checkOwner(owner);
    if (!Number.isInteger(addr) || addr < 0 || addr > 0xffffffff) throw new InputError(`invalid ipv4 address ${addr}`);
    const own = this.ownState();
    const key = recordKey(n, addr);
    const cur = own.owners.get(owner)?.get(key);
    if (cur !== undefined && !cur.deleted) return undefined;
    this.forced = false;
    if (cur === undefined && !this.hasRoom(own)) {
      this.stats.overflow++;
      throw new WeftError('EWEFT_UNAVAILABLE', `dns: no room for ${n}: ${this.total} records held`);
    }
    const rec = this.write(owner, n, addr as IPv4, false);
    this.finish();
    return encodeDnsMessage([{ origin: this.self, incarnation: this.inc, floor: 0, records: [rec] }]);
  }

  /**
   * remove writes tombstones for the live records of `owner` on this peer, all of them or those
   * matching `name` and/or `addr`, and returns the delta to broadcast, or undefined when none
   * matched. Throws InputError for a bad name.
   */
  remove(owner: string, name?: string, addr?: number): Uint8Array | undefined {
    const n = name === undefined ? undefined : normalizeDnsName(name);
    const m = this.ownState().owners.get(owner);
    if (m === undefined) return undefined;
    const doomed: DnsRecord[] = [];
    for (const r of m.values()) {
      if (!r.deleted && (n === undefined || r.name === n) && (addr === undefined || r.addr === addr)) doomed.push(r);
    }
    if (doomed.length === 0) return undefined;
    const records = doomed.map((r) => this.write(owner, r.name, r.addr, true));
    this.finish();
    return encodeDnsMessage([{ origin: this.self, incarnation: this.inc, floor: 0, records }]);
  }

  /**
   * dropOrigin forgets every record of `peer`. With `refuse` (the default: gone for good, rmpeer'd)
   * it from then on refuses its records in the incarnation we knew (or `incarnation`, if higher)
   * and older ones; a newer incarnation is accepted. Without (forgotten as unreachable: it may come
   * back, unrestarted, when a partition heals) its records are taken again when gossiped. Returns
   * the number of records dropped. Throws InputError for ourselves.
   */
  dropOrigin(peer: PeerName, incarnation?: number, refuse = true): number {
    if (peer === this.self) throw new InputError('dns: cannot drop our own records with dropOrigin');
    const os = this.byOrigin.get(peer);
    const n = os?.size ?? 0;
    if (os !== undefined) this.clearOrigin(os);
    this.byOrigin.delete(peer);
    const inc = Math.max(os?.incarnation ?? -1, incarnation ?? -1);
    if ((refuse || os?.dropped === true) && inc >= 0 && (this.byOrigin.size < this.maxOrigins || this.evictDropped())) {
      // Re-inserted last: eviction takes the oldest drop first.
      this.byOrigin.set(peer, { ...newOrigin(inc), dropped: true });
    }
    this.finish();
    return n;
  }

  /**
   * gc drops tombstones at or below their origin's floor that we learned at least the TTL ago by
   * our clock. Returns how many it dropped. Never changes the live set.
   */
  gc(): number {
    return this.collect(false);
  }

  // ---- Gossip ----

  /**
   * merge folds a received payload (a delta or a full state) in and returns the records that were
   * new to us, encoded as a delta, or undefined when nothing was. Throws ProtocolError, merging
   * nothing, for a malformed payload; refusals of single records (stale, no room, dropped origin)
   * are counted in `stats` instead.
   *
   * @param bytes borrowed: nothing kept refers to it.
   */
  merge(bytes: Uint8Array): Uint8Array | undefined {
    return this.mergeSections(decodeDnsMessage(bytes));
  }

  /** mergeSections is {@link merge} after decoding (the sections are valid, as decodeDnsMessage makes them). */
  private mergeSections(sections: readonly DnsSection[]): Uint8Array | undefined {
    this.forced = false;
    const out: DnsSection[] = [];
    let restampAbove = -1;
    for (const s of sections) {
      if (s.origin === this.self) {
        if (this.conflictsWithUs(s)) restampAbove = Math.max(restampAbove, s.incarnation);
        continue;
      }
      const d = this.mergeSection(s);
      if (d !== undefined) out.push(d);
    }
    if (restampAbove >= 0) {
      this.stats.selfConflicts++;
      if (this.restamp(restampAbove)) out.push(this.sectionOf(this.self, this.ownState()));
    }
    this.finish();
    return out.length === 0 ? undefined : encodeDnsMessage(out);
  }

  /**
   * fullState encodes, per origin we have not dropped, our floor and every live record and every
   * tombstone above the floor (tombstones at or below it are implied). Our own section is always
   * there, so a restarted peer with no records still supersedes its previous incarnation.
   */
  fullState(): Uint8Array {
    const sections: DnsSection[] = [];
    for (const [origin, os] of this.byOrigin) if (!os.dropped) sections.push(this.sectionOf(origin, os));
    return encodeDnsMessage(sections);
  }

  // ---- Internals ----

  private ownState(): OriginState {
    return this.byOrigin.get(this.self)!;
  }

  private sectionOf(origin: PeerName, os: OriginState): DnsSection {
    const records: DnsWireRecord[] = [];
    for (const m of os.owners.values()) {
      for (const rec of m.values()) {
        if (!rec.deleted || rec.version > os.floor) records.push(rec);
      }
    }
    return { origin, incarnation: os.incarnation, floor: os.floor, records };
  }

  /** write stores a record of ours at the next version of our clock (room already checked). */
  private write(owner: string, name: string, addr: IPv4, deleted: boolean): DnsRecord {
    const own = this.ownState();
    own.floor++;
    const rec: Stored = {
      origin: this.self,
      owner,
      name,
      addr,
      incarnation: this.inc,
      version: own.floor,
      deleted,
      learnedAt: this.now(),
    };
    this.put(own, rec);
    return rec;
  }

  /**
   * conflictsWithUs says whether a section of our own records proves someone holds copies newer
   * than our clock, or different from ours at the same version: only a re-stamp makes ours win.
   */
  private conflictsWithUs(s: DnsSection): boolean {
    if (s.incarnation < this.inc) return false;
    const own = this.ownState();
    if (s.incarnation > this.inc || s.floor > own.floor) return true;
    for (const r of s.records) {
      if (r.version > own.floor) return true;
      const cur = own.owners.get(r.owner)?.get(recordKey(r.name, r.addr));
      if (cur !== undefined && cur.version === r.version && cur.deleted !== r.deleted) return true;
    }
    return false;
  }

  /**
   * restamp starts a new incarnation above `seen` and rewrites our live records in it (versions
   * 1..n); our tombstones go, as the new incarnation supersedes everything older. False (nothing
   * changed) when no incarnation is left.
   */
  private restamp(seen: number): boolean {
    const next = Math.max(this.inc, seen) + 1;
    if (next > DNS_INCARNATION_MAX) return false;
    const own = this.ownState();
    const live: DnsRecord[] = [];
    for (const m of own.owners.values()) for (const rec of m.values()) if (!rec.deleted) live.push(rec);
    this.clearOrigin(own);
    this.inc = next;
    own.incarnation = next;
    own.floor = 0;
    for (const r of live) this.write(r.owner, r.name, r.addr, false);
    return true;
  }

  /**
   * mergeSection applies one section of another origin; returns the delta to pass on (records
   * newly stored, and the incarnation when it changed), or undefined.
   */
  private mergeSection(s: DnsSection): DnsSection | undefined {
    let os = this.byOrigin.get(s.origin);
    if (os !== undefined && (s.incarnation < os.incarnation || (s.incarnation === os.incarnation && os.dropped))) {
      if (os.dropped) this.stats.droppedOrigin += s.records.length;
      else this.stats.stale += s.records.length;
      return undefined;
    }
    let reset = false;
    if (os === undefined || s.incarnation > os.incarnation) {
      if (os === undefined) {
        if (this.byOrigin.size >= this.maxOrigins && !this.evictDropped()) {
          this.stats.overflow += s.records.length;
          return undefined;
        }
      } else {
        this.clearOrigin(os);
        this.byOrigin.delete(s.origin);
      }
      os = newOrigin(s.incarnation);
      this.byOrigin.set(s.origin, os);
      reset = true;
    }
    const floor = os.floor;
    // A floor no higher than ours tells us nothing: what it lists at or below our floor we hold
    // (or it is stale), and by its sender's invariant it proves nothing we hold overwritten. With
    // nothing held there is nothing to drop either.
    const plan = s.floor > floor && os.size > 0 ? this.planSnapshot(os, s, floor) : undefined;
    // reach: how far the section's claim holds for us. If everything it brings fits, all of it
    // (after dropping what it proves overwritten, first, to make room); otherwise a record it
    // needed that we had no room for leaves a hole at its version, and we claim (and drop)
    // nothing from there up.
    let reach = s.floor;
    const fits = plan !== undefined && this.makeRoomFor(os, plan);
    const stored = new Map<string, DnsRecord>();
    for (const r of s.records) {
      // At or below our floor: we hold it, or a newer copy, or it is stale (the floor's
      // invariant); so in steady state a full state costs no lookups.
      if (r.version <= floor) continue;
      const key = recordKey(r.name, r.addr);
      const outcome = this.mergeRecord(os, s, r, key);
      if (outcome === 'stored') stored.set(`${r.owner}\n${key}`, os.owners.get(r.owner)!.get(key)!);
      else if (outcome === 'overflow' && r.version <= reach) reach = r.version - 1;
    }
    if (plan !== undefined && !fits) {
      for (const [owner, key, rec] of plan.unlisted) {
        if (!rec.deleted && rec.version <= reach) this.dropSuperseded(os, owner, key);
      }
    }
    if (reach > os.floor) os.floor = reach;
    if (stored.size === 0 && !reset) return undefined;
    return { origin: s.origin, incarnation: os.incarnation, floor: 0, records: [...stored.values()] };
  }

  /**
   * planSnapshot lists what a section with a floor would change: our records of the origin at or
   * below its floor that it does not list (overwritten, by its sender's invariant), and how many
   * keys it brings that we would store anew.
   */
  private planSnapshot(os: OriginState, s: DnsSection, floor: number): SnapshotPlan {
    const listed = new Set<string>();
    const fresh = new Set<string>();
    for (const r of s.records) {
      const key = recordKey(r.name, r.addr);
      const k = `${r.owner}\n${key}`;
      listed.add(k);
      if (r.version > floor && os.owners.get(r.owner)?.get(key) === undefined) fresh.add(k);
    }
    const unlisted: [string, string, DnsRecord][] = [];
    for (const [owner, m] of os.owners) {
      for (const [key, rec] of m) {
        if (rec.version <= s.floor && !listed.has(`${owner}\n${key}`)) unlisted.push([owner, key, rec]);
      }
    }
    return { fresh: fresh.size, unlisted };
  }

  /**
   * makeRoomFor applies a snapshot plan up front when everything the section brings will then fit:
   * it drops the unlisted live records, and, if room is short, the unlisted tombstones too (the
   * floor the section then sets implies them) and implied tombstones anywhere. Returns false,
   * changing nothing of this origin, when it would not all fit.
   */
  private makeRoomFor(os: OriginState, plan: SnapshotPlan): boolean {
    let live = 0;
    for (const [, , rec] of plan.unlisted) if (!rec.deleted) live++;
    const fitsAfter = (dropped: number) =>
      os.size - dropped + plan.fresh <= this.maxPerOrigin && this.total - dropped + plan.fresh <= this.maxEntries;
    const all = plan.unlisted.length;
    let withTombstones = !fitsAfter(live);
    if (withTombstones && !fitsAfter(all)) {
      if (this.forced || os.size - all + plan.fresh > this.maxPerOrigin) return false;
      // Implied tombstones of other origins may make the global room; ours are in `unlisted` already.
      this.forced = true;
      this.collect(true, os);
      if (!fitsAfter(all)) return false;
      withTombstones = !fitsAfter(live);
    }
    for (const [owner, key, rec] of plan.unlisted) {
      if (!rec.deleted) this.dropSuperseded(os, owner, key);
      else if (withTombstones) {
        this.dropRecord(os, owner, key);
        this.stats.collected++;
      }
    }
    return true;
  }

  private dropSuperseded(os: OriginState, owner: string, key: string): void {
    this.dropRecord(os, owner, key);
    this.stats.superseded++;
  }

  /** mergeRecord applies one record above our floor: the higher version wins, an equal one goes to the tombstone. */
  private mergeRecord(os: OriginState, s: DnsSection, r: DnsWireRecord, key: string): Outcome {
    const cur = os.owners.get(r.owner)?.get(key);
    if (cur === undefined) {
      if (!this.hasRoom(os)) {
        this.stats.overflow++;
        return 'overflow';
      }
    } else if (r.version < cur.version || (r.version === cur.version && (cur.deleted || !r.deleted))) {
      if (r.version < cur.version) this.stats.stale++;
      return 'ignored';
    }
    this.put(os, {
      origin: s.origin,
      owner: r.owner,
      name: r.name,
      addr: r.addr,
      incarnation: s.incarnation,
      version: r.version,
      deleted: r.deleted,
      learnedAt: this.now(),
    });
    return 'stored';
  }

  /** hasRoom says whether one more record of `os` fits, collecting implied tombstones (once per operation) if not. */
  private hasRoom(os: OriginState): boolean {
    const fits = () => this.total < this.maxEntries && os.size < this.maxPerOrigin;
    if (fits()) return true;
    if (this.forced) return false;
    this.forced = true;
    this.collect(true);
    return fits();
  }

  /**
   * collect drops implied tombstones (at or below the floor) of every origin but `skip`: those
   * learned at least the TTL ago, or all when forced.
   */
  private collect(force: boolean, skip?: OriginState): number {
    const now = this.now();
    let n = 0;
    for (const os of this.byOrigin.values()) {
      if (os === skip) continue;
      for (const [owner, m] of os.owners) {
        for (const [key, rec] of m) {
          if (rec.deleted && rec.version <= os.floor && (force || now - rec.learnedAt >= this.ttlMs)) {
            this.dropRecord(os, owner, key);
            n++;
          }
        }
      }
    }
    this.stats.collected += n;
    return n;
  }

  /** evictDropped forgets the oldest dropped origin to make room for another; false when there is none. */
  private evictDropped(): boolean {
    for (const [peer, os] of this.byOrigin) {
      if (os.dropped) {
        this.byOrigin.delete(peer);
        return true;
      }
    }
    return false;
  }

  /** put stores a record (replacing the copy of its key), keeping counts and indexes. */
  private put(os: OriginState, rec: Stored): void {
    let m = os.owners.get(rec.owner);
    if (m === undefined) {
      m = new Map();
      os.owners.set(rec.owner, m);
    }
    const key = recordKey(rec.name, rec.addr);
    const prev = m.get(key);
    if (prev === undefined) {
      os.size++;
      this.total++;
    } else if (!prev.deleted) this.index(prev, -1);
    m.set(key, rec);
    if (!rec.deleted) this.index(rec, 1);
  }

  /** dropRecord deletes one stored record, keeping counts and indexes. */
  private dropRecord(os: OriginState, owner: string, key: string): void {
    const m = os.owners.get(owner);
    const s = m?.get(key);
    if (m === undefined || s === undefined) return;
    m.delete(key);
    if (m.size === 0) os.owners.delete(owner);
    os.size--;
    this.total--;
    if (!s.deleted) this.index(s, -1);
  }

  private clearOrigin(os: OriginState): void {
    for (const m of os.owners.values()) for (const rec of m.values()) if (!rec.deleted) this.index(rec, -1);
    this.total -= os.size;
    os.size = 0;
    os.owners.clear();
  }

  private index(rec: DnsRecord, delta: 1 | -1): void {
    this.live += delta;
    this.liveChanged = true;
    this.nameCache.delete(rec.name);
    this.addrCache.delete(rec.addr);
    bump(this.byName, rec.name, rec.addr, delta);
    bump(this.byAddr, rec.addr, rec.name, delta);
  }

  /** finish ends an operation: one version step and one onChange if the live set changed. */
  private finish(): void {
    if (!this.liveChanged) return;
    this.liveChanged = false;
    this.gen++;
    this.onChange?.();
  }
}

/** bump adds `delta` to the count of (k1, k2), deleting counts that reach 0 and maps that empty. */
function bump<K1, K2>(outer: Map<K1, Map<K2, number>>, k1: K1, k2: K2, delta: number): void {
  let inner = outer.get(k1);
  if (inner === undefined) {
    inner = new Map();
    outer.set(k1, inner);
  }
  const c = (inner.get(k2) ?? 0) + delta;
  if (c > 0) inner.set(k2, c);
  else {
    inner.delete(k2);
    if (inner.size === 0) outer.delete(k1);
  }
}

function checkOwner(owner: string): void {
  const problem = ownerProblem(owner);
  if (problem !== undefined)
    throw new InputError(`invalid dns owner ${JSON.stringify(String(owner).slice(0, 64))}: ${problem}`);
}

function cmp(a: string | number, b: string | number): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareRecords(a: DnsRecord, b: DnsRecord): number {
  return cmp(a.name, b.name) || a.addr - b.addr || cmp(a.origin, b.origin) || cmp(a.owner, b.owner);
}

// ---- Gossip adapter ----

/**
 * DnsGossiper is the {@link Gossiper} of the {@link DNS_CHANNEL} channel: it merges received
 * deltas and full states into a DnsRecords and hands back what was new.
 */
export class DnsGossiper implements Gossiper {
  constructor(private readonly records: DnsRecords) {}

  /** onGossip merges a delta or a full state; returns the records that were new, encoded. Throws ProtocolError. */
  onGossip(_src: PeerName, payload: Uint8Array): Uint8Array | undefined {
    return this.records.merge(payload);
  }

  /** onGossipUnicast merges a payload sent to us alone. Throws ProtocolError. */
  onGossipUnicast(_src: PeerName, payload: Uint8Array): void {
    this.records.merge(payload);
  }

  /** fullState is every origin's floor and records (ours always included). */
  fullState(): Uint8Array {
    return this.records.fullState();
  }
}
