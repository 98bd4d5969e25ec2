/**
 * TunQueue collects the inner packets one UDP wake-up delivers and writes them to the TUN device
 * in one writeBatch, merging consecutive TCP segments of a flow into one super-packet on the way
 * (the kernel's GRO, done in userspace as wireguard-go does with its TUN offloads): the kernel then
 * takes one virtio-net GSO packet instead of forty MSS-sized ones, which is what receiving costs.
 *
 *   segment k of a flow ── same 4-tuple, seq = next expected, same ack/TOS/TTL/options,
 *                          payload ≤ the first's, ACK or ACK|PSH only, partial checksum
 *        │
 *        ▼  the first is copied into a merge region, later payloads are appended there
 *   | vnet hdr (GSO_TCPV4, gso_size = first payload) | IPv4 (len, csum) | TCP (csum: pseudo) | payload... |
 *
 * A flow's merge ends at a shorter segment, a PSH, a gap, anything that differs, or when the
 * queue is written. A packet of the flow that cannot be merged closes its merge first, so nothing
 * is reordered within a flow. Only segments that carry a partial checksum (virtio-net NEEDS_CSUM
 * at the TCP checksum, as Weft's sleeve segments do) are merged: the merged packet keeps a partial
 * checksum and the outer UDP checksum protected every byte on the wire.
 *
 * Preallocated and allocation-free per packet. Queue entries refer to one Buffer: the receive
 * buffer the packets arrived in and, after `regionStart`, the merge regions.
 */
import type { TunDevice } from '../tun/device.js';
import type { Counters } from './counters.js';
import { Drop } from './counters.js';
import type { Hop } from './fib.js';
import {
  copyBytes,
  fold16,
  ipv4HeaderChecksum,
  sum16,
  VNET_F_NEEDS_CSUM,
  VNET_GSO_NONE,
  VNET_GSO_TCPV4,
  VNET_HDR_LEN,
  vnetCsumOffset,
  vnetCsumStart,
} from './gso.js';

/** GRO_FLOWS is how many flows may be merging at once (more interleaved flows merge less). */
export const GRO_FLOWS = 8;
/** GRO_REGIONS is how many merged packets one queue holds before it is written. */
export const GRO_REGIONS = 16;
/**
 * GRO_MAX_BYTES caps a merged IPv4 packet: within the gso_max_size (62000) Weft gives the veths
 * of attached containers, so the kernel forwards it to a container without segmenting it again.
 */
export const GRO_MAX_BYTES = 62_000;
/** GRO_REGION_BYTES is one merge region: a virtio-net header and a merged packet, 64-aligned. */
export const GRO_REGION_BYTES = 62_080;
/** GRO_BUFFER_BYTES is the room the merge regions need after `regionStart`. */
export const GRO_BUFFER_BYTES = GRO_REGIONS * GRO_REGION_BYTES;

const TCP_ACK = 0x10;
const TCP_PSH = 0x08;

export class TunQueue {
  readonly off: Int32Array;
  readonly len: Int32Array;
  readonly hop: (Hop | undefined)[];
  /** segs[i] is how many TCP segments entry i merges (1: a packet as it arrived). */
  readonly segs: Int32Array;
  n = 0;

  // Open merges, one per flow: the queue entry, the region it was copied to (-1: not yet).
  private readonly fEntry = new Int32Array(GRO_FLOWS).fill(-1);
  private readonly fRegion = new Int32Array(GRO_FLOWS);
  private readonly fSrc = new Uint32Array(GRO_FLOWS);
  private readonly fDst = new Uint32Array(GRO_FLOWS);
  private readonly fPorts = new Uint32Array(GRO_FLOWS);
  private readonly fNextSeq = new Uint32Array(GRO_FLOWS);
  private readonly fMss = new Int32Array(GRO_FLOWS);
  private fEvict = 0;
  private regionsUsed = 0;

  /**
   * @param buf the buffer every entry lives in; the merge regions are GRO_BUFFER_BYTES from
   *   `regionStart` on.
   * @param vnet whether the TUN device takes virtio-net headers (only then is anything merged).
   */
  constructor(
    readonly buf: Buffer,
    readonly regionStart: number,
    readonly capacity: number,
    private readonly vnet: boolean,
  ) {
    if (regionStart + GRO_BUFFER_BYTES > buf.length) throw new RangeError('TunQueue: no room for the merge regions');
    this.off = new Int32Array(capacity);
    this.len = new Int32Array(capacity);
    this.segs = new Int32Array(capacity);
    this.hop = new Array<Hop | undefined>(capacity).fill(undefined);
  }

  /**
   * add queues the packet of `len` bytes at `buf[off]` (with its virtio-net header first when the
   * device has them), merging it into an open merge of its flow when it can. Writes the queue to
   * `tun` first when it is full. Borrowed: the bytes must stay put until the next write.
   */
  add(off: number, len: number, hop: Hop | undefined, tun: TunDevice, c: Counters): void {
    if (this.vnet && this.tryMerge(off, len, hop, c)) return;
    if (this.n === this.capacity) this.write(tun, c);
    this.push(off, len, hop);
  }

  private push(off: number, len: number, hop: Hop | undefined): number {
    const k = this.n++;
    this.off[k] = off;
    this.len[k] = len;
    this.hop[k] = hop;
    this.segs[k] = 1;
    return k;
  }

  /**
   * tryMerge merges a mergeable TCP segment into its flow's open merge (true), or queues it and
   * opens a merge for its flow (true), or returns false for anything else (queued by the caller)
   * after closing its flow's merge so that nothing overtakes it.
   */
  private tryMerge(off: number, len: number, hop: Hop | undefined, c: Counters): boolean {
    const b = this.buf;
    const ip = off + VNET_HDR_LEN;
    const ipLen = len - VNET_HDR_LEN;
    if (ipLen < 40 || b[ip + 9] !== 6) return false;
    const ihl = ((b[ip] as number) & 0x0f) * 4;
    const thl = ((b[ip + ihl + 12] as number) >>> 4) * 4;
    const hdr = ihl + thl;
    const src = b.readUInt32BE(ip + 12);
    const dst = b.readUInt32BE(ip + 16);
    const ports = b.readUInt32BE(ip + ihl);
    const f = this.findFlow(src, dst, ports);
    const flags = b[ip + ihl + 13] as number;
    const payload = ipLen - hdr;
    const mergeable =
      ihl >= 20 &&
      thl >= 20 &&
      payload > 0 &&
      (flags === TCP_ACK || flags === (TCP_ACK | TCP_PSH)) &&
      b[off] === VNET_F_NEEDS_CSUM &&
      b[off + 1] === VNET_GSO_NONE &&
      vnetCsumStart(b, off) === ihl &&
      vnetCsumOffset(b, off) === 16 &&
      (b.readUInt16BE(ip + 6) & 0x3fff) === 0;
    if (!mergeable) {
      if (f >= 0) this.fEntry[f] = -1;
      return false;
    }
    const seq = b.readUInt32BE(ip + ihl + 4);
    if (f >= 0 && this.canMerge(f, ip, ihl, thl, payload, seq)) {
      this.merge(f, ip, hdr, payload, flags, c);
      return true;
    }
    if (f >= 0) this.fEntry[f] = -1;
    if (this.n === this.capacity) return false; // the caller writes the queue first
    const k = this.push(off, len, hop);
    if ((flags & TCP_PSH) === 0) this.openFlow(k, src, dst, ports, (seq + payload) >>> 0, payload);
    return true;
  }

  private findFlow(src: number, dst: number, ports: number): number {
    for (let f = 0; f < GRO_FLOWS; f++) {
      if (this.fEntry[f] !== -1 && this.fSrc[f] === src && this.fDst[f] === dst && this.fPorts[f] === ports) return f;
    }
    return -1;
  }

  private openFlow(k: number, src: number, dst: number, ports: number, nextSeq: number, mss: number): void {
    let f = 0;
    while (f < GRO_FLOWS && this.fEntry[f] !== -1) f++;
    if (f === GRO_FLOWS) {
      f = this.fEvict;
      this.fEvict = (f + 1) % GRO_FLOWS;
    }
    this.fEntry[f] = k;
    this.fRegion[f] = -1;
    this.fSrc[f] = src;
    this.fDst[f] = dst;
    this.fPorts[f] = ports;
    this.fNextSeq[f] = nextSeq;
    this.fMss[f] = mss;
  }

  /** canMerge compares the segment at `ip` with the head of flow f's merge. */
  private canMerge(f: number, ip: number, ihl: number, thl: number, payload: number, seq: number): boolean {
    const b = this.buf;
    const k = this.fEntry[f] as number;
    const head = (this.off[k] as number) + VNET_HDR_LEN;
    const headLen = (this.len[k] as number) - VNET_HDR_LEN;
    if (seq !== this.fNextSeq[f] || payload > (this.fMss[f] as number) || headLen + payload > GRO_MAX_BYTES)
      return false;
    if (((b[head] as number) & 0x0f) * 4 !== ihl || ((b[head + ihl + 12] as number) >>> 4) * 4 !== thl) return false;
    if (b[head + 1] !== b[ip + 1] || b[head + 8] !== b[ip + 8]) return false; // TOS (ECN marks), TTL
    if (b.readUInt32BE(head + ihl + 8) !== b.readUInt32BE(ip + ihl + 8)) return false; // ack
    for (let i = 20; i < thl; i += 4) {
      if (b.readUInt32BE(head + ihl + i) !== b.readUInt32BE(ip + ihl + i)) return false; // options
    }
    if (this.fRegion[f] === -1 && this.regionsUsed === GRO_REGIONS) return false;
    return true;
  }

  private merge(f: number, ip: number, hdr: number, payload: number, flags: number, c: Counters): void {
    const b = this.buf;
    const k = this.fEntry[f] as number;
    if (this.fRegion[f] === -1) {
      // First merge: move the head packet into a region of its own, where it can grow.
      const r = this.regionStart + this.regionsUsed++ * GRO_REGION_BYTES;
      copyBytes(b, this.off[k] as number, b, r, this.len[k] as number);
      this.fRegion[f] = r;
      this.off[k] = r;
    }
    const at = this.off[k] as number;
    const head = at + VNET_HDR_LEN;
    const ihl = ((b[head] as number) & 0x0f) * 4;
    copyBytes(b, ip + hdr, b, at + (this.len[k] as number), payload);
    this.len[k] = (this.len[k] as number) + payload;
    this.segs[k] = (this.segs[k] as number) + 1;
    this.fNextSeq[f] = ((this.fNextSeq[f] as number) + payload) >>> 0;
    b.writeUInt16BE(b.readUInt16BE(ip + ihl + 14), head + ihl + 14); // the latest window
    if ((flags & TCP_PSH) !== 0) b[head + ihl + 13] = (b[head + ihl + 13] as number) | TCP_PSH;
    c.coalesced++;
    // The head's headers now describe the merged packet: length, checksums, GSO.
    const ipLen = (this.len[k] as number) - VNET_HDR_LEN;
    b.writeUInt16BE(ipLen, head + 2);
    ipv4HeaderChecksum(b, head);
    const tcpLen = ipLen - ihl;
    b.writeUInt16BE(fold16(sum16(b, head + 12, head + 20, 6 + tcpLen)), head + ihl + 16);
    b[at] = VNET_F_NEEDS_CSUM;
    b[at + 1] = VNET_GSO_TCPV4;
    b.writeUInt16LE(hdr, at + 2);
    b.writeUInt16LE(this.fMss[f] as number, at + 4);
    if (payload < (this.fMss[f] as number) || (flags & TCP_PSH) !== 0) this.fEntry[f] = -1;
  }

  /** write writes every queued packet to `tun` in one batch and empties the queue (merges end). */
  write(tun: TunDevice, c: Counters): void {
    const n = this.n;
    this.fEntry.fill(-1);
    this.regionsUsed = 0;
    if (n === 0) return;
    const w = tun.writeBatch(this.buf, this.off, this.len, n);
    const v = this.vnet ? VNET_HDR_LEN : 0;
    c.tunTxPackets += w;
    for (let i = 0; i < n; i++) {
      const len = (this.len[i] as number) - v;
      if (i < w) c.tunTxBytes += len;
      const hop = this.hop[i];
      if (hop !== undefined) {
        hop.rxPackets += this.segs[i] as number;
        hop.rxBytes += len;
        this.hop[i] = undefined;
      }
    }
    if (w < n) c.drop(Drop.TunWrite, n - w);
    this.n = 0;
  }
}
