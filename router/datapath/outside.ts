/**
 * Outside is the UDP → TUN half of the datapath (nebula's outside.go): datagrams from peers
 * become packets for the host.
 *
 *   recvBatch ──► datagram i at buf[i*SLOT] (a UDP GRO train: several datagrams back to back,
 *        │        each gso[i] bytes but the last, split here)
 *        │ sleeve: check the header; for another peer → relayed (unchanged but for the ttl,
 *        │         sealed or not); from a peer with data keys → opened in place (each datagram
 *        │         of a GRO train on its own; tampered/cleartext: Auth drop, replayed: Replay
 *        │         drop); heartbeats to Heartbeats; for us → each frame noted in place
 *        │ VXLAN:  check VNI and MAC; IPv4 noted in place (the Ethernet header's tail becomes the
 *        │         virtio-net header); ARP answered; endpoints learned
 *        ▼
 *   TunQueue: consecutive TCP segments of a flow merged into one GSO super-packet → one writeBatch
 *
 * `buf` holds the received datagrams and, after them, TunQueue's merge regions, so one writeBatch
 * covers both. Everything is in place and allocation-free.
 *
 * Over 400 lines because it is one hot loop over one buffer: sleeve and VXLAN datagrams, relaying,
 * ARP and endpoint learning all work in place in the same `buf` and feed the same TunQueue and
 * relay batch; split, that shared state would be passed around on every datagram.
 */

import type { PacketConn } from '../conn/packet-conn.js';
import { BATCH_MAX, ETH_HEADER_LEN, SLEEVE_HEADER_LEN, SLOT_BYTES, VXLAN_HEADER_LEN } from '../constants.js';
import { DATA_SEALED_MIN_BYTES, isEndToEnd } from '../crypto/data-crypto.js';
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
  SLEEVE_PREFIX_LEN,
  SleeveCheck,
  SleeveType,
  sleeveDstHi,
  sleeveDstLo,
  sleeveFrameLen,
  sleeveSrcHi,
  sleeveSrcLo,
  sleeveType,
  VxlanCheck,
  writeArp,
  writeEthernetHeader,
  writeVxlanHeader,
} from '../overlay/frame.js';
import { tryLoadNative } from '../tun/native.js';
import { Drop } from './counters.js';
import { Encap, type Hop } from './fib.js';
import type { Forwarder } from './forwarder.js';
import {
  completeChecksum,
  VNET_F_NEEDS_CSUM,
  VNET_GSO_ECN,
  VNET_HDR_LEN,
  vnetCsumOffset,
  vnetCsumStart,
  vnetFlags,
  vnetGsoType,
  vnetValid,
  writeVnetNone,
} from './gso.js';
import { ETHERTYPE_WEFT_HEARTBEAT } from './heartbeats.js';
import { ROUNDS_PER_WAKEUP } from './inside.js';
import { type PeerCrypto, SEAL_COUNTER_BYTES, SEAL_TAG_BYTES } from './peer-crypto.js';
import { SendBatch } from './send-batch.js';
import { GRO_BUFFER_BYTES, TunQueue } from './tun-queue.js';

const tcpToPartial = tryLoadNative()?.tcpToPartial;

/** TUN_WRITE_MAX is how many packets one TUN writeBatch carries at most (GRO trains and bundles hold many). */
const TUN_WRITE_MAX = 4096;
/** TRAIN_OPEN_MAX bounds the segments of one GRO train opened in one call (the rest one by one). */
const TRAIN_OPEN_MAX = 256;
/** RELAY_MAX is how many datagrams one wake-up relays before sending them early. */
const RELAY_MAX = 4096;

export class Outside {
  /** buf: datagram i received at i*SLOT_BYTES; TunQueue's merge regions after them. */
  readonly buf = Buffer.allocUnsafeSlow(BATCH_MAX * SLOT_BYTES + GRO_BUFFER_BYTES);
  private readonly lens = new Int32Array(BATCH_MAX);
  private readonly addrs = new Uint32Array(BATCH_MAX);
  private readonly ports = new Uint16Array(BATCH_MAX);
  private readonly gso = new Uint16Array(BATCH_MAX);
  readonly tunOut: TunQueue;
  private readonly relayOut = new SendBatch(RELAY_MAX);
  // One sealed datagram is opened at a time from these.
  private readonly openOff = new Int32Array(1);
  private readonly openLen = new Int32Array(1);
  private readonly openRes = new Uint8Array(1);
  // A GRO train's sealed segments are opened together from these; trainOpened of them were.
  private readonly trainOff = new Int32Array(TRAIN_OPEN_MAX);
  private readonly trainLen = new Int32Array(TRAIN_OPEN_MAX);
  private readonly trainRes = new Uint8Array(TRAIN_OPEN_MAX);
  private trainOpened = 0;

  // ARP replies are built here, one at a time.
  private readonly arpBuf = Buffer.alloc(ARP_FRAME_LEN);
  private readonly arpOff = new Int32Array(1);
  private readonly arpLen = new Int32Array([ARP_FRAME_LEN]);
  private readonly arpAddr = new Uint32Array(1);
  private readonly arpPort = new Uint16Array(1);

  constructor(private readonly fwd: Forwarder) {
    this.tunOut = new TunQueue(this.buf, BATCH_MAX * SLOT_BYTES, TUN_WRITE_MAX, fwd.vnet !== 0);
  }

  /**
   * receive reads one batch from `conn` and counts it; a datagram cut short by its slot keeps
   * length -1 and is counted as a truncated drop. Returns the batch size (0: none).
   */
  private receive(conn: PacketConn): number {
    const n = conn.recvBatch(this.buf, 0, SLOT_BYTES, BATCH_MAX, this.lens, this.addrs, this.ports, this.gso);
    if (n <= 0) return 0;
    const c = this.fwd.counters;
    c.udpBatches++;
    for (let i = 0; i < n; i++) {
      const len = this.lens[i] as number;
      if (len < 0) {
        c.drop(Drop.Truncated);
        continue;
      }
      const g = this.gso[i] as number;
      if (g > 0 && g < len) {
        c.groTrains++;
        c.udpRxPackets += Math.ceil(len / g);
      } else {
        c.udpRxPackets++;
      }
      c.udpRxBytes += len;
    }
    return n;
  }

  /** onSleeveReadable drains the sleeve socket. */
  readonly onSleeveReadable = (): void => {
    this.drain(this.fwd.sleeve, false);
  };

  /** onVxlanReadable drains the VXLAN socket (Weft peers and kernel vxlan). */
  readonly onVxlanReadable = (): void => {
    if (this.fwd.vxlan !== undefined) this.drain(this.fwd.vxlan, true);
  };

  /**
   * drain receives batches from `conn` until it is empty (at most ROUNDS_PER_WAKEUP), splits UDP
   * GRO trains back into datagrams, handles each, then writes the TUN queue and sends relays.
   */
  private drain(conn: PacketConn, vxlan: boolean): void {
    const fwd = this.fwd;
    for (let round = 0; round < ROUNDS_PER_WAKEUP; round++) {
      const n = this.receive(conn);
      if (n === 0) return;
      const now = vxlan ? fwd.nowMs() : 0;
      for (let i = 0; i < n; i++) {
        const len = this.lens[i] as number;
        if (len < 0) continue;
        const off = i * SLOT_BYTES;
        const g = this.gso[i] as number;
        const step = g > 0 && g < len ? g : Math.max(len, 1);
        // A sealed GRO train's leading run from one peer is opened in one call (openTrain).
        const hop = !vxlan && step < len ? this.openTrain(off, len, step, i) : undefined;
        let k = 0;
        for (let at = 0; at === 0 || at < len; at += step, k++) {
          const dl = Math.min(step, len - at);
          if (vxlan) this.vxlanDatagram(off + at, dl, i, now);
          else if (k >= this.trainOpened) this.sleeveDatagram(off + at, dl, i);
          else if (this.trainRes[k] === 1)
            this.sleeveFrames(off + at + SEAL_COUNTER_BYTES, dl - SEAL_COUNTER_BYTES - SEAL_TAG_BYTES, hop!);
        }
        this.trainOpened = 0;
      }
      this.tunOut.write(fwd.tun, fwd.counters);
      if (!vxlan) this.relayOut.flush(fwd.sleeve, this.buf, fwd.counters);
      if (n < BATCH_MAX) return;
    }
  }

  /**
   * open authenticates and decrypts the sealed sleeve datagram of `len` bytes at `off` from a peer
   * with data keys, in place, and moves its header next to the frames (over the counter), so the
   * cleartext datagram is at the returned offset, SEAL_COUNTER_BYTES + SEAL_TAG_BYTES shorter.
   * Returns -1 after a counted drop: Replay when authentic but seen before or too old, else Auth
   * (tampered, forged, wrong key, cleartext, or the peer's keys were closed). Sealed end to end
   * when we hold no such keys (the peer restarted, or forgot ours): asks for new ones (want).
   */
  private open(crypto: PeerCrypto, off: number, len: number): number {
    const c = this.fwd.counters;
    const rx = crypto.receiverOf(this.buf, off);
    const e2e = len >= DATA_SEALED_MIN_BYTES && isEndToEnd(this.buf, off);
    if (rx === undefined) {
      c.drop(Drop.Auth);
      if (e2e) crypto.want();
      return -1;
    }
    this.openOff[0] = off;
    this.openLen[0] = len;
    const replays = rx.replayDrops;
    if (rx.openBatch(this.buf, this.openOff, this.openLen, 1, this.openRes) !== 1) {
      const replay = rx.replayDrops !== replays;
      c.drop(replay ? Drop.Replay : Drop.Auth);
      // Under end-to-end keys we hold: the two ends' keys may differ (a lost answer). The owner
      // checks, a moment later, that nothing opened meanwhile before it makes new ones.
      if (e2e && !replay) crypto.want(true);
      return -1;
    }
    // The header moves forward over the counter (makeCounterRoom in reverse).
    this.buf.copyWithin(off + SEAL_COUNTER_BYTES, off, off + SLEEVE_HEADER_LEN);
    return off + SEAL_COUNTER_BYTES;
  }

  /**
   * openTrain opens, in one openBatch, the leading segments (`step` bytes each, the last may be
   * shorter) of the GRO train of `len` bytes at `off` (received as datagram i) that are sealed DATA
   * for us from the same directly connected peer with data keys, and counts those that fail
   * (Auth, Replay). Opened segments are moved to their cleartext form as `open` does. Sets
   * trainOpened/trainRes and returns the peer's hop; 0 segments (undefined) when the first one is
   * not such a datagram: then every segment takes the one-by-one path.
   */
  private openTrain(off: number, len: number, step: number, i: number): Hop | undefined {
    const fwd = this.fwd;
    const buf = this.buf;
    if (checkSleeveHeader(buf, off, step) !== SleeveCheck.Ok || sleeveType(buf, off) !== SleeveType.Data) return;
    if (sleeveDstLo(buf, off) !== fwd.nameLo || sleeveDstHi(buf, off) !== fwd.nameHi) return;
    const fib = fwd.fib;
    const sender = fib.sender(this.addrs[i] as number, this.ports[i] as number);
    if (sender === undefined) return;
    const hop = fib.peer(sleeveSrcHi(buf, off), sleeveSrcLo(buf, off));
    const keys = hop === undefined ? undefined : keysOf(sender, hop);
    const rx = keys?.receiverOf(buf, off);
    if (hop === undefined || keys === undefined || rx === undefined) return;
    // The run: segments whose header (but for the ttl) and key family are the first one's.
    const e2e = isEndToEnd(buf, off);
    let m = 0;
    for (let at = 0; at < len && m < TRAIN_OPEN_MAX; at += step, m++) {
      const o = off + at;
      if (at > 0 && (!sameHeader(buf, off, o) || isEndToEnd(buf, o) !== e2e)) break;
      this.trainOff[m] = o;
      this.trainLen[m] = Math.min(step, len - at);
    }
    const auths = rx.authDrops;
    const replays = rx.replayDrops;
    rx.openBatch(buf, this.trainOff, this.trainLen, m, this.trainRes);
    const c = fwd.counters;
    if (rx.authDrops !== auths) {
      c.drop(Drop.Auth, rx.authDrops - auths);
      if (e2e) keys.want(true); // see open()
    }
    if (rx.replayDrops !== replays) c.drop(Drop.Replay, rx.replayDrops - replays);
    for (let k = 0; k < m; k++) {
      const o = this.trainOff[k] as number;
      if (this.trainRes[k] === 1) buf.copyWithin(o + SEAL_COUNTER_BYTES, o, o + SLEEVE_HEADER_LEN);
    }
    this.trainOpened = m;
    return hop;
  }

  /** sleeveDatagram handles one sleeve datagram of `len` bytes at `off`, received as datagram i. */
  private sleeveDatagram(off: number, len: number, i: number): void {
    const fwd = this.fwd;
    const buf = this.buf;
    const c = fwd.counters;
    const chk = checkSleeveHeader(buf, off, len);
    if (chk !== SleeveCheck.Ok) {
      c.drop(sleeveDrop(chk));
      return;
    }
    // Without a password a sender is known by its endpoint: only a connected peer's is accepted.
    const fib = fwd.fib;
    const sender = fib.sender(this.addrs[i] as number, this.ports[i] as number);
    if (sender === undefined) {
      c.drop(Drop.NotFromPeer);
      return;
    }
    const srcHi = sleeveSrcHi(buf, off);
    const srcLo = sleeveSrcLo(buf, off);
    const type = sleeveType(buf, off);
    if (type !== SleeveType.Data) {
      // Heartbeats are never relayed: one must come from the endpoint of the peer it names.
      if (srcLo !== sender.nameLo || srcHi !== sender.nameHi) {
        c.drop(Drop.Spoofed);
        return;
      }
      const crypto = sender.crypto;
      let at = off;
      if (crypto !== undefined) {
        at = this.open(crypto, off, len);
        if (at < 0) return;
      }
      const clear = crypto === undefined ? len : len - SEAL_COUNTER_BYTES - SEAL_TAG_BYTES;
      fwd.heartbeats.control(
        type,
        buf,
        at,
        clear,
        this.addrs[i] as number,
        this.ports[i] as number,
        Encap.Sleeve,
        crypto,
        len,
      );
      return;
    }
    if (sleeveDstLo(buf, off) !== fwd.nameLo || sleeveDstHi(buf, off) !== fwd.nameHi) {
      this.relay(off, len);
      return;
    }
    // From the peer itself, or relayed by a connected peer for a peer we have a route to.
    const hop = fib.peer(srcHi, srcLo);
    if (hop === undefined) {
      c.drop(Drop.UnknownPeer);
      return;
    }
    const keys = keysOf(sender, hop);
    if (keys !== undefined) {
      const at = this.open(keys, off, len);
      if (at < 0) return;
      this.sleeveFrames(at, len - SEAL_COUNTER_BYTES - SEAL_TAG_BYTES, hop);
      return;
    }
    this.sleeveFrames(off, len, hop);
  }

  /** sleeveFrames handles the frames of a cleartext (or opened) DATA datagram of `len` bytes at `off` from `hop`. */
  private sleeveFrames(off: number, len: number, hop: Hop): void {
    const buf = this.buf;
    const c = this.fwd.counters;
    const end = off + len;
    let fo = off + SLEEVE_PREFIX_LEN - 2;
    if (fo >= end) {
      c.drop(Drop.Truncated); // a DATA header with no frame
      return;
    }
    while (fo < end) {
      const fl = sleeveFrameLen(buf, fo, end);
      if (fl < 0) {
        c.drop(Drop.Truncated);
        return;
      }
      const p = fo + 2;
      this.sleeveFrame(p, fl, hop);
      fo = p + fl;
    }
  }

  /**
   * sleeveFrame handles one sleeve frame of `fl` bytes at `p`: a virtio-net header and an IPv4
   * packet. With a virtio-net TUN both go to the kernel as they are (partial checksums and older
   * peers' super-packets included); without one the checksum is completed here, and
   * super-packets cannot be delivered.
   */
  private sleeveFrame(p: number, fl: number, hop: Hop): void {
    const fwd = this.fwd;
    const buf = this.buf;
    const c = fwd.counters;
    const ip = p + VNET_HDR_LEN;
    const pl = fl < VNET_HDR_LEN ? -1 : ipv4PacketLen(buf, ip, fl - VNET_HDR_LEN);
    if (pl < 0 || !vnetValid(buf, p, pl)) {
      c.drop(Drop.Malformed);
      return;
    }
    if (fwd.vnet !== 0) {
      this.tunOut.add(p, pl + VNET_HDR_LEN, hop, fwd.tun, c);
      return;
    }
    if ((vnetGsoType(buf, p) & ~VNET_GSO_ECN) !== 0) {
      c.drop(Drop.GsoUnsupported);
      return;
    }
    if ((vnetFlags(buf, p) & VNET_F_NEEDS_CSUM) !== 0) {
      completeChecksum(buf, ip, pl, vnetCsumStart(buf, p), vnetCsumOffset(buf, p));
    }
    this.tunOut.add(ip, pl, hop, fwd.tun, c);
  }

  /** vxlanDatagram handles one VXLAN datagram of `len` bytes at `off`, received as datagram i. */
  private vxlanDatagram(off: number, len: number, i: number, now: number): void {
    const fwd = this.fwd;
    const buf = this.buf;
    const c = fwd.counters;
    const from = this.addrs[i] as number;
    if (!fwd.fib.vxlanSource(from)) {
      c.drop(Drop.NotFromPeer); // neither a Weft peer nor a configured kernel vxlan peer
      return;
    }
    const chk = checkVxlan(buf, off, len, fwd.vni);
    if (chk !== VxlanCheck.Ok) {
      c.drop(chk === VxlanCheck.Truncated ? Drop.Truncated : Drop.BadVni);
      return;
    }
    const e = off + VXLAN_HEADER_LEN;
    const dHi = ethDstHi(buf, e);
    if (!isGroupMac(dHi) && (dHi !== fwd.nameHi || ethDstLo(buf, e) !== fwd.nameLo)) {
      c.drop(Drop.NotForOurMac);
      return;
    }
    const p = e + ETH_HEADER_LEN;
    const avail = off + len - p;
    const et = ethType(buf, e);
    if (et === ETHERTYPE_IPV4) {
      const pl = ipv4PacketLen(buf, p, avail);
      if (pl < 0) {
        c.drop(Drop.Malformed);
        return;
      }
      const src = buf.readUInt32BE(p + 12);
      const owned = fwd.fib.lookup(src);
      this.learn(src, ethSrcHi(buf, e), ethSrcLo(buf, e), from, now, owned);
      const hop = owned ?? fwd.learned.lookup(src);
      if (fwd.vnet !== 0) {
        // The Ethernet header has been read: its last 10 bytes become the virtio-net header. A TCP
        // segment whose checksum checks out is handed on with a partial checksum, so TunQueue may
        // merge it with the next ones (the kernel then never sums it again).
        const vh = p - VNET_HDR_LEN;
        writeVnetNone(buf, vh);
        if (tcpToPartial !== undefined && buf[p + 9] === 6 && tcpToPartial(buf, p, pl) === 1) {
          buf[vh] = VNET_F_NEEDS_CSUM;
          buf.writeUInt16LE(((buf[p] as number) & 0x0f) * 4, vh + 6);
          buf.writeUInt16LE(16, vh + 8);
        }
        this.tunOut.add(vh, pl + VNET_HDR_LEN, hop, fwd.tun, c);
      } else {
        this.tunOut.add(p, pl, hop, fwd.tun, c);
      }
    } else if (et === ETHERTYPE_ARP) {
      this.arp(p, avail, from, now);
    } else if (et === ETHERTYPE_WEFT_HEARTBEAT && checkSleeveHeader(buf, p, avail) === SleeveCheck.Ok) {
      const type = sleeveType(buf, p);
      const sender = fwd.fib.sender(from, this.ports[i] as number);
      if (type === SleeveType.Data) c.drop(Drop.Malformed);
      else if (sender === undefined || sender.nameHi !== sleeveSrcHi(buf, p) || sender.nameLo !== sleeveSrcLo(buf, p))
        c.drop(Drop.Spoofed);
      else fwd.heartbeats.control(type, buf, p, avail, from, this.ports[i] as number, Encap.Vxlan);
    } else {
      c.drop(Drop.UnsupportedEtherType);
    }
  }

  /** arp learns the sender of an ARP packet and answers requests for addresses this host serves. */
  private arp(p: number, avail: number, fromAddr: number, now: number): void {
    const fwd = this.fwd;
    const buf = this.buf;
    const c = fwd.counters;
    if (!arpIsIPv4(buf, p, avail)) {
      c.drop(Drop.Malformed);
      return;
    }
    const op = arpOp(buf, p);
    const senderIp = arpSenderIp(buf, p);
    const sHi = arpSenderMacHi(buf, p);
    const sLo = arpSenderMacLo(buf, p);
    if (senderIp !== 0) this.learn(senderIp, sHi, sLo, fromAddr, now, fwd.fib.lookup(senderIp));
    const target = arpTargetIp(buf, p);
    if (op !== ARP_OP_REQUEST || !fwd.fib.isLocal(target)) {
      c.drop(Drop.ArpNotOurs);
      return;
    }
    const a = this.arpBuf;
    writeVxlanHeader(a, 0, fwd.vni);
    writeEthernetHeader(a, VXLAN_HEADER_LEN, sHi, sLo, fwd.nameHi, fwd.nameLo, ETHERTYPE_ARP);
    const ap = VXLAN_HEADER_LEN + ETH_HEADER_LEN;
    writeArp(a, ap, ARP_OP_REPLY, fwd.nameHi, fwd.nameLo, target, sHi, sLo, senderIp);
    a.fill(0, ap + 28, ap + 28 + ARP_PAD_LEN);
    this.arpAddr[0] = fromAddr;
    this.arpPort[0] = fwd.vxlanPort;
    if (
      fwd.vxlan !== undefined &&
      fwd.vxlan.sendBatch(a, this.arpOff, this.arpLen, this.arpAddr, this.arpPort, 1) === 1
    ) {
      c.arpReplies++;
      c.udpTxPackets++;
      c.udpTxBytes += ARP_FRAME_LEN;
    } else {
      c.drop(Drop.UdpSend);
    }
  }

  /**
   * learn records that overlay address `ip` lives behind MAC (hi, lo) at underlay `from` — only
   * when `from` is a configured kernel vxlan peer and the address is not one the topology or
   * IPAM gives a Weft peer (`owned`), so no stranger can move or fill the table.
   */
  private learn(ip: number, hi: number, lo: number, from: number, now: number, owned: Hop | undefined): void {
    const fwd = this.fwd;
    if (owned !== undefined || !fwd.fib.kernelVxlanPeer(from)) return;
    if (fwd.learned.learn(ip, hi, lo, from, now)) fwd.counters.learned++;
  }

  /**
   * relay forwards a sleeve datagram addressed to another peer towards it, unchanged but for the
   * ttl: relays need no knowledge of the inner packet. The route is the Fib's hop for that peer.
   */
  private relay(off: number, len: number): void {
    const fwd = this.fwd;
    const buf = this.buf;
    const c = fwd.counters;
    const next = fwd.fib.peer(sleeveDstHi(buf, off), sleeveDstLo(buf, off));
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
    if (this.relayOut.full) this.relayOut.flush(fwd.sleeve, buf, c);
    this.relayOut.push(off, len, next.addr, next.sleevePort, 0, undefined, 0);
    c.relayed++;
  }
}

/** sameHeader says whether the sleeve headers at `a` and `b` are equal but for the ttl (byte 3). */
function sameHeader(buf: Buffer, a: number, b: number): boolean {
  for (let j = 0; j < SLEEVE_HEADER_LEN; j++) if (j !== 3 && buf[a + j] !== buf[b + j]) return false;
  return true;
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

/**
 * keysOf is what a DATA datagram from `hop`'s peer, received from the endpoint of `sender`, is
 * opened with: the sender's own (direct) hop's keys when it came straight from its origin, else
 * the route's. They are the same keys but for a peer whose data is trusted (--trusted-subnets):
 * cleartext directly, sealed end to end through a relay.
 */
function keysOf(sender: Hop, hop: Hop): PeerCrypto | undefined {
  return sender.nameLo === hop.nameLo && sender.nameHi === hop.nameHi ? sender.crypto : hop.crypto;
}
