import dgram from 'node:dgram';
import { once } from 'node:events';
import net from 'node:net';
import { Packet, type Resource } from 'dns2';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mulberry32 } from '../common/random.js';
import {
  UPSTREAM_CACHE_ENTRY_MAX_BYTES,
  UPSTREAM_CACHE_MAX_BYTES,
  UPSTREAM_MAX_IN_FLIGHT_PER_CLIENT,
  Upstream,
  UpstreamError,
  type UpstreamOptions,
} from './upstream.js';

// ---- helpers ----

const { A, AAAA, NS, SOA } = Packet.TYPE;
const IN = Packet.CLASS.IN;

/** makeQuery builds a client query with one question (and an OPT record when edns is set). */
function makeQuery(name: string, opts: { id?: number; type?: number; edns?: boolean } = {}): Buffer {
  const p = new Packet();
  p.header.id = opts.id ?? 0x4242;
  p.header.rd = 1;
  p.questions.push(new Packet.Question(name, opts.type ?? A, IN));
  if (opts.edns) p.additionals.push(Packet.Resource.EDNS([]));
  return p.toBuffer();
}

/** makeReply answers a query the way an upstream would, with fill adding records. */
function makeReply(query: Buffer, fill: (res: Packet, qname: string) => void = () => {}): Buffer {
  const req = Packet.parse(query);
  const res = Packet.createResponseFromRequest(req);
  res.header.ra = 1;
  fill(res, req.questions[0]?.name ?? '');
  return res.toBuffer();
}

function aRecord(name: string, address: string, ttl: number): Resource {
  return new Packet.Resource({ name, type: A, class: IN, ttl, address });
}

function soaRecord(zone: string, ttl: number, minimum: number): Resource {
  return new Packet.Resource({
    name: zone,
    type: SOA,
    class: IN,
    ttl,
    primary: `ns1.${zone}`,
    admin: `hostmaster.${zone}`,
    serial: 2024010101,
    refresh: 3600,
    retry: 600,
    expiration: 86400,
    minimum,
  });
}

function parse(msg: Buffer): Packet {
  return Packet.parse(msg);
}

type Send = (msg: Buffer, from?: dgram.Socket) => Promise<void>;
type UdpHandler = (query: Buffer, send: Send) => void | Promise<void>;

/** answerWith replies with one A record for every query. */
function answerWith(address: string, ttl = 300): UdpHandler {
  return (q, send) => send(makeReply(q, (res, name) => res.answers.push(aRecord(name, address, ttl))));
}

interface TestUpstream {
  readonly port: number;
  /** server is the `127.0.0.1:port` string Upstream takes. */
  readonly server: string;
  /** queries are the datagrams this server received, in order. */
  readonly queries: Buffer[];
}

/** closers release everything a test opened, in afterEach. */
let closers: Array<() => Promise<void>> = [];

/** udpUpstream starts a DNS-ish UDP server on 127.0.0.1:0; without a handler it never answers. */
async function udpUpstream(handler?: UdpHandler): Promise<TestUpstream> {
  const socket = dgram.createSocket('udp4');
  socket.bind(0, '127.0.0.1');
  await once(socket, 'listening');
  closers.push(() => new Promise<void>((r) => socket.close(() => r())));
  const queries: Buffer[] = [];
  socket.on('message', (msg, rinfo) => {
    queries.push(msg);
    const send: Send = (out, from = socket) =>
      new Promise<void>((r) => from.send(out, rinfo.port, rinfo.address, () => r()));
    void handler?.(msg, send);
  });
  const { port } = socket.address();
  return { port, server: `127.0.0.1:${port}`, queries };
}

/** otherSocket is a bound UDP socket whose port is not any upstream's (for spoofed sources). */
async function otherSocket(): Promise<dgram.Socket> {
  const socket = dgram.createSocket('udp4');
  socket.bind(0, '127.0.0.1');
  await once(socket, 'listening');
  closers.push(() => new Promise<void>((r) => socket.close(() => r())));
  return socket;
}

/** tcpUpstream listens on 127.0.0.1:port and answers each length-prefixed query with handler's reply. */
async function tcpUpstream(port: number, handler: (query: Buffer) => Buffer): Promise<{ queries: Buffer[] }> {
  const queries: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    let buf = Buffer.alloc(0);
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
      const query = buf.subarray(2, 2 + buf.readUInt16BE(0));
      queries.push(query);
      const reply = handler(query);
      const framed = Buffer.alloc(2 + reply.length);
      framed.writeUInt16BE(reply.length, 0);
      reply.copy(framed, 2);
      sock.end(framed);
    });
  });
  server.listen(port, '127.0.0.1');
  await once(server, 'listening');
  closers.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return { queries };
}

/** upstream builds an Upstream with test-sized timeouts and stops it after the test. */
function upstream(servers: string[], options: Partial<UpstreamOptions> = {}): Upstream {
  const u = new Upstream({ servers, timeoutMs: 1_000, attempts: 1, ...options });
  closers.push(() => u.stop());
  return u;
}

async function rejection(p: Promise<unknown>): Promise<UpstreamError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(UpstreamError);
    return err as UpstreamError;
  }
  throw new Error('expected a rejection');
}

const SOCKETS = /^(UDPWrap|TCPSocketWrap|TCPServerWrap)$/;

function socketCount(): number {
  return process.getActiveResourcesInfo().filter((r) => SOCKETS.test(r)).length;
}

let socketsBefore = 0;

beforeEach(() => {
  closers = [];
  socketsBefore = socketCount();
});

afterEach(async () => {
  for (const close of closers.reverse()) await close();
  // Closed handles leave the resource list a few ticks later.
  for (let i = 0; i < 100 && socketCount() > socketsBefore; i++) await new Promise((r) => setTimeout(r, 10));
  expect(socketCount(), 'sockets left open').toBe(socketsBefore);
});

// ---- tests ----

describe('Upstream', () => {
  it('forwards with a fresh random id and restores the client id', async () => {
    const up = await udpUpstream(answerWith('93.184.216.34'));
    const u = upstream([up.server]);
    for (let i = 0; i < 3; i++) {
      const p = parse(await u.resolve(makeQuery(`n${i}.example.com`, { id: 0x0102 })));
      expect(p.header.id).toBe(0x0102);
      expect(p.answers[0]?.address).toBe('93.184.216.34');
    }
    // Three random ids all equal to the client's would happen once in 2^48 runs.
    expect(up.queries.map((q) => q.readUInt16BE(0)).some((id) => id !== 0x0102)).toBe(true);
    const s = u.stats();
    expect(s).toMatchObject({ queries: 3, forwarded: 3, cacheMisses: 3, cacheHits: 0, failed: 0 });
    expect(s.servers[0]).toMatchObject({ sent: 3, answered: 3, timeouts: 0, failures: 0 });
    expect(s.latency.count).toBe(3);
    expect(s.latency.recentMs).toHaveLength(3);
    expect(s.latency.sumMs).toBeGreaterThanOrEqual(0);
  });

  it('ignores replies from a wrong source port, with a wrong id or a wrong question, then takes the right one', async () => {
    const spoofer = await otherSocket();
    const up = await udpUpstream(async (q, send) => {
      const bad = (address: string) => makeReply(q, (res, name) => res.answers.push(aRecord(name, address, 60)));
      await send(bad('6.6.6.1'), spoofer);
      const wrongId = bad('6.6.6.2');
      wrongId.writeUInt16BE((q.readUInt16BE(0) + 1) & 0xffff, 0);
      await send(wrongId);
      const other = makeQuery('evil.example.com');
      other.writeUInt16BE(q.readUInt16BE(0), 0);
      await send(makeReply(other, (res) => res.answers.push(aRecord('evil.example.com', '6.6.6.3', 60))));
      await send(makeReply(q, (res, name) => res.answers.push(aRecord(name, '10.1.2.3', 60))));
    });
    const u = upstream([up.server]);
    const p = parse(await u.resolve(makeQuery('www.example.com')));
    expect(p.answers.map((r) => r.address)).toEqual(['10.1.2.3']);
    expect(u.stats().mismatched).toBe(3);
  });

  it('fails over to the next server on timeout and starts with it next time', async () => {
    const silent = await udpUpstream();
    const good = await udpUpstream(answerWith('10.0.0.7'));
    const u = upstream([silent.server, good.server], { timeoutMs: 150, cacheMaxEntries: 0 });
    expect(parse(await u.resolve(makeQuery('a.example.com'))).answers[0]?.address).toBe('10.0.0.7');
    expect(parse(await u.resolve(makeQuery('b.example.com'))).answers[0]?.address).toBe('10.0.0.7');
    expect(silent.queries).toHaveLength(1);
    expect(good.queries).toHaveLength(2);
    const s = u.stats();
    expect(s.timeouts).toBe(1);
    expect(s.servers.map((x) => [x.sent, x.timeouts, x.answered])).toEqual([
      [1, 1, 0],
      [2, 0, 2],
    ]);
  });

  it('rejects with reason exhausted after attempts × servers tries when no server answers', async () => {
    const a = await udpUpstream();
    const b = await udpUpstream();
    const u = upstream([a.server, b.server], { timeoutMs: 100, attempts: 2 });
    const err = await rejection(u.resolve(makeQuery('down.example.com')));
    expect(err.reason).toBe('exhausted');
    expect(err.code).toBe('EWEFT_UNAVAILABLE');
    expect(err.message).toContain('down.example.com');
    expect(err.message).toContain(`${a.server} timed out`);
    expect(a.queries).toHaveLength(2);
    expect(b.queries).toHaveLength(2);
    expect(u.stats()).toMatchObject({ failed: 1, timeouts: 4, inFlight: 0 });
  });

  it('forwards to an IPv6 server', async (ctx) => {
    const socket = dgram.createSocket('udp6');
    const bound = await new Promise<boolean>((r) => {
      socket.once('error', () => r(false));
      socket.bind(0, '::1', () => r(true));
    });
    closers.push(() => new Promise<void>((r) => socket.close(() => r())));
    if (!bound) ctx.skip('no IPv6 loopback (::1) in this environment');
    socket.on('message', (msg, rinfo) => {
      socket.send(
        makeReply(msg, (res, name) => res.answers.push(aRecord(name, '10.6.6.6', 60))),
        rinfo.port,
        rinfo.address,
      );
    });
    const u = upstream([`[::1]:${socket.address().port}`]);
    expect(parse(await u.resolve(makeQuery('v6.example.com'))).answers[0]?.address).toBe('10.6.6.6');
  });

  it('rejects with no-servers for an empty list and bad-query for a malformed query', async () => {
    const u = upstream([]);
    expect((await rejection(u.resolve(makeQuery('x.example.com')))).reason).toBe('no-servers');
    const bad = await rejection(u.resolve(Buffer.from([1, 2, 3])));
    expect(bad.reason).toBe('bad-query');
    expect(bad.code).toBe('EWEFT_INPUT');
    const response = makeReply(makeQuery('x.example.com'));
    expect((await rejection(u.resolve(response))).reason).toBe('bad-query');
    const twoQuestions = new Packet();
    twoQuestions.questions.push(new Packet.Question('a.example', A, IN), new Packet.Question('b.example', A, IN));
    expect((await rejection(u.resolve(twoQuestions.toBuffer()))).reason).toBe('bad-query');
  });

  it('retries a truncated UDP answer over TCP to the same server and returns the full answer', async () => {
    const many = (q: Buffer) =>
      makeReply(q, (res, name) => {
        for (let i = 1; i <= 30; i++) res.answers.push(aRecord(name, `10.9.0.${i}`, 300));
      });
    const up = await udpUpstream((q, send) =>
      send(
        makeReply(q, (res, name) => {
          res.header.tc = 1;
          res.answers.push(aRecord(name, '10.9.0.1', 300));
        }),
      ),
    );
    const tcp = await tcpUpstream(up.port, many);
    const u = upstream([up.server]);
    const p = parse(await u.resolve(makeQuery('big.example.com', { id: 0x5151 })));
    expect(p.header.tc).toBe(0);
    expect(p.header.id).toBe(0x5151);
    expect(p.answers).toHaveLength(30);
    expect(tcp.queries).toHaveLength(1);
    expect(u.stats().servers[0]).toMatchObject({ tcpRetries: 1, answered: 1, failures: 0 });
    // The full TCP answer is cacheable.
    expect(parse(await u.resolve(makeQuery('big.example.com'))).answers).toHaveLength(30);
    expect(up.queries).toHaveLength(1);
  });

  it('retries over TCP also when the truncated UDP reply was cut mid-record', async () => {
    const full = (q: Buffer) =>
      makeReply(q, (res, name) => {
        for (let i = 1; i <= 10; i++) res.answers.push(aRecord(name, `10.9.1.${i}`, 300));
      });
    const up = await udpUpstream((q, send) => {
      const cut = Buffer.from(full(q).subarray(0, q.length + 7));
      cut.writeUInt16BE(cut.readUInt16BE(2) | 0x0200, 2); // TC
      return send(cut);
    });
    await tcpUpstream(up.port, full);
    const u = upstream([up.server]);
    expect(parse(await u.resolve(makeQuery('cut.example.com'))).answers).toHaveLength(10);
    expect(u.stats().servers[0]).toMatchObject({ tcpRetries: 1, answered: 1, failures: 0 });
  });

  it('returns the truncated answer with TC set, uncached, when the TCP retry fails', async () => {
    const up = await udpUpstream((q, send) =>
      send(
        makeReply(q, (res, name) => {
          res.header.tc = 1;
          res.answers.push(aRecord(name, '10.9.0.1', 300));
        }),
      ),
    );
    // Nothing listens on TCP at up.port: the connection is refused.
    const u = upstream([up.server], { timeoutMs: 300 });
    const p = parse(await u.resolve(makeQuery('big.example.com')));
    expect(p.header.tc).toBe(1);
    expect(p.answers).toHaveLength(1);
    expect(u.stats().servers[0]).toMatchObject({ tcpRetries: 1, failures: 1 });
    await u.resolve(makeQuery('big.example.com'));
    expect(up.queries).toHaveLength(2);
  });

  it("serves a cached answer with aged TTLs, the client's id and spelling, until it expires", async () => {
    let nowMs = 1_700_000_000_000;
    const up = await udpUpstream((q, send) =>
      send(
        makeReply(q, (res, name) => {
          res.answers.push(aRecord(name, '10.0.0.1', 300), aRecord(name, '10.0.0.2', 600));
          res.authorities.push(
            new Packet.Resource({ name: 'example.com', type: NS, class: IN, ttl: 3600, ns: 'ns1.example.com' }),
          );
        }),
      ),
    );
    const u = upstream([up.server], { now: () => nowMs });
    const first = parse(await u.resolve(makeQuery('www.example.com', { id: 1 })));
    expect(first.answers.map((r) => r.ttl)).toEqual([300, 600]);

    nowMs += 100_500;
    const hitBuf = await u.resolve(makeQuery('WWW.Example.COM', { id: 0x7777 }));
    const hit = parse(hitBuf);
    expect(hit.header.id).toBe(0x7777);
    expect(hit.questions[0]?.name).toBe('WWW.Example.COM');
    // Every record is capped at the entry's remaining life: nothing outlives the cached copy.
    expect(hit.answers.map((r) => [r.address, r.ttl])).toEqual([
      ['10.0.0.1', 200],
      ['10.0.0.2', 200],
    ]);
    expect(hit.authorities[0]?.ttl).toBe(200);
    expect(up.queries).toHaveLength(1);

    // The caller may modify what it gets; the cache keeps its own copy.
    hitBuf.fill(0);
    nowMs += 199_000; // 299.5 s after it was stored
    expect(parse(await u.resolve(makeQuery('www.example.com'))).answers[0]?.ttl).toBe(1);
    expect(up.queries).toHaveLength(1);

    nowMs += 500; // 300 s: expired
    expect(parse(await u.resolve(makeQuery('www.example.com'))).answers[0]?.ttl).toBe(300);
    expect(up.queries).toHaveLength(2);
    expect(u.stats()).toMatchObject({ queries: 4, cacheHits: 2, cacheMisses: 2, cacheEntries: 1 });
  });

  it('keeps EDNS and plain queries, and query types, apart in the cache', async () => {
    const up = await udpUpstream(answerWith('10.0.0.1'));
    const u = upstream([up.server]);
    await u.resolve(makeQuery('www.example.com'));
    await u.resolve(makeQuery('www.example.com', { edns: true }));
    await u.resolve(makeQuery('www.example.com', { type: AAAA }));
    expect(up.queries).toHaveLength(3);
    await u.resolve(makeQuery('www.example.com', { edns: true }));
    await u.resolve(makeQuery('www.example.com'));
    expect(up.queries).toHaveLength(3);
  });

  it('caps how long an answer is cached at cacheMaxTtlSeconds', async () => {
    let nowMs = 0;
    const up = await udpUpstream(answerWith('10.0.0.1', 86_400));
    const u = upstream([up.server], { now: () => nowMs, cacheMaxTtlSeconds: 60 });
    await u.resolve(makeQuery('long.example.com'));
    nowMs = 10_000;
    expect(parse(await u.resolve(makeQuery('long.example.com'))).answers[0]?.ttl).toBe(50);
    nowMs = 60_000;
    await u.resolve(makeQuery('long.example.com'));
    expect(up.queries).toHaveLength(2);
  });

  it('caches NXDOMAIN and NODATA for min(SOA TTL, SOA MINIMUM)', async () => {
    let nowMs = 0;
    const up = await udpUpstream((q, send) =>
      send(
        makeReply(q, (res, name) => {
          if (name.startsWith('nx.')) {
            res.header.rcode = Packet.RCODE.NXDOMAIN;
            res.authorities.push(soaRecord('example.com', 900, 60));
          } else {
            res.authorities.push(soaRecord('example.com', 30, 300));
          }
        }),
      ),
    );
    const u = upstream([up.server], { now: () => nowMs });
    await u.resolve(makeQuery('nx.example.com'));
    await u.resolve(makeQuery('nodata.example.com', { type: AAAA }));
    nowMs = 29_999;
    const nx = parse(await u.resolve(makeQuery('nx.example.com')));
    expect(nx.header.rcode).toBe(Packet.RCODE.NXDOMAIN);
    expect(nx.authorities[0]?.ttl).toBe(60 - 29);
    const nodata = parse(await u.resolve(makeQuery('nodata.example.com', { type: AAAA })));
    expect(nodata.header.rcode).toBe(Packet.RCODE.NOERROR);
    expect(nodata.answers).toHaveLength(0);
    expect(nodata.authorities[0]?.ttl).toBe(1);
    expect(up.queries).toHaveLength(2);
    nowMs = 30_000; // NODATA expired, NXDOMAIN not yet
    await u.resolve(makeQuery('nx.example.com'));
    await u.resolve(makeQuery('nodata.example.com', { type: AAAA }));
    expect(up.queries).toHaveLength(3);
    nowMs = 60_000; // NXDOMAIN expired
    await u.resolve(makeQuery('nx.example.com'));
    expect(up.queries).toHaveLength(4);
  });

  it('does not cache a negative answer without an SOA', async () => {
    const up = await udpUpstream((q, send) =>
      send(
        makeReply(q, (res) => {
          res.header.rcode = Packet.RCODE.NXDOMAIN;
        }),
      ),
    );
    const u = upstream([up.server]);
    for (let i = 0; i < 2; i++) {
      expect(parse(await u.resolve(makeQuery('nx.example.com'))).header.rcode).toBe(Packet.RCODE.NXDOMAIN);
    }
    expect(up.queries).toHaveLength(2);
    expect(u.stats().cacheEntries).toBe(0);
  });

  it('returns a SERVFAIL uncached when no server does better, and prefers a server that answers', async () => {
    const failing = await udpUpstream((q, send) =>
      send(
        makeReply(q, (res) => {
          res.header.rcode = Packet.RCODE.SERVFAIL;
        }),
      ),
    );
    const alone = upstream([failing.server], { attempts: 2 });
    for (let i = 0; i < 2; i++) {
      expect(parse(await alone.resolve(makeQuery('sf.example.com'))).header.rcode).toBe(Packet.RCODE.SERVFAIL);
    }
    // One try per query: a SERVFAIL ends the pass, it does not start another.
    expect(failing.queries).toHaveLength(2);
    expect(alone.stats().servers[0]).toMatchObject({ servfails: 2, answered: 0 });
    expect(alone.stats().cacheEntries).toBe(0);

    const good = await udpUpstream(answerWith('10.0.0.9'));
    const both = upstream([failing.server, good.server]);
    expect(parse(await both.resolve(makeQuery('sf.example.com'))).answers[0]?.address).toBe('10.0.0.9');
    expect(parse(await both.resolve(makeQuery('other.example.com'))).answers[0]?.address).toBe('10.0.0.9');
    expect(failing.queries).toHaveLength(3);
  });

  it('counts a matching but malformed reply as a failure of that server and moves on', async () => {
    /** withJunk echoes the query's header and question as a response with `ancount` and `rest` after it. */
    const withJunk = (q: Buffer, ancount: number, rest: Buffer): Buffer => {
      const head = Buffer.from(q);
      head.writeUInt16BE(head.readUInt16BE(2) | 0x8000, 2);
      head.writeUInt16BE(ancount, 6);
      return Buffer.concat([head, rest]);
    };
    const junk = await udpUpstream((q, send) => send(withJunk(q, 2, Buffer.from([0xc0, 0x0c, 0, 1, 0]))));
    // An answer whose owner name is a pointer to itself: a compression loop.
    const loop = await udpUpstream((q, send) => {
      const at = q.length;
      const rr = Buffer.from([0xc0 | (at >> 8), at & 0xff, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1]);
      return send(withJunk(q, 1, rr));
    });
    const good = await udpUpstream(answerWith('10.0.0.5'));
    const u = upstream([junk.server, loop.server, good.server]);
    expect(parse(await u.resolve(makeQuery('m.example.com'))).answers[0]?.address).toBe('10.0.0.5');
    expect(u.stats().servers.map((s) => s.failures)).toEqual([1, 1, 0]);
  });

  it('ignores garbage that is not a reply to us and ends in a timeout', async () => {
    const rand = mulberry32(7);
    const noisy = await udpUpstream(async (_q, send) => {
      await send(Buffer.from('hello'));
      await send(Buffer.from(Array.from({ length: 200 }, () => Math.floor(rand() * 256))));
      await send(Buffer.alloc(0));
    });
    const u = upstream([noisy.server], { timeoutMs: 150 });
    expect((await rejection(u.resolve(makeQuery('g.example.com')))).reason).toBe('exhausted');
    expect(u.stats()).toMatchObject({ mismatched: 3, timeouts: 1 });
  });

  it('never throws on randomly corrupted replies', async () => {
    const rand = mulberry32(42);
    const up = await udpUpstream((q, send) => {
      const reply = makeReply(q, (res, name) => {
        res.answers.push(aRecord(name, '10.0.0.1', 60), aRecord(name, '10.0.0.2', 60));
        res.authorities.push(soaRecord('example.com', 60, 60));
      });
      // Corrupt only the section counts and what follows the question, so the reply still matches.
      const qEnd = q.length;
      const flips = 1 + Math.floor(rand() * 6);
      for (let i = 0; i < flips; i++) {
        const at = rand() < 0.2 ? 6 + Math.floor(rand() * 6) : qEnd + Math.floor(rand() * (reply.length - qEnd));
        reply[at] = Math.floor(rand() * 256);
      }
      const cut = rand() < 0.3 ? qEnd + Math.floor(rand() * (reply.length - qEnd)) : reply.length;
      return send(reply.subarray(0, cut));
    });
    const u = upstream([up.server], { cacheMaxEntries: 0 });
    let answered = 0;
    let failed = 0;
    for (let i = 0; i < 300; i++) {
      try {
        const out = await u.resolve(makeQuery(`f${i}.example.com`, { id: i }));
        expect(out.readUInt16BE(0)).toBe(i);
        answered++;
      } catch (err) {
        expect(err).toBeInstanceOf(UpstreamError);
        expect((err as UpstreamError).reason).toBe('exhausted');
        failed++;
      }
    }
    expect(answered).toBeGreaterThan(0);
    expect(failed).toBeGreaterThan(0);
    const s = u.stats();
    expect(s.servers[0]?.failures).toBe(failed);
    expect(s.timeouts).toBe(0);
  });

  it('evicts the least recently used entry when the cache is full', async () => {
    const up = await udpUpstream(answerWith('10.0.0.1'));
    const u = upstream([up.server], { cacheMaxEntries: 2 });
    const ask = (name: string) => u.resolve(makeQuery(`${name}.example.com`));
    await ask('a');
    await ask('b');
    await ask('a'); // hit: a is now the most recent
    await ask('c'); // evicts b
    expect(up.queries).toHaveLength(3);
    await ask('a');
    expect(up.queries).toHaveLength(3);
    await ask('b'); // evicts c
    expect(up.queries).toHaveLength(4);
    expect(u.stats()).toMatchObject({ cacheEntries: 2, cacheEvictions: 2 });
  });

  it('bounds queries in flight; stop() rejects waiting queries and start() resumes', async () => {
    // slow.example.com goes unanswered; other names are answered.
    const answer = answerWith('10.0.0.1');
    const up = await udpUpstream((q, send) =>
      parse(q).questions[0]?.name === 'slow.example.com' ? undefined : answer(q, send),
    );
    const u = upstream([up.server], { timeoutMs: 10_000, maxInFlight: 1 });
    const waiting = u.resolve(makeQuery('slow.example.com'));
    expect((await rejection(u.resolve(makeQuery('second.example.com')))).reason).toBe('busy');
    expect(u.stats().inFlight).toBe(1);
    await u.stop();
    expect((await rejection(waiting)).reason).toBe('stopped');
    expect((await rejection(u.resolve(makeQuery('later.example.com')))).reason).toBe('stopped');
    expect(u.stats()).toMatchObject({ inFlight: 0, failed: 1 });
    await u.stop();
    await u.start();
    expect(parse(await u.resolve(makeQuery('x.example.com'))).answers).toHaveLength(1);
  });
});

/** bigReply answers `q` (header and question copied, QR set) with `n` A records of `ttl`, by hand: fast for many records. */
function bigReply(q: Buffer, n: number, ttl = 300): Buffer {
  const out = Buffer.alloc(q.length + n * 16);
  q.copy(out);
  out.writeUInt16BE(q.readUInt16BE(2) | 0x8080, 2); // QR, RA
  out.writeUInt16BE(n, 6);
  out.writeUInt16BE(0, 8);
  out.writeUInt16BE(0, 10);
  for (let i = 0, at = q.length; i < n; i++, at += 16) {
    out.writeUInt16BE(0xc00c, at); // the question's name
    out.writeUInt16BE(A, at + 2);
    out.writeUInt16BE(IN, at + 4);
    out.writeUInt32BE(ttl, at + 6);
    out.writeUInt16BE(4, at + 10);
    out.writeUInt32BE(0x0a000000 + i, at + 12);
  }
  return out;
}

describe('Upstream budgets', () => {
  it('keeps the cache within UPSTREAM_CACHE_MAX_BYTES with large answers, evicting the least recently used', async () => {
    const records = 750; // 12 KB answers: 900 of them are 10.8 MB, more than the budget
    const up = await udpUpstream((q, send) => send(bigReply(q, records)));
    const u = upstream([up.server]);
    const names = Array.from({ length: 900 }, (_, i) => `big${i}.example.com`);
    for (let i = 0; i < names.length; i += 50) {
      const batch = names.slice(i, i + 50).map((n) => u.resolve(makeQuery(n)));
      for (const out of await Promise.all(batch)) expect(out.readUInt16BE(6)).toBe(records);
      expect(u.stats().cacheBytes).toBeLessThanOrEqual(UPSTREAM_CACHE_MAX_BYTES);
    }
    const s = u.stats();
    expect(s.cacheMaxBytes).toBe(UPSTREAM_CACHE_MAX_BYTES);
    expect(s.cacheEvictions).toBeGreaterThan(0);
    expect(s.cacheEntries + s.cacheEvictions).toBe(names.length);
    // Every entry is charged at least its answer's bytes.
    expect(s.cacheEntries * records * 16).toBeLessThanOrEqual(UPSTREAM_CACHE_MAX_BYTES);
    expect(s.cacheBytes).toBeGreaterThan(UPSTREAM_CACHE_MAX_BYTES - 16 * 1024);
    // The newest answers are cached, the oldest are gone.
    const asked = up.queries.length;
    await u.resolve(makeQuery(names[names.length - 1] as string));
    expect(up.queries).toHaveLength(asked);
    await u.resolve(makeQuery(names[0] as string));
    expect(up.queries).toHaveLength(asked + 1);
    u.clearCache();
    expect(u.stats()).toMatchObject({ cacheEntries: 0, cacheBytes: 0 });
  });

  it('bounds the cache in bytes as set, and gives the bytes of an expired entry back', async () => {
    let nowMs = 0;
    let answering = true;
    const up = await udpUpstream((q, send) => (answering ? send(bigReply(q, 60, 10)) : undefined)); // TTL 10 s
    const u = upstream([up.server], { cacheMaxBytes: 20_000, timeoutMs: 100, now: () => nowMs });
    for (let i = 0; i < 40; i++) await u.resolve(makeQuery(`n${i}.example.com`));
    const full = u.stats();
    expect(full.cacheBytes).toBeLessThanOrEqual(20_000);
    expect(full.cacheEntries).toBeGreaterThan(4);
    expect(full.cacheEntries + full.cacheEvictions).toBe(40);
    const perEntry = full.cacheBytes / full.cacheEntries; // every answer is the same size
    nowMs = 10_000; // every entry expired: looking one up drops it, and the upstream is gone now
    answering = false;
    expect((await rejection(u.resolve(makeQuery('n39.example.com')))).reason).toBe('exhausted');
    expect(u.stats()).toMatchObject({ cacheEntries: full.cacheEntries - 1, cacheBytes: full.cacheBytes - perEntry });
  });

  it('forwards but does not cache an answer over UPSTREAM_CACHE_ENTRY_MAX_BYTES', async () => {
    const records = Math.ceil(UPSTREAM_CACHE_ENTRY_MAX_BYTES / 16) + 10;
    const up = await udpUpstream((q, send) => send(bigReply(q, records)));
    const u = upstream([up.server]);
    for (let i = 0; i < 2; i++) {
      const out = await u.resolve(makeQuery('huge.example.com'));
      expect(out.length).toBeGreaterThan(UPSTREAM_CACHE_ENTRY_MAX_BYTES);
      expect(parse(out).answers).toHaveLength(records);
    }
    expect(up.queries).toHaveLength(2);
    expect(u.stats()).toMatchObject({ cacheEntries: 0, cacheBytes: 0, cacheTooLarge: 2 });
  });

  it("refuses a client over its share of queries in flight while other clients' lookups are forwarded", async () => {
    const answer = answerWith('10.0.0.1');
    const up = await udpUpstream((q, send) =>
      parse(q).questions[0]?.name?.startsWith('slow') ? undefined : answer(q, send),
    );
    const u = upstream([up.server], { timeoutMs: 30_000 });
    const greedy = Array.from({ length: UPSTREAM_MAX_IN_FLIGHT_PER_CLIENT }, (_, i) =>
      u.resolve(makeQuery(`slow${i}.example.com`), 'greedy'),
    );
    const over = await rejection(u.resolve(makeQuery('slow-more.example.com'), 'greedy'));
    expect(over.reason).toBe('client-busy');
    expect(over.code).toBe('EWEFT_UNAVAILABLE');
    expect(parse(await u.resolve(makeQuery('fast.example.com'), 'other')).answers[0]?.address).toBe('10.0.0.1');
    // A cache hit is never refused, even to a client at its cap.
    expect(parse(await u.resolve(makeQuery('fast.example.com'), 'greedy')).answers).toHaveLength(1);
    expect(u.stats()).toMatchObject({
      inFlight: UPSTREAM_MAX_IN_FLIGHT_PER_CLIENT,
      inFlightClients: 1,
      inFlightClientMax: UPSTREAM_MAX_IN_FLIGHT_PER_CLIENT,
      clientBusy: 1,
      busy: 0,
      failed: 0,
    });
    await u.stop();
    for (const p of greedy) expect((await rejection(p)).reason).toBe('stopped');
    expect(u.stats()).toMatchObject({ inFlight: 0, inFlightClients: 0, inFlightClientMax: 0 });
  });

  it('still bounds the total in flight when every client is under its share', async () => {
    const up = await udpUpstream();
    const u = upstream([up.server], { timeoutMs: 30_000, maxInFlight: 4, maxInFlightPerClient: 2 });
    const waiting = ['a', 'a', 'b', 'b'].map((c, i) => u.resolve(makeQuery(`w${i}.example.com`), c));
    expect((await rejection(u.resolve(makeQuery('x.example.com'), 'c'))).reason).toBe('busy');
    expect((await rejection(u.resolve(makeQuery('y.example.com'), 'a'))).reason).toBe('client-busy');
    expect(u.stats()).toMatchObject({ inFlight: 4, inFlightClients: 2, busy: 1, clientBusy: 1, failed: 1 });
    await u.stop();
    for (const p of waiting) await rejection(p);
  });
});
