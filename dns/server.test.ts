import { createSocket, type Socket } from 'node:dgram';
import { connect } from 'node:net';
import { Packet } from 'dns2';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type PeerName, parseIPv4 } from '../common/types.js';
import { DnsRecords } from './records.js';
import { DnsServer } from './server.js';

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
