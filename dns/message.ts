/**
 * The forwarder's view of DNS messages (dns/upstream.ts): a whole message read once, bounds
 * checked, for what forwarding and caching need: the one question (its case-folded key, to match
 * a reply to our query), every record's TTL offset (the cache rewrites TTLs in place in the
 * upstream's own bytes, so it needs the offset of every TTL field; re-encoding through a library
 * would drop or reorder what it does not model), the first SOA of the authority section
 * (negative caching, RFC 2308) and the OPT record (EDNS, extended RCODE).
 *
 * Unlike the server's fast path (query.ts), this reader allocates freely: it runs once per
 * forwarded query and per upstream reply. It reads only inside the buffer it is given, follows
 * compression pointers only strictly backwards (names.ts readNameKey), and never throws.
 */
import { type NameKey, readNameKey } from './names.js';
import {
  copyId,
  DNS_HEADER_LEN,
  DNS_TCP_MAX_BYTES,
  FLAG_QR,
  FLAG_RD,
  FLAG_TC,
  OPCODE_MASK,
  OPT_DO_BIT,
  QType,
  RCODE_MASK,
  RR_FIXED_LEN,
  readFlags,
  TTL_MAX,
  u16,
} from './wire.js';

// ---- Question ----

/** Question is a message's single question and where it ends. */
export interface Question {
  /** key is the question name's NameKey key (case-folded, label lengths kept). */
  readonly key: NameKey['key'];
  readonly type: number;
  readonly klass: number;
  /** end is the offset just past QCLASS: the question occupies [DNS_HEADER_LEN, end). */
  readonly end: number;
}

/** readQuestion reads the question of a message with QDCOUNT 1; undefined for another count or an overrun. */
export function readQuestion(buf: Buffer): Question | undefined {
  if (buf.length < DNS_HEADER_LEN || u16(buf, 4) !== 1) return undefined;
  const name = readNameKey(buf, DNS_HEADER_LEN);
  if (name === undefined || name.end + 4 > buf.length) return undefined;
  return { key: name.key, type: u16(buf, name.end), klass: u16(buf, name.end + 2), end: name.end + 4 };
}

// ---- Records ----

/** MessageRecords is what the cache needs from a message's answer, authority and additional sections. */
export interface MessageRecords {
  readonly answerCount: number;
  /** answerMinTtl is the smallest answer TTL (TTL_MAX when there are no answers). */
  readonly answerMinTtl: number;
  /** soa is the first SOA of the authority section: its RR TTL and its MINIMUM field. */
  readonly soa: { readonly ttl: number; readonly minimum: number } | undefined;
  /** ttlOffsets are the offsets of every TTL field but OPT's (whose "TTL" holds EDNS flags). */
  readonly ttlOffsets: number[];
  /** ttls are the TTLs at ttlOffsets, in the same order (one with the top bit set read as 0). */
  readonly ttls: number[];
  /** edns is 0 without OPT, 1 with OPT, 2 with OPT and the DO bit. */
  readonly edns: 0 | 1 | 2;
  /** extendedRcode is the OPT record's upper 8 bits of RCODE (RFC 6891 §6.1.3), else 0. */
  readonly extendedRcode: number;
}

/** ttlValue reads a raw TTL: one with the top bit set is treated as zero (RFC 2181 §8). */
function ttlValue(raw: number): number {
  return raw > TTL_MAX ? 0 : raw;
}

/**
 * readRecords walks every record of the three sections after the question (which ends at
 * `start`), counted by the header; undefined when any of them overruns the message, when a
 * SOA's RDATA is too short for its fields, or when an OPT record sits outside the additional
 * section or is not the only one (RFC 6891 §6.1.1). Bytes after the last record are ignored.
 */
export function readRecords(buf: Buffer, start: number): MessageRecords | undefined {
  const counts = [u16(buf, 6), u16(buf, 8), u16(buf, 10)];
  let off = start;
  let answerMinTtl = TTL_MAX;
  let soa: MessageRecords['soa'];
  let edns: 0 | 1 | 2 = 0;
  let extendedRcode = 0;
  const ttlOffsets: number[] = [];
  const ttls: number[] = [];
  for (let section = 0; section < 3; section++) {
    const count = counts[section] as number;
    for (let i = 0; i < count; i++) {
      const name = readNameKey(buf, off);
      if (name === undefined || name.end + RR_FIXED_LEN > buf.length) return undefined;
      const at = name.end;
      const type = u16(buf, at);
      const rdStart = at + RR_FIXED_LEN;
      const rdEnd = rdStart + u16(buf, at + 8);
      if (rdEnd > buf.length) return undefined;
      if (type === QType.OPT) {
        if (section !== 2 || edns !== 0) return undefined; // RFC 6891 §6.1.1: one OPT, in additional
        extendedRcode = buf[at + 4] as number;
        edns = ((buf[at + 6] as number) & OPT_DO_BIT) !== 0 ? 2 : 1;
      } else {
        const ttl = ttlValue(buf.readUInt32BE(at + 4));
        ttlOffsets.push(at + 4);
        ttls.push(ttl);
        if (section === 0) answerMinTtl = Math.min(answerMinTtl, ttl);
        if (section === 1 && type === QType.SOA && soa === undefined) {
          const mname = readNameKey(buf, rdStart);
          const rname = mname === undefined || mname.end > rdEnd ? undefined : readNameKey(buf, mname.end);
          if (rname === undefined || rname.end + 20 > rdEnd) return undefined;
          soa = { ttl, minimum: ttlValue(buf.readUInt32BE(rname.end + 16)) };
        }
      }
      off = rdEnd;
    }
  }
  return { answerCount: counts[0] as number, answerMinTtl, soa, ttlOffsets, ttls, edns, extendedRcode };
}

// ---- Forwarded queries ----

/** ForwardedQuery is a client query validated for forwarding. */
export interface ForwardedQuery {
  readonly question: Question;
  readonly edns: 0 | 1 | 2;
  /** cacheKey is (qname lower-cased, qtype, qclass, EDNS/DO of the query). */
  readonly cacheKey: string;
}

/**
 * readForwardedQuery validates a client query for forwarding: 12 to 65535 bytes, QR clear,
 * opcode QUERY, exactly one question, every record well formed (readRecords). Undefined
 * otherwise.
 */
export function readForwardedQuery(buf: Buffer): ForwardedQuery | undefined {
  if (buf.length < DNS_HEADER_LEN || buf.length > DNS_TCP_MAX_BYTES) return undefined;
  if ((readFlags(buf) & (FLAG_QR | OPCODE_MASK)) !== 0) return undefined;
  const question = readQuestion(buf);
  if (question === undefined) return undefined;
  const records = readRecords(buf, question.end);
  if (records === undefined) return undefined;
  const cacheKey = `${question.key}\0${question.type}\0${question.klass}\0${records.edns}`;
  return { question, edns: records.edns, cacheKey };
}

// ---- Replies ----

/** Reply is an upstream message that matched our query and parsed cleanly. */
export interface Reply {
  /** message is owned by the Upstream: the caller of resolve() gets it (or a copy) with its own id. */
  readonly message: Buffer;
  /** rcode is the full response code: the header's low 4 bits and OPT's upper 8. */
  readonly rcode: number;
  readonly truncated: boolean;
  /**
   * intact is false for a TC reply cut mid-record (some servers truncate bytes, not records):
   * good enough to trigger the TCP retry, not to hand to a client.
   */
  readonly intact: boolean;
  readonly question: Question;
  readonly records: MessageRecords;
}

/** ReplyVerdict is checkReply's decision. */
export type ReplyVerdict = { kind: 'mismatch' } | { kind: 'malformed' } | { kind: 'ok'; reply: Reply };

const MISMATCH: ReplyVerdict = { kind: 'mismatch' };

/** NO_RECORDS stands in for the records of a truncated reply that did not parse. */
const NO_RECORDS: MessageRecords = {
  answerCount: 0,
  answerMinTtl: 0,
  soa: undefined,
  ttlOffsets: [],
  ttls: [],
  edns: 0,
  extendedRcode: 0,
};

/**
 * checkReply decides what a message `msg` from the server's address is, given the id we sent
 * and the client's query (`query`, validated as `q`): ours (id, QR, opcode and question all
 * match; case-insensitive name), not ours (`mismatch`: ignore it, it may be spoofed or late), or
 * ours but malformed beyond the question (`malformed`: the server's failure) unless TC is set: a
 * truncated reply only has to say "retry over TCP". `msg` is kept in the Reply, not copied.
 */
export function checkReply(msg: Buffer, id: number, query: Buffer, q: ForwardedQuery): ReplyVerdict {
  if (msg.length < DNS_HEADER_LEN || u16(msg, 0) !== id) return MISMATCH;
  const flags = readFlags(msg);
  if ((flags & FLAG_QR) === 0 || (flags & OPCODE_MASK) !== (readFlags(query) & OPCODE_MASK)) return MISMATCH;
  const question = readQuestion(msg);
  const want = q.question;
  if (question === undefined || question.key !== want.key || question.type !== want.type) return MISMATCH;
  if (question.klass !== want.klass) return MISMATCH;
  const truncated = (flags & FLAG_TC) !== 0;
  const records = readRecords(msg, question.end);
  if (records === undefined && !truncated) return { kind: 'malformed' };
  const intact = records !== undefined;
  const r = records ?? NO_RECORDS;
  const rcode = (r.extendedRcode << 4) | (flags & RCODE_MASK);
  return { kind: 'ok', reply: { message: msg, rcode, truncated, intact, question, records: r } };
}

// ---- Cached replies ----

/** StoredReply is what copyStoredReply needs of a cached reply. */
export interface StoredReply {
  /** message is the stored reply's bytes (its id is meaningless). */
  readonly message: Buffer;
  /** questionEnd is where its question ends (Question.end). */
  readonly questionEnd: number;
  /** ttlOffsets and ttls are MessageRecords' (the TTLs as stored, maybe capped). */
  readonly ttlOffsets: readonly number[];
  readonly ttls: readonly number[];
}

/**
 * copyStoredReply returns a copy of a stored reply for the client query `query` (whose question
 * ends at `questionEnd`): the client's id and RD bit, the client's question bytes (its spelling
 * of the name, so 0x20 case randomisation survives) when the questions are the same length, and
 * every TTL reduced by `elapsedS` whole seconds, never below 0.
 */
export function copyStoredReply(stored: StoredReply, query: Buffer, questionEnd: number, elapsedS: number): Buffer {
  const out = Buffer.from(stored.message);
  copyId(query, out);
  out[2] = ((out[2] as number) & ~(FLAG_RD >> 8)) | ((query[2] as number) & (FLAG_RD >> 8));
  if (questionEnd === stored.questionEnd) query.copy(out, DNS_HEADER_LEN, DNS_HEADER_LEN, questionEnd);
  for (let i = 0; i < stored.ttlOffsets.length; i++) {
    out.writeUInt32BE(Math.max(0, (stored.ttls[i] as number) - elapsedS), stored.ttlOffsets[i] as number);
  }
  return out;
}
