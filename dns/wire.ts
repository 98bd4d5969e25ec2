/**
 * The DNS server's fast path on the wire: parse one query by hand into a reusable Query, and
 * answer it by copying pre-encoded records. No object graph is built per query; the only
 * per-query allocation is the name string, and only if a caller reads `Query.name` (a NameMap
 * looks the name up from the parsed bytes without it).
 *
 * A message (RFC 1035 §4.1), as it travels in one UDP datagram or after a 2-byte length on TCP:
 *
 *   | header (12) | question | answer RRs | authority RRs | additional RRs (OPT) |
 *
 *   header:
 *    0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15
 *   +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
 *   |                      ID                       |   copied into the response
 *   |QR|  Opcode   |AA|TC|RD|RA| Z|AD|CD|   RCODE   |   flags word (FLAG_* below)
 *   |                    QDCOUNT                    |   1 for every query we accept
 *   |                    ANCOUNT                    |   0 in queries
 *   |                    NSCOUNT                    |   0 in queries
 *   |                    ARCOUNT                    |   0, or 1 for an OPT record
 *   +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
 *
 *   question at offset 12: QNAME (labels, each a length byte 1..63 and that many bytes, then a
 *   zero byte; at most 255 bytes in all) | QTYPE (2) | QCLASS (2)
 *
 *   A record as pre-encoded by encodeARecords (A_RECORD_LEN = 16 bytes):
 *   | C0 0C | TYPE 1 (2) | CLASS 1 (2) | TTL (4) | RDLENGTH 4 (2) | address (4) |
 *     `- a compression pointer to offset 12, where the question's name sits in every message
 *        with one question; so a cached record can follow any question for the same name.
 *
 *   OPT pseudo-record (RFC 6891 §6.1.2), OPT_RECORD_LEN = 11 bytes without options:
 *   | 00 (root) | TYPE 41 (2) | CLASS = UDP payload size (2) | ext. RCODE | version | DO, Z (2) | RDLENGTH (2) | options |
 *
 * Flow of one UDP query through this file (the caller owns both buffers and the Query):
 *
 *   datagram ──parseQuery──► Query ──┬─ Drop ───────────► nothing sent
 *                                    ├─ error rcode ────► writeError
 *                                    └─ Ok ─► look up q (NameMap.lookup, isQueryInDomain, ptrNameToIPv4)
 *                                             ├─ found ─────► writeAnswer   (copy records, shuffle A)
 *                                             └─ not found ─► writeNegative (SOA in authority)
 *
 * Writers never write past `out.length`, nor past `maxLen` where they take one; an answer that
 * does not fit is replaced by header + question (+ OPT) with TC set, so the client retries over
 * TCP (RFC 2181 §9).
 */
import { InputError } from '../common/errors.js';

// ---- Specification (RFC 1035, RFC 6891) ----

/** DNS_HEADER_LEN is the fixed message header: id, flags and four section counts. */
export const DNS_HEADER_LEN = 12;
/** DNS_UDP_LEGACY_MAX_BYTES is the largest UDP response a client without EDNS accepts (RFC 1035 §2.3.4). */
export const DNS_UDP_LEGACY_MAX_BYTES = 512;
/** DNS_TCP_MAX_BYTES is the largest message a 2-byte TCP length prefix can carry (RFC 1035 §4.2.2). */
export const DNS_TCP_MAX_BYTES = 65535;
/** MAX_LABEL_LEN is the longest label, in bytes (RFC 1035 §2.3.4). */
export const MAX_LABEL_LEN = 63;
/** MAX_NAME_WIRE_LEN is the longest name on the wire, length bytes and the root byte included. */
export const MAX_NAME_WIRE_LEN = 255;
/** OPT_RECORD_LEN is an OPT record without options: root name, type, class, ttl, rdlength. */
export const OPT_RECORD_LEN = 11;
/** A_RECORD_LEN is one A record as encodeARecords writes it (2-byte name pointer). */
export const A_RECORD_LEN = 16;
/** QUESTION_NAME_OFFSET is where the question's name starts in every message. */
export const QUESTION_NAME_OFFSET = DNS_HEADER_LEN;

/** QType holds the record types the server looks at (RFC 1035 §3.2.2, RFC 3596, RFC 6891). */
export const QType = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  AAAA: 28,
  OPT: 41,
  ANY: 255,
} as const;

/** QClass holds the classes a query may ask for; anything else is REFUSED. */
export const QClass = { IN: 1, ANY: 255 } as const;

/** Opcode holds the opcodes we name; only Query is answered, the others get NOTIMP. */
export const Opcode = { Query: 0, Notify: 4, Update: 5 } as const;

/** Rcode holds the response codes the server sends. BadVers (16) needs an OPT record to carry its high bits. */
export const Rcode = {
  NoError: 0,
  FormErr: 1,
  ServFail: 2,
  NxDomain: 3,
  NotImp: 4,
  Refused: 5,
  BadVers: 16,
} as const;
export type Rcode = (typeof Rcode)[keyof typeof Rcode];

/** FLAG_* are bits of the 16-bit flags word (header bytes 2-3). */
export const FLAG_QR = 0x8000;
export const FLAG_AA = 0x0400;
export const FLAG_TC = 0x0200;
export const FLAG_RD = 0x0100;
export const FLAG_RA = 0x0080;
export const FLAG_CD = 0x0010;

// ---- Implementation choices ----

/** EDNS_UDP_PAYLOAD_BYTES is the UDP size we advertise in OPT and the default cap on the client's (DNS flag day 2020). */
export const EDNS_UDP_PAYLOAD_BYTES = 1232;
/** DNS_QUERY_MAX_BYTES is the default cap on a UDP query; larger datagrams are dropped unparsed. */
export const DNS_QUERY_MAX_BYTES = 4096;
/** TTL_MAX is the largest TTL we put on the wire (RFC 2181 §8: the top bit must be zero). */
const TTL_MAX = 0x7fffffff;
/** SOA timers for a zone nobody transfers; only `minimum` (the negative TTL) matters to clients. */
const SOA_REFRESH_S = 3600;
const SOA_RETRY_S = 600;
const SOA_EXPIRE_S = 86400;
/** COPY_LOOP_MAX: shorter copies use a byte loop, which beats Buffer#copy's call overhead. */
const COPY_LOOP_MAX = 64;
/** FNV-1a (32-bit) parameters for the name hash; NameMap uses the same function on strings. */
const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;
/**
 * NAME_HASH_MASK keeps the hash to 30 bits, so V8 holds it as a small integer: a full 32-bit
 * value is a heap number, and boxing it for every Map lookup cost one allocation per query.
 */
const NAME_HASH_MASK = 0x3fffffff;
const DOT = 0x2e;

/**
 * HOST_BYTE maps each byte a label may hold to its lower-case form, and every other byte to 0.
 * Labels may hold letters, digits, '-' and '_' (service labels such as `_http._tcp`). Anything
 * else, notably a '.' byte inside a label, makes the query FORMERR: such a name could never
 * match one we serve, and a '.' would make the dotted form ambiguous.
 */
const HOST_BYTE = buildHostByteTable();

function buildHostByteTable(): Uint8Array {
  const t = new Uint8Array(256);
  for (let c = 0x30; c <= 0x39; c++) t[c] = c; // 0-9
  for (let c = 0x61; c <= 0x7a; c++) t[c] = c; // a-z
  for (let c = 0x41; c <= 0x5a; c++) t[c] = c + 0x20; // A-Z → a-z
  t[0x2d] = 0x2d; // '-'
  t[0x5f] = 0x5f; // '_'
  return t;
}

// ---- Parsing ----

/**
 * ParseResult is what parseQuery decided. Every value but Drop is also the RCODE to answer
 * with: Ok (0) means "answer it", the others go to writeError as they are.
 */
export const ParseResult = {
  /** Ok: a well-formed standard query; every field of the Query is valid. */
  Ok: 0,
  /** FormErr: a malformed query (bad counts, bad name, bad OPT, trailing bytes). */
  FormErr: 1,
  /** NotImp: an opcode other than QUERY (UPDATE, NOTIFY, ...), never answered as a query. */
  NotImp: 4,
  /** Refused: a class other than IN or ANY. */
  Refused: 5,
  /** BadVers: an EDNS version above 0 (RFC 6891 §6.1.3); the answer must carry an OPT. */
  BadVers: 16,
  /** Drop: send nothing (too short, too long, a response, or `len` beyond the buffer). */
  Drop: -1,
} as const;
export type ParseResult = (typeof ParseResult)[keyof typeof ParseResult];

/**
 * Query is one parsed query, owned by the caller and reused for every datagram: parseQuery
 * overwrites every field. Offsets index the buffer that was parsed. After a result other than
 * Ok, only the fields up to the failure are meaningful; `questionEnd` is 0 unless the question
 * parsed, and `edns` is false unless a valid OPT record was read.
 */
export class Query {
  /** id is the transaction id, echoed in every response. */
  id = 0;
  /** flags is the query's 16-bit flags word as received (RD and CD are copied from it). */
  flags = 0;
  /** opcode is the 4-bit opcode (0 = QUERY). */
  opcode = 0;
  /** rd says the client asked for recursion. */
  rd = false;
  /** qtype and qclass are the question's type and class. */
  qtype = 0;
  qclass = 0;
  /** nameEnd is the offset just past the question name's root byte (QTYPE starts here). */
  nameEnd = 0;
  /** questionEnd is the offset just past QCLASS; 0 when the question did not parse. */
  questionEnd = 0;
  /**
   * nameBuf holds the question name in lower case with '.' between labels and no trailing dot,
   * in its first `nameLen` bytes (0 for the root). Borrowed: valid until the next parseQuery.
   */
  readonly nameBuf: Buffer = Buffer.alloc(MAX_NAME_WIRE_LEN + 1);
  /** nameLen is the length of the dotted name in nameBuf. */
  nameLen = 0;
  /** nameHash is the FNV-1a hash (low 30 bits) of the dotted lower-case name, as hashName computes it. */
  nameHash = 0;
  /** edns says the query carried a valid OPT record; the response must then carry one too. */
  edns = false;
  /** udpSize is the client's UDP payload size (at least 512); 512 without EDNS. */
  udpSize = DNS_UDP_LEGACY_MAX_BYTES;
  /** dnssecOk is the DO bit (RFC 3225), copied into the response's OPT. */
  dnssecOk = false;
  /** ednsVersion is the OPT record's version; above 0 the parse returns BadVers. */
  ednsVersion = 0;
  /** reason names why the parse failed, for debug logs and counters; '' after Ok. */
  reason = '';
  #name: string | undefined;

  /** name is the question name in lower case without a trailing dot, built on first use per parse. */
  get name(): string {
    if (this.#name === undefined) this.#name = this.nameBuf.toString('latin1', 0, this.nameLen);
    return this.#name;
  }

  /** reset clears every field; parseQuery calls it first. */
  reset(): void {
    this.id = 0;
    this.flags = 0;
    this.opcode = 0;
    this.rd = false;
    this.qtype = 0;
    this.qclass = 0;
    this.nameEnd = 0;
    this.questionEnd = 0;
    this.nameLen = 0;
    this.nameHash = 0;
    this.edns = false;
    this.udpSize = DNS_UDP_LEGACY_MAX_BYTES;
    this.dnssecOk = false;
    this.ednsVersion = 0;
    this.reason = '';
    this.#name = undefined;
  }
}

/** u16 reads a big-endian 16-bit value; the caller has checked that both bytes are in bounds. */
function u16(buf: Buffer, p: number): number {
  return ((buf[p] as number) << 8) | (buf[p + 1] as number);
}

/**
 * parseQuery validates the query of `len` bytes at the start of `buf` and fills `out`. It never
 * throws and reads no byte at or past `len`; its work is one forward pass over at most `len`
 * bytes. Datagrams longer than `maxLen` (pass DNS_TCP_MAX_BYTES for TCP) are dropped unread.
 *
 * Checked, in order: Drop for fewer than 12 bytes, more than `maxLen`, or QR set (a response:
 * answering it could loop two servers); NotImp for an opcode other than QUERY; FormErr for
 * QDCOUNT ≠ 1, a bad question name (truncated, label over 63, name over 255, compression
 * pointer, byte outside HOST_BYTE), ANCOUNT or NSCOUNT ≠ 0, ARCOUNT > 1, an additional record
 * that is not a well-formed OPT, or bytes after the last record; BadVers for EDNS version > 0;
 * Refused for a class other than IN or ANY.
 *
 * @param buf borrowed: only read during this call. `out.nameBuf` keeps a copy of the name.
 */
export function parseQuery(buf: Buffer, len: number, out: Query, maxLen: number = DNS_QUERY_MAX_BYTES): ParseResult {
  out.reset();
  if (len > buf.length) return fail(out, ParseResult.Drop, 'length beyond buffer');
  if (len < DNS_HEADER_LEN) return fail(out, ParseResult.Drop, 'shorter than a header');
  if (len > maxLen) return fail(out, ParseResult.Drop, 'longer than the query cap');
  const flags = u16(buf, 2);
  if ((flags & FLAG_QR) !== 0) return fail(out, ParseResult.Drop, 'a response');
  out.id = u16(buf, 0);
  out.flags = flags;
  out.opcode = (flags >>> 11) & 0xf;
  out.rd = (flags & FLAG_RD) !== 0;
  const qdcount = u16(buf, 4);
  if (out.opcode !== Opcode.Query) {
    // UPDATE's sections mean other things; echo its zone (the question's place) if it parses.
    if (qdcount === 1) parseQuestion(buf, len, out);
    return fail(out, ParseResult.NotImp, 'opcode not QUERY');
  }
  if (qdcount !== 1) return fail(out, ParseResult.FormErr, 'question count not 1');
  const end = parseQuestion(buf, len, out);
  if (end < 0) return ParseResult.FormErr;
  if (u16(buf, 6) !== 0 || u16(buf, 8) !== 0) return fail(out, ParseResult.FormErr, 'answers or authority in a query');
  const arcount = u16(buf, 10);
  if (arcount > 1) return fail(out, ParseResult.FormErr, 'more than one additional record');
  if (arcount === 1) {
    const r = parseOpt(buf, end, len, out);
    if (r !== ParseResult.Ok) return r;
  } else if (end !== len) {
    return fail(out, ParseResult.FormErr, 'bytes after the question');
  }
  if (out.qclass !== QClass.IN && out.qclass !== QClass.ANY) return fail(out, ParseResult.Refused, 'class not IN');
  return ParseResult.Ok;
}

/** fail records why a parse stopped and returns its result. */
function fail(q: Query, result: ParseResult, reason: string): ParseResult {
  q.reason = reason;
  return result;
}

/**
 * parseQuestion reads the question at offset 12: the name into `q.nameBuf` (lower-cased,
 * dotted, hashed), then QTYPE and QCLASS. Returns the offset after QCLASS, or -1 with
 * `q.reason` set. Queries never compress their only name, so a pointer is refused.
 */
function parseQuestion(buf: Buffer, len: number, q: Query): number {
  const dst = q.nameBuf;
  let p = QUESTION_NAME_OFFSET;
  let o = 0;
  let h = FNV_OFFSET;
  // Bounded: p grows on every step and the loop stops at len or at 255 name bytes.
  for (;;) {
    if (p >= len) return failAt(q, 'truncated question');
    const l = buf[p++] as number;
    if (l === 0) break;
    if (l > MAX_LABEL_LEN) {
      return failAt(q, l >= 0xc0 ? 'compression pointer in question' : 'label longer than 63');
    }
    // Wire length up to the end of this label, plus the root byte still to come.
    if (p - QUESTION_NAME_OFFSET + l + 1 > MAX_NAME_WIRE_LEN) return failAt(q, 'name longer than 255');
    const labelEnd = p + l;
    if (labelEnd > len) return failAt(q, 'truncated question');
    if (o !== 0) {
      dst[o++] = DOT;
      h = Math.imul(h ^ DOT, FNV_PRIME);
    }
    for (; p < labelEnd; p++) {
      const c = HOST_BYTE[buf[p] as number] as number;
      if (c === 0) return failAt(q, 'byte not allowed in a label');
      dst[o++] = c;
      h = Math.imul(h ^ c, FNV_PRIME);
    }
  }
  q.nameLen = o;
  q.nameHash = h & NAME_HASH_MASK;
  q.nameEnd = p;
  if (p + 4 > len) return failAt(q, 'truncated question');
  q.qtype = u16(buf, p);
  q.qclass = u16(buf, p + 2);
  q.questionEnd = p + 4;
  return p + 4;
}

/** failAt records why the question did not parse and returns -1. */
function failAt(q: Query, reason: string): number {
  q.reason = reason;
  return -1;
}

/**
 * parseOpt reads the one additional record at `p`, which must be an OPT record that ends
 * exactly at `len` (RFC 6891 §6.1.1-6.1.3): root owner name, options that exactly fill
 * RDLENGTH. Sets the EDNS fields of `q` only when the record is well formed.
 */
function parseOpt(buf: Buffer, p: number, len: number, q: Query): ParseResult {
  if (p + OPT_RECORD_LEN > len) return fail(q, ParseResult.FormErr, 'truncated additional record');
  if (buf[p] !== 0) return fail(q, ParseResult.FormErr, 'additional record not a root OPT');
  if (u16(buf, p + 1) !== QType.OPT) return fail(q, ParseResult.FormErr, 'additional record not OPT');
  const rdataStart = p + OPT_RECORD_LEN;
  const rdataEnd = rdataStart + u16(buf, p + 9);
  if (rdataEnd !== len) return fail(q, ParseResult.FormErr, 'OPT length does not match the message');
  // Options are {code (2), length (2), data}; each step advances at least 4 bytes.
  for (let o = rdataStart; o < rdataEnd; ) {
    if (o + 4 > rdataEnd) return fail(q, ParseResult.FormErr, 'truncated EDNS option');
    o += 4 + u16(buf, o + 2);
    if (o > rdataEnd) return fail(q, ParseResult.FormErr, 'truncated EDNS option');
  }
  const size = u16(buf, p + 3);
  q.edns = true;
  q.udpSize = Math.max(size, DNS_UDP_LEGACY_MAX_BYTES); // RFC 6891 §6.2.3
  q.ednsVersion = buf[p + 6] as number;
  q.dnssecOk = ((buf[p + 7] as number) & 0x80) !== 0;
  if (q.ednsVersion > 0) return fail(q, ParseResult.BadVers, 'EDNS version above 0');
  return ParseResult.Ok;
}

/**
 * udpResponseLimit is the largest UDP response the client of `q` accepts: its EDNS payload
 * size capped at `cap` (never below 512), or 512 without EDNS. TCP callers pass
 * DNS_TCP_MAX_BYTES to the writers instead.
 */
export function udpResponseLimit(q: Query, cap: number = EDNS_UDP_PAYLOAD_BYTES): number {
  if (!q.edns) return DNS_UDP_LEGACY_MAX_BYTES;
  const n = Math.min(q.udpSize, cap);
  return Math.max(n, DNS_UDP_LEGACY_MAX_BYTES);
}

// ---- Names ----

/**
 * normalizeName lower-cases a name and strips one trailing dot: the form Query.name, NameMap,
 * isInDomain and ptrNameToIPv4 work with. The root is ''.
 */
export function normalizeName(name: string): string {
  const n = name.endsWith('.') ? name.slice(0, -1) : name;
  return n.toLowerCase();
}

/** isInDomain says whether `name` is `domain` or below it; both normalized (normalizeName). */
export function isInDomain(name: string, domain: string): boolean {
  const d = domain.length;
  if (d === 0) return true;
  const n = name.length;
  if (n === d) return name === domain;
  return n > d && name.charCodeAt(n - d - 1) === DOT && name.endsWith(domain);
}

/** isQueryInDomain is isInDomain for a parsed query's name, read from `q.nameBuf` without a string. */
export function isQueryInDomain(q: Query, domain: string): boolean {
  const d = domain.length;
  if (d === 0) return true;
  const n = q.nameLen;
  const buf = q.nameBuf;
  if (n < d || (n > d && buf[n - d - 1] !== DOT)) return false;
  for (let i = 0, j = n - d; i < d; i++, j++) {
    if (buf[j] !== domain.charCodeAt(i)) return false;
  }
  return true;
}

/** hashName is the FNV-1a hash (low 30 bits) of a normalized name's char codes, equal to Query.nameHash for the same name. */
export function hashName(name: string): number {
  let h = FNV_OFFSET;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), FNV_PRIME);
  return h & NAME_HASH_MASK;
}

/**
 * encodeName writes a name in uncompressed wire form (labels, then the root byte). Case is
 * kept. Throws InputError for an empty label, a label over 63 bytes, a name over 255 bytes,
 * or a character outside printable ASCII. '' and '.' are the root.
 */
export function encodeName(name: string): Buffer {
  const n = name.endsWith('.') ? name.slice(0, -1) : name;
  if (n.length === 0) return Buffer.from([0]);
  const wire = Buffer.alloc(n.length + 2);
  let lenAt = 0;
  for (let i = 0; i <= n.length; i++) {
    const c = i < n.length ? n.charCodeAt(i) : DOT;
    if (c === DOT) {
      const l = i - lenAt;
      if (l === 0) throw new InputError(`invalid dns name "${name}": empty label`);
      if (l > MAX_LABEL_LEN) throw new InputError(`invalid dns name "${name}": label longer than 63`);
      wire[lenAt] = l;
      lenAt = i + 1;
    } else if (c <= 0x20 || c >= 0x7f) {
      throw new InputError(`invalid dns name "${name}": character code ${c}`);
    } else {
      wire[i + 1] = c;
    }
  }
  if (wire.length > MAX_NAME_WIRE_LEN) throw new InputError(`invalid dns name "${name}": longer than 255 bytes`);
  return wire;
}

const PTR_SUFFIX = '.in-addr.arpa';

/**
 * ptrNameToIPv4 reads `d.c.b.a.in-addr.arpa` as the address a.b.c.d (unsigned 32-bit, host
 * order), or undefined for anything else: fewer or more than four octets, an octet above 255
 * or with a leading zero, or another suffix. The suffix matches in any case; a trailing dot is
 * allowed. It allocates nothing.
 */
export function ptrNameToIPv4(name: string): number | undefined {
  let end = name.length;
  if (end > 0 && name.charCodeAt(end - 1) === DOT) end--;
  const stem = end - PTR_SUFFIX.length;
  if (stem < 7) return undefined; // "0.0.0.0" is the shortest stem
  for (let i = 0; i < PTR_SUFFIX.length; i++) {
    // Every suffix character has bit 0x20 set, so OR-ing it lower-cases letters and keeps the rest.
    if ((name.charCodeAt(stem + i) | 0x20) !== PTR_SUFFIX.charCodeAt(i)) return undefined;
  }
  let addr = 0;
  let p = 0;
  for (let octet = 0; octet < 4; octet++) {
    if (octet > 0) {
      if (name.charCodeAt(p) !== DOT) return undefined;
      p++;
    }
    const start = p;
    let v = 0;
    for (; p < stem; p++) {
      const c = name.charCodeAt(p) - 0x30;
      if (c < 0 || c > 9) break;
      v = v * 10 + c;
    }
    const digits = p - start;
    if (digits === 0 || digits > 3 || v > 255 || (digits > 1 && name.charCodeAt(start) === 0x30)) return undefined;
    addr += v * 256 ** octet; // the first label is the last octet
  }
  return p === stem ? addr : undefined;
}

/** ipv4ToPtrName writes the reverse-lookup name of an address (unsigned 32-bit, host order). */
export function ipv4ToPtrName(addr: number): string {
  return `${addr & 255}.${(addr >>> 8) & 255}.${(addr >>> 16) & 255}.${addr >>> 24}${PTR_SUFFIX}`;
}

// ---- Pre-encoded records ----

/**
 * RecordSet is one or more resource records encoded once, off the hot path, and copied into
 * every answer. Records whose owner is the question name start with the pointer C0 0C, so the
 * set fits after any question for that name, whatever its case.
 */
export interface RecordSet {
  /** bytes holds `count` records back to back. Never modified by the writers. */
  readonly bytes: Buffer;
  /** count is the number of records in bytes. */
  readonly count: number;
  /** stride is the length of every record when they are equal and may be shuffled, else 0. */
  readonly stride: number;
}

/** checkTtl validates a TTL in seconds and clamps it to TTL_MAX. */
function checkTtl(ttl: number): number {
  if (!Number.isInteger(ttl) || ttl < 0) throw new InputError(`invalid dns ttl ${ttl}: want whole seconds >= 0`);
  return Math.min(ttl, TTL_MAX);
}

/**
 * writeRecordHead writes a record's TYPE, CLASS IN, TTL and RDLENGTH at `p` (after its owner
 * name) and returns the offset of its RDATA.
 */
function writeRecordHead(buf: Buffer, p: number, type: number, ttl: number, rdlen: number): number {
  buf.writeUInt16BE(type, p);
  buf.writeUInt16BE(QClass.IN, p + 2);
  buf.writeUInt32BE(ttl, p + 4);
  buf.writeUInt16BE(rdlen, p + 8);
  return p + 10;
}

/**
 * encodeARecords pre-encodes one A record per address (unsigned 32-bit, host order), owned by
 * the question name, each A_RECORD_LEN bytes so writeAnswer shuffles them. Throws InputError
 * for a bad address or TTL.
 */
export function encodeARecords(addrs: readonly number[], ttl: number): RecordSet {
  const t = checkTtl(ttl);
  const bytes = Buffer.alloc(addrs.length * A_RECORD_LEN);
  let p = 0;
  for (const a of addrs) {
    if (!Number.isInteger(a) || a < 0 || a > 0xffffffff) throw new InputError(`invalid ipv4 address ${a}`);
    bytes.writeUInt16BE(0xc000 | QUESTION_NAME_OFFSET, p);
    p = writeRecordHead(bytes, p + 2, QType.A, t, 4);
    bytes.writeUInt32BE(a, p);
    p += 4;
  }
  return { bytes, count: addrs.length, stride: A_RECORD_LEN };
}

/**
 * encodePtrRecords pre-encodes one PTR record per target host name, owned by the question name
 * (a `d.c.b.a.in-addr.arpa` name). Targets are written uncompressed, case kept; they are not
 * shuffled. Throws InputError for a bad name or TTL.
 */
export function encodePtrRecords(targets: readonly string[], ttl: number): RecordSet {
  const t = checkTtl(ttl);
  const names = targets.map(encodeName);
  let size = 0;
  for (const n of names) size += 12 + n.length;
  const bytes = Buffer.alloc(size);
  let p = 0;
  for (const n of names) {
    bytes.writeUInt16BE(0xc000 | QUESTION_NAME_OFFSET, p);
    p = writeRecordHead(bytes, p + 2, QType.PTR, t, n.length);
    p += n.copy(bytes, p);
  }
  return { bytes, count: names.length, stride: 0 };
}

/**
 * encodeSoaRecord pre-encodes the SOA record of `zone` for the authority section of negative
 * answers (RFC 2308 §3): owner `zone` written in full (so it fits after any question), primary
 * `ns.<zone>`, mailbox `hostmaster.<zone>`, and both its TTL and MINIMUM set to `negativeTtl`
 * seconds, which is how long resolvers cache the NXDOMAIN or NODATA. Throws InputError for a
 * bad zone or TTL.
 */
export function encodeSoaRecord(zone: string, negativeTtl: number, serial = 1): RecordSet {
  const t = checkTtl(negativeTtl);
  const z = normalizeName(zone);
  const owner = encodeName(z);
  const mname = encodeName(z === '' ? 'ns' : `ns.${z}`);
  const rname = encodeName(z === '' ? 'hostmaster' : `hostmaster.${z}`);
  const rdlen = mname.length + rname.length + 20;
  const bytes = Buffer.alloc(owner.length + 10 + rdlen);
  let p = owner.copy(bytes, 0);
  p = writeRecordHead(bytes, p, QType.SOA, t, rdlen);
  p += mname.copy(bytes, p);
  p += rname.copy(bytes, p);
  bytes.writeUInt32BE(serial >>> 0, p);
  bytes.writeUInt32BE(SOA_REFRESH_S, p + 4);
  bytes.writeUInt32BE(SOA_RETRY_S, p + 8);
  bytes.writeUInt32BE(SOA_EXPIRE_S, p + 12);
  bytes.writeUInt32BE(t, p + 16);
  return { bytes, count: 1, stride: 0 };
}

// ---- Responses ----
//
// Every writer takes the parsed Query and the buffer it was parsed from, writes a whole
// response at offset 0 of `out` and returns its length. `out` may be the query buffer itself
// (the question is then already in place). `flags` adds FLAG_AA and/or FLAG_RA; QR is always
// set, and RD and CD are copied from the query. An OPT record is written when the query had one.

/**
 * writeAnswer writes a NOERROR response whose answer section is `records` (A records shuffled
 * in place in `out`), or, when that exceeds `maxLen`, a truncated response (TC set, no
 * answers). `q` must come from a parse that returned Ok.
 *
 * @param maxLen udpResponseLimit(q) for UDP, DNS_TCP_MAX_BYTES for TCP; `out.length` caps it too.
 */
export function writeAnswer(
  out: Buffer,
  query: Buffer,
  q: Query,
  records: RecordSet,
  maxLen: number,
  flags: number,
): number {
  return writeRecords(out, query, q, Rcode.NoError, records, true, maxLen, flags);
}

/**
 * writeNegative writes NXDOMAIN (`rcode` Rcode.NxDomain: the name does not exist) or NODATA
 * (Rcode.NoError: the name exists, not with this type) with `soa` (encodeSoaRecord) in the
 * authority section so resolvers may cache it (RFC 2308). Truncates like writeAnswer.
 */
export function writeNegative(
  out: Buffer,
  query: Buffer,
  q: Query,
  rcode: typeof Rcode.NxDomain | typeof Rcode.NoError,
  soa: RecordSet,
  maxLen: number,
  flags: number,
): number {
  return writeRecords(out, query, q, rcode, soa, false, maxLen, flags);
}

/**
 * writeRecords writes header, question, `records` in the answer section (`answer`, shuffled
 * when they may be) or the authority section, and the OPT when the query had one; or a
 * truncated response when that exceeds the limit.
 */
function writeRecords(
  out: Buffer,
  query: Buffer,
  q: Query,
  rcode: number,
  records: RecordSet,
  answer: boolean,
  maxLen: number,
  flags: number,
): number {
  const limit = Math.min(maxLen, out.length);
  const qEnd = q.questionEnd;
  const size = records.bytes.length;
  if (qEnd + size + (q.edns ? OPT_RECORD_LEN : 0) > limit) return writeTruncated(out, query, q, limit, flags);
  const an = answer ? records.count : 0;
  writeHeader(out, q, flags, rcode, 1, an, records.count - an, q.edns ? 1 : 0);
  if (out !== query) copyBytes(query, DNS_HEADER_LEN, out, DNS_HEADER_LEN, qEnd - DNS_HEADER_LEN);
  copyBytes(records.bytes, 0, out, qEnd, size);
  if (answer && records.stride > 0 && records.count > 1) shuffleRecords(out, qEnd, records.count, records.stride);
  const p = qEnd + size;
  return q.edns ? writeOpt(out, p, q, Rcode.NoError) : p;
}

/**
 * writeError writes a response with no records and `rcode` (a ParseResult other than Ok and
 * Drop, or Rcode.ServFail/Refused from the caller). It echoes the id, the question when it
 * parsed, and an OPT when the query had a valid one; BadVers always gets an OPT, since its
 * upper bits travel there (RFC 6891 §6.1.3). Works after any parse result but Drop.
 */
export function writeError(out: Buffer, query: Buffer, q: Query, rcode: number, flags: number): number {
  const opt = q.edns || rcode > 0xf;
  let qEnd = q.questionEnd;
  if (qEnd + (opt ? OPT_RECORD_LEN : 0) > out.length) qEnd = 0; // out too small for the question: leave it out
  const hasQuestion = qEnd > 0;
  writeHeader(out, q, flags, rcode, hasQuestion ? 1 : 0, 0, 0, opt ? 1 : 0);
  let p = DNS_HEADER_LEN;
  if (hasQuestion) {
    if (out !== query) copyBytes(query, DNS_HEADER_LEN, out, DNS_HEADER_LEN, qEnd - DNS_HEADER_LEN);
    p = qEnd;
  }
  return opt ? writeOpt(out, p, q, rcode) : p;
}

/**
 * writeTruncated writes header, question and OPT with TC set and no records: the client
 * learns the answer exists but must ask over TCP. If even that exceeds `limit`, the question
 * and OPT are left out.
 */
function writeTruncated(out: Buffer, query: Buffer, q: Query, limit: number, flags: number): number {
  const qEnd = q.questionEnd;
  const fits = qEnd + (q.edns ? OPT_RECORD_LEN : 0) <= limit;
  writeHeader(out, q, flags | FLAG_TC, Rcode.NoError, fits ? 1 : 0, 0, 0, fits && q.edns ? 1 : 0);
  if (!fits) return DNS_HEADER_LEN;
  if (out !== query) copyBytes(query, DNS_HEADER_LEN, out, DNS_HEADER_LEN, qEnd - DNS_HEADER_LEN);
  return q.edns ? writeOpt(out, qEnd, q, Rcode.NoError) : qEnd;
}

/** writeHeader writes the 12-byte response header: id and opcode from `q`, QR, `flags`, RD and CD copied, RCODE's low 4 bits. */
function writeHeader(
  out: Buffer,
  q: Query,
  flags: number,
  rcode: number,
  qd: number,
  an: number,
  ns: number,
  ar: number,
): void {
  const f =
    FLAG_QR |
    (q.opcode << 11) |
    (flags & (FLAG_AA | FLAG_TC | FLAG_RA)) |
    (q.flags & (FLAG_RD | FLAG_CD)) |
    (rcode & 0xf);
  out[0] = q.id >>> 8;
  out[1] = q.id & 0xff;
  out[2] = f >>> 8;
  out[3] = f & 0xff;
  out[4] = 0;
  out[5] = qd;
  out[6] = an >>> 8;
  out[7] = an & 0xff;
  out[8] = ns >>> 8;
  out[9] = ns & 0xff;
  out[10] = 0;
  out[11] = ar;
}

/**
 * writeOpt writes our OPT record at `p` and returns the offset after it: our UDP payload size
 * (EDNS_UDP_PAYLOAD_BYTES), the upper 8 bits of `rcode`, version 0, the query's DO bit copied
 * (RFC 3225 §3), no options.
 */
function writeOpt(out: Buffer, p: number, q: Query, rcode: number): number {
  out[p] = 0;
  out[p + 1] = 0;
  out[p + 2] = QType.OPT;
  out[p + 3] = EDNS_UDP_PAYLOAD_BYTES >>> 8;
  out[p + 4] = EDNS_UDP_PAYLOAD_BYTES & 0xff;
  out[p + 5] = (rcode >>> 4) & 0xff;
  out[p + 6] = 0;
  out[p + 7] = q.dnssecOk ? 0x80 : 0;
  out[p + 8] = 0;
  out[p + 9] = 0;
  out[p + 10] = 0;
  return p + OPT_RECORD_LEN;
}

/** copyBytes copies `n` bytes between distinct buffers; short copies loop, avoiding Buffer#copy's overhead. */
function copyBytes(src: Buffer, srcOff: number, dst: Buffer, dstOff: number, n: number): void {
  if (n > COPY_LOOP_MAX) {
    src.copy(dst, dstOff, srcOff, srcOff + n);
    return;
  }
  for (let i = 0; i < n; i++) dst[dstOff + i] = src[srcOff + i] as number;
}

/** shuffleRecords puts `count` records of `stride` bytes at `off` in a random order (Fisher-Yates, in place). */
function shuffleRecords(buf: Buffer, off: number, count: number, stride: number): void {
  for (let i = count - 1; i > 0; i--) {
    const j = randomBelow(i + 1);
    if (j === i) continue;
    const a = off + i * stride;
    const b = off + j * stride;
    for (let k = 0; k < stride; k++) {
      const t = buf[a + k] as number;
      buf[a + k] = buf[b + k] as number;
      buf[b + k] = t;
    }
  }
}

/**
 * rngState is the xorshift32 state behind randomBelow, in a typed array so that updating it
 * allocates nothing (Math.random cost about one small allocation per shuffle). Seeded once,
 * never 0. Spreading load over records needs no cryptographic quality.
 */
const rngState = new Uint32Array([Math.floor(Math.random() * 0xffffffff) + 1]);

/** randomBelow returns an integer in [0, n) for 1 <= n <= 65536, in small-integer arithmetic only. */
function randomBelow(n: number): number {
  let s = rngState[0] as number;
  s ^= s << 13;
  s ^= s >>> 17;
  s ^= s << 5;
  rngState[0] = s;
  return ((s >>> 16) * n) >>> 16; // the top 16 bits scaled to [0, n)
}

// ---- Lookup by parsed name ----

/** NameMapEntry is one name in a NameMap bucket; `key` holds the name's bytes for comparison. */
interface NameMapEntry<T> {
  readonly name: string;
  readonly key: Buffer;
  value: T;
  next: NameMapEntry<T> | undefined;
}

/**
 * NameMap maps normalized names (normalizeName) to values, and finds the value for a parsed
 * query straight from `q.nameBuf` and `q.nameHash`, without building the name string: the
 * string costs about as much as the rest of the parse. Hash collisions are chained and
 * resolved by comparing bytes. Writes (set, delete) belong to the control plane; lookup is the
 * hot path and allocates nothing.
 */
export class NameMap<T> {
  readonly #buckets = new Map<number, NameMapEntry<T>>();
  #size = 0;

  /** size is the number of names held. */
  get size(): number {
    return this.#size;
  }

  /** lookup returns the value for the question name of `q` (after a parse that returned Ok), or undefined. */
  lookup(q: Query): T | undefined {
    for (let e = this.#buckets.get(q.nameHash); e !== undefined; e = e.next) {
      if (bytesEqual(e.key, q.nameBuf, q.nameLen)) return e.value;
    }
    return undefined;
  }

  /** get returns the value for `name`, normalized first. */
  get(name: string): T | undefined {
    const n = normalizeName(name);
    for (let e = this.#buckets.get(hashName(n)); e !== undefined; e = e.next) {
      if (e.name === n) return e.value;
    }
    return undefined;
  }

  /** set maps `name` (normalized first) to `value`, replacing any previous value. */
  set(name: string, value: T): void {
    const n = normalizeName(name);
    const h = hashName(n);
    const head = this.#buckets.get(h);
    for (let e = head; e !== undefined; e = e.next) {
      if (e.name === n) {
        e.value = value;
        return;
      }
    }
    this.#buckets.set(h, { name: n, key: Buffer.from(n, 'latin1'), value, next: head });
    this.#size++;
  }

  /** delete removes `name` (normalized first) and says whether it was there. */
  delete(name: string): boolean {
    const n = normalizeName(name);
    const h = hashName(n);
    let prev: NameMapEntry<T> | undefined;
    for (let e = this.#buckets.get(h); e !== undefined; prev = e, e = e.next) {
      if (e.name !== n) continue;
      if (prev !== undefined) prev.next = e.next;
      else if (e.next !== undefined) this.#buckets.set(h, e.next);
      else this.#buckets.delete(h);
      this.#size--;
      return true;
    }
    return false;
  }

  /** clear removes every name. */
  clear(): void {
    this.#buckets.clear();
    this.#size = 0;
  }

  /** entries lists every (name, value) pair, in no particular order. */
  *entries(): IterableIterator<[string, T]> {
    for (const head of this.#buckets.values()) {
      for (let e: NameMapEntry<T> | undefined = head; e !== undefined; e = e.next) yield [e.name, e.value];
    }
  }
}

/** bytesEqual compares `key` with the first `n` bytes of `buf`. */
function bytesEqual(key: Buffer, buf: Buffer, n: number): boolean {
  if (key.length !== n) return false;
  for (let i = 0; i < n; i++) if (key[i] !== buf[i]) return false;
  return true;
}
