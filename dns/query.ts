/**
 * The DNS server's fast path on the wire, reading side: parse one query by hand into a reusable
 * Query (response.ts answers it by copying pre-encoded records). No object graph is built per
 * query; the only per-query allocation is the name string, and only if a caller reads
 * `Query.name` (a NameMap looks the name up from the parsed bytes without it). The message
 * layout is drawn in wire.ts.
 *
 * Flow of one UDP query through the fast path (the caller owns both buffers and the Query):
 *
 *   datagram ──parseQuery──► Query ──┬─ Drop ───────────► nothing sent
 *                                    ├─ error rcode ────► writeError
 *                                    └─ Ok ─► look up q (NameMap.lookup, isQueryInDomain, ptrNameToIPv4)
 *                                             ├─ found ─────► writeAnswer   (copy records, shuffle A)
 *                                             └─ not found ─► writeNegative (SOA in authority)
 */
import { DOT, FNV_OFFSET, FNV_PRIME, NAME_HASH_MASK } from './names.js';
import {
  DNS_HEADER_LEN,
  DNS_QUERY_MAX_BYTES,
  DNS_UDP_LEGACY_MAX_BYTES,
  EDNS_UDP_PAYLOAD_BYTES,
  FLAG_QR,
  FLAG_RD,
  MAX_LABEL_LEN,
  MAX_NAME_WIRE_LEN,
  OPT_DO_BIT,
  OPT_RECORD_LEN,
  Opcode,
  QClass,
  QType,
  QUESTION_NAME_OFFSET,
  u16,
} from './wire.js';

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
  q.dnssecOk = ((buf[p + 7] as number) & OPT_DO_BIT) !== 0;
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
