/**
 * Upstream forwards queries for names outside the cluster domain to the host's (or the configured)
 * recursive resolvers, with a small TTL-honouring cache in front (bounded in entries and in bytes).
 * Queries waiting on upstreams are bounded in all and per client address, so one client cannot
 * take every slot.
 *
 * ```
 *   client query ─► DnsServer ─► Upstream.resolve(query)
 *                                  │
 *                                  ├─ cache hit ─► copy of the stored reply: client's id, client's question
 *                                  │               bytes, every TTL aged ─► caller
 *                                  ▼ miss
 *        client has maxInFlightPerClient waiting ─► UpstreamError('client-busy'); the caller answers REFUSED
 *        maxInFlight waiting in all ─► UpstreamError('busy'); the caller answers SERVFAIL
 *        for pass in 1..attempts, servers in order with the last one that answered first:
 *          fresh UDP socket (random source port), fresh random 16-bit id ─► server
 *          wait timeoutMs for a datagram from server addr:port with our id, QR=1, our question
 *            (anything else is ignored and counted as mismatched; a matching but malformed
 *            reply is a failure of that server)
 *          TC=1 ─► same query over TCP to the same server (2-byte length framing)
 *        answer ─► cache if cacheable and small enough (LRU eviction within entry and byte bounds)
 *               ─► client's id restored ─► caller
 *        nothing ─► UpstreamError('exhausted'); the caller answers SERVFAIL
 * ```
 *
 * This file parses DNS messages by hand (header, one question, and a walk over every record) rather
 * than with dns2's Packet: the cache rewrites TTLs in place in the upstream's own bytes, so it needs
 * the offset of every TTL field, and re-encoding through dns2 would drop or reorder what it does not
 * model. The walker follows compression pointers only strictly backwards and never throws.
 */

import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import ipaddr from 'ipaddr.js';
import { ConfigError, type Logger, noopLogger, type Startable, WeftError } from '../common/index.js';

// ---- Specification (RFC 1035, RFC 2181, RFC 2308, RFC 6891) ----

/** DNS_PORT is the port of resolv.conf nameservers and of upstream servers given without one (RFC 1035). */
export const DNS_PORT = 53;
/** DNS_HEADER_LEN is the fixed DNS message header: id, flags, four section counts (RFC 1035 §4.1.1). */
const DNS_HEADER_LEN = 12;
/** DNS_MESSAGE_MAX_LEN is the largest message TCP's 2-byte length prefix can frame (RFC 1035 §4.2.2). */
const DNS_MESSAGE_MAX_LEN = 0xffff;
/** DNS_NAME_MAX_LEN bounds a name's wire length, length bytes and root label included (RFC 1035 §2.3.4). */
const DNS_NAME_MAX_LEN = 255;
/** DNS_TTL_MAX: a TTL with the top bit set is treated as zero (RFC 2181 §8). */
const DNS_TTL_MAX = 0x7fffffff;
const FLAG_QR = 0x8000;
const FLAG_TC = 0x0200;
const FLAG_RD = 0x0100;
const OPCODE_MASK = 0x7800;
const RCODE_MASK = 0x000f;
const RCODE_NOERROR = 0;
const RCODE_SERVFAIL = 2;
const RCODE_NXDOMAIN = 3;
const RCODE_REFUSED = 5;
const TYPE_SOA = 6;
const TYPE_OPT = 41;
/** OPT_DO_BIT is the DNSSEC OK flag in the high byte of the OPT record's flags (RFC 3225). */
const OPT_DO_BIT = 0x80;

// ---- Implementation choices ----

/** UPSTREAM_TIMEOUT_MS is the default wait for one attempt (one server, UDP, or the TCP retry). */
export const UPSTREAM_TIMEOUT_MS = 2_000;
/** UPSTREAM_ATTEMPTS is the default number of passes over the server list, as resolv.conf's `attempts:2`. */
export const UPSTREAM_ATTEMPTS = 2;
/** UPSTREAM_CACHE_MAX_ENTRIES bounds the cache; the least recently used entry goes first. */
export const UPSTREAM_CACHE_MAX_ENTRIES = 10_000;
/**
 * UPSTREAM_CACHE_MAX_BYTES bounds the cache's memory as well, charged per entry by
 * cacheEntryBytes (answer, key and bookkeeping): 8 MiB holds the 10,000-entry cap of ordinary
 * answers (about 550 bytes each, bookkeeping included), so the entry cap stays the binding limit
 * for normal traffic, while a flood of large (TCP-sized) answers can grow the cache to 8 MiB and
 * no further (10,000 answers of 60 KB were 720 MB).
 */
export const UPSTREAM_CACHE_MAX_BYTES = 8 << 20;
/**
 * UPSTREAM_CACHE_ENTRY_MAX_BYTES: an answer longer than this is forwarded but not cached. 16 KiB
 * is over ten times the largest UDP answer the server sends (1232 bytes, EDNS_UDP_PAYLOAD_BYTES
 * in wire.ts), so only rare TCP-sized answers are skipped, and one entry can take at most 1/512
 * of UPSTREAM_CACHE_MAX_BYTES: no single answer flushes many others out.
 */
export const UPSTREAM_CACHE_ENTRY_MAX_BYTES = 16 << 10;
/**
 * CACHE_ENTRY_OVERHEAD_BYTES is what an entry costs beyond its answer and key bytes: the Map
 * slot, the entry object, the Buffer view and the two TTL arrays (430 bytes of heap for a
 * two-record entry with a 40-character key on Node 20, measured; key and records counted apart).
 */
const CACHE_ENTRY_OVERHEAD_BYTES = 384;
/** CACHE_RECORD_BYTES is the bookkeeping per cached record: one TTL offset and one TTL, 8 bytes each. */
const CACHE_RECORD_BYTES = 16;
/** UPSTREAM_CACHE_MAX_TTL_S caps how long any answer, positive or negative, is served from cache. */
export const UPSTREAM_CACHE_MAX_TTL_S = 3_600;
/** UPSTREAM_MAX_IN_FLIGHT bounds concurrent forwarded queries (each holds one socket): a flood of unique names cannot exhaust file descriptors. */
export const UPSTREAM_MAX_IN_FLIGHT = 1_024;
/**
 * UPSTREAM_MAX_IN_FLIGHT_PER_CLIENT is one client address's share of UPSTREAM_MAX_IN_FLIGHT:
 * far more than a stub resolver keeps outstanding (glibc asks A and AAAA together, per lookup),
 * and 1/16 of the total, so one client that floods unique slow names leaves 960 for the rest.
 */
export const UPSTREAM_MAX_IN_FLIGHT_PER_CLIENT = 64;
/** LATENCY_RING_LEN is how many recent upstream latencies stats() reports. */
const LATENCY_RING_LEN = 256;
/** RESOLV_CONF_PATH is where the host's resolver configuration lives. */
export const RESOLV_CONF_PATH = '/etc/resolv.conf';

// ---- Errors ----

/**
 * UpstreamFailure says why resolve() rejected:
 * - `bad-query`: the query is not a well-formed standard query (QR=0, opcode QUERY, exactly one
 *   question, at most 65535 bytes): the caller's bug, answer FORMERR;
 * - `no-servers`: the server list is empty;
 * - `busy`: `maxInFlight` queries are already waiting on upstreams;
 * - `client-busy`: this query's client already has `maxInFlightPerClient` waiting (its fair
 *   share is used up; other clients are still served);
 * - `exhausted`: every attempt timed out or failed;
 * - `stopped`: stop() was called.
 */
export type UpstreamFailure = 'bad-query' | 'no-servers' | 'busy' | 'client-busy' | 'exhausted' | 'stopped';

/**
 * UpstreamError is how resolve() fails. The caller answers SERVFAIL for every reason but
 * `bad-query` (code EWEFT_INPUT) and `client-busy` (REFUSED: a refusal of this client for now,
 * not a failure of the name); all but `bad-query` carry EWEFT_UNAVAILABLE.
 */
export class UpstreamError extends WeftError {
  readonly reason: UpstreamFailure;

  constructor(reason: UpstreamFailure, message: string, options?: { cause?: unknown }) {
    super(reason === 'bad-query' ? 'EWEFT_INPUT' : 'EWEFT_UNAVAILABLE', message, options);
    this.name = 'UpstreamError';
    this.reason = reason;
  }
}

// ---- Server addresses ----

/** UpstreamServer is one parsed upstream address. */
export interface UpstreamServer {
  /** address is dotted IPv4 or RFC 5952 IPv6 text (a zone id such as `%eth0` kept). */
  readonly address: string;
  readonly port: number;
  readonly family: 'udp4' | 'udp6';
  /** name is `address:port` or `[address]:port`, as stats and errors show it. */
  readonly name: string;
}

function canonicalIPv6(s: string): string | undefined {
  if (!net.isIPv6(s) || !ipaddr.IPv6.isValid(s)) return undefined;
  return ipaddr.IPv6.parse(s).toRFC5952String();
}

function isStrictIPv4(s: string): boolean {
  return ipaddr.IPv4.isValidFourPartDecimal(s);
}

/**
 * parseUpstreamServer parses `ipv4`, `ipv4:port`, `ipv6`, `[ipv6]` or `[ipv6]:port`; the port
 * defaults to 53. Host names are refused (resolving them would need the resolver being built).
 * Throws ConfigError.
 */
export function parseUpstreamServer(s: string): UpstreamServer {
  const text = s.trim();
  let host: string;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (bracketed !== null) {
    host = bracketed[1] ?? '';
    portText = bracketed[2];
  } else if (net.isIPv6(text)) {
    host = text;
  } else {
    const m = /^([^:]+)(?::(\d+))?$/.exec(text);
    host = m?.[1] ?? '';
    portText = m?.[2];
  }
  const port = portText === undefined ? DNS_PORT : Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new ConfigError(`invalid upstream server "${s}": port must be 1-65535`);
  }
  if (isStrictIPv4(host)) return { address: host, port, family: 'udp4', name: `${host}:${port}` };
  const v6 = canonicalIPv6(host);
  if (v6 !== undefined) return { address: v6, port, family: 'udp6', name: `[${v6}]:${port}` };
  throw new ConfigError(`invalid upstream server "${s}": want ipv4[:port] or [ipv6]:port`);
}

// ---- resolv.conf ----

/** ResolvConfOptions are the `options` line's settings that a forwarder may care about. */
export interface ResolvConfOptions {
  ndots?: number;
  /** timeoutSeconds is `timeout:n` (glibc caps it at 30). */
  timeoutSeconds?: number;
  /** attempts is `attempts:n` (glibc caps it at 5). */
  attempts?: number;
  rotate: boolean;
  edns0: boolean;
  /** other lists the options we do not interpret, as written. */
  other: string[];
}

/** ResolvConf is what parseResolvConf found. */
export interface ResolvConf {
  /** nameservers are IPv4 (dotted) and IPv6 (RFC 5952) addresses in file order, duplicates dropped; port 53 is implied. */
  nameservers: string[];
  /** search is the last `search` or `domain` line's domains, lower-cased, trailing dot dropped. */
  search: string[];
  options: ResolvConfOptions;
  /** notes say which lines were skipped and why, one line each, for the caller to log. */
  notes: string[];
}

function optionNumber(value: string, max: number): number | undefined {
  if (!/^\d{1,6}$/.test(value)) return undefined;
  return Math.min(Number(value), max);
}

/**
 * parseResolvConf reads resolv.conf(5) text. It never throws: comments (`#` or `;` to the end of
 * a line), blank lines and unknown keywords are skipped, bad lines are reported in `notes`. It
 * returns exactly what the file says: no nameserver line means an empty list (glibc would fall
 * back to 127.0.0.1, which for a DNS server on this host is usually itself).
 */
export function parseResolvConf(text: string): ResolvConf {
  const out: ResolvConf = {
    nameservers: [],
    search: [],
    options: { rotate: false, edns0: false, other: [] },
    notes: [],
  };
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] ?? '').replace(/[#;].*$/, '').trim();
    if (line === '') continue;
    const [keyword = '', ...args] = line.split(/\s+/);
    const where = `line ${i + 1}`;
    switch (keyword) {
      case 'nameserver': {
        const addr = args[0] ?? '';
        const v = isStrictIPv4(addr) ? addr : canonicalIPv6(addr);
        if (v === undefined) out.notes.push(`${where}: skipped nameserver "${addr}": not an IP address`);
        else if (out.nameservers.includes(v)) out.notes.push(`${where}: skipped duplicate nameserver ${v}`);
        else out.nameservers.push(v);
        break;
      }
      case 'search':
      case 'domain':
        out.search = args.map((d) => d.toLowerCase().replace(/\.$/, '')).filter((d) => d !== '');
        break;
      case 'options':
        for (const opt of args) {
          const colon = opt.indexOf(':');
          const name = colon < 0 ? opt : opt.slice(0, colon);
          const value = colon < 0 ? '' : opt.slice(colon + 1);
          if (name === 'ndots' && optionNumber(value, 15) !== undefined) out.options.ndots = optionNumber(value, 15);
          else if (name === 'timeout' && optionNumber(value, 30) !== undefined)
            out.options.timeoutSeconds = optionNumber(value, 30);
          else if (name === 'attempts' && optionNumber(value, 5) !== undefined)
            out.options.attempts = optionNumber(value, 5);
          else if (opt === 'rotate') out.options.rotate = true;
          else if (opt === 'edns0') out.options.edns0 = true;
          else out.options.other.push(opt);
        }
        break;
      case 'sortlist':
        break;
      default:
        out.notes.push(`${where}: skipped unknown keyword "${keyword.slice(0, 40)}"`);
    }
  }
  return out;
}

/**
 * excludeNameservers drops nameservers that are our own DNS server, so that we never forward a
 * query to ourselves. `exclude` lists our listen addresses (`ip`, `ip:port`, `[ipv6]:port`);
 * only those on port 53 can collide with a resolv.conf nameserver. A wildcard (`0.0.0.0`, `::`)
 * stands for itself and every address in `localAddresses` of its family. Other loopback
 * addresses stay: a stub resolver such as systemd-resolved on 127.0.0.53 is a fine upstream.
 * Throws ConfigError on an unparsable `exclude` entry.
 */
export function excludeNameservers(
  nameservers: readonly string[],
  exclude: readonly string[],
  localAddresses: readonly string[] = [],
): { kept: string[]; excluded: string[] } {
  const ours = new Set<string>();
  for (const e of exclude) {
    const s = parseUpstreamServer(e);
    if (s.port !== DNS_PORT) continue;
    ours.add(s.address);
    if (s.address === '0.0.0.0' || s.address === '::') {
      for (const a of localAddresses) {
        const v = isStrictIPv4(a) ? a : canonicalIPv6(a);
        if (v !== undefined && isStrictIPv4(v) === (s.family === 'udp4')) ours.add(v);
      }
    }
  }
  const kept: string[] = [];
  const excluded: string[] = [];
  for (const n of nameservers) (ours.has(n) ? excluded : kept).push(n);
  return { kept, excluded };
}

/** LoadResolvConfOptions configure loadResolvConf. */
export interface LoadResolvConfOptions {
  /** path defaults to /etc/resolv.conf. */
  readonly path?: string;
  /** exclude lists our own DNS listen addresses; see excludeNameservers. */
  readonly exclude?: readonly string[];
  /** localAddresses lists this host's interface addresses (default: os.networkInterfaces()). */
  readonly localAddresses?: () => readonly string[];
}

function interfaceAddresses(): string[] {
  const out: string[] = [];
  for (const list of Object.values(os.networkInterfaces())) for (const a of list ?? []) out.push(a.address);
  return out;
}

/**
 * loadResolvConf reads and parses the host's resolv.conf and removes our own listen addresses
 * from its nameservers (see excludeNameservers); `excluded` lists what was removed. A missing
 * file gives an empty result with a note. Other read failures throw WeftError EWEFT_SYSTEM.
 */
export async function loadResolvConf(
  options: LoadResolvConfOptions = {},
): Promise<ResolvConf & { excluded: string[] }> {
  const path = options.path ?? RESOLV_CONF_PATH;
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      const conf = parseResolvConf('');
      conf.notes.push(`${path} does not exist: no upstream nameservers`);
      return { ...conf, excluded: [] };
    }
    throw new WeftError('EWEFT_SYSTEM', `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  const conf = parseResolvConf(text);
  const local = (options.localAddresses ?? interfaceAddresses)();
  const { kept, excluded } = excludeNameservers(conf.nameservers, options.exclude ?? [], local);
  for (const e of excluded) conf.notes.push(`skipped nameserver ${e}: it is our own dns listen address`);
  return { ...conf, nameservers: kept, excluded };
}

// ---- Message inspection (never throws) ----

/**
 * readName walks the name at `start` and returns its canonical key (each label as a length
 * character then its bytes, ASCII letters lower-cased: unambiguous even for labels containing
 * dots) and the offset just past the name where it sits. Pointers must go strictly backwards
 * from the previous jump, so loops end; undefined on any overrun or bad label type.
 */
function readName(buf: Buffer, start: number): { key: string; end: number } | undefined {
  let off = start;
  let limit = start;
  let end = -1;
  let wireLen = 1;
  let key = '';
  for (;;) {
    if (off >= buf.length) return undefined;
    const len = buf[off] as number;
    if (len === 0) return { key, end: end < 0 ? off + 1 : end };
    if ((len & 0xc0) === 0xc0) {
      if (off + 1 >= buf.length) return undefined;
      const ptr = ((len & 0x3f) << 8) | (buf[off + 1] as number);
      if (end < 0) end = off + 2;
      if (ptr >= limit) return undefined;
      limit = ptr;
      off = ptr;
      continue;
    }
    if ((len & 0xc0) !== 0) return undefined;
    wireLen += len + 1;
    if (wireLen > DNS_NAME_MAX_LEN || off + 1 + len > buf.length) return undefined;
    key += String.fromCharCode(len);
    for (let i = off + 1; i <= off + len; i++) {
      const c = buf[i] as number;
      key += String.fromCharCode(c >= 0x41 && c <= 0x5a ? c + 0x20 : c);
    }
    off += 1 + len;
  }
}

/** nameText renders a name key as dotted text for messages (not escaped; not for the wire). */
function nameText(key: string): string {
  const labels: string[] = [];
  for (let i = 0; i < key.length; ) {
    const len = key.charCodeAt(i);
    labels.push(key.slice(i + 1, i + 1 + len));
    i += 1 + len;
  }
  return labels.length === 0 ? '.' : `${labels.join('.')}.`;
}

/** Question is a message's single question and where it ends. */
interface Question {
  readonly key: string;
  readonly type: number;
  readonly klass: number;
  /** end is the offset just past QCLASS: the question occupies [DNS_HEADER_LEN, end). */
  readonly end: number;
}

function readQuestion(buf: Buffer): Question | undefined {
  if (buf.length < DNS_HEADER_LEN || buf.readUInt16BE(4) !== 1) return undefined;
  const name = readName(buf, DNS_HEADER_LEN);
  if (name === undefined || name.end + 4 > buf.length) return undefined;
  return { key: name.key, type: buf.readUInt16BE(name.end), klass: buf.readUInt16BE(name.end + 2), end: name.end + 4 };
}

/** Records is what the cache needs from a message's answer, authority and additional sections. */
interface Records {
  readonly answerCount: number;
  /** answerMinTtl is the smallest answer TTL (DNS_TTL_MAX when there are no answers). */
  readonly answerMinTtl: number;
  /** soa is the first SOA of the authority section: its RR TTL and its MINIMUM field. */
  readonly soa: { readonly ttl: number; readonly minimum: number } | undefined;
  /** ttlOffsets are the offsets of every TTL field but OPT's (whose "TTL" holds EDNS flags). */
  readonly ttlOffsets: number[];
  readonly ttls: number[];
  /** edns is 0 without OPT, 1 with OPT, 2 with OPT and the DO bit. */
  readonly edns: 0 | 1 | 2;
  /** extendedRcode is the OPT record's upper 8 bits of RCODE (RFC 6891 §6.1.3), else 0. */
  readonly extendedRcode: number;
}

function ttlValue(raw: number): number {
  return raw > DNS_TTL_MAX ? 0 : raw;
}

/** readRecords walks all records after the question; undefined when any of them overruns the message. */
function readRecords(buf: Buffer, start: number): Records | undefined {
  const counts = [buf.readUInt16BE(6), buf.readUInt16BE(8), buf.readUInt16BE(10)];
  let off = start;
  let answerMinTtl = DNS_TTL_MAX;
  let soa: Records['soa'];
  let edns: 0 | 1 | 2 = 0;
  let extendedRcode = 0;
  const ttlOffsets: number[] = [];
  const ttls: number[] = [];
  for (let section = 0; section < 3; section++) {
    const count = counts[section] as number;
    for (let i = 0; i < count; i++) {
      const name = readName(buf, off);
      if (name === undefined || name.end + 10 > buf.length) return undefined;
      const at = name.end;
      const type = buf.readUInt16BE(at);
      const rdStart = at + 10;
      const rdEnd = rdStart + buf.readUInt16BE(at + 8);
      if (rdEnd > buf.length) return undefined;
      if (type === TYPE_OPT) {
        if (section !== 2 || edns !== 0) return undefined; // RFC 6891 §6.1.1: one OPT, in additional
        extendedRcode = buf[at + 4] as number;
        edns = ((buf[at + 6] as number) & OPT_DO_BIT) !== 0 ? 2 : 1;
      } else {
        const ttl = ttlValue(buf.readUInt32BE(at + 4));
        ttlOffsets.push(at + 4);
        ttls.push(ttl);
        if (section === 0) answerMinTtl = Math.min(answerMinTtl, ttl);
        if (section === 1 && type === TYPE_SOA && soa === undefined) {
          const mname = readName(buf, rdStart);
          const rname = mname === undefined || mname.end > rdEnd ? undefined : readName(buf, mname.end);
          if (rname === undefined || rname.end + 20 > rdEnd) return undefined;
          soa = { ttl, minimum: ttlValue(buf.readUInt32BE(rname.end + 16)) };
        }
      }
      off = rdEnd;
    }
  }
  return { answerCount: counts[0] as number, answerMinTtl, soa, ttlOffsets, ttls, edns, extendedRcode };
}

/** Query is a validated client query. */
interface Query {
  readonly question: Question;
  readonly edns: 0 | 1 | 2;
  /** cacheKey is (qname lower-cased, qtype, qclass, EDNS/DO of the query). */
  readonly cacheKey: string;
}

function readQuery(buf: Buffer): Query | undefined {
  if (buf.length < DNS_HEADER_LEN || buf.length > DNS_MESSAGE_MAX_LEN) return undefined;
  if ((buf.readUInt16BE(2) & (FLAG_QR | OPCODE_MASK)) !== 0) return undefined;
  const question = readQuestion(buf);
  if (question === undefined) return undefined;
  const records = readRecords(buf, question.end);
  if (records === undefined) return undefined;
  const cacheKey = `${question.key}\0${question.type}\0${question.klass}\0${records.edns}`;
  return { question, edns: records.edns, cacheKey };
}

/** Reply is an upstream message that matched our query and parsed cleanly. */
interface Reply {
  /** message is owned by the Upstream: the caller of resolve() gets it (or a copy) with its own id. */
  readonly message: Buffer;
  readonly rcode: number;
  readonly truncated: boolean;
  /**
   * intact is false for a TC reply cut mid-record (some servers truncate bytes, not records):
   * good enough to trigger the TCP retry, not to hand to a client.
   */
  readonly intact: boolean;
  readonly question: Question;
  readonly records: Records;
}

type Verdict = { kind: 'mismatch' } | { kind: 'malformed' } | { kind: 'ok'; reply: Reply };

const MISMATCH: Verdict = { kind: 'mismatch' };

/** NO_RECORDS stands in for the records of a truncated reply that did not parse. */
const NO_RECORDS: Records = {
  answerCount: 0,
  answerMinTtl: 0,
  soa: undefined,
  ttlOffsets: [],
  ttls: [],
  edns: 0,
  extendedRcode: 0,
};

/**
 * checkReply decides what a message from the server's address is: ours (id, QR, opcode and
 * question all match; case-insensitive name), not ours (ignored: it may be spoofed or late), or
 * ours but malformed beyond the question (the server's failure) unless TC is set: a truncated
 * reply only has to say "retry over TCP".
 */
function checkReply(msg: Buffer, id: number, query: Buffer, q: Query): Verdict {
  if (msg.length < DNS_HEADER_LEN || msg.readUInt16BE(0) !== id) return MISMATCH;
  const flags = msg.readUInt16BE(2);
  if ((flags & FLAG_QR) === 0 || (flags & OPCODE_MASK) !== (query.readUInt16BE(2) & OPCODE_MASK)) return MISMATCH;
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

// ---- Cache ----

/** CacheEntry is one stored reply. */
interface CacheEntry {
  /** message is a private copy of the upstream's bytes (id bytes meaningless). */
  readonly message: Buffer;
  readonly questionEnd: number;
  readonly ttlOffsets: readonly number[];
  /** ttls are the records' TTLs already capped at lifetimeS. */
  readonly ttls: readonly number[];
  readonly storedAtMs: number;
  readonly expiresAtMs: number;
  /** bytes is what the entry is charged against the cache's byte bound (cacheEntryBytes). */
  readonly bytes: number;
}

/**
 * cacheEntryBytes estimates the memory of one cache entry: the answer's bytes, the key's (a
 * one-byte string), the per-record TTL bookkeeping and the fixed cost of the entry's objects.
 */
function cacheEntryBytes(key: string, messageLen: number, records: number): number {
  return messageLen + key.length + records * CACHE_RECORD_BYTES + CACHE_ENTRY_OVERHEAD_BYTES;
}

/**
 * cacheLifetimeS says how long a reply may be served from cache, 0 meaning never: positive
 * answers for their smallest answer TTL; NXDOMAIN and NODATA for min(SOA TTL, SOA MINIMUM)
 * (RFC 2308 §5), and not at all without an SOA; SERVFAIL, REFUSED, every other rcode and
 * truncated replies never.
 */
function cacheLifetimeS(reply: Reply, maxTtlS: number): number {
  if (reply.truncated) return 0;
  const r = reply.records;
  let ttl = 0;
  if (reply.rcode === RCODE_NOERROR && r.answerCount > 0) ttl = r.answerMinTtl;
  else if (reply.rcode === RCODE_NXDOMAIN || reply.rcode === RCODE_NOERROR) {
    ttl = r.soa === undefined ? 0 : Math.min(r.soa.ttl, r.soa.minimum);
  }
  return Math.min(ttl, maxTtlS);
}

// ---- Sockets ----

/** UpstreamSocket is the part of a dgram.Socket that Upstream uses; node:dgram sockets satisfy it. */
export interface UpstreamSocket {
  on(event: 'message', listener: (msg: Buffer, rinfo: { address: string; port: number }) => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  send(msg: Uint8Array, port: number, address: string, callback: (err: Error | null) => void): void;
  close(): unknown;
}

/** UdpSocketFactory makes one unbound UDP socket; Upstream makes one per attempt and closes it. */
export type UdpSocketFactory = (family: 'udp4' | 'udp6') => UpstreamSocket;

const defaultSocketFactory: UdpSocketFactory = (family) => dgram.createSocket(family);

// ---- Upstream ----

/** UpstreamOptions configure an Upstream. */
export interface UpstreamOptions {
  /**
   * servers are `ipv4[:port]`, `[ipv6]:port` or bare IPv6 addresses (port 53 by default), tried in
   * this order, the last one that answered first. Empty: every cache miss rejects with `no-servers`.
   */
  readonly servers: readonly string[];
  /** timeoutMs is the wait for one server's UDP reply, and separately for its TCP retry; default 2000. */
  readonly timeoutMs?: number;
  /** attempts is how many passes over the server list a query gets; default 2. */
  readonly attempts?: number;
  /** cacheMaxEntries bounds the cache (least recently used evicted first); 0 disables it; default 10000. */
  readonly cacheMaxEntries?: number;
  /** cacheMaxBytes bounds the cache's memory, in bytes as cacheEntryBytes charges them; default UPSTREAM_CACHE_MAX_BYTES. */
  readonly cacheMaxBytes?: number;
  /** cacheMaxTtlSeconds caps how long anything is served from cache; default 3600. */
  readonly cacheMaxTtlSeconds?: number;
  /** maxInFlight bounds queries waiting on upstreams at once; beyond it resolve() rejects `busy`; default 1024. */
  readonly maxInFlight?: number;
  /**
   * maxInFlightPerClient bounds the queries of one client (resolve()'s `client`) waiting on
   * upstreams at once; beyond it resolve() rejects `client-busy`; default 64.
   */
  readonly maxInFlightPerClient?: number;
  /** now returns wall-clock milliseconds; it ages cache entries only (timeouts use real timers). Default Date.now. */
  readonly now?: () => number;
  /** createSocket makes the per-attempt UDP socket; default node:dgram. */
  readonly createSocket?: UdpSocketFactory;
  readonly log?: Logger;
}

/** UpstreamServerStats counts one server's attempts. */
export interface UpstreamServerStats {
  readonly server: string;
  /** sent counts UDP attempts (TCP retries are counted in tcpRetries). */
  readonly sent: number;
  /** answered counts usable answers (any rcode but SERVFAIL and REFUSED). */
  readonly answered: number;
  /** servfails counts SERVFAIL and REFUSED answers; the next server is tried. */
  readonly servfails: number;
  readonly timeouts: number;
  /** failures counts malformed replies, socket errors and failed TCP retries. */
  readonly failures: number;
  readonly tcpRetries: number;
}

/** UpstreamStats is a JSON-safe snapshot of an Upstream's counters. */
export interface UpstreamStats {
  /** queries counts well-formed queries resolve() received. */
  readonly queries: number;
  readonly cacheHits: number;
  /** cacheMisses counts queries not answered from cache (all of them when the cache is off). */
  readonly cacheMisses: number;
  readonly cacheEntries: number;
  /** cacheBytes is what the cached entries are charged now (at most cacheMaxBytes). */
  readonly cacheBytes: number;
  readonly cacheMaxBytes: number;
  /** cacheEvictions counts entries dropped to stay within the entry or the byte bound. */
  readonly cacheEvictions: number;
  /** cacheTooLarge counts answers not cached because they exceed UPSTREAM_CACHE_ENTRY_MAX_BYTES. */
  readonly cacheTooLarge: number;
  /** forwarded counts queries sent to at least one server. */
  readonly forwarded: number;
  /** failed counts queries rejected with `exhausted`, `no-servers` or `busy` (clients get SERVFAIL). */
  readonly failed: number;
  /** busy counts queries rejected because maxInFlight were in flight (also counted in failed). */
  readonly busy: number;
  /** clientBusy counts queries rejected because their client had maxInFlightPerClient in flight (clients get REFUSED; not in failed). */
  readonly clientBusy: number;
  /** timeouts sums the servers' timeouts. */
  readonly timeouts: number;
  /** mismatched counts datagrams ignored: wrong source, id or question, or not a response. */
  readonly mismatched: number;
  readonly inFlight: number;
  /** inFlightClients is how many client addresses have queries in flight now. */
  readonly inFlightClients: number;
  /** inFlightClientMax is the most queries one client has in flight now (at most maxInFlightPerClient). */
  readonly inFlightClientMax: number;
  readonly servers: readonly UpstreamServerStats[];
  /** latency covers answered attempts, from the UDP send to the answer (TCP retry included): a Prometheus summary's count and sum, plus the last 256 in order. */
  readonly latency: { readonly count: number; readonly sumMs: number; readonly recentMs: readonly number[] };
}

interface ServerState extends UpstreamServer {
  sent: number;
  answered: number;
  servfails: number;
  timeouts: number;
  failures: number;
  tcpRetries: number;
}

type Attempt =
  | { kind: 'answer'; reply: Reply }
  | { kind: 'timeout' }
  | { kind: 'failed'; error: Error }
  | { kind: 'stopped' };

function positiveInt(name: string, v: number | undefined, dflt: number, min: number): number {
  const n = v ?? dflt;
  if (!Number.isInteger(n) || n < min)
    throw new ConfigError(`invalid upstream ${name} ${n}: want an integer >= ${min}`);
  return n;
}

/**
 * Upstream forwards queries outside the cluster domain to recursive resolvers, with failover,
 * TCP retry of truncated answers, spoofing checks and a TTL-honouring LRU cache bounded in entries
 * and bytes, and a per-client share of the queries in flight. It opens sockets
 * only per attempt, so start() is a no-op; stop() rejects every waiting query with `stopped`,
 * closes their sockets, and makes resolve() reject until start() is called again.
 */
export class Upstream implements Startable {
  private readonly servers: ServerState[];
  private readonly timeoutMs: number;
  private readonly attempts: number;
  private readonly cacheMaxEntries: number;
  private readonly cacheMaxBytes: number;
  private readonly cacheMaxTtlS: number;
  private readonly maxInFlight: number;
  private readonly maxInFlightPerClient: number;
  private readonly now: () => number;
  private readonly createSocket: UdpSocketFactory;
  private readonly log: Logger;
  /** cache is in LRU order: Map iteration order is insertion order, and a hit re-inserts. */
  private readonly cache = new Map<string, CacheEntry>();
  /** cacheBytes is the sum of the cached entries' `bytes`. */
  private cacheBytes = 0;
  /** cancels aborts every attempt in progress (for stop()). */
  private readonly cancels = new Set<() => void>();
  private preferred = 0;
  private stopped = false;
  private inFlight = 0;
  /** inFlightByClient counts each client's queries in flight; a client leaves the map at zero. */
  private readonly inFlightByClient = new Map<string | number, number>();
  private readonly counters = {
    queries: 0,
    cacheHits: 0,
    cacheMisses: 0,
    cacheEvictions: 0,
    cacheTooLarge: 0,
    forwarded: 0,
    failed: 0,
    busy: 0,
    clientBusy: 0,
    mismatched: 0,
  };
  private readonly latencyRing = new Float64Array(LATENCY_RING_LEN);
  private latencyCount = 0;
  private latencySumMs = 0;

  /** Throws ConfigError on a bad server address or option. */
  constructor(options: UpstreamOptions) {
    this.servers = options.servers.map((s) => ({
      ...parseUpstreamServer(s),
      sent: 0,
      answered: 0,
      servfails: 0,
      timeouts: 0,
      failures: 0,
      tcpRetries: 0,
    }));
    this.timeoutMs = positiveInt('timeoutMs', options.timeoutMs, UPSTREAM_TIMEOUT_MS, 1);
    this.attempts = positiveInt('attempts', options.attempts, UPSTREAM_ATTEMPTS, 1);
    this.cacheMaxEntries = positiveInt('cacheMaxEntries', options.cacheMaxEntries, UPSTREAM_CACHE_MAX_ENTRIES, 0);
    this.cacheMaxBytes = positiveInt('cacheMaxBytes', options.cacheMaxBytes, UPSTREAM_CACHE_MAX_BYTES, 0);
    this.cacheMaxTtlS = positiveInt('cacheMaxTtlSeconds', options.cacheMaxTtlSeconds, UPSTREAM_CACHE_MAX_TTL_S, 0);
    this.maxInFlight = positiveInt('maxInFlight', options.maxInFlight, UPSTREAM_MAX_IN_FLIGHT, 1);
    this.maxInFlightPerClient = positiveInt(
      'maxInFlightPerClient',
      options.maxInFlightPerClient,
      UPSTREAM_MAX_IN_FLIGHT_PER_CLIENT,
      1,
    );
    this.now = options.now ?? Date.now;
    this.createSocket = options.createSocket ?? defaultSocketFactory;
    this.log = options.log ?? noopLogger;
  }

  /** start re-enables resolve() after stop(); nothing is opened until a query needs it. */
  async start(): Promise<void> {
    this.stopped = false;
  }

  /** stop rejects waiting queries with `stopped` and closes their sockets; idempotent. The cache is kept. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const cancel of [...this.cancels]) cancel();
  }

  /**
   * resolve answers one client query: from cache, else from the first upstream that answers.
   * `query` is borrowed for the call and never modified. The returned message is the caller's to
   * modify; it carries the client's id and may exceed the client's UDP size (the caller truncates
   * and sets TC). A SERVFAIL or REFUSED answer is returned as is when no server did better.
   * Rejects with UpstreamError; waits at most attempts × servers × timeoutMs, plus timeoutMs per
   * TCP retry.
   *
   * `client` identifies who asked (the DNS server passes the client's IPv4 address): a client
   * with maxInFlightPerClient queries already waiting on upstreams is refused (`client-busy`)
   * before the shared maxInFlight is touched, so one client cannot starve the others. Cache hits
   * are never refused. Without `client` only the shared bound applies.
   */
  async resolve(query: Buffer, client?: string | number): Promise<Buffer> {
    if (this.stopped) throw new UpstreamError('stopped', 'upstream resolver is stopped');
    const q = readQuery(query);
    if (q === undefined) {
      throw new UpstreamError('bad-query', `not a well-formed one-question dns query (${query.length} bytes)`);
    }
    this.counters.queries++;
    const hit = this.cacheGet(q.cacheKey);
    if (hit !== undefined) {
      this.counters.cacheHits++;
      return this.serveCached(hit, query, q);
    }
    this.counters.cacheMisses++;
    if (this.servers.length === 0) {
      this.counters.failed++;
      throw new UpstreamError('no-servers', `no upstream servers to ask for ${nameText(q.question.key)}`);
    }
    const held = client === undefined ? 0 : (this.inFlightByClient.get(client) ?? 0);
    if (held >= this.maxInFlightPerClient) {
      this.counters.clientBusy++;
      throw new UpstreamError('client-busy', `client ${client} already has ${held} upstream queries in flight`);
    }
    if (this.inFlight >= this.maxInFlight) {
      this.counters.failed++;
      this.counters.busy++;
      throw new UpstreamError('busy', `${this.inFlight} upstream queries already in flight`);
    }
    this.inFlight++;
    if (client !== undefined) this.inFlightByClient.set(client, held + 1);
    this.counters.forwarded++;
    let reply: Reply;
    try {
      reply = await this.forward(query, q);
    } catch (err) {
      if (err instanceof UpstreamError && err.reason !== 'stopped') this.counters.failed++;
      throw err;
    } finally {
      this.inFlight--;
      if (client !== undefined) {
        const n = (this.inFlightByClient.get(client) ?? 1) - 1;
        if (n <= 0) this.inFlightByClient.delete(client);
        else this.inFlightByClient.set(client, n);
      }
    }
    this.cachePut(q.cacheKey, reply);
    const out = reply.message;
    query.copy(out, 0, 0, 2);
    return out;
  }

  /** stats returns a snapshot of the counters. */
  stats(): UpstreamStats {
    const n = Math.min(this.latencyCount, LATENCY_RING_LEN);
    const recentMs: number[] = [];
    for (let i = this.latencyCount - n; i < this.latencyCount; i++) {
      recentMs.push(this.latencyRing[i % LATENCY_RING_LEN] as number);
    }
    let timeouts = 0;
    for (const s of this.servers) timeouts += s.timeouts;
    let inFlightClientMax = 0;
    for (const n of this.inFlightByClient.values()) inFlightClientMax = Math.max(inFlightClientMax, n);
    return {
      ...this.counters,
      cacheEntries: this.cache.size,
      cacheBytes: this.cacheBytes,
      cacheMaxBytes: this.cacheMaxBytes,
      timeouts,
      inFlight: this.inFlight,
      inFlightClients: this.inFlightByClient.size,
      inFlightClientMax,
      servers: this.servers.map((s) => ({
        server: s.name,
        sent: s.sent,
        answered: s.answered,
        servfails: s.servfails,
        timeouts: s.timeouts,
        failures: s.failures,
        tcpRetries: s.tcpRetries,
      })),
      latency: { count: this.latencyCount, sumMs: this.latencySumMs, recentMs },
    };
  }

  /** clearCache drops every cached answer (for example after the upstream list changed). */
  clearCache(): void {
    this.cache.clear();
    this.cacheBytes = 0;
  }

  private cacheGet(key: string): CacheEntry | undefined {
    const entry = this.cache.get(key);
    if (entry === undefined) return undefined;
    this.cacheDelete(key, entry);
    if (this.now() >= entry.expiresAtMs) return undefined;
    this.cache.set(key, entry);
    this.cacheBytes += entry.bytes;
    return entry;
  }

  private cacheDelete(key: string, entry: CacheEntry): void {
    this.cache.delete(key);
    this.cacheBytes -= entry.bytes;
  }

  /**
   * cachePut stores a copy of a cacheable reply, then evicts least recently used entries until
   * both the entry and the byte bound hold. An answer longer than UPSTREAM_CACHE_ENTRY_MAX_BYTES
   * (or charged more than the whole byte budget) is not stored.
   */
  private cachePut(key: string, reply: Reply): void {
    if (this.cacheMaxEntries === 0 || this.cacheMaxBytes === 0) return;
    const lifetimeS = cacheLifetimeS(reply, this.cacheMaxTtlS);
    if (lifetimeS <= 0) return;
    const bytes = cacheEntryBytes(key, reply.message.length, reply.records.ttlOffsets.length);
    if (reply.message.length > UPSTREAM_CACHE_ENTRY_MAX_BYTES || bytes > this.cacheMaxBytes) {
      this.counters.cacheTooLarge++;
      return;
    }
    const old = this.cache.get(key);
    if (old !== undefined) this.cacheDelete(key, old);
    const storedAtMs = this.now();
    this.cache.set(key, {
      message: Buffer.from(reply.message),
      questionEnd: reply.question.end,
      ttlOffsets: reply.records.ttlOffsets,
      ttls: reply.records.ttls.map((t) => Math.min(t, lifetimeS)),
      storedAtMs,
      expiresAtMs: storedAtMs + lifetimeS * 1000,
      bytes,
    });
    this.cacheBytes += bytes;
    for (const [oldest, entry] of this.cache) {
      if (this.cache.size <= this.cacheMaxEntries && this.cacheBytes <= this.cacheMaxBytes) break;
      this.cacheDelete(oldest, entry);
      this.counters.cacheEvictions++;
    }
  }

  /**
   * serveCached copies a stored reply with the client's id, RD bit and question bytes (its
   * spelling of the name: 0x20 case randomisation survives), and every TTL reduced by the whole
   * seconds since it was stored.
   */
  private serveCached(entry: CacheEntry, query: Buffer, q: Query): Buffer {
    const out = Buffer.from(entry.message);
    query.copy(out, 0, 0, 2);
    out[2] = ((out[2] as number) & ~(FLAG_RD >> 8)) | ((query[2] as number) & (FLAG_RD >> 8));
    if (q.question.end === entry.questionEnd) query.copy(out, DNS_HEADER_LEN, DNS_HEADER_LEN, q.question.end);
    const elapsedS = Math.max(0, Math.floor((this.now() - entry.storedAtMs) / 1000));
    for (let i = 0; i < entry.ttlOffsets.length; i++) {
      out.writeUInt32BE(Math.max(0, (entry.ttls[i] as number) - elapsedS), entry.ttlOffsets[i] as number);
    }
    return out;
  }

  /** order lists the servers with the last one that answered first, the rest as configured. */
  private order(): ServerState[] {
    const first = this.servers[this.preferred];
    if (first === undefined) return this.servers;
    return [first, ...this.servers.filter((s) => s !== first)];
  }

  private async forward(query: Buffer, q: Query): Promise<Reply> {
    const tried: string[] = [];
    let fallback: Reply | undefined;
    let lastError: Error | undefined;
    for (let pass = 0; pass < this.attempts && fallback === undefined; pass++) {
      for (const server of this.order()) {
        if (this.stopped) break;
        const t0 = performance.now();
        server.sent++;
        let a = await this.udpExchange(server, query, q);
        if (a.kind === 'answer' && a.reply.truncated) {
          server.tcpRetries++;
          const t = await this.tcpExchange(server, query, q);
          if (t.kind === 'answer' || t.kind === 'stopped') a = t;
          else if (!a.reply.intact) {
            // Nothing usable from this server: count one failure and move on.
            a = t.kind === 'failed' ? t : { kind: 'failed', error: new Error(`tcp retry to ${server.name} timed out`) };
          } else {
            // Keep the truncated UDP answer: the client sees TC and may retry over TCP itself.
            server.failures++;
            this.debug('upstream tcp retry failed', server, t.kind === 'failed' ? t.error.message : 'timeout');
          }
        }
        if (a.kind === 'stopped') break;
        if (a.kind === 'timeout') {
          server.timeouts++;
          tried.push(`${server.name} timed out`);
          this.debug('upstream timeout', server, 'timeout');
        } else if (a.kind === 'failed') {
          server.failures++;
          lastError = a.error;
          tried.push(`${server.name} failed: ${a.error.message}`);
          this.debug('upstream failure', server, a.error.message);
        } else if (a.reply.rcode === RCODE_SERVFAIL || a.reply.rcode === RCODE_REFUSED) {
          server.servfails++;
          fallback = a.reply;
          tried.push(`${server.name} answered rcode ${a.reply.rcode}`);
        } else {
          server.answered++;
          this.preferred = this.servers.indexOf(server);
          this.observeLatency(performance.now() - t0);
          return a.reply;
        }
      }
      if (this.stopped) throw new UpstreamError('stopped', 'upstream resolver stopped while waiting for an answer');
    }
    if (fallback !== undefined) return fallback;
    throw new UpstreamError(
      'exhausted',
      `no upstream answered ${nameText(q.question.key)} type ${q.question.type}: ${tried.join('; ')}`,
      { cause: lastError },
    );
  }

  private observeLatency(ms: number): void {
    this.latencyRing[this.latencyCount % LATENCY_RING_LEN] = ms;
    this.latencyCount++;
    this.latencySumMs += ms;
  }

  private debug(msg: string, server: ServerState, reason: string): void {
    if (this.log.isDebug) this.log.debug(msg, { addr: server.name, reason });
  }

  private malformed(server: ServerState, transport: string): Attempt {
    return { kind: 'failed', error: new Error(`malformed ${transport} reply from ${server.name}`) };
  }

  /** udpExchange sends one query from a fresh socket and waits for the matching reply. */
  private udpExchange(server: ServerState, query: Buffer, q: Query): Promise<Attempt> {
    return new Promise<Attempt>((resolve) => {
      const id = randomInt(0x10000);
      const out = Buffer.from(query);
      out.writeUInt16BE(id, 0);
      let socket: UpstreamSocket;
      try {
        socket = this.createSocket(server.family);
      } catch (err) {
        resolve({ kind: 'failed', error: err instanceof Error ? err : new Error(String(err)) });
        return;
      }
      let done = false;
      const finish = (a: Attempt): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.cancels.delete(cancel);
        try {
          socket.close();
        } catch {
          // already closed
        }
        resolve(a);
      };
      const cancel = (): void => finish({ kind: 'stopped' });
      const timer = setTimeout(() => finish({ kind: 'timeout' }), this.timeoutMs);
      this.cancels.add(cancel);
      socket.on('error', (err) => finish({ kind: 'failed', error: err }));
      socket.on('message', (msg, rinfo) => {
        if (done) return;
        if (rinfo.port !== server.port || !sameAddress(rinfo.address, server)) {
          this.counters.mismatched++;
          return;
        }
        const v = checkReply(msg, id, query, q);
        if (v.kind === 'mismatch') this.counters.mismatched++;
        else if (v.kind === 'malformed') finish(this.malformed(server, 'udp'));
        else finish({ kind: 'answer', reply: v.reply });
      });
      try {
        socket.send(out, server.port, server.address, (err) => {
          if (err) finish({ kind: 'failed', error: err });
        });
      } catch (err) {
        finish({ kind: 'failed', error: err instanceof Error ? err : new Error(String(err)) });
      }
    });
  }

  /** tcpExchange sends the query over a fresh TCP connection and reads one length-prefixed reply. */
  private tcpExchange(server: ServerState, query: Buffer, q: Query): Promise<Attempt> {
    return new Promise<Attempt>((resolve) => {
      const id = randomInt(0x10000);
      const out = Buffer.alloc(2 + query.length);
      out.writeUInt16BE(query.length, 0);
      query.copy(out, 2);
      out.writeUInt16BE(id, 2);
      const chunks: Buffer[] = [];
      let received = 0;
      let done = false;
      const socket = net.connect({ host: server.address, port: server.port });
      const finish = (a: Attempt): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.cancels.delete(cancel);
        socket.destroy();
        resolve(a);
      };
      const cancel = (): void => finish({ kind: 'stopped' });
      const timer = setTimeout(() => finish({ kind: 'timeout' }), this.timeoutMs);
      this.cancels.add(cancel);
      socket.on('error', (err) => finish({ kind: 'failed', error: err }));
      socket.on('close', () =>
        finish({ kind: 'failed', error: new Error(`${server.name} closed tcp before a reply`) }),
      );
      socket.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        received += chunk.length;
        if (received < 2) return;
        const all = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, received);
        chunks.length = 0;
        chunks.push(all);
        const len = all.readUInt16BE(0);
        if (received < 2 + len) return;
        const msg = Buffer.from(all.subarray(2, 2 + len));
        const v = checkReply(msg, id, query, q);
        // Over TCP nobody can inject a reply: anything but ours is the server's failure.
        finish(v.kind === 'ok' && v.reply.intact ? { kind: 'answer', reply: v.reply } : this.malformed(server, 'tcp'));
      });
      socket.write(out);
    });
  }
}

function sameAddress(address: string, server: UpstreamServer): boolean {
  if (address === server.address) return true;
  return server.family === 'udp6' && canonicalIPv6(address) === server.address;
}
