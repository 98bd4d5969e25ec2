/**
 * Sealed control frames: after the handshake every length-prefixed control message is sealed
 * with the connection's control key for its direction (keys.ts). The frame keeps protocol.ts's
 * 4-byte big-endian length, which now counts the ciphertext and the tag:
 *
 *   | length (4, = n + 16) | ciphertext (n) | tag (16) |
 *   |<- AAD ->|
 *
 * The nonce is implicit: frame k of a direction (k = 0, 1, 2, ...) is sealed under counter k
 * (nonce = iv XOR k, see aead.ts), so TCP's order is authenticated too. Any change to a frame,
 * its length, or the order of frames makes the next open fail, and the connection must close:
 * there is no resynchronisation. To give that close a useful reason, a frame that does not open
 * under the expected counter is tried (off the normal path, on failure only) under the few
 * counters around it: one that opens under an earlier counter is a 'replay', under a later one a
 * 'reorder' (a frame went missing or was moved), and otherwise it is 'tamper'.
 *
 * node:crypto does the work (control traffic is not the hot path, and this keeps the control
 * plane working without the native addon).
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { ProtocolError } from '../../common/errors.js';
import { AEAD_IV_BYTES, AEAD_TAG_BYTES, type AeadCipher, nonceFor } from './aead.js';
import type { DirectionKey } from './keys.js';

/** SEALED_FRAME_HEADER_BYTES is the length prefix (as protocol.ts FRAME_HEADER_LEN). */
export const SEALED_FRAME_HEADER_BYTES = 4;
/** SEALED_FRAME_OVERHEAD_BYTES is what sealing adds to a frame body: the tag. */
export const SEALED_FRAME_OVERHEAD_BYTES = AEAD_TAG_BYTES;
/**
 * SEALED_FRAMES_MAX is the most frames one direction seals under one key (2^32): far beyond a
 * connection's life (a heartbeat every few seconds plus gossip), and the connection closes with
 * 'exhausted' rather than reuse a nonce; reconnecting makes new keys.
 */
export const SEALED_FRAMES_MAX = 2 ** 32;
/** DIAGNOSE_SPAN is how many counters either side of the expected one a failed frame is tried under. */
export const DIAGNOSE_SPAN = 8;

/** SealedFrameReason is why a sealed frame was refused; close the connection with it, counted. */
export type SealedFrameReason = 'tamper' | 'replay' | 'reorder' | 'truncated' | 'too-large' | 'exhausted';

/** SealedFrameError is a refused sealed frame; `reason` is stable, `frame` is the expected counter. */
export class SealedFrameError extends ProtocolError {
  readonly reason: SealedFrameReason;
  readonly frame: number;
  constructor(reason: SealedFrameReason, frame: number, message: string) {
    super(message);
    this.name = 'SealedFrameError';
    this.reason = reason;
    this.frame = frame;
  }
}

/** FrameSealer seals the frames we send on one connection, in order. */
export class FrameSealer {
  #counter = 0;
  readonly #nonce = Buffer.alloc(AEAD_IV_BYTES);

  constructor(
    private readonly suite: AeadCipher,
    private readonly keys: DirectionKey,
  ) {}

  /** sealed is how many frames have been sealed (the next frame's counter). */
  get sealed(): number {
    return this.#counter;
  }

  /**
   * seal returns the whole wire frame for `body` (a new Buffer: header, ciphertext, tag).
   * Throws SealedFrameError('exhausted') after SEALED_FRAMES_MAX frames.
   */
  seal(body: Uint8Array): Buffer {
    const k = this.#counter;
    if (k >= SEALED_FRAMES_MAX)
      throw new SealedFrameError('exhausted', k, `control key exhausted after ${k} frames: reconnect to rekey`);
    this.#counter = k + 1;
    const out = Buffer.allocUnsafe(SEALED_FRAME_HEADER_BYTES + body.length + AEAD_TAG_BYTES);
    out.writeUInt32BE(body.length + AEAD_TAG_BYTES, 0);
    const c = cipher(this.suite, this.keys.key, nonceFor(this.keys.iv, k, this.#nonce));
    c.setAAD(out.subarray(0, SEALED_FRAME_HEADER_BYTES));
    const n = c.update(body).copy(out, SEALED_FRAME_HEADER_BYTES);
    c.final();
    c.getAuthTag().copy(out, SEALED_FRAME_HEADER_BYTES + n);
    return out;
  }
}

/** FrameOpener opens the frames we receive on one connection, in order. */
export class FrameOpener {
  #counter = 0;
  readonly #nonce = Buffer.alloc(AEAD_IV_BYTES);

  /** @param maxBodyBytes the largest plaintext body accepted (CONTROL_MESSAGE_MAX_BYTES). */
  constructor(
    private readonly suite: AeadCipher,
    private readonly keys: DirectionKey,
    private readonly maxBodyBytes: number,
  ) {}

  /** opened is how many frames have been opened (the next frame's counter). */
  get opened(): number {
    return this.#counter;
  }

  /**
   * open takes one sealed frame body as the length-prefixed decoder returned it (ciphertext and
   * tag; its length is what the prefix said) and returns the plaintext body. Throws
   * SealedFrameError: 'truncated' (shorter than a tag), 'too-large', 'exhausted', or — when it
   * does not authenticate — 'replay', 'reorder' or 'tamper'. After a throw the opener is
   * unusable: close the connection.
   */
  open(sealed: Uint8Array): Buffer {
    const k = this.#counter;
    if (sealed.length < AEAD_TAG_BYTES)
      throw new SealedFrameError('truncated', k, `control frame ${k} is ${sealed.length} bytes, shorter than a tag`);
    if (sealed.length - AEAD_TAG_BYTES > this.maxBodyBytes)
      throw new SealedFrameError(
        'too-large',
        k,
        `control frame ${k} holds ${sealed.length - AEAD_TAG_BYTES} bytes, more than ${this.maxBodyBytes}`,
      );
    if (k >= SEALED_FRAMES_MAX)
      throw new SealedFrameError('exhausted', k, `control key exhausted after ${k} frames: reconnect to rekey`);
    const body = this.tryOpen(sealed, k);
    if (body !== undefined) {
      this.#counter = k + 1;
      return body;
    }
    this.#counter = SEALED_FRAMES_MAX; // unusable from now on
    for (let d = 1; d <= DIAGNOSE_SPAN; d++) {
      if (k - d >= 0 && this.tryOpen(sealed, k - d) !== undefined)
        throw new SealedFrameError('replay', k, `control frame ${k} is a replay of frame ${k - d}`);
      if (this.tryOpen(sealed, k + d) !== undefined)
        throw new SealedFrameError('reorder', k, `control frame ${k} arrived out of order (it is frame ${k + d})`);
    }
    throw new SealedFrameError('tamper', k, `control frame ${k} failed authentication`);
  }

  private tryOpen(sealed: Uint8Array, counter: number): Buffer | undefined {
    const header = Buffer.allocUnsafe(SEALED_FRAME_HEADER_BYTES);
    header.writeUInt32BE(sealed.length, 0);
    const textLen = sealed.length - AEAD_TAG_BYTES;
    const d = decipher(this.suite, this.keys.key, nonceFor(this.keys.iv, counter, this.#nonce));
    d.setAAD(header);
    d.setAuthTag(sealed.subarray(textLen));
    const body = d.update(sealed.subarray(0, textLen));
    try {
      d.final();
    } catch {
      body.fill(0);
      return undefined;
    }
    return body;
  }
}

function cipher(suite: AeadCipher, key: Buffer, nonce: Buffer) {
  return suite === 'aes-256-gcm'
    ? createCipheriv(suite, key, nonce, { authTagLength: AEAD_TAG_BYTES })
    : createCipheriv(suite, key, nonce, { authTagLength: AEAD_TAG_BYTES });
}

function decipher(suite: AeadCipher, key: Buffer, nonce: Buffer) {
  return suite === 'aes-256-gcm'
    ? createDecipheriv(suite, key, nonce, { authTagLength: AEAD_TAG_BYTES })
    : createDecipheriv(suite, key, nonce, { authTagLength: AEAD_TAG_BYTES });
}
