import { createCipheriv, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { type NativeAeadCipher, tryLoadNative } from '../tun/native.js';
import { AEAD_TAG_BYTES, negotiateCipher, nonceFor } from './aead.js';

const native = tryLoadNative();
const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

// RFC 8439 §2.8.2: AEAD_CHACHA20_POLY1305 test vector.
const RFC8439 = {
  key: hex('808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f'),
  nonce: hex('070000004041424344454647'),
  aad: hex('50515253c0c1c2c3c4c5c6c7'),
  plain: Buffer.from(
    "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
  ),
  cipher: hex(`d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6
    3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36
    92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc
    3ff4def08e4b7a9de576d26586cec64b6116`),
  tag: hex('1ae10b594f09e26a7e902ecbd0600691'),
};

// McGrew & Viega, "The Galois/Counter Mode of Operation", test case 16 (AES-256, 60 bytes, AAD).
const GCM16 = {
  key: hex('feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308'),
  nonce: hex('cafebabefacedbaddecaf888'),
  aad: hex('feedfacedeadbeeffeedfacedeadbeefabaddad2'),
  plain: hex(`d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72
    1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39`),
  cipher: hex(`522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa
    8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662`),
  tag: hex('76fc6ece0f4e1768cddf8853bb2d551b'),
};

const VECTORS: [NativeAeadCipher, typeof RFC8439][] = [
  ['chacha20-poly1305', RFC8439],
  ['aes-256-gcm', GCM16],
];

/** packet lays out | aad | plain | room for the tag | at `off` in a fresh buffer of `size`. */
function packet(aad: Buffer, plain: Buffer, off = 0, size = off + aad.length + plain.length + AEAD_TAG_BYTES) {
  const buf = Buffer.alloc(size, 0xee);
  aad.copy(buf, off);
  plain.copy(buf, off + aad.length);
  return buf;
}

describe.skipIf(native === undefined)('native AEAD', () => {
  const n = native!;

  it.each(VECTORS)('%s matches its published test vector (seal, open, batch)', (cipher, v) => {
    // counter 0 under the vector's nonce as static IV gives exactly the vector's nonce
    const key = n.aeadKey(cipher, v.key, v.nonce);
    const len = v.aad.length + v.plain.length;
    const buf = packet(v.aad, v.plain, 5);
    expect(n.aeadSeal(key, buf, 5, len, v.aad.length, 0)).toBe(len + 16);
    expect(buf.subarray(5 + v.aad.length, 5 + len)).toEqual(v.cipher);
    expect(buf.subarray(5 + len, 5 + len + 16)).toEqual(v.tag);
    expect(n.aeadOpen(key, buf, 5, len + 16, v.aad.length, 0)).toBe(len);
    expect(buf.subarray(5 + v.aad.length, 5 + len)).toEqual(v.plain);

    const b2 = packet(v.aad, v.plain);
    const res = new Uint8Array(1);
    const ctrs = new Float64Array([0]);
    expect(n.aeadSealBatch(key, b2, new Int32Array([0]), new Int32Array([len]), ctrs, 1, v.aad.length, -1, -1)).toBe(1);
    expect(b2.subarray(v.aad.length, len)).toEqual(v.cipher);
    expect(b2.subarray(len)).toEqual(v.tag);
    expect(
      n.aeadOpenBatch(key, b2, new Int32Array([0]), new Int32Array([len + 16]), ctrs, 1, v.aad.length, -1, -1, res),
    ).toBe(1);
    expect(res[0]).toBe(1);
    expect(b2.subarray(v.aad.length, len)).toEqual(v.plain);
    n.aeadFree(key);
  });

  it.each(['aes-256-gcm', 'chacha20-poly1305'] as const)('%s agrees with node:crypto for large counters', (cipher) => {
    const keyBytes = randomBytes(32);
    const iv = randomBytes(12);
    const key = n.aeadKey(cipher, keyBytes, iv);
    const aad = randomBytes(24);
    const plain = randomBytes(300);
    for (const counter of [1, 255, 2 ** 32 - 1, 2 ** 32, 2 ** 48 + 7, 2 ** 53 - 1]) {
      const buf = packet(aad, plain);
      n.aeadSeal(key, buf, 0, 324, 24, counter);
      const c =
        cipher === 'aes-256-gcm'
          ? createCipheriv(cipher, keyBytes, nonceFor(iv, counter, Buffer.alloc(12)), { authTagLength: 16 })
          : createCipheriv(cipher, keyBytes, nonceFor(iv, counter, Buffer.alloc(12)), { authTagLength: 16 });
      c.setAAD(aad);
      const want = Buffer.concat([c.update(plain), c.final(), c.getAuthTag()]);
      expect(buf.subarray(24)).toEqual(want);
    }
  });

  it('seals and opens a batch, with the counter written on the wire and a masked byte', () => {
    const key = n.aeadKey('aes-256-gcm', randomBytes(32));
    const count = 64;
    const stride = 1500;
    const buf = Buffer.alloc(count * stride);
    const offsets = new Int32Array(count);
    const lengths = new Int32Array(count);
    const counters = new Float64Array(count);
    const plain: Buffer[] = [];
    for (let i = 0; i < count; i++) {
      offsets[i] = i * stride + 3;
      lengths[i] = 24 + ((i * 37) % 1400);
      counters[i] = 1000 + i;
      const p = randomBytes(lengths[i]!);
      p.copy(buf, offsets[i]!);
      plain.push(Buffer.from(p));
    }
    expect(n.aeadSealBatch(key, buf, offsets, lengths, counters, count, 24, 16, 3)).toBe(count);
    const sealedLens = lengths.map((l) => l + 16);
    for (let i = 0; i < count; i++) {
      expect(buf.readBigUInt64BE(offsets[i]! + 16)).toBe(BigInt(1000 + i));
      buf[offsets[i]! + 3] = i; // a relay changed the masked byte: still authentic
    }
    const got = new Float64Array(count);
    const results = new Uint8Array(count);
    expect(n.aeadOpenBatch(key, buf, offsets, sealedLens, got, count, 24, 16, 3, results)).toBe(count);
    expect([...results].every((r) => r === 1)).toBe(true);
    expect([...got]).toEqual([...counters]);
    for (let i = 0; i < count; i++) {
      const p = plain[i]!;
      expect(buf.subarray(offsets[i]! + 24, offsets[i]! + lengths[i]!)).toEqual(p.subarray(24));
    }
    n.aeadFree(key);
  });

  it.each(['aes-256-gcm', 'chacha20-poly1305'] as const)(
    '%s authenticates a masked byte as zero (same tag as sealing it zeroed), wherever it is',
    (cipher) => {
      const key = n.aeadKey(cipher, randomBytes(32));
      for (const [aadLen, maskAt] of [
        [24, 3],
        [24, 0],
        [24, 23],
        [1, 0],
        [40, 17],
      ] as const) {
        const aad = randomBytes(aadLen);
        const plain = randomBytes(100);
        const len = aadLen + 100;
        const a = packet(aad, plain);
        a[maskAt] = 0;
        n.aeadSeal(key, a, 0, len, aadLen, 9);
        const b = packet(aad, plain);
        b[maskAt] = 0x55;
        n.aeadSealBatch(
          key,
          b,
          new Int32Array([0]),
          new Int32Array([len]),
          new Float64Array([9]),
          1,
          aadLen,
          -1,
          maskAt,
        );
        b[maskAt] = 0;
        expect(b).toEqual(a);
        b[maskAt] = 0xaa;
        const res = new Uint8Array(1);
        n.aeadOpenBatch(
          key,
          b,
          new Int32Array([0]),
          new Int32Array([len + 16]),
          new Float64Array([9]),
          1,
          aadLen,
          -1,
          maskAt,
          res,
        );
        expect(res[0]).toBe(1);
        expect(b.subarray(aadLen, len)).toEqual(plain);
      }
      n.aeadFree(key);
    },
  );

  it.each(['aes-256-gcm', 'chacha20-poly1305'] as const)(
    '%s reports each forged packet as failed without throwing, and leaves it unchanged',
    (cipher) => {
      const k = randomBytes(32);
      const key = n.aeadKey(cipher, k);
      const other = n.aeadKey(cipher, randomBytes(32));
      const count = 7;
      const stride = 200;
      const buf = Buffer.alloc(count * stride);
      const offsets = Int32Array.from({ length: count }, (_, i) => i * stride);
      const lengths = new Int32Array(count).fill(24 + 100);
      const counters = Float64Array.from({ length: count }, (_, i) => i);
      randomBytes(buf.length).copy(buf);
      n.aeadSealBatch(key, buf, offsets, lengths, counters, count, 24, 16, -1);
      const sealed = lengths.map((l) => l + 16);
      buf[offsets[1]! + 24 + 5]! ^= 0x01; // ciphertext
      buf[offsets[2]! + 124 + 15]! ^= 0x80; // tag
      buf[offsets[3]! + 2]! ^= 0x04; // AAD
      buf[offsets[4]! + 16 + 7]! ^= 0x01; // counter (so the nonce) on the wire
      sealed[5] = 24 + 15; // shorter than AAD + tag
      const before = Buffer.from(buf);
      const results = new Uint8Array(count);
      const got = new Float64Array(count);
      expect(n.aeadOpenBatch(key, buf, offsets, sealed, got, count, 24, 16, -1, results)).toBe(2);
      expect([...results]).toEqual([1, 0, 0, 0, 0, 0, 1]);
      for (const i of [1, 2, 3, 4, 5])
        expect(buf.subarray(offsets[i]!, offsets[i]! + stride)).toEqual(
          before.subarray(offsets[i]!, offsets[i]! + stride),
        );
      // wrong key, wrong counter (counters given, not read from the wire)
      const w = Buffer.from(before);
      expect(n.aeadOpenBatch(other, w, offsets, sealed, got, 1, 24, 16, -1, results)).toBe(0);
      expect(n.aeadOpenBatch(key, w, offsets, sealed, new Float64Array([1]), 1, 24, -1, -1, results)).toBe(0);
      expect(n.aeadOpen(key, w, 0, 140, 24, 1)).toBe(-1);
      expect(w).toEqual(before);
      expect(n.aeadOpen(key, w, 0, 140, 24, 0)).toBe(124); // the right one still opens
      n.aeadFree(key);
      n.aeadFree(other);
    },
  );

  it('seals and opens entries first..first+count-1 of the arrays', () => {
    const key = n.aeadKey('chacha20-poly1305', randomBytes(32));
    const buf = randomBytes(1000);
    const orig = Buffer.from(buf);
    const offsets = new Int32Array([0, 200, 400, 600]);
    const lengths = new Int32Array([100, 100, 100, 100]);
    const counters = new Float64Array([0, 1, 2, 3]);
    expect(n.aeadSealBatch(key, buf, offsets, lengths, counters, 2, 24, 16, -1, 1)).toBe(2);
    expect(buf.subarray(0, 200)).toEqual(orig.subarray(0, 200)); // entry 0 untouched
    expect(buf.subarray(600)).toEqual(orig.subarray(600)); // entry 3 untouched
    expect(buf.readBigUInt64BE(416)).toBe(2n);
    const res = new Uint8Array([9, 9, 9, 9]);
    const got = new Float64Array(4);
    expect(
      n.aeadOpenBatch(
        key,
        buf,
        offsets,
        lengths.map((l) => l + 16),
        got,
        2,
        24,
        16,
        -1,
        res,
        1,
      ),
    ).toBe(2);
    expect([...res]).toEqual([9, 1, 1, 9]);
    expect([...got]).toEqual([0, 1, 2, 0]);
    expect(() => n.aeadSealBatch(key, buf, offsets, lengths, counters, 2, 24, 16, -1, 3)).toThrow(/first \+ count/);
    expect(() => n.aeadSealBatch(key, buf, offsets, lengths, counters, 0, 24, 16, -1, 5)).toThrow(/first 5/);
    expect(() => n.aeadSealBatch(key, buf, offsets, lengths, counters, 0, 24, 16, -1, -1)).toThrow(TypeError);
    n.aeadFree(key);
  });

  it('refuses malformed arguments with TypeError or RangeError, touching nothing', () => {
    const key = n.aeadKey('aes-256-gcm', Buffer.alloc(32, 1));
    const buf = Buffer.alloc(256);
    const offs = new Int32Array([0, 100]);
    const lens = new Int32Array([50, 50]);
    const ctrs = new Float64Array([0, 1]);
    const res = new Uint8Array(2);
    const call = (f: () => unknown) => () => f();
    expect(call(() => n.aeadKey('aes-128-gcm' as never, Buffer.alloc(32)))).toThrow(TypeError);
    expect(call(() => n.aeadKey('aes-256-gcm', Buffer.alloc(16)))).toThrow(RangeError);
    expect(call(() => n.aeadKey('aes-256-gcm', 'k' as never))).toThrow(TypeError);
    expect(call(() => n.aeadKey('aes-256-gcm', Buffer.alloc(32), Buffer.alloc(8)))).toThrow(RangeError);
    expect(call(() => n.aeadSeal({} as never, buf, 0, 10, 0, 0))).toThrow(TypeError);
    expect(call(() => n.aeadSeal(key, buf, 250, 10, 0, 0))).toThrow(RangeError);
    expect(call(() => n.aeadSeal(key, buf, 0, 241, 0, 0))).toThrow(/outside/); // no room for the tag
    expect(call(() => n.aeadSeal(key, buf, 0, 10, 11, 0))).toThrow(RangeError);
    expect(call(() => n.aeadSeal(key, buf, 0, 10, 0, -1))).toThrow(RangeError);
    expect(call(() => n.aeadSeal(key, buf, 0, 10, 0, 2 ** 53))).toThrow(RangeError);
    expect(call(() => n.aeadSeal(key, buf, 0, 10, 0, 1.5))).toThrow(RangeError);
    expect(call(() => n.aeadOpen(key, buf, -1, 10, 0, 0))).toThrow(TypeError);
    const before = Buffer.from(buf);
    expect(call(() => n.aeadSealBatch(key, buf, offs, new Int32Array([50, 200]), ctrs, 2, 24, 16, 3))).toThrow(
      /packet 1/,
    );
    expect(call(() => n.aeadSealBatch(key, buf, offs, lens, new Float64Array([0, Number.NaN]), 2, 24, 16, 3))).toThrow(
      RangeError,
    );
    expect(call(() => n.aeadSealBatch(key, buf, offs, lens, ctrs, 3, 24, 16, 3))).toThrow(/count/);
    expect(call(() => n.aeadSealBatch(key, buf, offs, lens, ctrs, 2, 24, 20, 3))).toThrow(/counter at/);
    expect(call(() => n.aeadSealBatch(key, buf, offs, lens, ctrs, 2, 24, 16, 24))).toThrow(/maskAt/);
    expect(call(() => n.aeadSealBatch(key, buf, offs, new Int32Array([10, 10]), ctrs, 2, 24, -1, -1))).toThrow(
      /shorter/,
    );
    expect(call(() => n.aeadSealBatch(key, buf, [0, 1] as never, lens, ctrs, 2, 24, 16, 3))).toThrow(TypeError);
    expect(call(() => n.aeadSealBatch(key, buf, offs, lens, new BigUint64Array(2) as never, 2, 24, 16, 3))).toThrow(
      TypeError,
    );
    expect(call(() => n.aeadOpenBatch(key, buf, offs, lens, ctrs, 2, 24, 16, 3, new Uint8Array(1)))).toThrow(/count/);
    expect(call(() => n.aeadOpenBatch(key, buf, offs, lens, ctrs, 2, 24, 16, 3, undefined as never))).toThrow(
      TypeError,
    );
    expect(buf).toEqual(before);
    n.aeadFree(key);
    n.aeadFree(key); // idempotent
    expect(call(() => n.aeadSeal(key, buf, 0, 10, 0, 0))).toThrow(/freed/);
    expect(call(() => n.aeadOpenBatch(key, buf, offs, lens, ctrs, 2, 24, 16, 3, res))).toThrow(/freed/);
  });

  it('never crashes on random descriptors over random bytes', () => {
    const key = n.aeadKey('chacha20-poly1305', randomBytes(32));
    const buf = randomBytes(4096);
    const offs = new Int32Array(32);
    const lens = new Int32Array(32);
    const ctrs = new Float64Array(32);
    const res = new Uint8Array(32);
    for (let round = 0; round < 200; round++) {
      for (let i = 0; i < 32; i++) {
        offs[i] = Math.floor(Math.random() * 4200) - 50;
        lens[i] = Math.floor(Math.random() * 600) - 20;
      }
      try {
        expect(n.aeadOpenBatch(key, buf, offs, lens, ctrs, 32, 24, 16, 3, res)).toBe(0);
      } catch (err) {
        expect(err).toBeInstanceOf(RangeError);
      }
    }
    n.aeadFree(key);
  });
});

describe('negotiateCipher', () => {
  it("picks the initiator's first choice the responder offers, or nothing", () => {
    expect(negotiateCipher(['aes-256-gcm', 'chacha20-poly1305'], ['chacha20-poly1305', 'aes-256-gcm'])).toBe(
      'aes-256-gcm',
    );
    expect(negotiateCipher(['chacha20-poly1305', 'aes-256-gcm'], ['aes-256-gcm', 'chacha20-poly1305'])).toBe(
      'chacha20-poly1305',
    );
    expect(negotiateCipher(['des', 'aes-256-gcm'], ['aes-256-gcm'])).toBe('aes-256-gcm');
    expect(negotiateCipher(['aes-256-gcm'], ['chacha20-poly1305'])).toBeUndefined();
    expect(negotiateCipher([], [])).toBeUndefined();
  });
});
