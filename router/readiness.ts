/**
 * Shared plumbing of the JS batch devices (DgramUdp, MemoryUdp, MemoryTun): readable-callback
 * scheduling and the argument checks that mirror the native addon's.
 */

/**
 * ImmediateReadiness runs a device's readable callback the way the native devices do. It is
 * level-triggered: while a callback is set and `pending()` says items are queued, it runs the
 * callback from a setImmediate, and after each run it schedules again if items are still queued.
 * Scheduling is coalesced, so the callback fires at most once per event-loop turn however often
 * `notify()` is called, and never after `close()` (nor after `set(undefined)` until a new one).
 */
export class ImmediateReadiness {
  readonly #pending: () => boolean;
  #cb: (() => void) | undefined;
  #immediate: NodeJS.Immediate | undefined;
  #closed = false;

  readonly #fire = (): void => {
    this.#immediate = undefined;
    const cb = this.#cb;
    if (cb === undefined || !this.#pending() || this.#closed) return;
    try {
      cb();
    } finally {
      this.notify();
    }
  };

  /** @param pending says whether items are queued (cheap: called on every notify not yet scheduled). */
  constructor(pending: () => boolean) {
    this.#pending = pending;
  }

  /** set installs the readable callback (scheduling it if items are queued), or removes it on undefined; ignored once closed. */
  set(cb: (() => void) | undefined): void {
    if (this.#closed) return;
    this.#cb = cb;
    if (cb === undefined) {
      this.#cancel();
    } else {
      this.notify();
    }
  }

  /** notify schedules the callback for this event-loop turn if one is set, items are queued and none is scheduled yet. */
  notify(): void {
    if (this.#immediate === undefined && this.#cb !== undefined && !this.#closed && this.#pending()) {
      this.#immediate = setImmediate(this.#fire);
    }
  }

  /** close drops the callback and any scheduled run for good; idempotent. */
  close(): void {
    this.#closed = true;
    this.#cb = undefined;
    this.#cancel();
  }

  #cancel(): void {
    if (this.#immediate !== undefined) clearImmediate(this.#immediate);
    this.#immediate = undefined;
  }
}

/** BatchWords names what a device's batch-argument TypeErrors talk about, as its native counterpart words them. */
export interface BatchWords {
  /** entries names the per-slot arrays in the checkSlots message ('entries', 'lengths'). */
  readonly entries: string;
  /** item names one span in the checkSpans message ('datagram', 'packet'). */
  readonly item: string;
  /** arrays names the arrays a too-large count exceeds. */
  readonly arrays: string;
}

/** UDP_BATCH_WORDS words the errors of PacketConn recvBatch / sendBatch. */
export const UDP_BATCH_WORDS: BatchWords = {
  entries: 'entries',
  item: 'datagram',
  arrays: 'the offsets/lengths/addrs/ports arrays',
};

/** TUN_BATCH_WORDS words the errors of TunDevice readBatch / writeBatch. */
export const TUN_BATCH_WORDS: BatchWords = { entries: 'lengths', item: 'packet', arrays: 'offsets/lengths' };

/**
 * checkSlots throws the TypeError the native addon throws for slots outside the buffer: `max`
 * slots of `stride` bytes from `offset` must start inside `bufLen` bytes and fit `n` entries.
 */
export function checkSlots(
  fn: string,
  bufLen: number,
  offset: number,
  stride: number,
  max: number,
  n: number,
  words: BatchWords,
): void {
  if (
    Number.isInteger(offset) &&
    offset >= 0 &&
    Number.isInteger(stride) &&
    stride >= 1 &&
    Number.isInteger(max) &&
    max >= 0 &&
    max <= n &&
    (max === 0 || offset + (max - 1) * stride < bufLen)
  ) {
    return;
  }
  throw new TypeError(
    `${fn}: ${max} slots of ${stride} bytes from offset ${offset} do not fit a ${bufLen}-byte buffer and ${n} ${words.entries}`,
  );
}

/**
 * checkSpans throws the TypeError the native addon throws for spans outside the buffer: `count`
 * must fit the offsets and lengths arrays and `n` more entries, and each span must lie in `bufLen`.
 */
export function checkSpans(
  fn: string,
  bufLen: number,
  offsets: Int32Array,
  lengths: Int32Array,
  count: number,
  n: number,
  words: BatchWords,
): void {
  if (!Number.isInteger(count) || count < 0 || count > offsets.length || count > lengths.length || count > n) {
    throw new TypeError(`${fn}: count ${count} exceeds ${words.arrays}`);
  }
  for (let i = 0; i < count; i++) {
    const off = offsets[i] as number;
    const len = lengths[i] as number;
    if (off < 0 || len < 0 || off + len > bufLen) {
      throw new TypeError(`${fn}: ${words.item} ${i} [${off}, +${len}) lies outside the ${bufLen}-byte buffer`);
    }
  }
}
