/**
 * Data-plane encryption of sleeve datagrams (issue #13): DataSender seals trains of datagrams and
 * DataReceiver opens them, replay-checks them and counts what it drops, both over the native
 * addon's batched AEAD (router/tun/native/weft_native.c "AEAD"), with no allocation per packet.
 *
 * A sealed sleeve datagram uses the CRYPTO_RESERVE_BYTES (24) the MTU already reserves:
 *
 *   | outer IPv4 (20) | UDP (8) | sleeve header (16) | counter (8) | frames, encrypted | tag (16) |
 *                               |<-------- AAD (24) ------------->|
 *
 *   counter, 8 bytes big-endian:
 *     bits 63..53  zero
 *     bit  52      key family: 0 = the keys of our control connection with the peer, 1 = end-to-end
 *                  keys made through the mesh with a peer we have no connection with (e2e-keys.ts)
 *     bits 51..48  key phase: the sender's key generation mod 16 (tells the receiver which key)
 *     bits 47..0   sequence number within that generation, from 0
 *
 * The nonce is the generation's static IV XOR the whole counter field. The sleeve header is
 * authenticated but stays readable, so relays route on it and forward what they cannot read; its
 * ttl byte (offset 3) is authenticated as zero, because relays decrement it.
 *
 * Keys: one traffic secret per direction per connection (keys.ts). Generation g+1 is ratcheted
 * from generation g (keys.ts dataGeneration), so rekeying needs no message: the sender moves on
 * after REKEY_AFTER_MESSAGES, REKEY_AFTER_BYTES or REKEY_AFTER_TIME_MS, and the receiver, which
 * holds the previous, current and next generations, follows when a packet opens under the next
 * one (in-flight packets of the previous one still open). A new handshake (reconnect) installs a
 * new traffic secret the same way: `install` keeps the old current key as the previous one.
 *
 * Over 400 lines because the sender and the receiver are two ends of one format: the counter
 * layout, the key phases, the ratchet and the rekey limits above must match exactly on both, and
 * one file beside that description is what keeps them matching.
 */
import { CRYPTO_RESERVE_BYTES, SLEEVE_HEADER_LEN } from '../constants.js';
import type { NativeAddon, NativeAeadKey } from '../tun/native.js';
import { AEAD_TAG_BYTES, type AeadCipher } from './aead.js';
import { dataGeneration } from './keys.js';
import { REJECT_AFTER_MESSAGES, ReplayVerdict, ReplayWindow } from './replay.js';

/** DATA_COUNTER_OFFSET is where the 8-byte counter sits, right after the sleeve header. */
export const DATA_COUNTER_OFFSET = SLEEVE_HEADER_LEN;
/** DATA_AAD_BYTES is the authenticated cleartext: sleeve header and counter (24). */
export const DATA_AAD_BYTES = SLEEVE_HEADER_LEN + 8;
/** DATA_TTL_OFFSET is the sleeve ttl byte, authenticated as zero (relays change it). */
export const DATA_TTL_OFFSET = 3;
/** DATA_SEAL_OVERHEAD_BYTES is what sealing adds to a datagram: counter and tag, the whole reserve. */
export const DATA_SEAL_OVERHEAD_BYTES = 8 + AEAD_TAG_BYTES;
/** DATA_SEALED_MIN_BYTES is the shortest datagram that can open (header, counter, tag). */
export const DATA_SEALED_MIN_BYTES = DATA_AAD_BYTES + AEAD_TAG_BYTES;
/** KEY_PHASES is how many key phases the counter field distinguishes (4 bits). */
export const KEY_PHASES = 16;
/** PHASE_UNIT is the counter value of one key phase step (2^48). */
const PHASE_UNIT = 2 ** 48;
/** FAMILY_UNIT is the counter value of the end-to-end key family's bit (2^52, still exact in a double). */
const FAMILY_UNIT = 2 ** 52;
/** FAMILY_BIT is that bit in the counter's second byte (bits 55..48). */
const FAMILY_BIT = 0x10;

/** isEndToEnd says whether the sealed datagram at `off` is sealed with end-to-end keys (family bit set). */
export function isEndToEnd(buf: Buffer, off: number): boolean {
  const at = off + DATA_COUNTER_OFFSET + 1;
  return at < buf.length && (buf[at]! & FAMILY_BIT) !== 0;
}

/**
 * REKEY_AFTER_MESSAGES (2^30): a sender ratchets to the next generation after this many datagrams
 * under one key. Far below REJECT_AFTER_MESSAGES (2^32, replay.ts), where receivers refuse.
 */
export const REKEY_AFTER_MESSAGES = 2 ** 30;
/**
 * REKEY_AFTER_BYTES (2^36 = 64 GiB, 2^32 AES blocks): for AES-256-GCM the CFRG AEAD-limits bound
 * on a distinguishing attack, (blocks + messages)^2 / 2^129, stays below 2^-64 per key.
 */
export const REKEY_AFTER_BYTES = 2 ** 36;
/** REKEY_AFTER_TIME_MS (120 s, as WireGuard's REKEY_AFTER_TIME) bounds what one leaked key exposes. */
export const REKEY_AFTER_TIME_MS = 120_000;

if (DATA_SEAL_OVERHEAD_BYTES !== CRYPTO_RESERVE_BYTES) throw new Error('sealed sleeve layout does not fit the reserve');

/**
 * CLOCK_EVERY_BATCHES: a sender reads the clock for REKEY_AFTER_TIME_MS once per this many batches
 * (each read allocates a 16-byte HeapNumber; 64 batches are at most a few ms of traffic).
 */
const CLOCK_EVERY_BATCHES = 64;

/** Generation is one key generation of one direction. */
interface Generation {
  key: NativeAeadKey;
  /** phase is the generation number mod KEY_PHASES. */
  phase: number;
  /** nextSecret derives the following generation; wiped once used. */
  nextSecret: Buffer;
}

function makeGeneration(native: NativeAddon, suite: AeadCipher, secret: Uint8Array, phase: number): Generation {
  const g = dataGeneration(secret);
  const key = native.aeadKey(suite, g.key, g.iv);
  g.key.fill(0);
  g.iv.fill(0);
  return { key, phase, nextSecret: g.nextSecret };
}

function dropGeneration(native: NativeAddon, g: Generation | undefined): void {
  if (g === undefined) return;
  native.aeadFree(g.key);
  g.nextSecret.fill(0);
}

/** DataCryptoOptions tune a sender or receiver (tests shorten the limits). */
export interface DataCryptoOptions {
  /** now is the clock in ms (default performance.now). */
  readonly now?: () => number;
  readonly rekeyAfterMessages?: number;
  readonly rekeyAfterBytes?: number;
  readonly rekeyAfterTimeMs?: number;
  /** endToEnd: these are end-to-end keys (the counter's family bit is set; e2e-keys.ts). */
  readonly endToEnd?: boolean;
}

/**
 * DataSender seals the datagrams of one direction (us → one peer). Single-threaded; not safe to
 * share between workers. close() wipes and frees the keys; later calls throw.
 */
export class DataSender {
  /** sealed counts datagrams sealed; rekeys counts generation changes (ratchets and installs). */
  sealed = 0;
  rekeys = 0;
  #gen: Generation | undefined;
  #seq = 0;
  #bytes = 0;
  #since: number;
  /** #batches counts sealBatch calls; the clock is read every CLOCK_EVERY_BATCHES only (a read boxes a double). */
  #batches = 0;
  #counters = new Float64Array(64);
  readonly #now: () => number;
  readonly #maxMessages: number;
  readonly #maxBytes: number;
  readonly #maxAgeMs: number;
  /** #family is FAMILY_UNIT for end-to-end keys, else 0: added to every counter. */
  readonly #family: number;

  constructor(
    private readonly native: NativeAddon,
    private readonly suite: AeadCipher,
    trafficSecret: Uint8Array,
    opts: DataCryptoOptions = {},
  ) {
    this.#family = opts.endToEnd === true ? FAMILY_UNIT : 0;
    this.#now = opts.now ?? (() => performance.now());
    this.#maxMessages = Math.min(opts.rekeyAfterMessages ?? REKEY_AFTER_MESSAGES, REKEY_AFTER_MESSAGES);
    this.#maxBytes = opts.rekeyAfterBytes ?? REKEY_AFTER_BYTES;
    this.#maxAgeMs = opts.rekeyAfterTimeMs ?? REKEY_AFTER_TIME_MS;
    this.#gen = makeGeneration(native, suite, trafficSecret, 0);
    this.#since = this.#now();
  }

  /** phase is the current key phase (generation mod KEY_PHASES). */
  get phase(): number {
    return this.#live().phase;
  }

  /**
   * sealBatch seals datagrams 0..count-1 in place. Datagram i starts at buf[offsets[i]] with its
   * sleeve header; lengths[i] counts header, the 8 counter bytes (any content: written here) and
   * the plaintext frames. Afterwards it is lengths[i] + AEAD_TAG_BYTES long (the tag follows it, so
   * that room must exist). Rekeys first when a limit is due. Returns count; throws RangeError for
   * spans outside buf (nothing sealed then). With `first`, the datagrams are entries
   * first..first+count-1 of offsets/lengths (one run per peer of a shared send list).
   */
  sealBatch(buf: Buffer, offsets: Int32Array, lengths: Int32Array, count: number, first = 0): number {
    const g = this.#due(count) ? this.#rotate() : this.#live();
    const end = first + count;
    if (end > lengths.length) throw new RangeError(`sealBatch: first + count ${end} exceeds lengths`);
    if (end > this.#counters.length) this.#counters = new Float64Array(Math.max(end, this.#counters.length * 2));
    const counters = this.#counters;
    const base = this.#family + g.phase * PHASE_UNIT + this.#seq - first;
    let bytes = 0;
    for (let i = first; i < end; i++) {
      counters[i] = base + i;
      bytes += lengths[i]!;
    }
    this.native.aeadSealBatch(
      g.key,
      buf,
      offsets,
      lengths,
      counters,
      count,
      DATA_AAD_BYTES,
      DATA_COUNTER_OFFSET,
      DATA_TTL_OFFSET,
      first,
    );
    this.#seq += count;
    this.#bytes += bytes;
    this.sealed += count;
    return count;
  }

  /** rotate ratchets to the next generation now (normally automatic, when a limit is due). */
  rotate(): void {
    this.#rotate();
  }

  #rotate(): Generation {
    const old = this.#live();
    const next = makeGeneration(this.native, this.suite, old.nextSecret, (old.phase + 1) % KEY_PHASES);
    dropGeneration(this.native, old);
    return this.#start(next);
  }

  /** install switches to a new traffic secret (a new handshake) at phase 0; the old keys are wiped. */
  install(trafficSecret: Uint8Array): void {
    const next = makeGeneration(this.native, this.suite, trafficSecret, 0);
    dropGeneration(this.native, this.#live());
    this.#start(next);
  }

  /** close wipes and frees the keys; idempotent. */
  close(): void {
    dropGeneration(this.native, this.#gen);
    this.#gen = undefined;
  }

  #start(g: Generation): Generation {
    this.#gen = g;
    this.#seq = 0;
    this.#bytes = 0;
    this.#since = this.#now();
    this.rekeys++;
    return g;
  }

  #due(count: number): boolean {
    if (this.#seq + count > this.#maxMessages || this.#bytes >= this.#maxBytes) return true;
    this.#batches = (this.#batches + 1) & (CLOCK_EVERY_BATCHES - 1);
    return this.#batches === 0 && this.#now() - this.#since >= this.#maxAgeMs;
  }

  #live(): Generation {
    if (this.#gen === undefined) throw new Error('DataSender used after close');
    return this.#gen;
  }
}

/** Slot is a receive generation with its replay window. */
interface Slot extends Generation {
  window: ReplayWindow;
}

/**
 * DataReceiver opens the datagrams of one direction (one peer → us). It holds three generations:
 * previous (in-flight packets after a rekey), current, and next (derived ahead, so following the
 * sender's ratchet costs no derivation on the packet path). close() wipes and frees them.
 */
export class DataReceiver {
  /** opened counts datagrams that authenticated and passed the replay window. */
  opened = 0;
  /** authDrops: did not authenticate (tampered, forged, wrong key, malformed); count as reason 'auth'. */
  authDrops = 0;
  /** replayDrops: authentic but a duplicate, too old or past the key's limit; reason 'replay'. */
  replayDrops = 0;
  /** rekeys counts generation changes (followed ratchets and installs). */
  rekeys = 0;
  #prev: Slot | undefined;
  #cur: Slot | undefined;
  #next: Slot | undefined;
  readonly #offs1 = new Int32Array(1);
  readonly #lens1 = new Int32Array(1);
  readonly #ctrs1 = new Float64Array(1);
  readonly #res1 = new Uint8Array(1);
  #counters = new Float64Array(64);
  /** #familyByte is FAMILY_BIT for end-to-end keys, else 0: what the counter's second byte must carry. */
  readonly #familyByte: number;
  readonly #family: number;

  constructor(
    private readonly native: NativeAddon,
    private readonly suite: AeadCipher,
    trafficSecret: Uint8Array,
    opts: Pick<DataCryptoOptions, 'endToEnd'> = {},
  ) {
    this.#familyByte = opts.endToEnd === true ? FAMILY_BIT : 0;
    this.#family = opts.endToEnd === true ? FAMILY_UNIT : 0;
    this.#cur = this.#slot(trafficSecret, 0);
    this.#next = this.#slot(this.#cur.nextSecret, 1);
  }

  /** phase is the current receive key phase. */
  get phase(): number {
    return this.#live().phase;
  }

  /**
   * openBatch opens datagrams 0..count-1 in place (datagram i at buf[offsets[i]], lengths[i]
   * bytes as received). results[i] = 1: authentic and new; its plaintext frames are at
   * offsets[i] + DATA_AAD_BYTES, lengths[i] - DATA_SEALED_MIN_BYTES bytes. results[i] = 0: drop
   * it (counted in authDrops or replayDrops). Returns how many opened. Throws only for misuse
   * (spans outside buf, arrays shorter than first + count). With `first`, the datagrams are
   * entries first..first+count-1 of offsets/lengths/results (one run per peer of a receive batch).
   */
  openBatch(
    buf: Buffer,
    offsets: Int32Array,
    lengths: Int32Array,
    count: number,
    results: Uint8Array,
    first = 0,
  ): number {
    const cur = this.#live();
    const end = first + count;
    if (!(first >= 0) || end > results.length || end > offsets.length || end > lengths.length)
      throw new RangeError(`openBatch: first + count ${end} exceeds offsets/lengths/results`);
    if (end > this.#counters.length) this.#counters = new Float64Array(Math.max(end, this.#counters.length * 2));
    // Fast path: every datagram is of the current phase, one native call.
    let fast = true;
    for (let i = first; i < end; i++) {
      if (this.#phaseOf(buf, offsets[i]!, lengths[i]!) !== cur.phase) {
        fast = false;
        break;
      }
    }
    let ok = 0;
    if (fast) {
      const counters = this.#counters;
      this.native.aeadOpenBatch(
        cur.key,
        buf,
        offsets,
        lengths,
        counters,
        count,
        DATA_AAD_BYTES,
        DATA_COUNTER_OFFSET,
        DATA_TTL_OFFSET,
        results,
        first,
      );
      for (let i = first; i < end; i++) {
        if (results[i] === 1) {
          results[i] = this.#accept(cur, counters[i]!);
          ok += results[i]!;
        } else {
          // Same phase as current but not its key: a previous epoch (after install) may share it.
          results[i] = this.#openOne(buf, offsets[i]!, lengths[i]!, cur.phase, cur);
          ok += results[i]!;
        }
      }
    } else {
      for (let i = first; i < end; i++) {
        const phase = this.#phaseOf(buf, offsets[i]!, lengths[i]!);
        results[i] = phase < 0 ? this.#authDrop() : this.#openOne(buf, offsets[i]!, lengths[i]!, phase, undefined);
        ok += results[i]!;
      }
    }
    return ok;
  }

  /** install adds a new traffic secret (a new handshake): it becomes current, the old current stays as previous. */
  install(trafficSecret: Uint8Array): void {
    const cur = this.#live();
    dropGeneration(this.native, this.#prev);
    dropGeneration(this.native, this.#next);
    this.#prev = cur;
    this.#cur = this.#slot(trafficSecret, 0);
    this.#next = this.#slot(this.#cur.nextSecret, 1);
    this.rekeys++;
  }

  /** close wipes and frees every generation; idempotent. */
  close(): void {
    for (const s of [this.#prev, this.#cur, this.#next]) dropGeneration(this.native, s);
    this.#prev = this.#cur = this.#next = undefined;
  }

  /** #phaseOf reads the key phase of a datagram, or -1 when it cannot be a sealed datagram. */
  #phaseOf(buf: Buffer, off: number, len: number): number {
    if (len < DATA_SEALED_MIN_BYTES || off < 0 || off + DATA_AAD_BYTES > buf.length) return -1;
    const b0 = buf[off + DATA_COUNTER_OFFSET]!;
    const b1 = buf[off + DATA_COUNTER_OFFSET + 1]!;
    return b0 === 0 && (b1 & ~(KEY_PHASES - 1)) === this.#familyByte ? b1 & (KEY_PHASES - 1) : -1;
  }

  /** #openOne tries the generations of this phase (current, next, previous; `skip` already failed). */
  #openOne(buf: Buffer, off: number, len: number, phase: number, skip: Slot | undefined): 0 | 1 {
    const cur = this.#cur;
    const next = this.#next;
    const prev = this.#prev;
    if (cur !== skip && this.#tryOpen(cur, buf, off, len, phase)) return this.#accept(cur!, this.#ctrs1[0]!);
    if (next !== skip && this.#tryOpen(next, buf, off, len, phase)) {
      this.#follow();
      return this.#accept(next!, this.#ctrs1[0]!);
    }
    if (prev !== skip && this.#tryOpen(prev, buf, off, len, phase)) return this.#accept(prev!, this.#ctrs1[0]!);
    return this.#authDrop();
  }

  /** #tryOpen opens one datagram under `s` if its phase matches; a failure leaves the datagram unchanged. */
  #tryOpen(s: Slot | undefined, buf: Buffer, off: number, len: number, phase: number): boolean {
    if (s === undefined || s.phase !== phase) return false;
    this.#offs1[0] = off;
    this.#lens1[0] = len;
    return (
      this.native.aeadOpenBatch(
        s.key,
        buf,
        this.#offs1,
        this.#lens1,
        this.#ctrs1,
        1,
        DATA_AAD_BYTES,
        DATA_COUNTER_OFFSET,
        DATA_TTL_OFFSET,
        this.#res1,
      ) === 1
    );
  }

  /** #follow makes next current after a packet opened under it (the sender ratcheted). */
  #follow(): void {
    const next = this.#next!;
    dropGeneration(this.native, this.#prev);
    this.#prev = this.#cur;
    this.#cur = next;
    this.#next = this.#slot(next.nextSecret, (next.phase + 1) % KEY_PHASES);
    this.rekeys++;
  }

  #accept(s: Slot, counter: number): 0 | 1 {
    if (s.window.update(counter - this.#family - s.phase * PHASE_UNIT) !== ReplayVerdict.Ok) {
      this.replayDrops++;
      return 0;
    }
    this.opened++;
    return 1;
  }

  #authDrop(): 0 {
    this.authDrops++;
    return 0;
  }

  #slot(secret: Uint8Array, phase: number): Slot {
    const g = makeGeneration(this.native, this.suite, secret, phase);
    return { ...g, window: new ReplayWindow(REJECT_AFTER_MESSAGES) };
  }

  #live(): Slot {
    if (this.#cur === undefined) throw new Error('DataReceiver used after close');
    return this.#cur;
  }
}
