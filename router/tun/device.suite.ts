import { afterEach, describe, expect, it } from 'vitest';
import { HEADROOM_BYTES } from '../constants.js';
import { expectNoLeaks, settle, snapshotResources } from '../testing/leaks.js';
import type { TunDevice } from './device.js';

/**
 * TunHarness is what a TunDevice implementation gives the conformance suite: the device under
 * test plus a "peer" on its other side (the kernel's IP stack for LinuxTun, the other end of a
 * pair for MemoryTun) that can send packets to the device and ping through it.
 *
 * Addresses are IPv4 in host order. The peer owns `peerAddr` and routes `targetAddr` through
 * the device; the test answers for `targetAddr`.
 */
export interface TunHarness {
  readonly device: TunDevice;
  readonly peerAddr: number;
  readonly targetAddr: number;
  /** sendPackets makes the peer send `count` UDP datagrams of `payloadBytes` to targetAddr:9; resolves once sent. */
  sendPackets(count: number, payloadBytes: number): Promise<void>;
  /** ping makes the peer ping targetAddr once; resolves true if an echo reply reached it within timeoutMs. */
  ping(timeoutMs: number): Promise<boolean>;
  /** teardown closes the device and whatever the harness created; idempotent. */
  teardown(): Promise<void>;
}

/** TunHarnessFactory builds a fresh harness for one test. */
export type TunHarnessFactory = () => Promise<TunHarness>;

/** DISCARD_PORT is where sendPackets aims (RFC 863 discard). */
export const DISCARD_PORT = 9;

/** inetChecksum is the RFC 1071 Internet checksum of buf[off, off+len). */
export function inetChecksum(buf: Buffer, off: number, len: number): number {
  let sum = 0;
  for (let i = 0; i + 1 < len; i += 2) sum += buf.readUInt16BE(off + i);
  if (len & 1) sum += (buf[off + len - 1] as number) << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function writeIpv4Header(buf: Buffer, off: number, total: number, proto: number, src: number, dst: number): void {
  buf[off] = 0x45;
  buf[off + 1] = 0;
  buf.writeUInt16BE(total, off + 2);
  buf.writeUInt32BE(0, off + 4); // id, flags, fragment offset
  buf[off + 8] = 64;
  buf[off + 9] = proto;
  buf.writeUInt16BE(0, off + 10);
  buf.writeUInt32BE(src >>> 0, off + 12);
  buf.writeUInt32BE(dst >>> 0, off + 16);
  buf.writeUInt16BE(inetChecksum(buf, off, 20), off + 10);
}

/** buildUdpPacket writes an IPv4/UDP packet (UDP checksum 0) with a payload of `fill` bytes; returns its length. */
export function buildUdpPacket(
  buf: Buffer,
  off: number,
  src: number,
  dst: number,
  srcPort: number,
  dstPort: number,
  payloadBytes: number,
  fill = 0x61,
): number {
  const total = 28 + payloadBytes;
  writeIpv4Header(buf, off, total, 17, src, dst);
  buf.writeUInt16BE(srcPort, off + 20);
  buf.writeUInt16BE(dstPort, off + 22);
  buf.writeUInt16BE(8 + payloadBytes, off + 24);
  buf.writeUInt16BE(0, off + 26);
  buf.fill(fill, off + 28, off + total);
  return total;
}

/** buildEchoRequest writes an IPv4 ICMP echo request with 16 payload bytes; returns its length. */
export function buildEchoRequest(buf: Buffer, off: number, src: number, dst: number, id: number, seq: number): number {
  const total = 20 + 8 + 16;
  writeIpv4Header(buf, off, total, 1, src, dst);
  const icmp = off + 20;
  buf[icmp] = 8;
  buf[icmp + 1] = 0;
  buf.writeUInt16BE(0, icmp + 2);
  buf.writeUInt16BE(id, icmp + 4);
  buf.writeUInt16BE(seq, icmp + 6);
  for (let i = 0; i < 16; i++) buf[icmp + 8 + i] = i;
  buf.writeUInt16BE(inetChecksum(buf, icmp, total - 20), icmp + 2);
  return total;
}

/**
 * answerEcho turns the IPv4 ICMP echo request at buf[off, off+len) into its reply in place
 * (addresses swapped, type 0, checksum fixed) and returns true; returns false for anything else.
 */
export function answerEcho(buf: Buffer, off: number, len: number): boolean {
  if (len < 28 || (buf[off] as number) >> 4 !== 4 || buf[off + 9] !== 1) return false;
  const hl = ((buf[off] as number) & 15) * 4;
  const total = buf.readUInt16BE(off + 2);
  if (total > len || buf[off + hl] !== 8) return false;
  const src = buf.readUInt32BE(off + 12);
  buf.writeUInt32BE(buf.readUInt32BE(off + 16), off + 12);
  buf.writeUInt32BE(src, off + 16); // the IPv4 checksum is unchanged by a swap
  buf[off + hl] = 0;
  buf.writeUInt16BE(0, off + hl + 2);
  buf.writeUInt16BE(inetChecksum(buf, off + hl, total - hl), off + hl + 2);
  return true;
}

/** isUdpTo says whether buf[off, off+len) is an IPv4/UDP packet to dst:port. */
export function isUdpTo(buf: Buffer, off: number, len: number, dst: number, port: number): boolean {
  return (
    len >= 28 &&
    buf[off] === 0x45 &&
    buf[off + 9] === 17 &&
    buf.readUInt32BE(off + 16) === dst >>> 0 &&
    buf.readUInt16BE(off + 22) === port
  );
}

const STRIDE = 2048;
const SLOTS = 64;

interface Collected {
  matched: number;
  batches: number[];
}

/**
 * collect installs a readable callback that drains the device in batches of `max` and counts
 * UDP packets to target:DISCARD_PORT of `payloadBytes`; resolves once `want` arrived.
 */
function collect(
  h: TunHarness,
  buf: Buffer,
  lengths: Int32Array,
  want: number,
  payloadBytes: number,
  max = SLOTS,
  timeoutMs = 5_000,
): Promise<Collected> {
  const out: Collected = { matched: 0, batches: [] };
  return new Promise<Collected>((resolve, reject) => {
    const timer = setTimeout(() => {
      h.device.onReadable(undefined);
      reject(new Error(`timed out with ${out.matched}/${want} packets (batches ${out.batches.join(',')})`));
    }, timeoutMs);
    h.device.onReadable(() => {
      for (;;) {
        const n = h.device.readBatch(buf, HEADROOM_BYTES, STRIDE, max, lengths);
        if (n > 0) out.batches.push(n);
        for (let i = 0; i < n; i++) {
          const pos = HEADROOM_BYTES + i * STRIDE;
          const len = lengths[i] as number;
          if (len === 28 + payloadBytes && isUdpTo(buf, pos, len, h.targetAddr, DISCARD_PORT)) out.matched++;
        }
        if (n < max) break;
      }
      if (out.matched >= want) {
        clearTimeout(timer);
        h.device.onReadable(undefined);
        resolve(out);
      }
    });
  });
}

/**
 * tunDeviceSuite is the conformance suite every TunDevice runs (libp2p compliance pattern):
 * readiness, batched reads at an offset, truncation, writes, misuse, close and leaks.
 */
export function tunDeviceSuite(name: string, factory: TunHarnessFactory): void {
  describe(`TunDevice conformance: ${name}`, () => {
    let h: TunHarness | undefined;
    const open = async (): Promise<TunHarness> => {
      h = await factory();
      return h;
    };
    afterEach(async () => {
      await h?.teardown();
      h = undefined;
    });
    const buf = Buffer.alloc(SLOTS * STRIDE);
    const lengths = new Int32Array(SLOTS);

    it('names the device and carries IP packets', async () => {
      const t = await open();
      expect(t.device.name.length).toBeGreaterThan(0);
      expect(t.device.kind).toBe('tun');
    });

    it('returns 0 from readBatch when nothing is queued', async () => {
      const t = await open();
      expect(t.device.readBatch(buf, HEADROOM_BYTES, STRIDE, SLOTS, lengths)).toBe(0);
    });

    it('calls back when readable and lands packet i at offset + i*stride, headroom untouched', async () => {
      const t = await open();
      buf.fill(0xee);
      const got = collect(t, buf, lengths, 3, 100);
      await t.sendPackets(3, 100);
      const r = await got;
      expect(r.matched).toBe(3);
      expect(buf.subarray(0, HEADROOM_BYTES).every((b) => b === 0xee)).toBe(true);
      expect(buf[HEADROOM_BYTES]).toBe(0x45);
    });

    it('drains a burst in batches of at most max', async () => {
      const t = await open();
      await t.sendPackets(200, 64); // all queued before anyone reads
      const r = await collect(t, buf, lengths, 200, 64);
      expect(r.matched).toBe(200);
      expect(r.batches[0]).toBe(SLOTS);
      expect(Math.max(...r.batches)).toBeLessThanOrEqual(SLOTS);
    });

    it('reports a packet longer than its slot as -1 and keeps reading', async () => {
      const t = await open();
      await t.sendPackets(1, 1000);
      await t.sendPackets(1, 100);
      const small = Buffer.alloc(4 * 256);
      const lens = new Int32Array(4);
      const seen: number[] = [];
      await new Promise<void>((resolve) => {
        t.device.onReadable(() => {
          const n = t.device.readBatch(small, 0, 256, 4, lens);
          for (let i = 0; i < n; i++) {
            const len = lens[i] as number;
            if (len === -1 || isUdpTo(small, i * 256, len, t.targetAddr, DISCARD_PORT)) seen.push(len);
          }
          if (seen.length >= 2) resolve();
        });
      });
      expect(seen).toEqual([-1, 128]);
    });

    it('answers a ping through writeBatch', async () => {
      const t = await open();
      const offsets = new Int32Array(SLOTS);
      const wl = new Int32Array(SLOTS);
      t.device.onReadable(() => {
        const n = t.device.readBatch(buf, HEADROOM_BYTES, STRIDE, SLOTS, lengths);
        let k = 0;
        for (let i = 0; i < n; i++) {
          const pos = HEADROOM_BYTES + i * STRIDE;
          const len = lengths[i] as number;
          if (len > 0 && answerEcho(buf, pos, len)) {
            offsets[k] = pos;
            wl[k++] = len;
          }
        }
        if (k > 0) expect(t.device.writeBatch(buf, offsets, wl, k)).toBe(k);
      });
      expect(await t.ping(3_000)).toBe(true);
    });

    it('skips a packet the kernel would refuse and writes the rest', async () => {
      const t = await open();
      const w = Buffer.alloc(3 * 256);
      buildUdpPacket(w, 0, t.targetAddr, t.peerAddr, 40000, DISCARD_PORT, 10);
      w.fill(0, 256, 256 + 38); // version 0: not an IP packet
      buildUdpPacket(w, 512, t.targetAddr, t.peerAddr, 40000, DISCARD_PORT, 10);
      expect(t.device.writeBatch(w, Int32Array.of(0, 256, 512), Int32Array.of(38, 38, 38), 3)).toBe(2);
      expect(t.device.writeBatch(w, Int32Array.of(0), Int32Array.of(38), 0)).toBe(0);
    });

    it('throws TypeError for slots or packets outside the buffer', async () => {
      const { device } = await open();
      expect(() => device.readBatch(buf, buf.length, STRIDE, 1, lengths)).toThrow(TypeError);
      expect(() => device.readBatch(buf, 0, STRIDE, SLOTS + 1, lengths)).toThrow(TypeError);
      expect(() => device.readBatch(buf, HEADROOM_BYTES, STRIDE * 2, SLOTS, lengths)).toThrow(TypeError);
      expect(() => device.readBatch(buf, 0, 0, 1, lengths)).toThrow(TypeError);
      expect(() => device.readBatch(buf, -1, STRIDE, 1, lengths)).toThrow(TypeError);
      const small = Buffer.alloc(100);
      expect(() => device.writeBatch(small, Int32Array.of(90), Int32Array.of(20), 1)).toThrow(TypeError);
      expect(() => device.writeBatch(small, Int32Array.of(0), Int32Array.of(20), 2)).toThrow(TypeError);
      expect(() => device.writeBatch(small, Int32Array.of(-1), Int32Array.of(20), 1)).toThrow(TypeError);
      // The last slot may be shorter than stride: it is cut at the end of the buffer.
      expect(device.readBatch(buf, HEADROOM_BYTES, STRIDE, SLOTS, lengths)).toBe(0);
    });

    it('stops calling back after onReadable(undefined)', async () => {
      const t = await open();
      let calls = 0;
      t.device.onReadable(() => calls++);
      t.device.onReadable(undefined);
      await t.sendPackets(2, 10);
      await new Promise((r) => setTimeout(r, 50));
      expect(calls).toBe(0);
      const r = await collect(t, buf, lengths, 2, 10);
      expect(r.matched).toBe(2);
    });

    it('returns 0 after close, never calls back again, and closes idempotently', async () => {
      const t = await open();
      let calls = 0;
      t.device.onReadable(() => calls++);
      t.device.close();
      t.device.close();
      await t.sendPackets(1, 10).catch(() => undefined); // the device may be gone
      await settle();
      expect(calls).toBe(0);
      expect(t.device.readBatch(buf, 0, STRIDE, 1, lengths)).toBe(0);
      expect(t.device.writeBatch(buf, Int32Array.of(0), Int32Array.of(28), 1)).toBe(0);
      t.device.onReadable(() => calls++);
      await settle();
      expect(calls).toBe(0);
    });

    it('leaves no handles behind', async () => {
      await settle();
      const before = snapshotResources();
      const t = await open();
      const got = collect(t, buf, lengths, 1, 10);
      await t.sendPackets(1, 10);
      await got;
      t.device.onReadable(() => undefined);
      await t.teardown();
      await expectNoLeaks(before);
    });
  });
}
