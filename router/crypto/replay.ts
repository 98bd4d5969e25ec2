/**
 * ReplayWindow: the sliding anti-replay window of one receive key (RFC 6479, as WireGuard's
 * replay filter): a ring of 32-bit blocks of "seen" bits indexed by counter, advanced by
 * clearing whole blocks, so each packet costs a few integer operations and no allocation.
 *
 *   counters:   ... | too old | ←── REPLAY_WINDOW_PACKETS (2048) ──→ last | ahead ...
 *   verdict:          TooOld    Ok once, then Duplicate                    Ok (slides the window)
 *
 * Counters are JS numbers (exact integers below 2^53; the wire limit REJECT_AFTER_MESSAGES is far
 * below). The ring has RING_BLOCKS = 128 blocks (4096 bits), twice what the window needs, so a
 * counter inside the window is never in a block the slide just cleared.
 */

/** REPLAY_WINDOW_PACKETS: a counter this far or further behind the highest accepted is too old. */
export const REPLAY_WINDOW_PACKETS = 2048;

/**
 * REJECT_AFTER_MESSAGES is the first counter a receive key refuses (2^32). WireGuard's bound
 * is 2^64 − 2^13 − 1 because its counter field is 64 bits; ours is lower on purpose: a sender
 * ratchets to a fresh key after REKEY_AFTER_MESSAGES (2^30, data-crypto.ts), so no honest sender
 * comes near it, and 2^32 packets of at most 64 KiB keeps one AES-256-GCM key well inside the
 * CFRG AEAD usage limits even if a buggy or hostile sender never rekeys.
 */
export const REJECT_AFTER_MESSAGES = 2 ** 32;

/** ReplayVerdict is what check/update say about a counter; anything but Ok is a 'replay' drop. */
export const ReplayVerdict = {
  Ok: 0,
  /** Duplicate: this counter was already accepted. */
  Duplicate: 1,
  /** TooOld: the counter is REPLAY_WINDOW_PACKETS or more behind the highest accepted one. */
  TooOld: 2,
  /** Limit: the counter is at or past the key's limit (or not a valid counter at all). */
  Limit: 3,
} as const;
export type ReplayVerdict = (typeof ReplayVerdict)[keyof typeof ReplayVerdict];

const BLOCK_BITS = 32;
const RING_BLOCKS = 128;

/**
 * ReplayWindow tracks which counters one key has accepted. Call `check` before the (costly)
 * decryption to drop obvious replays early, and `update` only after the packet authenticated:
 * `update` checks again (two copies of one packet may sit in one batch) and records it.
 */
export class ReplayWindow {
  readonly #ring = new Uint32Array(RING_BLOCKS);
  #last = -1;

  /** @param limit the first counter refused (default REJECT_AFTER_MESSAGES, at most 2^53). */
  constructor(readonly limit: number = REJECT_AFTER_MESSAGES) {
    if (!(Number.isSafeInteger(limit) || limit === 2 ** 53) || limit < 1)
      throw new RangeError(`replay window limit must be an integer in [1, 2^53], got ${limit}`);
  }

  /** last is the highest counter accepted so far, or -1. */
  get last(): number {
    return this.#last;
  }

  /** reset forgets every counter (for a new key). */
  reset(): void {
    this.#ring.fill(0);
    this.#last = -1;
  }

  /** check says whether `counter` would be accepted now, without recording it. */
  check(counter: number): ReplayVerdict {
    if (!(counter >= 0 && counter < this.limit) || counter !== Math.floor(counter)) return ReplayVerdict.Limit;
    if (counter > this.#last) return ReplayVerdict.Ok;
    if (this.#last - counter >= REPLAY_WINDOW_PACKETS) return ReplayVerdict.TooOld;
    const block = Math.floor(counter / BLOCK_BITS);
    const bit = 1 << (counter - block * BLOCK_BITS);
    return (this.#ring[block % RING_BLOCKS]! & bit) !== 0 ? ReplayVerdict.Duplicate : ReplayVerdict.Ok;
  }

  /** update records an authenticated `counter`; anything but Ok means drop the packet (counted 'replay'). */
  update(counter: number): ReplayVerdict {
    if (!(counter >= 0 && counter < this.limit) || counter !== Math.floor(counter)) return ReplayVerdict.Limit;
    const block = Math.floor(counter / BLOCK_BITS);
    if (counter > this.#last) {
      // Slide: clear the blocks between the last one used and this one (at most the whole ring).
      const lastBlock = Math.floor(this.#last / BLOCK_BITS);
      const n = Math.min(block - lastBlock, RING_BLOCKS);
      for (let i = 1; i <= n; i++) this.#ring[(lastBlock + i) % RING_BLOCKS] = 0;
      this.#last = counter;
    } else if (this.#last - counter >= REPLAY_WINDOW_PACKETS) {
      return ReplayVerdict.TooOld;
    }
    const idx = block % RING_BLOCKS;
    const bit = 1 << (counter - block * BLOCK_BITS);
    const word = this.#ring[idx]!;
    if ((word & bit) !== 0) return ReplayVerdict.Duplicate;
    this.#ring[idx] = word | bit;
    return ReplayVerdict.Ok;
  }
}
