import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { InputError, ProtocolError } from '../common/errors.js';
import { mulberry32 } from '../common/random.js';
import { HELLO_MAX_BYTES } from './conn-limits.js';
import { CONTROL_MESSAGE_MAX_BYTES } from './constants.js';
import {
  type Addresses,
  decodeBody,
  decodeMessage,
  encodeFrame,
  FRAME_HEADER_LEN,
  FrameDecoder,
  type Gossip,
  type Hello,
  type Message,
  negotiateVersion,
  parseAuth,
  parseHello,
  parseMessage,
} from './protocol.js';

const rawPackr = new Packr({ useRecords: false });

/** frameOf frames an arbitrary value without validation (what a hostile peer could send). */
function frameOf(value: unknown): Buffer {
  const body = rawPackr.pack(value);
  const f = Buffer.allocUnsafe(FRAME_HEADER_LEN + body.length);
  f.writeUInt32BE(body.length, 0);
  f.set(body, FRAME_HEADER_LEN);
  return f;
}

/** bodyOf strips the length header of a frame. */
function bodyOf(frame: Buffer): Buffer {
  return frame.subarray(FRAME_HEADER_LEN);
}

/** drain pushes chunks into a new decoder and returns every complete body. */
function drain(chunks: readonly Uint8Array[]): Uint8Array[] {
  const d = new FrameDecoder();
  const out: Uint8Array[] = [];
  for (const c of chunks) {
    d.push(c);
    for (let b = d.next(); b !== undefined; b = d.next()) out.push(b);
  }
  return out;
}

const hello: Hello = {
  proto: 'weft',
  versionMin: 1,
  versionMax: 1,
  name: '02:00:00:00:00:01',
  nickname: 'host-1',
  uid: '18446744073709551615',
  tcpPort: 6783,
  sleevePort: 6783,
  vxlanPort: 6784,
  vni: 0x5746,
  encap: 'vxlan',
  mtu: 1450,
  nonce: new Uint8Array(16).fill(7),
  auth: false,
};

const messages: Message[] = [
  { t: 'hb' },
  { t: 'addrs', cidrs: [] },
  { t: 'addrs', cidrs: ['10.32.0.1/32', '0.0.0.0/0', '255.255.255.255/12'] },
  { t: 'gossip', channel: 'topology', payload: new Uint8Array([1, 2, 3, 0, 255]) },
  { t: 'gossip', channel: 'x'.repeat(64), payload: new Uint8Array(0) },
  { t: 'close', reason: 'bye' },
];

function expectProtocolError(fn: () => unknown, message?: RegExp, code = 'EWEFT_PROTOCOL'): void {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(thrown).toBeInstanceOf(ProtocolError);
  const e = thrown as ProtocolError;
  expect(e.code).toBe(code);
  if (message) expect(e.message).toMatch(message);
}

describe('encodeFrame and decodeMessage', () => {
  it('round-trips every message type', () => {
    for (const msg of messages) {
      const frame = encodeFrame(msg);
      expect(frame.readUInt32BE(0)).toBe(frame.length - FRAME_HEADER_LEN);
      const d = decodeMessage(bodyOf(frame));
      expect(d.known).toBe(true);
      if (!d.known) continue;
      if (msg.t === 'gossip') {
        const got = d.msg as Gossip;
        expect(got.channel).toBe(msg.channel);
        expect(Buffer.from(got.payload).equals(Buffer.from(msg.payload))).toBe(true);
      } else {
        expect(d.msg).toEqual(msg);
      }
    }
  });

  it('round-trips a hello with a key exchange', () => {
    const withKx: Hello = {
      ...hello,
      auth: true,
      kx: new Uint8Array(32).fill(3),
      ciphers: ['aes-256-gcm', 'chacha20-poly1305'],
    };
    const h = parseHello(decodeBody(bodyOf(encodeFrame(withKx))), { min: 1, max: 1 }).hello;
    expect(Buffer.from(h.kx!).equals(Buffer.from(withKx.kx!))).toBe(true);
    expect(h.ciphers).toEqual(['aes-256-gcm', 'chacha20-poly1305']);
    expect(() => encodeFrame({ ...withKx, kx: undefined } as unknown as Hello)).toThrow(InputError);
  });

  it('round-trips hello and auth', () => {
    const h = parseHello(decodeBody(bodyOf(encodeFrame(hello))), { min: 1, max: 1 });
    expect(h.version).toBe(1);
    expect({ ...h.hello, nonce: Buffer.from(h.hello.nonce) }).toEqual({ ...hello, nonce: Buffer.from(hello.nonce) });
    const mac = new Uint8Array(32).fill(9);
    const a = parseAuth(decodeBody(bodyOf(encodeFrame({ t: 'auth', mac }))));
    expect(Buffer.from(a.mac).equals(Buffer.from(mac))).toBe(true);
  });

  it('refuses to encode an invalid or oversized message', () => {
    expect(() => encodeFrame({ t: 'addrs', cidrs: ['10.0.0.1'] })).toThrow(InputError);
    expect(() => encodeFrame({ t: 'gossip', channel: '', payload: new Uint8Array(1) })).toThrow(InputError);
    expect(() => encodeFrame({ ...hello, uid: '0' })).toThrow(InputError);
    expect(() =>
      encodeFrame({ t: 'gossip', channel: 'big', payload: new Uint8Array(CONTROL_MESSAGE_MAX_BYTES) }),
    ).toThrow(/limit is/);
  });

  it('returns unknown message types for the caller to count, including Object.prototype names', () => {
    for (const t of ['future-thing', 'constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf']) {
      expect(decodeMessage(bodyOf(frameOf({ t, anything: [1, 2] })))).toEqual({ known: false, t });
    }
  });

  it('rejects malformed known messages', () => {
    const bad: [unknown, RegExp][] = [
      [{ t: 'hb', extra: 1 }, /invalid hb message/],
      [{ t: 'addrs' }, /cidrs/],
      [{ t: 'addrs', cidrs: ['10.0.0.256/8'] }, /cidrs\.0/],
      [{ t: 'addrs', cidrs: ['10.0.0.1/33'] }, /cidrs\.0/],
      [{ t: 'addrs', cidrs: ['010.0.0.1/8'] }, /cidrs\.0/],
      [{ t: 'addrs', cidrs: ['10.0.0.1/08'] }, /cidrs\.0/],
      [{ t: 'addrs', cidrs: Array.from({ length: 4097 }, () => '10.0.0.1/32') }, /cidrs/],
      [{ t: 'addrs', cidrs: 'nope' }, /cidrs/],
      [{ t: 'gossip', channel: 'c', payload: 'text' }, /payload/],
      [{ t: 'gossip', channel: 'c'.repeat(65), payload: Buffer.alloc(1) }, /channel/],
      [{ t: 'close', reason: 'r'.repeat(257) }, /reason/],
      [{ t: 'auth', mac: Buffer.alloc(32) }, /unexpected auth/],
      [{ t: 7 }, /invalid message type/],
      [{ t: '' }, /invalid message type/],
      [{ t: 'x'.repeat(65) }, /invalid message type/],
      [{ no: 'type' }, /no type/],
    ];
    for (const [value, re] of bad) expectProtocolError(() => decodeMessage(bodyOf(frameOf(value))), re);
  });

  it('rejects bodies that are not maps', () => {
    for (const value of [null, 1, 'hb', [{ t: 'hb' }], true, new Date(0), new Set([1])]) {
      expectProtocolError(() => decodeMessage(bodyOf(frameOf(value))));
    }
    // A map with a non-string key, a truncated body, trailing bytes.
    expectProtocolError(() => decodeMessage(Buffer.from([0x81, 0x91, 0x01, 0x01])));
    expectProtocolError(() => decodeMessage(bodyOf(encodeFrame({ t: 'hb' })).subarray(0, 2)), /undecodable/);
    expectProtocolError(() => decodeMessage(Buffer.concat([bodyOf(encodeFrame({ t: 'hb' })), Buffer.from([0])])));
  });

  it('does not let a __proto__ key pollute anything', () => {
    const polluting = [
      JSON.parse('{"t":"hb","__proto__":{"polluted":true}}'),
      JSON.parse('{"t":"addrs","cidrs":[],"__proto__":{"polluted":true}}'),
      JSON.parse('{"t":"gossip","channel":"c","payload":null,"constructor":{"prototype":{"polluted":true}}}'),
      JSON.parse('{"__proto__":{"t":"hb"}}'),
    ];
    for (const value of polluting) {
      expect(Object.hasOwn(value, '__proto__') || Object.hasOwn(value, 'constructor')).toBe(true);
      expectProtocolError(() => decodeMessage(bodyOf(frameOf(value))));
    }
    const h = parseHello(decodeBody(bodyOf(frameOf({ ...hello, ...JSON.parse('{"__proto__":{"polluted":1}}') }))), {
      min: 1,
      max: 1,
    });
    expect(Object.getPrototypeOf(h.hello)).toBe(Object.prototype);
    expect(Object.keys(h.hello)).not.toContain('__proto_');
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect((Object.prototype as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe('negotiateVersion and parseHello', () => {
  it('picks the highest common version', () => {
    expect(negotiateVersion({ min: 1, max: 3 }, { min: 2, max: 5 })).toBe(3);
    expect(negotiateVersion({ min: 1, max: 1 }, { min: 1, max: 9 })).toBe(1);
  });

  it('reports ranges that do not overlap', () => {
    expectProtocolError(
      () => negotiateVersion({ min: 1, max: 1 }, { min: 2, max: 3 }),
      /^remote version range \[2,3\] is incompatible with ours \[1,1\]$/,
      'EWEFT_PROTOCOL_VERSION',
    );
    expectProtocolError(
      () => negotiateVersion({ min: 1, max: 5 }, { min: 3, max: 2 }),
      /\[3,2\]/,
      'EWEFT_PROTOCOL_VERSION',
    );
  });

  it('checks the version before the rest, so a future hello gets the version error', () => {
    const future = { proto: 'weft', versionMin: 7, versionMax: 9, brandNewField: { x: 1 } };
    expectProtocolError(
      () => parseHello(decodeBody(bodyOf(frameOf(future))), { min: 1, max: 1 }),
      /\[7,9\] is incompatible/,
      'EWEFT_PROTOCOL_VERSION',
    );
  });

  it('ignores unknown hello fields from a later version with an overlapping range', () => {
    const r = parseHello(decodeBody(bodyOf(frameOf({ ...hello, versionMax: 4, extra: 'v4 thing' }))), {
      min: 1,
      max: 1,
    });
    expect(r.version).toBe(1);
    expect(r.hello).not.toHaveProperty('extra');
  });

  it('rejects invalid hellos', () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ proto: 'weave' }, /proto/],
      [{ name: '02:00:00:00:00:0G' }, /name/],
      [{ name: '02:00:00:00:00:0A' }, /name/],
      [{ nickname: 'n'.repeat(65) }, /nickname/],
      [{ uid: '0' }, /uid/],
      [{ uid: '01' }, /uid/],
      [{ uid: '18446744073709551616' }, /uid/],
      [{ uid: 5 }, /uid/],
      [{ nonce: new Uint8Array(15) }, /nonce/],
      [{ mtu: 100 }, /mtu/],
      [{ vni: 0x1000000 }, /vni/],
      [{ encap: 'gre' }, /encap/],
      [{ sleevePort: 0 }, /sleevePort/],
      [{ tcpPort: 65536 }, /tcpPort/],
      [{ auth: 'yes' }, /auth/],
      [{ versionMin: 1.5 }, /versionMin/],
      [{ auth: true, ciphers: ['aes-256-gcm'] }, /kx: auth needs a 32-byte x25519 public key/],
      [{ auth: true, kx: new Uint8Array(32) }, /ciphers: auth needs a cipher list/],
      [{ auth: true, ciphers: ['aes-256-gcm'], kx: new Uint8Array(33) }, /kx: want exactly 32 bytes/],
      [{ auth: true, ciphers: ['aes-256-gcm'], kx: 'k'.repeat(32) }, /kx/],
      [{ auth: true, ciphers: [], kx: new Uint8Array(32) }, /ciphers/],
      [{ auth: true, ciphers: [7], kx: new Uint8Array(32) }, /ciphers/],
      [{ auth: true, ciphers: Array(9).fill('aes-256-gcm'), kx: new Uint8Array(32) }, /ciphers/],
      [{ trusts: true }, /trusts: trust is only offered with auth/],
      [{ auth: true, ciphers: ['aes-256-gcm'], kx: new Uint8Array(32), trusts: 1 }, /trusts/],
    ];
    for (const [patch, re] of bad) {
      expectProtocolError(
        () => parseHello(decodeBody(bodyOf(frameOf({ ...hello, ...patch }))), { min: 1, max: 1 }),
        re,
      );
    }
  });
});

describe('FrameDecoder', () => {
  const frames = messages.map((m) => encodeFrame(m));
  const stream = Buffer.concat(frames);
  const bodies = frames.map((f) => Buffer.from(bodyOf(f)));

  it('returns a body inside one chunk as a view, without copying', () => {
    const d = new FrameDecoder();
    d.push(stream);
    const b = d.next()!;
    expect(b.buffer).toBe(stream.buffer);
    expect(Buffer.from(b).equals(bodies[0]!)).toBe(true);
  });

  it('reassembles frames split at every byte boundary', () => {
    for (let i = 0; i <= stream.length; i++) {
      const got = drain([stream.subarray(0, i), stream.subarray(i)]);
      expect(got.map((b) => Buffer.from(b))).toEqual(bodies);
    }
  });

  it('reassembles frames split at every pair of boundaries and fed one byte at a time', () => {
    for (let i = 0; i < stream.length; i += 3) {
      for (let j = i; j <= stream.length; j += 5) {
        const got = drain([stream.subarray(0, i), stream.subarray(i, j), stream.subarray(j)]);
        expect(got.length).toBe(bodies.length);
      }
    }
    const bytes = Array.from(stream, (_, k) => stream.subarray(k, k + 1));
    expect(drain(bytes).map((b) => Buffer.from(b))).toEqual(bodies);
  });

  it('rejects a zero length and keeps failing', () => {
    const d = new FrameDecoder();
    d.push(Buffer.from([0, 0, 0, 0, 0x80]));
    expectProtocolError(() => d.next(), /zero length/);
    expectProtocolError(() => d.next(), /zero length/);
  });

  it('rejects an oversized length as soon as the header arrives', () => {
    const d = new FrameDecoder();
    const h = Buffer.alloc(4);
    h.writeUInt32BE(CONTROL_MESSAGE_MAX_BYTES + 1, 0);
    d.push(h.subarray(0, 2));
    expect(d.next()).toBeUndefined();
    d.push(h.subarray(2));
    expectProtocolError(() => d.next(), new RegExp(`frame length ${CONTROL_MESSAGE_MAX_BYTES + 1} exceeds`));
  });

  it('accepts a frame of exactly the limit', () => {
    const d = new FrameDecoder(16);
    const f = Buffer.alloc(20, 0xc0);
    f.writeUInt32BE(16, 0);
    d.push(f);
    expect(d.next()?.length).toBe(16);
    expect(d.bufferedBytes).toBe(0);
  });

  it('rejects a length over its limit before the body arrives, and then holds nothing', () => {
    const d = new FrameDecoder(HELLO_MAX_BYTES);
    const chunk = Buffer.alloc(64 * 1024);
    chunk.writeUInt32BE(CONTROL_MESSAGE_MAX_BYTES, 0);
    d.push(chunk);
    expect(d.bufferedBytes).toBe(chunk.length);
    expectProtocolError(
      () => d.next(),
      new RegExp(`frame length ${CONTROL_MESSAGE_MAX_BYTES} exceeds the limit of ${HELLO_MAX_BYTES} bytes`),
    );
    expect(d.bufferedBytes).toBe(0);
    d.push(Buffer.alloc(64 * 1024));
    expect(d.bufferedBytes).toBe(0);
    expectProtocolError(() => d.next(), /exceeds the limit/);
  });

  it('buffers at most one frame of its limit while the frame is incomplete', () => {
    const d = new FrameDecoder(HELLO_MAX_BYTES);
    const f = Buffer.alloc(FRAME_HEADER_LEN + HELLO_MAX_BYTES, 0xc0);
    f.writeUInt32BE(HELLO_MAX_BYTES, 0);
    for (let i = 0; i < f.length - 1; i += 100) {
      d.push(f.subarray(i, Math.min(i + 100, f.length - 1)));
      expect(d.next()).toBeUndefined();
      expect(d.bufferedBytes).toBeLessThanOrEqual(HELLO_MAX_BYTES);
    }
    d.push(f.subarray(f.length - 1));
    expect(d.next()?.length).toBe(HELLO_MAX_BYTES);
    expect(d.bufferedBytes).toBe(0);
  });

  it('drops what it holds when closed and ignores later pushes', () => {
    const d = new FrameDecoder();
    d.push(stream.subarray(0, stream.length - 1));
    expect(d.next()).toBeDefined();
    expect(d.bufferedBytes).toBeGreaterThan(0);
    d.close();
    expect(d.bufferedBytes).toBe(0);
    d.push(stream);
    expect(d.bufferedBytes).toBe(0);
    expectProtocolError(() => d.next(), /decoder closed/);
  });

  it('applies a raised limit to the frames after it', () => {
    const d = new FrameDecoder(16);
    const small = Buffer.alloc(20, 0xc0);
    small.writeUInt32BE(16, 0);
    const big = Buffer.alloc(44, 0xc0);
    big.writeUInt32BE(40, 0);
    d.push(Buffer.concat([small, big]));
    expect(d.next()?.length).toBe(16);
    d.maxBytes = 64;
    expect(d.next()?.length).toBe(40);
  });

  it('rejects garbage such as an HTTP request', () => {
    const d = new FrameDecoder();
    d.push(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    expectProtocolError(() => d.next(), /exceeds the limit/);
  });
});

describe('fuzz', () => {
  /** decodeAny runs every parser a connection may apply to a body; only ProtocolError may escape. */
  function decodeAny(body: Uint8Array): void {
    for (const parse of [
      () => decodeMessage(body),
      () => parseHello(decodeBody(body), { min: 1, max: 1 }),
      () => parseAuth(decodeBody(body)),
      () => parseMessage(decodeBody(body)),
    ]) {
      try {
        const r = parse();
        expect(r).toBeTypeOf('object');
      } catch (err) {
        if (!(err instanceof ProtocolError)) {
          throw new Error(`non-protocol error for body ${Buffer.from(body).toString('hex').slice(0, 200)}`, {
            cause: err,
          });
        }
      }
    }
  }

  function randomBytesFrom(rand: () => number, n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = Math.floor(rand() * 256);
    return b;
  }

  function randomValue(rand: () => number, depth: number): unknown {
    const k = Math.floor(rand() * (depth > 3 ? 7 : 10));
    switch (k) {
      case 0:
        return null;
      case 1:
        return rand() < 0.5;
      case 2:
        return Math.floor(rand() * 2 ** 40) - 2 ** 39;
      case 3:
        return rand() * 1e6;
      case 4:
        return ['hb', 'addrs', 'gossip', 'close', 'auth', 'weft', '10.0.0.1/8', '__proto__', ''][
          Math.floor(rand() * 9)
        ];
      case 5:
        return randomBytesFrom(rand, Math.floor(rand() * 40));
      case 6:
        return 'x'.repeat(Math.floor(rand() * 300));
      case 7:
        return Array.from({ length: Math.floor(rand() * 5) }, () => randomValue(rand, depth + 1));
      default: {
        const keys = ['t', 'cidrs', 'channel', 'payload', 'reason', 'mac', 'proto', 'versionMin', 'name', '__proto__'];
        const o: Record<string, unknown> = {};
        for (let i = Math.floor(rand() * 5); i > 0; i--) {
          Object.defineProperty(o, keys[Math.floor(rand() * keys.length)]!, {
            value: randomValue(rand, depth + 1),
            enumerable: true,
            configurable: true,
            writable: true,
          });
        }
        return o;
      }
    }
  }

  it('turns thousands of random bodies into valid messages or ProtocolError only', () => {
    const rand = mulberry32(0x5eed);
    for (let i = 0; i < 4000; i++) decodeAny(randomBytesFrom(rand, 1 + Math.floor(rand() * 64)));
  });

  it('turns thousands of mutated valid frames into valid messages or ProtocolError only', () => {
    const rand = mulberry32(42);
    const seeds = [
      ...messages.map((m) => encodeFrame(m)),
      encodeFrame(hello),
      encodeFrame({ t: 'auth', mac: new Uint8Array(32) }),
    ];
    for (let i = 0; i < 6000; i++) {
      const seed = seeds[i % seeds.length]!;
      let body = Buffer.from(bodyOf(seed));
      const op = Math.floor(rand() * 4);
      if (op === 0 && body.length > 0) {
        for (let f = 1 + Math.floor(rand() * 3); f > 0; f--)
          body[Math.floor(rand() * body.length)]! ^= 1 << Math.floor(rand() * 8);
      } else if (op === 1) {
        body = body.subarray(0, Math.floor(rand() * body.length));
      } else if (op === 2) {
        const at = Math.floor(rand() * (body.length + 1));
        body = Buffer.concat([
          body.subarray(0, at),
          randomBytesFrom(rand, 1 + Math.floor(rand() * 8)),
          body.subarray(at),
        ]);
      } else if (body.length > 0) {
        body[Math.floor(rand() * body.length)] = [0xc1, 0xd4, 0xc7, 0xdc, 0xde, 0xdf, 0xff, 0x00][
          Math.floor(rand() * 8)
        ]!;
      }
      if (body.length > 0) decodeAny(body);
    }
  });

  it('turns thousands of random structured values into valid messages or ProtocolError only', () => {
    const rand = mulberry32(7);
    for (let i = 0; i < 4000; i++) {
      let v = randomValue(rand, 0);
      if (rand() < 0.5) v = { ...(v as object), t: ['hb', 'addrs', 'gossip', 'close'][Math.floor(rand() * 4)] };
      decodeAny(bodyOf(frameOf(v)));
    }
  });

  it('survives extension types and deep nesting', () => {
    const deep = Buffer.alloc(100_000, 0x91);
    deep[deep.length - 1] = 0;
    decodeAny(deep);
    // Every ext code with short payloads: fixext1/2/4/8/16 and ext8.
    for (let type = 0; type < 256; type++) {
      for (const head of [0xd4, 0xd5, 0xd6, 0xd7, 0xd8]) {
        const len = { 212: 1, 213: 2, 214: 4, 215: 8, 216: 16 }[head]!;
        decodeAny(Buffer.from([head, type, ...new Uint8Array(len).fill(0x91)]));
        decodeAny(Buffer.from([0x81, 0xa1, 0x74, head, type, ...new Uint8Array(len)]));
      }
      decodeAny(Buffer.from([0xc7, 3, type, 0x92, 0xa1, 0x61]));
    }
  });

  it('splits random streams into frames or ProtocolError only', () => {
    const rand = mulberry32(99);
    for (let i = 0; i < 2000; i++) {
      const parts: Buffer[] = [];
      for (let n = Math.floor(rand() * 4); n > 0; n--)
        parts.push(encodeFrame(messages[Math.floor(rand() * messages.length)]!));
      if (rand() < 0.7) parts.push(randomBytesFrom(rand, 1 + Math.floor(rand() * 32)));
      const stream = Buffer.concat(parts);
      const cut = Math.floor(rand() * stream.length);
      try {
        for (const body of drain([stream.subarray(0, cut), stream.subarray(cut)])) decodeAny(body);
      } catch (err) {
        expect(err).toBeInstanceOf(ProtocolError);
      }
    }
  });
});

describe('types', () => {
  it('accepts readonly inputs for sending', () => {
    const cidrs: readonly string[] = ['10.0.0.0/8'];
    const msg: Addresses = { t: 'addrs', cidrs: [...cidrs] };
    expect(decodeMessage(bodyOf(encodeFrame(msg)))).toEqual({ known: true, msg });
  });
});
