/**
 * hotpath measures the whole per-packet path in one process, over real sockets:
 *
 *   generator TUN → Forwarder A (inside: look up, encapsulate) → NativeUdp on loopback
 *     → Forwarder B (outside: validate, decapsulate) → sink TUN
 *
 * The generator hands out pre-built IPv4 packets and the sink only counts, so the figure is the
 * datapath's own cost (both directions on one core). It pushes at least 1M packets and reports
 * packets/s, heap growth and the number of garbage collections during the run: the hot path
 * allocates nothing per packet, so both should stay near zero whatever the packet count.
 * `encrypted` seals every sleeve datagram with a fresh AES-256-GCM key pair (the data path a
 * password gives: the addon's batched AEAD, counter and replay window) and opens it at B.
 */
import { randomBytes } from 'node:crypto';
import { PerformanceObserver } from 'node:perf_hooks';
import type { PeerName } from '../common/types.js';
import { NativeUdp } from '../router/conn/native-udp.js';
import type { PacketConn } from '../router/conn/packet-conn.js';
import { Counters } from '../router/datapath/counters.js';
import { Encap, Fib, Hop, peerNameHi, peerNameLo } from '../router/datapath/fib.js';
import { Forwarder } from '../router/datapath/forwarder.js';
import { PeerCrypto } from '../router/datapath/peer-crypto.js';
import { ipv4Packet } from '../router/testing/memory-router.js';
import type { TunDevice } from '../router/tun/device.js';
import { tryLoadNative } from '../router/tun/native.js';

/** GeneratorTun produces copies of one IPv4 packet until `remaining` reaches 0. */
class GeneratorTun implements TunDevice {
  readonly name = 'gen';
  readonly kind = 'tun';
  remaining: number;
  private cb: (() => void) | undefined;
  private scheduled = false;

  constructor(
    private readonly packet: Buffer,
    total: number,
  ) {
    this.remaining = total;
  }

  onReadable(cb: (() => void) | undefined): void {
    this.cb = cb;
    this.kick();
  }

  /** kick schedules a readiness callback while packets remain (like a level-triggered poll). */
  kick(): void {
    if (this.scheduled || this.cb === undefined || this.remaining <= 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.cb?.();
      this.kick();
    });
  }

  readBatch(buf: Buffer, offset: number, stride: number, max: number, lengths: Int32Array): number {
    const n = Math.min(max, this.remaining);
    for (let i = 0; i < n; i++) {
      this.packet.copy(buf, offset + i * stride);
      lengths[i] = this.packet.length;
    }
    this.remaining -= n;
    return n;
  }

  writeBatch(): number {
    return 0;
  }

  close(): void {
    this.cb = undefined;
  }
}

/** SinkTun counts what is written to it. */
class SinkTun implements TunDevice {
  readonly name = 'sink';
  readonly kind = 'tun';
  packets = 0;
  bytes = 0;

  onReadable(): void {}

  readBatch(): number {
    return 0;
  }

  writeBatch(_buf: Buffer, _offsets: Int32Array, lengths: Int32Array, count: number): number {
    for (let i = 0; i < count; i++) this.bytes += lengths[i] as number;
    this.packets += count;
    return count;
  }

  close(): void {}
}

/** HotpathResult is one run's figures. */
export interface HotpathResult {
  encap: 'sleeve' | 'vxlan';
  /** encrypted: every datagram sealed (sleeve with a password). */
  encrypted: boolean;
  packetBytes: number;
  sent: number;
  delivered: number;
  seconds: number;
  packetsPerSecond: number;
  gbitPerSecond: number;
  heapGrowthBytes: number;
  gcCount: number;
  drops: number;
}

/** runHotpath pushes `total` packets of `packetBytes` through A → B and measures. */
export async function runHotpath(
  encap: 'sleeve' | 'vxlan',
  packetBytes: number,
  total: number,
  encrypted = false,
): Promise<HotpathResult> {
  if (encrypted && encap !== 'sleeve') throw new Error('hotpath: only sleeve is encrypted');
  const native = tryLoadNative();
  if (encrypted && native === undefined) throw new Error('hotpath: encryption needs the native addon');
  const nameA = '02:00:00:00:00:0a' as PeerName;
  const nameB = '02:00:00:00:00:0b' as PeerName;
  const LO = 0x7f000001;
  const conns: PacketConn[] = [];
  const open = () => {
    const c = NativeUdp.open({ bindAddr: LO, port: 0, rcvbuf: 8 << 20, sndbuf: 8 << 20 });
    conns.push(c);
    return c;
  };
  const aSleeve = open();
  const aVx = open();
  const bSleeve = open();
  const bVx = open();
  const gen = new GeneratorTun(ipv4Packet(packetBytes, 0x0a200001, 0x0a200002), total);
  const sink = new SinkTun();
  const ca = new Counters();
  const cb = new Counters();
  const a = new Forwarder({
    tun: gen,
    sleeve: aSleeve,
    vxlan: aVx,
    localName: nameA,
    vni: 42,
    vxlanPort: aVx.port,
    counters: ca,
  });
  const b = new Forwarder({
    tun: sink,
    sleeve: bSleeve,
    vxlan: bVx,
    localName: nameB,
    vni: 42,
    vxlanPort: bVx.port,
    counters: cb,
  });
  const e = encap === 'vxlan' ? Encap.Vxlan : Encap.Sleeve;
  const hopB = new Hop(
    nameB,
    peerNameHi(nameB),
    peerNameLo(nameB),
    peerNameHi(nameB),
    peerNameLo(nameB),
    LO,
    e === Encap.Vxlan ? bVx.port : bSleeve.port,
    e,
  );
  const hopA = new Hop(
    nameA,
    peerNameHi(nameA),
    peerNameLo(nameA),
    peerNameHi(nameA),
    peerNameLo(nameA),
    LO,
    e === Encap.Vxlan ? aVx.port : aSleeve.port,
    e,
  );
  a.fib = Fib.build([{ cidr: { addr: 0x0a200002 as never, prefix: 32 }, hop: hopB }], [0x0a200001], [hopB]);
  b.fib = Fib.build([{ cidr: { addr: 0x0a200001 as never, prefix: 32 }, hop: hopA }], [0x0a200002], [hopA]);
  const cryptos: PeerCrypto[] = [];
  if (encrypted) {
    const ab = randomBytes(32);
    const ba = randomBytes(32);
    hopB.crypto = new PeerCrypto(native, { suite: 'aes-256-gcm', send: ab, recv: ba }); // A's keys towards B
    hopA.crypto = new PeerCrypto(native, { suite: 'aes-256-gcm', send: ba, recv: ab });
    cryptos.push(hopB.crypto, hopA.crypto);
  }

  let gcCount = 0;
  const obs = new PerformanceObserver((list) => {
    gcCount += list.getEntries().length;
  });
  // Warm up (JIT) before measuring.
  gen.remaining = 20_000;
  b.start();
  a.start();
  await waitFor(() => gen.remaining === 0 && settled(cb));
  globalThis.gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  const deliveredBefore = sink.packets;
  obs.observe({ entryTypes: ['gc'] });
  const t0 = process.hrtime.bigint();
  gen.remaining = total;
  gen.kick();
  await waitFor(() => gen.remaining === 0 && settled(cb));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  obs.disconnect();
  // Collect before measuring, so the figure is what the run retained (a leak), not garbage waiting
  // for the next scavenge; the GC count above is the allocation signal.
  globalThis.gc?.();
  const heapAfter = process.memoryUsage().heapUsed;
  a.stop();
  b.stop();
  for (const c of conns) c.close();
  const delivered = sink.packets - deliveredBefore;
  // The figure must be of the sealed path: every datagram B received (small packets travel
  // bundled, several per datagram) was sealed at A and opened at B.
  const opened = hopA.crypto?.receiver?.opened ?? 0;
  if (encrypted && (opened === 0 || opened !== cb.udpRxPackets)) {
    throw new Error(`hotpath: B received ${cb.udpRxPackets} datagrams but opened ${opened}: not the sealed path`);
  }
  for (const c of cryptos) c.close();
  const drops = [...ca.drops, ...cb.drops].reduce((x, y) => x + y, 0);
  return {
    encap,
    encrypted,
    packetBytes,
    sent: total,
    delivered,
    seconds,
    packetsPerSecond: delivered / seconds,
    gbitPerSecond: (delivered * packetBytes * 8) / seconds / 1e9,
    heapGrowthBytes: heapAfter - heapBefore,
    gcCount,
    drops,
  };
}

let lastRx = -1;
let stableTicks = 0;
/** settled is true once the receiver has seen no new datagrams for a few polls. */
function settled(c: Counters): boolean {
  if (c.udpRxPackets === lastRx) stableTicks++;
  else stableTicks = 0;
  lastRx = c.udpRxPackets;
  return stableTicks >= 5;
}

async function waitFor(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 10));
}
