import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import type { PeerName } from '../../common/types.js';
import { type MemoryUdp, MemoryUdpNet } from '../conn/memory-udp.js';
import type { DataKeys } from '../connection.js';
import { SLEEVE_HEADER_LEN } from '../constants.js';
import { SleeveType } from '../overlay/frame.js';
import { withVnetHeader as vnet } from '../testing/packets.js';
import { MemoryTun } from '../tun/memory.js';
import { tryLoadNative } from '../tun/native.js';
import { Drop } from './counters.js';
import { Encap, Fib, Hop, peerNameHi, peerNameLo } from './fib.js';
import { type ControlDatagram, Forwarder } from './forwarder.js';
import { VNET_HDR_LEN } from './gso.js';
import { PeerCrypto } from './peer-crypto.js';

const native = tryLoadNative();

const NAME_A = '02:00:00:00:00:0a' as PeerName;
const NAME_B = '02:00:00:00:00:0b' as PeerName;
const NAME_R = '02:00:00:00:00:0c' as PeerName;
const UNDER_A = 0xc0a80001; // 192.168.0.1
const UNDER_B = 0xc0a80002;
const UNDER_R = 0xc0a80003;
const IP_A = 0x0a200001; // 10.32.0.1, a container behind A
const IP_B = 0x0a280001; // 10.40.0.1, behind B
const PORT = 6783;
/** MARKER is a payload string that must never cross the underlay in the clear. */
const MARKER = Buffer.from('weft-secret-marker-0123456789');

function ipv4(proto: number, total: number, src: number, dst: number, df: boolean): Buffer {
  const p = Buffer.alloc(total);
  p[0] = 0x45;
  p.writeUInt16BE(total, 2);
  p.writeUInt16BE(0x4321, 4);
  p.writeUInt16BE(df ? 0x4000 : 0, 6);
  p[8] = 64;
  p[9] = proto;
  p.writeUInt32BE(src, 12);
  p.writeUInt32BE(dst, 16);
  return p;
}

/** udpPacket builds an IPv4/UDP packet of `total` bytes from `src` to `dst` carrying MARKER repeated. */
function udpPacket(total: number, df = true, src = IP_A, dst = IP_B): Buffer {
  const p = ipv4(17, total, src, dst, df);
  p.writeUInt16BE(5000, 20);
  p.writeUInt16BE(5001, 22);
  p.writeUInt16BE(total - 20, 24);
  for (let i = 28; i < total; i++) p[i] = MARKER[(i - 28) % MARKER.length]!;
  return p;
}

/** tcpPacket builds an IPv4/TCP packet (DF, ACK|PSH) whose payload repeats MARKER. */
function tcpPacket(payload: number): Buffer {
  const p = ipv4(6, 40 + payload, IP_A, IP_B, true);
  p.writeUInt16BE(40000, 20);
  p.writeUInt16BE(5201, 22);
  p.writeUInt32BE(1000, 24);
  p.writeUInt32BE(77, 28);
  p[32] = 0x50;
  p[33] = 0x18;
  p.writeUInt16BE(65000, 34);
  for (let i = 0; i < payload; i++) p[40 + i] = MARKER[i % MARKER.length]!;
  return p;
}

function hopOf(name: PeerName, addr: number, pmtu = 1500): Hop {
  const hi = peerNameHi(name);
  const lo = peerNameLo(name);
  return new Hop(name, hi, lo, hi, lo, addr, PORT, Encap.Sleeve, PORT, pmtu);
}

/** Wire is what one socket received, as the network handed it over (a GRO train whole). */
interface Wire {
  buf: Buffer;
  seg: number;
}

/** capture records a copy of every datagram (or train) delivered to `sock`. */
function capture(sock: MemoryUdp): Wire[] {
  const seen: Wire[] = [];
  const deliver = sock.deliver.bind(sock);
  sock.deliver = (buf, off, len, addr, port, seg = 0) => {
    seen.push({ buf: Buffer.from(buf.subarray(off, off + len)), seg });
    return deliver(buf, off, len, addr, port, seg);
  };
  return seen;
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
  hopA: Hop;
  /** atB/atA: what B and A received on the underlay. */
  atB: Wire[];
  atA: Wire[];
  controlA: ControlDatagram[];
  cryptoA: PeerCrypto | undefined;
  cryptoB: PeerCrypto | undefined;
}

/** keyPair makes the two ends' DataKeys of one connection (A's send is B's recv and back). */
function keyPair(): [DataKeys, DataKeys] {
  const ab = randomBytes(32);
  const ba = randomBytes(32);
  return [
    { suite: 'aes-256-gcm', send: ab, recv: ba },
    { suite: 'aes-256-gcm', send: ba, recv: ab },
  ];
}

const open: { close(): void }[] = [];
afterEach(() => {
  for (const o of open.splice(0)) o.close();
});

function pair(opts: { encrypted?: boolean; gsoA?: boolean; groB?: boolean; pathMtu?: number } = {}): Pair {
  const net = new MemoryUdpNet();
  const sockA = net.open({ addr: UNDER_A, port: PORT, gso: opts.gsoA ?? true, queueLimit: 4096 });
  const sockB = net.open({ addr: UNDER_B, port: PORT, gro: opts.groB ?? false, queueLimit: 4096 });
  if (opts.pathMtu !== undefined) net.setPathMtu(UNDER_A, UNDER_B, opts.pathMtu);
  const tunA = new MemoryTun({ vnetHdr: true, queueLimit: 4096 });
  const tunB = new MemoryTun({ vnetHdr: true, queueLimit: 4096 });
  open.push(sockA, sockB, tunA, tunB);
  const controlA: ControlDatagram[] = [];
  const common = { vni: 1, vxlanPort: 4789, vnetHdr: true };
  const a = new Forwarder({
    ...common,
    tun: tunA,
    sleeve: sockA,
    localName: NAME_A,
    onControl: (d) => controlA.push(d),
  });
  const b = new Forwarder({ ...common, tun: tunB, sleeve: sockB, localName: NAME_B });
  const hopB = hopOf(NAME_B, UNDER_B, opts.pathMtu);
  const hopA = hopOf(NAME_A, UNDER_A, opts.pathMtu);
  let cryptoA: PeerCrypto | undefined;
  let cryptoB: PeerCrypto | undefined;
  if (opts.encrypted !== false) {
    const [ka, kb] = keyPair();
    cryptoA = new PeerCrypto(native!, ka);
    cryptoB = new PeerCrypto(native!, kb);
    open.push(cryptoA, cryptoB);
    hopB.crypto = cryptoA; // A's keys towards B
    hopA.crypto = cryptoB;
  }
  a.fib = Fib.build([{ cidr: { addr: IP_B as never, prefix: 32 }, hop: hopB }], [IP_A], [hopB]);
  b.fib = Fib.build([{ cidr: { addr: IP_A as never, prefix: 32 }, hop: hopA }], [IP_B], [hopA]);
  const atB = capture(sockB);
  const atA = capture(sockA);
  return { net, a, b, tunA, tunB, sockA, sockB, hopA, hopB, atA, atB, controlA, cryptoA, cryptoB };
}

/** relayHopVia is a hop for peer `name` through the router at `addr` (sleeve, final peer named in the header). */
function relayHopVia(name: PeerName, addr: number, crypto: PeerCrypto | undefined): Hop {
  const hi = peerNameHi(name);
  const lo = peerNameLo(name);
  const h = new Hop(name, hi, lo, hi, lo, addr, PORT, Encap.Sleeve);
  h.crypto = crypto;
  return h;
}

/** relayR adds router R (no keys, knows A and B directly) to a pair's network. */
function relayR(p: Pair): { r: Forwarder; atR: Wire[] } {
  const sockR = p.net.open({ addr: UNDER_R, port: PORT, queueLimit: 4096 });
  const tunR = new MemoryTun({ vnetHdr: true });
  open.push(sockR, tunR);
  const r = new Forwarder({ tun: tunR, sleeve: sockR, localName: NAME_R, vni: 1, vxlanPort: 4789, vnetHdr: true });
  r.fib = Fib.build([], [], [hopOf(NAME_A, UNDER_A), hopOf(NAME_B, UNDER_B)]);
  return { r, atR: capture(sockR) };
}

/** send moves what A's TUN holds through both forwarders and returns what B's TUN got. */
function send(p: Pair, ...packets: Buffer[]): Buffer[] {
  for (const pkt of packets) p.tunA.inject(pkt);
  p.a.inside.onTunReadable();
  p.b.outside.onSleeveReadable();
  return p.tunB.written.splice(0);
}

/** inner strips the virtio-net header a vnet TUN write carries. */
function inner(w: Buffer): Buffer {
  return w.subarray(VNET_HDR_LEN);
}

function containsMarker(wires: Wire[]): boolean {
  return wires.some((w) => w.buf.includes(MARKER.subarray(0, 12)));
}

describe.skipIf(native === undefined)('Forwarder with data keys (sealed sleeve)', () => {
  it('seals every datagram both ways: delivered intact, 24 bytes longer, no payload in the clear', () => {
    const p = pair();
    const pkt = udpPacket(1000);
    const out = send(p, vnet(pkt));
    expect(out).toHaveLength(1);
    expect(inner(out[0]!).equals(pkt)).toBe(true);
    expect(p.atB).toHaveLength(1);
    // header 16 + counter 8 + frame length 2 + vnet 10 + packet + tag 16
    expect(p.atB[0]!.buf.length).toBe(SLEEVE_HEADER_LEN + 8 + 2 + VNET_HDR_LEN + 1000 + 16);
    expect(p.atB[0]!.buf[2]).toBe(SleeveType.Data); // the header stays readable
    expect(containsMarker(p.atB)).toBe(false);
    expect(p.cryptoA!.sender!.sealed).toBe(1);
    expect(p.cryptoB!.receiver!.opened).toBe(1);
    // And back: B → A.
    const back = udpPacket(300, true, IP_B, IP_A);
    p.tunB.inject(vnet(back));
    p.b.inside.onTunReadable();
    p.a.outside.onSleeveReadable();
    const got = p.tunA.written.splice(0);
    expect(got).toHaveLength(1);
    expect(inner(got[0]!).equals(back)).toBe(true);
    expect(containsMarker(p.atA)).toBe(false);
  });

  it('drops a datagram with one byte changed as an auth failure, never delivering it', () => {
    const p = pair();
    send(p, vnet(udpPacket(500)));
    const w = Buffer.from(p.atB[0]!.buf);
    for (const at of [40, 20, w.length - 1]) {
      // a frame byte, a counter byte, a tag byte
      const t = Buffer.from(w);
      t[at]! ^= 1;
      p.sockB.deliver(t, 0, t.length, UNDER_A, PORT);
    }
    const short = w.subarray(0, 30);
    p.sockB.deliver(short, 0, short.length, UNDER_A, PORT);
    p.b.outside.onSleeveReadable();
    expect(p.tunB.written).toHaveLength(0);
    expect(p.b.counters.dropped(Drop.Auth)).toBe(4);
  });

  it('drops a replayed datagram as a replay', () => {
    const p = pair();
    expect(send(p, vnet(udpPacket(500)))).toHaveLength(1);
    const w = p.atB[0]!.buf;
    p.sockB.deliver(w, 0, w.length, UNDER_A, PORT);
    p.b.outside.onSleeveReadable();
    expect(p.tunB.written).toHaveLength(0);
    expect(p.b.counters.dropped(Drop.Replay)).toBe(1);
  });

  it('drops cleartext from a peer it holds keys for (nothing in the clear is delivered)', () => {
    const p = pair();
    // A sender that has no keys for B (as if it had no password) towards B that has keys for A.
    p.hopB.crypto = undefined;
    expect(send(p, vnet(udpPacket(500)))).toHaveLength(0);
    expect(p.b.counters.dropped(Drop.Auth)).toBe(1);
    expect(containsMarker(p.atB)).toBe(true); // it was cleartext indeed
  });

  it('seals each segment of a GSO train on its own (equal segments stay equal) and opens each of a GRO train', () => {
    const p = pair({ groB: true, pathMtu: 1500 });
    const orig = tcpPacket(20_000);
    const out = send(p, vnet(orig, 1368));
    expect(p.a.counters.gsoTrains).toBe(1);
    expect(p.atB).toHaveLength(1); // one train, received whole
    const train = p.atB[0]!;
    const segs = Math.ceil(20_000 / 1368);
    const inner1 = 2 + VNET_HDR_LEN + 40 + 1368;
    expect(train.seg).toBe(SLEEVE_HEADER_LEN + 8 + inner1 + 16);
    expect(train.seg + 28).toBeLessThanOrEqual(1500);
    expect(Math.ceil(train.buf.length / train.seg)).toBe(segs);
    // Every segment carries its own counter (0, 1, 2, ...).
    for (let k = 0; k < segs; k++) expect(train.buf.readUInt32BE(k * train.seg + 16 + 4)).toBe(k);
    expect(containsMarker(p.atB)).toBe(false);
    expect(p.cryptoB!.receiver!.opened).toBe(segs);
    expect(out).toHaveLength(1);
    const ip = inner(out[0]!);
    expect(ip.readUInt16BE(2)).toBe(orig.length);
    expect(ip.subarray(40).equals(orig.subarray(40))).toBe(true);
  });

  it('in a GRO train drops a tampered segment (auth) and a replayed train (replay), delivering the rest', () => {
    const p = pair({ groB: true, pathMtu: 1500 });
    send(p, vnet(tcpPacket(10 * 1368), 1368));
    const train = p.atB[0]!;
    expect(p.cryptoB!.receiver!.opened).toBe(10);
    // Replayed whole: every segment is a replay.
    p.sockB.deliver(train.buf, 0, train.buf.length, UNDER_A, PORT, train.seg);
    p.b.outside.onSleeveReadable();
    expect(p.b.counters.dropped(Drop.Replay)).toBe(10);
    expect(p.tunB.written.splice(0)).toHaveLength(0);
    // A fresh train whose fourth segment is changed on the way: only that one is lost.
    const deliver = p.sockB.deliver.bind(p.sockB);
    p.sockB.deliver = (buf, off, len, addr, port, seg = 0) => {
      const copy = Buffer.from(buf.subarray(off, off + len));
      copy[3 * seg + 100]! ^= 0x40;
      return deliver(copy, 0, len, addr, port, seg);
    };
    const out = send(p, vnet(tcpPacket(10 * 1368), 1368));
    expect(p.b.counters.dropped(Drop.Auth)).toBe(1);
    expect(p.cryptoB!.receiver!.opened).toBe(19);
    expect(out).toHaveLength(2); // segments 0-2 and 4-9, each merged
    expect(inner(out[0]!).readUInt16BE(2)).toBe(40 + 3 * 1368);
    expect(inner(out[1]!).readUInt16BE(2)).toBe(40 + 6 * 1368);
  });

  it('opens each datagram of a sealed GSO train the receiver gets one by one (no GRO)', () => {
    const p = pair({ groB: false, pathMtu: 1500 });
    const orig = tcpPacket(20_000);
    const out = send(p, vnet(orig, 1368));
    const segs = Math.ceil(20_000 / 1368);
    expect(p.a.counters.gsoTrains).toBe(1);
    expect(p.atB).toHaveLength(segs);
    const d = SLEEVE_HEADER_LEN + 8 + 2 + VNET_HDR_LEN + 40 + 1368 + 16;
    for (const w of p.atB.slice(0, -1)) expect(w.buf.length).toBe(d);
    expect(p.cryptoB!.receiver!.opened).toBe(segs);
    expect(out).toHaveLength(1);
    expect(inner(out[0]!).subarray(40).equals(orig.subarray(40))).toBe(true);
  });

  it('seals segments sent one by one (no GSO) and fits them in the path', () => {
    const p = pair({ gsoA: false, pathMtu: 1400 });
    const orig = tcpPacket(10_000);
    // 1400 - 28 (IP, UDP) - 16 (header) - 8 (counter) - 12 (frame length, vnet) - 16 (tag) - 40 (IP, TCP) = 1280
    const out = send(p, vnet(orig, 1280));
    expect(p.a.counters.gsoTrains).toBe(0);
    expect(p.atB.length).toBe(Math.ceil(10_000 / 1280));
    expect(p.net.stats.tooBig).toBe(0);
    for (const w of p.atB) expect(w.buf.length + 28).toBeLessThanOrEqual(1400);
    expect(p.atB[0]!.buf.length + 28).toBe(1400);
    expect(out).toHaveLength(1);
    // One more byte of MSS no longer fits: ICMP "fragmentation needed", nothing sent.
    p.atB.length = 0;
    expect(send(p, vnet(tcpPacket(10_000), 1281))).toHaveLength(0);
    expect(p.a.counters.dropped(Drop.PathMtu)).toBe(1);
    expect(inner(out[0]!).subarray(40).equals(orig.subarray(40))).toBe(true);
  });

  it('seals bundled small packets and IP fragments within the path', () => {
    const p = pair({ pathMtu: 600 });
    const small = Array.from({ length: 20 }, () => vnet(udpPacket(100)));
    expect(send(p, ...small)).toHaveLength(20);
    expect(p.a.counters.bundled).toBeGreaterThan(0);
    for (const w of p.atB) expect(w.buf.length + 28).toBeLessThanOrEqual(600);
    p.atB.length = 0;
    const big = udpPacket(1400, false);
    const frags = send(p, vnet(big));
    expect(p.a.counters.fragmented).toBe(1);
    expect(frags.length).toBeGreaterThan(1);
    expect(p.net.stats.tooBig).toBe(0);
    expect(containsMarker(p.atB)).toBe(false);
    const data = Buffer.concat(frags.map((f) => inner(f)).map((ip) => ip.subarray(20, ip.readUInt16BE(2))));
    expect(data.equals(big.subarray(20))).toBe(true);
  });

  it('seals heartbeats and acks (a probe keeps its whole size) and drops a forged cleartext one', () => {
    const p = pair({ pathMtu: 1400 });
    expect(p.a.sendHeartbeat(p.hopB, 1, 1400)).toBe(true);
    expect(p.atB[0]!.buf.length + 28).toBe(1400);
    p.b.outside.onSleeveReadable();
    p.a.outside.onSleeveReadable();
    const ack = p.controlA.find((d) => d.type === SleeveType.HeartbeatAck);
    expect(ack?.size).toBe(1400);
    expect(ack?.stamp).toBe(1);
    expect(p.cryptoA!.receiver!.opened).toBe(1);
    // A cleartext ack "from B" (an attacker on B's address without the key) is dropped.
    p.controlA.length = 0;
    const forged = Buffer.from(p.atA[0]!.buf.subarray(0, 16 + 8 + 2));
    forged.copyWithin(16, 24, 26);
    p.sockA.deliver(forged, 0, 16 + 10, UNDER_B, PORT);
    p.a.outside.onSleeveReadable();
    expect(p.controlA).toHaveLength(0);
    expect(p.a.counters.dropped(Drop.Auth)).toBe(1);
  });

  it('after the keys are closed sends nothing to the peer, not even in the clear', () => {
    const p = pair();
    p.cryptoA!.close();
    expect(send(p, vnet(udpPacket(500)))).toHaveLength(0);
    expect(p.atB).toHaveLength(0);
    expect(p.a.counters.dropped(Drop.NoKey)).toBe(1);
    expect(p.a.sendHeartbeat(p.hopB, 1)).toBe(false);
  });

  it('follows a reconnect: new keys installed on both ends, datagrams of the old keys in flight still open', () => {
    const p = pair();
    p.tunA.inject(vnet(udpPacket(200)));
    p.a.inside.onTunReadable(); // in flight under the old keys
    const [ka, kb] = keyPair();
    p.cryptoA!.install(ka);
    p.cryptoB!.install(kb);
    expect(send(p, vnet(udpPacket(300)))).toHaveLength(2);
  });

  it('with NO_KEYS on the hop (a peer reached only through a relay) drops both ways instead of using the clear', () => {
    const p = pair();
    p.hopB.crypto = PeerCrypto.NO_KEYS;
    expect(send(p, vnet(udpPacket(500)))).toHaveLength(0);
    expect(p.atB).toHaveLength(0);
    expect(p.a.counters.dropped(Drop.NoKey)).toBe(1);
    // B holding NO_KEYS for A: a cleartext datagram from A is an auth drop, never delivered.
    const q = pair({ encrypted: false });
    q.hopA.crypto = PeerCrypto.NO_KEYS;
    expect(send(q, vnet(udpPacket(500)))).toHaveLength(0);
    expect(q.atB).toHaveLength(1);
    expect(q.b.counters.dropped(Drop.Auth)).toBe(1);
  });

  it('a relay forwards a sealed datagram it cannot read unchanged but for the ttl, and the peer opens it', () => {
    const p = pair();
    // A reaches B through R: A's hop for B points at R's address; R knows B directly, has no keys.
    const { r, atR } = relayR(p);
    const viaR = relayHopVia(NAME_B, UNDER_R, p.cryptoA);
    p.a.fib = Fib.build([{ cidr: { addr: IP_B as never, prefix: 32 }, hop: viaR }], [IP_A], [viaR]);
    const hopRatB = hopOf(NAME_R, UNDER_R);
    p.b.fib = Fib.build([{ cidr: { addr: IP_A as never, prefix: 32 }, hop: p.hopA }], [IP_B], [p.hopA, hopRatB]);
    const pkt = udpPacket(700);
    p.tunA.inject(vnet(pkt));
    p.a.inside.onTunReadable();
    r.outside.onSleeveReadable();
    p.b.outside.onSleeveReadable();
    expect(r.counters.relayed).toBe(1);
    const got = p.tunB.written.splice(0);
    expect(got).toHaveLength(1);
    expect(inner(got[0]!).equals(pkt)).toBe(true);
    const before = atR[0]!.buf;
    const after = p.atB[0]!.buf;
    expect(after[3]).toBe(before[3]! - 1); // ttl
    expect(Buffer.compare(after.subarray(4), before.subarray(4))).toBe(0);
    expect(containsMarker([...atR, ...p.atB])).toBe(false);
  });
});

describe.skipIf(native === undefined)('Forwarder with end-to-end keys (a peer reached only through a relay)', () => {
  /** throughR: A and B each reach the other only through R, each with its own PeerCrypto for the other. */
  function throughR(): { p: Pair; r: Forwarder; atR: Wire[]; ab: PeerCrypto; ba: PeerCrypto; run: () => Buffer[] } {
    const p = pair({ encrypted: false });
    const { r, atR } = relayR(p);
    const ab = new PeerCrypto(native!, undefined); // A's towards B: no connection keys
    const ba = new PeerCrypto(native!, undefined);
    open.push(ab, ba);
    const viaRtoB = relayHopVia(NAME_B, UNDER_R, ab);
    const viaRtoA = relayHopVia(NAME_A, UNDER_R, ba);
    const rAtA = hopOf(NAME_R, UNDER_R);
    const rAtB = hopOf(NAME_R, UNDER_R);
    p.a.fib = Fib.build([{ cidr: { addr: IP_B as never, prefix: 32 }, hop: viaRtoB }], [IP_A], [viaRtoB, rAtA]);
    p.b.fib = Fib.build([{ cidr: { addr: IP_A as never, prefix: 32 }, hop: viaRtoA }], [IP_B], [viaRtoA, rAtB]);
    const run = (): Buffer[] => {
      p.tunA.inject(vnet(udpPacket(640)));
      p.a.inside.onTunReadable();
      r.outside.onSleeveReadable();
      p.b.outside.onSleeveReadable();
      return p.tunB.written.splice(0);
    };
    return { p, r, atR, ab, ba, run };
  }

  it('drops and asks for keys (once until cleared), then seals end to end through the relay', () => {
    const { p, r, atR, ab, ba, run } = throughR();
    let wanted = 0;
    ab.onWant = () => wanted++;
    expect(run()).toHaveLength(0);
    expect(run()).toHaveLength(0);
    expect(p.a.counters.dropped(Drop.NoKey)).toBe(2);
    expect(wanted).toBe(1);
    const [ka, kb] = keyPair();
    ab.installEndToEnd(ka);
    ba.installEndToEnd(kb);
    expect(ab.endToEnd).toBe(true);
    expect(run()).toHaveLength(1);
    expect(r.counters.relayed).toBe(1);
    expect(containsMarker([...atR, ...p.atB])).toBe(false);
    // the family bit is on the wire
    expect((atR[0]!.buf[SLEEVE_HEADER_LEN + 1]! & 0x10) !== 0).toBe(true);
  });

  it('opens by the family bit even when the receiver also holds connection keys for the sender', () => {
    const { p, ab, ba, run } = throughR();
    const [ka, kb] = keyPair();
    const [ca] = keyPair();
    ba.install(ca); // B still believes in a connection with A (its own keys), A does not
    ab.installEndToEnd(ka);
    ba.installEndToEnd(kb);
    expect(run()).toHaveLength(1);
    expect(p.b.counters.dropped(Drop.Auth)).toBe(0);
  });

  it('a receiver without end-to-end keys (the sender restarted, or it did) drops as auth and asks for keys', () => {
    const { p, ab, ba, run } = throughR();
    let wanted = 0;
    ba.onWant = () => wanted++;
    const [ka] = keyPair();
    ab.installEndToEnd(ka);
    expect(run()).toHaveLength(0);
    expect(p.b.counters.dropped(Drop.Auth)).toBe(1);
    expect(wanted).toBe(1);
    ba.close();
  });

  it('asks again when end-to-end datagrams fail under the keys it holds (the ends differ), not when one good opens after', () => {
    const { p, ab, ba, run } = throughR();
    let wanted = 0;
    ba.onWant = (auth) => {
      if (auth) wanted++;
    };
    const [ka] = keyPair();
    const [, kb] = keyPair(); // B's keys are another exchange's: A's datagrams do not open
    ab.installEndToEnd(ka);
    ba.installEndToEnd(kb);
    expect(run()).toHaveLength(0);
    expect(p.b.counters.dropped(Drop.Auth)).toBe(1);
    expect(wanted).toBe(1);
    expect(ba.stillWanted()).toBe(true);
    // keys that match arrive: what opens after the want shows it no longer holds
    const [ka2, kb2] = keyPair();
    ab.installEndToEnd(ka2);
    ba.installEndToEnd(kb2);
    ba.want(true);
    expect(run()).toHaveLength(1);
    expect(ba.stillWanted()).toBe(false);
  });

  it('opens what the peer still seals with a closed connection for a grace, then no more', () => {
    const { p, ab, ba, run } = throughR();
    const [ca, cb] = keyPair();
    ab.install(ca);
    ba.install(cb);
    ba.closeConnection(true); // B saw the connection go; A has not noticed yet
    expect(run()).toHaveLength(1);
    ba.dropGrace();
    expect(run()).toHaveLength(0);
    expect(p.b.counters.dropped(Drop.Auth)).toBe(1);
  });

  it('seals with the connection keys while they are open, with the end-to-end ones after the connection goes', () => {
    const { p, atR, ab, ba, run } = throughR();
    const [ca, cb] = keyPair();
    const [ka, kb] = keyPair();
    ab.install(ca);
    ba.install(cb);
    ab.installEndToEnd(ka);
    ba.installEndToEnd(kb);
    expect(run()).toHaveLength(1);
    expect((atR.at(-1)!.buf[SLEEVE_HEADER_LEN + 1]! & 0x10) === 0).toBe(true);
    ab.closeConnection();
    expect(run()).toHaveLength(1);
    expect((atR.at(-1)!.buf[SLEEVE_HEADER_LEN + 1]! & 0x10) !== 0).toBe(true);
    expect(p.b.counters.dropped(Drop.Auth)).toBe(0);
  });
});

describe.skipIf(native === undefined)('Forwarder with a trusted peer (--trusted-subnets on both ends)', () => {
  it('takes cleartext straight from the trusted peer, but only sealed datagrams from it through a relay', () => {
    const p = pair();
    const { r } = relayR(p);
    // B routes A through R (sealed end to end with the keys of B's connection to A) while A's
    // direct hop, trusted, is in the clear and still one of B's endpoints.
    const hopRatB = hopOf(NAME_R, UNDER_R);
    const relayA = relayHopVia(NAME_A, UNDER_R, p.cryptoB);
    p.hopA.crypto = undefined;
    p.b.fib = Fib.build([{ cidr: { addr: IP_A as never, prefix: 32 }, hop: relayA }], [IP_B], [relayA, hopRatB], [], {
      endpoints: [p.hopA, hopRatB],
    });
    const viaR = (crypto: PeerCrypto | undefined): Hop => relayHopVia(NAME_B, UNDER_R, crypto);
    const fromA = (hop: Hop): number => {
      p.a.fib = Fib.build([{ cidr: { addr: IP_B as never, prefix: 32 }, hop }], [IP_A], [hop]);
      p.tunA.inject(vnet(udpPacket(600)));
      p.a.inside.onTunReadable();
      r.outside.onSleeveReadable();
      p.b.outside.onSleeveReadable();
      return p.tunB.written.splice(0).length;
    };
    p.hopB.crypto = undefined;
    expect(fromA(p.hopB)).toBe(1); // direct, in the clear
    expect(containsMarker(p.atB)).toBe(true);
    expect(fromA(viaR(p.cryptoA))).toBe(1); // through R, sealed
    const auth = p.b.counters.drops[Drop.Auth] ?? 0;
    expect(fromA(viaR(undefined))).toBe(0); // through R in the clear: refused
    expect(p.b.counters.drops[Drop.Auth]).toBe(auth + 1);
  });
});

describe('Forwarder without data keys (no password)', () => {
  it('sends the cleartext sleeve layout unchanged: header, frame length, vnet header, packet', () => {
    const p = pair({ encrypted: false });
    const pkt = udpPacket(400);
    expect(send(p, vnet(pkt))).toHaveLength(1);
    const w = p.atB[0]!.buf;
    expect(w.length).toBe(SLEEVE_HEADER_LEN + 2 + VNET_HDR_LEN + 400);
    expect(w.readUInt16BE(SLEEVE_HEADER_LEN)).toBe(VNET_HDR_LEN + 400);
    expect(w.subarray(SLEEVE_HEADER_LEN + 2 + VNET_HDR_LEN).equals(pkt)).toBe(true);
    expect(p.b.counters.dropped(Drop.Auth)).toBe(0);
  });
});
