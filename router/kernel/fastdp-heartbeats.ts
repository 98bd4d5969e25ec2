/**
 * FastdpHeartbeats proves the kernel fast path the way data uses it: a small UDP datagram from
 * our weft-vx link-local address to the peer's (`fe80::eui64(mac)%weft-vx`, port = the peer's
 * sleeve port) is routed by the kernel into weft-vx, encapsulated in VXLAN towards the peer's
 * underlay address (the fdb entry), decapsulated by the peer's weft-vx and delivered to the
 * peer's router, which answers the same way. Blocked VXLAN, a missing fdb/neighbour entry or a
 * peer without a fast path all end in silence, and the switch (overlay/switch.ts) moves that
 * peer's routes back to the TUN device.
 *
 * ```
 *  | magic "WFDP" (4) | type u8 | flags u8 | size u16 BE | sender peer name (6) | 0 (2) | stamp f64 BE (8) | padding |
 *    type 1 heartbeat, 2 ack: 24 B, size 0; flags bit 0: the sender's MTU proof towards the receiver is ok
 *    type 3 MTU probe: padded to `size` bytes, so that the IPv6 packet fills weft-vx's MTU
 *    type 4 probe ack: 24 B, `size` and stamp of the probe it answers
 * ```
 *
 * The small heartbeats prove the path, not its MTU: a path that drops full-size VXLAN frames
 * (a smaller underlay MTU on the peer's side, a middle link, a filter) still carries them. So the
 * switch also sends an MTU probe (overlay/switch.ts, kernel/fastdp-mtu.ts) once the heartbeats
 * are answered and then now and then; weft-vx sets DF on the outer header, so such a path drops
 * the probe instead of fragmenting it. Heartbeats and acks say whether the sender's proof holds
 * (flags bit 0), so that both ends use the fast path only when full-size frames cross both ways:
 * else one end would send through weft-vx and the other through sleeve, and a host filtering
 * reverse paths drops what arrives on the device its route back does not use.
 *
 * A datagram is accepted only from the link-local address that belongs to the peer name it
 * carries, on weft-vx: anything else is counted in `dropped` and ignored.
 */
import type { Logger } from '../../common/log.js';
import { type PeerName, peerNameFromBytes } from '../../common/types.js';
import { NativeUdp6 } from '../conn/native-udp6.js';
import type { NativeAddon } from '../tun/native.js';
import { fastdpMac, linkLocal6 } from './fastdp.js';

/** FASTDP_HEARTBEAT_LEN is the size of a heartbeat, an ack and a probe ack. */
export const FASTDP_HEARTBEAT_LEN = 24;
/** FASTDP_PROBE_MAX is the largest MTU probe accepted (a jumbo underlay's weft-vx). */
export const FASTDP_PROBE_MAX = 65_000;
/** IPV6_UDP_OVERHEAD_BYTES: a probe of weft-vx's MTU carries MTU − 40 (IPv6) − 8 (UDP) bytes. */
export const IPV6_UDP_OVERHEAD_BYTES = 48;
const MAGIC = 0x57464450; // "WFDP"
export const FASTDP_HEARTBEAT = 1;
export const FASTDP_ACK = 2;
export const FASTDP_PROBE = 3;
export const FASTDP_PROBE_ACK = 4;

type FastdpType = typeof FASTDP_HEARTBEAT | typeof FASTDP_ACK | typeof FASTDP_PROBE | typeof FASTDP_PROBE_ACK;

/** FastdpControl is one heartbeat, ack, probe or probe ack heard through weft-vx. */
export interface FastdpControl {
  readonly from: PeerName;
  readonly type: FastdpType;
  readonly stamp: number;
  /** size is a probe's length (of the probe answered, for a probe ack); 0 for heartbeats and acks. */
  readonly size: number;
  /** mtuOk: (heartbeats and acks) the sender's MTU proof towards us holds. */
  readonly mtuOk: boolean;
}

/** FASTDP_FLAG_MTU_OK is flags bit 0: the sender's MTU proof towards the receiver holds. */
export const FASTDP_FLAG_MTU_OK = 1;

/** fastdpProbeSize is the UDP payload of a probe whose IPv6 packet fills an MTU of `mtu`. */
export function fastdpProbeSize(mtu: number): number {
  return Math.min(FASTDP_PROBE_MAX, Math.max(FASTDP_HEARTBEAT_LEN, mtu - IPV6_UDP_OVERHEAD_BYTES));
}

/** encodeFastdpHeartbeat writes a heartbeat or ack (size 0), a probe of `size` bytes or its ack. */
export function encodeFastdpHeartbeat(type: number, self: PeerName, stamp: number, size = 0, flags = 0): Buffer {
  const b = Buffer.alloc(fastdpLength(type, size));
  writeFastdp(b, 0, nameBytes(self), type, stamp, size, flags);
  return b;
}

/** fastdpLength is how long a datagram of `type` is: a probe is `size` bytes, all others 24. */
function fastdpLength(type: number, size: number): number {
  return type === FASTDP_PROBE ? Math.max(size, FASTDP_HEARTBEAT_LEN) : FASTDP_HEARTBEAT_LEN;
}

/** writeFastdp writes the 24-byte header at b[off] for a sender name already parsed to its 6 bytes (padding untouched). */
function writeFastdp(
  b: Buffer,
  off: number,
  self: Uint8Array,
  type: number,
  stamp: number,
  size: number,
  flags: number,
): void {
  b.writeUInt32BE(MAGIC, off);
  b[off + 4] = type;
  b[off + 5] = flags & 0xff;
  b.writeUInt16BE(size & 0xffff, off + 6);
  b.set(self, off + 8);
  b[off + 14] = 0;
  b[off + 15] = 0;
  b.writeDoubleBE(stamp, off + 16);
}

/** nameBytes parses a peer name (`aa:bb:cc:dd:ee:ff`) to its 6 bytes. */
function nameBytes(name: PeerName): Uint8Array {
  const mac = name.split(':').map((x) => Number.parseInt(x, 16));
  const out = new Uint8Array(6);
  for (let i = 0; i < 6; i++) out[i] = mac[i] ?? 0;
  return out;
}

/** decodeFastdpHeartbeat parses one, or returns undefined for anything else. */
export function decodeFastdpHeartbeat(b: Buffer): FastdpControl | undefined {
  return decodeFastdpAt(b, 0, b.length);
}

/** decodeFastdpAt is {@link decodeFastdpHeartbeat} for the `len` bytes at b[off] (a receive slot). */
function decodeFastdpAt(b: Buffer, off: number, len: number): FastdpControl | undefined {
  if (len < FASTDP_HEARTBEAT_LEN || b.readUInt32BE(off) !== MAGIC) return undefined;
  const type = b[off + 4] as number;
  const size = b.readUInt16BE(off + 6);
  if (type === FASTDP_HEARTBEAT || type === FASTDP_ACK) {
    if (len !== FASTDP_HEARTBEAT_LEN || size !== 0) return undefined;
  } else if (type === FASTDP_PROBE) {
    if (len > FASTDP_PROBE_MAX || size !== len) return undefined;
  } else if (type === FASTDP_PROBE_ACK) {
    if (len !== FASTDP_HEARTBEAT_LEN || size < FASTDP_HEARTBEAT_LEN) return undefined;
  } else return undefined;
  const from = peerNameFromBytes(b, off + 8);
  const stamp = b.readDoubleBE(off + 16);
  if (!Number.isFinite(stamp)) return undefined;
  const mtuOk =
    (type === FASTDP_HEARTBEAT || type === FASTDP_ACK) && ((b[off + 5] as number) & FASTDP_FLAG_MTU_OK) !== 0;
  return { from, type, stamp, size, mtuOk };
}

/**
 * ADDR_CACHE_MAX bounds the cache of peers' link-local addresses: names come off the wire too
 * (checked against it), so a stranger's names must not grow it without end; full, it starts over.
 */
const ADDR_CACHE_MAX = 1024;
/**
 * RECV_SLOTS datagrams per recvmmsg, each in a slot of RECV_STRIDE bytes: room for the largest
 * probe (FASTDP_PROBE_MAX). The buffer is not zeroed, so only the pages datagrams were written to
 * are resident (a heartbeat touches one page of its slot).
 */
const RECV_SLOTS = 8;
const RECV_STRIDE = 65_536;
/** RECV_BATCHES_PER_WAKE bounds the receives per readiness callback (a flood must not starve the loop; the rest waits one turn). */
const RECV_BATCHES_PER_WAKE = 16;
/** SEND_SLOTS datagrams are queued at most before a flush; SEND_BUF_BYTES holds them (a full-size probe included). */
const SEND_SLOTS = 64;
const SEND_BUF_BYTES = 128 * 1024;

/** FastdpHeartbeatsOptions configure FastdpHeartbeats. */
export interface FastdpHeartbeatsOptions {
  readonly self: PeerName;
  readonly device: string;
  /** port is the UDP port to listen on (IPv6 only: our sleeve port, so peers know it). */
  readonly port: number;
  readonly log: Logger;
  readonly nowMs: () => number;
  readonly onControl: (c: FastdpControl) => void;
  /** mtuOk says whether our MTU proof towards a peer holds (flags of our acks; default false). */
  readonly mtuOk?: (peer: PeerName) => boolean;
  /** native is the addon (default: loadNative()). */
  readonly native?: NativeAddon;
}

/**
 * FastdpHeartbeats: see the module comment. Open with `open()`, release with `close()`.
 *
 * The socket is the native addon's (conn/native-udp6.ts): link-local destinations carry
 * weft-vx's interface index as a number, so no datagram costs a name-to-index conversion either
 * way. Sends are queued in one buffer and leave together: at the end of a receive batch (the acks
 * it asked for) or, for the switch's heartbeats and probes, in a microtask after the tick that
 * queued them, so the heartbeats of every peer due in a tick are one sendmmsg. A datagram that
 * cannot leave (no neighbour yet, EMSGSIZE) is silence, which the switch's liveness counts; it
 * is counted in `unsent`.
 */
export class FastdpHeartbeats {
  /** dropped counts datagrams refused: malformed, truncated, ours, or not from their sender's weft-vx address. */
  dropped = 0;
  /** unsent counts datagrams the kernel did not accept. */
  unsent = 0;
  /** batches counts sendmmsg batches handed to the kernel. */
  batches = 0;
  private sock: NativeUdp6 | undefined;
  /** selfBytes is our name's 6 bytes, as every datagram carries them. */
  private readonly selfBytes: Uint8Array;
  /** addrs caches each peer's link-local address bytes: sent to and checked ~twice per peer per interval. */
  private readonly addrs = new Map<PeerName, Uint8Array>();
  // Receive slots (allocated at open).
  private rbuf: Buffer = Buffer.alloc(0);
  private readonly rlens = new Int32Array(RECV_SLOTS);
  private readonly raddrs = new Uint8Array(16 * RECV_SLOTS);
  private readonly rscopes = new Uint32Array(RECV_SLOTS);
  private readonly rports = new Uint16Array(RECV_SLOTS);
  // The send queue: datagram i at sbuf[soffs[i]], sent to saddrs[16*i..]%sscopes[i] port sports[i].
  private sbuf: Buffer = Buffer.alloc(0);
  private readonly soffs = new Int32Array(SEND_SLOTS);
  private readonly slens = new Int32Array(SEND_SLOTS);
  private readonly saddrs = new Uint8Array(16 * SEND_SLOTS);
  private readonly sscopes = new Uint32Array(SEND_SLOTS);
  private readonly sports = new Uint16Array(SEND_SLOTS);
  private queued = 0;
  private cursor = 0;
  /** flushQueued: a microtask will flush; receiving: the receive callback flushes when it ends. */
  private flushQueued = false;
  private receiving = false;
  private ifindex = 0;
  private readonly flushTask = (): void => {
    this.flushQueued = false;
    this.flush();
  };
  private readonly onReadable = (): void => this.receive();

  constructor(private readonly o: FastdpHeartbeatsOptions) {
    this.selfBytes = nameBytes(o.self);
  }

  /** addrOf is a peer's weft-vx link-local address (16 bytes, fe80::eui64(fastdpMac(peer))). */
  private addrOf(peer: PeerName): Uint8Array {
    let a = this.addrs.get(peer);
    if (a === undefined) {
      a = new Uint8Array(linkLocal6(fastdpMac(peer)));
      if (this.addrs.size >= ADDR_CACHE_MAX) this.addrs.clear();
      this.addrs.set(peer, a);
    }
    return a;
  }

  /** port is the bound port (0 while closed). */
  get port(): number {
    return this.sock?.port ?? 0;
  }

  /** open binds the IPv6 socket on [::]:port; throws when it cannot (no IPv6, port in use, no device). */
  async open(): Promise<void> {
    const sock = NativeUdp6.open({
      port: this.o.port,
      device: this.o.device,
      ...(this.o.native === undefined ? {} : { native: this.o.native }),
    });
    this.sock = sock;
    this.ifindex = sock.ifindex;
    this.sscopes.fill(sock.ifindex);
    // Not zeroed: untouched pages are never resident (see RECV_SLOTS); every byte sent is written first.
    this.rbuf = Buffer.allocUnsafeSlow(RECV_SLOTS * RECV_STRIDE);
    this.sbuf = Buffer.allocUnsafeSlow(SEND_BUF_BYTES);
    sock.onReadable(this.onReadable);
  }

  /** receive drains the socket (bounded per wake), answers heartbeats and probes, then sends the answers. */
  private receive(): void {
    const sock = this.sock;
    if (sock === undefined) return;
    this.receiving = true;
    try {
      for (let b = 0; b < RECV_BATCHES_PER_WAKE; b++) {
        const n = sock.recvBatch(
          this.rbuf,
          0,
          RECV_STRIDE,
          RECV_SLOTS,
          this.rlens,
          this.raddrs,
          this.rscopes,
          this.rports,
        );
        for (let i = 0; i < n; i++) this.onDatagram(i);
        if (n < RECV_SLOTS) break;
      }
    } finally {
      this.receiving = false;
      this.flush();
    }
  }

  /** onDatagram handles receive slot i: checked, answered, handed to onControl, or counted in `dropped`. */
  private onDatagram(i: number): void {
    const len = this.rlens[i] as number;
    const c = len < 0 ? undefined : decodeFastdpAt(this.rbuf, i * RECV_STRIDE, len);
    if (c === undefined || c.from === this.o.self || this.rscopes[i] !== this.ifindex || !this.fromPeer(i, c.from)) {
      this.dropped++;
      return;
    }
    const port = this.rports[i] as number;
    if (c.type === FASTDP_HEARTBEAT) this.queue(c.from, port, FASTDP_ACK, c.stamp, 0, this.o.mtuOk?.(c.from));
    else if (c.type === FASTDP_PROBE) this.queue(c.from, port, FASTDP_PROBE_ACK, c.stamp, c.size);
    this.o.onControl(c);
  }

  /** fromPeer says whether receive slot i came from `peer`'s weft-vx link-local address. */
  private fromPeer(i: number, peer: PeerName): boolean {
    const want = this.addrOf(peer);
    const at = 16 * i;
    for (let k = 0; k < 16; k++) if (this.raddrs[at + k] !== want[k]) return false;
    return true;
  }

  /** sendHeartbeat sends a heartbeat stamped now to a peer listening on `port`; `mtuOk` sets flags bit 0. */
  sendHeartbeat(peer: PeerName, port: number, mtuOk = false): void {
    this.queue(peer, port, FASTDP_HEARTBEAT, this.o.nowMs(), 0, mtuOk);
  }

  /**
   * sendProbe sends an MTU probe of `mtu` bytes of IPv6 (weft-vx's MTU: the largest inner packet
   * the fast path must carry) stamped now. A probe that cannot leave (EMSGSIZE: the kernel already
   * knows a smaller path MTU) is silence too.
   */
  sendProbe(peer: PeerName, port: number, mtu: number): void {
    this.queue(peer, port, FASTDP_PROBE, this.o.nowMs(), fastdpProbeSize(mtu));
  }

  /** queue writes one datagram into the send queue and makes sure a flush follows. */
  private queue(peer: PeerName, port: number, type: number, stamp: number, size = 0, mtuOk = false): void {
    if (this.sock === undefined) return;
    const len = fastdpLength(type, size);
    if (this.queued === SEND_SLOTS || this.cursor + len > this.sbuf.length) this.flush();
    const i = this.queued;
    const off = this.cursor;
    writeFastdp(this.sbuf, off, this.selfBytes, type, stamp, size, mtuOk ? FASTDP_FLAG_MTU_OK : 0);
    if (len > FASTDP_HEARTBEAT_LEN) this.sbuf.fill(0, off + FASTDP_HEARTBEAT_LEN, off + len);
    this.soffs[i] = off;
    this.slens[i] = len;
    this.sports[i] = port;
    this.saddrs.set(this.addrOf(peer), 16 * i);
    this.queued = i + 1;
    this.cursor = (off + len + 7) & ~7;
    if (!this.receiving && !this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(this.flushTask);
    }
  }

  /** flush hands the queued datagrams to the kernel in one batch. */
  private flush(): void {
    const n = this.queued;
    if (n === 0) return;
    this.queued = 0;
    this.cursor = 0;
    const sock = this.sock;
    if (sock === undefined) return;
    const sent = sock.sendBatch(this.sbuf, this.soffs, this.slens, this.saddrs, this.sscopes, this.sports, n);
    this.batches++;
    this.unsent += n - sent;
  }

  /** close closes the socket (what is still queued is not sent); idempotent. */
  close(): void {
    this.sock?.close();
    this.sock = undefined;
    this.queued = 0;
    this.cursor = 0;
  }
}
