/**
 * Topology entries: what one peer says about itself (its identity, its control connections and
 * the overlay addresses it serves), the checks a received entry must pass, and the order of two
 * copies of one peer's entry (higher wins):
 *
 * ```
 *   (incarnation, version, canonical bytes)      compared left to right
 *    │            │        └ tie-break for two different entries with equal (incarnation, version):
 *    │            │          only a fault or a forgery makes one, but every peer picks the same one
 *    │            └ bumped by the owner on every change
 *    └ the owner's start time in ms: a restarted peer (version 1) beats its old self (version 50)
 * ```
 *
 * The CRDT that keeps the highest copy of each is in topology.ts, the wire form in topology-wire.ts.
 */
import { CIDR_RE, IPV4_RE, isUidText, PEER_NAME_RE, type PeerName } from '../common/types.js';
import { type Encap, NICKNAME_MAX_CHARS } from './protocol.js';

// ---- Constants (candidates for router/constants.ts) ----

/** TOPOLOGY_CONNECTIONS_MAX bounds the connections one entry may list. */
export const TOPOLOGY_CONNECTIONS_MAX = 4096;
/** TOPOLOGY_CIDRS_MAX bounds the overlay prefixes one entry may list. */
export const TOPOLOGY_CIDRS_MAX = 4096;
/** UID_MAX_CHARS is the length of the largest u64 in decimal. */
export const UID_MAX_CHARS = 20;
/** CIDR_MAX_CHARS is the length of the longest `a.b.c.d/n`. */
export const CIDR_MAX_CHARS = 18;
/** IPV4_MAX_CHARS is the length of the longest dotted quad. */
export const IPV4_MAX_CHARS = 15;

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

// ---- Validation ----

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
  if (typeof e !== 'object' || e === null) return findProblem(e);
  const known = checked.get(e);
  if (known !== undefined) return known === OK ? undefined : known;
  const problem = findProblem(e);
  checked.set(e, problem ?? OK);
  return problem;
}

/**
 * checked caches each entry's verdict: entries are immutable, and one entry object is often
 * checked by several topologies (a harness loading the same entries into many routers).
 */
const checked = new WeakMap<PeerEntry, string>();
/** OK is the verdict cached for an acceptable entry. */
const OK = '';

function findProblem(e: PeerEntry): string | undefined {
  try {
    if (typeof e.name !== 'string' || !PEER_NAME_RE.test(e.name))
      return `invalid peer name ${JSON.stringify(String(e.name).slice(0, 32))}`;
    if (typeof e.nickname !== 'string' || e.nickname.length > NICKNAME_MAX_CHARS) return 'invalid nickname';
    if (typeof e.uid !== 'string' || !isUidText(e.uid)) {
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
    // Owners list connections sorted by peer, so a duplicate is usually ruled out by the order
    // alone; a set of the names seen is built only once the order breaks.
    let seen: Set<string> | undefined;
    let last = '';
    for (let i = 0; i < e.connections.length; i++) {
      const c = e.connections[i]!;
      if (typeof c.peer !== 'string' || !PEER_NAME_RE.test(c.peer)) {
        return `invalid connection peer ${JSON.stringify(String(c.peer).slice(0, 32))}`;
      }
      if (c.peer === e.name) return 'connection to itself';
      if (seen === undefined && c.peer > last) last = c.peer;
      else {
        seen ??= new Set(e.connections.slice(0, i).map((p) => p.peer));
        if (seen.has(c.peer)) return `duplicate connection to ${c.peer}`;
        seen.add(c.peer);
      }
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
