import { IPV4_HEADER_MIN_LEN, UDP_HEADER_LEN, UDP_PAYLOAD_MAX } from '../constants.js';
import {
  SLEEVE_ACK_LEN,
  SLEEVE_HEARTBEAT_LEN,
  SleeveType,
  sleeveAckHeard,
  sleeveDstHi,
  sleeveDstLo,
  sleeveHeartbeatStamp,
  sleeveSrcHi,
  sleeveSrcLo,
  VXLAN_PREFIX_LEN,
  writeSleeveAckHeard,
  writeSleeveHeartbeat,
  writeVxlanPrefix,
} from '../overlay/frame.js';
import { Drop } from './counters.js';
import { Encap, type Hop } from './fib.js';
import type { Forwarder } from './forwarder.js';
import { makeCounterRoom } from './inside.js';
import { type PeerCrypto, SEAL_COUNTER_BYTES, SEAL_TAG_BYTES } from './peer-crypto.js';

/**
 * ETHERTYPE_WEFT_HEARTBEAT marks a data-path heartbeat carried inside VXLAN (IEEE 802 local
 * experimental EtherType 1).
 */
export const ETHERTYPE_WEFT_HEARTBEAT = 0x88b5;

/**
 * Heartbeats sends data-path heartbeats, path MTU probes (heartbeats padded to the size being
 * probed, sent with DF like all data) and acks, and hands what it hears to the control plane.
 * Rare next to data: one datagram at a time, from one preallocated buffer. Towards a peer with
 * data keys (hop.crypto) sleeve heartbeats and acks are sealed like data, so nobody without the
 * keys can forge one (and fake a path's liveness, RTT or MTU); a probe's size stays the whole
 * sealed datagram's.
 */
export class Heartbeats {
  /** buf holds one heartbeat, ack or probe at a time: the VXLAN prefix room, then the datagram. */
  private readonly buf = Buffer.alloc(VXLAN_PREFIX_LEN + SEAL_COUNTER_BYTES + UDP_PAYLOAD_MAX + SEAL_TAG_BYTES);
  private readonly off = new Int32Array(1);
  private readonly len = new Int32Array(1);
  private readonly addr = new Uint32Array(1);
  private readonly port = new Uint16Array(1);

  constructor(private readonly fwd: Forwarder) {}

  /** sendHeartbeat: see Forwarder.sendHeartbeat. */
  sendHeartbeat(hop: Hop, stamp: number, size: number): boolean {
    const payload = Math.min(UDP_PAYLOAD_MAX, Math.max(0, size - IPV4_HEADER_MIN_LEN - UDP_HEADER_LEN));
    return this.send(
      SleeveType.Heartbeat,
      hop.nameHi,
      hop.nameLo,
      hop.addr,
      hop.sleevePort,
      stamp,
      Encap.Sleeve,
      0,
      0,
      hop.crypto === undefined ? payload : Math.max(0, payload - SEAL_COUNTER_BYTES - SEAL_TAG_BYTES),
      hop.crypto,
    );
  }

  /** sendVxlanHeartbeat: see Forwarder.sendVxlanHeartbeat. */
  sendVxlanHeartbeat(hop: Hop, vxlanPort: number, stamp: number): boolean {
    return this.send(
      SleeveType.Heartbeat,
      hop.nameHi,
      hop.nameLo,
      hop.addr,
      vxlanPort,
      stamp,
      Encap.Vxlan,
      hop.macHi,
      hop.macLo,
      0,
      undefined,
    );
  }

  /**
   * send writes one heartbeat (padded with zeros to `padTo` bytes of sleeve datagram) or, for an
   * ack, a heartbeat followed by `padTo` as the heard length; in VXLAN framing when asked;
   * sealed with `crypto` (sleeve framing only; false and a NoKey drop when its keys are closed).
   */
  private send(
    type: number,
    dstHi: number,
    dstLo: number,
    addr: number,
    port: number,
    stamp: number,
    overlay: Encap,
    macHi: number,
    macLo: number,
    padTo: number,
    crypto: PeerCrypto | undefined,
  ): boolean {
    const fwd = this.fwd;
    const b = this.buf;
    let conn = fwd.sleeve;
    const sealer = crypto?.sender;
    if (crypto !== undefined && (sealer === undefined || overlay === Encap.Vxlan)) {
      fwd.counters.drop(Drop.NoKey);
      return false;
    }
    const at = VXLAN_PREFIX_LEN + (sealer !== undefined ? SEAL_COUNTER_BYTES : 0);
    let n = writeSleeveHeartbeat(b, at, type, fwd.nameHi, fwd.nameLo, dstHi, dstLo, stamp);
    if (type === SleeveType.HeartbeatAck) {
      n = writeSleeveAckHeard(b, at, padTo);
    } else if (padTo > n) {
      b.fill(0, at + n, at + padTo);
      n = padTo;
    }
    if (overlay === Encap.Vxlan) {
      if (fwd.vxlan === undefined) return false;
      conn = fwd.vxlan;
      this.off[0] = writeVxlanPrefix(b, at, fwd.vni, macHi, macLo, fwd.nameHi, fwd.nameLo, ETHERTYPE_WEFT_HEARTBEAT);
      this.len[0] = VXLAN_PREFIX_LEN + n;
    } else if (sealer !== undefined) {
      this.off[0] = makeCounterRoom(b, at);
      this.len[0] = SEAL_COUNTER_BYTES + n;
      sealer.sealBatch(b, this.off, this.len, 1);
      this.len[0] = SEAL_COUNTER_BYTES + n + SEAL_TAG_BYTES;
    } else {
      this.off[0] = at;
      this.len[0] = n;
    }
    this.addr[0] = addr;
    this.port[0] = port;
    const ok = conn.sendBatch(b, this.off, this.len, this.addr, this.port, 1) === 1;
    const c = fwd.counters;
    if (ok) {
      c.udpTxPackets++;
      c.udpTxBytes += this.len[0] as number;
    } else {
      c.drop(Drop.UdpSend);
    }
    return ok;
  }

  /**
   * control answers a heartbeat addressed to us with an ack (saying how long it was) and tells
   * the control plane about heartbeats and acks. `addr`/`port` are where it came from. A sealed
   * one arrives opened (`len` its cleartext length) with the peer's `crypto`, which seals the
   * ack; `wireLen` is its length as received (what a probe proved fits), `len` when cleartext.
   */
  control(
    type: number,
    buf: Buffer,
    off: number,
    len: number,
    addr: number,
    port: number,
    overlay: Encap,
    crypto: PeerCrypto | undefined = undefined,
    wireLen = len,
  ): void {
    const fwd = this.fwd;
    const c = fwd.counters;
    if (len < SLEEVE_HEARTBEAT_LEN) {
      c.drop(Drop.Truncated);
      return;
    }
    if (sleeveDstLo(buf, off) !== fwd.nameLo || sleeveDstHi(buf, off) !== fwd.nameHi) {
      c.drop(Drop.NotForUs);
      return;
    }
    const srcHi = sleeveSrcHi(buf, off);
    const srcLo = sleeveSrcLo(buf, off);
    const stamp = sleeveHeartbeatStamp(buf, off);
    c.heartbeats++;
    let size = 0;
    if (type === SleeveType.Heartbeat) {
      size = wireLen + IPV4_HEADER_MIN_LEN + UDP_HEADER_LEN;
      this.send(SleeveType.HeartbeatAck, srcHi, srcLo, addr, port, stamp, overlay, srcHi, srcLo, size, crypto);
    } else if (len >= SLEEVE_ACK_LEN) {
      size = sleeveAckHeard(buf, off, len);
    }
    fwd.onControl?.({ type, srcHi, srcLo, addr, port, stamp, size, overlay });
  }
}
