/**
 * DNS: client queries through the real server's answer path (dns/server.ts DnsServer.answer →
 * dns/query.ts parseQuery and the dns/response.ts writers), and upstream answers through a real
 * Upstream (dns/message.ts checkReply, readRecords; the cache in dns/upstream.ts) fed by a fake
 * UDP socket and a TCP server on 127.0.0.1 port 0 that answer with the fuzzed bytes. walkMessage
 * below is a reader of our answers written apart from dns/ on purpose: an oracle that shares the
 * code under test cannot catch its bugs.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { Packet } from 'dns2';
import * as fc from 'fast-check';
import { type PeerName, parseIPv4 } from '../../common/types.js';
import {
  DNS_TCP_MAX_BYTES,
  DnsRecords,
  DnsServer,
  EDNS_UDP_PAYLOAD_BYTES,
  FLAG_QR,
  Upstream,
  UpstreamError,
  type UpstreamSocket,
} from '../../dns/index.js';
import { concat } from '../mutator.js';
import { dnsName, Pool } from '../structured.js';
import { check, type FuzzTarget, label } from '../target.js';

const SELF = '02:00:00:00:00:01' as PeerName;
const RANGE_BASE = parseIPv4('10.32.0.0');
const CLIENT_OVERLAY = parseIPv4('10.32.0.77');
const CLIENT_STRANGER = parseIPv4('192.0.2.1');

/** query builds a client query with dns2 (the library `weft dns-lookup` and the tests use). */
function query(name: string, type: number, opts: { id?: number; edns?: number; rd?: boolean } = {}): Uint8Array {
  const p = new Packet();
  p.header.id = opts.id ?? 0x4242;
  p.header.rd = opts.rd === false ? 0 : 1;
  p.questions.push(new Packet.Question(name, type, Packet.CLASS.IN));
  const b = p.toBuffer() as Buffer;
  if (opts.edns === undefined) return Uint8Array.from(b);
  // An OPT record (RFC 6891): root name, type 41, class = UDP size, ttl = ext-rcode/version/DO, rdlen 0.
  const opt = Buffer.alloc(11);
  opt.writeUInt16BE(41, 1);
  opt.writeUInt16BE(opts.edns, 3);
  opt[7] = 0x80;
  const out = Buffer.concat([b, opt]);
  out.writeUInt16BE(1, 10);
  return Uint8Array.from(out);
}

const T = { A: 1, NS: 2, SOA: 6, PTR: 12, MX: 15, TXT: 16, AAAA: 28, SRV: 33, ANY: 255 };

function querySeeds(): Uint8Array[] {
  const qs = [
    query('db.weft.local', T.A),
    query('DB.Weft.Local', T.A, { edns: 4096 }),
    query('big.weft.local', T.A), // more answers than 512 bytes: truncated
    query('big.weft.local', T.A, { edns: 1232 }),
    query('web.weft.local', T.AAAA),
    query('weft.local', T.SOA),
    query('weft.local', T.NS),
    query('nobody.weft.local', T.A, { edns: 512 }),
    query('5.0.32.10.in-addr.arpa', T.PTR),
    query('250.0.32.10.in-addr.arpa', T.PTR),
    query('example.com', T.MX),
    query('_http._tcp.weft.local', T.SRV),
    query('db.weft.local', T.ANY, { rd: false }),
  ];
  // ctl: bit 0 TCP, bit 1 a client from outside the overlay.
  return qs.flatMap((q) => [concat(Uint8Array.of(0), q), concat(Uint8Array.of(1), q), concat(Uint8Array.of(2), q)]);
}

/** walkMessage checks a DNS message we wrote is well formed: counts match records that end exactly at its length. */
function walkMessage(m: Buffer, n: number): string | undefined {
  if (n < 12) return 'shorter than a header';
  let off = 12;
  const name = (): boolean => {
    let p = off;
    let jumped = false;
    for (let hops = 0; hops < 128; hops++) {
      if (p >= n) return false;
      const l = m[p] as number;
      if (l === 0) {
        if (!jumped) off = p + 1;
        return true;
      }
      if ((l & 0xc0) === 0xc0) {
        if (p + 1 >= n) return false;
        const ptr = ((l & 0x3f) << 8) | (m[p + 1] as number);
        if (ptr >= p) return false;
        if (!jumped) off = p + 2;
        jumped = true;
        p = ptr;
        continue;
      }
      if (l > 63) return false;
      p += 1 + l;
    }
    return false;
  };
  const qd = m.readUInt16BE(4);
  for (let i = 0; i < qd; i++) {
    if (!name() || off + 4 > n) return 'bad question';
    off += 4;
  }
  const rr = m.readUInt16BE(6) + m.readUInt16BE(8) + m.readUInt16BE(10);
  for (let i = 0; i < rr; i++) {
    if (!name() || off + 10 > n) return `bad record ${i}`;
    off += 10 + m.readUInt16BE(off + 8);
    if (off > n) return `record ${i} overruns`;
  }
  return off === n ? undefined : `${n - off} bytes after the last record`;
}

const queryPool = new Pool(
  fc.tuple(
    fc.nat(3),
    dnsName,
    fc.constantFrom(T.A, T.AAAA, T.PTR, T.SOA, T.ANY, T.MX, 0, 65535),
    fc.oneof(fc.constant(undefined), fc.constantFrom(0, 511, 512, 1232, 4096, 65535)),
    fc.boolean(),
  ),
  (v) => {
    const [ctl, name, type, edns, rd] = v as [number, string, number, number | undefined, boolean];
    try {
      return concat(Uint8Array.of(ctl), query(name, type, { edns, rd }));
    } catch {
      return undefined;
    }
  },
  51,
);

type AnswerFn = (buf: Buffer, len: number, client: number, tcp: boolean, out: Buffer) => number | Promise<Buffer>;
let answer: AnswerFn | undefined;
const out = Buffer.alloc(DNS_TCP_MAX_BYTES + 2);

function server(): AnswerFn {
  const records = new DnsRecords({ self: SELF, incarnation: 1 });
  records.add('c1', 'db.weft.local', parseIPv4('10.32.0.5'));
  records.add('c2', 'db.weft.local', parseIPv4('10.32.0.6'));
  records.add('c3', 'web.weft.local', parseIPv4('10.32.0.7'));
  for (let i = 0; i < 100; i++) records.add(`b${i}`, 'big.weft.local', parseIPv4(`10.32.1.${i}`));
  const s = new DnsServer({
    domain: 'weft.local',
    records,
    allowed: (a) => a >>> 20 === RANGE_BASE >>> 20,
    inRange: (a) => a >>> 20 === RANGE_BASE >>> 20,
    udp: 'dgram',
  });
  // answer is the server's per-query entry point (private: the sockets call it); the fuzzer calls it directly.
  const fn = (s as unknown as { answer: AnswerFn }).answer;
  return fn.bind(s);
}

/** dnsQuery fuzzes client queries through the server's answer path. */
export const dnsQuery: FuzzTarget = {
  name: 'dns-query',
  parsers: [
    'dns/server.ts: DnsServer.answer (the per-query path of the UDP and TCP listeners)',
    'dns/query.ts: parseQuery (parseQuestion, parseOpt)',
    'dns/response.ts: writeAnswer, writeNegative, writeError',
    'dns/names.ts: ptrNameToIPv4; dns/name-map.ts: NameMap.lookup',
  ],
  maxLen: 1024,
  seeds: querySeeds,
  generate: (rand) => queryPool.next(rand),
  run(input: Uint8Array): string {
    if (input.length === 0) return 'empty';
    answer ??= server();
    const ctl = input[0] as number;
    const tcp = (ctl & 1) !== 0;
    const q = Buffer.from(input.buffer, input.byteOffset + 1, input.length - 1);
    const r = answer(q, q.length, (ctl & 2) !== 0 ? CLIENT_STRANGER : CLIENT_OVERLAY, tcp, out);
    check(typeof r === 'number', 'a query was forwarded, but this server has no upstream');
    if (r === 0) return 'dropped';
    const limit = tcp ? DNS_TCP_MAX_BYTES : EDNS_UDP_PAYLOAD_BYTES;
    check(r >= 12 && r <= limit, `answer of ${r} bytes (limit ${limit})`);
    if (!tcp && r > 512) {
      // Only a query with an OPT record may get more than 512 bytes over UDP.
      check(q.length > 12 && q.readUInt16BE(10) === 1, `a ${r}-byte UDP answer to a query without EDNS`);
    }
    check(out.readUInt16BE(0) === q.readUInt16BE(0), 'answer id differs from the query id');
    check((out.readUInt16BE(2) & FLAG_QR) !== 0, 'answer without QR');
    const bad = walkMessage(out, r);
    check(bad === undefined, `malformed answer: ${bad}`);
    return `rcode:${out[3]! & 0xf}:${out.readUInt16BE(6) > 0 ? 'an' : 'no-an'}:${(out[2]! & 2) !== 0 ? 'tc' : ''}`;
  },
};

// ---- upstream answers ----

/** Input for dns-upstream: | ctl (1) | reply ... |; ctl bits 0-2 pick the query, bit 3 leaves the reply id as it is. */
const UPSTREAM_QUERIES = [
  query('example.com', T.A),
  query('example.com', T.A, { edns: 1232 }),
  query('Example.COM', T.AAAA),
  query('example.org', T.MX),
  query('nx.example.net', T.A),
  query('1.2.0.192.in-addr.arpa', T.PTR),
  query('a.b.c.example', T.TXT, { edns: 4096 }),
  query('example.com', T.ANY),
];

/** reply builds an upstream answer for query i with dns2: answers, authority SOA, truncation. */
function reply(
  i: number,
  opts: { answers?: number; nx?: boolean; tc?: boolean; soa?: boolean; ttl?: number },
): Uint8Array {
  const q = Packet.parse(Buffer.from(UPSTREAM_QUERIES[i] as Uint8Array));
  const p = new Packet();
  p.header.id = 0;
  p.header.qr = 1;
  p.header.rd = 1;
  p.header.ra = 1;
  p.header.rcode = opts.nx === true ? 3 : 0;
  p.header.tc = opts.tc === true ? 1 : 0;
  p.questions = q.questions;
  const name = (q.questions[0] as { name: string }).name;
  for (let k = 0; k < (opts.answers ?? 0); k++) {
    p.answers.push({ name, type: T.A, class: 1, ttl: opts.ttl ?? 300, address: `192.0.2.${k + 1}` } as never);
  }
  if (opts.soa === true) {
    p.authorities.push({
      name: 'example.com',
      type: T.SOA,
      class: 1,
      ttl: 900,
      primary: 'ns.example.com',
      admin: 'hostmaster.example.com',
      serial: 1,
      refresh: 3600,
      retry: 600,
      expiration: 86400,
      minimum: 60,
    } as never);
  }
  return Uint8Array.from(p.toBuffer() as Buffer);
}

function upstreamSeeds(): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < UPSTREAM_QUERIES.length; i++) {
    out.push(concat(Uint8Array.of(i), reply(i, { answers: 2 })));
  }
  out.push(concat(Uint8Array.of(0), reply(0, { answers: 1, ttl: 0 })));
  out.push(concat(Uint8Array.of(4), reply(4, { nx: true, soa: true })));
  out.push(concat(Uint8Array.of(4), reply(4, { soa: true })));
  out.push(concat(Uint8Array.of(0), reply(0, { tc: true })));
  out.push(concat(Uint8Array.of(1), reply(1, { answers: 30 })));
  out.push(concat(Uint8Array.of(8), reply(0, { answers: 1 }))); // id left as it is: a mismatch
  return out;
}

let current: Uint8Array = new Uint8Array(0);

/** FakeUdp answers every send with the current fuzz reply (our id patched in), then fails: nothing else will come. */
class FakeUdp implements UpstreamSocket {
  private onMessage: ((msg: Buffer, rinfo: { address: string; port: number }) => void) | undefined;
  private onError: ((err: Error) => void) | undefined;

  on(event: 'message' | 'error', listener: never): unknown {
    if (event === 'message') this.onMessage = listener;
    else this.onError = listener;
    return this;
  }

  send(msg: Uint8Array, port: number, address: string, callback: (err: Error | null) => void): void {
    const id = (msg[0]! << 8) | msg[1]!;
    const r = Buffer.from(current);
    const ctl = upstreamCtl;
    if ((ctl & 8) === 0 && r.length >= 2) r.writeUInt16BE(id, 0);
    callback(null);
    queueMicrotask(() => {
      this.onMessage?.(r, { address, port });
      this.onError?.(new Error('fuzz: no further datagrams'));
    });
  }

  close(): unknown {
    return undefined;
  }
}

let upstreamCtl = 0;
let tcpServer: Server | undefined;
let tcpPort = 0;
const sockets = new Set<Socket>();
let upstream: Upstream | undefined;

/** dnsUpstream fuzzes what upstream servers answer (UDP, and the TCP retry of a truncated answer). */
export const dnsUpstream: FuzzTarget = {
  name: 'dns-upstream',
  parsers: [
    'dns/upstream.ts: Upstream.resolve → cachePut, serveCached',
    'dns/message.ts: readForwardedQuery, checkReply, readQuestion, readRecords, copyStoredReply; dns/names.ts: readNameKey',
    'dns/upstream.ts: the TCP retry (tcpExchange) for a truncated answer',
  ],
  maxLen: 2048,
  seeds: upstreamSeeds,
  async setup(): Promise<void> {
    const srv = createServer((sock) => {
      sockets.add(sock);
      sock.on('close', () => sockets.delete(sock));
      sock.on('error', () => {});
      let got = Buffer.alloc(0);
      sock.on('data', (chunk: Buffer) => {
        got = Buffer.concat([got, chunk]);
        if (got.length < 2 || got.length < 2 + got.readUInt16BE(0)) return;
        // The full answer over TCP: the fuzzed bytes, our id, TC cleared.
        const r = Buffer.from(current);
        if (r.length >= 2) got.copy(r, 0, 2, 4);
        if (r.length >= 3) r[2] = r[2]! & ~2;
        const len = Buffer.alloc(2);
        len.writeUInt16BE(Math.min(r.length, 0xffff), 0);
        sock.end(Buffer.concat([len, r]));
      });
    });
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    tcpServer = srv;
    tcpPort = (srv.address() as { port: number }).port;
    upstream = new Upstream({
      servers: [`127.0.0.1:${tcpPort}`],
      timeoutMs: 1_000,
      attempts: 1,
      createSocket: () => new FakeUdp(),
    });
    await upstream.start();
  },
  async teardown(): Promise<void> {
    await upstream?.stop();
    upstream = undefined;
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => (tcpServer === undefined ? resolve() : tcpServer.close(() => resolve())));
    tcpServer = undefined;
  },
  async run(input: Uint8Array): Promise<string> {
    if (input.length === 0 || upstream === undefined) return 'empty';
    upstreamCtl = input[0] as number;
    const q = Buffer.from(UPSTREAM_QUERIES[upstreamCtl & 7] as Uint8Array);
    q.writeUInt16BE((input.length * 7919) & 0xffff, 0); // the client's id, different per input
    current = input.subarray(1);
    upstream.clearCache();
    let outcome: string;
    try {
      const a = await upstream.resolve(q, 'fuzz');
      checkAnswer(a, q);
      // Again: from the cache when the answer was cacheable, else asked again; both must answer alike.
      const b = await upstream.resolve(q, 'fuzz');
      checkAnswer(b, q);
      check(a.length === b.length, `cached answer of ${b.length} bytes, first ${a.length}`);
      outcome = `answer:${a[3]! & 0xf}:${(a[2]! & 2) !== 0 ? 'tc' : ''}`;
    } catch (err) {
      if (!(err instanceof UpstreamError)) throw err;
      outcome = label(err.reason, err.message.replace(/127\.0\.0\.1:\d+/g, 'S'));
    }
    return outcome;
  },
};

function checkAnswer(a: Buffer, q: Buffer): void {
  check(Buffer.isBuffer(a) && a.length >= 12, `answer of ${a.length} bytes`);
  check(a.readUInt16BE(0) === q.readUInt16BE(0), 'answer id is not the client id');
  check((a.readUInt16BE(2) & FLAG_QR) !== 0, 'answer without QR');
}
