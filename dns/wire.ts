/**
 * The DNS wire format's one definition: message layout, lengths, record types, classes,
 * opcodes, response codes, header flags, TCP framing, and the header accessors every reader and
 * writer shares. The code that reads and writes DNS bytes sits beside it, and nothing else in
 * dns/ (or outside it) touches them:
 *
 *   wire.ts      this file: constants, header fields, TCP framing
 *   names.ts     names: text form, wire encoding, the compressed-name walker, hashing, PTR names
 *   query.ts     the server's fast path: parseQuery into one reused Query, allocation-free
 *   response.ts  records encoded once (RecordSet) and the response writers, allocation-free
 *   name-map.ts  NameMap: find a parsed query's name without building its string
 *   message.ts   the forwarder's reader: one question and a walk over every record (TTL
 *                offsets, SOA, OPT) of upstream replies and forwarded queries, for the cache
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
 *   resource record: NAME (labels, or ending in a 2-byte pointer C0|offset) | TYPE (2) |
 *   CLASS (2) | TTL (4) | RDLENGTH (2) | RDATA (RDLENGTH)
 *
 *   OPT pseudo-record (RFC 6891 §6.1.2), OPT_RECORD_LEN = 11 bytes without options:
 *   | 00 (root) | TYPE 41 (2) | CLASS = UDP payload size (2) | ext. RCODE | version | DO, Z (2) | RDLENGTH (2) | options |
 */

// ---- Specification (RFC 1035, RFC 2181, RFC 6891) ----

/** DNS_HEADER_LEN is the fixed message header: id, flags and four section counts. */
export const DNS_HEADER_LEN = 12;
/** DNS_UDP_LEGACY_MAX_BYTES is the largest UDP response a client without EDNS accepts (RFC 1035 §2.3.4). */
export const DNS_UDP_LEGACY_MAX_BYTES = 512;
/** DNS_TCP_MAX_BYTES is the largest message a 2-byte TCP length prefix can carry (RFC 1035 §4.2.2). */
export const DNS_TCP_MAX_BYTES = 65535;
/** TCP_LENGTH_PREFIX_LEN is the length field before every message on TCP (RFC 1035 §4.2.2). */
export const TCP_LENGTH_PREFIX_LEN = 2;
/** MAX_LABEL_LEN is the longest label, in bytes (RFC 1035 §2.3.4). */
export const MAX_LABEL_LEN = 63;
/** MAX_NAME_WIRE_LEN is the longest name on the wire, length bytes and the root byte included. */
export const MAX_NAME_WIRE_LEN = 255;
/** OPT_RECORD_LEN is an OPT record without options: root name, type, class, ttl, rdlength. */
export const OPT_RECORD_LEN = 11;
/** RR_FIXED_LEN is what follows a record's owner name before its RDATA: type, class, TTL, RDLENGTH. */
export const RR_FIXED_LEN = 10;
/** QUESTION_NAME_OFFSET is where the question's name starts in every message. */
export const QUESTION_NAME_OFFSET = DNS_HEADER_LEN;
/** TTL_MAX is the largest TTL: one with the top bit set is treated as zero (RFC 2181 §8). */
export const TTL_MAX = 0x7fffffff;

/** QType holds the record types we look at (RFC 1035 §3.2.2, RFC 3596, RFC 6891). */
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

/** Rcode holds the response codes we send or look at. BadVers (16) needs an OPT record to carry its high bits. */
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
/** OPCODE_MASK selects the 4-bit opcode in the flags word (shift right by 11 for its value). */
export const OPCODE_MASK = 0x7800;
/** RCODE_MASK selects the low 4 bits of RCODE in the flags word; the high 8 travel in OPT. */
export const RCODE_MASK = 0x000f;
/** OPT_DO_BIT is the DNSSEC OK flag in the high byte of the OPT record's flags (RFC 3225). */
export const OPT_DO_BIT = 0x80;

// ---- Implementation choices ----

/** EDNS_UDP_PAYLOAD_BYTES is the UDP size we advertise in OPT and the default cap on the client's (DNS flag day 2020). */
export const EDNS_UDP_PAYLOAD_BYTES = 1232;
/** DNS_QUERY_MAX_BYTES is the default cap on a UDP query; larger datagrams are dropped unparsed. */
export const DNS_QUERY_MAX_BYTES = 4096;

// ---- Header fields ----

/** u16 reads a big-endian 16-bit value at `p`; the caller has checked that both bytes are in bounds. */
export function u16(buf: Uint8Array, p: number): number {
  return ((buf[p] as number) << 8) | (buf[p + 1] as number);
}

/** readFlags returns a message's flags word; `msg` holds at least a header. */
export function readFlags(msg: Uint8Array): number {
  return u16(msg, 2);
}

/** writeId writes the transaction id of the message at `off` (0 unless it sits after a TCP length). */
export function writeId(msg: Uint8Array, id: number, off = 0): void {
  msg[off] = (id >>> 8) & 0xff;
  msg[off + 1] = id & 0xff;
}

/** copyId copies the transaction id of `src` into `dst`; both hold at least 2 bytes. */
export function copyId(src: Uint8Array, dst: Uint8Array): void {
  dst[0] = src[0] as number;
  dst[1] = src[1] as number;
}

// ---- TCP framing (RFC 1035 §4.2.2) ----

/** readTcpLength returns the message length in the 2-byte prefix at `off`, or -1 when fewer than 2 bytes are there. */
export function readTcpLength(buf: Uint8Array, off = 0): number {
  return buf.length - off < TCP_LENGTH_PREFIX_LEN ? -1 : u16(buf, off);
}

/** writeTcpLength writes the 2-byte length prefix `len` at `off`. */
export function writeTcpLength(buf: Uint8Array, len: number, off = 0): void {
  buf[off] = (len >>> 8) & 0xff;
  buf[off + 1] = len & 0xff;
}

/** frameTcp returns a new buffer: the length prefix, then a copy of `msg` (at most DNS_TCP_MAX_BYTES). */
export function frameTcp(msg: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(TCP_LENGTH_PREFIX_LEN + msg.length);
  writeTcpLength(out, msg.length);
  out.set(msg, TCP_LENGTH_PREFIX_LEN);
  return out;
}
