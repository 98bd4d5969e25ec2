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
}

/**
 * NativeUdp is the data-plane PacketConn on the native addon: recvmmsg/sendmmsg batches, a
 * libuv readiness watcher, and kernel buffers forced to the requested size when privileged.
 * Each method is one native call per batch and allocates nothing per datagram.
 *
 * DF is never set on its datagrams: one larger than the path MTU is fragmented by the kernel
 * rather than refused. A receive that fails for another reason than "nothing queued" returns 0
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

  readonly #native: NativeAddon;
  #closed = false;
  readonly #watcher: FdWatcher;

  private constructor(native: NativeAddon, fd: number, port: number) {
    this.#native = native;
    this.fd = fd;
    this.#watcher = new FdWatcher(native, fd);
    this.port = port;
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
      const r = native.udpOpen(bindAddr, opts.port, opts.rcvbuf ?? UDP_RCVBUF_BYTES, opts.sndbuf ?? UDP_SNDBUF_BYTES);
      return new NativeUdp(native, r.fd, r.port);
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
  ): number {
    if (this.#closed) return 0;
    const n = this.#native.recvBatch(this.fd, buf, offset, stride, max, lengths, addrs, ports);
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
  ): number {
    if (this.#closed) return 0;
    return this.#native.sendBatch(this.fd, buf, offsets, lengths, addrs, ports, count);
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
