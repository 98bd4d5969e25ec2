/**
 * The server's wire path (query.ts, response.ts, names.ts, name-map.ts) and the header and
 * framing helpers of wire.ts, checked against dns2 as an independent implementation. The
 * forwarder's reader is tested in message.test.ts, compressed names in names.test.ts.
 */
import { Packet } from 'dns2';
import { describe, expect, it } from 'vitest';
import { InputError } from '../common/errors.js';
import { mulberry32 } from '../common/random.js';
import { NameMap } from './name-map.js';
import { encodeName, hashName, ipv4ToPtrName, isInDomain, normalizeName, ptrNameToIPv4 } from './names.js';
import { isQueryInDomain, ParseResult, parseQuery, Query, udpResponseLimit } from './query.js';
import {
  A_RECORD_LEN,
  encodeARecords,
  encodePtrRecords,
  encodeSoaRecord,
  type RecordSet,
  truncateReply,
  writeAnswer,
  writeError,
  writeNegative,
} from './response.js';
import { rawMessage, wireName } from './testing/messages.js';
import {
  copyId,
  DNS_QUERY_MAX_BYTES,
  DNS_TCP_MAX_BYTES,
  EDNS_UDP_PAYLOAD_BYTES,
  FLAG_AA,
  FLAG_QR,
  FLAG_RA,
  FLAG_RD,
  FLAG_TC,
  frameTcp,
  QType,
  Rcode,
  readFlags,
  readTcpLength,
  writeId,
  writeTcpLength,
} from './wire.js';

// ---- Helpers: dns2 is the independent implementation that builds queries and reads responses ----

interface QueryOptions {
  id?: number;
  rd?: boolean;
  cls?: number;
  edns?: { size?: number; version?: number; dnssecOk?: boolean; ecs?: string };
}

/** query builds a one-question query with dns2. */
function query(name: string, type: number, opts: QueryOptions = {}): Buffer {
  const p = new Packet();
  p.header.id = opts.id ?? 0x1234;
  p.header.rd = opts.rd === false ? 0 : 1;
  p.questions.push(new Packet.Question(name, type, opts.cls ?? 1));
  if (opts.edns) {
    const options = opts.edns.ecs ? [Packet.Resource.EDNS.ECS(opts.edns.ecs)] : [];
    p.additionals.push(
      Packet.Resource.EDNS(options, {
        udpPayloadSize: opts.edns.size ?? 4096,
        version: opts.edns.version ?? 0,
        doFlag: opts.edns.dnssecOk ?? false,
      }),
    );
  }
  return p.toBuffer();
}

/** typeClass is QTYPE and QCLASS as 4 bytes. */
function typeClass(type: number, cls = 1): number[] {
  return [type >>> 8, type & 0xff, cls >>> 8, cls & 0xff];
}

/** opt encodes an OPT record by hand: root name unless given, then the fields. */
function opt(f: { name?: number[]; type?: number; size?: number; ttl?: number; rdata?: number[]; rdlen?: number }) {
  const rdata = f.rdata ?? [];
  const b = Buffer.alloc(10 + rdata.length);
  b.writeUInt16BE(f.type ?? 41, 0);
  b.writeUInt16BE(f.size ?? 4096, 2);
  b.writeUInt32BE(f.ttl ?? 0, 4);
  b.writeUInt16BE(f.rdlen ?? rdata.length, 8);
  Buffer.from(rdata).copy(b, 10);
  return Buffer.concat([Buffer.from(f.name ?? [0]), b]);
}

/** parse runs parseQuery on the whole buffer. */
function parse(buf: Buffer, q = new Query(), maxLen?: number): ParseResult {
  return parseQuery(buf, buf.length, q, maxLen);
}

/** decode reads a response with dns2 and checks it decoded cleanly. */
function decode(out: Buffer, n: number): Packet {
  const p = Packet.parse(Buffer.from(out.subarray(0, n)));
  expect(p.errors).toEqual([]);
  return p;
}

/** flagsOf returns the raw flags word of a response (dns2's header type omits AD/CD). */
function flagsOf(out: Buffer): number {
  return out.readUInt16BE(2);
}

/** answer parses `buf` and writes an answer with `records` into a fresh 64 KiB buffer. */
function answer(
  buf: Buffer,
  records: RecordSet,
  maxLen?: number,
  flags = FLAG_AA,
): { out: Buffer; n: number; q: Query } {
  const q = new Query();
  expect(parse(buf, q)).toBe(ParseResult.Ok);
  const out = Buffer.alloc(DNS_TCP_MAX_BYTES);
  const n = writeAnswer(out, buf, q, records, maxLen ?? udpResponseLimit(q), flags);
  return { out, n, q };
}

/** addrs lists `n` addresses from 10.32.0.1 up. */
function addrs(n: number): number[] {
  return Array.from({ length: n }, (_, i) => 0x0a200001 + i);
}

/** dotted renders an address as text. */
function dotted(a: number): string {
  return `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
}

const soa = encodeSoaRecord('weft.local', 30);

// ---- parseQuery ----

describe('parseQuery', () => {
  it('reads a plain A query', () => {
    const buf = query('c1.weft.local', QType.A, { id: 0xabcd });
    const q = new Query();
    expect(parse(buf, q)).toBe(ParseResult.Ok);
    expect(q.id).toBe(0xabcd);
    expect(q.opcode).toBe(0);
    expect(q.rd).toBe(true);
    expect(q.qtype).toBe(QType.A);
    expect(q.qclass).toBe(1);
    expect(q.name).toBe('c1.weft.local');
    expect(q.nameLen).toBe('c1.weft.local'.length);
    expect(q.nameEnd).toBe(12 + 15);
    expect(q.questionEnd).toBe(buf.length);
    expect(q.edns).toBe(false);
    expect(q.udpSize).toBe(512);
    expect(q.reason).toBe('');
  });

  it('lower-cases the name and hashes it as hashName does', () => {
    const q = new Query();
    expect(parse(query('C1.WeFt.LOCAL', QType.A), q)).toBe(ParseResult.Ok);
    expect(q.name).toBe('c1.weft.local');
    expect(q.nameHash).toBe(hashName('c1.weft.local'));
  });

  it('accepts digits, hyphens and underscores, and the root name', () => {
    const q = new Query();
    expect(parse(query('_http._tcp.a-1.weft.local', QType.A), q)).toBe(ParseResult.Ok);
    expect(q.name).toBe('_http._tcp.a-1.weft.local');
    expect(parse(rawMessage({}, [0], typeClass(QType.A)), q)).toBe(ParseResult.Ok);
    expect(q.name).toBe('');
    expect(q.nameLen).toBe(0);
  });

  it('reads the EDNS payload size, version and DO bit', () => {
    const q = new Query();
    expect(parse(query('c1.weft.local', QType.A, { edns: { size: 4096, dnssecOk: true } }), q)).toBe(ParseResult.Ok);
    expect(q.edns).toBe(true);
    expect(q.udpSize).toBe(4096);
    expect(q.dnssecOk).toBe(true);
    expect(q.ednsVersion).toBe(0);
  });

  it('treats an EDNS payload size below 512 as 512', () => {
    const q = new Query();
    expect(parse(query('c1.weft.local', QType.A, { edns: { size: 100 } }), q)).toBe(ParseResult.Ok);
    expect(q.udpSize).toBe(512);
  });

  it('accepts EDNS options that exactly fill the OPT record', () => {
    const q = new Query();
    expect(parse(query('c1.weft.local', QType.A, { edns: { ecs: '10.0.0.0/24' } }), q)).toBe(ParseResult.Ok);
    expect(q.edns).toBe(true);
  });

  it('accepts a name of exactly 255 bytes and 63-byte labels', () => {
    // 3 × (1 + 63) + (1 + 61) + root = 255
    const name = [...Array(3).fill('a'.repeat(63)), 'b'.repeat(61)] as string[];
    const q = new Query();
    expect(parse(rawMessage({}, wireName(name), typeClass(QType.A)), q)).toBe(ParseResult.Ok);
    expect(q.nameLen).toBe(253);
    expect(q.name).toBe(name.join('.'));
  });

  it('reuses one Query: a parse clears what the previous one set', () => {
    const q = new Query();
    expect(parse(query('A.weft.local', QType.A, { edns: { size: 4096, dnssecOk: true } }), q)).toBe(ParseResult.Ok);
    expect(q.name).toBe('a.weft.local');
    expect(parse(rawMessage({ qd: 0 }), q)).toBe(ParseResult.FormErr);
    expect(q.edns).toBe(false);
    expect(q.dnssecOk).toBe(false);
    expect(q.questionEnd).toBe(0);
    expect(q.name).toBe('');
    expect(parse(query('b.weft.local', QType.PTR), q)).toBe(ParseResult.Ok);
    expect(q.name).toBe('b.weft.local');
    expect(q.qtype).toBe(QType.PTR);
  });

  describe('drops without an answer', () => {
    it('drops every packet shorter than a header', () => {
      const full = query('c1.weft.local', QType.A);
      for (let len = 0; len < 12; len++) expect(parseQuery(full, len, new Query())).toBe(ParseResult.Drop);
    });

    it('drops responses (QR set), so two servers cannot loop', () => {
      const buf = query('c1.weft.local', QType.A);
      buf[2] = (buf[2] as number) | 0x80;
      const q = new Query();
      expect(parse(buf, q)).toBe(ParseResult.Drop);
      expect(q.reason).toBe('a response');
    });

    it('drops a query above the caller’s cap before reading it', () => {
      const buf = Buffer.concat([query('c1.weft.local', QType.A), Buffer.alloc(DNS_QUERY_MAX_BYTES)]);
      expect(parse(buf)).toBe(ParseResult.Drop);
      expect(parse(buf.subarray(0, 600), new Query(), 512)).toBe(ParseResult.Drop);
    });

    it('drops when len claims more bytes than the buffer has', () => {
      const buf = query('c1.weft.local', QType.A);
      expect(parseQuery(buf, buf.length + 1, new Query())).toBe(ParseResult.Drop);
    });
  });

  describe('answers FORMERR', () => {
    it('for every proper prefix of a valid query', () => {
      for (const full of [
        query('c1.weft.local', QType.A),
        query('c1.weft.local', QType.A, { edns: { size: 1232, ecs: '10.0.0.0/24' } }),
      ]) {
        for (let len = 12; len < full.length; len++) {
          const q = new Query();
          expect(parseQuery(full, len, q)).toBe(ParseResult.FormErr);
          expect(q.questionEnd).toBeLessThanOrEqual(len);
        }
        expect(parse(full)).toBe(ParseResult.Ok);
      }
    });

    it('for a question count other than 1', () => {
      const body = [wireName(['a']), typeClass(1)] as const;
      expect(parse(rawMessage({ qd: 0 }))).toBe(ParseResult.FormErr);
      expect(parse(rawMessage({ qd: 2 }, ...body, ...body))).toBe(ParseResult.FormErr);
      expect(parse(rawMessage({ qd: 0xffff }, ...body))).toBe(ParseResult.FormErr);
    });

    it('for all counts 0xFFFF', () => {
      expect(parse(rawMessage({ qd: 0xffff, an: 0xffff, ns: 0xffff, ar: 0xffff }))).toBe(ParseResult.FormErr);
      expect(parse(rawMessage({ qd: 0xffff, an: 0xffff, ns: 0xffff, ar: 0xffff }, Buffer.alloc(500, 0xff)))).toBe(
        ParseResult.FormErr,
      );
    });

    it('for answer or authority records in a query, echoing the question', () => {
      for (const h of [{ an: 1 }, { ns: 1 }, { an: 0xffff }]) {
        const q = new Query();
        expect(parse(rawMessage(h, wireName(['a']), typeClass(1)), q)).toBe(ParseResult.FormErr);
        expect(q.questionEnd).toBeGreaterThan(0);
      }
    });

    it('for two OPT records', () => {
      const buf = rawMessage({ ar: 2 }, wireName(['a']), typeClass(1), opt({}), opt({}));
      expect(parse(buf)).toBe(ParseResult.FormErr);
    });

    it('for a compression pointer in the question, including a pointer loop', () => {
      const q = new Query();
      expect(parse(rawMessage({}, [0xc0, 0x0c], typeClass(1)), q)).toBe(ParseResult.FormErr); // points at itself
      expect(q.reason).toBe('compression pointer in question');
      expect(parse(rawMessage({}, [1, 0x61, 0xc0, 0x0c], typeClass(1)))).toBe(ParseResult.FormErr);
      expect(parse(rawMessage({}, [1, 0x61, 0xc0, 0x0e], typeClass(1)))).toBe(ParseResult.FormErr);
    });

    it('for the reserved label types 01 and 10 (length bytes 64-191)', () => {
      for (const l of [64, 0x7f, 0x80, 0xbf]) {
        expect(parse(rawMessage({}, [l], Buffer.alloc(l, 0x61), [0], typeClass(1)))).toBe(ParseResult.FormErr);
      }
    });

    it('for a label holding a dot or a byte outside letters, digits, - and _', () => {
      for (const label of ['a.b', 'a b', 'a*', '*', 'a/b', 'a\0b', 'caf\xe9', 'a\x7f']) {
        const q = new Query();
        expect(parse(rawMessage({}, wireName([label, 'weft', 'local']), typeClass(1)), q)).toBe(ParseResult.FormErr);
        expect(q.reason).toBe('byte not allowed in a label');
      }
    });

    it('for a name over 255 bytes (a 300-byte name)', () => {
      const q = new Query();
      const name = wireName(Array(5).fill('x'.repeat(59)) as string[]); // 5 × 60 + 1 = 301 bytes
      expect(parse(rawMessage({}, name, typeClass(1)), q)).toBe(ParseResult.FormErr);
      expect(q.reason).toBe('name longer than 255');
      const over = wireName([...Array(3).fill('a'.repeat(63)), 'b'.repeat(62)] as string[]); // 256 bytes
      expect(parse(rawMessage({}, over, typeClass(1)))).toBe(ParseResult.FormErr);
    });

    it('for bytes after the question', () => {
      const q = new Query();
      expect(parse(Buffer.concat([query('c1.weft.local', 1), Buffer.from([0])]), q)).toBe(ParseResult.FormErr);
      expect(q.reason).toBe('bytes after the question');
      expect(q.questionEnd).toBeGreaterThan(0);
    });

    it('for a malformed OPT record', () => {
      const head = [wireName(['a']), typeClass(1)] as const;
      const cases = {
        'non-root owner': opt({ name: [1, 0x61, 0] }),
        'not OPT': opt({ type: QType.A, rdata: [1, 2, 3, 4] }),
        'rdlength too long': opt({ rdlen: 4 }),
        'rdlength too short': opt({ rdata: [0, 8, 0, 0], rdlen: 2 }),
        'truncated option header': opt({ rdata: [0, 8, 0] }),
        'option longer than rdata': opt({ rdata: [0, 8, 0, 9, 1, 2] }),
        'trailing byte': Buffer.concat([opt({}), Buffer.from([0])]),
      };
      for (const [what, record] of Object.entries(cases)) {
        const q = new Query();
        expect(parse(rawMessage({ ar: 1 }, ...head, record), q), what).toBe(ParseResult.FormErr);
        expect(q.edns, what).toBe(false);
      }
    });
  });

  it('answers NOTIMP for opcodes other than QUERY, UPDATE included, echoing the question', () => {
    for (const opcode of [1, 2, 4, 5, 15]) {
      const q = new Query();
      // An UPDATE has a zone section where a query has its question, and updates in the authority section.
      const buf = rawMessage({ flags: opcode << 11, ns: 1 }, wireName(['weft', 'local']), typeClass(QType.SOA));
      expect(parse(buf, q)).toBe(ParseResult.NotImp);
      expect(q.opcode).toBe(opcode);
      expect(q.questionEnd).toBe(buf.length);
    }
    expect(parse(rawMessage({ flags: 5 << 11, qd: 0 }))).toBe(ParseResult.NotImp);
  });

  it('answers BADVERS for EDNS version 1', () => {
    const q = new Query();
    expect(parse(query('c1.weft.local', QType.A, { edns: { version: 1 } }), q)).toBe(ParseResult.BadVers);
    expect(q.edns).toBe(true);
    expect(q.ednsVersion).toBe(1);
  });

  it('answers REFUSED for classes other than IN and ANY', () => {
    expect(parse(query('version.bind', QType.A, { cls: 3 }))).toBe(ParseResult.Refused); // CH
    expect(parse(query('c1.weft.local', QType.A, { cls: 4 }))).toBe(ParseResult.Refused); // HS
    expect(parse(query('c1.weft.local', QType.A, { cls: 255 }))).toBe(ParseResult.Ok);
  });
});

// ---- Fuzz ----

describe('parseQuery on random input', () => {
  const seeds = [
    query('c1.weft.local', QType.A),
    query('C7.Weft.Local', QType.AAAA, { edns: { size: 4096, dnssecOk: true } }),
    query('4.3.2.1.in-addr.arpa', QType.PTR, { edns: { size: 1232, ecs: '10.1.2.0/24' } }),
    rawMessage({ ar: 1 }, wireName(['a']), typeClass(1), opt({ rdata: [0, 10, 0, 2, 1, 2, 0, 3, 0, 0] })),
  ];

  /** check fails the test with the offending datagram; cheaper than expect() in a 50,000-step loop. */
  function check(ok: boolean, where: string, what: string): void {
    if (!ok) throw new Error(`${what} (${where})`);
  }

  /** fields snapshots every parsed field, to compare two parses. */
  function fields(q: Query): unknown[] {
    return [
      q.id,
      q.flags,
      q.opcode,
      q.rd,
      q.qtype,
      q.qclass,
      q.nameEnd,
      q.questionEnd,
      q.nameLen,
      q.nameHash,
      q.name,
      q.edns,
      q.udpSize,
      q.dnssecOk,
      q.ednsVersion,
      q.reason,
    ];
  }

  it('never throws, reads nothing past len, and every answer it writes decodes (50,000 datagrams)', () => {
    const rand = mulberry32(0x5eed);
    const q = new Query();
    const exact = new Query();
    const out = Buffer.alloc(DNS_TCP_MAX_BYTES);
    const records = encodeARecords(addrs(3), 30);
    const counts = new Map<number, number>();
    for (let i = 0; i < 50_000; i++) {
      let buf: Buffer;
      if (i % 2 === 0) {
        // Random bytes, mostly short; a header whose counts are small half of the time.
        buf = Buffer.alloc(Math.floor(rand() * (rand() < 0.9 ? 80 : 700)));
        for (let j = 0; j < buf.length; j++) buf[j] = Math.floor(rand() * 256);
        if (buf.length >= 12 && rand() < 0.5) {
          buf[2] = (buf[2] as number) & 0x07; // QR 0, opcode QUERY
          buf.writeUInt16BE(1, 4);
          buf.writeUInt32BE(0, 6);
          buf.writeUInt16BE(Math.floor(rand() * 3), 10);
        }
      } else {
        // A valid query with 1 to 4 bit flips, sometimes cut or extended.
        const seed = seeds[Math.floor(rand() * seeds.length)] as Buffer;
        buf = Buffer.from(seed);
        const flips = 1 + Math.floor(rand() * 4);
        for (let f = 0; f < flips; f++) {
          const bit = Math.floor(rand() * buf.length * 8);
          buf[bit >>> 3] = (buf[bit >>> 3] as number) ^ (1 << (bit & 7));
        }
        const cut = rand();
        if (cut < 0.1) buf = buf.subarray(0, Math.floor(rand() * buf.length));
        else if (cut < 0.15) buf = Buffer.concat([buf, Buffer.alloc(1 + Math.floor(rand() * 8), 0xff)]);
      }

      // The same bytes with junk after len must parse identically: proof nothing past len is read.
      const padded = Buffer.alloc(buf.length + 64);
      buf.copy(padded);
      for (let j = buf.length; j < padded.length; j++) padded[j] = Math.floor(rand() * 256);
      const exactBuf = Buffer.from(buf);
      const r = parseQuery(padded, buf.length, q);
      const where = `datagram ${i}: ${exactBuf.toString('hex')}`;
      check(parseQuery(exactBuf, exactBuf.length, exact) === r, where, 'result depends on bytes past len');
      const a = fields(exact);
      const b = fields(q);
      check(
        a.every((v, k) => Object.is(v, b[k])),
        where,
        'fields depend on bytes past len',
      );
      counts.set(r, (counts.get(r) ?? 0) + 1);
      check(q.questionEnd <= buf.length && q.nameEnd <= buf.length && q.nameLen <= 253, where, 'offset out of range');
      if (r === ParseResult.Drop) continue;
      check(buf.length >= 12, where, 'answered a datagram shorter than a header');

      if (r === ParseResult.Ok) {
        // dns2 must agree about the question we accepted.
        const p = Packet.parse(exactBuf);
        const question = p.questions[0];
        check(p.questions.length === 1 && question !== undefined, where, 'dns2 sees no question');
        check(
          question?.name.toLowerCase() === q.name && question.type === q.qtype,
          where,
          'dns2 reads another question',
        );
        const n = writeAnswer(out, exactBuf, q, records, udpResponseLimit(q), FLAG_AA);
        const resp = Packet.parse(Buffer.from(out.subarray(0, n)));
        check(resp.errors.length === 0 && resp.header.id === q.id, where, 'answer does not decode');
        check(resp.answers.length === 3, where, 'answer lost records');
      } else {
        const n = writeError(out, exactBuf, q, r, 0);
        const resp = Packet.parse(Buffer.from(out.subarray(0, n)));
        check(resp.errors.length === 0 && resp.header.id === q.id, where, 'error response does not decode');
        check(resp.header.qr === 1 && resp.header.rcode === r, where, 'error response has the wrong rcode');
      }
    }
    // The corpus reached every outcome.
    for (const r of Object.values(ParseResult)) expect(counts.get(r) ?? 0, `result ${r}`).toBeGreaterThan(0);
  });
});

// ---- Answers ----

describe('writeAnswer', () => {
  it('answers an A query with one record', () => {
    const buf = query('c1.weft.local', QType.A, { id: 0x4242 });
    const { out, n } = answer(buf, encodeARecords([0x0a200001], 30));
    const p = decode(out, n);
    expect(p.header.id).toBe(0x4242);
    expect(p.header.qr).toBe(1);
    expect(p.header.aa).toBe(1);
    expect(p.header.rd).toBe(1);
    expect(p.header.ra).toBe(0);
    expect(p.header.tc).toBe(0);
    expect(p.header.rcode).toBe(0);
    expect(p.questions).toMatchObject([{ name: 'c1.weft.local', type: QType.A, class: 1 }]);
    expect(p.answers).toMatchObject([
      { name: 'c1.weft.local', type: QType.A, class: 1, ttl: 30, address: '10.32.0.1' },
    ]);
    expect(p.authorities).toEqual([]);
    expect(p.additionals).toEqual([]);
    expect(n).toBe(buf.length + A_RECORD_LEN);
  });

  it('answers with three records', () => {
    const { out, n } = answer(query('c1.weft.local', QType.A), encodeARecords(addrs(3), 60));
    const p = decode(out, n);
    expect(p.answers.map((a) => a.address).sort()).toEqual(['10.32.0.1', '10.32.0.2', '10.32.0.3']);
    expect(p.answers.every((a) => a.ttl === 60 && a.name === 'c1.weft.local')).toBe(true);
  });

  it('shuffles A records: the order varies between answers, the set never does', () => {
    const buf = query('c1.weft.local', QType.A);
    const records = encodeARecords(addrs(3), 30);
    const before = Buffer.from(records.bytes);
    const q = new Query();
    expect(parse(buf, q)).toBe(ParseResult.Ok);
    const out = Buffer.alloc(512);
    const orders = new Set<string>();
    for (let i = 0; i < 600; i++) {
      const n = writeAnswer(out, buf, q, records, 512, FLAG_AA);
      const got = decode(out, n).answers.map((a) => a.address ?? '');
      expect([...got].sort()).toEqual(['10.32.0.1', '10.32.0.2', '10.32.0.3']);
      orders.add(got.join(','));
    }
    expect(orders.size).toBe(6); // every permutation of 3 shows up in 600 tries
    expect(records.bytes.equals(before)).toBe(true); // the cached records are never touched
  });

  it('shuffles evenly: each record leads about as often as the others', () => {
    const buf = query('c1.weft.local', QType.A);
    const records = encodeARecords(addrs(5), 30);
    const q = new Query();
    expect(parse(buf, q)).toBe(ParseResult.Ok);
    const out = Buffer.alloc(512);
    const first = new Map<number, number>();
    for (let i = 0; i < 10_000; i++) {
      writeAnswer(out, buf, q, records, 512, FLAG_AA);
      const a = out.readUInt32BE(q.questionEnd + 12);
      first.set(a, (first.get(a) ?? 0) + 1);
    }
    // Expected 2,000 each with a standard deviation of 40: the bounds are over 10 deviations wide.
    expect([...first.keys()].sort()).toEqual(addrs(5));
    for (const n of first.values()) expect(n).toBeGreaterThan(1600);
    for (const n of first.values()) expect(n).toBeLessThan(2400);
  });

  it('sets RA only when asked, and copies RD', () => {
    const records = encodeARecords([1], 30);
    const withRa = answer(query('c1.weft.local', QType.A), records, undefined, FLAG_AA | FLAG_RA);
    expect(decode(withRa.out, withRa.n).header.ra).toBe(1);
    const noRd = answer(query('c1.weft.local', QType.A, { rd: false }), records, undefined, 0);
    const h = decode(noRd.out, noRd.n).header;
    expect(h.rd).toBe(0);
    expect(h.ra).toBe(0);
    expect(h.aa).toBe(0);
  });

  it('copies the CD bit of the query', () => {
    const buf = query('c1.weft.local', QType.A);
    buf[3] = (buf[3] as number) | 0x10;
    const { out } = answer(buf, encodeARecords([1], 30));
    expect(flagsOf(out) & 0x10).toBe(0x10);
  });

  it('echoes EDNS: an OPT with our payload size, version 0 and the DO bit', () => {
    const { out, n } = answer(
      query('c1.weft.local', QType.A, { edns: { size: 4096, dnssecOk: true } }),
      encodeARecords([1], 30),
    );
    const p = decode(out, n);
    expect(p.header.arcount).toBe(1);
    expect(p.additionals).toMatchObject([
      { type: QType.OPT, class: EDNS_UDP_PAYLOAD_BYTES, version: 0, extendedRcode: 0, doFlag: true },
    ]);
    const plain = answer(query('c1.weft.local', QType.A, { edns: { size: 4096 } }), encodeARecords([1], 30));
    expect(decode(plain.out, plain.n).additionals).toMatchObject([{ type: QType.OPT, doFlag: false }]);
  });

  it('keeps the question’s case in the echoed question and the answer, matching any case', () => {
    const map = new NameMap<RecordSet>();
    map.set('c1.weft.local', encodeARecords([0x0a200001], 30));
    const buf = query('C1.WeFt.LOCAL', QType.A);
    const q = new Query();
    expect(parse(buf, q)).toBe(ParseResult.Ok);
    const records = map.lookup(q);
    expect(records).toBeDefined();
    const out = Buffer.alloc(512);
    const p = decode(out, writeAnswer(out, buf, q, records as RecordSet, 512, FLAG_AA));
    expect(p.questions[0]?.name).toBe('C1.WeFt.LOCAL');
    expect(p.answers[0]?.name).toBe('C1.WeFt.LOCAL');
    expect(p.answers[0]?.address).toBe('10.32.0.1');
  });

  describe('truncation', () => {
    const forty = encodeARecords(addrs(40), 30); // 640 bytes of answers

    it('sets TC for 40 A records without EDNS (over 512 bytes)', () => {
      const buf = query('c1.weft.local', QType.A);
      const { out, n, q } = answer(buf, forty);
      expect(udpResponseLimit(q)).toBe(512);
      const p = decode(out, n);
      expect(p.header.tc).toBe(1);
      expect(p.header.rcode).toBe(0);
      expect(p.answers).toEqual([]);
      expect(p.questions).toMatchObject([{ name: 'c1.weft.local', type: QType.A }]);
      expect(n).toBe(buf.length);
    });

    it('fits 40 A records with EDNS 4096, capped at 1232', () => {
      const { out, n, q } = answer(query('c1.weft.local', QType.A, { edns: { size: 4096 } }), forty);
      expect(udpResponseLimit(q)).toBe(1232);
      const p = decode(out, n);
      expect(p.header.tc).toBe(0);
      expect(p.answers.length).toBe(40);
      expect(p.answers.map((a) => a.address).sort()).toEqual(addrs(40).map(dotted).sort());
      expect(p.additionals).toMatchObject([{ type: QType.OPT, class: 1232 }]);
    });

    it('still sets TC with EDNS 4096 when the answer exceeds the 1232 cap, keeping the OPT', () => {
      const eighty = encodeARecords(addrs(80), 30); // 1280 bytes of answers
      const buf = query('c1.weft.local', QType.A, { edns: { size: 4096 } });
      const { out, n, q } = answer(buf, eighty);
      const p = decode(out, n);
      expect(p.header.tc).toBe(1);
      expect(p.answers).toEqual([]);
      expect(p.additionals).toMatchObject([{ type: QType.OPT, class: 1232 }]);
      // A caller that raises the cap, or answers over TCP, sends it all.
      expect(udpResponseLimit(q, 4096)).toBe(4096);
      const tcp = answer(buf, eighty, DNS_TCP_MAX_BYTES);
      expect(decode(tcp.out, tcp.n).answers.length).toBe(80);
    });

    it('uses the client’s smaller EDNS size', () => {
      const { out, n, q } = answer(query('c1.weft.local', QType.A, { edns: { size: 600 } }), forty);
      expect(udpResponseLimit(q)).toBe(600);
      expect(decode(out, n).header.tc).toBe(1);
    });

    it('never writes past the output buffer', () => {
      const buf = query('c1.weft.local', QType.A);
      const q = new Query();
      expect(parse(buf, q)).toBe(ParseResult.Ok);
      const backing = Buffer.alloc(200, 0xaa);
      const out = backing.subarray(0, 100);
      const n = writeAnswer(out, buf, q, forty, DNS_TCP_MAX_BYTES, FLAG_AA);
      expect(n).toBe(buf.length);
      expect(decode(out, n).header.tc).toBe(1);
      expect(backing.subarray(100).every((b) => b === 0xaa)).toBe(true);
    });
  });

  it('answers in place, in the buffer the query arrived in', () => {
    const q0 = query('c1.weft.local', QType.A, { id: 7, edns: { size: 1232 } });
    const buf = Buffer.alloc(1232);
    q0.copy(buf);
    const q = new Query();
    expect(parseQuery(buf, q0.length, q)).toBe(ParseResult.Ok);
    const n = writeAnswer(buf, buf, q, encodeARecords(addrs(3), 30), udpResponseLimit(q), FLAG_AA);
    const p = decode(buf, n);
    expect(p.header.id).toBe(7);
    expect(p.questions).toMatchObject([{ name: 'c1.weft.local' }]);
    expect(p.answers.length).toBe(3);
    expect(p.additionals).toMatchObject([{ type: QType.OPT }]);
  });
});

describe('PTR', () => {
  it('ptrNameToIPv4 reads d.c.b.a.in-addr.arpa as a.b.c.d', () => {
    expect(ptrNameToIPv4('4.3.2.1.in-addr.arpa')).toBe(0x01020304);
    expect(ptrNameToIPv4('1.0.32.10.in-addr.arpa')).toBe(0x0a200001);
    expect(ptrNameToIPv4('0.0.0.0.in-addr.arpa')).toBe(0);
    expect(ptrNameToIPv4('255.255.255.255.in-addr.arpa')).toBe(0xffffffff);
    expect(ptrNameToIPv4('4.3.2.1.IN-ADDR.ARPA.')).toBe(0x01020304);
  });

  it('ptrNameToIPv4 refuses anything but four canonical octets under in-addr.arpa', () => {
    for (const name of [
      '',
      'in-addr.arpa',
      '3.2.1.in-addr.arpa',
      '5.4.3.2.1.in-addr.arpa',
      '256.3.2.1.in-addr.arpa',
      '1000.3.2.1.in-addr.arpa',
      '04.3.2.1.in-addr.arpa',
      '4..2.1.in-addr.arpa',
      '.4.3.2.1.in-addr.arpa',
      'a.3.2.1.in-addr.arpa',
      '4.3.2.1.ip6.arpa',
      '4.3.2.1in-addr.arpa',
      '4.3.2.1.in-addr.arpa.com',
      '4.3.2.1',
      'c1.weft.local',
    ]) {
      expect(ptrNameToIPv4(name), name).toBeUndefined();
    }
  });

  it('ipv4ToPtrName and ptrNameToIPv4 are inverses', () => {
    const rand = mulberry32(1);
    for (const a of [
      0,
      1,
      0x0a200001,
      0x7f000001,
      0xffffffff,
      ...Array.from({ length: 200 }, () => rand() * 2 ** 32),
    ]) {
      const addr = Math.floor(a);
      expect(ptrNameToIPv4(ipv4ToPtrName(addr))).toBe(addr);
    }
    expect(ipv4ToPtrName(0x0a200001)).toBe('1.0.32.10.in-addr.arpa');
  });

  it('answers a PTR query with the host names of the address', () => {
    const buf = query('1.0.32.10.In-Addr.Arpa', QType.PTR);
    const q = new Query();
    expect(parse(buf, q)).toBe(ParseResult.Ok);
    const addr = ptrNameToIPv4(q.name);
    expect(addr).toBe(0x0a200001);
    const out = Buffer.alloc(512);
    const records = encodePtrRecords(['c1.weft.local', 'web.weft.local'], 30);
    const p = decode(out, writeAnswer(out, buf, q, records, udpResponseLimit(q), FLAG_AA));
    expect(p.header.aa).toBe(1);
    expect(p.answers).toMatchObject([
      { name: '1.0.32.10.In-Addr.Arpa', type: QType.PTR, ttl: 30, domain: 'c1.weft.local' },
      { name: '1.0.32.10.In-Addr.Arpa', type: QType.PTR, ttl: 30, domain: 'web.weft.local' },
    ]);
  });
});

describe('writeNegative', () => {
  it('answers NXDOMAIN with AA and the zone’s SOA, whose minimum is the negative TTL', () => {
    const buf = query('nope.weft.local', QType.A, { id: 99 });
    const q = new Query();
    expect(parse(buf, q)).toBe(ParseResult.Ok);
    const out = Buffer.alloc(512);
    const p = decode(out, writeNegative(out, buf, q, Rcode.NxDomain, soa, udpResponseLimit(q), FLAG_AA));
    expect(p.header.id).toBe(99);
    expect(p.header.rcode).toBe(Rcode.NxDomain);
    expect(p.header.aa).toBe(1);
    expect(p.answers).toEqual([]);
    expect(p.questions).toMatchObject([{ name: 'nope.weft.local' }]);
    expect(p.authorities).toMatchObject([
      {
        name: 'weft.local',
        type: QType.SOA,
        ttl: 30,
        primary: 'ns.weft.local',
        admin: 'hostmaster.weft.local',
        serial: 1,
        minimum: 30,
      },
    ]);
  });

  it('answers NODATA (NOERROR, no answers, SOA) for another type of an existing name', () => {
    const buf = query('c1.weft.local', QType.AAAA, { edns: { size: 1232 } });
    const q = new Query();
    expect(parse(buf, q)).toBe(ParseResult.Ok);
    const out = Buffer.alloc(512);
    const p = decode(out, writeNegative(out, buf, q, Rcode.NoError, soa, udpResponseLimit(q), FLAG_AA));
    expect(p.header.rcode).toBe(0);
    expect(p.header.ancount).toBe(0);
    expect(p.header.nscount).toBe(1);
    expect(p.authorities).toMatchObject([{ type: QType.SOA, minimum: 30 }]);
    expect(p.additionals).toMatchObject([{ type: QType.OPT }]);
  });

  it('sets TC when even the SOA does not fit', () => {
    const buf = query('nope.weft.local', QType.A);
    const q = new Query();
    expect(parse(buf, q)).toBe(ParseResult.Ok);
    const out = Buffer.alloc(buf.length + 10);
    const n = writeNegative(out, buf, q, Rcode.NxDomain, soa, 512, FLAG_AA);
    const p = decode(out, n);
    expect(p.header.tc).toBe(1);
    expect(p.header.rcode).toBe(0);
    expect(p.authorities).toEqual([]);
  });
});

describe('writeError', () => {
  /** respond parses `buf` and writes the error response its parse result calls for. */
  function respond(buf: Buffer, flags = 0): Packet {
    const q = new Query();
    const r = parse(buf, q);
    expect(r).not.toBe(ParseResult.Drop);
    expect(r).not.toBe(ParseResult.Ok);
    const out = Buffer.alloc(512);
    return decode(out, writeError(out, buf, q, r, flags));
  }

  it('answers FORMERR with only the id when the question did not parse', () => {
    const p = respond(rawMessage({ id: 0x1111, qd: 0xffff, an: 0xffff, ns: 0xffff, ar: 0xffff }));
    expect(p.header.id).toBe(0x1111);
    expect(p.header.rcode).toBe(Rcode.FormErr);
    expect(p.header.qdcount).toBe(0);
    expect(p.header.aa).toBe(0);
  });

  it('answers FORMERR echoing a question that parsed', () => {
    const p = respond(Buffer.concat([query('Bad.weft.local', 1, { id: 3 }), Buffer.from([1, 2])]));
    expect(p.header.rcode).toBe(Rcode.FormErr);
    expect(p.questions).toMatchObject([{ name: 'Bad.weft.local', type: 1 }]);
  });

  it('answers NOTIMP to an UPDATE with its opcode and id', () => {
    const buf = rawMessage({ id: 0x2222, flags: 5 << 11, ns: 1 }, wireName(['weft', 'local']), typeClass(QType.SOA));
    const p = respond(buf);
    expect(p.header.id).toBe(0x2222);
    expect(p.header.opcode).toBe(5);
    expect(p.header.rcode).toBe(Rcode.NotImp);
    expect(p.questions).toMatchObject([{ name: 'weft.local', type: QType.SOA }]);
  });

  it('answers BADVERS with an OPT carrying the upper rcode bits and version 0', () => {
    const p = respond(query('c1.weft.local', 1, { edns: { version: 1, dnssecOk: true } }));
    expect(p.header.rcode).toBe(Rcode.BadVers); // dns2 merges the OPT's upper bits
    expect(p.additionals).toMatchObject([
      { type: QType.OPT, version: 0, extendedRcode: 1, class: EDNS_UDP_PAYLOAD_BYTES, doFlag: true },
    ]);
  });

  it('answers REFUSED for another class, echoing EDNS and RA', () => {
    const p = respond(query('version.bind', 16, { cls: 3, edns: { size: 1232 } }), FLAG_RA);
    expect(p.header.rcode).toBe(Rcode.Refused);
    expect(p.header.ra).toBe(1);
    expect(p.questions).toMatchObject([{ name: 'version.bind', class: 3 }]);
    expect(p.additionals).toMatchObject([{ type: QType.OPT }]);
  });

  it('answers SERVFAIL for a query that parsed', () => {
    const buf = query('c1.weft.local', 1, { id: 5 });
    const q = new Query();
    expect(parse(buf, q)).toBe(ParseResult.Ok);
    const out = Buffer.alloc(512);
    const p = decode(out, writeError(out, buf, q, Rcode.ServFail, FLAG_RA));
    expect(p.header.rcode).toBe(Rcode.ServFail);
    expect(p.questions).toMatchObject([{ name: 'c1.weft.local' }]);
  });
});

// ---- Names ----

describe('names', () => {
  it('normalizeName lower-cases and strips one trailing dot', () => {
    expect(normalizeName('Weft.Local.')).toBe('weft.local');
    expect(normalizeName('.')).toBe('');
    expect(normalizeName('')).toBe('');
  });

  it('isInDomain matches the domain and names below it, on label boundaries', () => {
    expect(isInDomain('weft.local', 'weft.local')).toBe(true);
    expect(isInDomain('c1.weft.local', 'weft.local')).toBe(true);
    expect(isInDomain('a.b.weft.local', 'weft.local')).toBe(true);
    expect(isInDomain('xweft.local', 'weft.local')).toBe(false);
    expect(isInDomain('weft.local.com', 'weft.local')).toBe(false);
    expect(isInDomain('local', 'weft.local')).toBe(false);
    expect(isInDomain('anything', '')).toBe(true);
  });

  it('isQueryInDomain agrees with isInDomain on the parsed name', () => {
    const q = new Query();
    for (const name of ['weft.local', 'C1.Weft.Local', 'xweft.local', 'local', 'weft.local.com', 'a.b.weft.local']) {
      expect(parse(query(name, 1), q)).toBe(ParseResult.Ok);
      for (const domain of ['weft.local', 'local', '', 'b.weft.local']) {
        expect(isQueryInDomain(q, domain), `${name} in ${domain}`).toBe(isInDomain(q.name, domain));
      }
    }
  });

  it('encodeName writes labels and the root byte, keeping case', () => {
    expect([...encodeName('Ab.c')]).toEqual([2, 0x41, 0x62, 1, 0x63, 0]);
    expect([...encodeName('ab.c.')]).toEqual([2, 0x61, 0x62, 1, 0x63, 0]);
    expect([...encodeName('')]).toEqual([0]);
    expect([...encodeName('.')]).toEqual([0]);
  });

  it('encodeName refuses empty and long labels, long names and odd characters', () => {
    for (const bad of ['a..b', '.a', 'x'.repeat(64), Array(5).fill('x'.repeat(60)).join('.'), 'a b', 'caf\u00e9']) {
      expect(() => encodeName(bad), bad).toThrow(InputError);
    }
  });
});

describe('encoded records', () => {
  it('encodeARecords writes 16-byte records pointing at the question name', () => {
    const r = encodeARecords([0x0a200001, 0xc0a80101], 30);
    expect(r.count).toBe(2);
    expect(r.stride).toBe(A_RECORD_LEN);
    expect([...r.bytes.subarray(0, 16)]).toEqual([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 32, 0, 1]);
  });

  it('refuses bad addresses and TTLs, and clamps TTLs to 2^31 - 1', () => {
    expect(() => encodeARecords([-1], 30)).toThrow(InputError);
    expect(() => encodeARecords([2 ** 32], 30)).toThrow(InputError);
    expect(() => encodeARecords([1.5], 30)).toThrow(InputError);
    expect(() => encodeARecords([1], -1)).toThrow(InputError);
    expect(() => encodeARecords([1], Number.NaN)).toThrow(InputError);
    expect(encodeARecords([1], 2 ** 32 - 1).bytes.readUInt32BE(6)).toBe(0x7fffffff);
  });

  it('encodeSoaRecord normalizes the zone', () => {
    const buf = query('x.weft.local', 1);
    const q = new Query();
    expect(parse(buf, q)).toBe(ParseResult.Ok);
    const out = Buffer.alloc(512);
    const zone = encodeSoaRecord('Weft.Local.', 5, 42);
    const p = decode(out, writeNegative(out, buf, q, Rcode.NxDomain, zone, 512, FLAG_AA));
    expect(p.authorities).toMatchObject([{ name: 'weft.local', serial: 42, minimum: 5, ttl: 5 }]);
  });
});

// ---- NameMap ----

describe('NameMap', () => {
  it('finds a parsed query’s name in any case, and misses names it does not hold', () => {
    const m = new NameMap<number>();
    for (let i = 0; i < 1000; i++) m.set(`c${i}.weft.local`, i);
    expect(m.size).toBe(1000);
    const q = new Query();
    for (const i of [0, 1, 99, 999]) {
      expect(parse(query(`C${i}.WEFT.local`, 1), q)).toBe(ParseResult.Ok);
      expect(m.lookup(q)).toBe(i);
    }
    for (const name of ['c1000.weft.local', 'c1.weft', 'weft.local', 'c1.weft.local.x']) {
      expect(parse(query(name, 1), q)).toBe(ParseResult.Ok);
      expect(m.lookup(q), name).toBeUndefined();
    }
  });

  it('normalizes names on set, get and delete, and replaces values', () => {
    const m = new NameMap<string>();
    m.set('Web.Weft.Local.', 'a');
    m.set('web.weft.local', 'b');
    expect(m.size).toBe(1);
    expect(m.get('WEB.weft.local')).toBe('b');
    expect([...m.entries()]).toEqual([['web.weft.local', 'b']]);
    expect(m.delete('web.WEFT.local.')).toBe(true);
    expect(m.delete('web.weft.local')).toBe(false);
    expect(m.size).toBe(0);
    m.set('x', 'y');
    m.clear();
    expect(m.get('x')).toBeUndefined();
    expect(m.size).toBe(0);
  });

  it('keeps names whose hashes collide apart', () => {
    // Found by search: two names with the same 32-bit FNV-1a hash.
    const a = 'h84337.weft.local';
    const b = 'h1340180.weft.local';
    expect(hashName(a)).toBe(hashName(b));
    const m = new NameMap<string>();
    m.set(a, 'A');
    m.set(b, 'B');
    m.set('c.weft.local', 'C');
    const q = new Query();
    const lookup = (name: string) => {
      expect(parse(query(name, 1), q)).toBe(ParseResult.Ok);
      return m.lookup(q);
    };
    expect([lookup(a), lookup(b), m.get(a), m.get(b)]).toEqual(['A', 'B', 'A', 'B']);
    expect(m.delete(b)).toBe(true); // the head of the chain
    expect([lookup(a), lookup(b)]).toEqual(['A', undefined]);
    m.set(b, 'B2');
    expect(m.delete(a)).toBe(true); // now the tail of the chain
    expect([lookup(a), lookup(b), lookup('c.weft.local')]).toEqual([undefined, 'B2', 'C']);
    expect(m.size).toBe(2);
  });
});

// ---- Header fields and TCP framing (wire.ts) ----

describe('header fields', () => {
  it('reads the flags word, writes ids at an offset, copies ids', () => {
    const m = query('a.weft.local', QType.A, { id: 0xabcd });
    expect(readFlags(m)).toBe(FLAG_RD);
    writeId(m, 0x1234);
    expect(m.readUInt16BE(0)).toBe(0x1234);
    const framed = frameTcp(m);
    writeId(framed, 0xfedc, 2);
    expect(framed.readUInt16BE(2)).toBe(0xfedc);
    expect(framed.readUInt16BE(0)).toBe(m.length);
    const other = Buffer.alloc(12);
    copyId(m, other);
    expect(other.readUInt16BE(0)).toBe(0x1234);
  });
});

describe('TCP framing', () => {
  it('frames a message with its 2-byte length and reads the length back', () => {
    const m = query('a.weft.local', QType.A);
    const framed = frameTcp(m);
    expect(framed.length).toBe(2 + m.length);
    expect(readTcpLength(framed)).toBe(m.length);
    expect(framed.subarray(2)).toEqual(m);
    const big = Buffer.alloc(4);
    writeTcpLength(big, DNS_TCP_MAX_BYTES, 2);
    expect(readTcpLength(big, 2)).toBe(DNS_TCP_MAX_BYTES);
  });

  it('says -1 while fewer than 2 length bytes are there', () => {
    expect(readTcpLength(Buffer.alloc(0))).toBe(-1);
    expect(readTcpLength(Buffer.from([0]))).toBe(-1);
    expect(readTcpLength(Buffer.from([0, 0, 7]), 2)).toBe(-1);
    expect(readTcpLength(Buffer.from([0, 0]))).toBe(0);
  });
});

// ---- truncateReply (response.ts) ----

describe('truncateReply', () => {
  it('keeps header and question, sets TC and zeroes the record counts, in a copy', () => {
    const q = query('db.weft.local', QType.A, { edns: {} });
    const { out, n } = answer(q, encodeARecords(addrs(3), 5));
    const reply = Buffer.from(out.subarray(0, n));
    const questionEnd = 12 + encodeName('db.weft.local').length + 4;
    const t = truncateReply(reply, questionEnd);
    expect(t.length).toBe(questionEnd);
    expect(flagsOf(t)).toBe(flagsOf(reply) | FLAG_TC);
    expect(flagsOf(t) & FLAG_QR).toBe(FLAG_QR);
    const p = decode(t, t.length);
    expect(p.questions).toHaveLength(1);
    expect([p.answers.length, p.authorities.length, p.additionals.length]).toEqual([0, 0, 0]);
    expect(reply.readUInt16BE(6)).toBe(3); // the reply itself is left alone
  });

  it('never reads past a reply shorter than the question end it is given', () => {
    const reply = Buffer.from(query('db.weft.local', QType.A));
    expect(truncateReply(reply, reply.length + 50).length).toBe(reply.length);
  });
});
