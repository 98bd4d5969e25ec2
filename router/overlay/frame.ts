/**
 * Pure encoders and decoders for the two encapsulations, working in place at (buf, off).
 * Nothing here allocates; every function runs once per packet.
 *
 * Sleeve (Weft's own UDP framing), one UDP datagram:
 *
 *   | outer IPv4 (20) | UDP (8) | sleeve header (16) | len (2) | inner IPv4 packet | [len (2) | packet]... |
 *
 *   sleeve header:
 *    0       1       2       3
 *   +-------+-------+-------+-------+
 *   | magic |version| type  |  ttl  |   magic 'W' (0x57), version 1, type DATA/HEARTBEAT/..., ttl = relay hops left
 *   +-------+-------+-------+-------+
 *   |     source peer name (6 bytes)|   the peer that encapsulated the packet
 *   +       +-------+-------+-------+
 *   |       | destination peer (6)  |   the peer that must decapsulate it (relays forward, see #3)
 *   +-------+-------+-------+-------+
 *   then, for DATA, one or more frames, each a 2-byte big-endian length followed by that many
 *   bytes: a virtio-net header (10, see datapath/gso.ts) and an IPv4 packet, which may be a TCP
 *   super-packet that the receiving kernel takes whole (older senders; Weft now cuts super-packets
 *   into MSS-sized segments, each in its own datagram, see datapath/inside.ts). For HEARTBEAT, an
 *   8-byte big-endian float64 timestamp of the sender (echoed in the ack, for RTT), then zero
 *   padding for a path MTU probe; HEARTBEAT_ACK adds the 2-byte length of the heartbeat heard.
 *
 *   Overhead for one frame: 20 + 8 + 16 + 2 + 10 = 56 bytes (SLEEVE_OVERHEAD_BYTES), per packet.
 *   A relay forwards a datagram not addressed to it unchanged but for ttl - 1.
 *
 * VXLAN (RFC 7348), one UDP datagram:
 *
 *   | outer IPv4 (20) | UDP (8) | VXLAN (8) | inner Ethernet (14) | inner IPv4 packet or ARP |
 *
 *   VXLAN header:
 *   +-+-+-+-+-+-+-+-+-------------------------------------------------+
 *   |R|R|R|R|I|R|R|R|            Reserved (24 bits)                   |
 *   +-+-+-+-+-+-+-+-+-----------------------------------+-------------+
 *   |                VXLAN Network Identifier (VNI)     |  Reserved   |
 *   +---------------------------------------------------+-------------+
 *
 *   Overhead: 20 + 8 + 8 + 14 = 50 bytes (ENCAP_OVERHEAD_MAX).
 */
import {
  ARP_IPV4_LEN,
  ETH_HEADER_LEN,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  SLEEVE_FRAME_HEADER_LEN,
  SLEEVE_HEADER_LEN,
  SLEEVE_MAGIC,
  SLEEVE_VERSION,
  VXLAN_FLAG_I,
  VXLAN_HEADER_LEN,
} from '../constants.js';

/** SleeveType says what a sleeve datagram carries. */
export const SleeveType = {
  /** Data carries one or more inner IPv4 packets. */
  Data: 0,
  /** Heartbeat and HeartbeatAck prove the data path in each direction (#3). */
  Heartbeat: 1,
  HeartbeatAck: 2,
} as const;

/**
 * SLEEVE_HEARTBEAT_LEN is a heartbeat datagram: header and an 8-byte timestamp. A heartbeat may
 * be longer (zero padding): a path MTU probe is a heartbeat padded to the size being probed.
 */
export const SLEEVE_HEARTBEAT_LEN = SLEEVE_HEADER_LEN + 8;
/**
 * SLEEVE_ACK_LEN is a heartbeat ack: a heartbeat followed by the 2-byte length of the heartbeat
 * datagram it answers (so a probe's sender learns that its size got through).
 */
export const SLEEVE_ACK_LEN = SLEEVE_HEARTBEAT_LEN + 2;

/** SLEEVE_TYPE_MAX is the largest type value a receiver understands. */
export const SLEEVE_TYPE_MAX = 2;

/** SLEEVE_PREFIX_LEN is the bytes written in front of the first inner packet (header + frame length). */
export const SLEEVE_PREFIX_LEN = SLEEVE_HEADER_LEN + SLEEVE_FRAME_HEADER_LEN;

/** VXLAN_PREFIX_LEN is the bytes written in front of an inner IPv4 packet (VXLAN + Ethernet). */
export const VXLAN_PREFIX_LEN = VXLAN_HEADER_LEN + ETH_HEADER_LEN;

/**
 * writeSleevePrefix writes a sleeve header and the length of one frame into the
 * SLEEVE_PREFIX_LEN bytes before `payloadOff` and returns the datagram's start offset.
 * Peer names are passed as (hi 16 bits, lo 32 bits) so the hot path never builds strings.
 */
export function writeSleevePrefix(
  buf: Buffer,
  payloadOff: number,
  payloadLen: number,
  type: number,
  ttl: number,
  srcHi: number,
  srcLo: number,
  dstHi: number,
  dstLo: number,
): number {
  const off = payloadOff - SLEEVE_PREFIX_LEN;
  buf[off] = SLEEVE_MAGIC;
  buf[off + 1] = SLEEVE_VERSION;
  buf[off + 2] = type;
  buf[off + 3] = ttl;
  buf.writeUInt16BE(srcHi, off + 4);
  buf.writeUInt32BE(srcLo, off + 6);
  buf.writeUInt16BE(dstHi, off + 10);
  buf.writeUInt32BE(dstLo, off + 12);
  buf.writeUInt16BE(payloadLen, off + SLEEVE_HEADER_LEN);
  return off;
}

/** SleeveCheck is the result of validating a sleeve header; Ok means the fields may be read. */
export const SleeveCheck = {
  Ok: 0,
  Truncated: 1,
  BadMagic: 2,
  BadVersion: 3,
  BadType: 4,
} as const;
export type SleeveCheck = (typeof SleeveCheck)[keyof typeof SleeveCheck];

/** checkSleeveHeader validates the fixed header of a sleeve datagram of `len` bytes at `off`. */
export function checkSleeveHeader(buf: Buffer, off: number, len: number): SleeveCheck {
  if (len < SLEEVE_HEADER_LEN) return SleeveCheck.Truncated;
  if (buf[off] !== SLEEVE_MAGIC) return SleeveCheck.BadMagic;
  if (buf[off + 1] !== SLEEVE_VERSION) return SleeveCheck.BadVersion;
  if ((buf[off + 2] as number) > SLEEVE_TYPE_MAX) return SleeveCheck.BadType;
  return SleeveCheck.Ok;
}

/** sleeveType reads the type byte of a checked sleeve header. */
export function sleeveType(buf: Buffer, off: number): number {
  return buf[off + 2] as number;
}

/** sleeveTtl reads the ttl byte of a checked sleeve header. */
export function sleeveTtl(buf: Buffer, off: number): number {
  return buf[off + 3] as number;
}

/** sleeveSrcHi/sleeveSrcLo/sleeveDstHi/sleeveDstLo read the peer names of a checked header. */
export function sleeveSrcHi(buf: Buffer, off: number): number {
  return buf.readUInt16BE(off + 4);
}
export function sleeveSrcLo(buf: Buffer, off: number): number {
  return buf.readUInt32BE(off + 6);
}
export function sleeveDstHi(buf: Buffer, off: number): number {
  return buf.readUInt16BE(off + 10);
}
export function sleeveDstLo(buf: Buffer, off: number): number {
  return buf.readUInt32BE(off + 12);
}

/** writeSleeveHeartbeat writes a heartbeat or ack datagram at `off`; returns its length. */
export function writeSleeveHeartbeat(
  buf: Buffer,
  off: number,
  type: number,
  srcHi: number,
  srcLo: number,
  dstHi: number,
  dstLo: number,
  stamp: number,
): number {
  buf[off] = SLEEVE_MAGIC;
  buf[off + 1] = SLEEVE_VERSION;
  buf[off + 2] = type;
  buf[off + 3] = 1;
  buf.writeUInt16BE(srcHi, off + 4);
  buf.writeUInt32BE(srcLo, off + 6);
  buf.writeUInt16BE(dstHi, off + 10);
  buf.writeUInt32BE(dstLo, off + 12);
  buf.writeDoubleBE(stamp, off + SLEEVE_HEADER_LEN);
  return SLEEVE_HEARTBEAT_LEN;
}

/** writeSleeveAckHeard writes the heard length of an ack written by writeSleeveHeartbeat at `off`; returns SLEEVE_ACK_LEN. */
export function writeSleeveAckHeard(buf: Buffer, off: number, heardLen: number): number {
  buf.writeUInt16BE(Math.min(heardLen, 0xffff), off + SLEEVE_HEARTBEAT_LEN);
  return SLEEVE_ACK_LEN;
}

/** sleeveAckHeard reads the heard length of an ack of `len` bytes at `off`, or 0 when it has none. */
export function sleeveAckHeard(buf: Buffer, off: number, len: number): number {
  return len >= SLEEVE_ACK_LEN ? buf.readUInt16BE(off + SLEEVE_HEARTBEAT_LEN) : 0;
}

/** sleeveHeartbeatStamp reads the timestamp of a heartbeat or ack of at least SLEEVE_HEARTBEAT_LEN bytes. */
export function sleeveHeartbeatStamp(buf: Buffer, off: number): number {
  return buf.readDoubleBE(off + SLEEVE_HEADER_LEN);
}

/**
 * sleeveFrameLen returns the length of the frame whose length field is at `frameOff`, or -1
 * when the length field or the frame itself runs past `end` (a truncated datagram).
 */
export function sleeveFrameLen(buf: Buffer, frameOff: number, end: number): number {
  if (frameOff + SLEEVE_FRAME_HEADER_LEN > end) return -1;
  const n = buf.readUInt16BE(frameOff);
  if (n === 0 || frameOff + SLEEVE_FRAME_HEADER_LEN + n > end) return -1;
  return n;
}

/**
 * writeVxlanPrefix writes a VXLAN header and an inner Ethernet header (IPv4) into the
 * VXLAN_PREFIX_LEN bytes before `payloadOff`; returns the datagram's start offset.
 * MACs are (hi 16 bits, lo 32 bits).
 */
export function writeVxlanPrefix(
  buf: Buffer,
  payloadOff: number,
  vni: number,
  dstMacHi: number,
  dstMacLo: number,
  srcMacHi: number,
  srcMacLo: number,
  etherType: number,
): number {
  const off = payloadOff - VXLAN_PREFIX_LEN;
  writeVxlanHeader(buf, off, vni);
  writeEthernetHeader(buf, off + VXLAN_HEADER_LEN, dstMacHi, dstMacLo, srcMacHi, srcMacLo, etherType);
  return off;
}

/** writeVxlanHeader writes the 8-byte VXLAN header with the I flag and `vni` at `off`. */
export function writeVxlanHeader(buf: Buffer, off: number, vni: number): void {
  buf.writeUInt32BE(VXLAN_FLAG_I << 24, off);
  buf.writeUInt32BE((vni << 8) >>> 0, off + 4);
}

/** writeEthernetHeader writes an untagged Ethernet II header at `off`. */
export function writeEthernetHeader(
  buf: Buffer,
  off: number,
  dstHi: number,
  dstLo: number,
  srcHi: number,
  srcLo: number,
  etherType: number,
): void {
  buf.writeUInt16BE(dstHi, off);
  buf.writeUInt32BE(dstLo, off + 2);
  buf.writeUInt16BE(srcHi, off + 6);
  buf.writeUInt32BE(srcLo, off + 8);
  buf.writeUInt16BE(etherType, off + 12);
}

/** VxlanCheck is the result of validating a VXLAN datagram; Ok means an Ethernet frame follows. */
export const VxlanCheck = {
  Ok: 0,
  Truncated: 1,
  NoVniFlag: 2,
  BadVni: 3,
} as const;
export type VxlanCheck = (typeof VxlanCheck)[keyof typeof VxlanCheck];

/**
 * checkVxlan validates a VXLAN datagram of `len` bytes at `off`: long enough for the VXLAN and
 * Ethernet headers, I flag set, and VNI equal to `vni`. Reserved bits are ignored on receipt
 * (RFC 7348 §5: "MUST be ignored on receipt").
 */
export function checkVxlan(buf: Buffer, off: number, len: number, vni: number): VxlanCheck {
  if (len < VXLAN_PREFIX_LEN) return VxlanCheck.Truncated;
  if (((buf[off] as number) & VXLAN_FLAG_I) === 0) return VxlanCheck.NoVniFlag;
  if (buf.readUInt32BE(off + 4) >>> 8 !== vni) return VxlanCheck.BadVni;
  return VxlanCheck.Ok;
}

/** ethDstHi/ethDstLo/ethSrcHi/ethSrcLo/ethType read an Ethernet header at `off`. */
export function ethDstHi(buf: Buffer, off: number): number {
  return buf.readUInt16BE(off);
}
export function ethDstLo(buf: Buffer, off: number): number {
  return buf.readUInt32BE(off + 2);
}
export function ethSrcHi(buf: Buffer, off: number): number {
  return buf.readUInt16BE(off + 6);
}
export function ethSrcLo(buf: Buffer, off: number): number {
  return buf.readUInt32BE(off + 8);
}
export function ethType(buf: Buffer, off: number): number {
  return buf.readUInt16BE(off + 12);
}

/** isGroupMac says whether a MAC (by its high 16 bits) is broadcast or multicast (I/G bit). */
export function isGroupMac(hi: number): boolean {
  return (hi & 0x0100) !== 0;
}

export { ETHERTYPE_ARP, ETHERTYPE_IPV4 };

// ---- IPv4 ----

/**
 * ipv4PacketLen validates an IPv4 header of a packet with `len` bytes available at `off`
 * (version 4, IHL >= 5, total length within what is available) and returns the packet's
 * total length, or -1 when it is not a well-formed IPv4 packet.
 */
export function ipv4PacketLen(buf: Buffer, off: number, len: number): number {
  if (len < 20) return -1;
  const vihl = buf[off] as number;
  if (vihl >>> 4 !== 4) return -1;
  const ihl = (vihl & 0x0f) * 4;
  if (ihl < 20) return -1;
  const total = buf.readUInt16BE(off + 2);
  if (total < ihl || total > len) return -1;
  return total;
}

/** ipv4Src and ipv4Dst read the addresses of an IPv4 header at `off` as unsigned integers. */
export function ipv4Src(buf: Buffer, off: number): number {
  return buf.readUInt32BE(off + 12);
}
export function ipv4Dst(buf: Buffer, off: number): number {
  return buf.readUInt32BE(off + 16);
}

// ---- ARP (Ethernet/IPv4, RFC 826) ----

/** ARP_OP_REQUEST and ARP_OP_REPLY are the ARP operations we handle. */
export const ARP_OP_REQUEST = 1;
export const ARP_OP_REPLY = 2;

/**
 * arpIsIPv4 says whether `len` bytes at `off` hold an Ethernet/IPv4 ARP packet
 * (htype 1, ptype 0x0800, hlen 6, plen 4).
 */
export function arpIsIPv4(buf: Buffer, off: number, len: number): boolean {
  return (
    len >= ARP_IPV4_LEN &&
    buf.readUInt16BE(off) === 1 &&
    buf.readUInt16BE(off + 2) === ETHERTYPE_IPV4 &&
    buf[off + 4] === 6 &&
    buf[off + 5] === 4
  );
}

/** arpOp, arpSenderIp, arpTargetIp, arpSenderMacHi/Lo read fields of an ARP packet at `off`. */
export function arpOp(buf: Buffer, off: number): number {
  return buf.readUInt16BE(off + 6);
}
export function arpSenderMacHi(buf: Buffer, off: number): number {
  return buf.readUInt16BE(off + 8);
}
export function arpSenderMacLo(buf: Buffer, off: number): number {
  return buf.readUInt32BE(off + 10);
}
export function arpSenderIp(buf: Buffer, off: number): number {
  return buf.readUInt32BE(off + 14);
}
export function arpTargetIp(buf: Buffer, off: number): number {
  return buf.readUInt32BE(off + 24);
}

/**
 * writeArp writes an Ethernet/IPv4 ARP packet at `off` (28 bytes). For a request pass a zero
 * target MAC.
 */
export function writeArp(
  buf: Buffer,
  off: number,
  op: number,
  senderMacHi: number,
  senderMacLo: number,
  senderIp: number,
  targetMacHi: number,
  targetMacLo: number,
  targetIp: number,
): void {
  buf.writeUInt16BE(1, off);
  buf.writeUInt16BE(ETHERTYPE_IPV4, off + 2);
  buf[off + 4] = 6;
  buf[off + 5] = 4;
  buf.writeUInt16BE(op, off + 6);
  buf.writeUInt16BE(senderMacHi, off + 8);
  buf.writeUInt32BE(senderMacLo, off + 10);
  buf.writeUInt32BE(senderIp >>> 0, off + 14);
  buf.writeUInt16BE(targetMacHi, off + 18);
  buf.writeUInt32BE(targetMacLo, off + 20);
  buf.writeUInt32BE(targetIp >>> 0, off + 24);
}

/**
 * ARP_FRAME_LEN is a VXLAN datagram carrying an ARP packet: VXLAN + an Ethernet frame padded to
 * the 60-byte Ethernet minimum (14 + 28 + 18 bytes of zero padding).
 */
export const ARP_FRAME_LEN = VXLAN_HEADER_LEN + 60;
export const ARP_PAD_LEN = 60 - ETH_HEADER_LEN - ARP_IPV4_LEN;
