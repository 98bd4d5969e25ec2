import { afterEach, describe, expect, it } from 'vitest';
import type { PeerName } from '../../common/types.js';
import { type MemoryUdp, MemoryUdpNet } from '../conn/memory-udp.js';
import { SleeveType } from '../overlay/frame.js';
import { withVnetHeader as vnet } from '../testing/packets.js';
import { MemoryTun } from '../tun/memory.js';
import { Drop } from './counters.js';
import { Encap, Fib, Hop, peerNameHi, peerNameLo } from './fib.js';
import { type ControlDatagram, Forwarder } from './forwarder.js';
import { fold16, sum16, VNET_GSO_TCPV4, VNET_HDR_LEN } from './gso.js';

const NAME_A = '02:00:00:00:00:0a' as PeerName;
const NAME_B = '02:00:00:00:00:0b' as PeerName;
const UNDER_A = 0xc0a80001; // 192.168.0.1
const UNDER_B = 0xc0a80002;
const IP_A = 0x0a200001; // 10.32.0.1, a container behind A
const IP_B = 0x0a280001; // 10.40.0.1, behind B
const PORT = 6783;

/** tcpPacket builds an IPv4/TCP packet (DF set, ACK|PSH) with `payload` bytes numbered by offset. */
function tcpPacket(payload: number, seq = 1000, opts: { sport?: number; flags?: number } = {}): Buffer {
  const p = Buffer.alloc(40 + payload);
  p[0] = 0x45;
  p.writeUInt16BE(40 + payload, 2);
  p.writeUInt16BE(0x1234, 4);
  p.writeUInt16BE(0x4000, 6); // DF
  p[8] = 64;
  p[9] = 6;
  p.writeUInt32BE(IP_A, 12);
  p.writeUInt32BE(IP_B, 16);
  p.writeUInt16BE(opts.sport ?? 40000, 20);
  p.writeUInt16BE(5201, 22);
  p.writeUInt32BE(seq, 24);
  p.writeUInt32BE(77, 28);
  p[32] = 0x50;
  p[33] = opts.flags ?? 0x18;
  p.writeUInt16BE(65000, 34);
  for (let i = 0; i < payload; i++) p[40 + i] = (seq + i) & 0xff;
  return p;
}

/** udpPacket builds an IPv4/UDP packet of `total` bytes, DF as asked. */
function udpPacket(total: number, df: boolean): Buffer {
  const p = Buffer.alloc(total);
  p[0] = 0x45;
  p.writeUInt16BE(total, 2);
  p.writeUInt16BE(0x4321, 4);
  p.writeUInt16BE(df ? 0x4000 : 0, 6);
  p[8] = 64;
  p[9] = 17;
  p.writeUInt32BE(IP_A, 12);
  p.writeUInt32BE(IP_B, 16);
  p.writeUInt16BE(5000, 20);
  p.writeUInt16BE(5001, 22);
  p.writeUInt16BE(total - 20, 24);
  for (let i = 28; i < total; i++) p[i] = i & 0xff;
  return p;
}

interface Pair {
  net: MemoryUdpNet;
  a: Forwarder;
  b: Forwarder;
  tunA: MemoryTun;
  tunB: MemoryTun;
  sockA: MemoryUdp;
  sockB: MemoryUdp;
  hopB: Hop;
  controlA: ControlDatagram[];
  /** sizes of every datagram A sent to B, as the network saw them. */
  sizes: number[];
}

function pair(opts: { gsoA?: boolean; groB?: boolean; pathMtu?: number } = {}): Pair {
  const net = new MemoryUdpNet();
  const sockA = net.open({ addr: UNDER_A, port: PORT, gso: opts.gsoA ?? true });
  const sockB = net.open({ addr: UNDER_B, port: PORT, gro: opts.groB ?? false, queueLimit: 4096 });
  const sizes: number[] = [];
  net.filter = (src, _sp, _dst, _dp, len) => {
    if (src === UNDER_A) sizes.push(len);
    return true;
  };
  if (opts.pathMtu !== undefined) net.setPathMtu(UNDER_A, UNDER_B, opts.pathMtu);
  const tunA = new MemoryTun({ vnetHdr: true, queueLimit: 4096 });
  const tunB = new MemoryTun({ vnetHdr: true, queueLimit: 4096 });
  const controlA: ControlDatagram[] = [];
  const a = new Forwarder({
    tun: tunA,
    sleeve: sockA,
    localName: NAME_A,
    vni: 1,
    vxlanPort: 4789,
    vnetHdr: true,
    onControl: (d) => controlA.push(d),
  });
  const b = new Forwarder({ tun: tunB, sleeve: sockB, localName: NAME_B, vni: 1, vxlanPort: 4789, vnetHdr: true });
  const hi = (n: PeerName) => peerNameHi(n);
  const lo = (n: PeerName) => peerNameLo(n);
  const hopB = new Hop(
    NAME_B,
    hi(NAME_B),
    lo(NAME_B),
    hi(NAME_B),
    lo(NAME_B),
    UNDER_B,
    PORT,
    Encap.Sleeve,
    PORT,
    opts.pathMtu ?? 1500,
  );
  const hopA = new Hop(NAME_A, hi(NAME_A), lo(NAME_A), hi(NAME_A), lo(NAME_A), UNDER_A, PORT, Encap.Sleeve);
  a.fib = Fib.build([{ cidr: { addr: IP_B as never, prefix: 32 }, hop: hopB }], [IP_A], [hopB]);
  b.fib = Fib.build([{ cidr: { addr: IP_A as never, prefix: 32 }, hop: hopA }], [IP_B], [hopA]);
  return { net, a, b, tunA, tunB, sockA, sockB, hopB, controlA, sizes };
}

/** send moves what A's TUN holds through both forwarders (synchronously) and returns what B's TUN got. */
function send(p: Pair, ...packets: Buffer[]): Buffer[] {
  for (const pkt of packets) p.tunA.inject(pkt);
  p.a.inside.onTunReadable();
  p.b.outside.onSleeveReadable();
  return p.tunB.written.splice(0);
}

let open: Pair[] = [];
afterEach(() => {
  for (const p of open) {
    p.sockA.close();
    p.sockB.close();
    p.tunA.close();
    p.tunB.close();
  }
  open = [];
});
function make(opts: Parameters<typeof pair>[0] = {}): Pair {
  const p = pair(opts);
  open.push(p);
  return p;
}

/** payloadOf returns the TCP payload of a (vnet-prefixed) packet written to a TUN. */
function payloadOf(w: Buffer): Buffer {
  const ip = w.subarray(VNET_HDR_LEN);
  return ip.subarray(40, ip.readUInt16BE(2));
}

describe('Forwarder (inside → outside over MemoryTun / MemoryUdp)', () => {
  it('cuts a super-packet into MSS segments that fit the path, as one GSO train, and merges them back (GRO on)', () => {
    const p = make({ groB: true, pathMtu: 1500 });
    p.net.filter = undefined; // a filter sees datagrams one by one: no train would stay whole
    const orig = tcpPacket(20_000);
    const out = send(p, vnet(orig, 1368));
    expect(p.a.counters.segmented).toBe(1);
    expect(p.a.counters.gsoTrains).toBe(1);
    expect(p.b.counters.groTrains).toBe(1);
    expect(p.net.stats.tooBig).toBe(0);
    expect(out).toHaveLength(1);
    const w = out[0] as Buffer;
    expect(w[1]).toBe(VNET_GSO_TCPV4);
    expect(w.readUInt16LE(4)).toBe(1368);
    const ip = w.subarray(VNET_HDR_LEN);
    expect(ip.readUInt16BE(2)).toBe(orig.length);
    expect(payloadOf(w).equals(orig.subarray(40))).toBe(true);
    expect(ip.readUInt32BE(24)).toBe(1000);
    // The TCP checksum field holds the pseudo-header sum for the merged length (partial).
    expect(ip.readUInt16BE(36)).toBe(fold16(sum16(ip, 12, 20, 6 + orig.length - 20)));
    // And the IPv4 header checksum is valid.
    expect(fold16(sum16(ip, 0, 20, 0))).toBe(0xffff);
  });

  it('sends no datagram larger than the path and merges individually received segments (GRO off)', () => {
    const p = make({ groB: false, pathMtu: 1500 });
    const orig = tcpPacket(30_000, 5);
    const out = send(p, vnet(orig, 1368));
    const segs = Math.ceil(30_000 / 1368);
    expect(p.sizes).toHaveLength(segs);
    for (const s of p.sizes) expect(s + 28).toBeLessThanOrEqual(1500);
    expect(p.b.counters.coalesced).toBe(segs - 1);
    expect(out).toHaveLength(1);
    expect(payloadOf(out[0] as Buffer).equals(orig.subarray(40))).toBe(true);
  });

  it('sends each segment as its own datagram when the socket has no GSO', () => {
    const p = make({ gsoA: false, pathMtu: 1500 });
    const out = send(p, vnet(tcpPacket(10_000), 1368));
    expect(p.a.counters.gsoTrains).toBe(0);
    expect(p.a.counters.udpTxPackets).toBe(Math.ceil(10_000 / 1368));
    expect(out).toHaveLength(1);
  });

  it('never merges across a lost segment: the bytes after the gap arrive as their own packet', () => {
    const p = make({ pathMtu: 1500 });
    let n = 0;
    p.net.filter = () => n++ !== 4; // lose the fifth datagram
    const orig = tcpPacket(10 * 1368, 100);
    const out = send(p, vnet(orig, 1368));
    expect(out).toHaveLength(2);
    const first = out[0] as Buffer;
    const second = out[1] as Buffer;
    expect(payloadOf(first).length).toBe(4 * 1368);
    expect(second.subarray(VNET_HDR_LEN).readUInt32BE(24)).toBe(100 + 5 * 1368);
    expect(payloadOf(second).equals(orig.subarray(40 + 5 * 1368))).toBe(true);
  });

  it('merges two interleaved flows each into its own packet', () => {
    const p = make({ groB: false, pathMtu: 1500 });
    const f1 = tcpPacket(5 * 1368, 1, { sport: 1111 });
    const f2 = tcpPacket(5 * 1368, 9, { sport: 2222 });
    const out = send(p, vnet(f1, 1368), vnet(f2, 1368));
    expect(out).toHaveLength(2);
    expect(payloadOf(out[0] as Buffer).equals(f1.subarray(40))).toBe(true);
    expect(payloadOf(out[1] as Buffer).equals(f2.subarray(40))).toBe(true);
  });

  it('answers a DF super-packet whose segments do not fit the path with ICMP "fragmentation needed"', () => {
    const p = make({ pathMtu: 1200 });
    const out = send(p, vnet(tcpPacket(8000), 1368));
    expect(out).toHaveLength(0);
    expect(p.a.counters.dropped(Drop.PathMtu)).toBe(1);
    const icmp = p.tunA.written.splice(0);
    expect(icmp).toHaveLength(1);
    const ip = (icmp[0] as Buffer).subarray(VNET_HDR_LEN);
    expect(ip[9]).toBe(1);
    expect(ip[20]).toBe(3);
    expect(ip[21]).toBe(4);
    expect(ip.readUInt16BE(26)).toBe(1200 - 56);
    expect(ip.readUInt32BE(12)).toBe(IP_B); // from the unreachable destination's direction
    expect(ip.readUInt32BE(16)).toBe(IP_A);
    expect(fold16(sum16(ip, 20, ip.length, 0))).toBe(0xffff); // ICMP checksum
  });

  it('answers a plain DF packet larger than the path with ICMP, and fragments one without DF', () => {
    const p = make({ pathMtu: 1000 });
    expect(send(p, vnet(udpPacket(1400, true)))).toHaveLength(0);
    expect(p.a.counters.icmpFragNeeded).toBe(1);
    const frags = send(p, vnet(udpPacket(1400, false)));
    expect(p.a.counters.fragmented).toBe(1);
    expect(p.net.stats.tooBig).toBe(0);
    expect(frags.length).toBe(2);
    const ips = frags.map((f) => f.subarray(VNET_HDR_LEN));
    expect(ips[0]?.readUInt16BE(6)).toBe(0x2000); // MF, offset 0
    const data = Buffer.concat(ips.map((ip) => ip.subarray(20, ip.readUInt16BE(2))));
    expect(data.equals(udpPacket(1400, false).subarray(20))).toBe(true);
    for (const ip of ips) expect(ip.readUInt16BE(2)).toBeLessThanOrEqual(1000 - 56);
  });

  it('bundles small packets into datagrams that stay within the path', () => {
    const p = make({ pathMtu: 600 });
    const small = Array.from({ length: 20 }, () => vnet(udpPacket(100, true)));
    const out = send(p, ...small);
    expect(out).toHaveLength(20);
    expect(p.a.counters.bundled).toBeGreaterThan(0);
    for (const s of p.sizes) expect(s + 28).toBeLessThanOrEqual(600);
  });

  it('acks a padded heartbeat (a path MTU probe) with the size it heard, and a probe too big for the path is lost', () => {
    const p = make({ pathMtu: 1400 });
    expect(p.a.sendHeartbeat(p.hopB, 1, 1400)).toBe(true);
    p.b.outside.onSleeveReadable();
    p.a.outside.onSleeveReadable();
    const ack = p.controlA.find((d) => d.type === SleeveType.HeartbeatAck);
    expect(ack?.size).toBe(1400);
    p.controlA.length = 0;
    p.a.sendHeartbeat(p.hopB, 2, 1401);
    p.b.outside.onSleeveReadable();
    p.a.outside.onSleeveReadable();
    expect(p.controlA).toHaveLength(0);
    expect(p.net.stats.tooBig).toBe(1);
  });
});
