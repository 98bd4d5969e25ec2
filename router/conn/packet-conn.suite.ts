import { createSocket } from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import { expectNoLeaks, settle, snapshotResources } from '../testing/leaks.js';
import type { PacketConn } from './packet-conn.js';

/**
 * PacketConnHarness is what a PacketConn implementation gives the conformance suite: two open
 * sockets that reach each other, the addresses to send to, and a port nobody listens on.
 */
export interface PacketConnHarness {
  readonly a: PacketConn;
  readonly b: PacketConn;
  /** addrA / addrB are the host-order IPv4 addresses at which a and b are reached. */
  readonly addrA: number;
  readonly addrB: number;
  /** unusedPort is a port on addrB where no socket is bound. */
  readonly unusedPort: number;
  /** teardown closes both sockets and anything else the harness made; idempotent. */
  teardown(): Promise<void>;
}

/** PacketConnHarnessFactory builds a fresh harness for one test. */
export type PacketConnHarnessFactory = () => Promise<PacketConnHarness>;

/** LOOPBACK_ADDR is 127.0.0.1 in host order. */
export const LOOPBACK_ADDR = 0x7f000001;

/** unusedLoopbackPort finds a UDP port on 127.0.0.1 with nobody bound (bind, read the port, close). */
export async function unusedLoopbackPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/**
 * loopbackHarness is the factory for a kernel-backed PacketConn: `open` binds one socket on
 * 127.0.0.1 (any port); a and b are two of them, and teardown closes both.
 */
export function loopbackHarness(
  open: (bindAddr: number) => Promise<PacketConn> | PacketConn,
): PacketConnHarnessFactory {
  return async () => {
    const a = await open(LOOPBACK_ADDR);
    const b = await open(LOOPBACK_ADDR);
    return {
      a,
      b,
      addrA: LOOPBACK_ADDR,
      addrB: LOOPBACK_ADDR,
      unusedPort: await unusedLoopbackPort(),
      async teardown() {
        a.close();
        b.close();
      },
    };
  };
}

const STRIDE = 2048;
const SLOTS = 64;

/** Received is a copy of what one receiver got, in order. */
interface Received {
  lengths: number[];
  firstBytes: number[];
  addrs: number[];
  ports: number[];
  batches: number[];
}

/**
 * receive drains `conn` from its readable callback with the given layout until `want`
 * datagrams arrived (or rejects after timeoutMs), then removes the callback.
 */
export function receive(
  conn: PacketConn,
  want: number,
  layout: { offset?: number; stride?: number; max?: number; buf?: Buffer } = {},
  timeoutMs = 5_000,
): Promise<Received> {
  const offset = layout.offset ?? 0;
  const stride = layout.stride ?? STRIDE;
  const max = layout.max ?? SLOTS;
  const buf = layout.buf ?? Buffer.alloc(offset + max * stride);
  const lengths = new Int32Array(max);
  const addrs = new Uint32Array(max);
  const ports = new Uint16Array(max);
  const out: Received = { lengths: [], firstBytes: [], addrs: [], ports: [], batches: [] };
  return new Promise<Received>((resolve, reject) => {
    const timer = setTimeout(() => {
      conn.onReadable(undefined);
      reject(new Error(`timed out with ${out.lengths.length}/${want} datagrams`));
    }, timeoutMs);
    conn.onReadable(() => {
      for (;;) {
        const n = conn.recvBatch(buf, offset, stride, max, lengths, addrs, ports);
        if (n > 0) out.batches.push(n);
        for (let i = 0; i < n; i++) {
          const len = lengths[i] as number;
          out.lengths.push(len);
          out.firstBytes.push(len > 0 ? (buf[offset + i * stride] as number) : -1);
          out.addrs.push(addrs[i] as number);
          out.ports.push(ports[i] as number);
        }
        if (n < max) break;
      }
      if (out.lengths.length >= want) {
        clearTimeout(timer);
        conn.onReadable(undefined);
        resolve(out);
      }
    });
  });
}

/** Outgoing is a batch laid out in one buffer, datagram i at i*STRIDE, first byte = i. */
function outgoing(sizes: number[], addr: number, port: number) {
  const buf = Buffer.alloc(Math.max(1, sizes.length) * STRIDE * 4);
  const offsets = new Int32Array(sizes.length);
  const lengths = new Int32Array(sizes.length);
  const addrs = new Uint32Array(sizes.length).fill(addr);
  const ports = new Uint16Array(sizes.length).fill(port);
  let off = 0;
  sizes.forEach((size, i) => {
    offsets[i] = off;
    lengths[i] = size;
    buf.fill(i & 0xff, off, off + size);
    off += Math.max(size, 1);
  });
  return { buf, offsets, lengths, addrs, ports, count: sizes.length };
}

/**
 * packetConnSuite is the conformance suite every PacketConn runs (libp2p compliance pattern):
 * batches with sources, slot layout, truncation, the borrowed-buffer rule, per-datagram
 * failures, misuse, close and leaks.
 */
export function packetConnSuite(name: string, factory: PacketConnHarnessFactory): void {
  describe(`PacketConn conformance: ${name}`, () => {
    let h: PacketConnHarness | undefined;
    const open = async (): Promise<PacketConnHarness> => {
      h = await factory();
      return h;
    };
    afterEach(async () => {
      await h?.teardown();
      h = undefined;
    });

    it('binds distinct ports', async () => {
      const { a, b } = await open();
      expect(a.port).toBeGreaterThan(0);
      expect(b.port).toBeGreaterThan(0);
      expect(a.port).not.toBe(b.port);
    });

    it('returns 0 from recvBatch when nothing is queued', async () => {
      const { b } = await open();
      const buf = Buffer.alloc(STRIDE * 4);
      expect(b.recvBatch(buf, 0, STRIDE, 4, new Int32Array(4), new Uint32Array(4), new Uint16Array(4))).toBe(0);
    });

    it('delivers a batch of 64 datagrams in order with their source', async () => {
      const t = await open();
      const sizes = Array.from({ length: 64 }, (_, i) => (i === 7 ? 1 : 1400 - i));
      const o = outgoing(sizes, t.addrB, t.b.port);
      const got = receive(t.b, 64);
      expect(t.a.sendBatch(o.buf, o.offsets, o.lengths, o.addrs, o.ports, o.count)).toBe(64);
      const r = await got;
      expect(r.lengths).toEqual(sizes);
      expect(r.firstBytes).toEqual(sizes.map((_, i) => i));
      expect(new Set(r.addrs)).toEqual(new Set([t.addrA]));
      expect(new Set(r.ports)).toEqual(new Set([t.a.port]));
      expect(Math.max(...r.batches)).toBeLessThanOrEqual(SLOTS);
    });

    it('lands datagram i at offset + i*stride and leaves the headroom alone', async () => {
      const t = await open();
      const o = outgoing([100, 200, 300], t.addrB, t.b.port);
      const buf = Buffer.alloc(4 * 512, 0xee);
      const got = receive(t.b, 3, { offset: 64, stride: 512, max: 4, buf });
      t.a.sendBatch(o.buf, o.offsets, o.lengths, o.addrs, o.ports, o.count);
      const r = await got;
      expect(r.lengths).toEqual([100, 200, 300]);
      for (let i = 0; i < 3; i++) {
        expect(buf.subarray(i * 512, i * 512 + 64).every((x) => x === 0xee)).toBe(true);
        expect(buf[64 + i * 512]).toBe(i);
      }
    });

    it('delivers an empty datagram with length 0', async () => {
      const t = await open();
      const o = outgoing([0, 5], t.addrB, t.b.port);
      const got = receive(t.b, 2);
      expect(t.a.sendBatch(o.buf, o.offsets, o.lengths, o.addrs, o.ports, o.count)).toBe(2);
      expect((await got).lengths).toEqual([0, 5]);
    });

    it('reports a datagram longer than its slot as -1 and keeps receiving', async () => {
      const t = await open();
      const o = outgoing([100, 3000, 50], t.addrB, t.b.port);
      const got = receive(t.b, 3, { stride: 2048, max: 4 });
      expect(t.a.sendBatch(o.buf, o.offsets, o.lengths, o.addrs, o.ports, o.count)).toBe(3);
      const r = await got;
      expect(r.lengths).toEqual([100, -1, 50]);
      expect(r.ports[1]).toBe(t.a.port);
    });

    it('borrows the send buffer only until sendBatch returns', async () => {
      const t = await open();
      const o = outgoing([300, 300, 300, 300, 300, 300, 300, 300], t.addrB, t.b.port);
      const got = receive(t.b, 8);
      expect(t.a.sendBatch(o.buf, o.offsets, o.lengths, o.addrs, o.ports, o.count)).toBe(8);
      o.buf.fill(0xff); // the caller reuses its pool at once
      expect((await got).firstBytes).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    });

    it('sends to a port where nobody listens without throwing, and keeps working', async () => {
      const t = await open();
      const lost = outgoing([10], t.addrB, t.unusedPort);
      expect(t.a.sendBatch(lost.buf, lost.offsets, lost.lengths, lost.addrs, lost.ports, 1)).toBe(1);
      const o = outgoing([10, 20], t.addrB, t.b.port);
      const got = receive(t.b, 2);
      expect(t.a.sendBatch(o.buf, o.offsets, o.lengths, o.addrs, o.ports, o.count)).toBe(2);
      expect((await got).lengths).toEqual([10, 20]);
    });

    it('skips a datagram the kernel refuses (port 0) and sends the rest', async () => {
      const t = await open();
      const o = outgoing([10, 11, 12], t.addrB, t.b.port);
      o.ports[1] = 0;
      const got = receive(t.b, 2);
      expect(t.a.sendBatch(o.buf, o.offsets, o.lengths, o.addrs, o.ports, o.count)).toBe(2);
      expect((await got).lengths).toEqual([10, 12]);
    });

    it('throws TypeError for slots or datagrams outside the buffer', async () => {
      const { a, b } = await open();
      const buf = Buffer.alloc(4 * STRIDE);
      const l = new Int32Array(4);
      const ad = new Uint32Array(4);
      const p = new Uint16Array(4);
      expect(() => b.recvBatch(buf, buf.length, STRIDE, 1, l, ad, p)).toThrow(TypeError);
      expect(() => b.recvBatch(buf, 0, STRIDE, 5, l, ad, p)).toThrow(TypeError);
      expect(() => b.recvBatch(buf, 0, STRIDE, 4, l, ad, new Uint16Array(2))).toThrow(TypeError);
      expect(() => b.recvBatch(buf, 64, STRIDE * 2, 4, l, ad, p)).toThrow(TypeError);
      expect(() => b.recvBatch(buf, 0, 0, 1, l, ad, p)).toThrow(TypeError);
      const small = Buffer.alloc(100);
      expect(() => a.sendBatch(small, Int32Array.of(90), Int32Array.of(20), ad, p, 1)).toThrow(TypeError);
      expect(() => a.sendBatch(small, Int32Array.of(0), Int32Array.of(20), ad, p, 2)).toThrow(TypeError);
      expect(() => a.sendBatch(small, Int32Array.of(0), Int32Array.of(-1), ad, p, 1)).toThrow(TypeError);
    });

    it('stops calling back after onReadable(undefined)', async () => {
      const t = await open();
      let calls = 0;
      t.b.onReadable(() => calls++);
      t.b.onReadable(undefined);
      const o = outgoing([10, 20], t.addrB, t.b.port);
      t.a.sendBatch(o.buf, o.offsets, o.lengths, o.addrs, o.ports, o.count);
      await new Promise((r) => setTimeout(r, 50));
      expect(calls).toBe(0);
      expect((await receive(t.b, 2)).lengths).toEqual([10, 20]);
    });

    it('returns 0 after close, never calls back again, and closes idempotently', async () => {
      const t = await open();
      let calls = 0;
      t.b.onReadable(() => calls++);
      t.b.close();
      t.b.close();
      const o = outgoing([10], t.addrB, t.b.port);
      t.a.sendBatch(o.buf, o.offsets, o.lengths, o.addrs, o.ports, 1);
      await settle();
      expect(calls).toBe(0);
      const buf = Buffer.alloc(STRIDE);
      expect(t.b.recvBatch(buf, 0, STRIDE, 1, new Int32Array(1), new Uint32Array(1), new Uint16Array(1))).toBe(0);
      expect(t.b.sendBatch(o.buf, o.offsets, o.lengths, o.addrs, o.ports, 1)).toBe(0);
      t.b.onReadable(() => calls++);
      await settle();
      expect(calls).toBe(0);
    });

    it('leaves no handles behind', async () => {
      await settle();
      const before = snapshotResources();
      const t = await open();
      const o = outgoing([10], t.addrB, t.b.port);
      const got = receive(t.b, 1);
      t.a.sendBatch(o.buf, o.offsets, o.lengths, o.addrs, o.ports, 1);
      await got;
      t.a.onReadable(() => undefined);
      t.b.onReadable(() => undefined);
      await t.teardown();
      await expectNoLeaks(before);
    });
  });
}
