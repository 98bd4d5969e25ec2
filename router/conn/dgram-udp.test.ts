import { describe, expect, it } from 'vitest';
import { WeftError } from '../../common/errors.js';
import { DgramUdp } from './dgram-udp.js';
import { LOOPBACK_ADDR as LOOPBACK, loopbackHarness, packetConnSuite, receive } from './packet-conn.suite.js';

packetConnSuite(
  'DgramUdp',
  loopbackHarness((bindAddr) => DgramUdp.open({ bindAddr, port: 0 })),
);

describe('DgramUdp', () => {
  it('says a port in use is a configuration error', async () => {
    const a = await DgramUdp.open({ bindAddr: LOOPBACK, port: 0 });
    try {
      const err = await DgramUdp.open({ bindAddr: LOOPBACK, port: a.port }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(WeftError);
      expect(err).toMatchObject({ code: 'EWEFT_CONFIG', message: `UDP port ${a.port} is already in use` });
    } finally {
      a.close();
    }
  });

  it('says an address that is not local is a configuration error', async () => {
    const err = await DgramUdp.open({ bindAddr: 0xc0000201, port: 0 }).catch((e: unknown) => e); // 192.0.2.1
    expect(err).toMatchObject({
      code: 'EWEFT_CONFIG',
      message: 'cannot bind UDP 192.0.2.1:0: address is not on this host',
    });
  });

  it('drops and counts datagrams beyond its receive ring, then recovers', async () => {
    const a = await DgramUdp.open({ bindAddr: LOOPBACK, port: 0 });
    const b = await DgramUdp.open({ bindAddr: LOOPBACK, port: 0, queueDatagrams: 8, queueBytes: 4096 });
    try {
      const n = 32;
      const buf = Buffer.alloc(n * 1000, 7);
      const offsets = Int32Array.from({ length: n }, (_, i) => i * 1000);
      const lengths = new Int32Array(n).fill(1000);
      expect(
        a.sendBatch(buf, offsets, lengths, new Uint32Array(n).fill(LOOPBACK), new Uint16Array(n).fill(b.port), n),
      ).toBe(n);
      await new Promise((r) => setTimeout(r, 50)); // let every datagram reach b's ring
      expect(b.rxDropped).toBe(n - 4); // 4096 bytes hold 4 datagrams of 1000
      const r = await receive(b, 4);
      expect(r.lengths).toEqual([1000, 1000, 1000, 1000]);
      const more = receive(b, 2);
      a.sendBatch(
        buf,
        offsets,
        lengths.fill(3000, 0, 1).fill(100, 1, 2),
        new Uint32Array(2).fill(LOOPBACK),
        new Uint16Array(2).fill(b.port),
        2,
      );
      expect((await more).lengths).toEqual([-1, 100]);
    } finally {
      a.close();
      b.close();
    }
  });

  it('wraps its receive ring without losing or mixing datagrams', async () => {
    const a = await DgramUdp.open({ bindAddr: LOOPBACK, port: 0 });
    const b = await DgramUdp.open({ bindAddr: LOOPBACK, port: 0, queueBytes: 2500 });
    try {
      const buf = Buffer.alloc(1000);
      const sizes = [700, 900, 600, 800, 1000, 300, 999, 1, 0, 650];
      let expected = 0;
      for (const [i, size] of sizes.entries()) {
        buf.fill(i, 0, size);
        const got = receive(b, 1, { stride: 1024, max: 1 });
        a.sendBatch(buf, Int32Array.of(0), Int32Array.of(size), Uint32Array.of(LOOPBACK), Uint16Array.of(b.port), 1);
        const r = await got;
        expect(r.lengths).toEqual([size]);
        if (size > 0) expect(r.firstBytes).toEqual([i]);
        expected++;
      }
      expect(expected).toBe(sizes.length);
      expect(b.rxDropped).toBe(0);
    } finally {
      a.close();
      b.close();
    }
  });
});
