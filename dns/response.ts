/**
 * The DNS server's fast path on the wire, writing side: records encoded once per change of the
 * record set (RecordSet, off the hot path), and the writers that answer a parsed Query by
 * copying them (no allocation per query). Also truncateReply, for forwarded answers too large
 * for the client's UDP size.
 *
 *   A record as pre-encoded by encodeARecords (A_RECORD_LEN = 16 bytes):
 *   | C0 0C | TYPE 1 (2) | CLASS 1 (2) | TTL (4) | RDLENGTH 4 (2) | address (4) |
 *     `- a compression pointer to offset 12, where the question's name sits in every message
 *        with one question; so a cached record can follow any question for the same name.
 *
 * Writers never write past `out.length`, nor past `maxLen` where they take one; an answer that
 * does not fit is replaced by header + question (+ OPT) with TC set, so the client retries over
 * TCP (RFC 2181 §9).
 */
import { InputError } from '../common/errors.js';
import { encodeName, normalizeName } from './names.js';
import type { Query } from './query.js';
import {
  DNS_HEADER_LEN,
  EDNS_UDP_PAYLOAD_BYTES,
  FLAG_AA,
  FLAG_CD,
  FLAG_QR,
  FLAG_RA,
  FLAG_RD,
  FLAG_TC,
  OPT_DO_BIT,
  OPT_RECORD_LEN,
  QClass,
  QType,
  QUESTION_NAME_OFFSET,
  Rcode,
  readFlags,
  TTL_MAX,
} from './wire.js';

/** A_RECORD_LEN is one A record as encodeARecords writes it (2-byte name pointer). */
export const A_RECORD_LEN = 16;
/** SOA timers for a zone nobody transfers; only `minimum` (the negative TTL) matters to clients. */
const SOA_REFRESH_S = 3600;
const SOA_RETRY_S = 600;
const SOA_EXPIRE_S = 86400;
/** COPY_LOOP_MAX: shorter copies use a byte loop, which beats Buffer#copy's call overhead. */
const COPY_LOOP_MAX = 64;

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
  out[p + 7] = q.dnssecOk ? OPT_DO_BIT : 0;
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

/**
 * truncateReply returns a copy of only the header and question of `reply` (a whole response
 * whose question ends at `questionEnd`), with TC set and every record count 0: what a UDP
 * client gets when a forwarded answer exceeds its size, so that it asks again over TCP.
 */
export function truncateReply(reply: Buffer, questionEnd: number): Buffer {
  const end = Math.min(questionEnd, reply.length);
  const out = Buffer.from(reply.subarray(0, end));
  out.writeUInt16BE(readFlags(out) | FLAG_TC, 2);
  out.writeUInt16BE(0, 6);
  out.writeUInt16BE(0, 8);
  out.writeUInt16BE(0, 10);
  return out;
}
