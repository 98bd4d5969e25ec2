/**
 * PacketConn is a bound UDP/IPv4 socket for the data plane (wireguard-go calls it a Bind).
 *
 * Like TunDevice it is synchronous, non-blocking, batched and works on caller-owned buffers.
 * Addresses are IPv4 as unsigned 32-bit integers in host order, ports as numbers.
 *
 * After `close()`, receives return 0, sends return 0, and the readable callback never fires again.
 */
export interface PacketConn {
  /** port is the local UDP port actually bound (useful when 0 was asked for). */
  readonly port: number;

  /**
   * gso says sendBatch takes UDP GSO trains: an entry with a non-zero `gsoSizes[i]` below its
   * length leaves as datagrams of that many bytes (the last may be shorter), with one system
   * call entry for the train. It may turn false at run time (the kernel refused a train; the
   * train was still sent, in pieces). Implementations without GSO still accept trains and send
   * them in pieces, so a caller may always pass them; they are just slower.
   */
  readonly gso: boolean;
  /**
   * gro says recvBatch may hand over coalesced trains (UDP GRO): several datagrams from one
   * source, back to back, each `gsoSizes[i]` bytes but the last, which may be shorter.
   */
  readonly gro: boolean;

  /** onReadable installs the readiness callback (level-triggered), or stops watching with undefined. */
  onReadable(cb: (() => void) | undefined): void;

  /**
   * recvBatch receives up to `max` datagrams: datagram i lands at `buf[offset + i*stride ..]`,
   * its length in `lengths[i]`, its source in `addrs[i]`/`ports[i]`. Datagrams longer than the
   * slot are truncated and reported with length -1 (the caller drops and counts them).
   * With `gsoSizes`, `gsoSizes[i]` is the segment size of a coalesced train (see `gro`), or 0
   * for a single datagram; without it trains are never returned.
   * Returns the number received (0 when none are queued).
   */
  recvBatch(
    buf: Buffer,
    offset: number,
    stride: number,
    max: number,
    lengths: Int32Array,
    addrs: Uint32Array,
    ports: Uint16Array,
    gsoSizes?: Uint16Array,
  ): number;

  /**
   * sendBatch sends `count` datagrams, datagram i being `buf[offsets[i] .. +lengths[i]]` to
   * `addrs[i]:ports[i]`. Returns how many were handed to the kernel; a short count means the
   * socket buffer was full or a destination was unreachable (the caller counts the rest as
   * dropped), not that the batch failed. Never throws for a per-datagram error. With
   * `gsoSizes`, entry i is a train of `gsoSizes[i]`-byte datagrams when that is non-zero and
   * below its length (see `gso`); a train counts as one.
   */
  sendBatch(
    buf: Buffer,
    offsets: Int32Array,
    lengths: Int32Array,
    addrs: Uint32Array,
    ports: Uint16Array,
    count: number,
    gsoSizes?: Uint16Array,
  ): number;

  /** close releases the socket; idempotent. */
  close(): void;
}
