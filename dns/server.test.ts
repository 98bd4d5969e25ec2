import { createSocket, type Socket } from 'node:dgram';
import { connect, type Socket as Socket2 } from 'node:net';
import { Packet } from 'dns2';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type PeerName, parseIPv4 } from '../common/types.js';
import { DnsRecords } from './records.js';
import {
  DNS_TCP_CONNECTIONS_PER_CLIENT_MAX,
  DNS_TCP_READ_BUFFER_MAX_BYTES,
  DNS_TCP_WRITE_BUFFER_MAX_BYTES,
  DnsServer,
} from './server.js';
import { UPSTREAM_MAX_IN_FLIGHT_PER_CLIENT, Upstream } from './upstream.js';
import { DNS_TCP_MAX_BYTES } from './wire.js';

const SELF = '02:00:00:00:00:01' as PeerName;
const RANGE_BASE = parseIPv4('10.32.0.0');
const inRange = (a: number) => a >>> 20 === RANGE_BASE >>> 20;

function query(name: string, type: number, id = 0x4242): Buffer {
  const p = new Packet();
  p.header.id = id;
  p.header.rd = 1;
  p.questions.push(new Packet.Question(name, type, Packet.CLASS.IN));
  return p.toBuffer();
}

describe.each(['native', 'dgram'] as const)('DnsServer over real sockets (%s UDP)', (udp) => {
  let records: DnsRecords;
  let server: DnsServer;
  let client: Socket;
  let port: number;
  let allowed = true;

  beforeEach(async () => {
    records = new DnsRecords({ self: SELF, incarnation: 1 });
    records.add('c1', 'db.weft.local', parseIPv4('10.32.0.5'));
    records.add('c2', 'db.weft.local', parseIPv4('10.32.0.6'));
    records.add('c3', 'web.weft.local', parseIPv4('10.32.0.7'));
    allowed = true;
    server = new DnsServer({ domain: 'weft.local', records, allowed: () => allowed, inRange, udp });
    // Find a free port: bind a probe, release it, listen there.
    const probe = createSocket('udp4');
    await new Promise<void>((r) => probe.bind(0, '127.0.0.1', r));
    port = probe.address().port;
    probe.close();
    await server.listen('127.0.0.1', port);
    client = createSocket('udp4');
    await new Promise<void>((r) => client.bind(0, '127.0.0.1', r));
  });

  afterEach(async () => {
    client.close();
    await server.close();
  });

  function ask(msg: Buffer, timeoutMs = 1_000): Promise<Buffer | undefined> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        client.off('message', on);
        resolve(undefined);
      }, timeoutMs);
      const on = (m: Buffer) => {
        clearTimeout(t);
        client.off('message', on);
        resolve(m);
      };
      client.on('message', on);
      client.send(msg, port, '127.0.0.1');
    });
  }

  it('answers every address of a name, authoritatively, and follows changes at once', async () => {
    const r = Packet.parse((await ask(query('DB.weft.local', Packet.TYPE.A)))!);
    expect(r.header.id).toBe(0x4242);
    expect(r.header.aa).toBe(1);
    expect(r.answers.map((a: { address?: string }) => a.address).sort()).toEqual(['10.32.0.5', '10.32.0.6']);
    records.remove('c1');
    const after = Packet.parse((await ask(query('db.weft.local', Packet.TYPE.A)))!);
    expect(after.answers.map((a: { address?: string }) => a.address)).toEqual(['10.32.0.6']);
  });

  it('answers PTR, NXDOMAIN with SOA, NODATA for AAAA, and refuses other names without an upstream', async () => {
    const ptr = Packet.parse((await ask(query('7.0.32.10.in-addr.arpa', Packet.TYPE.PTR)))!);
    expect(ptr.answers[0]?.domain).toBe('web.weft.local');
    const nx = Packet.parse((await ask(query('nope.weft.local', Packet.TYPE.A)))!);
    expect(nx.header.rcode).toBe(3);
    expect(nx.authorities).toHaveLength(1);
    const nodata = Packet.parse((await ask(query('web.weft.local', Packet.TYPE.AAAA)))!);
    expect(nodata.header.rcode).toBe(0);
    expect(nodata.answers).toHaveLength(0);
    const other = Packet.parse((await ask(query('example.com', Packet.TYPE.A)))!);
    expect(other.header.rcode).toBe(5);
    expect(server.stats().results).toMatchObject({ answer: 1, nxdomain: 1, nodata: 1, refused: 1 });
  });

  it('refuses clients outside the overlay', async () => {
    allowed = false;
    const r = Packet.parse((await ask(query('db.weft.local', Packet.TYPE.A)))!);
    expect(r.header.rcode).toBe(5);
  });

  it('drops garbage and responses, answers FORMERR/NOTIMP, and keeps serving', async () => {
    const rnd = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7919 + n) & 255));
    // From another socket, so that answers to the garbage (FORMERR, NOTIMP) do not reach `ask`.
    const noise = createSocket('udp4');
    for (let n = 0; n < 40; n++) noise.send(rnd(n), port, '127.0.0.1');
    const response = query('db.weft.local', Packet.TYPE.A);
    response[2] = (response[2] as number) | 0x80; // QR: a response
    expect(await ask(response, 200)).toBeUndefined();
    const update = query('db.weft.local', Packet.TYPE.A);
    update[2] = ((update[2] as number) & 0x87) | (5 << 3); // opcode UPDATE
    expect(Packet.parse((await ask(update))!).header.rcode).toBe(4);
    const dotted = query('a.weft.local', Packet.TYPE.A);
    dotted[13] = 0x2e; // the label "a" becomes "."
    expect(Packet.parse((await ask(dotted))!).header.rcode).toBe(1);
    const r = Packet.parse((await ask(query('web.weft.local', Packet.TYPE.A)))!);
    expect(r.answers[0]?.address).toBe('10.32.0.7');
    noise.close();
  });

  it('serves pipelined TCP queries and closes on a bad length', async () => {
    const sock = connect(port, '127.0.0.1');
    const frames = [query('db.weft.local', Packet.TYPE.A, 1), query('web.weft.local', Packet.TYPE.A, 2)].map((q) => {
      const f = Buffer.alloc(q.length + 2);
      f.writeUInt16BE(q.length, 0);
      q.copy(f, 2);
      return f;
    });
    const got: Buffer[] = [];
    let buf = Buffer.alloc(0);
    await new Promise<void>((resolve) => {
      sock.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          got.push(buf.subarray(2, 2 + buf.readUInt16BE(0)));
          buf = buf.subarray(2 + buf.readUInt16BE(0));
        }
        if (got.length === 2) resolve();
      });
      sock.write(Buffer.concat(frames));
    });
    expect(got.map((g) => Packet.parse(g).header.id)).toEqual([1, 2]);
    const closed = new Promise<void>((r) => sock.on('close', () => r()));
    sock.write(Buffer.from([0, 3, 1, 2, 3]));
    await closed;
    const r = Packet.parse((await ask(query('web.weft.local', Packet.TYPE.A)))!);
    expect(r.answers).toHaveLength(1);
  });
});

/** frame puts the 2-byte TCP length prefix before a message. */
function frame(q: Buffer): Buffer {
  const f = Buffer.alloc(q.length + 2);
  f.writeUInt16BE(q.length, 0);
  q.copy(f, 2);
  return f;
}

/** freePort finds a port free for UDP (TCP on it is free too in practice: the listen would fail otherwise). */
async function freePort(): Promise<number> {
  const probe = createSocket('udp4');
  await new Promise<void>((r) => probe.bind(0, '127.0.0.1', r));
  const { port } = probe.address();
  probe.close();
  return port;
}

/** waitFor polls a condition until it holds; it fails the test only if it never does. */
async function waitFor(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  for (const end = Date.now() + timeoutMs; !cond(); ) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** tcpAsk opens a TCP connection from `localAddress`, asks one query and resolves with the answer. */
function tcpAsk(port: number, msg: Buffer, localAddress = '127.0.0.1'): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = connect({ port, host: '127.0.0.1', localAddress });
    let buf = Buffer.alloc(0);
    sock.on('error', reject);
    sock.on('close', () => reject(new Error('closed before an answer')));
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        resolve(buf.subarray(2, 2 + buf.readUInt16BE(0)));
        sock.destroy();
      }
    });
    sock.write(frame(msg));
  });
}

describe('DnsServer budgets', () => {
  let records: DnsRecords;
  let server: DnsServer;
  let port: number;
  const closers: Array<() => unknown> = [];

  beforeEach(async () => {
    records = new DnsRecords({ self: SELF, incarnation: 1 });
    records.add('c1', 'web.weft.local', parseIPv4('10.32.0.7'));
    server = new DnsServer({ domain: 'weft.local', records, allowed: () => true, inRange });
    port = await freePort();
    await server.listen('127.0.0.1', port);
  });

  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
    await server.close();
  });

  it('stops reading a TCP client that pipelines and never reads, and still answers another', async () => {
    // A name with 2,000 addresses: 32 KB answers, so unread answers outgrow the kernel's socket buffers fast.
    for (let i = 0; i < 2_000; i++) records.add(`b${i}`, 'big.weft.local', parseIPv4('10.33.0.0') + i);
    const greedy = connect(port, '127.0.0.1');
    closers.push(() => greedy.destroy());
    greedy.pause(); // never reads
    const sent = 2_000;
    const q = frame(query('big.weft.local', Packet.TYPE.A, 7));
    await new Promise<void>((r) => greedy.write(Buffer.concat(Array.from({ length: sent }, () => q)), () => r()));
    await waitFor('the server to pause the connection', () => server.stats().tcpPaused === 1);
    const s = server.stats();
    expect(s.tcpPauses).toBeGreaterThanOrEqual(1);
    // What waits in the server's memory is bounded: at most one answer beyond the write bound ...
    expect(s.tcpWriteBufferedBytes).toBeGreaterThan(0);
    expect(s.tcpWriteBufferedBytes).toBeLessThanOrEqual(DNS_TCP_WRITE_BUFFER_MAX_BYTES + 2 + DNS_TCP_MAX_BYTES);
    // ... the rest of the pipelined queries wait unanswered, and far from all were answered.
    expect(s.tcpReadBufferedBytes).toBeGreaterThan(0);
    expect(s.tcpReadBufferedBytes).toBeLessThanOrEqual(DNS_TCP_READ_BUFFER_MAX_BYTES + 64 * 1024);
    expect(s.results.answer).toBeLessThan(sent / 2);
    // Another client is answered meanwhile.
    const other = Packet.parse(await tcpAsk(port, query('web.weft.local', Packet.TYPE.A, 9)));
    expect(other.header.id).toBe(9);
    expect(other.answers[0]?.address).toBe('10.32.0.7');
    expect(server.stats().tcpPaused).toBe(1);
    // Once the client reads, the server resumes and answers every query.
    let got = 0;
    let buf = Buffer.alloc(0);
    const all = new Promise<void>((resolve) => {
      greedy.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          buf = buf.subarray(2 + buf.readUInt16BE(0));
          got++;
        }
        if (got === sent) resolve();
      });
    });
    greedy.resume();
    await all;
    expect(server.stats()).toMatchObject({ tcpPaused: 0, tcpReadBufferedBytes: 0 });
  });

  it('closes TCP connections of a client over its share, and accepts other clients', async () => {
    const held = await Promise.all(
      Array.from(
        { length: DNS_TCP_CONNECTIONS_PER_CLIENT_MAX },
        () =>
          new Promise<Socket2>((resolve) => {
            const s = connect({ port, host: '127.0.0.1', localAddress: '127.0.0.2' }, () => resolve(s));
            closers.push(() => s.destroy());
          }),
      ),
    );
    await waitFor('the connections to be open', () => server.stats().tcpOpen === held.length);
    const over = connect({ port, host: '127.0.0.1', localAddress: '127.0.0.2' });
    over.on('error', () => {});
    await new Promise((r) => over.on('close', r));
    expect(server.stats()).toMatchObject({ tcpClientRefused: 1, tcpOpen: held.length });
    const other = Packet.parse(await tcpAsk(port, query('web.weft.local', Packet.TYPE.A), '127.0.0.3'));
    expect(other.answers).toHaveLength(1);
    for (const s of held) s.destroy();
    await waitFor('the connections to close', () => server.stats().tcpOpen === 0);
    expect(Packet.parse(await tcpAsk(port, query('web.weft.local', Packet.TYPE.A), '127.0.0.2')).answers).toHaveLength(
      1,
    );
  });

  it.each(['native', 'dgram'] as const)(
    "refuses a greedy UDP client's forwarded queries over its share while another client's are answered (%s UDP)",
    async (udp) => {
      await server.close();
      server = new DnsServer({ domain: 'weft.local', records, allowed: () => true, inRange, udp });
      await server.listen('127.0.0.1', port);
      // The upstream never answers slow* names and answers everything else at once.
      const fake = createSocket('udp4');
      await new Promise<void>((r) => fake.bind(0, '127.0.0.1', r));
      closers.push(() => fake.close());
      fake.on('message', (msg, rinfo) => {
        const req = Packet.parse(msg);
        const name = req.questions[0]?.name ?? '';
        if (name.startsWith('slow')) return;
        const res = Packet.createResponseFromRequest(req);
        res.answers.push(
          new Packet.Resource({ name, type: Packet.TYPE.A, class: Packet.CLASS.IN, ttl: 60, address: '192.0.2.1' }),
        );
        fake.send(res.toBuffer(), rinfo.port, rinfo.address);
      });
      const upstream = new Upstream({ servers: [`127.0.0.1:${fake.address().port}`], timeoutMs: 30_000, attempts: 1 });
      closers.push(() => upstream.stop());
      server.upstream = upstream;

      const greedy = createSocket('udp4');
      await new Promise<void>((r) => greedy.bind(0, '127.0.0.2', r));
      closers.push(() => greedy.close());
      const flood = 4 * UPSTREAM_MAX_IN_FLIGHT_PER_CLIENT;
      const over = flood - UPSTREAM_MAX_IN_FLIGHT_PER_CLIENT;
      let refused = 0;
      greedy.on('message', (m) => {
        if (Packet.parse(m).header.rcode === 5) refused++;
      });
      for (let i = 0; i < flood; i++) greedy.send(query(`slow${i}.example.com`, Packet.TYPE.A, i), port, '127.0.0.1');
      await waitFor('the greedy client to be refused', () => refused === over);
      expect(upstream.stats()).toMatchObject({
        inFlight: UPSTREAM_MAX_IN_FLIGHT_PER_CLIENT,
        inFlightClients: 1,
        clientBusy: over,
        failed: 0,
      });
      expect(server.stats().results.throttled).toBe(over);

      // A second client's forwarded lookups all succeed.
      const other = createSocket('udp4');
      await new Promise<void>((r) => other.bind(0, '127.0.0.3', r));
      closers.push(() => other.close());
      for (let i = 0; i < 20; i++) {
        const answer = new Promise<Buffer>((r) => other.once('message', r));
        other.send(query(`fast${i}.example.com`, Packet.TYPE.A, i), port, '127.0.0.1');
        const r = Packet.parse(await answer);
        expect(r.header.rcode).toBe(0);
        expect(r.answers[0]?.address).toBe('192.0.2.1');
      }
      expect(server.stats().results.forwarded).toBe(20);
      expect(upstream.stats().inFlight).toBe(UPSTREAM_MAX_IN_FLIGHT_PER_CLIENT);
    },
  );
});
