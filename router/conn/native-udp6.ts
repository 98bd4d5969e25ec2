import { WeftError } from '../../common/errors.js';
import { FdWatcher, isNativeSystemError, loadNative, type NativeAddon } from '../tun/native.js';

/** NativeUdp6Options says where to bind and which device's link-local scope to use. */
export interface NativeUdp6Options {
  /** port to bind on [::]; 0 asks the kernel for a free one (read it back from `port`). */
  readonly port: number;
  /** device is the interface whose index is the scope of the link-local addresses sent to and heard from. */
  readonly device: string;
  /** rcvbuf / sndbuf are the kernel buffers in bytes; default 0 = the kernel's default. */
  readonly rcvbuf?: number;
  readonly sndbuf?: number;
  /** native is the addon (default: loadNative()). */
  readonly native?: NativeAddon;
}

/**
 * NativeUdp6 is an IPv6 UDP socket on the native addon: recvmmsg/sendmmsg batches with 16-byte
 * addresses and numeric scopes (interface indexes), and a libuv readiness watcher. Nothing turns
 * an interface name into an index after `open` (Node's dgram socket does that twice per datagram,
 * each time with a socket, an ioctl and a close). Each method is one native call per batch and
 * allocates nothing per datagram.
 *
 * Datagram i of a batch: its address is `addrs[16*i, 16*i + 16)`, its scope `scopes[i]` (the
 * device index for a link-local address, else 0), its port `ports[i]`; slots as in
 * NativeAddon.recvBatch (a datagram larger than its slot is reported with length -1).
 * A receive that fails for another reason than "nothing queued" returns 0 and bumps
 * `recvErrors`/`lastRecvErrno`. After `close()` every call returns 0.
 */
export class NativeUdp6 {
  readonly port: number;
  /** ifindex is the device's interface index, read once at open. */
  readonly ifindex: number;
  /** fd is the socket's file descriptor; owned by this object until close(). */
  readonly fd: number;
  /** recvErrors counts receives that failed with an error other than EAGAIN. */
  recvErrors = 0;
  /** lastRecvErrno is the errno of the last failed receive (0 if none). */
  lastRecvErrno = 0;

  readonly #native: NativeAddon;
  readonly #watcher: FdWatcher;
  #closed = false;

  private constructor(native: NativeAddon, fd: number, port: number, ifindex: number) {
    this.#native = native;
    this.fd = fd;
    this.port = port;
    this.ifindex = ifindex;
    this.#watcher = new FdWatcher(native, fd);
  }

  /**
   * open binds the socket. Throws WeftError 'EWEFT_CONFIG' when the port is in use or the device
   * does not exist, 'EWEFT_NATIVE' for any other failure; TunOpenError when the addon is not built.
   */
  static open(opts: NativeUdp6Options): NativeUdp6 {
    const native = opts.native ?? loadNative();
    try {
      const r = native.udp6Open(opts.port, opts.device, opts.rcvbuf ?? 0, opts.sndbuf ?? 0);
      return new NativeUdp6(native, r.fd, r.port, r.ifindex);
    } catch (err) {
      const code = isNativeSystemError(err) ? err.code : '';
      const where = `UDP [::]:${opts.port} on ${opts.device}`;
      if (code === 'EADDRINUSE')
        throw new WeftError('EWEFT_CONFIG', `UDP port ${opts.port} is already in use (IPv6)`, { cause: err });
      if (code === 'ENODEV' || code === 'ENXIO')
        throw new WeftError('EWEFT_CONFIG', `cannot open ${where}: no such device`, { cause: err });
      throw new WeftError('EWEFT_NATIVE', `cannot open ${where}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** onReadable installs the readiness callback (once per loop turn while datagrams wait), or with undefined stops it. */
  onReadable(cb: (() => void) | undefined): void {
    if (!this.#closed) this.#watcher.set(cb);
  }

  /** recvBatch receives up to `max` datagrams (see the class comment); everything is borrowed until it returns. */
  recvBatch(
    buf: Buffer,
    offset: number,
    stride: number,
    max: number,
    lengths: Int32Array,
    addrs: Uint8Array,
    scopes: Uint32Array,
    ports: Uint16Array,
  ): number {
    if (this.#closed) return 0;
    const n = this.#native.recvBatch6(this.fd, buf, offset, stride, max, lengths, addrs, scopes, ports);
    if (n >= 0) return n;
    this.recvErrors++;
    this.lastRecvErrno = -n;
    return 0;
  }

  /**
   * sendBatch sends datagrams 0..count-1 with one sendmmsg (per 256); returns how many the kernel
   * accepted: a datagram whose destination fails (EMSGSIZE, no route, no neighbour yet) is skipped.
   * Borrowed until it returns: the kernel has copied the data by then.
   */
  sendBatch(
    buf: Buffer,
    offsets: Int32Array,
    lengths: Int32Array,
    addrs: Uint8Array,
    scopes: Uint32Array,
    ports: Uint16Array,
    count: number,
  ): number {
    if (this.#closed || count === 0) return 0;
    return this.#native.sendBatch6(this.fd, buf, offsets, lengths, addrs, scopes, ports, count);
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
