/**
 * The key schedule of an encrypted control connection (issue #13).
 *
 * Threat model. The attacker controls the underlay: reads, records, drops, delays, replays,
 * reorders and injects TCP segments and UDP datagrams, and can dial any router. Without the
 * password it can neither read traffic nor make a router accept a message or datagram it did
 * not send; a peer with another password is refused before any gossip. A recorded session stays
 * secret if the password leaks later (the ephemeral X25519 keys are gone by then), and a data
 * key that leaks exposes only its own generation and the later ones ratcheted from it, never
 * earlier traffic. Not covered: a peer that knows the password is trusted (any such peer may
 * impersonate any other: Weft's peers share one secret, as Weave's did); traffic analysis
 * (sizes, timing, peer names in the clear); and offline guessing of a weak password by an
 * attacker who completes a handshake with a router (it sees a confirmation keyed by password and
 * DH) — scrypt in {@link derivePasswordKey} slows each guess; use a long random password.
 * Peers without a connection run the same schedule end to end through the mesh
 * (overlay/e2e-keys.ts, names prefixed "e2e/"): a passive relay sees only public values; one
 * that knows the password is trusted like any peer (it could stand in the middle).
 *
 * Schedule (both sides, I = initiator = the side that dialled, R = responder):
 *
 *   pw      = scrypt(password, "weft-password-v1", N=2^14, r=8, p=1)       once per process
 *   dh      = X25519(own ephemeral private, peer's ephemeral public)        fresh per connection
 *   th      = SHA-256("weft-kx-v1" | suite | nameI | nameR | pubI | pubR | nonceI | nonceR
 *                     [| "trust" | trustI trustR])       the last only when either end trusts
 *   PRK     = HKDF-Extract(salt = pw, IKM = dh)                             (RFC 5869)
 *   k(lbl)  = HKDF-Expand(PRK, "weft-v1 " lbl 0x00 th, n)
 *   control I→R / R→I: key = k("ctl i2r key" / "ctl r2i key", 32), iv = k("… iv", 12)
 *   data    I→R / R→I: traffic secret = k("data i2r" / "data r2i", 32)      (generations: dataGeneration)
 *   confirm I / R:     HMAC-SHA256(k("confirm i" / "confirm r", 32), th)
 *
 * Each field of th is length-prefixed (2 bytes), so no two transcripts encode alike. The
 * password keys the extract step (salt) and the DH result is the input keying material: the PRK
 * is a PRF of both, so a man in the middle (who knows its own dh but not pw) and a passive
 * listener who has the password (but not dh) both learn nothing. Each side sends its own
 * confirmation and checks the other's: a wrong password (or a tampered Hello: a swapped public
 * key, nonce, name or suite) shows as a confirmation mismatch, before any gossip is sent. The two
 * confirmations differ, so reflecting ours back does not verify. The trust flags (each end's
 * "your underlay address is in my --trusted-subnets", which leaves data unencrypted when both
 * say it) are bound the same way: flipping one in transit fails the confirmation.
 */
import {
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  type KeyObject,
  scryptSync,
  timingSafeEqual,
} from 'node:crypto';
import { ProtocolError } from '../../common/errors.js';
import { AEAD_IV_BYTES, AEAD_KEY_BYTES, type AeadCipher } from './aead.js';

/** X25519_KEY_BYTES is the length of a raw X25519 public or private key (RFC 7748). */
export const X25519_KEY_BYTES = 32;
/** KX_NONCE_BYTES is the per-connection nonce each side contributes (the Hello nonce). */
export const KX_NONCE_BYTES = 16;
/** CONFIRM_BYTES is the length of a key-confirmation value (HMAC-SHA256). */
export const CONFIRM_BYTES = 32;
/** TRAFFIC_SECRET_BYTES is the length of a data-plane traffic secret. */
export const TRAFFIC_SECRET_BYTES = 32;

/** KX_LABEL versions the transcript; a change of schedule changes it. */
export const KX_LABEL = 'weft-kx-v1';
/** PASSWORD_SALT is the fixed scrypt salt (the password itself is the secret; routers share it). */
export const PASSWORD_SALT = 'weft-password-v1';
/** PASSWORD_SCRYPT_N is scrypt's cost (16 MiB of memory, tens of ms: once per process). */
export const PASSWORD_SCRYPT_N = 2 ** 14;

// DER prefixes that wrap a raw 32-byte X25519 key for node:crypto (RFC 8410).
const SPKI_X25519 = Buffer.from('302a300506032b656e032100', 'hex');
const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');

/** KeyExchangeReason says why a handshake was refused; the connection closes with it. */
export type KeyExchangeReason = 'bad-public-key' | 'bad-nonce' | 'confirm-mismatch' | 'bad-suite';

/**
 * KeyExchangeError is a refused key exchange. `reason` is stable (count it); `code` is
 * EWEFT_AUTH for a confirmation mismatch (wrong password, or a tampered handshake), else
 * EWEFT_PROTOCOL.
 */
export class KeyExchangeError extends ProtocolError {
  readonly reason: KeyExchangeReason;
  constructor(reason: KeyExchangeReason, message: string, options?: { cause?: unknown }) {
    super(message, { ...options, code: reason === 'confirm-mismatch' ? 'EWEFT_AUTH' : 'EWEFT_PROTOCOL' });
    this.name = 'KeyExchangeError';
    this.reason = reason;
  }
}

/**
 * derivePasswordKey stretches the configured password once per process (scrypt, about 16 MiB
 * and tens of milliseconds), so each offline guess costs an attacker as much. Keep the result,
 * not the password; it is the `passwordKey` of every KeyExchange.
 */
export function derivePasswordKey(password: Uint8Array): Buffer {
  return scryptSync(password, PASSWORD_SALT, 32, { N: PASSWORD_SCRYPT_N, r: 8, p: 1, maxmem: 64 * 1024 * 1024 });
}

/** DirectionKey is an AEAD key and its static IV for one direction. */
export interface DirectionKey {
  readonly key: Buffer;
  readonly iv: Buffer;
}

/** KxRole is our role on this connection: the side that dialled is the initiator. */
export type KxRole = 'initiator' | 'responder';

/** KeyExchangeOptions configure one side of one connection's key exchange. */
export interface KeyExchangeOptions {
  readonly role: KxRole;
  /** localName is our peer name as sent in Hello. */
  readonly localName: string;
  /** passwordKey is derivePasswordKey(password). */
  readonly passwordKey: Uint8Array;
  /** suite is the AEAD both sides agreed on (it is bound into the transcript). */
  readonly suite: AeadCipher;
  /** nonce is our Hello nonce (KX_NONCE_BYTES random bytes). */
  readonly nonce: Uint8Array;
  /** privateKey fixes the ephemeral private key (raw, 32 bytes): for test vectors only. */
  readonly privateKey?: Uint8Array;
  /** trusts says our Hello said we trust the peer's underlay address (--trusted-subnets). */
  readonly trusts?: boolean;
}

/** RemoteKxInfo is what the peer's Hello carried for the exchange. */
export interface RemoteKxInfo {
  readonly name: string;
  readonly publicKey: Uint8Array;
  readonly nonce: Uint8Array;
  /** trusts says the peer's Hello said it trusts our underlay address. */
  readonly trusts?: boolean;
}

/**
 * SessionKeys are the keys of one connection, already mapped to our role: `send` is what we seal
 * with, `recv` what we open with. The caller sends `confirm` and checks the peer's with
 * verifyConfirm before it sends anything else. wipe() zeroes every buffer once they are installed.
 */
export class SessionKeys {
  constructor(
    readonly suite: AeadCipher,
    readonly controlSend: DirectionKey,
    readonly controlRecv: DirectionKey,
    /** dataSend / dataRecv are traffic secrets; see dataGeneration. */
    readonly dataSend: Buffer,
    readonly dataRecv: Buffer,
    /** confirm is our key-confirmation value, sent to the peer. */
    readonly confirm: Buffer,
    private readonly peerConfirm: Buffer,
    /** transcriptHash identifies the session (status, logs: print a prefix only). */
    readonly transcriptHash: Buffer,
  ) {}

  /** verifyConfirm is true when the peer's confirmation matches (constant time). */
  verifyConfirm(mac: Uint8Array): boolean {
    return mac.length === CONFIRM_BYTES && timingSafeEqual(mac, this.peerConfirm);
  }

  /** checkConfirm is verifyConfirm that throws KeyExchangeError('confirm-mismatch') with `peer` named. */
  checkConfirm(mac: Uint8Array, peer: string): void {
    if (!this.verifyConfirm(mac))
      throw new KeyExchangeError(
        'confirm-mismatch',
        `peer ${peer} failed key confirmation: passwords differ (or the handshake was tampered with)`,
      );
  }

  /** wipe zeroes every key, IV, secret and confirmation held here. */
  wipe(): void {
    for (const b of [
      this.controlSend.key,
      this.controlSend.iv,
      this.controlRecv.key,
      this.controlRecv.iv,
      this.dataSend,
      this.dataRecv,
      this.confirm,
      this.peerConfirm,
    ])
      b.fill(0);
  }
}

/**
 * KeyExchange is one side of one connection's X25519 exchange. Create it when the connection
 * starts (its publicKey and the nonce go into our Hello), then call finish with the peer's Hello
 * fields. finish may be called once; the ephemeral private key is dropped after it.
 */
export class KeyExchange {
  /** publicKey is our ephemeral public key, raw (X25519_KEY_BYTES). */
  readonly publicKey: Buffer;
  readonly #opts: KeyExchangeOptions;
  #privateKey: KeyObject | undefined;

  constructor(opts: KeyExchangeOptions) {
    if (opts.nonce.length !== KX_NONCE_BYTES)
      throw new RangeError(`key exchange nonce must be ${KX_NONCE_BYTES} bytes, got ${opts.nonce.length}`);
    if (opts.passwordKey.length === 0) throw new RangeError('key exchange needs a password key');
    this.#opts = opts;
    if (opts.privateKey !== undefined) {
      if (opts.privateKey.length !== X25519_KEY_BYTES)
        throw new RangeError(`x25519 private key must be ${X25519_KEY_BYTES} bytes, got ${opts.privateKey.length}`);
      this.#privateKey = createPrivateKey({
        key: Buffer.concat([PKCS8_X25519, opts.privateKey]),
        format: 'der',
        type: 'pkcs8',
      });
    } else {
      this.#privateKey = generateKeyPairSync('x25519').privateKey;
    }
    const spki = createPublicKey(this.#privateKey).export({ format: 'der', type: 'spki' });
    this.publicKey = Buffer.from(spki.subarray(spki.length - X25519_KEY_BYTES));
  }

  /**
   * finish computes the session keys from the peer's Hello fields. Throws KeyExchangeError
   * ('bad-public-key', 'bad-nonce') for a malformed or low-order public key.
   */
  finish(remote: RemoteKxInfo): SessionKeys {
    const priv = this.#privateKey;
    if (priv === undefined) throw new Error('KeyExchange.finish called twice');
    this.#privateKey = undefined;
    const o = this.#opts;
    if (remote.publicKey.length !== X25519_KEY_BYTES)
      throw new KeyExchangeError(
        'bad-public-key',
        `peer ${remote.name} sent a ${remote.publicKey.length}-byte public key, want ${X25519_KEY_BYTES}`,
      );
    if (remote.nonce.length !== KX_NONCE_BYTES)
      throw new KeyExchangeError(
        'bad-nonce',
        `peer ${remote.name} sent a ${remote.nonce.length}-byte nonce, want ${KX_NONCE_BYTES}`,
      );
    let dh: Buffer;
    try {
      const pub = createPublicKey({ key: Buffer.concat([SPKI_X25519, remote.publicKey]), format: 'der', type: 'spki' });
      dh = diffieHellman({ privateKey: priv, publicKey: pub });
    } catch (err) {
      throw new KeyExchangeError('bad-public-key', `peer ${remote.name} sent an unusable x25519 public key`, {
        cause: err,
      });
    }
    // A low-order point gives an all-zero secret that the attacker knows (RFC 7748 §6.1).
    if (dh.every((b) => b === 0))
      throw new KeyExchangeError('bad-public-key', `peer ${remote.name} sent a low-order x25519 public key`);
    const initiator = o.role === 'initiator';
    const th = transcriptHash({
      suite: o.suite,
      initiatorName: initiator ? o.localName : remote.name,
      responderName: initiator ? remote.name : o.localName,
      initiatorPublic: initiator ? this.publicKey : remote.publicKey,
      responderPublic: initiator ? remote.publicKey : this.publicKey,
      initiatorNonce: initiator ? o.nonce : remote.nonce,
      responderNonce: initiator ? remote.nonce : o.nonce,
      initiatorTrusts: (initiator ? o.trusts : remote.trusts) === true,
      responderTrusts: (initiator ? remote.trusts : o.trusts) === true,
    });
    const prk = (label: string, n: number): Buffer =>
      Buffer.from(hkdfSync('sha256', dh, o.passwordKey, Buffer.concat([Buffer.from(`weft-v1 ${label}\0`), th]), n));
    const ctl = (dir: 'i2r' | 'r2i'): DirectionKey => ({
      key: prk(`ctl ${dir} key`, AEAD_KEY_BYTES),
      iv: prk(`ctl ${dir} iv`, AEAD_IV_BYTES),
    });
    const confirmOf = (side: 'i' | 'r'): Buffer => {
      const k = prk(`confirm ${side}`, 32);
      const mac = createHmac('sha256', k).update(th).digest();
      k.fill(0);
      return mac;
    };
    const i2r = ctl('i2r');
    const r2i = ctl('r2i');
    const dataI2r = prk('data i2r', TRAFFIC_SECRET_BYTES);
    const dataR2i = prk('data r2i', TRAFFIC_SECRET_BYTES);
    const confirmI = confirmOf('i');
    const confirmR = confirmOf('r');
    dh.fill(0);
    return initiator
      ? new SessionKeys(o.suite, i2r, r2i, dataI2r, dataR2i, confirmI, confirmR, th)
      : new SessionKeys(o.suite, r2i, i2r, dataR2i, dataI2r, confirmR, confirmI, th);
  }
}

/** TranscriptFields are the handshake values bound into every key, in canonical (role) order. */
export interface TranscriptFields {
  readonly suite: AeadCipher;
  readonly initiatorName: string;
  readonly responderName: string;
  readonly initiatorPublic: Uint8Array;
  readonly responderPublic: Uint8Array;
  readonly initiatorNonce: Uint8Array;
  readonly responderNonce: Uint8Array;
  /** initiatorTrusts/responderTrusts: each end's trust flag (absent: false). */
  readonly initiatorTrusts?: boolean;
  readonly responderTrusts?: boolean;
}

/** transcriptHash is th: SHA-256 over KX_LABEL and the fields, each with a 2-byte length. */
export function transcriptHash(f: TranscriptFields): Buffer {
  const h = createHash('sha256');
  const put = (b: Uint8Array): void => {
    const len = Buffer.allocUnsafe(2);
    len.writeUInt16BE(b.length, 0);
    h.update(len);
    h.update(b);
  };
  put(Buffer.from(KX_LABEL));
  put(Buffer.from(f.suite));
  put(Buffer.from(f.initiatorName, 'utf8'));
  put(Buffer.from(f.responderName, 'utf8'));
  put(f.initiatorPublic);
  put(f.responderPublic);
  put(f.initiatorNonce);
  put(f.responderNonce);
  // Only when either end trusts: without trusted subnets the transcript is what it always was.
  if (f.initiatorTrusts === true || f.responderTrusts === true) {
    put(Buffer.from('trust'));
    put(Uint8Array.of(f.initiatorTrusts === true ? 1 : 0, f.responderTrusts === true ? 1 : 0));
  }
  return h.digest();
}

/** DataGeneration is one generation of a data-plane direction: the AEAD key and IV, and the next secret. */
export interface DataGeneration {
  readonly key: Buffer;
  readonly iv: Buffer;
  readonly nextSecret: Buffer;
}

/**
 * dataGeneration expands one traffic secret into its AEAD key and IV and the secret of the next
 * generation (a one-way ratchet, as TLS 1.3's KeyUpdate): once a generation's secret is wiped, a
 * later key says nothing about it. HKDF-SHA256(IKM = secret, no salt, info = "weft-v1 data key" /
 * "… iv" / "… next").
 */
export function dataGeneration(secret: Uint8Array): DataGeneration {
  const expand = (label: string, n: number): Buffer =>
    Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), Buffer.from(`weft-v1 data ${label}`), n));
  return {
    key: expand('key', AEAD_KEY_BYTES),
    iv: expand('iv', AEAD_IV_BYTES),
    nextSecret: expand('next', TRAFFIC_SECRET_BYTES),
  };
}
