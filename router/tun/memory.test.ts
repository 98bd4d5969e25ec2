import { describe, expect, it } from 'vitest';
import { buildEchoRequest, buildUdpPacket, DISCARD_PORT, type TunHarness, tunDeviceSuite } from './device.suite.js';
import { MemoryTun } from './memory.js';

const PEER = 0x0a630001; // 10.99.0.1
const TARGET = 0x0a630002; // 10.99.0.2

/** memoryHarness plays the kernel with the other end of a MemoryTun pair. */
async function memoryHarness(): Promise<TunHarness> {
  const [device, peer] = MemoryTun.pair();
  const scratch = Buffer.alloc(2048);
  const offsets = Int32Array.of(0);
  const lengths = new Int32Array(1);
  return {
    device,
    peerAddr: PEER,
    targetAddr: TARGET,
    async sendPackets(count, payloadBytes) {
      if (peer.closed || device.closed) throw new Error('device is gone');
      for (let i = 0; i < count; i++) {
        lengths[0] = buildUdpPacket(scratch, 0, PEER, TARGET, 40000, DISCARD_PORT, payloadBytes);
        peer.writeBatch(scratch, offsets, lengths, 1);
      }
    },
    ping(timeoutMs) {
      const id = (Math.random() * 0xffff) | 0;
      lengths[0] = buildEchoRequest(scratch, 0, PEER, TARGET, id, 1);
      return new Promise<boolean>((resolve) => {
        const rx = Buffer.alloc(2048);
        const rl = new Int32Array(1);
        const timer = setTimeout(() => done(false), timeoutMs);
        const done = (ok: boolean): void => {
          clearTimeout(timer);
          peer.onReadable(undefined);
          resolve(ok);
        };
        peer.onReadable(() => {
          while (peer.readBatch(rx, 0, rx.length, 1, rl) === 1) {
            const isReply = rx[9] === 1 && rx[20] === 0 && rx.readUInt16BE(24) === id && rx.readUInt32BE(16) === PEER;
            if (isReply) done(true);
          }
        });
        peer.writeBatch(scratch, offsets, lengths, 1);
      });
    },
    async teardown() {
      device.close();
      peer.close();
    },
  };
}

tunDeviceSuite('MemoryTun', memoryHarness);

describe('MemoryTun', () => {
  const buf = Buffer.alloc(4 * 256);
  const lengths = new Int32Array(4);

  it('reads injected packets without copying them anywhere but the slot', () => {
    const tun = new MemoryTun();
    const pkt = Buffer.alloc(40, 0x45);
    expect(tun.inject(pkt)).toBe(true);
    expect(tun.queued).toBe(1);
    expect(tun.readBatch(buf, 16, 256, 4, lengths)).toBe(1);
    expect(lengths[0]).toBe(40);
    expect(buf.subarray(16, 56).equals(pkt)).toBe(true);
    expect(tun.queued).toBe(0);
  });

  it('drops and counts injected packets beyond queueLimit', () => {
    const tun = new MemoryTun({ queueLimit: 2 });
    const pkt = Buffer.alloc(20, 0x45);
    expect([tun.inject(pkt), tun.inject(pkt), tun.inject(pkt)]).toEqual([true, true, false]);
    expect(tun.rxDropped).toBe(1);
    expect(tun.readBatch(buf, 0, 256, 4, lengths)).toBe(2);
  });

  it('keeps copies of written packets in `written` when unpaired', () => {
    const tun = new MemoryTun({ queueLimit: 1 });
    const w = Buffer.alloc(64, 0x45);
    expect(tun.writeBatch(w, Int32Array.of(0, 20), Int32Array.of(20, 30), 2)).toBe(2);
    w.fill(0);
    expect(tun.written.map((p) => p.length)).toEqual([20]);
    expect(tun.written[0]?.[0]).toBe(0x45);
    expect(tun.writtenDropped).toBe(1);
  });

  it('hands written packets to onWrite when set', () => {
    const tun = new MemoryTun();
    const seen: number[] = [];
    tun.onWrite = (p) => seen.push(p.length);
    expect(tun.writeBatch(Buffer.alloc(64, 0x60), Int32Array.of(0, 10), Int32Array.of(40, 50), 2)).toBe(2);
    expect(seen).toEqual([40, 50]);
    expect(tun.written).toHaveLength(0);
  });

  it('refuses non-IP packets in tun mode and short frames in tap mode', () => {
    const tun = new MemoryTun();
    const tap = new MemoryTun({ kind: 'tap' });
    const z = Buffer.alloc(64);
    expect(tun.writeBatch(z, Int32Array.of(0, 0), Int32Array.of(20, 0), 2)).toBe(0);
    expect(tun.txRejected).toBe(2);
    expect(tap.writeBatch(z, Int32Array.of(0, 0), Int32Array.of(60, 10), 2)).toBe(1);
    expect(tap.txRejected).toBe(1);
  });

  it('names the two ends of a pair', () => {
    const [a, b] = MemoryTun.pair({ name: 'weft' });
    expect([a.name, b.name]).toEqual(['weft0', 'weft1']);
  });

  it('rejects a bad queueLimit', () => {
    expect(() => new MemoryTun({ queueLimit: 0 })).toThrow(RangeError);
  });
});
