/**
 * Topology: the membership CRDT every router gossips. Each peer owns one {@link PeerEntry}
 * (topology-entry.ts) and is the only one that changes it; everyone else keeps the highest copy
 * they have seen, in the order topology-entry.ts describes. Taking the maximum under a total order
 * is commutative, associative and idempotent, so every peer ends with the same state whatever
 * order messages arrive in. Our own entry is the exception: nothing received ever replaces it (see
 * {@link Topology.merge}). The wire form is in topology-wire.ts; this module re-exports both.
 *
 * Merging is proportional to what is new: a full state (every entry, every anti-entropy round and
 * every new neighbour) is mostly entries we hold byte for byte, and those are recognised from
 * their bytes without being decoded ({@link Topology.mergeEncoded}).
 *
 * Forgetting keeps a copy. A peer the owner forgets as unreachable ({@link Topology.forget}) goes
 * to a store of forgotten entries: the same copy gossiped back by a neighbour that has not
 * forgotten it yet is not news (without the store, every router that forgot a partitioned side
 * took the side back from the first full state that still held it and relayed all of it, and a
 * second forgetting a second later did it again), and when the peer becomes reachable again
 * without changing its entry the owner restores it from the store ({@link Topology.restore})
 * instead of waiting for anti-entropy to bring it back.
 */
import { InputError, ProtocolError } from '../common/errors.js';
import { type PeerName, peerNameFromBytes, peerNameToBytes } from '../common/types.js';
import type { Announcing, Gossiper } from './gossip/gossip.js';
import { type ConnectionSummary, compareVersions, entryProblem, type PeerEntry } from './topology-entry.js';
import { readCanonicalEntry } from './topology-reader.js';
import {
  canonicalNameAt,
  compareBytes,
  decodeEntries,
  packEntry,
  packList,
  splitList,
  TOPOLOGY_ENTRIES_MAX,
  toEntry,
  unpackList,
  unpackWire,
  wireEqual,
} from './topology-wire.js';

export {
  CIDR_MAX_CHARS,
  type ConnectionSummary,
  compareVersions,
  entryProblem,
  IPV4_MAX_CHARS,
  type PeerEntry,
  TOPOLOGY_CIDRS_MAX,
  TOPOLOGY_CONNECTIONS_MAX,
  UID_MAX_CHARS,
} from './topology-entry.js';
export { decodeEntries, encodeEntries, TOPOLOGY_ENTRIES_MAX, TOPOLOGY_FORMAT } from './topology-wire.js';

// ---- Constants (candidates for router/constants.ts) ----

/** TOPOLOGY_CHANNEL is the name of the gossip channel that carries topology entries. */
export const TOPOLOGY_CHANNEL = 'topology';

/** REJECT_COLLISION is the reason given for an entry that claims our name with another UID. */
export const REJECT_COLLISION = 'peer name collision';

// ---- Types ----

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

// ---- Merging ----

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
}

/** Forgotten is an entry removed as unreachable, with when (owner's clock, ms). */
interface Forgotten extends Stored {
  readonly at: number;
}

/** FORGOTTEN_MAX bounds the store of forgotten entries (the oldest go first). */
export const FORGOTTEN_MAX = TOPOLOGY_ENTRIES_MAX;

/**
 * Topology holds the newest entry of every known peer, our own included. It is pure and
 * synchronous: the owner feeds it received entries and its own changes, gossips what `merge` and
 * `setLocal` return, and recomputes routes when something changed.
 */
export class Topology {
  private readonly peers = new Map<PeerName, Stored>();
  /** forgottenStore holds entries forgotten as unreachable, oldest first (see the module comment). */
  private readonly forgottenStore = new Map<PeerName, Forgotten>();
  /** localName is our own name (the `name` of {@link local}, without a lookup). */
  readonly localName: PeerName;
  /** sorted holds every stored entry in name order, kept up to date by each change (no re-sorting). */
  private sorted: PeerEntry[] = [];
  /**
   * whole caches {@link encode} of every entry until the next change: anti-entropy sends it to
   * every neighbour, and a converged mesh's full states are byte for byte alike, so mergeEncoded
   * recognises one we hold with one compare.
   */
  private whole: Uint8Array | undefined;
  /**
   * listers counts, per peer name, the held entries that list it as established: a forgotten peer
   * can be reachable again only if one does ({@link forgottenListed}), which spares the recomputation
   * a scan of every forgotten entry's connections after each change.
   */
  private readonly listers = new Map<PeerName, number>();

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
    // The usual anti-entropy message in a converged mesh: exactly our own full state.
    const whole = this.whole;
    if (whole !== undefined && whole.length === bytes.length && compareBytes(whole, bytes) === 0) {
      return { changed: [], rejected: [] };
    }
    const wanted: PeerEntry[] = [];
    const held: number[] = [];
    const offsets = splitList(bytes, (b, off) => this.heldLengthAt(b, off), held);
    if (offsets === undefined) {
      // Not framed as we frame lists, or malformed: decode it whole, refusing it as that refuses.
      unpackList(bytes).forEach((raw, i) => {
        if (!this.isStale(raw)) wanted.push(toEntry(raw, i));
      });
      return this.merge(wanted);
    }
    let next = 0; // index into held (ascending)
    for (let i = 0; i + 1 < offsets.length; i++) {
      if (held[next] === i) {
        next++;
        continue;
      }
      const fast = readCanonicalEntry(bytes, offsets[i]!, offsets[i + 1]!);
      if (fast !== undefined) {
        if (!this.isStaleEntry(fast)) wanted.push(fast);
        continue;
      }
      const raw = unpackWire(bytes.subarray(offsets[i], offsets[i + 1]));
      if (!this.isStale(raw)) wanted.push(toEntry(raw, i));
    }
    return this.merge(wanted);
  }

  /** entries returns every known entry (ours included), sorted by name, in a new array. */
  entries(): PeerEntry[] {
    return [...this.sorted];
  }

  /**
   * sortedEntries is {@link entries} without the copy, for callers that read it at once: the array
   * is the topology's own and changes with it.
   */
  sortedEntries(): readonly PeerEntry[] {
    return this.sorted;
  }

  /** get returns the entry of one peer. */
  get(name: PeerName): PeerEntry | undefined {
    return this.peers.get(name)?.entry;
  }

  /** held returns the entry of one peer we hold, or hold forgotten (what a received copy is compared with). */
  held(name: PeerName): PeerEntry | undefined {
    return (this.peers.get(name) ?? this.forgottenStore.get(name))?.entry;
  }

  /** remove drops peers (never ourselves) without keeping a copy; returns the names it removed. */
  remove(names: Iterable<PeerName>): PeerName[] {
    const removed: PeerName[] = [];
    for (const n of names) {
      const cur = n === this.localName ? undefined : this.peers.get(n);
      if (cur === undefined) continue;
      this.countListed(cur.entry, -1);
      this.peers.delete(n);
      removed.push(n);
    }
    if (removed.length > 0) {
      this.sorted = this.sorted.filter((e) => this.peers.has(e.name));
      this.whole = undefined;
    }
    return removed;
  }

  /**
   * forget removes peers found unreachable (never ourselves) into the store of forgotten entries,
   * stamped `at`; returns the names it removed. Until a newer copy arrives or the owner restores
   * or expires it, a received copy no newer than the stored one changes nothing.
   */
  forget(names: Iterable<PeerName>, at: number): PeerName[] {
    const gone: PeerName[] = [];
    for (const n of names) {
      const cur = n === this.localName ? undefined : this.peers.get(n);
      if (cur === undefined) continue;
      this.forgottenStore.delete(n);
      this.forgottenStore.set(n, { entry: cur.entry, bytes: cur.bytes, at });
      gone.push(n);
    }
    for (const n of this.forgottenStore.keys()) {
      if (this.forgottenStore.size <= FORGOTTEN_MAX) break;
      this.forgottenStore.delete(n);
    }
    return this.remove(gone);
  }

  /** forgotten lists the stored forgotten entries, oldest first, in a new array. */
  forgotten(): PeerEntry[] {
    return Array.from(this.forgottenStore.values(), (f) => f.entry);
  }

  /** forgottenListed lists the forgotten peers that some held entry lists as established, in a new array. */
  forgottenListed(): PeerEntry[] {
    const out: PeerEntry[] = [];
    for (const [n, f] of this.forgottenStore) if (this.listers.has(n)) out.push(f.entry);
    return out;
  }

  /** forgottenCount counts the stored forgotten entries. */
  get forgottenCount(): number {
    return this.forgottenStore.size;
  }

  /** restore takes forgotten peers back as they were when forgotten; returns the entries restored. */
  restore(names: Iterable<PeerName>): PeerEntry[] {
    const back: PeerEntry[] = [];
    for (const n of names) {
      const f = this.forgottenStore.get(n);
      if (f === undefined) continue;
      this.setStored(f.entry, f.bytes);
      back.push(f.entry);
    }
    return back;
  }

  /** expireForgotten drops forgotten entries stamped before `before`; returns how many it dropped. */
  expireForgotten(before: number): number {
    let dropped = 0;
    for (const [n, f] of this.forgottenStore) {
      if (f.at >= before) break; // oldest first
      this.forgottenStore.delete(n);
      dropped++;
    }
    return dropped;
  }

  /**
   * encode returns the wire form of the named entries (all, sorted by name, when omitted) from the
   * per-entry cache, without re-encoding. Unknown names are skipped. The list of all entries is
   * cached until the next change and shared: never modify what this returns.
   */
  encode(names?: Iterable<PeerName>): Uint8Array {
    if (names === undefined) {
      this.whole ??= this.encodeNames(this.sorted.map((e) => e.name));
      return this.whole;
    }
    return this.encodeNames(names);
  }

  private encodeNames(names: Iterable<PeerName>): Uint8Array {
    const parts: Uint8Array[] = [];
    for (const n of names) {
      const s = this.peers.get(n);
      if (s !== undefined) parts.push(s.bytes);
    }
    return packList(parts);
  }

  /**
   * heldLengthAt is the length of the canonical encoding of an entry we hold (or hold forgotten)
   * if `bytes` holds exactly it at `off`, else -1.
   */
  private heldLengthAt(bytes: Uint8Array, off: number): number {
    const name = canonicalNameAt(bytes, off);
    const cur = name === undefined ? undefined : (this.peers.get(name) ?? this.forgottenStore.get(name));
    if (cur === undefined) return -1;
    const own = cur.bytes;
    const end = off + own.length;
    return end <= bytes.length && compareBytes(own, bytes.subarray(off, end)) === 0 ? own.length : -1;
  }

  /** isStale says whether an unvalidated wire entry is identical to what we hold, or older than what we hold of another peer. */
  private isStale(raw: unknown): boolean {
    if (!Array.isArray(raw) || !(raw[0] instanceof Uint8Array) || raw[0].length !== 6) return false;
    const incarnation: unknown = raw[3];
    const version: unknown = raw[4];
    if (typeof incarnation !== 'number' || typeof version !== 'number') return false;
    const name = peerNameFromBytes(raw[0], 0);
    const cur = this.peers.get(name) ?? this.forgottenStore.get(name);
    if (cur === undefined) return false;
    const { entry } = cur;
    // Older copies of ourselves are not simply stale: merge decides (collision, echo).
    if (name !== this.localName && incarnation !== entry.incarnation) return incarnation < entry.incarnation;
    if (name !== this.localName && version !== entry.version) return version < entry.version;
    // Same version, other bytes (another encoder, or a conflicting copy): compare the values.
    return wireEqual(raw, unpackWire(cur.bytes));
  }

  /** isStaleEntry is {@link isStale} for an entry read in canonical form (its bytes are packEntry's). */
  private isStaleEntry(e: PeerEntry): boolean {
    const cur = this.peers.get(e.name) ?? this.forgottenStore.get(e.name);
    if (cur === undefined) return false;
    const { entry } = cur;
    if (e.name !== this.localName && e.incarnation !== entry.incarnation) return e.incarnation < entry.incarnation;
    if (e.name !== this.localName && e.version !== entry.version) return e.version < entry.version;
    // Same version: stale only if identical, and both encodings are canonical.
    return compareBytes(packEntry(e), cur.bytes) === 0;
  }

  /** mergeOne applies one entry: the stored entry if it changed, a rejection reason, or undefined. */
  private mergeOne(e: PeerEntry): PeerEntry | string | undefined {
    if (typeof e?.name !== 'string') return 'malformed entry';
    if (e.name === this.localName) return this.mergeSelf(e);
    // A forgotten peer's copy counts as held: only a newer one is news (and takes it back).
    const cur = this.peers.get(e.name) ?? this.forgottenStore.get(e.name);
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

  /** setStored keeps `bytes` in a buffer of its own: an encoder's output shares a larger block (tens of KB per entry). */
  private setStored(e: PeerEntry, bytes: Uint8Array): void {
    const prev = this.peers.get(e.name);
    const known = prev !== undefined;
    if (known) this.recountListed(prev.entry, e);
    else this.countListed(e, 1);
    this.forgottenStore.delete(e.name);
    const own = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : new Uint8Array(bytes);
    this.peers.set(e.name, { entry: e, bytes: own });
    this.whole = undefined;
    const i = sortedIndex(this.sorted, e.name);
    if (known) this.sorted[i] = e;
    else this.sorted.splice(i, 0, e);
  }

  /** countListed adds `by` to the listers count of every peer `e` lists as established. */
  /**
   * recountListed moves the lister counts from `prev` to `next`, a newer copy of the same peer's
   * entry: usually one or two connections differ, so with both lists sorted by peer (as owners
   * keep them) only those are counted; otherwise all of both.
   */
  private recountListed(prev: PeerEntry, next: PeerEntry): void {
    const a = prev.connections;
    const b = next.connections;
    if (!sortedByPeer(a) || !sortedByPeer(b)) {
      this.countListed(prev, -1);
      this.countListed(next, 1);
      return;
    }
    let i = 0;
    let j = 0;
    while (i < a.length || j < b.length) {
      const x = a[i];
      const y = b[j];
      if (y === undefined || (x !== undefined && x.peer < y.peer)) {
        if (x!.established) this.addListed(x!.peer, -1);
        i++;
      } else if (x === undefined || y.peer < x.peer) {
        if (y.established) this.addListed(y.peer, 1);
        j++;
      } else {
        if (x.established !== y.established) this.addListed(x.peer, y.established ? 1 : -1);
        i++;
        j++;
      }
    }
  }

  private addListed(peer: PeerName, by: 1 | -1): void {
    const n = (this.listers.get(peer) ?? 0) + by;
    if (n === 0) this.listers.delete(peer);
    else this.listers.set(peer, n);
  }

  private countListed(e: PeerEntry, by: 1 | -1): void {
    for (const c of e.connections) if (c.established) this.addListed(c.peer, by);
  }
}

/** sortedIndex is where `name` is, or would be inserted, in entries sorted by name (binary search). */
function sortedIndex(sorted: readonly PeerEntry[], name: PeerName): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]!.name < name) lo = mid + 1;
    else hi = mid;
  }
  return lo;
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
  /** announcing names entry versions by TOPOLOGY_ID_BYTES ids, for lazy push (see {@link TopologyAnnouncing}). */
  readonly announcing: Announcing;

  constructor(
    private readonly topology: Topology,
    private readonly onMerge: (result: MergeResult, src: PeerName) => void = () => {},
  ) {
    this.announcing = new TopologyAnnouncing(topology);
  }

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

// ---- Lazy push ----

/** TOPOLOGY_ID_BYTES is the length of an entry version's id: name (6), incarnation and version (float64 each, big-endian). */
export const TOPOLOGY_ID_BYTES = 22;

const ID_SCRATCH = new Uint8Array(16);
const ID_VIEW = new DataView(ID_SCRATCH.buffer);

/** writeTopologyId writes the id of an entry version at `off`. */
export function writeTopologyId(
  out: Uint8Array,
  off: number,
  e: Pick<PeerEntry, 'name' | 'incarnation' | 'version'>,
): void {
  peerNameToBytes(e.name, out, off);
  const dv = new DataView(out.buffer, out.byteOffset + off + 6, 16);
  dv.setFloat64(0, e.incarnation);
  dv.setFloat64(8, e.version);
}

/**
 * TopologyAnnouncing is the topology's side of lazy push: an id names one version of one peer's
 * entry (TOPOLOGY_ID_BYTES: its name, incarnation and version), we hold it when we hold (or hold
 * forgotten) that version or a newer one, and a graft is answered with the entries we hold now.
 */
export class TopologyAnnouncing implements Announcing {
  readonly idBytes = TOPOLOGY_ID_BYTES;

  constructor(private readonly topology: Topology) {}

  /** ids names the entries of a delta (one we merged or made) by the versions we hold of them. */
  ids(delta: Uint8Array): Uint8Array {
    const offsets = splitList(delta);
    const names: PeerName[] = [];
    if (offsets === undefined) for (const e of decodeEntries(delta)) names.push(e.name);
    else {
      for (let i = 0; i + 1 < offsets.length; i++) {
        const name = canonicalNameAt(delta, offsets[i]!);
        if (name !== undefined) names.push(name);
      }
    }
    const out = new Uint8Array(names.length * TOPOLOGY_ID_BYTES);
    let n = 0;
    for (const name of names) {
      const e = this.topology.held(name);
      if (e === undefined) continue;
      writeTopologyId(out, n * TOPOLOGY_ID_BYTES, e);
      n++;
    }
    return n === names.length ? out : out.subarray(0, n * TOPOLOGY_ID_BYTES);
  }

  /** holds: we hold this version or a newer one (of ourselves: always — nobody has a newer us to give). */
  holds(ids: Uint8Array, off: number): boolean {
    const { name, incarnation, version } = readTopologyId(ids, off);
    if (name === this.topology.localName) return true;
    const e = this.topology.held(name);
    if (e === undefined) return false;
    return e.incarnation !== incarnation ? e.incarnation > incarnation : e.version >= version;
  }

  /** answer encodes the entries we hold (not forgotten ones) of the peers the ids name, each once. */
  answer(ids: Uint8Array): Uint8Array {
    if (ids.length % TOPOLOGY_ID_BYTES !== 0) {
      throw new ProtocolError(`invalid topology ids: ${ids.length} bytes is not a multiple of ${TOPOLOGY_ID_BYTES}`);
    }
    const names = new Set<PeerName>();
    for (let off = 0; off < ids.length; off += TOPOLOGY_ID_BYTES) {
      const { name } = readTopologyId(ids, off);
      if (this.topology.get(name) !== undefined) names.add(name);
    }
    return names.size === 0 ? new Uint8Array(0) : this.topology.encode(names);
  }
}

/** readTopologyId reads an id at `off`. Throws ProtocolError when it is cut short or its numbers cannot be an entry's. */
export function readTopologyId(ids: Uint8Array, off: number): { name: PeerName; incarnation: number; version: number } {
  if (off < 0 || off + TOPOLOGY_ID_BYTES > ids.length) throw new ProtocolError('invalid topology id: truncated');
  // Through a scratch view: one DataView per id read would be an allocation per announced id.
  for (let i = 0; i < 16; i++) ID_SCRATCH[i] = ids[off + 6 + i]!;
  const incarnation = ID_VIEW.getFloat64(0);
  const version = ID_VIEW.getFloat64(8);
  if (!Number.isSafeInteger(incarnation) || incarnation < 0 || !Number.isSafeInteger(version) || version < 0) {
    throw new ProtocolError(`invalid topology id: incarnation ${incarnation}, version ${version}`);
  }
  return { name: peerNameFromBytes(ids, off), incarnation, version };
}

/** sortedByPeer says whether connections are listed in strictly ascending peer order. */
function sortedByPeer(cs: readonly ConnectionSummary[]): boolean {
  for (let i = 1; i < cs.length; i++) if (!(cs[i - 1]!.peer < cs[i]!.peer)) return false;
  return true;
}
