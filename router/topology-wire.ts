/**
 * The topology wire form, one MessagePack array, names as 6 raw bytes and underlay addresses as
 * u32 to keep per-connection cost near 20 bytes:
 *
 * ```
 * [ TOPOLOGY_FORMAT,
 *   [ [ name(bin 6), nickname, uid(decimal text), incarnation, version,
 *       [ [ peer(bin 6), addr(u32), tcpPort, outbound, established ], ... ],
 *       [ 'a.b.c.d/n', ... ], sleevePort, vxlanPort, 'sleeve' | 'vxlan' ],
 *     ... ] ]
 * ```
 *
 * Every peer encodes an entry the same way ({@link packEntry}: its canonical bytes), so a received
 * entry that is byte for byte what we hold can be recognised without decoding it:
 * {@link splitList} finds each entry's bytes in a list by walking the MessagePack headers only.
 *
 * Over 400 lines because the encoder, the checked decoder and the header-only splitter must agree
 * on one byte format; the splitter's table of MessagePack types is most of the length.
 */
import { Unpackr } from 'msgpackr';
import { z } from 'zod';
import { InputError, ProtocolError } from '../common/errors.js';
import { MsgpackWriter } from '../common/msgpack-writer.js';
import { formatIPv4, type PeerName, peerNameFromBytes, peerNameToBytes } from '../common/types.js';
import { NICKNAME_MAX_CHARS } from './protocol.js';
import {
  CIDR_MAX_CHARS,
  entryProblem,
  type PeerEntry,
  TOPOLOGY_CIDRS_MAX,
  TOPOLOGY_CONNECTIONS_MAX,
  UID_MAX_CHARS,
} from './topology-entry.js';

// ---- Constants (candidates for router/constants.ts) ----

/** TOPOLOGY_FORMAT is the first element of every encoded entry list; another value is refused. */
export const TOPOLOGY_FORMAT = 1;
/** TOPOLOGY_ENTRIES_MAX bounds the entries one message may carry (the cluster size we accept). */
export const TOPOLOGY_ENTRIES_MAX = 16_384;
/**
 * ENTRY_PREFIX is how every canonical entry starts: a fixarray of 10, then its name as bin 8 of
 * length 6 (the name's bytes follow at ENTRY_NAME_OFFSET).
 */
const ENTRY_PREFIX = [0x9a, 0xc4, 0x06] as const;
const ENTRY_NAME_OFFSET = ENTRY_PREFIX.length;
/** NAME_CACHE_MAX bounds the cache of names as bytes (cleared when full; entries are cheap to redo). */
const NAME_CACHE_MAX = 65_536;
/** DOT and ZERO are the character codes ipv4ToU32 parses. */
const DOT = 0x2e;
const ZERO = 0x30;

// ---- Encoding and decoding ----

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

/**
 * nameBytesCache holds the 6 bytes of names already converted: every entry lists its peers by
 * name, so a mesh of N routers packs the same N names over and over. Cleared when full. The
 * arrays are shared: only ever read (packed).
 */
const nameBytesCache = new Map<PeerName, Uint8Array>();

function nameBytes(name: PeerName): Uint8Array {
  let b = nameBytesCache.get(name);
  if (b === undefined) {
    b = new Uint8Array(6);
    peerNameToBytes(name, b, 0);
    if (nameBytesCache.size >= NAME_CACHE_MAX) nameBytesCache.clear();
    nameBytesCache.set(name, b);
  }
  return b;
}

/** ipv4ToU32 converts a dotted quad already checked by {@link entryProblem} (digits and dots only). */
function ipv4ToU32(s: string): number {
  let n = 0;
  let octet = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === DOT) {
      n = n * 256 + octet;
      octet = 0;
    } else octet = octet * 10 + (c - ZERO);
  }
  return n * 256 + octet;
}

/**
 * packed caches each entry's canonical encoding: entries are immutable, and one entry object is
 * often stored by several topologies (a harness loading the same entries into many routers).
 */
const packed = new WeakMap<PeerEntry, Uint8Array>();

/** packEntry returns the canonical encoding of one valid entry (shared: never modify it). */
export function packEntry(e: PeerEntry): Uint8Array {
  let bytes = packed.get(e);
  if (bytes === undefined) {
    bytes = encodeEntry(e);
    packed.set(e, bytes);
  }
  return bytes;
}

/**
 * adoptCanonical records `bytes` as the canonical encoding of `e`, for a reader that proved them
 * to be (router/topology-reader.ts): packEntry then returns them without encoding.
 */
export function adoptCanonical(e: PeerEntry, bytes: Uint8Array): void {
  packed.set(e, bytes);
}

/** writer is the one MsgpackWriter encodeEntry reuses (synchronous: one entry at a time). */
const writer = new MsgpackWriter();

/**
 * encodeEntry encodes one valid entry in a new buffer: the bytes msgpackr's `pack` gives for the
 * wire array (the module comment), written directly (common/msgpack-writer.ts says why).
 */
function encodeEntry(e: PeerEntry): Uint8Array {
  const w = writer.reset();
  w.arrayHeader(10).bin(nameBytes(e.name)).str(e.nickname).str(e.uid).uint(e.incarnation).uint(e.version);
  w.arrayHeader(e.connections.length);
  for (const c of e.connections) {
    w.arrayHeader(5).bin(nameBytes(c.peer)).uint(ipv4ToU32(c.addr)).uint(c.tcpPort).bool(c.outbound);
    w.bool(c.established);
  }
  w.arrayHeader(e.cidrs.length);
  for (const c of e.cidrs) w.str(c);
  return w.uint(e.sleevePort).uint(e.vxlanPort).str(e.encap).bytes();
}

/** packList frames already packed entries as `[TOPOLOGY_FORMAT, [e1, e2, ...]]`. */
export function packList(parts: readonly Uint8Array[]): Uint8Array {
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

// isWireEntry is WireEntry's check written out, for the usual well-formed entry: the schema costs
// several times more per entry, and every new entry of every message is checked. Any value it
// refuses goes to the schema, so it may refuse more than the schema but never accept more.

function isWireName(v: unknown): v is Uint8Array {
  return v instanceof Uint8Array && v.length === 6;
}

function isWirePort(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 1 && (v as number) <= 0xffff;
}

function isWireCount(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0;
}

function isShortString(v: unknown, max: number): v is string {
  return typeof v === 'string' && v.length <= max;
}

function isWireConnection(c: unknown): c is z.infer<typeof WireConnection> {
  return (
    Array.isArray(c) &&
    c.length === 5 &&
    isWireName(c[0]) &&
    isWireCount(c[1]) &&
    c[1] <= 0xffffffff &&
    isWirePort(c[2]) &&
    typeof c[3] === 'boolean' &&
    typeof c[4] === 'boolean'
  );
}

function isWireEntry(e: unknown): e is z.infer<typeof WireEntry> {
  return (
    Array.isArray(e) &&
    e.length === 10 &&
    isWireName(e[0]) &&
    isShortString(e[1], NICKNAME_MAX_CHARS) &&
    isShortString(e[2], UID_MAX_CHARS) &&
    isWireCount(e[3]) &&
    isWireCount(e[4]) &&
    Array.isArray(e[5]) &&
    e[5].length <= TOPOLOGY_CONNECTIONS_MAX &&
    e[5].every(isWireConnection) &&
    Array.isArray(e[6]) &&
    e[6].length <= TOPOLOGY_CIDRS_MAX &&
    e[6].every((c) => isShortString(c, CIDR_MAX_CHARS)) &&
    isWirePort(e[7]) &&
    isWirePort(e[8]) &&
    (e[9] === 'sleeve' || e[9] === 'vxlan')
  );
}

/** unpackWire unpacks one MessagePack value. Throws ProtocolError. */
export function unpackWire(bytes: Uint8Array): unknown {
  try {
    return unpackr.unpack(bytes);
  } catch (err) {
    throw new ProtocolError(`undecodable topology: ${err instanceof Error ? err.message.slice(0, 120) : 'error'}`, {
      cause: err,
    });
  }
}

/** unpackList unpacks the outer `[TOPOLOGY_FORMAT, [...]]`, leaving the entries unchecked. Throws ProtocolError. */
export function unpackList(bytes: Uint8Array): unknown[] {
  const r = WireList.safeParse(unpackWire(bytes));
  if (!r.success) throw protocolError(r.error, []);
  return r.data[1];
}

/** toEntry validates one wire entry (the `index`th of its list) and converts it. Throws ProtocolError. */
export function toEntry(raw: unknown, index: number): PeerEntry {
  let wire: z.infer<typeof WireEntry>;
  if (isWireEntry(raw)) wire = raw;
  else {
    // The schema decides (and names what is wrong): isWireEntry accepts only what it accepts.
    const r = WireEntry.safeParse(raw);
    if (!r.success) throw protocolError(r.error, [1, index]);
    wire = r.data;
  }
  const [name, nickname, uid, incarnation, version, conns, cidrs, sleevePort, vxlanPort, encap] = wire;
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
export function wireEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a instanceof Uint8Array && b instanceof Uint8Array) return compareBytes(a, b) === 0;
  if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!wireEqual(a[i], b[i])) return false;
  return true;
}

export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b);
}

// ---- Splitting a list without decoding it ----

/**
 * splitList finds the entries of an encoded list without decoding them: it returns the offset of
 * each entry, then the end of the last one (count + 1 offsets). Undefined unless the list is
 * framed as {@link packList} frames it and every entry is well-formed MessagePack ending exactly
 * at the end of `bytes`: the caller then decodes it whole ({@link unpackList}), which refuses
 * what is wrong with the same errors as always.
 *
 * `heldLength(bytes, off)`, if given, may say that the bytes at `off` begin with an encoding
 * the caller holds (its length; -1 if not): that entry is stepped over without being walked (a
 * byte-identical copy of a complete MessagePack value ends where the value ends) and its index is
 * added to `held`. Most of a full state is held, so this is most of the work saved.
 */
export function splitList(
  bytes: Uint8Array,
  heldLength?: (bytes: Uint8Array, off: number) => number,
  held?: number[],
): number[] | undefined {
  if (bytes.length < 3 || bytes[0] !== 0x92 || bytes[1] !== TOPOLOGY_FORMAT) return undefined;
  const header = arrayHeader(bytes, 2);
  if (header === undefined || header.count > TOPOLOGY_ENTRIES_MAX) return undefined;
  const offsets = [header.end];
  let off = header.end;
  for (let i = 0; i < header.count; i++) {
    const known = heldLength === undefined ? -1 : heldLength(bytes, off);
    if (known > 0) {
      off += known;
      held?.push(i);
    } else {
      off = skipValue(bytes, off);
      if (off < 0) return undefined;
    }
    offsets.push(off);
  }
  return off === bytes.length ? offsets : undefined;
}

/** canonicalNameAt returns the name of the entry at `off` if it starts as packEntry starts one. */
export function canonicalNameAt(bytes: Uint8Array, off: number): PeerName | undefined {
  if (bytes.length < off + ENTRY_NAME_OFFSET + 6) return undefined;
  for (let i = 0; i < ENTRY_NAME_OFFSET; i++) if (bytes[off + i] !== ENTRY_PREFIX[i]) return undefined;
  return peerNameFromBytes(bytes, off + ENTRY_NAME_OFFSET);
}

/** arrayHeader reads a fixarray, array 16 or array 32 header at `off`. */
function arrayHeader(bytes: Uint8Array, off: number): { count: number; end: number } | undefined {
  const b = bytes[off]!;
  if (b >= 0x90 && b <= 0x9f) return { count: b & 0x0f, end: off + 1 };
  if (b === 0xdc && off + 3 <= bytes.length) return { count: readUint(bytes, off + 1, 2), end: off + 3 };
  if (b === 0xdd && off + 5 <= bytes.length) return { count: readUint(bytes, off + 1, 4), end: off + 5 };
  return undefined;
}

function readUint(bytes: Uint8Array, off: number, len: number): number {
  let n = 0;
  for (let i = 0; i < len; i++) n = n * 256 + bytes[off + i]!;
  return n;
}

/**
 * skipValue returns the offset just past the MessagePack value at `off`, or -1 if it is
 * truncated or uses the never-used byte 0xc1. Iterative (a count of values still to skip), so
 * deep nesting costs no stack; a container claiming more values than bytes remain fails at once.
 */
function skipValue(bytes: Uint8Array, off: number): number {
  let pending = 1;
  while (pending > 0) {
    if (off >= bytes.length || pending > bytes.length - off) return -1;
    pending--;
    const b = bytes[off]!;
    let head = 1; // header bytes
    let body = 0; // payload bytes after the header
    if (b <= 0x7f || b >= 0xe0 || b === 0xc0 || b === 0xc2 || b === 0xc3) {
      // fixint, nil, booleans: the byte is the value
    } else if (b <= 0x8f) pending += 2 * (b & 0x0f);
    else if (b <= 0x9f) pending += b & 0x0f;
    else if (b <= 0xbf) body = b & 0x1f;
    else {
      const sized = SIZED[b - 0xc4];
      if (sized === undefined) return -1; // 0xc1
      const [lenBytes, fixed, per] = sized;
      head = 1 + lenBytes;
      if (off + head > bytes.length) return -1;
      const n = lenBytes === 0 ? 0 : readUint(bytes, off + 1, lenBytes);
      if (per === 0) body = fixed + n;
      else {
        body = fixed;
        pending += per * n;
      }
    }
    off += head + body;
  }
  return off > bytes.length ? -1 : off;
}

/**
 * SIZED describes the types 0xc4..0xdf as [length field bytes, fixed payload bytes, values per
 * count]: a bin, str or ext carries `length` bytes (ext one more, its type), a number a fixed
 * payload, an array `count` values and a map twice that.
 */
const SIZED: readonly (readonly [number, number, number])[] = [
  [1, 0, 0], // c4 bin 8
  [2, 0, 0], // c5 bin 16
  [4, 0, 0], // c6 bin 32
  [1, 1, 0], // c7 ext 8
  [2, 1, 0], // c8 ext 16
  [4, 1, 0], // c9 ext 32
  [0, 4, 0], // ca float 32
  [0, 8, 0], // cb float 64
  [0, 1, 0], // cc uint 8
  [0, 2, 0], // cd uint 16
  [0, 4, 0], // ce uint 32
  [0, 8, 0], // cf uint 64
  [0, 1, 0], // d0 int 8
  [0, 2, 0], // d1 int 16
  [0, 4, 0], // d2 int 32
  [0, 8, 0], // d3 int 64
  [0, 2, 0], // d4 fixext 1
  [0, 3, 0], // d5 fixext 2
  [0, 5, 0], // d6 fixext 4
  [0, 9, 0], // d7 fixext 8
  [0, 17, 0], // d8 fixext 16
  [1, 0, 0], // d9 str 8
  [2, 0, 0], // da str 16
  [4, 0, 0], // db str 32
  [2, 0, 1], // dc array 16
  [4, 0, 1], // dd array 32
  [2, 0, 2], // de map 16
  [4, 0, 2], // df map 32
];
