import { describe, expect, it } from 'vitest';
import { WeftError } from '../../common/errors.js';
import { tryLoadNative } from '../tun/native.js';
import { NativeUdp6 } from './native-udp6.js';

const native = tryLoadNative();
const why = native === undefined ? 'native addon not built (run `npm run build:native`)' : undefined;

/** LOOPBACK6 is ::1 as 16 bytes. */
const LOOPBACK6 = Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
const STRIDE = 256;

/** Batch is one set of batch arrays for `n` datagrams. */
function batch(n: number) {
  return {
    buf: Buffer.alloc(n * STRIDE),
    offsets: new Int32Array(n),
    lengths: new Int32Array(n),
    addrs: new Uint8Array(16 * n),
    scopes: new Uint32Array(n),
    ports: new Uint16Array(n),
  };
}

/** receiveAll reads until `want` datagrams arrived (or 5 s passed: the count then fails the test). */
async function receiveAll(s: NativeUdp6, want: number, b: ReturnType<typeof batch>): Promise<number> {
  let got = 0;
  const deadline = Date.now() + 5_000;
  while (got < want && Date.now() < deadline) {
    const n = s.recvBatch(
      b.buf,
      got * STRIDE,
      STRIDE,
      want - got,
      b.lengths.subarray(got),
      b.addrs.subarray(16 * got),
      b.scopes.subarray(got),
      b.ports.subarray(got),
    );
    got += n;
    if (n === 0) await new Promise((r) => setTimeout(r, 5));
  }
  return got;
}

describe.skipIf(why !== undefined)(`NativeUdp6${why ? ` (skipped: ${why})` : ''}`, () => {
  it('sends a batch over ::1 and reports each source address, scope and port', async () => {
    const a = NativeUdp6.open({ port: 0, device: 'lo' });
    const b = NativeUdp6.open({ port: 0, device: 'lo' });
    try {
      expect(a.ifindex).toBeGreaterThan(0);
      expect(a.port).toBeGreaterThan(0);
      const tx = batch(3);
      for (let i = 0; i < 3; i++) {
        tx.offsets[i] = i * STRIDE;
        tx.lengths[i] = 10 + i;
        tx.buf.fill(0x41 + i, i * STRIDE, i * STRIDE + 10 + i);
        tx.addrs.set(LOOPBACK6, 16 * i);
        tx.ports[i] = b.port;
      }
      expect(a.sendBatch(tx.buf, tx.offsets, tx.lengths, tx.addrs, tx.scopes, tx.ports, 3)).toBe(3);
      const rx = batch(3);
      expect(await receiveAll(b, 3, rx)).toBe(3);
      for (let i = 0; i < 3; i++) {
        expect(rx.lengths[i]).toBe(10 + i);
        expect(rx.buf[i * STRIDE]).toBe(0x41 + i);
        expect([...rx.addrs.subarray(16 * i, 16 * i + 16)]).toEqual([...LOOPBACK6]);
        expect(rx.scopes[i]).toBe(0); // ::1 is not link-local: no scope
        expect(rx.ports[i]).toBe(a.port);
      }
      expect(b.recvErrors).toBe(0);
    } finally {
      a.close();
      b.close();
    }
  });

  it('reports a datagram larger than its slot with length -1, and skips a destination that fails', async () => {
    const a = NativeUdp6.open({ port: 0, device: 'lo' });
    const b = NativeUdp6.open({ port: 0, device: 'lo' });
    try {
      const tx = batch(3);
      const big = Buffer.alloc(STRIDE * 3);
      tx.offsets.set([0, 0, 0]);
      tx.lengths.set([STRIDE + 1, 8, 8]);
      for (let i = 0; i < 3; i++) tx.addrs.set(LOOPBACK6, 16 * i);
      tx.ports.set([b.port, 0, b.port]); // port 0: EINVAL for that datagram only
      expect(a.sendBatch(big, tx.offsets, tx.lengths, tx.addrs, tx.scopes, tx.ports, 3)).toBe(2);
      const rx = batch(2);
      expect(await receiveAll(b, 2, rx)).toBe(2);
      expect([rx.lengths[0], rx.lengths[1]]).toEqual([-1, 8]);
    } finally {
      a.close();
      b.close();
    }
  });

  it('refuses arrays too short for the batch with a TypeError', () => {
    const a = NativeUdp6.open({ port: 0, device: 'lo' });
    try {
      const t = batch(2);
      expect(() => a.sendBatch(t.buf, t.offsets, t.lengths, t.addrs.subarray(0, 31), t.scopes, t.ports, 2)).toThrow(
        TypeError,
      );
      expect(() => a.recvBatch(t.buf, 0, STRIDE, 2, t.lengths, t.addrs, t.scopes.subarray(0, 1), t.ports)).toThrow(
        TypeError,
      );
      t.offsets[1] = t.buf.length; // outside buf
      t.lengths[1] = 1;
      expect(() => a.sendBatch(t.buf, t.offsets, t.lengths, t.addrs, t.scopes, t.ports, 2)).toThrow(TypeError);
    } finally {
      a.close();
    }
  });

  it('is closed twice without harm, and does nothing once closed', () => {
    const a = NativeUdp6.open({ port: 0, device: 'lo' });
    a.onReadable(() => {});
    a.close();
    a.close();
    expect(a.closed).toBe(true);
    const t = batch(1);
    t.addrs.set(LOOPBACK6);
    t.lengths[0] = 1;
    t.ports[0] = 9;
    expect(a.sendBatch(t.buf, t.offsets, t.lengths, t.addrs, t.scopes, t.ports, 1)).toBe(0);
    expect(a.recvBatch(t.buf, 0, STRIDE, 1, t.lengths, t.addrs, t.scopes, t.ports)).toBe(0);
    a.onReadable(() => {}); // no watcher on a closed fd
    expect(a.recvErrors).toBe(0);
  });

  it('says a port in use or a missing device is a configuration error', () => {
    const a = NativeUdp6.open({ port: 0, device: 'lo' });
    try {
      expect(() => NativeUdp6.open({ port: a.port, device: 'lo' })).toThrow(
        expect.objectContaining({ code: 'EWEFT_CONFIG', message: expect.stringMatching(/already in use/) }),
      );
      let err: unknown;
      try {
        NativeUdp6.open({ port: 0, device: 'weft-nosuchdev' });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(WeftError);
      expect((err as WeftError).code).toBe('EWEFT_CONFIG');
      expect((err as Error).message).toMatch(/no such device/);
    } finally {
      a.close();
    }
  });
});
