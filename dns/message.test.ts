import { Packet } from 'dns2';
import { describe, expect, it } from 'vitest';
import {
  checkReply,
  copyStoredReply,
  type ForwardedQuery,
  readForwardedQuery,
  readQuestion,
  readRecords,
} from './message.js';
import { type Header, rawMessage, wireName } from './testing/messages.js';
import { FLAG_QR, FLAG_RD, FLAG_TC, QType, Rcode } from './wire.js';

// ---- Helpers: messages built by hand, so that tests can make every malformation ----

/** name encodes a dotted name uncompressed. */
function name(dotted: string): Buffer {
  return wireName(dotted.split('.').filter((l) => l !== ''));
}

/** question is QNAME, QTYPE and QCLASS IN. */
function question(dotted: string, type: number = QType.A): number[] {
  return [...name(dotted), type >>> 8, type & 0xff, 0, 1];
}

/** rr encodes a record: owner bytes, type, class (or OPT's payload size), 32-bit TTL field, RDATA. */
function rr(
  owner: Uint8Array | readonly number[],
  type: number,
  ttl: number,
  rdata: readonly number[],
  klass = 1,
): Buffer {
  const b = Buffer.alloc(10 + rdata.length);
  b.writeUInt16BE(type, 0);
  b.writeUInt16BE(klass, 2);
  b.writeUInt32BE(ttl >>> 0, 4);
  b.writeUInt16BE(rdata.length, 8);
  Buffer.from(rdata).copy(b, 10);
  return Buffer.concat([Buffer.from(owner), b]);
}

/** PTR_Q is a pointer to the question's name at offset 12. */
const PTR_Q = [0xc0, 0x0c];

/** soaRdata is an SOA's RDATA: mname, rname, then serial, refresh, retry, expire and minimum. */
function soaRdata(minimum: number): number[] {
  const t = Buffer.alloc(20);
  t.writeUInt32BE(1, 0);
  t.writeUInt32BE(3600, 4);
  t.writeUInt32BE(600, 8);
  t.writeUInt32BE(86400, 12);
  t.writeUInt32BE(minimum, 16);
  return [...name('ns.example.com'), ...name('hostmaster.example.com'), ...t];
}

/** opt is an OPT record: root owner, the UDP size in CLASS, extended RCODE and DO in the TTL field. */
function opt(extendedRcode = 0, dnssecOk = false): Buffer {
  return rr([0], QType.OPT, ((extendedRcode << 24) | (dnssecOk ? 0x8000 : 0)) >>> 0, [], 1232);
}

function forwarded(query: Buffer): ForwardedQuery {
  const q = readForwardedQuery(query);
  if (q === undefined) throw new Error('test query did not parse');
  return q;
}

// ---- readQuestion ----

describe('readQuestion', () => {
  it('reads the one question: its case-folded key, type, class and end', () => {
    const m = rawMessage({}, question('WWW.Example.com', QType.AAAA));
    expect(readQuestion(m)).toEqual({
      key: '\x03www\x07example\x03com',
      type: QType.AAAA,
      klass: 1,
      end: m.length,
    });
  });

  it('refuses a header alone, no question or two, and a question cut short', () => {
    expect(readQuestion(Buffer.alloc(11))).toBeUndefined();
    expect(readQuestion(rawMessage({ qd: 0 }))).toBeUndefined();
    expect(readQuestion(rawMessage({ qd: 2 }, question('a.example'), question('b.example')))).toBeUndefined();
    const whole = rawMessage({}, question('a.example'));
    for (let n = 12; n < whole.length; n++) expect(readQuestion(whole.subarray(0, n)), `${n} bytes`).toBeUndefined();
  });
});

// ---- readRecords ----

describe('readRecords', () => {
  it('finds every TTL but OPT’s, the smallest answer TTL, the SOA and the EDNS flags', () => {
    const q = question('www.example.com');
    const m = rawMessage(
      { flags: FLAG_QR, an: 2, ns: 1, ar: 1 },
      q,
      rr(PTR_Q, QType.A, 300, [192, 0, 2, 1]),
      rr(PTR_Q, QType.A, 120, [192, 0, 2, 2]),
      rr(name('example.com'), QType.SOA, 900, soaRdata(60)),
      opt(1, true),
    );
    const r = readRecords(m, 12 + q.length);
    expect(r).toMatchObject({
      answerCount: 2,
      answerMinTtl: 120,
      soa: { ttl: 900, minimum: 60 },
      ttls: [300, 120, 900],
      edns: 2,
      extendedRcode: 1,
    });
    expect(r?.ttlOffsets.map((o) => m.readUInt32BE(o))).toEqual([300, 120, 900]);
  });

  it('reads a TTL with the top bit set as 0 (RFC 2181 §8), and ignores bytes after the last record', () => {
    const q = question('www.example.com');
    const m = rawMessage({ flags: FLAG_QR, an: 1 }, q, rr(PTR_Q, QType.A, 0x80000000, [192, 0, 2, 1]), [0xde, 0xad]);
    expect(readRecords(m, 12 + q.length)).toMatchObject({ answerMinTtl: 0, ttls: [0], edns: 0, soa: undefined });
  });

  it('refuses counts beyond the records present, records cut anywhere, and RDLENGTH past the end', () => {
    const q = question('www.example.com');
    const start = 12 + q.length;
    expect(readRecords(rawMessage({ an: 1 }, q), start)).toBeUndefined();
    const whole = rawMessage({ an: 1 }, q, rr(PTR_Q, QType.A, 300, [192, 0, 2, 1]));
    for (let n = start; n < whole.length; n++) {
      expect(readRecords(whole.subarray(0, n), start), `${n} bytes`).toBeUndefined();
    }
    const long = Buffer.from(whole);
    long.writeUInt16BE(5, whole.length - 6); // RDLENGTH 5, 4 bytes of RDATA
    expect(readRecords(long, start)).toBeUndefined();
  });

  it('refuses an OPT outside the additional section, and a second OPT', () => {
    const q = question('www.example.com');
    const start = 12 + q.length;
    expect(readRecords(rawMessage({ an: 1 }, q, opt()), start)).toBeUndefined();
    expect(readRecords(rawMessage({ ns: 1 }, q, opt()), start)).toBeUndefined();
    expect(readRecords(rawMessage({ ar: 2 }, q, opt(), opt()), start)).toBeUndefined();
    expect(readRecords(rawMessage({ ar: 1 }, q, opt()), start)?.edns).toBe(1);
  });

  it('refuses an authority SOA whose RDATA is too short for its names and fields', () => {
    const q = question('nx.example.com');
    const start = 12 + q.length;
    const full = soaRdata(60);
    expect(readRecords(rawMessage({ ns: 1 }, q, rr(name('example.com'), QType.SOA, 900, full)), start)).toBeDefined();
    for (const cut of [1, 19, full.length - 20, full.length - 1]) {
      const m = rawMessage({ ns: 1 }, q, rr(name('example.com'), QType.SOA, 900, full.slice(0, cut)));
      expect(readRecords(m, start), `${cut} bytes of RDATA`).toBeUndefined();
    }
  });

  it('takes only the first SOA of the authority section, and none from the answer section', () => {
    const q = question('nx.example.com');
    const m = rawMessage(
      { an: 1, ns: 2 },
      q,
      rr(name('example.com'), QType.SOA, 50, soaRdata(5)),
      rr(name('example.com'), QType.SOA, 900, soaRdata(60)),
      rr(name('example.com'), QType.SOA, 10, soaRdata(1)),
    );
    expect(readRecords(m, 12 + q.length)?.soa).toEqual({ ttl: 900, minimum: 60 });
  });
});

// ---- readForwardedQuery ----

describe('readForwardedQuery', () => {
  it('accepts a standard query and keys the cache by name (any case), type, class and EDNS/DO', () => {
    const plain = readForwardedQuery(rawMessage({ flags: FLAG_RD }, question('WWW.example.com')));
    expect(plain?.question.type).toBe(QType.A);
    expect(plain?.edns).toBe(0);
    const lower = readForwardedQuery(rawMessage({}, question('www.example.com')));
    expect(lower?.cacheKey).toBe(plain?.cacheKey);
    const edns = readForwardedQuery(rawMessage({ ar: 1 }, question('www.example.com'), opt()));
    const dnssec = readForwardedQuery(rawMessage({ ar: 1 }, question('www.example.com'), opt(0, true)));
    const aaaa = readForwardedQuery(rawMessage({}, question('www.example.com', QType.AAAA)));
    const keys = new Set([plain?.cacheKey, edns?.cacheKey, dnssec?.cacheKey, aaaa?.cacheKey]);
    expect(keys.size).toBe(4);
  });

  it('refuses responses, other opcodes, bad questions, bad records and messages over 65535 bytes', () => {
    const q = question('www.example.com');
    expect(readForwardedQuery(rawMessage({ flags: FLAG_QR }, q))).toBeUndefined();
    expect(readForwardedQuery(rawMessage({ flags: 4 << 11 }, q))).toBeUndefined(); // NOTIFY
    expect(readForwardedQuery(rawMessage({ qd: 0 }))).toBeUndefined();
    expect(readForwardedQuery(rawMessage({ ar: 1 }, q))).toBeUndefined();
    expect(readForwardedQuery(Buffer.alloc(11))).toBeUndefined();
    const big = Buffer.concat([rawMessage({}, q), Buffer.alloc(65536 - 12 - q.length)]);
    expect(big.length).toBe(65536);
    expect(readForwardedQuery(big)).toBeUndefined();
    expect(readForwardedQuery(big.subarray(0, 65535))).toBeDefined(); // trailing bytes are not records
  });

  it('agrees with an independent encoder (dns2) on a query it writes', () => {
    const p = new Packet();
    p.header.id = 7;
    p.header.rd = 1;
    p.questions.push(new Packet.Question('db.example.org', Packet.TYPE.MX, Packet.CLASS.IN));
    p.additionals.push(Packet.Resource.EDNS([]));
    const q = readForwardedQuery(p.toBuffer());
    expect(q?.question).toMatchObject({ key: '\x02db\x07example\x03org', type: Packet.TYPE.MX, klass: 1 });
    expect(q?.edns).toBe(1);
  });
});

// ---- checkReply ----

describe('checkReply', () => {
  const query = rawMessage({ id: 0x1111, flags: FLAG_RD }, question('www.example.com'));
  const q = forwarded(query);
  const answer = rr(PTR_Q, QType.A, 300, [192, 0, 2, 1]);

  it('accepts our id, QR and question in any case, with the full rcode from header and OPT', () => {
    const m = rawMessage(
      { id: 0x9999, flags: FLAG_QR | Rcode.NxDomain, an: 1, ar: 1 },
      question('WWW.EXAMPLE.com'),
      answer,
      opt(1),
    );
    const v = checkReply(m, 0x9999, query, q);
    expect(v.kind).toBe('ok');
    if (v.kind !== 'ok') return;
    expect(v.reply).toMatchObject({ rcode: (1 << 4) | Rcode.NxDomain, truncated: false, intact: true });
    expect(v.reply.message).toBe(m);
  });

  it('ignores what is not ours: another id, no QR, another opcode, name, type or class, a header alone', () => {
    const ours = (h: Header, qs: readonly number[] = question('www.example.com')) =>
      checkReply(rawMessage({ id: 0x9999, flags: FLAG_QR, ...h }, qs), 0x9999, query, q).kind;
    expect(ours({})).toBe('ok');
    expect(ours({ id: 0x9998 })).toBe('mismatch');
    expect(ours({ flags: 0 })).toBe('mismatch');
    expect(ours({ flags: FLAG_QR | (2 << 11) })).toBe('mismatch');
    expect(ours({}, question('www.example.net'))).toBe('mismatch');
    expect(ours({}, question('www.example.com', QType.AAAA))).toBe('mismatch');
    const chaos = question('www.example.com');
    chaos[chaos.length - 1] = 3;
    expect(ours({}, chaos)).toBe('mismatch');
    expect(ours({ qd: 0 }, [])).toBe('mismatch');
    expect(checkReply(Buffer.alloc(11), 0, query, q).kind).toBe('mismatch');
  });

  it('calls a reply with records that do not parse malformed, unless TC is set', () => {
    const cut = rawMessage({ id: 1, flags: FLAG_QR, an: 2 }, question('www.example.com'), answer);
    expect(checkReply(cut, 1, query, q).kind).toBe('malformed');
    const tc = rawMessage({ id: 1, flags: FLAG_QR | FLAG_TC, an: 2 }, question('www.example.com'), answer);
    const v = checkReply(tc, 1, query, q);
    expect(v.kind).toBe('ok');
    if (v.kind === 'ok') expect(v.reply).toMatchObject({ truncated: true, intact: false, records: { ttlOffsets: [] } });
  });
});

// ---- copyStoredReply ----

describe('copyStoredReply', () => {
  it('gives a copy the client id, RD and spelling of the name, and ages every TTL, never below 0', () => {
    const stored = rawMessage({ id: 0x7777, flags: FLAG_QR | FLAG_RD, an: 2 }, question('www.example.com'), [
      ...rr(PTR_Q, QType.A, 300, [192, 0, 2, 1]),
      ...rr(PTR_Q, QType.A, 10, [192, 0, 2, 2]),
    ]);
    const qEnd = 12 + question('www.example.com').length;
    const records = readRecords(stored, qEnd);
    if (records === undefined) throw new Error('stored reply did not parse');
    const entry = { message: stored, questionEnd: qEnd, ttlOffsets: records.ttlOffsets, ttls: records.ttls };
    const client = rawMessage({ id: 0x0102, flags: 0 }, question('WwW.eXample.COM'));
    const out = copyStoredReply(entry, client, qEnd, 30);
    expect(out).not.toBe(stored);
    expect(out.readUInt16BE(0)).toBe(0x0102);
    expect(out.readUInt16BE(2) & FLAG_RD).toBe(0);
    expect(out.readUInt16BE(2) & FLAG_QR).toBe(FLAG_QR);
    expect(out.subarray(12, qEnd)).toEqual(client.subarray(12, qEnd));
    expect(records.ttlOffsets.map((o) => out.readUInt32BE(o))).toEqual([270, 0]);
    expect(stored.readUInt16BE(0)).toBe(0x7777); // the stored bytes are left alone
  });

  it('keeps the stored question when the client question has another length', () => {
    const stored = rawMessage({ flags: FLAG_QR }, question('www.example.com'));
    const entry = { message: stored, questionEnd: stored.length, ttlOffsets: [], ttls: [] };
    const other = question('www.example.co');
    const client = rawMessage({ id: 9, flags: FLAG_RD }, other);
    const out = copyStoredReply(entry, client, 12 + other.length, 0);
    expect(out.readUInt16BE(0)).toBe(9);
    expect(out.subarray(12)).toEqual(stored.subarray(12));
    expect(out.readUInt16BE(2) & FLAG_RD).toBe(FLAG_RD);
  });
});
