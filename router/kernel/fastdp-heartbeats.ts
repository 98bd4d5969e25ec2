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
import dgram from 'node:dgram';
import type { Logger } from '../../common/log.js';
import { type PeerName, peerNameFromBytes } from '../../common/types.js';
import { fastdpMac, linkLocal6Text } from './fastdp.js';

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
  return encodeWith(nameBytes(self), type, stamp, size, flags);
}

/** encodeWith is {@link encodeFastdpHeartbeat} for a sender name already parsed to its 6 bytes. */
function encodeWith(self: Uint8Array, type: number, stamp: number, size: number, flags: number): Buffer {
  const b = Buffer.alloc(type === FASTDP_PROBE ? Math.max(size, FASTDP_HEARTBEAT_LEN) : FASTDP_HEARTBEAT_LEN);
  b.writeUInt32BE(MAGIC, 0);
  b.writeUInt8(type, 4);
  b.writeUInt8(flags & 0xff, 5);
  b.writeUInt16BE(size & 0xffff, 6);
  b.set(self, 8);
  b.writeDoubleBE(stamp, 16);
  return b;
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
  if (b.length < FASTDP_HEARTBEAT_LEN || b.readUInt32BE(0) !== MAGIC) return undefined;
  const type = b.readUInt8(4);
  const size = b.readUInt16BE(6);
  if (type === FASTDP_HEARTBEAT || type === FASTDP_ACK) {
    if (b.length !== FASTDP_HEARTBEAT_LEN || size !== 0) return undefined;
  } else if (type === FASTDP_PROBE) {
    if (b.length > FASTDP_PROBE_MAX || size !== b.length) return undefined;
  } else if (type === FASTDP_PROBE_ACK) {
    if (b.length !== FASTDP_HEARTBEAT_LEN || size < FASTDP_HEARTBEAT_LEN) return undefined;
  } else return undefined;
  const from = peerNameFromBytes(b, 8);
  const stamp = b.readDoubleBE(16);
  if (!Number.isFinite(stamp)) return undefined;
  const mtuOk = (type === FASTDP_HEARTBEAT || type === FASTDP_ACK) && (b.readUInt8(5) & FASTDP_FLAG_MTU_OK) !== 0;
  return { from, type, stamp, size, mtuOk };
}

/**
 * ADDR_CACHE_MAX bounds the cache of peers' link-local addresses: names come off the wire too
 * (checked against it), so a stranger's names must not grow it without end; full, it starts over.
 */
const ADDR_CACHE_MAX = 1024;

/** PeerAddr is a peer's weft-vx link-local address as its datagrams come from it, and as we send to it (scoped). */
interface PeerAddr {
  readonly from: string;
  readonly to: string;
}

/** passLookup hands an address literal to the socket as it is: every address sent to is one (no dns.lookup, no tick). */
function passLookup(
  address: string,
  _options: unknown,
  cb: (err: NodeJS.ErrnoException | null, address: string, family: number) => void,
): void {
  cb(null, address, 6);
}

/** ignoreSent is every send's callback: a send error (no neighbour yet, device down) is silence, which the liveness counts. */
function ignoreSent(): void {}

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
}

/** FastdpHeartbeats: see the module comment. Open with `open()`, release with `close()`. */
export class FastdpHeartbeats {
  dropped = 0;
  private sock: dgram.Socket | undefined;
  /** selfBytes is our name's 6 bytes, as every datagram carries them. */
  private readonly selfBytes: Uint8Array;
  /** addrs caches each peer's addresses: they are sent to and checked ~twice per peer per interval. */
  private readonly addrs = new Map<PeerName, PeerAddr>();

  constructor(private readonly o: FastdpHeartbeatsOptions) {
    this.selfBytes = nameBytes(o.self);
  }

  /** addrOf is a peer's weft-vx addresses (see {@link PeerAddr}). */
  private addrOf(peer: PeerName): PeerAddr {
    let a = this.addrs.get(peer);
    if (a === undefined) {
      const from = linkLocal6Text(fastdpMac(peer));
      a = { from, to: `${from}%${this.o.device}` };
      if (this.addrs.size >= ADDR_CACHE_MAX) this.addrs.clear();
      this.addrs.set(peer, a);
    }
    return a;
  }

  /** open binds the IPv6 socket; rejects when it cannot (no IPv6). */
  async open(): Promise<void> {
    const sock = dgram.createSocket({ type: 'udp6', ipv6Only: true, lookup: passLookup });
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind({ address: '::', port: this.o.port, exclusive: true }, () => {
        sock.off('error', reject);
        resolve();
      });
    });
    sock.on('error', (err) => this.o.log.warn('fastdp heartbeat socket error', { err: err.message }));
    sock.on('message', (msg, rinfo) => this.onMessage(msg, rinfo));
    sock.unref();
    this.sock = sock;
  }

  private onMessage(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const c = decodeFastdpHeartbeat(msg);
    // Node reports a scoped source as fe80::…%ifname (the scope may be absent on some versions).
    const src = rinfo.address;
    const pct = src.indexOf('%');
    const ok =
      c !== undefined &&
      c.from !== this.o.self &&
      (pct < 0 ? src === this.addrOf(c.from).from : src === this.addrOf(c.from).to);
    if (!ok || c === undefined) {
      this.dropped++;
      return;
    }
    if (c.type === FASTDP_HEARTBEAT) this.send(c.from, rinfo.port, FASTDP_ACK, c.stamp, 0, this.o.mtuOk?.(c.from));
    else if (c.type === FASTDP_PROBE) this.send(c.from, rinfo.port, FASTDP_PROBE_ACK, c.stamp, c.size);
    this.o.onControl(c);
  }

  /** sendHeartbeat sends a heartbeat stamped now to a peer listening on `port`; `mtuOk` sets flags bit 0. */
  sendHeartbeat(peer: PeerName, port: number, mtuOk = false): void {
    this.send(peer, port, FASTDP_HEARTBEAT, this.o.nowMs(), 0, mtuOk);
  }

  /**
   * sendProbe sends an MTU probe of `mtu` bytes of IPv6 (weft-vx's MTU: the largest inner packet
   * the fast path must carry) stamped now. A probe that cannot leave (EMSGSIZE: the kernel already
   * knows a smaller path MTU) is silence too.
   */
  sendProbe(peer: PeerName, port: number, mtu: number): void {
    this.send(peer, port, FASTDP_PROBE, this.o.nowMs(), fastdpProbeSize(mtu));
  }

  private send(peer: PeerName, port: number, type: number, stamp: number, size = 0, mtuOk = false): void {
    const sock = this.sock;
    if (sock === undefined) return;
    const flags = mtuOk ? FASTDP_FLAG_MTU_OK : 0;
    sock.send(encodeWith(this.selfBytes, type, stamp, size, flags), port, this.addrOf(peer).to, ignoreSent);
  }

  /** close closes the socket; idempotent. */
  close(): void {
    this.sock?.close();
    this.sock = undefined;
  }
}
