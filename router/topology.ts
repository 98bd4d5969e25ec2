/**
 * Topology: the membership CRDT every router gossips. Each peer owns one {@link PeerEntry} (its
 * identity, its control connections and the overlay addresses it serves) and is the only one
 * that changes it; everyone else keeps the highest copy they have seen.
 *
 * Order of copies of one peer's entry (higher wins):
 *
 * ```
 *   (incarnation, version, canonical bytes)      compared left to right
 *    │            │        └ tie-break for two different entries with equal (incarnation, version):
 *    │            │          only a fault or a forgery makes one, but every peer picks the same one
 *    │            └ bumped by the owner on every change
 *    └ the owner's start time in ms: a restarted peer (version 1) beats its old self (version 50)
 * ```
 *
 * Taking the maximum under a total order is commutative, associative and idempotent, so every
 * peer ends with the same state whatever order messages arrive in. Our own entry is the exception:
 * nothing received ever replaces it (see {@link Topology.merge}).
 *
 * Wire form ({@link encodeEntries}), one MessagePack array, names as 6 raw bytes and underlay
 * addresses as u32 to keep per-connection cost near 20 bytes:
 *
 * ```
 * [ TOPOLOGY_FORMAT,
 *   [ [ name(bin 6), nickname, uid(decimal text), incarnation, version,
 *       [ [ peer(bin 6), addr(u32), tcpPort, outbound, established ], ... ],
 *       [ 'a.b.c.d/n', ... ], sleevePort, vxlanPort, 'sleeve' | 'vxlan' ],
 *     ... ] ]
 * ```
 */
import { Packr, Unpackr } from 'msgpackr';
import { z } from 'zod';
import { InputError, ProtocolError } from '../common/errors.js';
import { formatIPv4, type PeerName, peerNameFromBytes, peerNameToBytes } from '../common/types.js';
import type { Gossiper } from './gossip/gossip.js';
import { type Encap, NICKNAME_MAX_CHARS } from './protocol.js';

// ---- Constants (candidates for router/constants.ts) ----

/** TOPOLOGY_CHANNEL is the name of the gossip channel that carries topology entries. */
export const TOPOLOGY_CHANNEL = 'topology';
/** TOPOLOGY_FORMAT is the first element of every encoded entry list; another value is refused. */
export const TOPOLOGY_FORMAT = 1;
/** TOPOLOGY_CONNECTIONS_MAX bounds the connections one entry may list. */
export const TOPOLOGY_CONNECTIONS_MAX = 4096;
/** TOPOLOGY_CIDRS_MAX bounds the overlay prefixes one entry may list. */
export const TOPOLOGY_CIDRS_MAX = 4096;
/** TOPOLOGY_ENTRIES_MAX bounds the entries one message may carry (the cluster size we accept). */
export const TOPOLOGY_ENTRIES_MAX = 16_384;
/** UID_MAX_CHARS is the length of the largest u64 in decimal. */
export const UID_MAX_CHARS = 20;
/** CIDR_MAX_CHARS is the length of the longest `a.b.c.d/n`. */
export const CIDR_MAX_CHARS = 18;
/** IPV4_MAX_CHARS is the length of the longest dotted quad. */
export const IPV4_MAX_CHARS = 15;

/** REJECT_COLLISION is the reason given for an entry that claims our name with another UID. */
export const REJECT_COLLISION = 'peer name collision';

// ---- Types ----

/** ConnectionSummary is one control connection as its owner reports it. */
export interface ConnectionSummary {
  /** peer is the router at the other end. */
  readonly peer: PeerName;
  /** addr is that peer's underlay IPv4 as seen by the owner (dotted quad). */
  readonly addr: string;
  /** tcpPort is that peer's control port (for discovery). */
  readonly tcpPort: number;
  /** outbound is true when the owner dialled. */
  readonly outbound: boolean;
  /** established is true once the data path is proven both ways. */
  readonly established: boolean;
}

/** PeerEntry is what a peer says about itself; only the peer named `name` changes it. */
export interface PeerEntry {
  readonly name: PeerName;
  readonly nickname: string;
  /** uid is the decimal text of a non-zero u64, random per start. */
  readonly uid: string;
  /** incarnation is the ms timestamp of the peer's start: a restarted peer supersedes its old self. */
  readonly incarnation: number;
  /** version is bumped by the owner on every change. */
  readonly version: number;
  /** connections has at most one per peer; the owner keeps them sorted by peer name. */
  readonly connections: readonly ConnectionSummary[];
  /** cidrs are the overlay addresses the peer serves, `a.b.c.d/n`. */
  readonly cidrs: readonly string[];
  readonly sleevePort: number;
  readonly vxlanPort: number;
  readonly encap: Encap;
}

/** LocalPatch is what the owner may change in its own entry with {@link Topology.setLocal}. */
export type LocalPatch = Partial<Pick<PeerEntry, 'connections' | 'cidrs' | 'nickname'>>;

/** Rejection is an entry {@link Topology.merge} refused, with one line saying why. */
export interface Rejection {
  readonly entry: PeerEntry;
  readonly reason: string;
}

/**
 * MergeResult says what a merge did: `changed` holds the entries now stored that were not before
 * (the delta to gossip on; our own entry appears when the merge had to bump its version),
 * `rejected` the entries refused (impossible contents, or {@link REJECT_COLLISION}).
 */
export interface MergeResult {
  readonly changed: PeerEntry[];
  readonly rejected: Rejection[];
}

// ---- Validation ----

const PEER_NAME_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const UID_RE = /^[1-9][0-9]{0,19}$/;
const U64_MAX = (1n << 64n) - 1n;
const OCTET = '(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
const IPV4_RE = new RegExp(`^${OCTET}(\\.${OCTET}){3}$`);
const CIDR_RE = new RegExp(`^${OCTET}(\\.${OCTET}){3}/(3[0-2]|[12]?[0-9])$`);

function isPort(p: unknown): boolean {
  return Number.isInteger(p) && (p as number) >= 1 && (p as number) <= 0xffff;
}

function isCount(n: unknown): boolean {
  return Number.isSafeInteger(n) && (n as number) >= 0;
}

/**
 * entryProblem returns why an entry is impossible, or undefined if it is acceptable. It checks
 * formats and bounds (names, uid, addresses, ports, counts) and the rules the wire schema cannot:
 * no connection to itself, at most one connection per peer. Never throws, whatever the object.
 */
export function entryProblem(e: PeerEntry): string | undefined {
  try {
    if (typeof e.name !== 'string' || !PEER_NAME_RE.test(e.name))
      return `invalid peer name ${JSON.stringify(String(e.name).slice(0, 32))}`;
    if (typeof e.nickname !== 'string' || e.nickname.length > NICKNAME_MAX_CHARS) return 'invalid nickname';
    if (typeof e.uid !== 'string' || !UID_RE.test(e.uid) || BigInt(e.uid) > U64_MAX) {
      return `invalid uid ${JSON.stringify(String(e.uid).slice(0, UID_MAX_CHARS + 1))}`;
    }
    if (!isCount(e.incarnation)) return `invalid incarnation ${String(e.incarnation)}`;
    if (!isCount(e.version)) return `invalid version ${String(e.version)}`;
    if (!isPort(e.sleevePort) || !isPort(e.vxlanPort)) return 'invalid data port';
    if (e.encap !== 'sleeve' && e.encap !== 'vxlan') return `invalid encap ${JSON.stringify(e.encap)}`;
    if (!Array.isArray(e.cidrs) || e.cidrs.length > TOPOLOGY_CIDRS_MAX) return 'too many cidrs';
    for (const c of e.cidrs) {
      if (typeof c !== 'string' || c.length > CIDR_MAX_CHARS || !CIDR_RE.test(c)) {
        return `invalid cidr ${JSON.stringify(String(c).slice(0, CIDR_MAX_CHARS + 1))}`;
      }
    }
    if (!Array.isArray(e.connections) || e.connections.length > TOPOLOGY_CONNECTIONS_MAX) {
      return 'too many connections';
    }
    const seen = new Set<string>();
    for (const c of e.connections) {
      if (typeof c.peer !== 'string' || !PEER_NAME_RE.test(c.peer)) {
        return `invalid connection peer ${JSON.stringify(String(c.peer).slice(0, 32))}`;
      }
      if (c.peer === e.name) return 'connection to itself';
      if (seen.has(c.peer)) return `duplicate connection to ${c.peer}`;
      seen.add(c.peer);
      if (typeof c.addr !== 'string' || c.addr.length > IPV4_MAX_CHARS || !IPV4_RE.test(c.addr)) {
        return `invalid connection address ${JSON.stringify(String(c.addr).slice(0, IPV4_MAX_CHARS + 1))}`;
      }
      if (!isPort(c.tcpPort)) return `invalid connection port ${String(c.tcpPort)}`;
      if (typeof c.outbound !== 'boolean' || typeof c.established !== 'boolean') return 'invalid connection flags';
    }
    return undefined;
  } catch {
    return 'malformed entry';
  }
}

/** compareVersions orders two copies of one peer's entry by (incarnation, version): <0, 0 or >0. */
export function compareVersions(a: PeerEntry, b: PeerEntry): number {
  return a.incarnation !== b.incarnation ? a.incarnation - b.incarnation : a.version - b.version;
}

// ---- Wire form ----

const packr = new Packr({ useRecords: false, moreTypes: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, structuredClone: false, moreTypes: false });

const wireName = z.custom<Uint8Array>((v) => v instanceof Uint8Array && v.length === 6, 'want a 6-byte peer name');
const wirePort = z.int().min(1).max(0xffff);
const wireCount = z.int().min(0);
const WireConnection = z.tuple([wireName, z.int().min(0).max(0xffffffff), wirePort, z.boolean(), z.boolean()]);
const WireEntry = z.tuple([
  wireName,
  z.string().max(NICKNAME_MAX_CHARS),
  z.string().max(UID_MAX_CHARS),
  wireCount,
  wireCount,
  z.array(WireConnection).max(TOPOLOGY_CONNECTIONS_MAX),
  z.array(z.string().max(CIDR_MAX_CHARS)).max(TOPOLOGY_CIDRS_MAX),
  wirePort,
  wirePort,
  z.enum(['sleeve', 'vxlan']),
]);
const WireList = z.tuple([z.literal(TOPOLOGY_FORMAT), z.array(z.unknown()).max(TOPOLOGY_ENTRIES_MAX)]);

function nameBytes(name: PeerName): Uint8Array {
  const b = new Uint8Array(6);
  peerNameToBytes(name, b, 0);
  return b;
}

/** ipv4ToU32 converts a dotted quad already checked by {@link entryProblem}. */
function ipv4ToU32(s: string): number {
  const p = s.split('.');
  return ((Number(p[0]) << 24) | (Number(p[1]) << 16) | (Number(p[2]) << 8) | Number(p[3])) >>> 0;
}

/** packEntry returns the canonical encoding of one valid entry in a new buffer. */
function packEntry(e: PeerEntry): Uint8Array {
  const conns = e.connections.map((c) => [nameBytes(c.peer), ipv4ToU32(c.addr), c.tcpPort, c.outbound, c.established]);
  const wire = [
    nameBytes(e.name),
    e.nickname,
    e.uid,
    e.incarnation,
    e.version,
    conns,
    e.cidrs,
    e.sleevePort,
    e.vxlanPort,
    e.encap,
  ];
  // packr returns a view into its reusable scratch buffer: copy it out before the next pack.
  return packr.pack(wire).slice();
}

/** packList frames already packed entries as `[TOPOLOGY_FORMAT, [e1, e2, ...]]`. */
function packList(parts: readonly Uint8Array[]): Uint8Array {
  const n = parts.length;
  const arrayHeader = n < 16 ? 1 : n < 0x10000 ? 3 : 5;
  let len = 2 + arrayHeader;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  out[0] = 0x92; // fixarray of 2
  out[1] = TOPOLOGY_FORMAT; // positive fixint
  const dv = new DataView(out.buffer);
  if (n < 16) out[2] = 0x90 | n;
  else if (n < 0x10000) {
    out[2] = 0xdc;
    dv.setUint16(3, n);
  } else {
    out[2] = 0xdd;
    dv.setUint32(3, n);
  }
  let off = 2 + arrayHeader;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/**
 * encodeEntries encodes entries in the wire form (see the module comment) into a new buffer.
 * Throws InputError for an entry {@link entryProblem} refuses: sending what peers would reject is a
 * local bug.
 */
export function encodeEntries(entries: readonly PeerEntry[]): Uint8Array {
  return packList(
    entries.map((e) => {
      const problem = entryProblem(e);
      if (problem !== undefined) throw new InputError(`refusing to encode topology entry ${e.name}: ${problem}`);
      return packEntry(e);
    }),
  );
}

/** protocolError turns a zod failure into a ProtocolError naming the first issue's place (`at` leads the path). */
function protocolError(err: z.ZodError, at: readonly (string | number)[]): ProtocolError {
  const issue = err.issues[0];
  const path = [...at, ...(issue?.path ?? [])].map(String);
  const where = path.length > 0 ? `${path.join('.')}: ` : '';
  return new ProtocolError(`invalid topology: ${where}${issue?.message ?? 'bad value'}`, { cause: err });
}

/** unpackList unpacks the outer `[TOPOLOGY_FORMAT, [...]]`, leaving the entries unchecked. Throws ProtocolError. */
function unpackList(bytes: Uint8Array): unknown[] {
  let value: unknown;
  try {
    value = unpackr.unpack(bytes);
  } catch (err) {
    throw new ProtocolError(`undecodable topology: ${err instanceof Error ? err.message.slice(0, 120) : 'error'}`, {
      cause: err,
    });
  }
  const r = WireList.safeParse(value);
  if (!r.success) throw protocolError(r.error, []);
  return r.data[1];
}

/** toEntry validates one wire entry (the `index`th of its list) and converts it. Throws ProtocolError. */
function toEntry(raw: unknown, index: number): PeerEntry {
  const r = WireEntry.safeParse(raw);
  if (!r.success) throw protocolError(r.error, [1, index]);
  const [name, nickname, uid, incarnation, version, conns, cidrs, sleevePort, vxlanPort, encap] = r.data;
  return {
    name: peerNameFromBytes(name, 0),
    nickname,
    uid,
    incarnation,
    version,
    connections: conns.map(([peer, addr, tcpPort, outbound, established]) => ({
      peer: peerNameFromBytes(peer, 0),
      addr: formatIPv4(addr),
      tcpPort,
      outbound,
      established,
    })),
    cidrs,
    sleevePort,
    vxlanPort,
    encap,
  };
}

/**
 * decodeEntries decodes and validates the wire form. Throws ProtocolError for anything that is not
 * a well-formed, in-bounds entry list; formats and rules it cannot see (CIDR syntax, uid range,
 * self-connections, duplicates) are left to {@link Topology.merge}, which rejects per entry.
 *
 * @param bytes borrowed: nothing in the result refers to it.
 */
export function decodeEntries(bytes: Uint8Array): PeerEntry[] {
  return unpackList(bytes).map(toEntry);
}

/** wireEqual compares two unpacked MessagePack values (arrays, byte strings, scalars) deeply. */
function wireEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a instanceof Uint8Array && b instanceof Uint8Array) return compareBytes(a, b) === 0;
  if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!wireEqual(a[i], b[i])) return false;
  return true;
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b);
}

/** sameContent says whether two entries would encode alike (a received entry may be any object: never throws). */
function sameContent(a: PeerEntry, b: PeerEntry): boolean {
  if (
    a.name !== b.name ||
    a.nickname !== b.nickname ||
    a.uid !== b.uid ||
    a.incarnation !== b.incarnation ||
    a.version !== b.version ||
    a.sleevePort !== b.sleevePort ||
    a.vxlanPort !== b.vxlanPort ||
    a.encap !== b.encap ||
    !Array.isArray(a.cidrs) ||
    !Array.isArray(a.connections) ||
    a.cidrs.length !== b.cidrs.length ||
    a.connections.length !== b.connections.length
  ) {
    return false;
  }
  for (let i = 0; i < a.cidrs.length; i++) if (a.cidrs[i] !== b.cidrs[i]) return false;
  for (let i = 0; i < a.connections.length; i++) {
    const x = a.connections[i]!;
    const y = b.connections[i]!;
    if (
      x?.peer !== y.peer ||
      x.addr !== y.addr ||
      x.tcpPort !== y.tcpPort ||
      x.outbound !== y.outbound ||
      x.established !== y.established
    ) {
      return false;
    }
  }
  return true;
}

// ---- Topology ----

interface Stored {
  readonly entry: PeerEntry;
  /** bytes is the canonical encoding: the conflict tie-break and the cache that full-state gossip concatenates. */
  readonly bytes: Uint8Array;
  /** wire is `bytes` unpacked, made the first time a received copy is compared with it. */
  wire?: unknown;
}

/**
 * Topology holds the newest entry of every known peer, our own included. It is pure and
 * synchronous: the owner feeds it received entries and its own changes, gossips what `merge` and
 * `setLocal` return, and recomputes routes when something changed.
 */
export class Topology {
  private readonly peers = new Map<PeerName, Stored>();
  private readonly localName: PeerName;
  /** sorted caches entries() until the next change. */
  private sorted: PeerEntry[] | undefined;

  /** Throws InputError if `local` is not a valid entry. Its connections are sorted by peer. */
  constructor(local: PeerEntry) {
    this.localName = local.name;
    this.store(checkedLocal({ ...local, connections: sortConnections(local.connections) }));
  }

  /** local is our own entry as it is now. */
  get local(): PeerEntry {
    return this.peers.get(this.localName)!.entry;
  }

  /** size counts known peers, ourselves included. */
  get size(): number {
    return this.peers.size;
  }

  /**
   * setLocal changes our own entry and bumps its version; returns the new entry (gossip it).
   * Connections are sorted by peer. Throws InputError if the result would be invalid.
   */
  setLocal(patch: LocalPatch): PeerEntry {
    const cur = this.local;
    const next = checkedLocal({
      ...cur,
      ...patch,
      connections: sortConnections(patch.connections ?? cur.connections),
      version: cur.version + 1,
    });
    this.store(next);
    return next;
  }

  /**
   * merge folds received entries in, in order, and never throws. Per entry:
   *
   * - impossible contents ({@link entryProblem}): rejected with the reason;
   * - our own name, our uid, our incarnation, and newer than (or conflicting with) our entry: an
   *   echo of a state we never had; we keep our contents and bump our version past it so that ours
   *   wins everywhere (our entry is then in `changed`);
   * - our own name, another uid, an older incarnation: our previous life; ignored, since our
   *   incarnation already beats it everywhere;
   * - our own name, another uid, the same or a newer incarnation: another live router using our
   *   name; rejected with {@link REJECT_COLLISION} (the router reports it);
   * - anyone else: kept if higher in the module's order, else ignored.
   *
   * Older copies of what we hold, and identical ones, are ignored before they are validated:
   * checking what we would drop anyway costs every duplicate delivery.
   */
  merge(entries: readonly PeerEntry[]): MergeResult {
    const changed = new Map<PeerName, PeerEntry>();
    const rejected: Rejection[] = [];
    for (const e of entries) {
      const outcome = this.mergeOne(e);
      if (outcome === undefined) continue;
      if (typeof outcome === 'string') rejected.push({ entry: e, reason: outcome });
      else changed.set(outcome.name, outcome);
    }
    return { changed: [...changed.values()], rejected };
  }

  /**
   * mergeEncoded is `merge(decodeEntries(bytes))` that skips, before validating them, the entries
   * that cannot change anything: older copies of what we hold and exact copies of it (most of
   * every full state, and every duplicate delivery). Throws ProtocolError, merging nothing, if the
   * list or any entry it would merge is malformed; skipped entries are never looked into.
   *
   * @param bytes borrowed: nothing kept refers to it.
   */
  mergeEncoded(bytes: Uint8Array): MergeResult {
    const wanted: PeerEntry[] = [];
    unpackList(bytes).forEach((raw, i) => {
      if (!this.isStale(raw)) wanted.push(toEntry(raw, i));
    });
    return this.merge(wanted);
  }

  /** entries returns every known entry (ours included), sorted by name. */
  entries(): PeerEntry[] {
    this.sorted ??= [...this.peers.values()].map((s) => s.entry).sort((a, b) => (a.name < b.name ? -1 : 1));
    return [...this.sorted];
  }

  /** get returns the entry of one peer. */
  get(name: PeerName): PeerEntry | undefined {
    return this.peers.get(name)?.entry;
  }

  /** remove forgets peers (never ourselves); returns the names it removed. */
  remove(names: Iterable<PeerName>): PeerName[] {
    const removed: PeerName[] = [];
    for (const n of names) {
      if (n !== this.localName && this.peers.delete(n)) removed.push(n);
    }
    if (removed.length > 0) this.sorted = undefined;
    return removed;
  }

  /**
   * encode returns the wire form of the named entries (all, sorted by name, when omitted) from the
   * per-entry cache, without re-encoding. Unknown names are skipped.
   */
  encode(names?: Iterable<PeerName>): Uint8Array {
    const parts: Uint8Array[] = [];
    for (const n of names ?? this.entries().map((e) => e.name)) {
      const s = this.peers.get(n);
      if (s !== undefined) parts.push(s.bytes);
    }
    return packList(parts);
  }

  /** isStale says whether an unvalidated wire entry is identical to what we hold, or older than what we hold of another peer. */
  private isStale(raw: unknown): boolean {
    if (!Array.isArray(raw) || !(raw[0] instanceof Uint8Array) || raw[0].length !== 6) return false;
    const incarnation: unknown = raw[3];
    const version: unknown = raw[4];
    if (typeof incarnation !== 'number' || typeof version !== 'number') return false;
    const name = peerNameFromBytes(raw[0], 0);
    const cur = this.peers.get(name);
    if (cur === undefined) return false;
    const { entry } = cur;
    // Older copies of ourselves are not simply stale: merge decides (collision, echo).
    if (name !== this.localName && incarnation !== entry.incarnation) return incarnation < entry.incarnation;
    if (name !== this.localName && version !== entry.version) return version < entry.version;
    cur.wire ??= unpackr.unpack(cur.bytes);
    return wireEqual(raw, cur.wire);
  }

  /** mergeOne applies one entry: the stored entry if it changed, a rejection reason, or undefined. */
  private mergeOne(e: PeerEntry): PeerEntry | string | undefined {
    if (typeof e?.name !== 'string') return 'malformed entry';
    if (e.name === this.localName) return this.mergeSelf(e);
    const cur = this.peers.get(e.name);
    const order = cur === undefined ? 1 : compareVersions(e, cur.entry);
    if (order < 0) return undefined;
    // The usual duplicate delivery: identical to what we hold, so valid; skip the checks.
    if (order === 0 && cur !== undefined && sameContent(e, cur.entry)) return undefined;
    const problem = entryProblem(e);
    if (problem !== undefined) return problem;
    const bytes = packEntry(e);
    if (cur !== undefined && order === 0 && compareBytes(bytes, cur.bytes) < 0) return undefined;
    this.setStored(e, bytes);
    return e;
  }

  private mergeSelf(e: PeerEntry): PeerEntry | string | undefined {
    const local = this.local;
    if (e.uid !== local.uid && e.incarnation < local.incarnation) return undefined; // our previous life
    if (e.uid === local.uid && (e.incarnation !== local.incarnation || e.version < local.version)) return undefined;
    const problem = entryProblem(e);
    if (problem !== undefined) return problem;
    if (e.uid !== local.uid) {
      return `${REJECT_COLLISION}: ${e.name} is also used by a router with uid ${e.uid} (ours ${local.uid})`;
    }
    if (e.version === local.version && compareBytes(packEntry(e), this.peers.get(this.localName)!.bytes) === 0) {
      return undefined;
    }
    if (!Number.isSafeInteger(e.version + 1)) return `invalid version ${e.version}`;
    const next = { ...local, version: e.version + 1 };
    this.store(next);
    return next;
  }

  private store(e: PeerEntry): void {
    this.setStored(e, packEntry(e));
  }

  private setStored(e: PeerEntry, bytes: Uint8Array): void {
    this.peers.set(e.name, { entry: e, bytes });
    this.sorted = undefined;
  }
}

function sortConnections(conns: readonly ConnectionSummary[]): ConnectionSummary[] {
  return [...conns].sort((a, b) => (a.peer < b.peer ? -1 : a.peer > b.peer ? 1 : 0));
}

function checkedLocal(e: PeerEntry): PeerEntry {
  const problem = entryProblem(e);
  if (problem !== undefined) throw new InputError(`invalid local topology entry: ${problem}`);
  return e;
}

// ---- Gossip adapter ----

/**
 * TopologyGossiper is the {@link Gossiper} of the topology channel: it merges received entry lists
 * into a Topology and hands back what was new. `onMerge` sees every merge result, so the owner can
 * recompute routes when something changed and report rejections (a name collision above all).
 */
export class TopologyGossiper implements Gossiper {
  constructor(
    private readonly topology: Topology,
    private readonly onMerge: (result: MergeResult, src: PeerName) => void = () => {},
  ) {}

  /** onGossip merges a delta or a full state; returns the entries that were new, encoded. Throws ProtocolError. */
  onGossip(src: PeerName, payload: Uint8Array): Uint8Array | undefined {
    const result = this.topology.mergeEncoded(payload);
    this.onMerge(result, src);
    return result.changed.length === 0 ? undefined : this.topology.encode(result.changed.map((e) => e.name));
  }

  /** onGossipUnicast merges entries sent to us alone (a reply to a request, for example). Throws ProtocolError. */
  onGossipUnicast(src: PeerName, payload: Uint8Array): void {
    this.onMerge(this.topology.mergeEncoded(payload), src);
  }

  /** fullState is every entry we know, ours included. */
  fullState(): Uint8Array {
    return this.topology.encode();
  }
}
