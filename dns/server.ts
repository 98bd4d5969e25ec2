/**
 * DnsServer is Weft's embedded DNS server: authoritative for the domain (default weft.local)
 * from the gossiped {@link DnsRecords}, PTR for overlay addresses, and a forwarder to upstream
 * resolvers for every other name. UDP and TCP on one address (the host's overlay address).
 *
 * The common query is answered on a fast path: parseQuery by hand into one reused Query, the
 * answer found by NameMap straight from the parsed bytes and copied from records encoded once
 * per change of the record set (query.ts, name-map.ts, response.ts). Everything unusual
 * (errors, upstream) is slower and fine. This file reads and writes no DNS bytes itself.
 *
 * Not an open resolver: queries from addresses outside the overlay range and not the host's own
 * are refused. Malformed queries are dropped or answered FORMERR/NOTIMP/REFUSED and counted; the
 * server never throws on input and never answers a response (no loops between servers).
 *
 * Over 400 lines because it is one server: the UDP path (node:dgram or the native batched socket),
 * the TCP sessions and their bounds, the access check, the answer and the counters status shows all
 * meet in {@link DnsServer}. The DNS bytes are already in query.ts, name-map.ts and response.ts;
 * what is left here is wiring them to sockets, which is not worth cutting in two.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { createServer, type Server, type Socket as TcpSocket } from 'node:net';
import { WeftError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { noopLogger } from '../common/log.js';
import { parseIPv4 } from '../common/types.js';
import { DNS_TTL_S } from './defaults.js';
import { NameMap } from './name-map.js';
import { normalizeName, ptrNameToIPv4 } from './names.js';
import { isQueryInDomain, ParseResult, parseQuery, Query, udpResponseLimit } from './query.js';
import type { DnsRecords } from './records.js';
import {
  encodeARecords,
  encodePtrRecords,
  encodeSoaRecord,
  type RecordSet,
  truncateReply,
  writeAnswer,
  writeError,
  writeNegative,
} from './response.js';
import { NativeUdp, type PacketConn } from './socket.js';
import { type Upstream, UpstreamError } from './upstream.js';
import {
  DNS_HEADER_LEN,
  DNS_TCP_MAX_BYTES,
  FLAG_AA,
  FLAG_RA,
  FLAG_TC,
  frameTcp,
  QType,
  Rcode,
  readFlags,
  readTcpLength,
  TCP_LENGTH_PREFIX_LEN,
  writeTcpLength,
} from './wire.js';
/** DNS_TCP_CONNECTIONS_MAX bounds concurrent TCP clients. */
export const DNS_TCP_CONNECTIONS_MAX = 256;
/**
 * DNS_TCP_CONNECTIONS_PER_CLIENT_MAX is one client address's share of DNS_TCP_CONNECTIONS_MAX: a
 * resolver needs a few connections at once (TCP is the fallback for truncated answers), and
 * 1/8 of the total leaves 224 for everyone else when one client holds its connections open.
 */
export const DNS_TCP_CONNECTIONS_PER_CLIENT_MAX = 32;
/** DNS_TCP_IDLE_MS closes a TCP connection idle this long. */
export const DNS_TCP_IDLE_MS = 10_000;
/**
 * DNS_TCP_WRITE_BUFFER_MAX_BYTES bounds the answers of one connection waiting in our memory for
 * a client that does not read them: past it we answer nothing more and stop reading that
 * connection until it drains (TCP flow control then stalls the client). 64 KiB is one largest
 * answer, so a client that reads never notices; one that does not costs at most this plus the
 * answer that crossed it. It is above a socket's writableHighWaterMark (16 KiB), so crossing it
 * means write() returned false and 'drain' will follow.
 */
export const DNS_TCP_WRITE_BUFFER_MAX_BYTES = 64 << 10;
/**
 * DNS_TCP_READ_BUFFER_MAX_BYTES bounds the pipelined query bytes of one connection read but not
 * yet answered (queries are answered one at a time, in order): at this we stop reading it. One
 * largest frame (2-byte length + 65535), so that any query can arrive whole; more queued means a
 * client pipelining faster than we answer it (about 2,000 small queries fit).
 */
export const DNS_TCP_READ_BUFFER_MAX_BYTES = TCP_LENGTH_PREFIX_LEN + DNS_TCP_MAX_BYTES;
/** BATCH is how many datagrams one receive/send call of the batched UDP path moves. */
const BATCH = 64;
/** SLOT is the room per datagram in the batch buffers: a whole query (DNS_QUERY_MAX_BYTES), and any UDP answer. */
const SLOT = 4096;
/** BATCH_ROUNDS bounds the batches served per readiness callback, so TCP and timers get their turn. */
const BATCH_ROUNDS = 16;

/** DnsServerOptions configures a DnsServer. */
export interface DnsServerOptions {
  /** domain is the zone we answer for, e.g. weft.local (no trailing dot). */
  domain: string;
  ttl?: number;
  records: DnsRecords;
  /** upstream forwards other names; without it they are refused. */
  upstream?: Upstream;
  /** allowed says whether a client address (IPv4, host order) may query: the overlay or the host itself. */
  allowed: (addr: number) => boolean;
  /** inRange says whether an IPv4 address is an overlay address (PTR authority). */
  inRange: (addr: number) => boolean;
  /**
   * udp picks the UDP socket layer: 'native' receives and sends in batches (recvmmsg/sendmmsg in
   * the addon, no per-datagram Node socket cost), 'dgram' is Node's. Default 'native' when the
   * addon loads.
   */
  udp?: 'native' | 'dgram';
  log?: Logger;
}

/** DnsResult names what became of a query, for counters. */
export type DnsResult =
  | 'answer'
  | 'nxdomain'
  | 'nodata'
  | 'forwarded'
  | 'servfail'
  | 'refused'
  | 'formerr'
  | 'notimp'
  | 'badvers'
  | 'dropped'
  | 'truncated'
  | 'throttled';

const RESULTS: readonly DnsResult[] = [
  'answer',
  'nxdomain',
  'nodata',
  'forwarded',
  'servfail',
  'refused',
  'formerr',
  'notimp',
  'badvers',
  'dropped',
  'truncated',
  'throttled',
];

/**
 * DnsServerStats are the server's counters (they only grow) and, marked "now", gauges.
 * `results.throttled` counts forwarded queries answered REFUSED because their client already had
 * its share of upstream queries in flight (UPSTREAM_MAX_IN_FLIGHT_PER_CLIENT).
 */
export interface DnsServerStats {
  listening: string | undefined;
  queries: Record<string, number>;
  results: Record<DnsResult, number>;
  /** tcpConnections counts TCP connections accepted. */
  tcpConnections: number;
  /** tcpRefused counts TCP connections dropped because DNS_TCP_CONNECTIONS_MAX were open. */
  tcpRefused: number;
  /** tcpClientRefused counts TCP connections closed because their client had DNS_TCP_CONNECTIONS_PER_CLIENT_MAX open. */
  tcpClientRefused: number;
  /** tcpOpen is how many TCP connections are open now. */
  tcpOpen: number;
  /** tcpPauses counts the times a connection stopped being read for backpressure (unread answers or queued queries). */
  tcpPauses: number;
  /** tcpPaused is how many connections are not being read now, for backpressure. */
  tcpPaused: number;
  /** tcpWriteBufferedBytes is the answer bytes now waiting for clients to read them, over all connections. */
  tcpWriteBufferedBytes: number;
  /** tcpReadBufferedBytes is the query bytes now read but not yet answered, over all connections. */
  tcpReadBufferedBytes: number;
}

/** TcpSession is one TCP client connection's state. */
interface TcpSession {
  readonly sock: TcpSocket;
  /** client is the peer's IPv4 address (host order; 0 for anything else). */
  readonly client: number;
  /** pending holds the bytes read and not yet answered: whole frames, then maybe part of one. */
  pending: Buffer;
  /** busy is true while the first pending query waits for its forwarded answer. */
  busy: boolean;
  /** paused is true while reading is stopped for backpressure. */
  paused: boolean;
}

const EMPTY = Buffer.alloc(0);

/** DnsServer answers DNS over UDP and TCP (see the module comment). */
export class DnsServer {
  private readonly domain: string;
  private readonly ttl: number;
  private readonly log: Logger;
  private udp: Socket | undefined;
  private native: PacketConn | undefined;
  // Batched path buffers, allocated once: queries in, answers out.
  private readonly inBuf = Buffer.alloc(BATCH * SLOT);
  private readonly outBuf = Buffer.alloc(BATCH * SLOT);
  private readonly inLens = new Int32Array(BATCH);
  private readonly inAddrs = new Uint32Array(BATCH);
  private readonly inPorts = new Uint16Array(BATCH);
  private readonly outOffsets = new Int32Array(BATCH);
  private readonly outLens = new Int32Array(BATCH);
  private readonly outAddrs = new Uint32Array(BATCH);
  private readonly outPorts = new Uint16Array(BATCH);
  // One view per slot, made once: parse and write both work from offset 0 of a buffer.
  private readonly inViews = Array.from({ length: BATCH }, (_, i) => this.inBuf.subarray(i * SLOT, (i + 1) * SLOT));
  private readonly outViews = Array.from({ length: BATCH }, (_, i) => this.outBuf.subarray(i * SLOT, (i + 1) * SLOT));
  private tcp: Server | undefined;
  private bound: string | undefined;
  private readonly q = new Query();
  private readonly out = Buffer.alloc(TCP_LENGTH_PREFIX_LEN + DNS_TCP_MAX_BYTES);
  private answers = new NameMap<RecordSet>();
  private readonly ptrCache = new Map<number, RecordSet | null>();
  private builtVersion = -1;
  private readonly soa: RecordSet;
  private readonly byType = new Map<number, number>();
  private readonly results = Object.fromEntries(RESULTS.map((r) => [r, 0])) as Record<DnsResult, number>;
  private tcpConnections = 0;
  private tcpRefused = 0;
  private tcpClientRefused = 0;
  private tcpPauses = 0;
  private readonly sessions = new Set<TcpSession>();
  /** tcpByClient counts each client's open TCP connections; a client leaves the map at zero. */
  private readonly tcpByClient = new Map<number, number>();
  /** upstream forwards names outside our authority; set once the resolvers are known. */
  upstream: Upstream | undefined;

  constructor(private readonly opts: DnsServerOptions) {
    this.domain = normalizeName(opts.domain);
    this.ttl = opts.ttl ?? DNS_TTL_S;
    this.log = opts.log ?? noopLogger;
    this.soa = encodeSoaRecord(this.domain, this.ttl);
    this.upstream = opts.upstream;
  }

  /** address is where the server listens now (`a.b.c.d:port`), or undefined. */
  get address(): string | undefined {
    return this.bound;
  }

  /** listen (re)binds UDP and TCP to `host:port`; a no-op when already there. */
  async listen(host: string, port: number): Promise<void> {
    const where = `${host}:${port}`;
    if (this.bound === where) return;
    await this.close();
    const native = this.opts.udp !== 'dgram' ? openNative(host, port) : undefined;
    const udp = native === undefined ? createSocket({ type: 'udp4', reuseAddr: false }) : undefined;
    udp?.on('message', (msg, rinfo) => this.onUdp(msg, rinfo));
    udp?.on('error', (err) => this.log.warn('dns udp socket error', { err: err.message }));
    const tcp = createServer({ pauseOnConnect: false }, (sock) => this.onTcp(sock));
    tcp.maxConnections = DNS_TCP_CONNECTIONS_MAX;
    tcp.on('drop', () => this.tcpRefused++);
    tcp.on('error', (err) => this.log.warn('dns tcp server error', { err: err.message }));
    try {
      if (udp !== undefined) {
        await new Promise<void>((resolve, reject) => {
          udp.once('error', reject);
          udp.bind(port, host, () => {
            udp.off('error', reject);
            resolve();
          });
        });
      }
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(port, host, () => {
          tcp.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      udp?.close();
      native?.close();
      tcp.close();
      throw new WeftError('EWEFT_SYSTEM', `dns: cannot listen on ${where}: ${(err as Error).message}`, { cause: err });
    }
    this.udp = udp;
    this.native = native;
    native?.onReadable(() => this.onNative());
    this.tcp = tcp;
    this.bound = where;
    this.log.info('dns listening', { addr: where, domain: this.domain });
  }

  /** close stops listening and closes every TCP connection (idempotent). */
  async close(): Promise<void> {
    const udp = this.udp;
    const tcp = this.tcp;
    this.native?.onReadable(undefined);
    this.native?.close();
    this.native = undefined;
    this.udp = undefined;
    this.tcp = undefined;
    this.bound = undefined;
    udp?.close();
    if (tcp === undefined) return;
    const closed = new Promise<void>((r) => tcp.close(() => r()));
    for (const s of this.sessions) s.sock.destroy();
    await closed;
  }

  /** stats returns the counters. */
  stats(): DnsServerStats {
    const queries: Record<string, number> = {};
    for (const [t, n] of this.byType) queries[typeName(t)] = n;
    let paused = 0;
    let written = 0;
    let read = 0;
    for (const s of this.sessions) {
      if (s.paused) paused++;
      written += s.sock.writableLength;
      read += s.pending.length;
    }
    return {
      listening: this.bound,
      queries,
      results: { ...this.results },
      tcpConnections: this.tcpConnections,
      tcpRefused: this.tcpRefused,
      tcpClientRefused: this.tcpClientRefused,
      tcpOpen: this.sessions.size,
      tcpPauses: this.tcpPauses,
      tcpPaused: paused,
      tcpWriteBufferedBytes: written,
      tcpReadBufferedBytes: read,
    };
  }

  /**
   * answer handles one query in `buf[0, len)` from `client` and writes the response into
   * `this.out` at `at`; returns its length, 0 for no answer, or a Promise for a forwarded one.
   */
  private answer(
    buf: Buffer,
    len: number,
    client: string | number,
    tcp: boolean,
    out: Buffer,
  ): number | Promise<Buffer> {
    const q = this.q;
    const r = parseQuery(buf, len, q, tcp ? DNS_TCP_MAX_BYTES : undefined);
    if (r === ParseResult.Drop) return this.count('dropped');
    this.byType.set(q.qtype, (this.byType.get(q.qtype) ?? 0) + 1);
    const ra = this.upstream === undefined ? 0 : FLAG_RA;
    if (r !== ParseResult.Ok) {
      this.count(
        r === ParseResult.NotImp
          ? 'notimp'
          : r === ParseResult.BadVers
            ? 'badvers'
            : r === ParseResult.Refused
              ? 'refused'
              : 'formerr',
      );
      return writeError(out, buf, q, r, ra);
    }
    const addr = typeof client === 'number' ? client : ipv4OrZero(client);
    if (!this.opts.allowed(addr)) {
      this.count('refused');
      return writeError(out, buf, q, Rcode.Refused, ra);
    }
    const limit = tcp ? DNS_TCP_MAX_BYTES : udpResponseLimit(q);
    if (isQueryInDomain(q, this.domain)) {
      this.rebuild();
      const set = this.answers.lookup(q);
      const flags = FLAG_AA | ra;
      if (set === undefined) {
        const apex = q.nameLen > 0 && normalizeName(q.name) === this.domain;
        if (apex && q.qtype === QType.SOA)
          return this.written(writeAnswer(out, buf, q, this.soa, limit, flags), 'answer', out);
        this.count(apex ? 'nodata' : 'nxdomain');
        return writeNegative(out, buf, q, apex ? Rcode.NoError : Rcode.NxDomain, this.soa, limit, flags);
      }
      if (q.qtype === QType.A || q.qtype === QType.ANY)
        return this.written(writeAnswer(out, buf, q, set, limit, flags), 'answer', out);
      this.count('nodata');
      return writeNegative(out, buf, q, Rcode.NoError, this.soa, limit, flags);
    }
    if (q.qtype === QType.PTR) {
      const addr = ptrNameToIPv4(q.name);
      if (addr !== undefined && this.opts.inRange(addr)) {
        const set = this.ptr(addr);
        const flags = FLAG_AA | ra;
        if (set !== undefined) return this.written(writeAnswer(out, buf, q, set, limit, flags), 'answer', out);
        this.count('nxdomain');
        return writeNegative(out, buf, q, Rcode.NxDomain, this.soa, limit, flags);
      }
    }
    const upstream = this.upstream;
    if (upstream === undefined) {
      this.count('refused');
      return writeError(out, buf, q, Rcode.Refused, 0);
    }
    // Forwarded: copy the query (the receive buffer is reused) and what the reply needs.
    const query = Buffer.from(buf.subarray(0, len));
    const qEnd = q.questionEnd;
    return upstream.resolve(query, addr).then(
      (reply) => {
        this.count('forwarded');
        if (reply.length <= limit) return reply;
        this.count('truncated');
        return truncateReply(reply, qEnd);
      },
      (err: unknown) => {
        // A client over its share of upstream queries is refused: a statement about this client
        // now, which its resolver may retry elsewhere, not a failure of the name to be cached.
        const throttled = err instanceof UpstreamError && err.reason === 'client-busy';
        this.count(throttled ? 'throttled' : 'servfail');
        const o = Buffer.alloc(len + 64);
        const p = new Query();
        parseQuery(query, query.length, p, DNS_TCP_MAX_BYTES);
        return o.subarray(0, writeError(o, query, p, throttled ? Rcode.Refused : Rcode.ServFail, FLAG_RA));
      },
    );
  }

  private written(n: number, result: DnsResult, out: Buffer): number {
    this.count((readFlags(out) & FLAG_TC) !== 0 ? 'truncated' : result);
    return n;
  }

  private count(r: DnsResult): 0 {
    this.results[r]++;
    return 0;
  }

  private onUdp(msg: Buffer, rinfo: RemoteInfo): void {
    // A reply to port 0 throws in send (dns2's crash); such a source cannot be answered anyway.
    if (rinfo.port === 0 || rinfo.family !== 'IPv4') {
      this.count('dropped');
      return;
    }
    let r: number | Promise<Buffer>;
    try {
      r = this.answer(msg, msg.length, rinfo.address, false, this.out);
    } catch (err) {
      this.log.error('dns: query failed', { err: (err as Error).message });
      return;
    }
    if (typeof r === 'number') {
      if (r > 0) this.send(Buffer.from(this.out.subarray(0, r)), rinfo);
      return;
    }
    void r.then((reply) => this.send(reply, rinfo));
  }

  /**
   * onNative serves the batched UDP path: receive up to BATCH queries with one recvmmsg, answer
   * each into its slot of outBuf, send all answers with one sendmmsg. Forwarded queries are
   * answered later, one by one.
   */
  private onNative(): void {
    const conn = this.native;
    if (conn === undefined) return;
    for (let round = 0; round < BATCH_ROUNDS; round++) {
      const n = conn.recvBatch(this.inBuf, 0, SLOT, BATCH, this.inLens, this.inAddrs, this.inPorts);
      if (n === 0) return;
      let out = 0;
      for (let i = 0; i < n; i++) {
        const len = this.inLens[i] as number;
        const port = this.inPorts[i] as number;
        const addr = this.inAddrs[i] as number;
        if (len < 0 || port === 0) {
          this.count('dropped');
          continue;
        }
        let r: number | Promise<Buffer>;
        try {
          r = this.answer(this.inViews[i] as Buffer, len, addr, false, this.outViews[i] as Buffer);
        } catch (err) {
          this.log.error('dns: query failed', { err: (err as Error).message });
          continue;
        }
        if (typeof r === 'number') {
          if (r === 0) continue;
          this.outOffsets[out] = i * SLOT;
          this.outLens[out] = r;
          this.outAddrs[out] = addr;
          this.outPorts[out] = port;
          out++;
        } else {
          void r.then((reply) => this.sendOne(reply, addr, port));
        }
      }
      if (out > 0) conn.sendBatch(this.outBuf, this.outOffsets, this.outLens, this.outAddrs, this.outPorts, out);
      if (n < BATCH) return;
    }
  }

  /** sendOne sends a single (forwarded) answer on the batched socket. */
  private sendOne(reply: Buffer, addr: number, port: number): void {
    const conn = this.native;
    if (conn === undefined) return;
    const offsets = new Int32Array(1);
    const lens = Int32Array.of(reply.length);
    conn.sendBatch(reply, offsets, lens, Uint32Array.of(addr), Uint16Array.of(port), 1);
  }

  private send(reply: Buffer, rinfo: RemoteInfo): void {
    try {
      this.udp?.send(reply, rinfo.port, rinfo.address, (err) => {
        if (err) this.log.debug('dns: send failed', { err: err.message });
      });
    } catch (err) {
      this.log.debug('dns: send failed', { err: (err as Error).message });
    }
  }

  /**
   * onTcp serves length-prefixed queries on a connection, in order, one at a time, until idle
   * or closed. Backpressure: while the client leaves more than DNS_TCP_WRITE_BUFFER_MAX_BYTES of
   * answers unread we answer nothing more, and while that holds or DNS_TCP_READ_BUFFER_MAX_BYTES
   * of queries wait we stop reading the socket (pumpTcp).
   */
  private onTcp(sock: TcpSocket): void {
    const client = ipv4OrZero(sock.remoteAddress?.replace(/^::ffff:/, '') ?? '');
    const open = this.tcpByClient.get(client) ?? 0;
    if (open >= DNS_TCP_CONNECTIONS_PER_CLIENT_MAX) {
      this.tcpClientRefused++;
      sock.destroy();
      return;
    }
    this.tcpConnections++;
    this.tcpByClient.set(client, open + 1);
    const s: TcpSession = { sock, client, pending: EMPTY, busy: false, paused: false };
    this.sessions.add(s);
    sock.setTimeout(DNS_TCP_IDLE_MS, () => sock.destroy());
    sock.on('error', () => sock.destroy());
    sock.on('close', () => {
      this.sessions.delete(s);
      s.pending = EMPTY;
      const n = (this.tcpByClient.get(client) ?? 1) - 1;
      if (n <= 0) this.tcpByClient.delete(client);
      else this.tcpByClient.set(client, n);
    });
    sock.on('drain', () => this.pumpTcp(s));
    sock.on('data', (chunk: Buffer) => {
      s.pending = s.pending.length === 0 ? chunk : Buffer.concat([s.pending, chunk]);
      this.pumpTcp(s);
    });
  }

  /**
   * pumpTcp answers the connection's whole pending queries in order while its unread answers
   * stay within DNS_TCP_WRITE_BUFFER_MAX_BYTES and no forwarded answer is awaited, then pauses or
   * resumes reading: paused while answers are unread beyond the bound or the pending queries
   * reach DNS_TCP_READ_BUFFER_MAX_BYTES.
   */
  private pumpTcp(s: TcpSession): void {
    const sock = s.sock;
    while (!s.busy && !sock.destroyed && sock.writableLength <= DNS_TCP_WRITE_BUFFER_MAX_BYTES) {
      const pending = s.pending;
      const n = readTcpLength(pending);
      if (n < 0) break;
      if (n < DNS_HEADER_LEN) {
        this.count('dropped');
        sock.destroy();
        return;
      }
      const end = TCP_LENGTH_PREFIX_LEN + n;
      if (pending.length < end) break;
      s.pending = pending.length === end ? EMPTY : pending.subarray(end);
      this.serveTcp(s, pending.subarray(TCP_LENGTH_PREFIX_LEN, end));
    }
    if (sock.destroyed) return;
    const full =
      s.pending.length >= DNS_TCP_READ_BUFFER_MAX_BYTES || sock.writableLength > DNS_TCP_WRITE_BUFFER_MAX_BYTES;
    if (full && !s.paused) {
      s.paused = true;
      this.tcpPauses++;
      sock.pause();
    } else if (!full && s.paused) {
      s.paused = false;
      sock.resume();
    }
  }

  /**
   * serveTcp answers one query (borrowed: `query` is valid during the call) and writes the
   * framed answer; a forwarded one marks the session busy until its answer is written.
   */
  private serveTcp(s: TcpSession, query: Buffer): void {
    const sock = s.sock;
    let r: number | Promise<Buffer>;
    try {
      r = this.answer(query, query.length, s.client, true, this.out.subarray(TCP_LENGTH_PREFIX_LEN));
    } catch (err) {
      this.log.error('dns: tcp query failed', { err: (err as Error).message });
      sock.destroy();
      return;
    }
    if (typeof r === 'number') {
      if (r === 0) {
        sock.destroy();
        return;
      }
      writeTcpLength(this.out, r);
      sock.write(Buffer.from(this.out.subarray(0, TCP_LENGTH_PREFIX_LEN + r)));
      return;
    }
    s.busy = true;
    r.then(
      (body) => {
        s.busy = false;
        if (sock.destroyed) return;
        sock.write(frameTcp(body));
        this.pumpTcp(s);
      },
      (err: unknown) => {
        this.log.error('dns: tcp query failed', { err: (err as Error).message });
        sock.destroy();
      },
    );
  }

  /** rebuild re-encodes every name's A records after the record set changed. */
  private rebuild(): void {
    const records = this.opts.records;
    if (records.version === this.builtVersion) return;
    const byName = new Map<string, number[]>();
    for (const r of records.entries()) {
      if (r.deleted) continue;
      const list = byName.get(r.name);
      if (list === undefined) byName.set(r.name, [r.addr]);
      else if (!list.includes(r.addr)) list.push(r.addr);
    }
    const answers = new NameMap<RecordSet>();
    for (const [name, addrs] of byName) answers.set(name, encodeARecords(addrs, this.ttl));
    this.answers = answers;
    this.ptrCache.clear();
    this.builtVersion = records.version;
  }

  private ptr(addr: number): RecordSet | undefined {
    this.rebuild();
    let set = this.ptrCache.get(addr);
    if (set === undefined) {
      const names = this.opts.records.lookupAddr(addr);
      set = names.length === 0 ? null : encodePtrRecords(names, this.ttl);
      if (this.ptrCache.size > 10_000) this.ptrCache.clear();
      this.ptrCache.set(addr, set);
    }
    return set ?? undefined;
  }
}

/** ipv4OrZero parses a dotted IPv4 address (0, never allowed, for anything else). */
function ipv4OrZero(s: string): number {
  try {
    return parseIPv4(s);
  } catch {
    return 0;
  }
}

/** openNative opens the batched UDP socket, or undefined when the addon cannot (then Node's dgram serves). */
function openNative(host: string, port: number): PacketConn | undefined {
  const addr = ipv4OrZero(host);
  if (addr === 0) return undefined;
  try {
    return NativeUdp.open({ bindAddr: addr, port, rcvbuf: 4 << 20, sndbuf: 4 << 20 });
  } catch {
    return undefined; // Node's dgram then binds, and reports what is wrong
  }
}

function typeName(t: number): string {
  for (const [k, v] of Object.entries(QType)) if (v === t) return k;
  return String(t);
}
