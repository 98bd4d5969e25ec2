/**
 * The datapath receive path (router/datapath/outside.ts and the frame.ts readers it calls) driven
 * through a real Forwarder over MemoryUdp and MemoryTun: each input is one datagram (or one UDP
 * GRO train) handed to the forwarder's sleeve or VXLAN socket, from a connected peer's endpoint, a
 * relayed peer's, a stranger's or a configured kernel vxlan peer's.
 *
 * Input: | ctl (1) | datagram ... |
 *   ctl bits 0-1: source (0 peer B, 1 peer C, 2 stranger, 3 B's VXLAN port / kernel peer K)
 *   ctl bit 2:    the forwarder with a virtio-net TUN (vnet header on) or without
 *   ctl bits 3-7: GRO segment size selector (0: a single datagram)
 *
 * Properties: the forwarder never throws; every datagram it received (udpRxPackets) has at least
 * one outcome counted: delivered to the TUN, merged into another packet, relayed, a heartbeat, an
 * ARP reply, or a Drop; nothing stays queued for the TUN after a wake-up.
 */
import type { PeerName } from '../../common/types.js';
import { MemoryUdpNet } from '../../router/conn/memory-udp.js';
import { SLOT_BYTES } from '../../router/constants.js';
import type { Counters } from '../../router/datapath/counters.js';
import { Encap, Fib, Hop, peerNameHi, peerNameLo } from '../../router/datapath/fib.js';
import { Forwarder } from '../../router/datapath/forwarder.js';
import {
  ARP_OP_REPLY,
  ARP_OP_REQUEST,
  ETHERTYPE_ARP,
  SleeveType,
  writeArp,
  writeEthernetHeader,
  writeVxlanHeader,
} from '../../router/overlay/frame.js';
import { withVnetHeader as withVnet } from '../../router/testing/packets.js';
import { MemoryTun } from '../../router/tun/memory.js';
import { check, type FuzzTarget } from '../target.js';

const NAME_A = '02:00:00:00:00:0a' as PeerName; // the forwarder under fuzz
const NAME_B = '02:00:00:00:00:0b' as PeerName; // a directly connected peer
const NAME_C = '02:00:00:00:00:0c' as PeerName; // another connected peer (relays reach it)
const UNDER_A = 0xc0a80001;
const UNDER_B = 0xc0a80002;
const UNDER_C = 0xc0a80003;
const UNDER_K = 0xc0a80009; // a kernel vxlan device configured with --vxlan-peer
const UNDER_X = 0x0a0a0a0a; // a stranger
const IP_A = 0x0a200001;
const IP_B = 0x0a280001;
const IP_C = 0x0a300001;
const PORT = 6783;
const VXPORT = 6784;
const VNI = 42;
const GRO_SEGMENTS = [0, 64, 100, 200, 576, 1000, 1200, 1400, 1472, 9000];

const hi = peerNameHi;
const lo = peerNameLo;

function hop(name: PeerName, addr: number, port: number, encap: Encap): Hop {
  return new Hop(name, hi(name), lo(name), hi(name), lo(name), addr, port, encap, PORT);
}

/** Receiver is one forwarder under fuzz with its sockets. */
interface Receiver {
  fwd: Forwarder;
  net: MemoryUdpNet;
  sleeve: ReturnType<MemoryUdpNet['open']>;
  vxlan: ReturnType<MemoryUdpNet['open']>;
}

function receiver(vnet: boolean): Receiver {
  const net = new MemoryUdpNet();
  const sleeve = net.open({ addr: UNDER_A, port: PORT, queueLimit: 256, gro: true });
  const vxlan = net.open({ addr: UNDER_A, port: VXPORT, queueLimit: 256, gro: true });
  let now = 0;
  const fwd = new Forwarder({
    tun: new MemoryTun({ vnetHdr: vnet, queueLimit: 64 }),
    sleeve,
    vxlan,
    localName: NAME_A,
    vni: VNI,
    vxlanPort: VXPORT,
    vnetHdr: vnet,
    nowMs: () => (now += 7),
  });
  const hopB = hop(NAME_B, UNDER_B, PORT, Encap.Sleeve);
  const hopBvx = hop(NAME_B, UNDER_B, VXPORT, Encap.Vxlan);
  const hopC = hop(NAME_C, UNDER_C, PORT, Encap.Sleeve);
  fwd.fib = Fib.build(
    [
      { cidr: { addr: IP_B as never, prefix: 32 }, hop: hopB },
      { cidr: { addr: IP_C as never, prefix: 16 }, hop: hopC },
    ],
    [IP_A],
    [hopB, hopC],
    [],
    { endpoints: [hopB, hopBvx, hopC], kernelVxlanPeers: [UNDER_K] },
  );
  return { fwd, net, sleeve, vxlan };
}

/** outcomes sums every counter that records what became of a received datagram. */
function outcomes(c: Counters): number {
  let n = c.tunTxPackets + c.coalesced + c.relayed + c.heartbeats + c.arpReplies;
  for (let i = 0; i < c.drops.length; i++) n += c.drops[i] as number;
  return n;
}

/** ipv4 builds an IPv4 packet (TCP, UDP or ICMP) of `payload` bytes from `src` to `dst`. */
function ipv4(proto: number, payload: number, src: number, dst: number, seq = 1000): Buffer {
  const l4 = proto === 6 ? 20 : 8;
  const p = Buffer.alloc(20 + l4 + payload);
  p[0] = 0x45;
  p.writeUInt16BE(p.length, 2);
  p.writeUInt16BE(0x4000, 6);
  p[8] = 64;
  p[9] = proto;
  p.writeUInt32BE(src, 12);
  p.writeUInt32BE(dst, 16);
  if (proto === 6) {
    p.writeUInt16BE(40000, 20);
    p.writeUInt16BE(5201, 22);
    p.writeUInt32BE(seq, 24);
    p[32] = 0x50;
    p[33] = 0x10;
    p.writeUInt16BE(65000, 34);
  } else if (proto === 17) {
    p.writeUInt16BE(5000, 20);
    p.writeUInt16BE(53, 22);
    p.writeUInt16BE(8 + payload, 24);
  } else {
    p[20] = 8; // ICMP echo request
  }
  for (let i = 20 + l4; i < p.length; i++) p[i] = i & 0xff;
  return p;
}

/**
 * captureTraffic runs a real sending Forwarder (peer B) over its own MemoryUdpNet and returns the
 * datagrams it put on the wire towards A: sleeve data (single and bundled), sleeve relays for C,
 * VXLAN data, heartbeats, acks and path MTU probes. These are the seeds: real traffic.
 */
function captureTraffic(): { sleeve: Uint8Array[]; vxlan: Uint8Array[] } {
  const net = new MemoryUdpNet();
  const capSleeve = net.open({ addr: UNDER_A, port: PORT, queueLimit: 4096 });
  const capVx = net.open({ addr: UNDER_A, port: VXPORT, queueLimit: 4096 });
  const tun = new MemoryTun({ vnetHdr: true, queueLimit: 4096 });
  const b = new Forwarder({
    tun,
    sleeve: net.open({ addr: UNDER_B, port: PORT }),
    vxlan: net.open({ addr: UNDER_B, port: VXPORT }),
    localName: NAME_B,
    vni: VNI,
    vxlanPort: VXPORT,
    vnetHdr: true,
  });
  const hopA = hop(NAME_A, UNDER_A, PORT, Encap.Sleeve);
  const hopAvx = hop(NAME_A, UNDER_A, VXPORT, Encap.Vxlan);
  // C is reached through A (a relay): B sends sleeve datagrams addressed to C to A's endpoint.
  const hopCviaA = new Hop(NAME_C, hi(NAME_C), lo(NAME_C), hi(NAME_C), lo(NAME_C), UNDER_A, PORT, Encap.Sleeve, PORT);
  const IP_A_VX = IP_A + 1;
  b.fib = Fib.build(
    [
      { cidr: { addr: IP_A as never, prefix: 32 }, hop: hopA },
      { cidr: { addr: IP_A_VX as never, prefix: 32 }, hop: hopAvx },
      { cidr: { addr: IP_C as never, prefix: 32 }, hop: hopCviaA },
    ],
    [IP_B],
    [hopA],
  );
  const packets = [
    withVnet(ipv4(6, 0, IP_B, IP_A)),
    withVnet(ipv4(6, 1200, IP_B, IP_A)),
    withVnet(ipv4(6, 4000, IP_B, IP_A, 5000), 1400), // a super-packet: cut into segments
    withVnet(ipv4(17, 60, IP_B, IP_A)),
    withVnet(ipv4(17, 60, IP_B, IP_A)), // small packets back to back: bundled in one datagram
    withVnet(ipv4(1, 56, IP_B, IP_A)),
    withVnet(ipv4(6, 100, IP_B, IP_A_VX)),
    withVnet(ipv4(6, 2000, IP_B, IP_A_VX, 9000), 1300),
    withVnet(ipv4(17, 32, IP_B, IP_A_VX)),
    withVnet(ipv4(1, 56, IP_B, IP_C)),
  ];
  for (const p of packets) tun.inject(p);
  b.inside.onTunReadable();
  b.sendHeartbeat(hopA, 1234.5);
  b.sendHeartbeat(hopA, 99, 1400); // a path MTU probe
  b.sendVxlanHeartbeat(hopAvx, VXPORT, 77);
  const drain = (sock: typeof capSleeve): Uint8Array[] => {
    const out: Uint8Array[] = [];
    const buf = Buffer.alloc(64 * SLOT_BYTES);
    const lens = new Int32Array(64);
    const addrs = new Uint32Array(64);
    const ports = new Uint16Array(64);
    for (;;) {
      const n = sock.recvBatch(buf, 0, SLOT_BYTES, 64, lens, addrs, ports);
      if (n === 0) return out;
      for (let i = 0; i < n; i++) {
        const len = lens[i] as number;
        if (len > 0) out.push(Uint8Array.from(buf.subarray(i * SLOT_BYTES, i * SLOT_BYTES + len)));
      }
    }
  };
  const sleeve = drain(capSleeve);
  const vxlan = drain(capVx);
  // A heartbeat ack, as A's own forwarder would answer B: a heartbeat B receives is acked by B's forwarder.
  const ackNet = new MemoryUdpNet();
  const ackCap = ackNet.open({ addr: UNDER_A, port: PORT, queueLimit: 16 });
  const b2 = new Forwarder({
    tun: new MemoryTun(),
    sleeve: ackNet.open({ addr: UNDER_B, port: PORT }),
    localName: NAME_B,
    vni: VNI,
    vxlanPort: VXPORT,
  });
  b2.fib = Fib.build([], [], [hopA]);
  const hb = sleeve.find((d) => d[2] === SleeveType.Heartbeat);
  if (hb !== undefined) {
    const hbFromA = Buffer.from(hb);
    hbFromA.writeUInt16BE(hi(NAME_A), 4);
    hbFromA.writeUInt32BE(lo(NAME_A), 6);
    hbFromA.writeUInt16BE(hi(NAME_B), 10);
    hbFromA.writeUInt32BE(lo(NAME_B), 12);
    ackNet
      .open({ addr: UNDER_A, port: 1 })
      .sendBatch(
        hbFromA,
        Int32Array.of(0),
        Int32Array.of(hbFromA.length),
        Uint32Array.of(UNDER_B),
        Uint16Array.of(PORT),
        1,
      );
    b2.outside.onSleeveReadable();
    sleeve.push(...drain(ackCap));
  }
  // ARP from a kernel vxlan device: a request for an address A serves and a reply (gratuitous).
  for (const op of [ARP_OP_REQUEST, ARP_OP_REPLY]) {
    const a = Buffer.alloc(8 + 60);
    writeVxlanHeader(a, 0, VNI);
    writeEthernetHeader(a, 8, 0xffff, 0xffffffff, 0x0242, 0x0a000009, ETHERTYPE_ARP);
    writeArp(a, 22, op, 0x0242, 0x0a000009, 0x0a200099, 0, 0, IP_A);
    vxlan.push(a);
  }
  return { sleeve, vxlan };
}

let captured: { sleeve: Uint8Array[]; vxlan: Uint8Array[] } | undefined;

function seedsOf(kind: 'sleeve' | 'vxlan'): Uint8Array[] {
  captured ??= captureTraffic();
  const out: Uint8Array[] = [];
  for (const d of captured[kind]) {
    for (const ctl of kind === 'sleeve' ? [0, 1, 4] : [0, 3, 4, 7]) {
      const s = new Uint8Array(1 + d.length);
      s[0] = ctl;
      s.set(d, 1);
      out.push(s);
    }
  }
  return out;
}

function datapathTarget(kind: 'sleeve' | 'vxlan'): FuzzTarget {
  let plain: Receiver | undefined;
  let vnet: Receiver | undefined;
  return {
    name: `${kind}-datapath`,
    parsers: [
      'router/datapath/outside.ts: Outside.onSleeveReadable/onVxlanReadable (drain, sleeveDatagram, vxlanDatagram, arp, relay)',
      'router/overlay/frame.ts: checkSleeveHeader, sleeveFrameLen, checkVxlan, ipv4PacketLen, arpIsIPv4 and the field readers',
      'router/datapath/gso.ts: vnetValid, completeChecksum; router/datapath/tun-queue.ts: TunQueue.add (GRO merge)',
      'router/datapath/heartbeats.ts: Heartbeats.control',
    ],
    maxLen: 9001,
    seeds: () => seedsOf(kind),
    run(input: Uint8Array): string {
      if (input.length === 0) return 'empty';
      const ctl = input[0] as number;
      plain ??= receiver(false);
      vnet ??= receiver(true);
      const r = (ctl & 4) !== 0 ? vnet : plain;
      const src = ctl & 3;
      const len = input.length - 1;
      const seg = (GRO_SEGMENTS[(ctl >>> 3) % GRO_SEGMENTS.length] as number) % Math.max(len, 1);
      const addr =
        src === 0 ? UNDER_B : src === 1 ? UNDER_C : src === 2 ? UNDER_X : kind === 'sleeve' ? UNDER_B : UNDER_K;
      const port = kind === 'sleeve' ? (src === 2 ? 1234 : src === 3 ? VXPORT : PORT) : src === 0 ? VXPORT : 4789;
      const c = r.fwd.counters;
      const rx0 = c.udpRxPackets;
      const before = outcomes(c);
      const tun0 = c.tunTxPackets;
      const relayed0 = c.relayed;
      const hb0 = c.heartbeats;
      const sock = kind === 'sleeve' ? r.sleeve : r.vxlan;
      const data = Buffer.from(input.buffer, input.byteOffset + 1, len);
      check(sock.deliver(data, 0, len, addr, port, seg), 'the receive queue refused a datagram');
      if (kind === 'sleeve') r.fwd.outside.onSleeveReadable();
      else r.fwd.outside.onVxlanReadable();
      const datagrams = c.udpRxPackets - rx0;
      const counted = outcomes(c) - before;
      const expected = seg > 0 && seg < len ? Math.ceil(len / seg) : 1;
      check(datagrams === expected, `received ${datagrams} datagrams, sent ${expected}`);
      check(counted >= datagrams, `${datagrams} datagrams but ${counted} outcomes counted (ctl ${ctl})`);
      return outcomeLabel(c, tun0, relayed0, hb0);
    },
  };
}

/** lastDrops holds each receiver's drop counters as the previous input left them. */
const lastDrops = new WeakMap<Counters, Float64Array>();

/** outcomeLabel names what the input did: the first drop reason whose count moved, else delivery, relay or heartbeat. */
function outcomeLabel(c: Counters, tun0: number, relayed0: number, hb0: number): string {
  const prev = lastDrops.get(c) ?? new Float64Array(c.drops.length);
  let text =
    c.tunTxPackets > tun0 ? 'delivered' : c.relayed > relayed0 ? 'relayed' : c.heartbeats > hb0 ? 'heartbeat' : 'other';
  for (let i = 0; i < c.drops.length; i++) {
    if (c.drops[i] !== prev[i]) {
      text += `+drop:${i}`;
      break;
    }
  }
  prev.set(c.drops);
  lastDrops.set(c, prev);
  return text;
}

/** sleeveDatapath fuzzes the sleeve receive path of a real Forwarder. */
export const sleeveDatapath: FuzzTarget = datapathTarget('sleeve');
/** vxlanDatapath fuzzes the VXLAN receive path of a real Forwarder (Weft peers and kernel vxlan). */
export const vxlanDatapath: FuzzTarget = datapathTarget('vxlan');
