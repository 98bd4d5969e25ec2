import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { errorMessage, WeftError } from '../../common/errors.js';
import { formatIPv4 } from '../../common/types.js';
import { UDP_RCVBUF_BYTES, UDP_SNDBUF_BYTES } from '../constants.js';
import { checkSlots, checkSpans, ImmediateReadiness, UDP_BATCH_WORDS } from '../readiness.js';
import type { PacketConn } from './packet-conn.js';

/** DgramUdpOptions says where to bind and how much to queue in user space. */
export interface DgramUdpOptions {
  /** bindAddr is the local IPv4 address (host order); default 0 = every address. */
  bindAddr?: number;
  /** port to bind; 0 asks the kernel for a free one. */
  port: number;
  /** rcvbuf / sndbuf are the kernel socket buffers in bytes; defaults UDP_RCVBUF_BYTES / UDP_SNDBUF_BYTES. */
  rcvbuf?: number;
  sndbuf?: number;
  /** queueBytes bounds the receive ring holding datagrams until recvBatch; default 4 MiB. */
  queueBytes?: number;
  /** queueDatagrams bounds how many datagrams the receive ring holds; default 4096. */
  queueDatagrams?: number;
  /** sendRingBytes bounds the copies of sent datagrams Node may still hold; default 1 MiB. */
  sendRingBytes?: number;
}

const QUEUE_BYTES_DEFAULT = 4 * 1024 * 1024;
const QUEUE_DATAGRAMS_DEFAULT = 4096;
const SEND_RING_BYTES_DEFAULT = 1024 * 1024;
const ADDR_CACHE_MAX = 4096;

/** literalLookup resolves the dotted quads we always pass synchronously (no dns.lookup round trip). */
function literalLookup(address: string, _family: unknown, cb: (err: null, address: string, family: number) => void) {
  cb(null, address, 4);
}

/**
 * DgramUdp is the portable PacketConn on Node's `dgram`, for machines without the native addon.
 * It is slower (Node calls JS once per datagram and allocates a Buffer for each) but keeps the
 * PacketConn contract:
 *
 * - Receive: each 'message' is copied into a preallocated ring (bounded in bytes and datagrams;
 *   when full the datagram is dropped and counted in `rxDropped`), and readiness is signalled
 *   with one coalesced setImmediate per event-loop turn while datagrams are queued.
 * - Send: `socket.send(buf, off, len, port, addr)` may keep referencing `buf` after it returns.
 *   With Node's default lookup every send to an address waits a tick (dns.lookup defers even an
 *   IP literal), and whenever the kernel buffer is full libuv queues it
 *   (`getSendQueueCount() > 0`) until the socket is writable. Either way, a caller reusing its
 *   pool slot at once would corrupt the datagram. So sendBatch copies each datagram into a
 *   private send ring first (a memcpy, small next to dgram's per-send cost), resolves addresses
 *   synchronously, and reuses the ring only once Node's send queue is empty; a full ring ends the
 *   batch early like a full kernel buffer. The caller's buffer is therefore borrowed only until
 *   sendBatch returns.
 * - Errors: an 'error' handler is always attached (counted in `sendErrors`); a datagram Node
 *   refuses synchronously (port 0, ...) is skipped, never thrown.
 */
export class DgramUdp implements PacketConn {
  readonly port: number;
  /** gso and gro are false: Node's dgram has neither (trains passed to sendBatch go in pieces). */
  readonly gso = false;
  readonly gro = false;
  /** rxDropped counts datagrams dropped because the receive ring was full. */
  rxDropped = 0;
  /** sendErrors counts datagrams Node refused or reported failing through 'error'. */
  sendErrors = 0;
  /** lastError is the code of the last socket error reported through 'error', if any. */
  lastError: string | undefined;

  readonly #socket: Socket;
  // Receive ring: bytes in #rx, metadata per datagram in parallel arrays (FIFO).
  readonly #rx: Buffer;
  readonly #rxStart: Int32Array;
  readonly #rxLen: Int32Array;
  readonly #rxAddr: Uint32Array;
  readonly #rxPort: Uint16Array;
  #head = 0;
  #count = 0;
  #wpos = 0;
  #wrapped = false; // the write position has wrapped to the buffer start behind the read position
  // Send ring: copies Node may still reference; reset once Node's send queue is empty.
  readonly #tx: Buffer;
  #txPos = 0;
  readonly #addrCache = new Map<number, string>();
  readonly #readiness = new ImmediateReadiness(() => this.#count > 0);
  #closed = false;

  readonly #onMessage = (msg: Buffer, rinfo: RemoteInfo): void => {
    if (this.#closed) return;
    const len = msg.length;
    const start = this.#count === this.#rxStart.length ? -1 : this.#reserve(len);
    if (start < 0) {
      this.rxDropped++;
      return;
    }
    msg.copy(this.#rx, start);
    const slot = (this.#head + this.#count) % this.#rxStart.length;
    this.#rxStart[slot] = start;
    this.#rxLen[slot] = len;
    this.#rxAddr[slot] = parseDottedQuad(rinfo.address);
    this.#rxPort[slot] = rinfo.port;
    this.#count++;
    this.#readiness.notify();
  };

  readonly #onError = (err: Error & { code?: string }): void => {
    this.sendErrors++;
    this.lastError = err.code ?? err.message;
  };

  private constructor(socket: Socket, opts: DgramUdpOptions) {
    this.#socket = socket;
    this.port = socket.address().port;
    const slots = opts.queueDatagrams ?? QUEUE_DATAGRAMS_DEFAULT;
    this.#rx = Buffer.allocUnsafe(opts.queueBytes ?? QUEUE_BYTES_DEFAULT);
    this.#rxStart = new Int32Array(slots);
    this.#rxLen = new Int32Array(slots);
    this.#rxAddr = new Uint32Array(slots);
    this.#rxPort = new Uint16Array(slots);
    this.#tx = Buffer.allocUnsafe(opts.sendRingBytes ?? SEND_RING_BYTES_DEFAULT);
    socket.on('error', this.#onError);
    socket.on('message', this.#onMessage);
  }

  /**
   * open binds a socket. Rejects with WeftError 'EWEFT_CONFIG' when the port is in use, the
   * address is not local or the port is privileged, and 'EWEFT_SYSTEM' otherwise.
   */
  static async open(opts: DgramUdpOptions): Promise<DgramUdp> {
    const bindAddr = opts.bindAddr ?? 0;
    const socket = createSocket({
      type: 'udp4',
      lookup: literalLookup,
      recvBufferSize: opts.rcvbuf ?? UDP_RCVBUF_BYTES,
      sendBufferSize: opts.sndbuf ?? UDP_SNDBUF_BYTES,
    });
    try {
      await new Promise<void>((resolve, reject) => {
        const onError = (err: Error): void => {
          socket.off('listening', onListening);
          reject(err);
        };
        const onListening = (): void => {
          socket.off('error', onError);
          resolve();
        };
        socket.once('error', onError);
        socket.once('listening', onListening);
        socket.bind({ port: opts.port, address: formatIPv4(bindAddr), exclusive: true });
      });
    } catch (err) {
      try {
        socket.close();
      } catch {
        // already closed
      }
      throw udpOpenError(bindAddr, opts.port, err, 'EWEFT_SYSTEM');
    }
    return new DgramUdp(socket, opts);
  }

  /** onReadable: see PacketConn. */
  onReadable(cb: (() => void) | undefined): void {
    this.#readiness.set(cb);
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
    const n = Math.min(lengths.length, addrs.length, ports.length);
    checkSlots('recvBatch', buf.length, offset, stride, max, n, UDP_BATCH_WORDS);
    const room0 = stride - (offset % stride);
    const cap = this.#rxStart.length;
    let i = 0;
    while (i < max && this.#count > 0) {
      const h = this.#head;
      const start = this.#rxStart[h] as number;
      const len = this.#rxLen[h] as number;
      const pos = offset + i * stride;
      if (len > Math.min(room0, buf.length - pos)) {
        lengths[i] = -1;
      } else {
        this.#rx.copy(buf, pos, start, start + len);
        lengths[i] = len;
      }
      addrs[i] = this.#rxAddr[h] as number;
      ports[i] = this.#rxPort[h] as number;
      this.#head = (h + 1) % cap;
      this.#count--;
      if (this.#count === 0) {
        this.#wpos = 0;
        this.#wrapped = false;
      } else if ((this.#rxStart[this.#head] as number) < start) {
        this.#wrapped = false; // the reader followed the writer back to the start
      }
      i++;
    }
    gsoSizes?.fill(0, 0, i);
    return i;
  }

  /** sendBatch: see PacketConn. Borrowed until this call returns (each datagram is copied first). */
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
    const words = Math.min(addrs.length, ports.length, gsoSizes?.length ?? addrs.length);
    checkSpans('sendBatch', buf.length, offsets, lengths, count, words, UDP_BATCH_WORDS);
    const socket = this.#socket;
    const tx = this.#tx;
    if (socket.getSendQueueCount() === 0) this.#txPos = 0;
    let sent = 0;
    for (let i = 0; i < count; i++) {
      const off = offsets[i] as number;
      const len = lengths[i] as number;
      const port = ports[i] as number;
      const seg = gsoSizes === undefined ? 0 : (gsoSizes[i] as number);
      const step = seg > 0 && seg < len ? seg : len;
      if (port === 0 || step > tx.length) {
        this.sendErrors++;
        continue;
      }
      let done = 0;
      const pieces = len === 0 ? 1 : Math.ceil(len / step);
      for (let k = 0; k < pieces; k++) {
        const at = k * step;
        const n = Math.min(step, len - at);
        if (this.#txPos + n > tx.length) {
          if (socket.getSendQueueCount() !== 0) break; // Node still holds the ring: back-pressure
          this.#txPos = 0;
        }
        const start = this.#txPos;
        buf.copy(tx, start, off + at, off + at + n);
        this.#txPos = start + n;
        try {
          socket.send(tx, start, n, port, this.#addrString(addrs[i] as number));
          done++;
        } catch {
          this.sendErrors++;
        }
      }
      if (done > 0) sent++;
    }
    return sent;
  }

  /** closed says whether close() was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** close closes the socket (Node releases it on a later tick) and drops queued datagrams; idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#readiness.close();
    this.#count = 0;
    this.#socket.off('message', this.#onMessage);
    try {
      this.#socket.close();
    } catch {
      // already closed under us
    }
  }

  /** #reserve finds room for len bytes in the receive ring; returns the start or -1 if full. */
  #reserve(len: number): number {
    const cap = this.#rx.length;
    if (this.#count === 0) {
      this.#wpos = 0;
      this.#wrapped = false;
    }
    const rpos = this.#count === 0 ? cap : (this.#rxStart[this.#head] as number);
    let start = -1;
    if (this.#wrapped) {
      if (this.#wpos + len <= rpos) start = this.#wpos;
    } else if (this.#wpos + len <= cap) {
      start = this.#wpos;
    } else if (len <= rpos && this.#count > 0) {
      start = 0;
      this.#wrapped = true;
    }
    if (start >= 0) this.#wpos = start + len;
    return start;
  }

  #addrString(addr: number): string {
    let s = this.#addrCache.get(addr);
    if (s === undefined) {
      if (this.#addrCache.size >= ADDR_CACHE_MAX) this.#addrCache.clear();
      s = formatIPv4(addr);
      this.#addrCache.set(addr, s);
    }
    return s;
  }
}

/** parseDottedQuad reads "a.b.c.d" into a host-order u32 without allocating (0 if malformed). */
function parseDottedQuad(s: string): number {
  let addr = 0;
  let part = 0;
  let dots = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      addr = (addr << 8) | part;
      part = 0;
      dots++;
    } else if (c >= 48 && c <= 57) {
      part = part * 10 + (c - 48);
      if (part > 255) return 0;
    } else {
      return 0;
    }
  }
  return dots === 3 ? ((addr << 8) | part) >>> 0 : 0;
}

/**
 * udpOpenError maps a bind failure (an error with an errno `code`) to a WeftError: the usual
 * operator mistakes become 'EWEFT_CONFIG' with a message naming the port, anything else
 * `otherCode`. Shared by DgramUdp and NativeUdp.
 */
export function udpOpenError(
  bindAddr: number,
  port: number,
  err: unknown,
  otherCode: 'EWEFT_NATIVE' | 'EWEFT_SYSTEM',
): WeftError {
  const code = err instanceof Error ? (err as { code?: unknown }).code : undefined;
  const where = `${formatIPv4(bindAddr)}:${port}`;
  switch (code) {
    case 'EADDRINUSE':
      return new WeftError('EWEFT_CONFIG', `UDP port ${port} is already in use`, { cause: err });
    case 'EADDRNOTAVAIL':
      return new WeftError('EWEFT_CONFIG', `cannot bind UDP ${where}: address is not on this host`, { cause: err });
    case 'EACCES':
    case 'EPERM':
      return new WeftError('EWEFT_CONFIG', `permission denied binding UDP ${where}`, { cause: err });
    default:
      return new WeftError(otherCode, `cannot open UDP socket ${where}: ${errorMessage(err)}`, { cause: err });
  }
}
