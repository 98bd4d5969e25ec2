/**
 * Offloads: the virtio-net header the kernel puts in front of every packet on a TUN device
 * opened with IFF_VNET_HDR, checksum completion, and TCP segmentation in userspace.
 *
 * With TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4) the kernel hands the router TCP "super-packets" of
 * up to gso_max_size bytes with a partial checksum, instead of one packet per MSS. Per-packet cost
 * is what limits a userspace router, so sleeve carries these whole (the receiving router writes
 * them to its TUN with the same header, and its kernel takes them as one GSO packet). Where a
 * packet must leave as ordinary MTU-sized frames (a kernel VXLAN peer, a TUN without offloads),
 * segmentTcp4 splits it and completeChecksum fills in the checksum, as a NIC would.
 *
 * virtio_net_hdr (10 bytes, little-endian on the little-endian hosts we run on):
 *
 *    0       1       2               4               6               8              10
 *   +-------+-------+---------------+---------------+---------------+---------------+
 *   | flags |gsotype|    hdr_len    |   gso_size    |  csum_start   |  csum_offset  |
 *   +-------+-------+---------------+---------------+---------------+---------------+
 *
 * Everything here runs per packet: no allocation, offsets and lengths as numbers.
 */

import { tryLoadNative } from '../tun/native.js';

/** VNET_HDR_LEN is the size of struct virtio_net_hdr (without num_buffers). */
export const VNET_HDR_LEN = 10;
/** VNET_F_NEEDS_CSUM: the checksum at csum_start + csum_offset holds only the pseudo-header sum. */
export const VNET_F_NEEDS_CSUM = 1;
/** VNET_GSO_* are the gso_type values we produce and accept. */
export const VNET_GSO_NONE = 0;
export const VNET_GSO_TCPV4 = 1;
export const VNET_GSO_ECN = 0x80;

/** writeVnetNone writes a header that says "one complete packet, checksum done". */
export function writeVnetNone(buf: Buffer, off: number): void {
  buf.fill(0, off, off + VNET_HDR_LEN);
}

/** vnetFlags/vnetGsoType/vnetGsoSize/vnetCsumStart/vnetCsumOffset read a header at `off`. */
export function vnetFlags(buf: Buffer, off: number): number {
  return buf[off] as number;
}
export function vnetGsoType(buf: Buffer, off: number): number {
  return buf[off + 1] as number;
}
export function vnetGsoSize(buf: Buffer, off: number): number {
  return buf.readUInt16LE(off + 4);
}
export function vnetCsumStart(buf: Buffer, off: number): number {
  return buf.readUInt16LE(off + 6);
}
export function vnetCsumOffset(buf: Buffer, off: number): number {
  return buf.readUInt16LE(off + 8);
}

/**
 * vnetValid checks a header received from the network before it reaches our kernel: only
 * GSO_NONE or TCPv4 (optionally ECN) with a sane segment size, and a checksum position inside
 * the packet of `pktLen` bytes. Anything else is a malformed packet.
 */
export function vnetValid(buf: Buffer, off: number, pktLen: number): boolean {
  const gso = (buf[off + 1] as number) & ~VNET_GSO_ECN;
  if (gso !== VNET_GSO_NONE) {
    if (gso !== VNET_GSO_TCPV4) return false;
    const size = buf.readUInt16LE(off + 4);
    if (size < 8 || size > 65535) return false;
  }
  if (((buf[off] as number) & VNET_F_NEEDS_CSUM) !== 0) {
    const start = buf.readUInt16LE(off + 6);
    if (start + buf.readUInt16LE(off + 8) + 2 > pktLen) return false;
  }
  return true;
}

/**
 * sum16 adds the bytes [start, end) as big-endian 16-bit words to `acc` (ones-complement sum,
 * not folded). An odd last byte is padded with zero.
 */
export function sum16(buf: Buffer, start: number, end: number, acc: number): number {
  let s = acc;
  let i = start;
  // Whole 32-bit words: a double holds the sum exactly for any packet we can see (< 2^53).
  for (; i + 4 <= end; i += 4) s += (buf[i]! << 8) + buf[i + 1]! + (buf[i + 2]! << 8) + buf[i + 3]!;
  for (; i + 2 <= end; i += 2) s += (buf[i]! << 8) + buf[i + 1]!;
  if (i < end) s += buf[i]! << 8;
  return s;
}

/** fold16 folds a ones-complement sum to 16 bits. */
export function fold16(sum: number): number {
  let s = sum;
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

/**
 * completeChecksum fills in a partial (NEEDS_CSUM) checksum: the field at `csumStart + csumOffset`
 * (relative to the packet at `pkt`) already holds the pseudo-header sum, so the checksum is the
 * complement of the sum from csumStart to the end of the packet.
 */
export function completeChecksum(buf: Buffer, pkt: number, len: number, csumStart: number, csumOffset: number): void {
  const at = pkt + csumStart + csumOffset;
  const c = ~fold16(sum16(buf, pkt + csumStart, pkt + len, 0)) & 0xffff;
  // UDP (RFC 768): a computed 0 is sent as all ones. TCP never yields 0 from a complement of a non-zero sum.
  buf.writeUInt16BE(c === 0 ? 0xffff : c, at);
}

/** ipv4HeaderChecksum recomputes the IPv4 header checksum of the header at `ip`. */
export function ipv4HeaderChecksum(buf: Buffer, ip: number): void {
  const ihl = ((buf[ip] as number) & 0x0f) * 4;
  buf.writeUInt16BE(0, ip + 10);
  buf.writeUInt16BE(~fold16(sum16(buf, ip, ip + ihl, 0)) & 0xffff, ip + 10);
}

/** nativeCopy is the addon's memmove, when the addon is built (it is wherever a TUN device is). */
const nativeCopy = tryLoadNative()?.copyBytes;

/**
 * copyBytes copies `len` bytes between two buffers without allocating: Node's Buffer#copy and
 * TypedArray#set with a subarray both create a view object per call, which the per-packet path
 * must not. Uses the native addon's memmove; without the addon, a 4-bytes-at-a-time loop.
 */
export function copyBytes(src: Buffer, srcStart: number, dst: Buffer, dstStart: number, len: number): void {
  if (nativeCopy !== undefined) {
    nativeCopy(src, srcStart, dst, dstStart, len);
    return;
  }
  copyBytesJs(src, srcStart, dst, dstStart, len);
}

/** copyBytesJs is copyBytes without the addon. */
export function copyBytesJs(src: Buffer, srcStart: number, dst: Buffer, dstStart: number, len: number): void {
  let i = 0;
  for (; i + 4 <= len; i += 4) dst.writeUInt32LE(src.readUInt32LE(srcStart + i), dstStart + i);
  for (; i < len; i++) dst[dstStart + i] = src[srcStart + i] as number;
}

const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_CWR = 0x80;

/**
 * segmentTcp4 splits the IPv4/TCP packet of `len` bytes at `src[pkt]` into segments of at most
 * `mss` payload bytes, as a NIC doing TSO would: segment i is written at `dst[dstOff + i*stride]`
 * with its length in `lens[i]`, complete with IPv4 length, ID, header checksum, TCP sequence
 * number, flags (FIN/PSH on the last, CWR on the first) and TCP checksum — complete, or with
 * `fullCsum` false only the pseudo-header sum (the virtio-net NEEDS_CSUM form, completed by
 * whoever delivers it). Returns the number of segments, or -1 when the packet is not a
 * well-formed IPv4 TCP packet or does not fit in `max` slots of `stride` bytes. The addon has the
 * same function, much faster (datapath/inside.ts prefers it).
 */
export function segmentTcp4(
  src: Buffer,
  pkt: number,
  len: number,
  mss: number,
  dst: Buffer,
  dstOff: number,
  stride: number,
  max: number,
  lens: Int32Array,
  fullCsum = true,
): number {
  if (len < 40 || (src[pkt] as number) >>> 4 !== 4 || src[pkt + 9] !== 6 || mss < 1) return -1;
  const ihl = ((src[pkt] as number) & 0x0f) * 4;
  if (ihl < 20 || ihl + 20 > len) return -1;
  const thl = ((src[pkt + ihl + 12] as number) >>> 4) * 4;
  const hdr = ihl + thl;
  if (thl < 20 || hdr > len) return -1;
  const payload = len - hdr;
  const n = payload === 0 ? 1 : Math.ceil(payload / mss);
  if (n > max || hdr + Math.min(mss, payload) > stride || dstOff + (n - 1) * stride + stride > dst.length) return -1;
  const id0 = src.readUInt16BE(pkt + 4);
  const seq0 = src.readUInt32BE(pkt + ihl + 4);
  const flags0 = src[pkt + ihl + 13] as number;
  // Pseudo-header sum without the TCP length: source and destination addresses and protocol.
  const pseudo = sum16(src, pkt + 12, pkt + 20, 6);
  for (let i = 0; i < n; i++) {
    const o = dstOff + i * stride;
    const chunk = Math.min(mss, payload - i * mss);
    copyBytes(src, pkt, dst, o, hdr);
    copyBytes(src, pkt + hdr + i * mss, dst, o + hdr, chunk);
    const segLen = hdr + chunk;
    dst.writeUInt16BE(segLen, o + 2);
    dst.writeUInt16BE((id0 + i) & 0xffff, o + 4);
    ipv4HeaderChecksum(dst, o);
    const t = o + ihl;
    dst.writeUInt32BE((seq0 + i * mss) >>> 0, t + 4);
    let f = flags0;
    if (i !== n - 1) f &= ~(TCP_FIN | TCP_PSH);
    if (i !== 0) f &= ~TCP_CWR;
    dst[t + 13] = f;
    dst.writeUInt16BE(0, t + 16);
    const c = fullCsum
      ? ~fold16(sum16(dst, t, o + segLen, pseudo + thl + chunk)) & 0xffff
      : fold16(pseudo + thl + chunk);
    dst.writeUInt16BE(c, t + 16);
    lens[i] = segLen;
  }
  return n;
}
