/**
 * AEAD names and sizes shared by the control framer (node:crypto) and the data plane (the native
 * addon's batched AEAD, router/tun/native/weft_native.c "AEAD"). Both ciphers use a 32-byte key,
 * a 12-byte nonce and a 16-byte tag; a nonce is a per-key static IV XOR a 64-bit counter (TLS 1.3
 * §5.3), so it is never sent whole and never repeats under one key.
 */
import type { NativeAeadCipher } from '../tun/native.js';

/** AeadCipher is one of the two AEADs Weft speaks (the same names node:crypto uses). */
export type AeadCipher = NativeAeadCipher;

/** AEAD_CIPHERS lists the ciphers in our order of preference. */
export const AEAD_CIPHERS: readonly AeadCipher[] = ['aes-256-gcm', 'chacha20-poly1305'];

/**
 * DEFAULT_AEAD_CIPHER is AES-256-GCM, picked by measurement (bench/aead.ts on this 2-core AMD EPYC
 * with AES-NI/VAES, OpenSSL 3.0 in Node 20): 1.5–2× the packet rate of ChaCha20-Poly1305 for
 * 1400-byte and 64-byte packets. ChaCha20-Poly1305 stays available for CPUs without AES
 * instructions, where it is the faster of the two.
 */
export const DEFAULT_AEAD_CIPHER: AeadCipher = 'aes-256-gcm';

/** AEAD_KEY_BYTES is the key length of both ciphers. */
export const AEAD_KEY_BYTES = 32;
/** AEAD_IV_BYTES is the nonce (and static IV) length of both ciphers. */
export const AEAD_IV_BYTES = 12;
/** AEAD_TAG_BYTES is the authentication tag length (full 128 bits, never truncated). */
export const AEAD_TAG_BYTES = 16;

/** isAeadCipher narrows a string (a Hello field, a flag) to an AeadCipher. */
export function isAeadCipher(s: unknown): s is AeadCipher {
  return s === 'aes-256-gcm' || s === 'chacha20-poly1305';
}

/**
 * nonceFor writes the nonce of `counter` under `iv` into `out` (12 bytes): iv with the counter,
 * 8 bytes big-endian, XORed into its last 8 bytes. The addon computes the same in C.
 */
export function nonceFor(iv: Uint8Array, counter: number, out: Buffer): Buffer {
  for (let i = 0; i < AEAD_IV_BYTES; i++) out[i] = iv[i] as number;
  out.writeUInt32BE((out.readUInt32BE(4) ^ Math.floor(counter / 0x1_0000_0000)) >>> 0, 4);
  out.writeUInt32BE((out.readUInt32BE(8) ^ counter) >>> 0, 8);
  return out;
}

/**
 * negotiateCipher picks the session's AEAD from the two Hello lists: the initiator's most
 * preferred cipher that the responder also offers, or undefined (refuse the connection). Both
 * sides compute the same answer, and the choice is bound into the transcript (keys.ts), so a
 * tampered list shows as a key-confirmation mismatch.
 */
export function negotiateCipher(initiator: readonly unknown[], responder: readonly unknown[]): AeadCipher | undefined {
  for (const c of initiator) if (isAeadCipher(c) && responder.includes(c)) return c;
  return undefined;
}
