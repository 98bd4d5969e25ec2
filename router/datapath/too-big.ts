/**
 * What a router does with an inner IPv4 packet larger than the path to its peer allows
 * (RFC 791, RFC 1191): with DF set it answers the sender with ICMP "fragmentation needed" and
 * the MTU that fits; without DF it cuts the packet into fragments that fit. Never silence.
 *
 * ICMP destination unreachable, code 4 (fragmentation needed and DF set), as written here:
 *
 *   | IPv4 (20) src = the packet's destination, dst = its source | type 3 | code 4 | checksum |
 *   | unused (2) | next-hop MTU (2) | the packet's IPv4 header + the first 8 bytes after it |
 *
 * The source is the unreachable packet's own destination so the sender's kernel (and its reverse
 * path filter) takes it as coming from that direction. Everything here is per packet, in place,
 * allocation-free.
 */
import { copyBytes, fold16, ipv4HeaderChecksum, sum16 } from './gso.js';

/** IPV4_DF is the "don't fragment" bit of the flags/fragment-offset field. */
export const IPV4_DF = 0x4000;
/** IPV4_MF is the "more fragments" bit. */
export const IPV4_MF = 0x2000;
/** ICMP_FRAG_NEEDED_QUOTE_BYTES is how much of the offending packet beyond its IPv4 header is quoted (RFC 792: 64 bits). */
export const ICMP_FRAG_NEEDED_QUOTE_BYTES = 8;
/** ICMP_FRAG_NEEDED_MAX_LEN is the longest message writeFragNeeded writes (IPv4 options quoted in full). */
export const ICMP_FRAG_NEEDED_MAX_LEN = 20 + 8 + 60 + ICMP_FRAG_NEEDED_QUOTE_BYTES;

/** ipv4Df says whether the IPv4 packet at `ip` has DF set. */
export function ipv4Df(buf: Buffer, ip: number): boolean {
  return (buf.readUInt16BE(ip + 6) & IPV4_DF) !== 0;
}

/**
 * fragNeededWanted says whether an ICMP error may be sent about the packet at `ip`: not about a
 * non-first fragment, and not about an ICMP error (RFC 1122 3.2.2).
 */
export function fragNeededWanted(buf: Buffer, ip: number, len: number): boolean {
  if ((buf.readUInt16BE(ip + 6) & 0x1fff) !== 0) return false;
  if (buf[ip + 9] !== 1) return true;
  const ihl = ((buf[ip] as number) & 0x0f) * 4;
  if (len < ihl + 1) return false;
  const type = buf[ip + ihl] as number;
  // Echo reply (0), echo request (8), timestamp (13, 14) and the like are queries; these are errors.
  return type !== 3 && type !== 4 && type !== 5 && type !== 11 && type !== 12;
}

/**
 * writeFragNeeded writes, at `dst[at]`, an ICMP "fragmentation needed" about the IPv4 packet of
 * `len` bytes at `src[ip]`, telling its sender that at most `mtu` bytes fit. Returns the
 * message's length (at most ICMP_FRAG_NEEDED_MAX_LEN).
 */
export function writeFragNeeded(src: Buffer, ip: number, len: number, mtu: number, dst: Buffer, at: number): number {
  const ihl = ((src[ip] as number) & 0x0f) * 4;
  const quote = Math.min(len, ihl + ICMP_FRAG_NEEDED_QUOTE_BYTES);
  const total = 20 + 8 + quote;
  dst[at] = 0x45;
  dst[at + 1] = 0xc0; // precedence "internetwork control", as routers send ICMP
  dst.writeUInt16BE(total, at + 2);
  dst.writeUInt32BE(0, at + 4); // id 0, no flags
  dst[at + 8] = 64;
  dst[at + 9] = 1;
  copyBytes(src, ip + 16, dst, at + 12, 4); // source: the packet's destination
  copyBytes(src, ip + 12, dst, at + 16, 4); // destination: its sender
  ipv4HeaderChecksum(dst, at);
  const icmp = at + 20;
  dst[icmp] = 3;
  dst[icmp + 1] = 4;
  dst.writeUInt16BE(0, icmp + 2);
  dst.writeUInt16BE(0, icmp + 4);
  dst.writeUInt16BE(mtu, icmp + 6);
  copyBytes(src, ip, dst, icmp + 8, quote);
  dst.writeUInt16BE(~fold16(sum16(dst, icmp, icmp + 8 + quote, 0)) & 0xffff, icmp + 2);
  return total;
}

/**
 * fragmentIpv4 cuts the IPv4 packet of `len` bytes at `src[ip]` (DF clear, checksums complete)
 * into fragments of at most `mtu` bytes, fragment i at `dst[dstOff + i*stride]` with its length
 * in `lens[i]`: the header copied (options too, as RFC 791 allows for simplicity), fragment
 * offset and MF set, total length and header checksum fixed. Returns the fragment count, or -1
 * when the packet cannot be cut (mtu leaves no room for 8 data bytes past the header, or more
 * than `max` fragments, or a slot too small).
 */
export function fragmentIpv4(
  src: Buffer,
  ip: number,
  len: number,
  mtu: number,
  dst: Buffer,
  dstOff: number,
  stride: number,
  max: number,
  lens: Int32Array,
): number {
  const ihl = ((src[ip] as number) & 0x0f) * 4;
  const room = (Math.min(mtu, stride) - ihl) & ~7; // fragment data is a multiple of 8 bytes
  if (room < 8 || len <= ihl) return -1;
  const data = len - ihl;
  const n = Math.ceil(data / room);
  if (n > max || dstOff + (n - 1) * stride + stride > dst.length) return -1;
  const field = src.readUInt16BE(ip + 6);
  const off0 = field & 0x1fff; // the packet may itself be a fragment
  const mf0 = field & IPV4_MF;
  for (let i = 0; i < n; i++) {
    const o = dstOff + i * stride;
    const chunk = Math.min(room, data - i * room);
    copyBytes(src, ip, dst, o, ihl);
    copyBytes(src, ip + ihl + i * room, dst, o + ihl, chunk);
    dst.writeUInt16BE(ihl + chunk, o + 2);
    const last = i === n - 1;
    dst.writeUInt16BE((off0 + (i * room) / 8) | (last ? mf0 : IPV4_MF), o + 6);
    ipv4HeaderChecksum(dst, o);
    lens[i] = ihl + chunk;
  }
  return n;
}
