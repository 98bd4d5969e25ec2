/**
 * TunDevice is a TUN (IP packets) or TAP (Ethernet frames) device opened by this process.
 *
 * All I/O is synchronous and non-blocking and works on caller-owned buffers, so the datapath
 * allocates nothing per packet. Readiness is level-triggered: `onReadable` fires (once per event
 * loop turn at most) while packets are queued; the callback drains with `readBatch` until it
 * returns less than `max` or 0.
 *
 * After `close()`, reads return 0, writes return 0, and the readable callback never fires again.
 */
export interface TunDevice {
  /** name is the kernel interface name (may differ from the requested one, e.g. `weft%d`). */
  readonly name: string;
  /** kind says whether the device carries IP packets ('tun') or Ethernet frames ('tap'). */
  readonly kind: 'tun' | 'tap';

  /**
   * onReadable installs the callback run when packets can be read (replacing any previous one)
   * and starts the readiness watcher. Pass `undefined` to stop watching.
   */
  onReadable(cb: (() => void) | undefined): void;

  /**
   * readBatch reads up to `max` packets. Packet i lands at `buf[offset + i*stride ..]` and its
   * length is stored in `lengths[i]`. Its room is `stride - offset % stride` (so the headroom of
   * the next slot is never written), cut at the end of `buf`. A packet longer than its room is
   * not truncated silently: it is consumed and reported with length -1 (LinuxTun reads one spare
   * byte to notice), and the bytes in its slot are then meaningless; callers size `stride` for
   * the device MTU and count -1 as a drop. Returns how many were read, -1 entries included (0
   * when none are queued). `lengths.length` must be >= max.
   */
  readBatch(buf: Buffer, offset: number, stride: number, max: number, lengths: Int32Array): number;

  /**
   * writeBatch writes `count` packets, packet i being `buf[offsets[i] .. offsets[i]+lengths[i]]`.
   * Returns how many the kernel accepted; a short count means the device queue was full and the
   * rest were dropped (the caller counts them), not that the batch failed.
   */
  writeBatch(buf: Buffer, offsets: Int32Array, lengths: Int32Array, count: number): number;

  /** close releases the file descriptor; idempotent. The kernel removes a non-persistent device. */
  close(): void;
}
