import { checkSlots, checkSpans, ImmediateReadiness, TUN_BATCH_WORDS } from '../readiness.js';
import type { TunDevice } from './device.js';

/** MemoryTunOptions configures a MemoryTun. */
export interface MemoryTunOptions {
  /** name reported by the device; default 'mem0' ('mem0'/'mem1' for a pair). */
  name?: string;
  /** kind is 'tun' (IP packets, the default) or 'tap' (Ethernet frames). */
  kind?: 'tun' | 'tap';
  /** queueLimit bounds the packets waiting to be read (and `written`); default 1024. */
  queueLimit?: number;
  /**
   * vnetHdr: every packet carries a 10-byte virtio-net header first (as a TUN device opened with
   * IFF_VNET_HDR); the IP version check looks past it.
   */
  vnetHdr?: boolean;
}

const QUEUE_LIMIT_DEFAULT = 1024;
const ETH_HEADER_LEN = 14;

/**
 * MemoryTun is an in-process TunDevice for tests and benchmarks, the analog of wireguard-go's
 * tuntest.ChannelTUN. Packets reach its read side through `inject` (as if the kernel handed them
 * over) or from the other end of a `pair()`; what the router writes goes to the other end of the
 * pair, else to the `onWrite` hook, else to the `written` queue.
 *
 * It behaves like a kernel device where the router can tell: reads are level-triggered (the
 * callback runs once per event-loop turn via setImmediate while packets are queued), a packet
 * longer than its slot is reported with length -1, a full queue drops and counts (`rxDropped`),
 * and in 'tun' mode a written packet that is not IPv4/IPv6 is refused and counted (`txRejected`).
 * readBatch allocates nothing; writeBatch copies each packet (the caller's buffer is borrowed).
 */
export class MemoryTun implements TunDevice {
  readonly name: string;
  readonly kind: 'tun' | 'tap';
  readonly queueLimit: number;
  /** vnetHdr: see MemoryTunOptions. */
  readonly vnetHdr: boolean;
  /** rxDropped counts packets dropped because the read queue was full. */
  rxDropped = 0;
  /** txRejected counts written packets refused as a kernel TUN would (empty, or not IP in 'tun' mode). */
  txRejected = 0;
  /** writtenDropped counts packets not kept in `written` because it was full. */
  writtenDropped = 0;
  /**
   * written holds copies of the packets written to an unpaired device without an `onWrite` hook,
   * oldest first, at most queueLimit. Tests read and clear it.
   */
  readonly written: Buffer[] = [];
  /**
   * onWrite, when set on an unpaired device, receives each accepted packet instead of `written`.
   * @param packet borrowed: valid until the hook returns; copy it to keep it.
   */
  onWrite: ((packet: Buffer) => void) | undefined;

  #peer: MemoryTun | undefined;
  readonly #queue: (Buffer | undefined)[];
  #head = 0;
  #count = 0;
  readonly #readiness = new ImmediateReadiness(() => this.#count > 0);
  #closed = false;

  constructor(opts: MemoryTunOptions = {}) {
    this.name = opts.name ?? 'mem0';
    this.kind = opts.kind ?? 'tun';
    this.queueLimit = opts.queueLimit ?? QUEUE_LIMIT_DEFAULT;
    this.vnetHdr = opts.vnetHdr === true;
    if (!Number.isInteger(this.queueLimit) || this.queueLimit < 1) {
      throw new RangeError(`MemoryTun: queueLimit must be a positive integer, got ${opts.queueLimit}`);
    }
    this.#queue = new Array<Buffer | undefined>(this.queueLimit).fill(undefined);
  }

  /**
   * pair returns two connected devices: a packet written to one becomes readable on the other.
   * Names default to `${name}0`/`${name}1` with name 'mem'.
   */
  static pair(opts: MemoryTunOptions = {}): [MemoryTun, MemoryTun] {
    const base = opts.name ?? 'mem';
    const a = new MemoryTun({ ...opts, name: `${base}0` });
    const b = new MemoryTun({ ...opts, name: `${base}1` });
    a.#peer = b;
    b.#peer = a;
    return [a, b];
  }

  /**
   * inject queues a packet for readBatch, as if the kernel had routed it to the device.
   * @param packet owned by the device from now on: do not modify it afterwards.
   * @returns false if it was dropped (queue full, counted in rxDropped, or device closed).
   */
  inject(packet: Buffer): boolean {
    if (this.#closed) return false;
    if (this.#count === this.queueLimit) {
      this.rxDropped++;
      return false;
    }
    this.#queue[(this.#head + this.#count) % this.queueLimit] = packet;
    this.#count++;
    this.#readiness.notify();
    return true;
  }

  /** queued is the number of packets waiting to be read. */
  get queued(): number {
    return this.#count;
  }

  /** closed says whether close() was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** onReadable: see TunDevice. */
  onReadable(cb: (() => void) | undefined): void {
    this.#readiness.set(cb);
  }

  /** readBatch: see TunDevice. `buf` and `lengths` are borrowed until this call returns. */
  readBatch(buf: Buffer, offset: number, stride: number, max: number, lengths: Int32Array): number {
    if (this.#closed) return 0;
    checkSlots('readBatch', buf.length, offset, stride, max, lengths.length, TUN_BATCH_WORDS);
    const room0 = stride - (offset % stride);
    let i = 0;
    while (i < max && this.#count > 0) {
      const pkt = this.#queue[this.#head] as Buffer;
      this.#queue[this.#head] = undefined;
      this.#head = (this.#head + 1) % this.queueLimit;
      this.#count--;
      const pos = offset + i * stride;
      const room = Math.min(room0, buf.length - pos);
      if (pkt.length > room) {
        lengths[i] = -1;
      } else {
        pkt.copy(buf, pos);
        lengths[i] = pkt.length;
      }
      i++;
    }
    return i;
  }

  /** writeBatch: see TunDevice. Borrowed until this call returns; accepted packets are copied. */
  writeBatch(buf: Buffer, offsets: Int32Array, lengths: Int32Array, count: number): number {
    if (this.#closed) return 0;
    checkSpans('writeBatch', buf.length, offsets, lengths, count, offsets.length, TUN_BATCH_WORDS);
    let accepted = 0;
    for (let i = 0; i < count; i++) {
      const off = offsets[i] as number;
      const len = lengths[i] as number;
      if (this.#refuses(buf, off, len)) {
        this.txRejected++;
        continue;
      }
      accepted++;
      const peer = this.#peer;
      if (peer !== undefined) {
        if (peer.#closed) continue;
        const copy = Buffer.allocUnsafe(len);
        buf.copy(copy, 0, off, off + len);
        peer.inject(copy);
      } else if (this.onWrite !== undefined) {
        this.onWrite(buf.subarray(off, off + len));
      } else if (this.written.length < this.queueLimit) {
        const copy = Buffer.allocUnsafe(len);
        buf.copy(copy, 0, off, off + len);
        this.written.push(copy);
      } else {
        this.writtenDropped++;
      }
    }
    return accepted;
  }

  /** close drops queued packets and stops callbacks; idempotent. A peer's later writes vanish. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#readiness.close();
    this.#queue.fill(undefined);
    this.#head = 0;
    this.#count = 0;
  }

  #refuses(buf: Buffer, off: number, len: number): boolean {
    if (this.kind === 'tap') return len < ETH_HEADER_LEN;
    const v = this.vnetHdr ? 10 : 0;
    if (len <= v) return true;
    const version = (buf[off + v] as number) >> 4;
    return version !== 4 && version !== 6;
  }
}
