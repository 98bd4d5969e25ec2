/**
 * UsedBitmap: which offsets of an IPAM range are allocated, as a bitmap with summary levels and
 * per-1024 counts, so the Allocator (allocator.ts) finds the lowest free address, the next used one and
 * the number used in a span without looking at allocations one by one. Pure and synchronous; it
 * knows nothing of addresses, owners or the ring, only offsets 0 … size-1.
 */

/** FULL is a bitmap word with every bit set. */
const FULL = 0xffffffff;

/** ctz32 returns the index of the lowest set bit of a non-zero 32-bit word. */
function ctz32(x: number): number {
  return 31 - Math.clz32(x & -x);
}

/** popcount32 counts the set bits of a 32-bit word. */
function popcount32(x: number): number {
  let v = x - ((x >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24;
}

/** BLOCK_WORDS is the number of bitmap words (32 offsets each) per counted block of {@link UsedBitmap}. */
const BLOCK_WORDS = 32;
const BLOCK_OFFSETS = BLOCK_WORDS * 32;

/**
 * UsedBitmap records which offsets 0 … size-1 of the range are allocated. Summary levels let
 * {@link UsedBitmap.nextClear} skip allocated stretches 32, 1024, 32768 … offsets at a time. For a
 * range of 32,768 addresses (a /17):
 *
 *   level 2   [ w0 ]                         bit j set ⇔ word j of level 1 is full
 *   level 1   [ w0 ][ w1 ] … [ w31 ]         bit j set ⇔ word j of level 0 is full
 *   level 0   [ w0 ][ w1 ] … [ w1023 ]       bit i set ⇔ offset i is allocated
 *   blocks    [ n0 ]                         allocated offsets in words 0 … 31 of level 0 (1024 offsets)
 *
 * Levels are added until one word covers everything. Bits past the end of a level (padding of the
 * last word, or summary bits for words that do not exist) are set once at construction, so they
 * read as "allocated" / "full" and nextClear never returns them; the block counts leave them out.
 * The counts let {@link UsedBitmap.count} and {@link UsedBitmap.nextSet} skip 1024 offsets at a
 * time. Memory: the default /12 takes 128 KiB + 6 KiB; a /8 (2^24 addresses) 2 MiB + 98 KiB.
 */
export class UsedBitmap {
  /** levels[0] is the bitmap itself; levels[k + 1] summarises the full words of levels[k]. */
  private readonly levels: Uint32Array[] = [];
  /** bits is levels[0]. */
  private readonly bits: Uint32Array;
  /** blocks[b] counts the allocated offsets in words b·32 … b·32 + 31 of levels[0] (0 … 1024). */
  private readonly blocks: Uint16Array;

  constructor(readonly size: number) {
    let n = size;
    for (;;) {
      const words = new Uint32Array(Math.ceil(n / 32));
      const used = n % 32;
      if (used !== 0) words[words.length - 1] = (FULL << used) >>> 0;
      this.levels.push(words);
      if (words.length === 1) break;
      n = words.length;
    }
    this.bits = this.levels[0]!;
    this.blocks = new Uint16Array(Math.ceil(this.bits.length / BLOCK_WORDS));
  }

  has(i: number): boolean {
    return ((this.bits[i >>> 5]! >>> (i & 31)) & 1) === 1;
  }

  /** add marks offset i allocated; a word that becomes full is marked full one level up, and so on. */
  add(i: number): void {
    if (this.has(i)) return;
    this.blocks[Math.floor(i / BLOCK_OFFSETS)]!++;
    let idx = i;
    for (const words of this.levels) {
      const w = idx >>> 5;
      words[w] = words[w]! | (1 << (idx & 31));
      if (words[w] !== FULL) return;
      idx = w;
    }
  }

  /** delete marks offset i free; a word that was full is marked not full one level up, and so on. */
  delete(i: number): void {
    if (!this.has(i)) return;
    this.blocks[Math.floor(i / BLOCK_OFFSETS)]!--;
    let idx = i;
    for (const words of this.levels) {
      const w = idx >>> 5;
      const wasFull = words[w] === FULL;
      words[w] = words[w]! & ~(1 << (idx & 31));
      if (!wasFull) return;
      idx = w;
    }
  }

  /** nextClear returns the lowest free offset ≥ i, or `size` when there is none. */
  nextClear(i: number): number {
    // Climb while the word holding idx has no clear bit at or after it: one level up, idx becomes
    // the next word's index, and a clear bit there means "that word is not full".
    let level = 0;
    let idx = i;
    for (;;) {
      const words = this.levels[level];
      if (words === undefined || idx >>> 5 >= words.length) return this.size;
      const clear = ~words[idx >>> 5]! & (-1 << (idx & 31));
      if (clear !== 0) {
        idx = (idx & ~31) + ctz32(clear);
        break;
      }
      idx = (idx >>> 5) + 1;
      level++;
    }
    // Descend: at each level take the lowest clear bit of the word the level above points at.
    while (level > 0) {
      level--;
      idx = idx * 32 + ctz32(~this.levels[level]![idx]!);
    }
    return idx;
  }

  /** nextSet returns the lowest allocated offset ≥ i, or a value ≥ `size` when there is none. */
  nextSet(i: number): number {
    const words = this.bits;
    let w = i >>> 5;
    if (w >= words.length) return this.size;
    let x = words[w]! & (-1 << (i & 31));
    while (x === 0) {
      w++;
      while (w % BLOCK_WORDS === 0 && w < words.length && this.blocks[w / BLOCK_WORDS] === 0) w += BLOCK_WORDS;
      if (w >= words.length) return this.size;
      x = words[w]!;
    }
    return w * 32 + ctz32(x);
  }

  /** count returns the number of allocated offsets in [lo, hi) (hi ≤ size). */
  count(lo: number, hi: number): number {
    if (lo >= hi) return 0;
    const words = this.bits;
    const first = lo >>> 5;
    const last = (hi - 1) >>> 5;
    const lowMask = -1 << (lo & 31); // bits ≥ lo in the first word
    const highMask = -1 >>> (31 - ((hi - 1) & 31)); // bits ≤ hi - 1 in the last word
    if (first === last) return popcount32(words[first]! & lowMask & highMask);
    let n = popcount32(words[first]! & lowMask) + popcount32(words[last]! & highMask);
    let w = first + 1;
    while (w < last) {
      if (w % BLOCK_WORDS === 0 && w + BLOCK_WORDS <= last) {
        n += this.blocks[w / BLOCK_WORDS]!;
        w += BLOCK_WORDS;
      } else {
        n += popcount32(words[w]!);
        w++;
      }
    }
    return n;
  }
}
