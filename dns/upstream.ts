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
 * Messages are read with message.ts (one question and a walk over every record, for the TTL
 * offsets the cache rewrites in place) and every constant comes from wire.ts; this file reads
 * and writes no DNS bytes itself. The host's resolv.conf is read by resolv-conf.ts.
 *
 * Over 400 lines because it is one forwarding path: the in-flight bounds, the server order, the UDP
 * and TCP exchanges and the cache are the steps of one query's way through the diagram above, and
 * what the cache stores and ages is exactly what the exchanges accept as a reply. Every DNS byte is
 * already left to message.ts and wire.ts.
 */

import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { ConfigError, type Logger, noopLogger, type Startable, WeftError } from '../common/index.js';
import {
  checkReply,
  copyStoredReply,
  type ForwardedQuery,
  type Reply,
  readForwardedQuery,
  type StoredReply,
} from './message.js';
import { nameKeyText } from './names.js';
import { parseUpstreamServer, sameAddress, type UpstreamServer } from './upstream-server.js';
import { copyId, frameTcp, Rcode, readTcpLength, TCP_LENGTH_PREFIX_LEN, writeId } from './wire.js';

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

// ---- Cache ----

/** CacheEntry is one stored reply. */
interface CacheEntry extends StoredReply {
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
  if (reply.rcode === Rcode.NoError && r.answerCount > 0) ttl = r.answerMinTtl;
  else if (reply.rcode === Rcode.NxDomain || reply.rcode === Rcode.NoError) {
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
    const q = readForwardedQuery(query);
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
      throw new UpstreamError('no-servers', `no upstream servers to ask for ${nameKeyText(q.question.key)}`);
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
    copyId(query, out);
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
  private serveCached(entry: CacheEntry, query: Buffer, q: ForwardedQuery): Buffer {
    const elapsedS = Math.max(0, Math.floor((this.now() - entry.storedAtMs) / 1000));
    return copyStoredReply(entry, query, q.question.end, elapsedS);
  }

  /** order lists the servers with the last one that answered first, the rest as configured. */
  private order(): ServerState[] {
    const first = this.servers[this.preferred];
    if (first === undefined) return this.servers;
    return [first, ...this.servers.filter((s) => s !== first)];
  }

  private async forward(query: Buffer, q: ForwardedQuery): Promise<Reply> {
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
        } else if (a.reply.rcode === Rcode.ServFail || a.reply.rcode === Rcode.Refused) {
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
      `no upstream answered ${nameKeyText(q.question.key)} type ${q.question.type}: ${tried.join('; ')}`,
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
  private udpExchange(server: ServerState, query: Buffer, q: ForwardedQuery): Promise<Attempt> {
    return new Promise<Attempt>((resolve) => {
      const id = randomInt(0x10000);
      const out = Buffer.from(query);
      writeId(out, id);
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
  private tcpExchange(server: ServerState, query: Buffer, q: ForwardedQuery): Promise<Attempt> {
    return new Promise<Attempt>((resolve) => {
      const id = randomInt(0x10000);
      const out = frameTcp(query);
      writeId(out, id, TCP_LENGTH_PREFIX_LEN);
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
        if (received < TCP_LENGTH_PREFIX_LEN) return;
        const all = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, received);
        chunks.length = 0;
        chunks.push(all);
        const len = readTcpLength(all);
        if (received < TCP_LENGTH_PREFIX_LEN + len) return;
        const msg = Buffer.from(all.subarray(TCP_LENGTH_PREFIX_LEN, TCP_LENGTH_PREFIX_LEN + len));
        const v = checkReply(msg, id, query, q);
        // Over TCP nobody can inject a reply: anything but ours is the server's failure.
        finish(v.kind === 'ok' && v.reply.intact ? { kind: 'answer', reply: v.reply } : this.malformed(server, 'tcp'));
      });
      socket.write(out);
    });
  }
}
