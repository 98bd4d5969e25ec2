import { UDP_RCVBUF_BYTES, UDP_SNDBUF_BYTES } from '../constants.js';
import { FdWatcher, loadNative, type NativeAddon } from '../tun/native.js';
import { udpOpenError } from './dgram-udp.js';
import type { PacketConn } from './packet-conn.js';

/** NativeUdpOptions says where to bind. */
export interface NativeUdpOptions {
  /** bindAddr is the local IPv4 address (host order); default 0 = every address. */
  bindAddr?: number;
  /** port to bind; 0 asks the kernel for a free one (read it back from `port`). */
  port: number;
  /** rcvbuf is the kernel receive buffer in bytes; default UDP_RCVBUF_BYTES. */
  rcvbuf?: number;
  /** sndbuf is the kernel send buffer in bytes; default UDP_SNDBUF_BYTES. */
  sndbuf?: number;
  /** offload asks for UDP GSO and GRO where the kernel has them (the data plane does; DNS does not). */
  offload?: boolean;
}

/**
 * NativeUdp is the data-plane PacketConn on the native addon: recvmmsg/sendmmsg batches, a
 * libuv readiness watcher, and kernel buffers forced to the requested size when privileged.
 * Each method is one native call per batch and allocates nothing per datagram.
 *
 * DF is set on every datagram: one larger than the kernel's path MTU is refused (a skipped
 * datagram), never fragmented; the caller keeps datagrams within the path. A receive that fails for another reason than "nothing queued" returns 0
 * and bumps `recvErrors`/`lastRecvErrno` instead of throwing.
 */
export class NativeUdp implements PacketConn {
  readonly port: number;
  /** fd is the socket's file descriptor; owned by this object until close(). */
  readonly fd: number;
  /** recvErrors counts receives that failed with an error other than EAGAIN. */
  recvErrors = 0;
  /** lastRecvErrno is the errno of the last failed receive (0 if none). */
  lastRecvErrno = 0;
  /** gso: see PacketConn; turns false after the kernel refused a train (see gsoOffReason). */
  gso: boolean;
  readonly gro: boolean;
  /** gsoOffReason says why GSO is off although it was asked for, or '' when it is on or not asked for. */
  gsoOffReason = '';
  /** stats[0] counts trains the kernel refused (sent in pieces instead); written by the addon. */
  readonly #stats = new Uint32Array(1);

  readonly #native: NativeAddon;
  #closed = false;
  readonly #watcher: FdWatcher;

  private constructor(native: NativeAddon, fd: number, port: number, gso: boolean, gro: boolean, offload: boolean) {
    this.#native = native;
    this.fd = fd;
    this.#watcher = new FdWatcher(native, fd);
    this.port = port;
    this.gso = gso;
    this.gro = gro;
    if (offload && !gso) this.gsoOffReason = 'kernel has no UDP_SEGMENT';
  }

  /**
   * open binds a socket. Throws WeftError 'EWEFT_CONFIG' when the port is in use, the address is
   * not local or the port is privileged; 'EWEFT_NATIVE' for any other failure; TunOpenError
   * (EWEFT_TUN_OPEN) when the addon is not built.
   */
  static open(opts: NativeUdpOptions): NativeUdp {
    const native = loadNative();
    const bindAddr = opts.bindAddr ?? 0;
    try {
      const offload = opts.offload === true;
      const r = native.udpOpen(
        bindAddr,
        opts.port,
        opts.rcvbuf ?? UDP_RCVBUF_BYTES,
        opts.sndbuf ?? UDP_SNDBUF_BYTES,
        offload,
      );
      return new NativeUdp(native, r.fd, r.port, r.gso, r.gro, offload);
    } catch (err) {
      throw udpOpenError(bindAddr, opts.port, err, 'EWEFT_NATIVE');
    }
  }

  /** onReadable: see PacketConn. */
  onReadable(cb: (() => void) | undefined): void {
    if (!this.#closed) this.#watcher.set(cb);
  }

  /** recvBatch: see PacketConn. All arrays and `buf` are borrowed until this call returns. */
  recvBatch(
    buf: Buffer,
    offset: number,
    stride: number,
    max: number,
    lengths: Int32Array,
    addrs: Uint32Array,
    ports: Uint16Array,
    gsoSizes?: Uint16Array,
  ): number {
    if (this.#closed) return 0;
    const n =
      gsoSizes !== undefined && this.gro
        ? this.#native.recvBatch(this.fd, buf, offset, stride, max, lengths, addrs, ports, gsoSizes)
        : this.#native.recvBatch(this.fd, buf, offset, stride, max, lengths, addrs, ports);
    if (gsoSizes !== undefined && !this.gro && n > 0) gsoSizes.fill(0, 0, n);
    if (n >= 0) return n;
    this.recvErrors++;
    this.lastRecvErrno = -n;
    return 0;
  }

  /** sendBatch: see PacketConn. Borrowed until this call returns: the kernel has copied the data by then. */
  sendBatch(
    buf: Buffer,
    offsets: Int32Array,
    lengths: Int32Array,
    addrs: Uint32Array,
    ports: Uint16Array,
    count: number,
    gsoSizes?: Uint16Array,
  ): number {
    if (this.#closed) return 0;
    if (gsoSizes === undefined) return this.#native.sendBatch(this.fd, buf, offsets, lengths, addrs, ports, count);
    // Without GSO the addon still splits trains (its refusal path), one sendto per piece.
    const before = this.#stats[0] as number;
    const sent = this.#native.sendBatch(this.fd, buf, offsets, lengths, addrs, ports, count, gsoSizes, this.#stats);
    if (this.#stats[0] !== before && this.gso) {
      this.gso = false;
      this.gsoOffReason = 'the kernel refused a UDP GSO train (no checksum offload on the route?)';
    }
    return sent;
  }

  /** gsoRefused counts trains the kernel refused (each was sent in pieces instead). */
  get gsoRefused(): number {
    return this.#stats[0] as number;
  }

  /** buffers reads the kernel buffer sizes in effect (the kernel reports twice what was set). */
  buffers(): { rcvbuf: number; sndbuf: number } {
    return this.#native.socketBuffers(this.fd);
  }

  /** closed says whether close() was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** close stops the watcher and closes the socket; idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watcher.close();
    this.#native.close(this.fd);
  }
}
