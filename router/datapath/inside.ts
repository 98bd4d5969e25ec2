/**
 * Inside is the TUN → UDP half of the datapath (nebula's inside.go): packets the host sends into
 * the overlay leave as sleeve or VXLAN datagrams, none larger than the path to its peer.
 *
 *   TUN readBatch ──► packet i at buf[i*SLOT + HEADROOM] (virtio-net header first, if any)
 *        │ validate IPv4, look up the hop (Fib, then learned VXLAN endpoints)
 *        ├─ fits the path ──────────► prefix written in place in the headroom; small packets to
 *        │                            the same peer bundled into one datagram
 *        ├─ TCP super-packet ───────► cut into MSS-sized segments in the arena, each segment one
 *        │                            datagram (D bytes) → one UDP GSO train per super-packet:
 *        │   | sleeve | vnet | IPv4 | TCP | mss bytes | sleeve | vnet | IPv4 | TCP | ... |
 *        │   |<------------------ D ----------------->|
 *        ├─ too big, DF set ────────► ICMP "fragmentation needed" (the path's MTU) back into the TUN
 *        └─ too big, DF clear ──────► IP fragments that fit, in the arena (a train too)
 *   one SendBatch per socket, sent once per TUN batch, in the order the packets came.
 *
 * Towards a peer with data keys (hop.crypto, a password is set) each sleeve datagram is laid out
 * for sealing (data-crypto.ts): SEAL_COUNTER_BYTES more between the sleeve header and the first
 * frame and SEAL_TAG_BYTES of room after the last, in every segment of a train too (so its
 * segments stay equal), and SendBatch.flush seals them all before the send.
 *
 * Sleeve segments keep a partial TCP checksum (virtio-net NEEDS_CSUM): the outer UDP checksum
 * protects them on the wire and the receiving kernel never needs the full one. VXLAN segments get
 * complete checksums, as a NIC doing TSO would: the peer may be a kernel vxlan device.
 *
 * Over 400 lines because it is one hot loop over one arena: bundling, TCP segmentation and
 * fragmentation all reserve from the same arena and append to the same per-socket SendBatch in the
 * order the packets came, with no allocation per packet; split, that shared state would be passed
 * around on every packet. The packet formats and arithmetic around it are already in gso.ts,
 * too-big.ts and overlay/frame.ts.
 */
import {
  BATCH_MAX,
  HEADROOM_BYTES,
  ICMP_FRAG_NEEDED_PER_S,
  IPV4_HEADER_MIN_LEN,
  SLEEVE_FRAME_HEADER_LEN,
  SLEEVE_HEADER_LEN,
  SLEEVE_TTL_INITIAL,
  SLOT_BYTES,
  UDP_HEADER_LEN,
  UDP_PAYLOAD_MAX,
} from '../constants.js';
import {
  ETHERTYPE_IPV4,
  SLEEVE_PREFIX_LEN,
  SleeveType,
  VXLAN_PREFIX_LEN,
  writeSleevePrefix,
  writeVxlanPrefix,
} from '../overlay/frame.js';
import { tryLoadNative } from '../tun/native.js';
import { Drop } from './counters.js';
import { Encap, type Hop } from './fib.js';
import type { Forwarder } from './forwarder.js';
import {
  completeChecksum,
  copyBytes,
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
  writeVnetNone,
} from './gso.js';
import { SEAL_COUNTER_BYTES, SEAL_TAG_BYTES } from './peer-crypto.js';
import { SendBatch } from './send-batch.js';
import { fragmentIpv4, fragNeededWanted, ICMP_FRAG_NEEDED_MAX_LEN, ipv4Df, writeFragNeeded } from './too-big.js';

/** ROUNDS_PER_WAKEUP bounds how many batches one readiness event drains, so neither direction starves. */
export const ROUNDS_PER_WAKEUP = 8;
/** ARENA_BYTES holds the segments of one TUN batch of super-packets (64 × ~65 KB with headers). */
const ARENA_BYTES = 4 * 1024 * 1024 + 256 * 1024;
/** SEGMENTS_MAX bounds the segments (or fragments) of one packet: a 64 KB super-packet at the smallest MSS. */
const SEGMENTS_MAX = 256;
/** SEND_ENTRIES is how many datagrams or trains one socket's batch holds before it is sent early. */
const SEND_ENTRIES = 4096;
/** BUNDLE_FRAME_MAX_BYTES: only frames this small are bundled (the copy stays cheap). */
const BUNDLE_FRAME_MAX_BYTES = 512;
/** OUTER_BYTES are the outer IPv4 and UDP headers: a hop's pmtu minus these is its largest UDP payload. */
const OUTER_BYTES = IPV4_HEADER_MIN_LEN + UDP_HEADER_LEN;
/** SLEEVE_SEG_PREFIX is the sleeve header, frame length and virtio-net header before each segment. */
const SLEEVE_SEG_PREFIX = SLEEVE_PREFIX_LEN + VNET_HDR_LEN;

const nativeSegment = tryLoadNative()?.segmentTcp4;
const gsoSegmentsMax = tryLoadNative()?.UDP_GSO_SEGMENTS_MAX ?? 64;

export class Inside {
  /** buf: TUN packet i at i*SLOT_BYTES + HEADROOM_BYTES, then the segment arena at `arenaStart`. */
  readonly buf = Buffer.allocUnsafeSlow(BATCH_MAX * SLOT_BYTES + ARENA_BYTES);
  private readonly lens = new Int32Array(BATCH_MAX);
  private readonly arenaStart = BATCH_MAX * SLOT_BYTES;
  private arenaPos = 0;
  private readonly segLens = new Int32Array(SEGMENTS_MAX);
  /** sleeveOut/vxlanOut: what this batch sends on each socket. */
  readonly sleeveOut = new SendBatch(SEND_ENTRIES);
  readonly vxlanOut = new SendBatch(SEND_ENTRIES);

  // ICMP "fragmentation needed" messages are built here and written to the TUN one at a time.
  private readonly icmpBuf = Buffer.alloc(VNET_HDR_LEN + ICMP_FRAG_NEEDED_MAX_LEN);
  private readonly icmpOff = new Int32Array(1);
  private readonly icmpLen = new Int32Array(1);
  private icmpTokens = ICMP_FRAG_NEEDED_PER_S;
  private icmpRefillMs = 0;

  constructor(private readonly fwd: Forwarder) {}

  /** onTunReadable drains the TUN device. */
  readonly onTunReadable = (): void => {
    const fwd = this.fwd;
    const buf = this.buf;
    const c = fwd.counters;
    const v = fwd.vnet;
    for (let round = 0; round < ROUNDS_PER_WAKEUP; round++) {
      const n = fwd.tun.readBatch(buf, HEADROOM_BYTES, SLOT_BYTES, BATCH_MAX, this.lens);
      if (n <= 0) return;
      c.tunBatches++;
      const fib = fwd.fib;
      for (let i = 0; i < n; i++) {
        const base = i * SLOT_BYTES + HEADROOM_BYTES; // the virtio-net header, if any, then the packet
        const len = this.lens[i] as number;
        if (len < 0) {
          c.drop(Drop.TooBig);
          continue;
        }
        const ip = base + v;
        const ipLen = len - v;
        c.tunRxPackets++;
        c.tunRxBytes += ipLen;
        if (ipLen < 20 || (buf[ip] as number) >>> 4 !== 4 || buf.readUInt16BE(ip + 2) > ipLen) {
          c.drop(ipLen > 0 && (buf[ip] as number) >>> 4 === 6 ? Drop.NotIPv4 : Drop.Malformed);
          continue;
        }
        const dst = buf.readUInt32BE(ip + 16);
        let hop = fib.lookup(dst);
        if (hop === undefined) {
          hop = fwd.learned.lookup(dst);
          if (hop === undefined) {
            c.drop(fib.isLocal(dst) ? Drop.Loop : Drop.NoRoute);
            continue;
          }
        }
        const gso = v === 0 ? 0 : vnetGsoType(buf, base) & ~VNET_GSO_ECN;
        if (hop.encap === Encap.Vxlan && fwd.vxlan !== undefined) this.toVxlan(base, ip, ipLen, gso, hop);
        else this.toSleeve(base, ip, ipLen, gso, hop);
      }
      this.flush();
      if (n < BATCH_MAX) return;
    }
  };

  /** flush sends both sockets' batches and frees the arena. */
  flush(): void {
    const fwd = this.fwd;
    this.sleeveOut.flush(fwd.sleeve, this.buf, fwd.counters);
    if (fwd.vxlan !== undefined) this.vxlanOut.flush(fwd.vxlan, this.buf, fwd.counters);
    this.arenaPos = 0;
  }

  private toSleeve(base: number, ip: number, ipLen: number, gso: number, hop: Hop): void {
    const fwd = this.fwd;
    const buf = this.buf;
    const c = fwd.counters;
    // Sealed (hop.crypto): a counter after the header, a tag after the frames; maxDgram is before the tag.
    const crypto = hop.crypto;
    let extra = 0;
    let tail = 0;
    if (crypto !== undefined) {
      if (crypto.sender === undefined) {
        c.drop(Drop.NoKey); // no keys (yet): never fall back to cleartext
        crypto.want();
        return;
      }
      extra = SEAL_COUNTER_BYTES;
      tail = SEAL_TAG_BYTES;
    }
    const maxDgram = Math.min(hop.pmtu - OUTER_BYTES, UDP_PAYLOAD_MAX) - tail;
    const innerMax = maxDgram - SLEEVE_SEG_PREFIX - extra;
    if (gso === VNET_GSO_TCPV4) {
      this.segment(ip, ipLen, vnetGsoSize(buf, base), innerMax, hop, SLEEVE_SEG_PREFIX + extra, false, tail);
      return;
    }
    if (gso !== 0) {
      c.drop(Drop.GsoUnsupported);
      return;
    }
    if (ipLen > innerMax) {
      this.tooBig(base, ip, ipLen, innerMax, hop, SLEEVE_SEG_PREFIX + extra, tail);
      return;
    }
    // A sleeve frame is the virtio-net header and the packet, so a partial checksum crosses the wire.
    const frame = ip - VNET_HDR_LEN;
    if (fwd.vnet === 0) writeVnetNone(buf, frame);
    const frameLen = ipLen + VNET_HDR_LEN;
    hop.txPackets++;
    hop.txBytes += ipLen;
    // Bundling: a small packet for the same peer as the previous datagram of this batch rides in it
    // as one more frame while the datagram stays within the path (no added delay: only packets
    // already read together are bundled).
    const out = this.sleeveOut;
    const last = out.n - 1;
    if (last >= 0 && out.hop[last] === hop && frameLen <= BUNDLE_FRAME_MAX_BYTES) {
      const at = (out.off[last] as number) + (out.len[last] as number);
      const grown = (out.len[last] as number) + SLEEVE_FRAME_HEADER_LEN + frameLen;
      if (
        grown <= maxDgram &&
        grown <= fwd.bundleBytes &&
        at + SLEEVE_FRAME_HEADER_LEN + frameLen <= (out.end[last] as number)
      ) {
        buf.writeUInt16BE(frameLen, at);
        copyBytes(buf, frame, buf, at + SLEEVE_FRAME_HEADER_LEN, frameLen);
        out.len[last] = grown;
        c.bundled++;
        return;
      }
    }
    if (out.full) this.flush();
    let off = writeSleevePrefix(
      buf,
      frame,
      frameLen,
      SleeveType.Data,
      SLEEVE_TTL_INITIAL,
      fwd.nameHi,
      fwd.nameLo,
      hop.nameHi,
      hop.nameLo,
    );
    if (extra !== 0) off = makeCounterRoom(buf, off);
    // Only small datagrams may be grown by bundling; the room ends at the end of the packet's slot
    // (less the tag sealing appends).
    const end = frameLen <= BUNDLE_FRAME_MAX_BYTES ? base - HEADROOM_BYTES + SLOT_BYTES - tail : 0;
    out.push(off, ipLen + SLEEVE_SEG_PREFIX + extra, hop.addr, hop.sleevePort, 0, hop, end);
  }

  private toVxlan(base: number, ip: number, ipLen: number, gso: number, hop: Hop): void {
    const fwd = this.fwd;
    const buf = this.buf;
    const c = fwd.counters;
    const innerMax = Math.min(hop.pmtu - OUTER_BYTES, UDP_PAYLOAD_MAX) - VXLAN_PREFIX_LEN;
    if (gso === VNET_GSO_TCPV4) {
      this.segment(ip, ipLen, vnetGsoSize(buf, base), innerMax, hop, VXLAN_PREFIX_LEN, true);
      return;
    }
    if (gso !== 0) {
      c.drop(Drop.GsoUnsupported);
      return;
    }
    if (fwd.vnet !== 0 && (vnetFlags(buf, base) & VNET_F_NEEDS_CSUM) !== 0) {
      completeChecksum(buf, ip, ipLen, vnetCsumStart(buf, base), vnetCsumOffset(buf, base));
    }
    if (ipLen > innerMax) {
      this.tooBig(base, ip, ipLen, innerMax, hop, VXLAN_PREFIX_LEN);
      return;
    }
    hop.txPackets++;
    hop.txBytes += ipLen;
    if (this.vxlanOut.full) this.flush();
    const off = writeVxlanPrefix(buf, ip, fwd.vni, hop.macHi, hop.macLo, fwd.nameHi, fwd.nameLo, ETHERTYPE_IPV4);
    this.vxlanOut.push(off, ipLen + VXLAN_PREFIX_LEN, hop.addr, hop.port, 0, hop, 0);
  }

  /**
   * segment cuts the TCP super-packet at `ip` into segments of `mss` payload bytes (smaller when
   * the path needs it and DF allows; else ICMP), each behind `prefix` bytes of encapsulation,
   * and queues them as trains.
   */
  private segment(
    ip: number,
    ipLen: number,
    gsoMss: number,
    innerMax: number,
    hop: Hop,
    prefix: number,
    fullCsum: boolean,
    tail = 0,
  ): void {
    const buf = this.buf;
    const c = this.fwd.counters;
    const ihl = ((buf[ip] as number) & 0x0f) * 4;
    if (buf[ip + 9] !== 6 || ipLen < ihl + 20) {
      c.drop(Drop.Malformed);
      return;
    }
    const hdr = ihl + ((buf[ip + ihl + 12] as number) >>> 4) * 4;
    let mss = gsoMss;
    if (hdr + mss > innerMax) {
      if (ipv4Df(buf, ip)) {
        // Each segment would be hdr + mss bytes: tell the sender what fits (a forwarding kernel does the same).
        this.fragNeeded(ip, ipLen, innerMax);
        c.drop(Drop.PathMtu);
        return;
      }
      mss = innerMax - hdr;
    }
    if (mss < 1 || hdr >= ipLen) {
      c.drop(Drop.Malformed);
      return;
    }
    const d = prefix + hdr + mss + tail;
    const count = Math.ceil((ipLen - hdr) / mss);
    if (count > SEGMENTS_MAX) {
      c.drop(Drop.Malformed);
      return;
    }
    const first = this.reserve(count * d + prefix);
    const n =
      nativeSegment !== undefined
        ? nativeSegment(buf, ip, ipLen, mss, buf, first + prefix, d, count, this.segLens, fullCsum)
        : segmentTcp4(buf, ip, ipLen, mss, buf, first + prefix, d, count, this.segLens, fullCsum);
    if (n < 0) {
      c.drop(Drop.Malformed);
      return;
    }
    c.segmented++;
    this.train(first, n, d, prefix, hop, fullCsum ? -1 : ihl);
  }

  /**
   * tooBig handles a packet larger than the path allows (`innerMax` bytes): DF set → ICMP
   * "fragmentation needed" and a PathMtu drop; DF clear → IP fragments that fit, as a train.
   */
  private tooBig(base: number, ip: number, ipLen: number, innerMax: number, hop: Hop, prefix: number, tail = 0): void {
    const fwd = this.fwd;
    const buf = this.buf;
    const c = fwd.counters;
    if (ipv4Df(buf, ip)) {
      this.fragNeeded(ip, ipLen, innerMax);
      c.drop(Drop.PathMtu);
      return;
    }
    if (fwd.vnet !== 0 && (vnetFlags(buf, base) & VNET_F_NEEDS_CSUM) !== 0) {
      completeChecksum(buf, ip, ipLen, vnetCsumStart(buf, base), vnetCsumOffset(buf, base));
    }
    const d = prefix + innerMax + tail;
    const count = Math.ceil(ipLen / Math.max(8, innerMax - 60));
    const first = this.reserve(Math.min(SEGMENTS_MAX, count + 1) * d + prefix);
    const n = fragmentIpv4(buf, ip, ipLen, innerMax, buf, first + prefix, d, SEGMENTS_MAX, this.segLens);
    if (n < 0) {
      c.drop(Drop.PathMtu);
      return;
    }
    c.fragmented++;
    this.train(first, n, d, prefix, hop, -1);
  }

  /** reserve returns the arena offset of `bytes` free bytes, sending the batch first when full. */
  private reserve(bytes: number): number {
    if (
      this.arenaPos + bytes > ARENA_BYTES ||
      this.sleeveOut.n + SEGMENTS_MAX > SEND_ENTRIES ||
      this.vxlanOut.n + SEGMENTS_MAX > SEND_ENTRIES
    ) {
      this.flush();
    }
    const at = this.arenaStart + this.arenaPos;
    this.arenaPos += bytes;
    return at;
  }

  /**
   * train writes the encapsulation before each of the `n` packets laid out `d` bytes apart from
   * `first` (packet k's `prefix` bytes of encapsulation at first + k*d, its IPv4 packet after
   * them, its length in segLens[k]) and queues them: one GSO train per UDP_GSO_SEGMENTS_MAX
   * packets when the socket has GSO, else one datagram each. `partialCsumStart` ≥ 0 marks sleeve
   * segments whose TCP checksum is partial (virtio-net NEEDS_CSUM at partialCsumStart + 16).
   * Sealed sleeve packets (hop.crypto) have SEAL_COUNTER_BYTES more in `prefix` (the counter after
   * the header) and SEAL_TAG_BYTES of room in `d` after each packet.
   */
  private train(first: number, n: number, d: number, prefix: number, hop: Hop, partialCsumStart: number): void {
    const fwd = this.fwd;
    const buf = this.buf;
    const vxlan = prefix === VXLAN_PREFIX_LEN;
    const sealed = !vxlan && hop.crypto !== undefined;
    let bytes = 0;
    for (let k = 0; k < n; k++) {
      const pkt = first + k * d + prefix;
      const len = this.segLens[k] as number;
      if (vxlan) {
        writeVxlanPrefix(buf, pkt, fwd.vni, hop.macHi, hop.macLo, fwd.nameHi, fwd.nameLo, ETHERTYPE_IPV4);
      } else {
        const vh = pkt - VNET_HDR_LEN;
        writeVnetNone(buf, vh);
        if (partialCsumStart >= 0) {
          buf[vh] = VNET_F_NEEDS_CSUM;
          buf.writeUInt16LE(partialCsumStart, vh + 6);
          buf.writeUInt16LE(16, vh + 8);
        }
        const h = writeSleevePrefix(
          buf,
          vh,
          len + VNET_HDR_LEN,
          SleeveType.Data,
          SLEEVE_TTL_INITIAL,
          fwd.nameHi,
          fwd.nameLo,
          hop.nameHi,
          hop.nameLo,
        );
        if (sealed) makeCounterRoom(buf, h);
      }
      bytes += len;
    }
    hop.txPackets += n;
    hop.txBytes += bytes;
    const out = vxlan ? this.vxlanOut : this.sleeveOut;
    const conn = vxlan ? fwd.vxlan : fwd.sleeve;
    const port = vxlan ? hop.port : hop.sleevePort;
    const perTrain = conn?.gso ? Math.max(1, Math.min(gsoSegmentsMax, Math.floor(UDP_PAYLOAD_MAX / d))) : 1;
    for (let k = 0; k < n; k += perTrain) {
      const m = Math.min(perTrain, n - k);
      const lastLen = prefix + (this.segLens[k + m - 1] as number);
      out.push(first + k * d, (m - 1) * d + lastLen, hop.addr, port, m > 1 ? d : 0, hop, 0);
    }
  }

  /**
   * fragNeeded writes an ICMP "fragmentation needed" (next-hop MTU `mtu`) about the packet at
   * `ip` into the TUN, towards its sender; rate limited to ICMP_FRAG_NEEDED_PER_S.
   */
  private fragNeeded(ip: number, ipLen: number, mtu: number): void {
    const fwd = this.fwd;
    const buf = this.buf;
    if (!fragNeededWanted(buf, ip, ipLen)) return;
    const now = fwd.nowMs();
    if (now - this.icmpRefillMs >= 1000) {
      this.icmpTokens = ICMP_FRAG_NEEDED_PER_S;
      this.icmpRefillMs = now;
    }
    if (this.icmpTokens <= 0) return;
    this.icmpTokens--;
    const v = fwd.vnet;
    const b = this.icmpBuf;
    if (v !== 0) writeVnetNone(b, 0);
    const n = writeFragNeeded(buf, ip, ipLen, mtu, b, v);
    this.icmpOff[0] = 0;
    this.icmpLen[0] = v + n;
    if (fwd.tun.writeBatch(b, this.icmpOff, this.icmpLen, 1) === 1) fwd.counters.icmpFragNeeded++;
    else fwd.counters.drop(Drop.TunWrite);
  }
}

/**
 * makeCounterRoom moves the sleeve header at `off` SEAL_COUNTER_BYTES back, so the counter of a
 * sealed datagram fits between it and the frames (which stay where they are); returns the
 * datagram's new start. The headroom before every packet has the room.
 */
export function makeCounterRoom(buf: Buffer, off: number): number {
  buf.copyWithin(off - SEAL_COUNTER_BYTES, off, off + SLEEVE_HEADER_LEN);
  return off - SEAL_COUNTER_BYTES;
}
