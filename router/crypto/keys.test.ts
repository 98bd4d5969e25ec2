import { createHash, createHmac, randomBytes, scryptSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { dataGeneration, derivePasswordKey, KeyExchange, KeyExchangeError, transcriptHash } from './keys.js';

const h = (s: string) => Buffer.from(s, 'hex');
// RFC 7748 §6.1: Alice's and Bob's X25519 keys and their shared secret.
const ALICE_PRIV = h('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
const ALICE_PUB = h('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
const BOB_PRIV = h('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb');
const BOB_PUB = h('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
const SHARED = h('4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742');

const NAME_I = '02:00:00:00:00:01';
const NAME_R = '02:00:00:00:00:02';
const NONCE_I = Buffer.alloc(16, 0x11);
const NONCE_R = Buffer.alloc(16, 0x22);
const PASSWORD = Buffer.from('correct horse battery staple');
const PW = derivePasswordKey(PASSWORD);

function pair(pwI = PW, pwR = PW, suiteR: 'aes-256-gcm' | 'chacha20-poly1305' = 'aes-256-gcm') {
  const i = new KeyExchange({
    role: 'initiator',
    localName: NAME_I,
    passwordKey: pwI,
    suite: 'aes-256-gcm',
    nonce: NONCE_I,
    privateKey: ALICE_PRIV,
  });
  const r = new KeyExchange({
    role: 'responder',
    localName: NAME_R,
    passwordKey: pwR,
    suite: suiteR,
    nonce: NONCE_R,
    privateKey: BOB_PRIV,
  });
  return { i, r };
}

/** hkdf is RFC 5869 written out with HMAC, independent of node:crypto's hkdfSync. */
function hkdf(ikm: Buffer, salt: Buffer, info: Buffer, n: number): Buffer {
  const prk = createHmac('sha256', salt).update(ikm).digest();
  let t = Buffer.alloc(0);
  const out: Buffer[] = [];
  for (let i = 1; out.length * 32 < n; i++) {
    t = createHmac('sha256', prk)
      .update(Buffer.concat([t, info, Buffer.from([i])]))
      .digest();
    out.push(t);
  }
  return Buffer.concat(out).subarray(0, n);
}

describe('key schedule', () => {
  it('stretches the password with scrypt as documented', () => {
    expect(PW).toEqual(scryptSync(PASSWORD, 'weft-password-v1', 32, { N: 2 ** 14, r: 8, p: 1, maxmem: 64 << 20 }));
    expect(PW.toString('hex')).toBe('7201908c6d1820d02ee99a39765502432b8612be437529dd2fa065202c919139');
  });

  it('derives fixed keys from fixed private keys (vectors), matching on both sides', () => {
    const { i, r } = pair();
    expect(i.publicKey).toEqual(ALICE_PUB);
    expect(r.publicKey).toEqual(BOB_PUB);
    const ki = i.finish({ name: NAME_R, publicKey: r.publicKey, nonce: NONCE_R });
    const kr = r.finish({ name: NAME_I, publicKey: i.publicKey, nonce: NONCE_I });
    expect(ki.transcriptHash.toString('hex')).toBe('b83564d87b1943c809e1c21429eaf3332f49db89859607625d5d071dd707a7f9');
    expect(ki.controlSend.key.toString('hex')).toBe('aa2eb64425cd9a6f326dca22f47610bb32af6a74dce346d9f30da215004c3b0f');
    expect(ki.controlSend.iv.toString('hex')).toBe('c44bd2a3c329c97fc744b7a6');
    expect(ki.controlRecv.key.toString('hex')).toBe('2731b6a2f8a6580d664786ad655d8f2838ce6114874ab1125fa683212071d731');
    expect(ki.controlRecv.iv.toString('hex')).toBe('3177f78554014e93e9dcb1c9');
    expect(ki.dataSend.toString('hex')).toBe('3a12cdfdad5ea0ff260ea27d12b0cc41a9205947ca6cb12d286f5d52c453c234');
    expect(ki.dataRecv.toString('hex')).toBe('c76dcabd1e2a88dec23c5573cc2ff557f00b0a40ec5702dd33864c70fd6b218a');
    expect(ki.confirm.toString('hex')).toBe('12450eb78cd69cc2827d0626f5f9404cf1e65b9b8cdbbb1d8758af9aabd96363');
    // the responder's view is the mirror image
    expect(kr.controlSend).toEqual(ki.controlRecv);
    expect(kr.controlRecv).toEqual(ki.controlSend);
    expect(kr.dataSend).toEqual(ki.dataRecv);
    expect(kr.dataRecv).toEqual(ki.dataSend);
    expect(kr.verifyConfirm(ki.confirm)).toBe(true);
    expect(ki.verifyConfirm(kr.confirm)).toBe(true);
    // confirmations differ by direction: reflecting ours back does not verify
    expect(ki.verifyConfirm(ki.confirm)).toBe(false);
    // every key is distinct
    const all = [ki.controlSend.key, ki.controlRecv.key, ki.dataSend, ki.dataRecv, ki.confirm, kr.confirm];
    expect(new Set(all.map((b) => b.toString('hex'))).size).toBe(all.length);
  });

  it('binds the trust flags into the transcript: both ends must see the same ones, and none leaves it as before', () => {
    const run = (iTrusts: boolean, rTrusts: boolean, seenByR = { i: iTrusts, r: rTrusts }) => {
      const i = new KeyExchange({
        role: 'initiator',
        localName: NAME_I,
        passwordKey: PW,
        suite: 'aes-256-gcm',
        nonce: NONCE_I,
        privateKey: ALICE_PRIV,
        trusts: iTrusts,
      });
      const r = new KeyExchange({
        role: 'responder',
        localName: NAME_R,
        passwordKey: PW,
        suite: 'aes-256-gcm',
        nonce: NONCE_R,
        privateKey: BOB_PRIV,
        trusts: seenByR.r,
      });
      const ki = i.finish({ name: NAME_R, publicKey: r.publicKey, nonce: NONCE_R, trusts: rTrusts });
      const kr = r.finish({ name: NAME_I, publicKey: i.publicKey, nonce: NONCE_I, trusts: seenByR.i });
      return { ki, kr };
    };
    // Neither trusting: the vector of the schedule without trust.
    expect(run(false, false).ki.transcriptHash.toString('hex')).toBe(
      'b83564d87b1943c809e1c21429eaf3332f49db89859607625d5d071dd707a7f9',
    );
    const hashes = new Set<string>();
    for (const [a, b] of [
      [false, false],
      [true, false],
      [false, true],
      [true, true],
    ] as const) {
      const { ki, kr } = run(a, b);
      expect(kr.verifyConfirm(ki.confirm)).toBe(true);
      hashes.add(ki.transcriptHash.toString('hex'));
    }
    expect(hashes.size).toBe(4);
    // A flag flipped on the way (the responder saw the initiator trust it; it did not): refused.
    const flipped = run(false, true, { i: true, r: true });
    expect(flipped.kr.verifyConfirm(flipped.ki.confirm)).toBe(false);
    expect(flipped.ki.verifyConfirm(flipped.kr.confirm)).toBe(false);
  });

  it('follows the documented schedule (independent HKDF over the RFC 7748 shared secret)', () => {
    const { i, r } = pair();
    const ki = i.finish({ name: NAME_R, publicKey: r.publicKey, nonce: NONCE_R });
    const lp = (b: Buffer) => Buffer.concat([Buffer.from([b.length >> 8, b.length & 255]), b]);
    const th = createHash('sha256')
      .update(
        Buffer.concat(
          [Buffer.from('weft-kx-v1'), Buffer.from('aes-256-gcm'), Buffer.from(NAME_I), Buffer.from(NAME_R)]
            .concat([ALICE_PUB, BOB_PUB, NONCE_I, NONCE_R])
            .map(lp),
        ),
      )
      .digest();
    expect(ki.transcriptHash).toEqual(th);
    const k = (label: string, n: number) => hkdf(SHARED, PW, Buffer.concat([Buffer.from(`weft-v1 ${label}\0`), th]), n);
    expect(ki.controlSend.key).toEqual(k('ctl i2r key', 32));
    expect(ki.controlSend.iv).toEqual(k('ctl i2r iv', 12));
    expect(ki.dataRecv).toEqual(k('data r2i', 32));
    expect(ki.confirm).toEqual(createHmac('sha256', k('confirm i', 32)).update(th).digest());
    const g = dataGeneration(ki.dataSend);
    expect(g.key).toEqual(hkdf(ki.dataSend, Buffer.alloc(0), Buffer.from('weft-v1 data key'), 32));
    expect(g.nextSecret).toEqual(hkdf(ki.dataSend, Buffer.alloc(0), Buffer.from('weft-v1 data next'), 32));
  });

  it('refuses a wrong password with a confirmation mismatch on both sides', () => {
    const { i, r } = pair(PW, derivePasswordKey(Buffer.from('Correct horse battery staple')));
    const ki = i.finish({ name: NAME_R, publicKey: r.publicKey, nonce: NONCE_R });
    const kr = r.finish({ name: NAME_I, publicKey: i.publicKey, nonce: NONCE_I });
    expect(ki.verifyConfirm(kr.confirm)).toBe(false);
    expect(kr.verifyConfirm(ki.confirm)).toBe(false);
    expect(ki.controlSend.key).not.toEqual(kr.controlRecv.key);
    let err: unknown;
    try {
      ki.checkConfirm(kr.confirm, NAME_R);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KeyExchangeError);
    expect(err).toMatchObject({ reason: 'confirm-mismatch', code: 'EWEFT_AUTH' });
    expect((err as Error).message).toMatch(/02:00:00:00:00:02 failed key confirmation: passwords differ/);
  });

  it('detects a tampered handshake (nonce, name, suite, swapped key) as a mismatch', () => {
    const cases: [string, (x: ReturnType<typeof pair>) => [boolean, boolean]][] = [
      [
        'nonce',
        ({ i, r }) => {
          const ki = i.finish({ name: NAME_R, publicKey: r.publicKey, nonce: Buffer.alloc(16, 0x23) });
          const kr = r.finish({ name: NAME_I, publicKey: i.publicKey, nonce: NONCE_I });
          return [ki.verifyConfirm(kr.confirm), kr.verifyConfirm(ki.confirm)];
        },
      ],
      [
        'name',
        ({ i, r }) => {
          const ki = i.finish({ name: '02:00:00:00:00:03', publicKey: r.publicKey, nonce: NONCE_R });
          const kr = r.finish({ name: NAME_I, publicKey: i.publicKey, nonce: NONCE_I });
          return [ki.verifyConfirm(kr.confirm), kr.verifyConfirm(ki.confirm)];
        },
      ],
      [
        'suite',
        () => {
          const x = pair(PW, PW, 'chacha20-poly1305');
          const ki = x.i.finish({ name: NAME_R, publicKey: x.r.publicKey, nonce: NONCE_R });
          const kr = x.r.finish({ name: NAME_I, publicKey: x.i.publicKey, nonce: NONCE_I });
          return [ki.verifyConfirm(kr.confirm), kr.verifyConfirm(ki.confirm)];
        },
      ],
      [
        'public key (man in the middle)',
        ({ i, r }) => {
          const m = new KeyExchange({
            role: 'responder',
            localName: NAME_R,
            passwordKey: randomBytes(32),
            suite: 'aes-256-gcm',
            nonce: NONCE_R,
          });
          const ki = i.finish({ name: NAME_R, publicKey: m.publicKey, nonce: NONCE_R });
          const kr = r.finish({ name: NAME_I, publicKey: i.publicKey, nonce: NONCE_I });
          return [ki.verifyConfirm(kr.confirm), kr.verifyConfirm(ki.confirm)];
        },
      ],
    ];
    for (const [, run] of cases) expect(run(pair())).toEqual([false, false]);
  });

  it('makes fresh keys per connection and refuses bad public keys', () => {
    const a = new KeyExchange({
      role: 'initiator',
      localName: NAME_I,
      passwordKey: PW,
      suite: 'aes-256-gcm',
      nonce: NONCE_I,
    });
    const b = new KeyExchange({
      role: 'initiator',
      localName: NAME_I,
      passwordKey: PW,
      suite: 'aes-256-gcm',
      nonce: NONCE_I,
    });
    expect(a.publicKey).not.toEqual(b.publicKey);
    expect(() => a.finish({ name: NAME_R, publicKey: Buffer.alloc(31), nonce: NONCE_R })).toThrow(KeyExchangeError);
    expect(() => b.finish({ name: NAME_R, publicKey: BOB_PUB, nonce: Buffer.alloc(8) })).toThrow(/8-byte nonce/);
    // a low-order point (all zero) gives an all-zero shared secret: refused
    const c = new KeyExchange({
      role: 'initiator',
      localName: NAME_I,
      passwordKey: PW,
      suite: 'aes-256-gcm',
      nonce: NONCE_I,
    });
    expect(() => c.finish({ name: NAME_R, publicKey: Buffer.alloc(32), nonce: NONCE_R })).toThrow(
      expect.objectContaining({ reason: 'bad-public-key' }),
    );
    expect(() => c.finish({ name: NAME_R, publicKey: BOB_PUB, nonce: NONCE_R })).toThrow(/twice/);
    expect(
      () =>
        new KeyExchange({
          role: 'initiator',
          localName: NAME_I,
          passwordKey: PW,
          suite: 'aes-256-gcm',
          nonce: Buffer.alloc(3),
        }),
    ).toThrow(RangeError);
  });

  it('wipes its buffers', () => {
    const { i, r } = pair();
    const ki = i.finish({ name: NAME_R, publicKey: r.publicKey, nonce: NONCE_R });
    ki.wipe();
    expect(ki.controlSend.key.every((x) => x === 0) && ki.dataRecv.every((x) => x === 0)).toBe(true);
    expect(transcriptHash).toBeTypeOf('function');
  });
});
