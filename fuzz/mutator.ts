/**
 * Mutator makes fuzz inputs: random bytes, and structure-preserving mutations of corpus entries
 * (AFL/libFuzzer's classic set: bit flips, interesting values, arithmetic, insert, delete,
 * duplicate, copy within, splice with another entry, truncate). Every choice comes from the
 * seeded Rand, so a run reproduces from its seed.
 */
import { concatBytes } from '../common/bytes.js';
import type { Rand } from './target.js';

const INTERESTING_8 = [0, 1, 2, 0x0f, 0x10, 0x3f, 0x40, 0x7f, 0x80, 0x81, 0xc0, 0xfe, 0xff];
const INTERESTING_16 = [0, 1, 0x7f, 0x80, 0xff, 0x100, 0x3fff, 0x7fff, 0x8000, 0xfffe, 0xffff];
const INTERESTING_32 = [0, 1, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, 0x10000, 0xffff];

/** int returns an integer in [0, n). */
export function int(rand: Rand, n: number): number {
  return Math.floor(rand() * n);
}

/** pick returns one element of a non-empty list. */
export function pick<T>(rand: Rand, list: readonly T[]): T {
  return list[int(rand, list.length)] as T;
}

/** smallLen returns a length in [0, max], biased towards short ones (most bugs hide at the edges). */
export function smallLen(rand: Rand, max: number): number {
  const r = rand();
  if (r < 0.5) return int(rand, Math.min(max, 32) + 1);
  if (r < 0.85) return int(rand, Math.min(max, 512) + 1);
  return int(rand, max + 1);
}

/** randomBytes returns n uniform random bytes. */
export function randomBytes(rand: Rand, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = int(rand, 256);
  return b;
}

/** Mutator mutates corpus entries; see the file comment. */
export class Mutator {
  constructor(
    private readonly rand: Rand,
    private readonly maxLen: number,
  ) {}

  /** mutate returns a new input: 1 to 8 stacked mutations of `base`, `other` available for splicing. */
  mutate(base: Uint8Array, other: Uint8Array | undefined): Uint8Array {
    let b: Uint8Array = Uint8Array.from(base);
    const rounds = 1 + int(this.rand, this.rand() < 0.7 ? 2 : 8);
    for (let i = 0; i < rounds; i++) b = this.once(b, other);
    return b.length > this.maxLen ? b.subarray(0, this.maxLen) : b;
  }

  private once(b: Uint8Array, other: Uint8Array | undefined): Uint8Array {
    const rand = this.rand;
    const n = b.length;
    const op = int(rand, 13);
    if (n === 0 && op < 9) return randomBytes(rand, 1 + int(rand, 8));
    const at = int(rand, Math.max(n, 1));
    switch (op) {
      case 0: // flip one bit
        b[at] = (b[at] as number) ^ (1 << int(rand, 8));
        return b;
      case 1: // random byte
        b[at] = int(rand, 256);
        return b;
      case 2: // interesting byte
        b[at] = pick(rand, INTERESTING_8);
        return b;
      case 3: {
        // interesting u16, either byte order
        if (n < 2) return b;
        const p = int(rand, n - 1);
        const v = pick(rand, INTERESTING_16);
        const be = rand() < 0.7;
        b[p] = be ? v >>> 8 : v & 0xff;
        b[p + 1] = be ? v & 0xff : v >>> 8;
        return b;
      }
      case 4: {
        // interesting u32, big-endian
        if (n < 4) return b;
        const p = int(rand, n - 3);
        const v = pick(rand, INTERESTING_32);
        b[p] = v >>> 24;
        b[p + 1] = (v >>> 16) & 0xff;
        b[p + 2] = (v >>> 8) & 0xff;
        b[p + 3] = v & 0xff;
        return b;
      }
      case 5: // small arithmetic
        b[at] = ((b[at] as number) + (rand() < 0.5 ? 1 : -1) * (1 + int(rand, 35))) & 0xff;
        return b;
      case 6: {
        // delete a range
        const len = 1 + int(rand, Math.min(16, n - at));
        return concat(b.subarray(0, at), b.subarray(at + len));
      }
      case 7: {
        // duplicate a range in place
        const len = 1 + int(rand, Math.min(64, n - at));
        return concat(b.subarray(0, at + len), b.subarray(at));
      }
      case 8: {
        // copy a range over another place
        const len = 1 + int(rand, Math.min(32, n - at));
        const to = int(rand, n);
        const chunk = b.slice(at, at + len);
        b.set(chunk.subarray(0, Math.min(chunk.length, n - to)), to);
        return b;
      }
      case 9: // insert random bytes
        return concat(b.subarray(0, at), randomBytes(rand, 1 + int(rand, 16)), b.subarray(at));
      case 10: {
        // splice: our head with another entry's tail (crossover)
        if (other === undefined || other.length === 0) return b;
        const cut = int(rand, other.length);
        return concat(b.subarray(0, at), other.subarray(cut));
      }
      case 11: // truncate
        return b.subarray(0, at);
      default: // append random bytes
        return concat(b, randomBytes(rand, 1 + int(rand, 32)));
    }
  }
}

/** concat joins byte arrays into a new one. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  return concatBytes(parts);
}
