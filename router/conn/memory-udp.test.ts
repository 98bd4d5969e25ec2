import { describe, expect, it } from 'vitest';
import { MemoryUdpNet } from './memory-udp.js';
import { packetConnSuite, receive } from './packet-conn.suite.js';

const A = 0x0a000001; // 10.0.0.1
const B = 0x0a000002; // 10.0.0.2
const C = 0x0a000003; // 10.0.0.3

packetConnSuite('MemoryUdp', async () => {
  const net = new MemoryUdpNet();
  const a = net.open({ addr: A });
  const b = net.open({ addr: B, port: 6783 });
  return {
    a,
    b,
    addrA: A,
    addrB: B,
    unusedPort: 6784,
    async teardown() {
      a.close();
      b.close();
    },
  };
});

function one(net: MemoryUdpNet, from: number, to: number, toPort: number, size = 10): number {
  const src = net.open({ addr: from });
  try {
    return src.sendBatch(
      Buffer.alloc(size, 1),
      Int32Array.of(0),
      Int32Array.of(size),
      Uint32Array.of(to),
      Uint16Array.of(toPort),
      1,
    );
  } finally {
    src.close();
  }
}

describe('MemoryUdpNet', () => {
  it('refuses a taken (addr, port) and frees it on close', () => {
    const net = new MemoryUdpNet();
    const s = net.open({ addr: A, port: 6783 });
    expect(() => net.open({ addr: A, port: 6783 })).toThrow('UDP port 6783 is already in use');
    expect(net.open({ addr: B, port: 6783 }).port).toBe(6783); // another host
    s.close();
    expect(net.open({ addr: A, port: 6783 }).port).toBe(6783);
  });

  it('picks distinct ephemeral ports and refuses address 0', () => {
    const net = new MemoryUdpNet();
    const p1 = net.open({ addr: A }).port;
    const p2 = net.open({ addr: A }).port;
    expect(p1).toBeGreaterThanOrEqual(49152);
    expect(p2).not.toBe(p1);
    expect(() => net.open({ addr: 0 })).toThrow(/concrete address/);
    expect(net.endpoints()).toHaveLength(2);
  });

  it('drops datagrams across a blocked link both ways until unblocked', async () => {
    const net = new MemoryUdpNet();
    const b = net.open({ addr: B, port: 1000 });
    const a = net.open({ addr: A, port: 1000 });
    net.block(A, B);
    expect(net.isBlocked(B, A)).toBe(true);
    expect(one(net, A, B, 1000)).toBe(1); // "sent", then lost on the wire
    expect(one(net, B, A, 1000)).toBe(1);
    expect(net.stats.blocked).toBe(2);
    expect(one(net, C, B, 1000)).toBe(1); // other links still work
    net.unblock(A, B);
    expect(one(net, A, B, 1000)).toBe(1);
    const r = await receive(b, 2);
    expect(r.addrs).toEqual([C, A]);
    expect(net.stats.delivered).toBe(2);
    a.close();
    b.close();
  });

  it('asks the filter about each datagram', async () => {
    const net = new MemoryUdpNet();
    const b = net.open({ addr: B, port: 1000 });
    net.filter = (_sa, _sp, _da, _dp, len) => len < 100;
    one(net, A, B, 1000, 500);
    one(net, A, B, 1000, 50);
    expect((await receive(b, 1)).lengths).toEqual([50]);
    expect(net.stats.filtered).toBe(1);
    b.close();
  });

  it('counts datagrams to nobody and to a full queue', () => {
    const net = new MemoryUdpNet();
    const b = net.open({ addr: B, port: 1000, queueLimit: 1 });
    one(net, A, B, 1001);
    one(net, A, B, 1000);
    one(net, A, B, 1000);
    expect(net.stats).toMatchObject({ noListener: 1, delivered: 1, queueFull: 1 });
    b.close();
  });
});
