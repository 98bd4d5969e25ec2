/**
 * Forwarder is the data plane: it moves packets between the TUN device and the UDP data sockets.
 *
 *   inside (host → overlay):
 *     TUN readable → readBatch into `inBuf` at HEADROOM → per packet: validate IPv4, look up the
 *     destination in the Fib (then in learned VXLAN endpoints) → write the sleeve or VXLAN+Ethernet
 *     prefix in place, in the headroom → one sendBatch per socket for the whole batch.
 *
 *   outside (overlay → host):
 *     UDP readable → recvBatch into `outBuf` → per datagram: validate the sleeve or VXLAN header,
 *     check who sent it and to whom → note where each inner IPv4 packet starts (no copy) → one
 *     writeBatch to the TUN. ARP requests for addresses this host serves are answered from a
 *     preallocated scratch buffer.
 *
 * Everything per packet is synchronous and allocation-free: buffers and index arrays are
 * preallocated here, headers are read and written in place, and bad packets become a counted
 * Drop, never an exception. The control plane changes routing only by assigning `fib`.
 */
import type { Logger } from '../../common/log.js';
import { noopLogger } from '../../common/log.js';
import type { PeerName } from '../../common/types.js';
import type { PacketConn } from '../conn/packet-conn.js';
import {
  BATCH_MAX,
  ETH_HEADER_LEN,
  HEADROOM_BYTES,
  SLEEVE_FRAME_HEADER_LEN,
  SLEEVE_TTL_INITIAL,
  SLOT_BYTES,
  VXLAN_HEADER_LEN,
} from '../constants.js';
import {
  ARP_FRAME_LEN,
  ARP_OP_REPLY,
  ARP_OP_REQUEST,
  ARP_PAD_LEN,
  arpIsIPv4,
  arpOp,
  arpSenderIp,
  arpSenderMacHi,
  arpSenderMacLo,
  arpTargetIp,
  checkSleeveHeader,
  checkVxlan,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ethDstHi,
  ethDstLo,
  ethSrcHi,
  ethSrcLo,
  ethType,
  ipv4PacketLen,
  isGroupMac,
  SLEEVE_HEARTBEAT_LEN,
  SLEEVE_PREFIX_LEN,
  SleeveCheck,
  SleeveType,
  sleeveDstHi,
  sleeveDstLo,
  sleeveFrameLen,
  sleeveHeartbeatStamp,
  sleeveSrcHi,
  sleeveSrcLo,
  sleeveType,
  VXLAN_PREFIX_LEN,
  VxlanCheck,
  writeArp,
  writeEthernetHeader,
  writeSleeveHeartbeat,
  writeSleevePrefix,
  writeVxlanHeader,
  writeVxlanPrefix,
} from '../overlay/frame.js';
import type { TunDevice } from '../tun/device.js';
import { Counters, Drop } from './counters.js';
import { Encap, Fib, type Hop, peerNameHi, peerNameLo } from './fib.js';
import {
  completeChecksum,
  segmentTcp4,
  VNET_F_NEEDS_CSUM,
  VNET_GSO_ECN,
  VNET_GSO_TCPV4,
  VNET_HDR_LEN,
  vnetCsumOffset,
  vnetCsumStart,
  vnetFlags,
  vnetGsoSize,
  vnetGsoType,
  vnetValid,
  writeVnetNone,
} from './gso.js';
import { LearnedEndpoints } from './learned.js';

/**
 * ETHERTYPE_WEFT_HEARTBEAT marks a data-path heartbeat carried inside VXLAN (IEEE 802 local
 * experimental EtherType 1).
 */
export const ETHERTYPE_WEFT_HEARTBEAT = 0x88b5;
/** ROUNDS_PER_WAKEUP bounds how many batches one readiness event drains, so neither direction starves. */
const ROUNDS_PER_WAKEUP = 8;
/** TUN_WRITE_MAX is how many inner packets one writeBatch carries at most (sleeve datagrams may bundle). */
const TUN_WRITE_MAX = BATCH_MAX * 16;
/** SEG_MAX and SEG_STRIDE size the buffer TCP super-packets are segmented into (for VXLAN). */
const SEG_MAX = 256;
const SEG_STRIDE = HEADROOM_BYTES + 9216;
/** BUNDLE_FRAME_MAX_BYTES: only frames this small are bundled (the copy stays cheap). */
const BUNDLE_FRAME_MAX_BYTES = 512;
/** BUNDLE_BYTES_DEFAULT fits a 1500-byte underlay (1500 - 20 - 8). */
const BUNDLE_BYTES_DEFAULT = 1472;
/** SLEEVE_DATAGRAM_MAX is the largest UDP payload (65535 - IPv4 20 - UDP 8). */
const SLEEVE_DATAGRAM_MAX = 65507;

/**
 * ControlDatagram is a heartbeat or heartbeat ack addressed to us, handed to the control plane
 * (the forwarder has already answered a heartbeat with an ack).
 */
export interface ControlDatagram {
  type: number;
  srcHi: number;
  srcLo: number;
  /** addr/port: where the datagram came from on the underlay. */
  addr: number;
  port: number;
  /** stamp is the timestamp the heartbeat's sender put in (echoed back in the ack). */
  stamp: number;
  /** overlay is the encapsulation it arrived in: sleeve, or VXLAN (a heartbeat frame inside VXLAN). */
  overlay: Encap;
}

/** ForwarderOptions configures a Forwarder. */
export interface ForwarderOptions {
  /** tun is the overlay device; the Forwarder reads and writes it but does not close it. */
  tun: TunDevice;
  /** sleeve is the socket bound to the sleeve port. */
  sleeve: PacketConn;
  /** vxlan is the socket bound to the VXLAN port; without it VXLAN is neither sent nor received. */
  vxlan?: PacketConn;
  /** localName is this router's peer name; its 48 bits double as our inner MAC for VXLAN. */
  localName: PeerName;
  /** vni is the VXLAN network identifier we send and accept. */
  vni: number;
  /** vxlanPort is the UDP port learned kernel VXLAN endpoints listen on. */
  vxlanPort: number;
  counters?: Counters;
  log?: Logger;
  /** onControl receives non-data sleeve datagrams (rare; may allocate). */
  onControl?: (d: ControlDatagram) => void;
  /**
   * vnetHdr says the TUN device carries a virtio-net header before every packet (IFF_VNET_HDR),
   * so TCP super-packets and partial checksums may be read from it and written to it.
   */
  vnetHdr?: boolean;
  /**
   * bundleBytes is the largest sleeve datagram (UDP payload) made by bundling small packets; keep
   * it within the underlay MTU minus IPv4 and UDP headers so bundles are never fragmented.
   * 0 turns bundling off. Default BUNDLE_BYTES_DEFAULT.
   */
  bundleBytes?: number;
  /** nowMs is the clock used for learning (tests pass a fake). */
  nowMs?: () => number;
}

/** Forwarder moves packets between a TUN device and the data sockets; see the file comment. */
export class Forwarder {
  /** fib is the forwarding snapshot; the control plane replaces it with one assignment. */
  fib: Fib = new Fib();
  /** learned holds VXLAN endpoints learned from received traffic. */
  readonly learned: LearnedEndpoints;
  readonly counters: Counters;

  private readonly tun: TunDevice;
  private readonly sleeve: PacketConn;
  private readonly vxlan: PacketConn | undefined;
  private readonly log: Logger;
  private readonly vni: number;
  private readonly vxlanPort: number;
  private readonly onControl: ((d: ControlDatagram) => void) | undefined;
  private readonly nowMs: () => number;
  private readonly nameHi: number;
  private readonly nameLo: number;
  /** vnet is VNET_HDR_LEN when the TUN device has virtio-net headers, else 0. */
  private readonly vnet: number;
  private running = false;

  // inside: TUN → UDP. Packet i is read at i*SLOT_BYTES + HEADROOM_BYTES.
  private readonly inBuf = Buffer.allocUnsafeSlow(BATCH_MAX * SLOT_BYTES);
  private readonly inLens = new Int32Array(BATCH_MAX);
  private readonly sOff = new Int32Array(BATCH_MAX);
  private readonly sLen = new Int32Array(BATCH_MAX);
  private readonly sAddr = new Uint32Array(BATCH_MAX);
  private readonly sPort = new Uint16Array(BATCH_MAX);
  /** sHop/sEnd: the hop and the end of the slot of each sleeve datagram in the batch (for bundling). */
  private readonly sHop: (Hop | undefined)[] = new Array(BATCH_MAX).fill(undefined);
  private readonly sEnd = new Int32Array(BATCH_MAX);
  /** bundleBytes caps a sleeve datagram that bundles several small packets. */
  private readonly bundleBytes: number;
  private readonly vOff = new Int32Array(BATCH_MAX);
  private readonly vLen = new Int32Array(BATCH_MAX);
  private readonly vAddr = new Uint32Array(BATCH_MAX);
  private readonly vPort = new Uint16Array(BATCH_MAX);
  // Segments of TCP super-packets bound for VXLAN: segment i at i*SEG_STRIDE + HEADROOM_BYTES.
  private readonly segBuf = Buffer.allocUnsafeSlow(SEG_MAX * SEG_STRIDE);
  private readonly segLens = new Int32Array(SEG_MAX);
  private readonly gOff = new Int32Array(SEG_MAX);
  private readonly gLen = new Int32Array(SEG_MAX);
  private readonly gAddr = new Uint32Array(SEG_MAX);
  private readonly gPort = new Uint16Array(SEG_MAX);
  private ng = 0;

  // outside: UDP → TUN. Datagram i is received at i*SLOT_BYTES; inner packets are written from there.
  private readonly outBuf = Buffer.allocUnsafeSlow(BATCH_MAX * SLOT_BYTES);
  private readonly rLens = new Int32Array(BATCH_MAX);
  private readonly rAddrs = new Uint32Array(BATCH_MAX);
  private readonly rPorts = new Uint16Array(BATCH_MAX);
  private readonly tOff = new Int32Array(TUN_WRITE_MAX);
  private readonly tLen = new Int32Array(TUN_WRITE_MAX);
  private readonly tHop: (Hop | undefined)[] = new Array(TUN_WRITE_MAX).fill(undefined);
  private tCount = 0;

  // Relayed sleeve datagrams, sent from outBuf where they were received.
  private readonly relOff = new Int32Array(BATCH_MAX);
  private readonly relLen = new Int32Array(BATCH_MAX);
  private readonly relAddr = new Uint32Array(BATCH_MAX);
  private readonly relPort = new Uint16Array(BATCH_MAX);
  private nr = 0;

  // Heartbeats and acks are built here, one at a time.
  private readonly hbBuf = Buffer.alloc(VXLAN_PREFIX_LEN + SLEEVE_HEARTBEAT_LEN);
  private readonly hbOff = new Int32Array(1);
  private readonly hbLen = new Int32Array(1);
  private readonly hbAddr = new Uint32Array(1);
  private readonly hbPort = new Uint16Array(1);

  // ARP replies are built here, one at a time.
  private readonly arpBuf = Buffer.alloc(ARP_FRAME_LEN);
  private readonly arpOff = new Int32Array(1);
  private readonly arpLen = new Int32Array([ARP_FRAME_LEN]);
  private readonly arpAddr = new Uint32Array(1);
  private readonly arpPort = new Uint16Array(1);

  constructor(opts: ForwarderOptions) {
    this.tun = opts.tun;
    this.sleeve = opts.sleeve;
    this.vxlan = opts.vxlan;
    this.vni = opts.vni;
    this.vxlanPort = opts.vxlanPort;
    this.counters = opts.counters ?? new Counters();
    this.log = opts.log ?? noopLogger;
    this.onControl = opts.onControl;
    this.nowMs = opts.nowMs ?? Date.now;
    this.nameHi = peerNameHi(opts.localName);
    this.nameLo = peerNameLo(opts.localName);
    this.vnet = opts.vnetHdr === true ? VNET_HDR_LEN : 0;
    this.bundleBytes = opts.bundleBytes ?? BUNDLE_BYTES_DEFAULT;
    this.learned = new LearnedEndpoints(opts.vxlanPort);
  }

  /** start begins forwarding (installs readiness callbacks); idempotent. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.tun.onReadable(this.onTunReadable);
    this.sleeve.onReadable(this.onSleeveReadable);
    this.vxlan?.onReadable(this.onVxlanReadable);
  }

  /** stop removes the readiness callbacks; the devices stay open (their owner closes them). */
  stop(): void {
    if (!this.running) return;
    this.running = false;
    this.tun.onReadable(undefined);
    this.sleeve.onReadable(undefined);
    this.vxlan?.onReadable(undefined);
  }

  /** onTunReadable drains the TUN device: the inside path. */
  readonly onTunReadable = (): void => {
    const buf = this.inBuf;
    const c = this.counters;
    const v = this.vnet;
    for (let round = 0; round < ROUNDS_PER_WAKEUP; round++) {
      const n = this.tun.readBatch(buf, HEADROOM_BYTES, SLOT_BYTES, BATCH_MAX, this.inLens);
      if (n <= 0) return;
      c.tunBatches++;
      const fib = this.fib;
      let ns = 0;
      let nv = 0;
      for (let i = 0; i < n; i++) {
        const base = i * SLOT_BYTES + HEADROOM_BYTES; // the virtio-net header, if any, then the packet
        const len = this.inLens[i] as number;
        if (len < 0) {
          c.drop(Drop.TooBig);
          continue;
        }
        const ip = base + v;
        const ipLen = len - v;
        c.tunRxPackets++;
        c.tunRxBytes += ipLen;
        if (ipLen < 20 || (buf[ip] as number) >>> 4 !== 4) {
          c.drop(ipLen > 0 && (buf[ip] as number) >>> 4 === 6 ? Drop.NotIPv4 : Drop.Malformed);
          continue;
        }
        const dst = buf.readUInt32BE(ip + 16);
        let hop = fib.lookup(dst);
        if (hop === undefined) {
          hop = this.learned.lookup(dst);
          if (hop === undefined) {
            c.drop(fib.isLocal(dst) ? Drop.Loop : Drop.NoRoute);
            continue;
          }
        }
        if (hop.encap === Encap.Vxlan && this.vxlan !== undefined) {
          if (v !== 0) {
            const gso = vnetGsoType(buf, base) & ~VNET_GSO_ECN;
            if (gso === VNET_GSO_TCPV4) {
              this.segmentForVxlan(buf, ip, ipLen, vnetGsoSize(buf, base), hop);
              continue;
            }
            if ((vnetFlags(buf, base) & VNET_F_NEEDS_CSUM) !== 0) {
              completeChecksum(buf, ip, ipLen, vnetCsumStart(buf, base), vnetCsumOffset(buf, base));
            }
          }
          if (ipLen > 0xffff - VXLAN_PREFIX_LEN) {
            c.drop(Drop.TooBig);
            continue;
          }
          this.vOff[nv] = this.vxlanEncap(buf, ip, hop);
          this.vLen[nv] = ipLen + VXLAN_PREFIX_LEN;
          this.vAddr[nv] = hop.addr;
          this.vPort[nv] = hop.port;
          nv++;
        } else {
          // A sleeve frame is the virtio-net header and the packet, so offloads cross the wire.
          const frame = ip - VNET_HDR_LEN;
          if (v === 0) writeVnetNone(buf, frame);
          const frameLen = ipLen + VNET_HDR_LEN;
          if (frameLen + SLEEVE_PREFIX_LEN > SLEEVE_DATAGRAM_MAX) {
            c.drop(Drop.TooBig);
            continue;
          }
          // Bundling: a small packet for the same peer as the previous datagram of this batch rides
          // in it as one more frame while the datagram stays within bundleBytes (no added delay:
          // only packets already read together are bundled).
          const last = ns - 1;
          if (
            last >= 0 &&
            this.sHop[last] === hop &&
            frameLen <= BUNDLE_FRAME_MAX_BYTES &&
            (this.sLen[last] as number) + SLEEVE_FRAME_HEADER_LEN + frameLen <= this.bundleBytes
          ) {
            const at = (this.sOff[last] as number) + (this.sLen[last] as number);
            if (at + SLEEVE_FRAME_HEADER_LEN + frameLen <= (this.sEnd[last] as number)) {
              buf.writeUInt16BE(frameLen, at);
              // copyWithin, not copy: Node's Buffer#copy makes a view object per call.
              buf.copyWithin(at + SLEEVE_FRAME_HEADER_LEN, frame, frame + frameLen);
              this.sLen[last] = (this.sLen[last] as number) + SLEEVE_FRAME_HEADER_LEN + frameLen;
              c.bundled++;
              hop.txPackets++;
              hop.txBytes += ipLen;
              continue;
            }
          }
          this.sHop[ns] = hop;
          this.sEnd[ns] = base - HEADROOM_BYTES + SLOT_BYTES;
          this.sOff[ns] = writeSleevePrefix(
            buf,
            frame,
            frameLen,
            SleeveType.Data,
            SLEEVE_TTL_INITIAL,
            this.nameHi,
            this.nameLo,
            hop.nameHi,
            hop.nameLo,
          );
          this.sLen[ns] = frameLen + SLEEVE_PREFIX_LEN;
          this.sAddr[ns] = hop.addr;
          this.sPort[ns] = hop.port;
          ns++;
        }
        hop.txPackets++;
        hop.txBytes += ipLen;
      }
      if (ns > 0) {
        this.flushSend(this.sleeve, buf, this.sOff, this.sLen, this.sAddr, this.sPort, ns);
        this.sHop.fill(undefined, 0, ns);
      }
      if (nv > 0 && this.vxlan !== undefined)
        this.flushSend(this.vxlan, buf, this.vOff, this.vLen, this.vAddr, this.vPort, nv);
      this.flushSegments();
      if (n < BATCH_MAX) return;
    }
  };

  /**
   * segmentForVxlan splits a TCP super-packet into MSS-sized packets (as a NIC doing TSO would)
   * so a VXLAN peer, which may be a kernel vxlan device, gets ordinary frames.
   */
  private segmentForVxlan(buf: Buffer, ip: number, ipLen: number, mss: number, hop: Hop): void {
    const c = this.counters;
    const need = Math.ceil(ipLen / Math.max(1, mss));
    if (this.ng + need > SEG_MAX) this.flushSegments();
    const first = this.ng;
    const n = segmentTcp4(
      buf,
      ip,
      ipLen,
      mss,
      this.segBuf,
      first * SEG_STRIDE + HEADROOM_BYTES,
      SEG_STRIDE,
      SEG_MAX - first,
      this.segLens,
    );
    if (n < 0) {
      c.drop(Drop.Malformed);
      return;
    }
    const seg = this.segBuf;
    for (let k = 0; k < n; k++) {
      const at = (first + k) * SEG_STRIDE + HEADROOM_BYTES;
      const segLen = this.segLens[k] as number;
      const g = first + k;
      this.gOff[g] = this.vxlanEncap(seg, at, hop);
      this.gLen[g] = segLen + VXLAN_PREFIX_LEN;
      this.gAddr[g] = hop.addr;
      this.gPort[g] = hop.port;
      hop.txPackets++;
      hop.txBytes += segLen;
    }
    this.ng = first + n;
  }

  /** vxlanEncap writes the VXLAN and inner Ethernet headers before the IPv4 packet at `ip`; returns the datagram start. */
  private vxlanEncap(buf: Buffer, ip: number, hop: Hop): number {
    return writeVxlanPrefix(buf, ip, this.vni, hop.macHi, hop.macLo, this.nameHi, this.nameLo, ETHERTYPE_IPV4);
  }

  private flushSegments(): void {
    if (this.ng === 0 || this.vxlan === undefined) return;
    this.flushSend(this.vxlan, this.segBuf, this.gOff, this.gLen, this.gAddr, this.gPort, this.ng);
    this.ng = 0;
  }

  private flushSend(
    conn: PacketConn,
    buf: Buffer,
    offs: Int32Array,
    lens: Int32Array,
    addrs: Uint32Array,
    ports: Uint16Array,
    n: number,
  ): void {
    const c = this.counters;
    const sent = conn.sendBatch(buf, offs, lens, addrs, ports, n);
    c.udpTxPackets += sent;
    for (let i = 0; i < sent; i++) c.udpTxBytes += lens[i] as number;
    if (sent < n) c.drop(Drop.UdpSend, n - sent);
  }

  /**
   * receive reads one batch from `conn` into outBuf and counts it; a datagram cut short by its
   * slot keeps length -1 and is counted as a truncated drop. Returns the batch size (0: none).
   */
  private receive(conn: PacketConn): number {
    const n = conn.recvBatch(this.outBuf, 0, SLOT_BYTES, BATCH_MAX, this.rLens, this.rAddrs, this.rPorts);
    if (n <= 0) return 0;
    const c = this.counters;
    c.udpBatches++;
    this.tCount = 0;
    for (let i = 0; i < n; i++) {
      const len = this.rLens[i] as number;
      if (len < 0) {
        c.drop(Drop.Truncated);
      } else {
        c.udpRxPackets++;
        c.udpRxBytes += len;
      }
    }
    return n;
  }

  /** onSleeveReadable drains the sleeve socket: the outside path for sleeve. */
  readonly onSleeveReadable = (): void => {
    const buf = this.outBuf;
    const c = this.counters;
    for (let round = 0; round < ROUNDS_PER_WAKEUP; round++) {
      const n = this.receive(this.sleeve);
      if (n === 0) return;
      const fib = this.fib;
      for (let i = 0; i < n; i++) {
        const off = i * SLOT_BYTES;
        const len = this.rLens[i] as number;
        if (len < 0) continue;
        const chk = checkSleeveHeader(buf, off, len);
        if (chk !== SleeveCheck.Ok) {
          c.drop(sleeveDrop(chk));
          continue;
        }
        const type = sleeveType(buf, off);
        if (type !== SleeveType.Data) {
          this.control(type, buf, off, len, i);
          continue;
        }
        if (sleeveDstLo(buf, off) !== this.nameLo || sleeveDstHi(buf, off) !== this.nameHi) {
          this.relay(buf, off, len);
          continue;
        }
        const hop = fib.peer(sleeveSrcHi(buf, off), sleeveSrcLo(buf, off));
        if (hop === undefined) {
          c.drop(Drop.UnknownPeer);
          continue;
        }
        const end = off + len;
        let fo = off + SLEEVE_PREFIX_LEN - 2;
        while (fo < end) {
          const fl = sleeveFrameLen(buf, fo, end);
          if (fl < 0) {
            c.drop(Drop.Truncated);
            break;
          }
          const p = fo + 2;
          this.sleeveFrame(buf, p, fl, hop);
          fo = p + fl;
        }
      }
      this.flushTun(buf);
      this.flushRelay();
      if (n < BATCH_MAX) return;
    }
  };

  /** onVxlanReadable drains the VXLAN socket: the outside path for VXLAN (Weft peers and kernel vxlan). */
  readonly onVxlanReadable = (): void => {
    const conn = this.vxlan;
    if (conn === undefined) return;
    const buf = this.outBuf;
    const c = this.counters;
    for (let round = 0; round < ROUNDS_PER_WAKEUP; round++) {
      const n = this.receive(conn);
      if (n === 0) return;
      const now = this.nowMs();
      for (let i = 0; i < n; i++) {
        const off = i * SLOT_BYTES;
        const len = this.rLens[i] as number;
        if (len < 0) continue;
        const chk = checkVxlan(buf, off, len, this.vni);
        if (chk !== VxlanCheck.Ok) {
          c.drop(chk === VxlanCheck.Truncated ? Drop.Truncated : Drop.BadVni);
          continue;
        }
        const e = off + VXLAN_HEADER_LEN;
        const dHi = ethDstHi(buf, e);
        if (!isGroupMac(dHi) && (dHi !== this.nameHi || ethDstLo(buf, e) !== this.nameLo)) {
          c.drop(Drop.NotForOurMac);
          continue;
        }
        const p = e + ETH_HEADER_LEN;
        const avail = off + len - p;
        const et = ethType(buf, e);
        if (et === ETHERTYPE_IPV4) {
          const pl = ipv4PacketLen(buf, p, avail);
          if (pl < 0) {
            c.drop(Drop.Malformed);
            continue;
          }
          const src = buf.readUInt32BE(p + 12);
          const addr = this.rAddrs[i] as number;
          if (this.learned.learn(src, ethSrcHi(buf, e), ethSrcLo(buf, e), addr, now)) c.learned++;
          const hop = this.fib.lookup(src) ?? this.learned.lookup(src);
          if (this.vnet !== 0) {
            // The Ethernet header has been read: its last 10 bytes become the virtio-net header.
            writeVnetNone(buf, p - VNET_HDR_LEN);
            this.queueTun(p - VNET_HDR_LEN, pl + VNET_HDR_LEN, hop);
          } else {
            this.queueTun(p, pl, hop);
          }
        } else if (et === ETHERTYPE_ARP) {
          this.arp(buf, p, avail, this.rAddrs[i] as number, now);
        } else if (et === ETHERTYPE_WEFT_HEARTBEAT && checkSleeveHeader(buf, p, avail) === SleeveCheck.Ok) {
          const type = sleeveType(buf, p);
          if (type === SleeveType.Data) c.drop(Drop.Malformed);
          else this.control(type, buf, p, avail, i, Encap.Vxlan);
        } else {
          c.drop(Drop.UnsupportedEtherType);
        }
      }
      this.flushTun(buf);
      if (n < BATCH_MAX) return;
    }
  };

  /**
   * sleeveFrame handles one sleeve frame of `fl` bytes at `p`: a virtio-net header and an IPv4
   * packet. With a virtio-net TUN both go to the kernel as they are (super-packets included);
   * without one the checksum is completed here, and super-packets cannot be delivered.
   */
  private sleeveFrame(buf: Buffer, p: number, fl: number, hop: Hop): void {
    const c = this.counters;
    const ip = p + VNET_HDR_LEN;
    const pl = fl < VNET_HDR_LEN ? -1 : ipv4PacketLen(buf, ip, fl - VNET_HDR_LEN);
    if (pl < 0 || !vnetValid(buf, p, pl)) {
      c.drop(Drop.Malformed);
      return;
    }
    if (this.vnet !== 0) {
      this.queueTun(p, pl + VNET_HDR_LEN, hop);
      return;
    }
    if ((vnetGsoType(buf, p) & ~VNET_GSO_ECN) !== 0) {
      c.drop(Drop.GsoUnsupported);
      return;
    }
    if ((vnetFlags(buf, p) & VNET_F_NEEDS_CSUM) !== 0) {
      completeChecksum(buf, ip, pl, vnetCsumStart(buf, p), vnetCsumOffset(buf, p));
    }
    this.queueTun(ip, pl, hop);
  }

  private queueTun(off: number, len: number, hop: Hop | undefined): void {
    if (this.tCount === TUN_WRITE_MAX) this.flushTun(this.outBuf);
    const k = this.tCount++;
    this.tOff[k] = off;
    this.tLen[k] = len;
    this.tHop[k] = hop;
  }

  private flushTun(buf: Buffer): void {
    const n = this.tCount;
    if (n === 0) return;
    const c = this.counters;
    const w = this.tun.writeBatch(buf, this.tOff, this.tLen, n);
    c.tunTxPackets += w;
    for (let i = 0; i < n; i++) {
      const len = (this.tLen[i] as number) - this.vnet;
      if (i < w) c.tunTxBytes += len;
      const hop = this.tHop[i];
      if (hop !== undefined) {
        hop.rxPackets++;
        hop.rxBytes += len;
        this.tHop[i] = undefined;
      }
    }
    if (w < n) c.drop(Drop.TunWrite, n - w);
    this.tCount = 0;
  }

  /** arp learns the sender of an ARP packet and answers requests for addresses this host serves. */
  private arp(buf: Buffer, p: number, avail: number, fromAddr: number, now: number): void {
    const c = this.counters;
    if (!arpIsIPv4(buf, p, avail)) {
      c.drop(Drop.Malformed);
      return;
    }
    const op = arpOp(buf, p);
    const senderIp = arpSenderIp(buf, p);
    const sHi = arpSenderMacHi(buf, p);
    const sLo = arpSenderMacLo(buf, p);
    if (senderIp !== 0 && this.learned.learn(senderIp, sHi, sLo, fromAddr, now)) c.learned++;
    if (op === ARP_OP_REPLY) return;
    const target = arpTargetIp(buf, p);
    if (op !== ARP_OP_REQUEST || !this.fib.isLocal(target)) {
      c.drop(Drop.ArpNotOurs);
      return;
    }
    const a = this.arpBuf;
    writeVxlanHeader(a, 0, this.vni);
    writeEthernetHeader(a, VXLAN_HEADER_LEN, sHi, sLo, this.nameHi, this.nameLo, ETHERTYPE_ARP);
    const ap = VXLAN_HEADER_LEN + ETH_HEADER_LEN;
    writeArp(a, ap, ARP_OP_REPLY, this.nameHi, this.nameLo, target, sHi, sLo, senderIp);
    a.fill(0, ap + 28, ap + 28 + ARP_PAD_LEN);
    this.arpAddr[0] = fromAddr;
    this.arpPort[0] = this.vxlanPort;
    if (
      this.vxlan !== undefined &&
      this.vxlan.sendBatch(a, this.arpOff, this.arpLen, this.arpAddr, this.arpPort, 1) === 1
    ) {
      c.arpReplies++;
      c.udpTxPackets++;
      c.udpTxBytes += ARP_FRAME_LEN;
    } else {
      c.drop(Drop.UdpSend);
    }
  }

  /**
   * relay forwards a sleeve datagram addressed to another peer towards it, unchanged but for the
   * ttl: relays need no knowledge of the inner packet. The route is the Fib's hop for that peer.
   */
  private relay(buf: Buffer, off: number, len: number): void {
    const c = this.counters;
    const next = this.fib.peer(sleeveDstHi(buf, off), sleeveDstLo(buf, off));
    if (next === undefined) {
      c.drop(Drop.NotForUs);
      return;
    }
    const ttl = buf[off + 3] as number;
    if (ttl <= 1) {
      c.drop(Drop.TtlExceeded);
      return;
    }
    buf[off + 3] = ttl - 1;
    const k = this.nr++;
    this.relOff[k] = off;
    this.relLen[k] = len;
    this.relAddr[k] = next.addr;
    this.relPort[k] = next.sleevePort;
    c.relayed++;
  }

  private flushRelay(): void {
    if (this.nr === 0) return;
    this.flushSend(this.sleeve, this.outBuf, this.relOff, this.relLen, this.relAddr, this.relPort, this.nr);
    this.nr = 0;
  }

  /**
   * sendHeartbeat sends a data-path heartbeat to a directly connected peer, in sleeve framing to
   * the hop's sleeve port. Control plane: twice a second per peer.
   */
  sendHeartbeat(hop: Hop, stamp: number): boolean {
    return this.sendHeartbeatTo(
      SleeveType.Heartbeat,
      hop.nameHi,
      hop.nameLo,
      hop.addr,
      hop.sleevePort,
      stamp,
      Encap.Sleeve,
      0,
      0,
    );
  }

  /**
   * sendVxlanHeartbeat proves the VXLAN path to a Weft peer: the same heartbeat, carried in a
   * VXLAN frame with EtherType ETHERTYPE_WEFT_HEARTBEAT to the peer's VXLAN port. Kernel vxlan
   * devices drop such frames; Weft peers ack them over VXLAN.
   */
  sendVxlanHeartbeat(hop: Hop, vxlanPort: number, stamp: number): boolean {
    return this.sendHeartbeatTo(
      SleeveType.Heartbeat,
      hop.nameHi,
      hop.nameLo,
      hop.addr,
      vxlanPort,
      stamp,
      Encap.Vxlan,
      hop.macHi,
      hop.macLo,
    );
  }

  private sendHeartbeatTo(
    type: number,
    dstHi: number,
    dstLo: number,
    addr: number,
    port: number,
    stamp: number,
    overlay: Encap,
    macHi: number,
    macLo: number,
  ): boolean {
    const b = this.hbBuf;
    let conn: PacketConn = this.sleeve;
    const at = VXLAN_PREFIX_LEN;
    const n = writeSleeveHeartbeat(b, at, type, this.nameHi, this.nameLo, dstHi, dstLo, stamp);
    if (overlay === Encap.Vxlan) {
      if (this.vxlan === undefined) return false;
      conn = this.vxlan;
      this.hbOff[0] = writeVxlanPrefix(
        b,
        at,
        this.vni,
        macHi,
        macLo,
        this.nameHi,
        this.nameLo,
        ETHERTYPE_WEFT_HEARTBEAT,
      );
      this.hbLen[0] = VXLAN_PREFIX_LEN + n;
    } else {
      this.hbOff[0] = at;
      this.hbLen[0] = n;
    }
    this.hbAddr[0] = addr;
    this.hbPort[0] = port;
    const ok = conn.sendBatch(b, this.hbOff, this.hbLen, this.hbAddr, this.hbPort, 1) === 1;
    if (ok) {
      this.counters.udpTxPackets++;
      this.counters.udpTxBytes += this.hbLen[0] as number;
    } else {
      this.counters.drop(Drop.UdpSend);
    }
    return ok;
  }

  /** control answers heartbeats addressed to us with an ack and tells the control plane about both. */
  private control(type: number, buf: Buffer, off: number, len: number, i: number, overlay: Encap = Encap.Sleeve): void {
    const c = this.counters;
    if (len < SLEEVE_HEARTBEAT_LEN) {
      c.drop(Drop.Truncated);
      return;
    }
    if (sleeveDstLo(buf, off) !== this.nameLo || sleeveDstHi(buf, off) !== this.nameHi) {
      c.drop(Drop.NotForUs);
      return;
    }
    const srcHi = sleeveSrcHi(buf, off);
    const srcLo = sleeveSrcLo(buf, off);
    const addr = this.rAddrs[i] as number;
    const port = this.rPorts[i] as number;
    const stamp = sleeveHeartbeatStamp(buf, off);
    c.heartbeats++;
    if (type === SleeveType.Heartbeat) {
      this.sendHeartbeatTo(SleeveType.HeartbeatAck, srcHi, srcLo, addr, port, stamp, overlay, srcHi, srcLo);
    }
    this.onControl?.({ type, srcHi, srcLo, addr, port, stamp, overlay });
  }
}

function sleeveDrop(chk: SleeveCheck): Drop {
  switch (chk) {
    case SleeveCheck.BadMagic:
      return Drop.BadMagic;
    case SleeveCheck.BadVersion:
      return Drop.BadVersion;
    case SleeveCheck.BadType:
      return Drop.BadType;
    default:
      return Drop.Truncated;
  }
}
