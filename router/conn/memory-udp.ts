import { WeftError } from '../../common/errors.js';
import { formatIPv4 } from '../../common/types.js';
import { checkSlots, checkSpans, ImmediateReadiness, UDP_BATCH_WORDS } from '../readiness.js';
import type { PacketConn } from './packet-conn.js';

/**
 * DatagramFilter decides per datagram whether MemoryUdpNet delivers it (true) or drops it
 * (false). Addresses are host-order IPv4.
 */
export type DatagramFilter = (
  srcAddr: number,
  srcPort: number,
  dstAddr: number,
  dstPort: number,
  len: number,
) => boolean;

/** MemoryUdpOptions says where a MemoryUdp binds on its MemoryUdpNet. */
export interface MemoryUdpOptions {
  /** addr is the socket's IPv4 address (host order, not 0): its "host" on the in-memory network. */
  addr: number;
  /** port to bind; 0 or absent picks a free one from 49152 up. */
  port?: number;
  /** queueLimit bounds the datagrams waiting to be received; default 1024. */
  queueLimit?: number;
  /** gso: sendBatch takes UDP GSO trains (as the kernel does); default true. Either way trains are delivered. */
  gso?: boolean;
  /**
   * gro: a train sent to this socket is received whole, with its segment size, as the kernel
   * does for a socket with UDP_GRO on (default false: its datagrams are received one by one).
   */
  gro?: boolean;
}

/** MemoryUdpNetStats counts what happened to datagrams handed to the network. */
export interface MemoryUdpNetStats {
  delivered: number;
  /** blocked: dropped by block(a, b). */
  blocked: number;
  /** filtered: dropped by `filter`. */
  filtered: number;
  /** noListener: no socket bound at the destination (UDP to a closed port). */
  noListener: number;
  /** queueFull: the destination's receive queue was full. */
  queueFull: number;
  /** tooBig: larger than the path MTU of the link (see `setPathMtu`), dropped as a DF datagram is. */
  tooBig: number;
}

const EPHEMERAL_PORT_MIN = 49152;
const QUEUE_LIMIT_DEFAULT = 1024;

/**
 * MemoryUdpNet is an in-process UDP/IPv4 network (nebula's e2e router, wireguard-go's bindtest):
 * sockets keyed by (address, port) exchange datagrams synchronously, so several routers can run
 * in one process without root. Links between hosts can be cut with `block`, and any datagram
 * can be dropped by `filter`. Delivery copies the datagram into the receiver's bounded queue.
 */
export class MemoryUdpNet {
  /** stats counts deliveries and drops since the network was made. */
  readonly stats: MemoryUdpNetStats = { delivered: 0, blocked: 0, filtered: 0, noListener: 0, queueFull: 0, tooBig: 0 };
  /** filter, when set, is asked about every datagram that is not blocked. */
  filter: DatagramFilter | undefined;

  readonly #sockets = new Map<number, MemoryUdp>();
  readonly #blocked = new Map<number, Set<number>>();
  /** #pathMtu holds the IP-level path MTU from one host to another, where one is set. */
  readonly #pathMtu = new Map<number, number>();
  #nextPort = EPHEMERAL_PORT_MIN;

  /** open binds a socket; throws WeftError 'EWEFT_CONFIG' if (addr, port) is taken or addr is 0. */
  open(opts: MemoryUdpOptions): MemoryUdp {
    const addr = opts.addr >>> 0;
    if (addr === 0) throw new WeftError('EWEFT_CONFIG', 'a MemoryUdp needs a concrete address, not 0.0.0.0');
    let port = opts.port ?? 0;
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new WeftError('EWEFT_CONFIG', `invalid UDP port ${port}`);
    }
    if (port === 0) port = this.#freePort(addr);
    const key = endpointKey(addr, port);
    if (this.#sockets.has(key)) throw new WeftError('EWEFT_CONFIG', `UDP port ${port} is already in use`);
    const sock = new MemoryUdp(
      addr,
      port,
      opts.queueLimit ?? QUEUE_LIMIT_DEFAULT,
      this.#route,
      () => this.#sockets.delete(key),
      opts.gso ?? true,
      opts.gro ?? false,
    );
    this.#sockets.set(key, sock);
    return sock;
  }

  /** block drops every datagram between hosts a and b, both ways, until unblock. */
  block(a: number, b: number): void {
    this.#link(a >>> 0, b >>> 0, true);
    this.#link(b >>> 0, a >>> 0, true);
  }

  /** unblock restores the link between hosts a and b. */
  unblock(a: number, b: number): void {
    this.#link(a >>> 0, b >>> 0, false);
    this.#link(b >>> 0, a >>> 0, false);
  }

  /** unblockAll restores every link. */
  unblockAll(): void {
    this.#blocked.clear();
  }

  /**
   * setPathMtu makes the links between hosts a and b carry IP packets of at most `mtu` bytes
   * (outer IPv4 20 + UDP 8 + payload), both ways; larger datagrams are dropped as DF datagrams
   * on a real path are (counted in `tooBig`). 0 removes the limit.
   */
  setPathMtu(a: number, b: number, mtu: number): void {
    for (const k of [pairKey(a >>> 0, b >>> 0), pairKey(b >>> 0, a >>> 0)]) {
      if (mtu > 0) this.#pathMtu.set(k, mtu);
      else this.#pathMtu.delete(k);
    }
  }

  /** isBlocked says whether datagrams from a to b are dropped by block(). */
  isBlocked(a: number, b: number): boolean {
    return this.#blocked.get(a >>> 0)?.has(b >>> 0) ?? false;
  }

  /** sockets lists the bound endpoints as "a.b.c.d:port" (for debugging and tests). */
  endpoints(): string[] {
    return [...this.#sockets.values()].map((s) => `${formatIPv4(s.addr)}:${s.port}`);
  }

  /** #route carries one datagram, or a train of `seg`-byte datagrams when 0 < seg < len. */
  readonly #route = (
    src: MemoryUdp,
    buf: Buffer,
    off: number,
    len: number,
    dstAddr: number,
    dstPort: number,
    seg: number,
  ) => {
    const dst = this.#sockets.get(endpointKey(dstAddr, dstPort));
    const train = seg > 0 && seg < len;
    const mtu = this.#pathMtu.get(pairKey(src.addr, dstAddr));
    if (train && dst?.gro === true && !this.isBlocked(src.addr, dstAddr) && this.filter === undefined) {
      // Received whole, as UDP GRO on one host hands a GSO train over.
      if (mtu !== undefined && seg + 28 > mtu) {
        this.stats.tooBig++;
        return;
      }
      if (dst.deliver(buf, off, len, src.addr, src.port, seg)) this.stats.delivered++;
      else this.stats.queueFull++;
      return;
    }
    const step = train ? seg : len;
    const pieces = len === 0 ? 1 : Math.ceil(len / step);
    for (let k = 0; k < pieces; k++) {
      const at = k * step;
      const n = Math.min(step, len - at);
      if (this.isBlocked(src.addr, dstAddr)) {
        this.stats.blocked++;
        continue;
      }
      if (mtu !== undefined && n + 28 > mtu) {
        this.stats.tooBig++;
        continue;
      }
      if (this.filter !== undefined && !this.filter(src.addr, src.port, dstAddr, dstPort, n)) {
        this.stats.filtered++;
        continue;
      }
      if (dst === undefined) {
        this.stats.noListener++;
        continue;
      }
      if (dst.deliver(buf, off + at, n, src.addr, src.port, 0)) this.stats.delivered++;
      else this.stats.queueFull++;
    }
  };

  #link(from: number, to: number, blocked: boolean): void {
    let set = this.#blocked.get(from);
    if (blocked) {
      if (set === undefined) {
        set = new Set();
        this.#blocked.set(from, set);
      }
      set.add(to);
    } else {
      set?.delete(to);
    }
  }

  #freePort(addr: number): number {
    for (let tries = 0; tries <= 65535 - EPHEMERAL_PORT_MIN; tries++) {
      const port = this.#nextPort;
      this.#nextPort = port === 65535 ? EPHEMERAL_PORT_MIN : port + 1;
      if (!this.#sockets.has(endpointKey(addr, port))) return port;
    }
    throw new WeftError('EWEFT_CONFIG', `no free UDP port on ${formatIPv4(addr)}`);
  }
}

type Route = (
  src: MemoryUdp,
  buf: Buffer,
  off: number,
  len: number,
  dstAddr: number,
  dstPort: number,
  seg: number,
) => void;

/**
 * MemoryUdp is one socket on a MemoryUdpNet (make it with `net.open`). It keeps the PacketConn
 * contract like the kernel does: a datagram to a port nobody listens on is "sent" and vanishes,
 * one to port 0 is skipped, a full receive queue drops (counted by the network), readiness is a
 * coalesced setImmediate per event-loop turn while datagrams are queued.
 */
export class MemoryUdp implements PacketConn {
  readonly port: number;
  /** addr is this socket's address on the network (host order). */
  readonly addr: number;
  readonly queueLimit: number;
  /** gso and gro: see PacketConn and MemoryUdpOptions. */
  readonly gso: boolean;
  readonly gro: boolean;

  readonly #route: Route;
  readonly #release: () => void;
  readonly #queue: (Buffer | undefined)[];
  readonly #srcAddr: Uint32Array;
  readonly #srcPort: Uint16Array;
  readonly #seg: Uint16Array;
  #head = 0;
  #count = 0;
  readonly #readiness = new ImmediateReadiness(() => this.#count > 0);
  #closed = false;

  /** Use MemoryUdpNet.open; the constructor is wiring between the two. */
  constructor(
    addr: number,
    port: number,
    queueLimit: number,
    route: Route,
    release: () => void,
    gso = true,
    gro = false,
  ) {
    if (!Number.isInteger(queueLimit) || queueLimit < 1) {
      throw new RangeError(`MemoryUdp: queueLimit must be a positive integer, got ${queueLimit}`);
    }
    this.addr = addr;
    this.port = port;
    this.queueLimit = queueLimit;
    this.#route = route;
    this.#release = release;
    this.#queue = new Array<Buffer | undefined>(queueLimit).fill(undefined);
    this.#srcAddr = new Uint32Array(queueLimit);
    this.#srcPort = new Uint16Array(queueLimit);
    this.#seg = new Uint16Array(queueLimit);
    this.gso = gso;
    this.gro = gro;
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
    const n = Math.min(lengths.length, addrs.length, ports.length, gsoSizes?.length ?? lengths.length);
    checkSlots('recvBatch', buf.length, offset, stride, max, n, UDP_BATCH_WORDS);
    const room0 = stride - (offset % stride);
    let i = 0;
    while (i < max && this.#count > 0) {
      const h = this.#head;
      const d = this.#queue[h] as Buffer;
      this.#queue[h] = undefined;
      const pos = offset + i * stride;
      if (d.length > Math.min(room0, buf.length - pos)) {
        lengths[i] = -1;
      } else {
        d.copy(buf, pos);
        lengths[i] = d.length;
      }
      addrs[i] = this.#srcAddr[h] as number;
      ports[i] = this.#srcPort[h] as number;
      if (gsoSizes !== undefined) gsoSizes[i] = this.#seg[h] as number;
      this.#head = (h + 1) % this.queueLimit;
      this.#count--;
      i++;
    }
    return i;
  }

  /** sendBatch: see PacketConn. Borrowed until this call returns (delivery copies). */
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
    let sent = 0;
    for (let i = 0; i < count; i++) {
      const port = ports[i] as number;
      if (port === 0) continue; // the kernel refuses port 0 (EINVAL)
      const seg = gsoSizes === undefined ? 0 : (gsoSizes[i] as number);
      this.#route(this, buf, offsets[i] as number, lengths[i] as number, addrs[i] as number, port, seg);
      sent++;
    }
    return sent;
  }

  /**
   * deliver queues a copy of buf[off, off+len) from src (a train of `seg`-byte datagrams when
   * seg > 0); false if closed or the queue is full.
   */
  deliver(buf: Buffer, off: number, len: number, srcAddr: number, srcPort: number, seg = 0): boolean {
    if (this.#closed || this.#count === this.queueLimit) return false;
    const copy = Buffer.allocUnsafe(len);
    buf.copy(copy, 0, off, off + len);
    const slot = (this.#head + this.#count) % this.queueLimit;
    this.#queue[slot] = copy;
    this.#srcAddr[slot] = srcAddr;
    this.#srcPort[slot] = srcPort;
    this.#seg[slot] = seg;
    this.#count++;
    this.#readiness.notify();
    return true;
  }

  /** closed says whether close() was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** close unbinds the socket (its port is free again) and drops queued datagrams; idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#readiness.close();
    this.#queue.fill(undefined);
    this.#count = 0;
    this.#release();
  }
}

function endpointKey(addr: number, port: number): number {
  return addr * 65536 + port;
}

function pairKey(a: number, b: number): number {
  return a * 0x1_0000_0000 + b;
}
