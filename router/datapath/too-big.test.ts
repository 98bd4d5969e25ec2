import { describe, expect, it } from 'vitest';
import { tryLoadNative } from '../tun/native.js';
import { fold16, segmentTcp4, sum16 } from './gso.js';
import { fragmentIpv4, fragNeededWanted, IPV4_MF, writeFragNeeded } from './too-big.js';

function ipv4(total: number, proto: number, flags = 0): Buffer {
  const p = Buffer.alloc(total);
  p[0] = 0x45;
  p.writeUInt16BE(total, 2);
  p.writeUInt16BE(flags, 6);
  p[8] = 64;
  p[9] = proto;
  p.writeUInt32BE(0x0a000001, 12);
  p.writeUInt32BE(0x0a000002, 16);
  for (let i = 20; i < total; i++) p[i] = (i * 7) & 0xff;
  return p;
}

describe('writeFragNeeded', () => {
  it('writes ICMP type 3 code 4 with the MTU, addresses swapped, the header and 8 bytes quoted, checksums valid', () => {
    const pkt = ipv4(1400, 17, 0x4000);
    const out = Buffer.alloc(200);
    const n = writeFragNeeded(pkt, 0, pkt.length, 1344, out, 4);
    expect(n).toBe(20 + 8 + 28);
    const m = out.subarray(4, 4 + n);
    expect(m.readUInt16BE(2)).toBe(n);
    expect(m.readUInt32BE(12)).toBe(0x0a000002);
    expect(m.readUInt32BE(16)).toBe(0x0a000001);
    expect([m[20], m[21], m.readUInt16BE(26)]).toEqual([3, 4, 1344]);
    expect(m.subarray(28).equals(pkt.subarray(0, 28))).toBe(true);
    expect(fold16(sum16(m, 0, 20, 0))).toBe(0xffff);
    expect(fold16(sum16(m, 20, n, 0))).toBe(0xffff);
  });

  it('is not wanted for non-first fragments or ICMP errors, but is for echo requests', () => {
    expect(fragNeededWanted(ipv4(100, 17, 0x0010), 0, 100)).toBe(false);
    const err = ipv4(100, 1);
    err[20] = 3;
    expect(fragNeededWanted(err, 0, 100)).toBe(false);
    const echo = ipv4(100, 1);
    echo[20] = 8;
    expect(fragNeededWanted(echo, 0, 100)).toBe(true);
    expect(fragNeededWanted(ipv4(20, 1), 0, 20)).toBe(false); // no ICMP header to read
  });
});

describe('fragmentIpv4', () => {
  it('cuts a packet into fragments that fit, with offsets in 8-byte units and MF on all but the last', () => {
    const pkt = ipv4(3000, 17);
    const dst = Buffer.alloc(8 * 2000);
    const lens = new Int32Array(8);
    const n = fragmentIpv4(pkt, 0, pkt.length, 1000, dst, 0, 2000, 8, lens);
    expect(n).toBe(4);
    const parts: Buffer[] = [];
    for (let i = 0; i < n; i++) {
      const f = dst.subarray(i * 2000, i * 2000 + (lens[i] as number));
      expect(f.length).toBeLessThanOrEqual(1000);
      expect(fold16(sum16(f, 0, 20, 0))).toBe(0xffff);
      const field = f.readUInt16BE(6);
      expect((field & 0x1fff) * 8).toBe(parts.reduce((s, p) => s + p.length, 0));
      expect((field & IPV4_MF) !== 0).toBe(i < n - 1);
      parts.push(f.subarray(20));
    }
    expect(Buffer.concat(parts).equals(pkt.subarray(20))).toBe(true);
  });

  it('refuses what cannot be cut: no room past the header, too many fragments, a buffer too small', () => {
    const pkt = ipv4(3000, 17);
    const lens = new Int32Array(8);
    expect(fragmentIpv4(pkt, 0, pkt.length, 27, Buffer.alloc(10_000), 0, 1000, 8, lens)).toBe(-1);
    expect(fragmentIpv4(pkt, 0, pkt.length, 600, Buffer.alloc(10_000), 0, 1000, 2, lens)).toBe(-1);
    expect(fragmentIpv4(pkt, 0, pkt.length, 1000, Buffer.alloc(1500), 0, 1000, 8, lens)).toBe(-1);
    expect(fragmentIpv4(pkt, 0, 20, 1000, Buffer.alloc(10_000), 0, 1000, 8, lens)).toBe(-1);
  });
});

describe('segmentTcp4: the addon and the JS fallback agree', () => {
  const native = tryLoadNative();
  it.skipIf(native === undefined)('byte for byte, with full and with partial checksums', () => {
    const pkt = ipv4(40 + 10_000, 6, 0x4000);
    pkt[32] = 0x50;
    pkt[33] = 0x19; // ACK FIN PSH: FIN/PSH only on the last
    for (const full of [true, false]) {
      const a = Buffer.alloc(16 * 1500);
      const b = Buffer.alloc(16 * 1500);
      const la = new Int32Array(16);
      const lb = new Int32Array(16);
      const na = native!.segmentTcp4(pkt, 0, pkt.length, 1400, a, 8, 1500, 16, la, full);
      const nb = segmentTcp4(pkt, 0, pkt.length, 1400, b, 8, 1500, 16, lb, full);
      expect(na).toBe(8);
      expect(nb).toBe(na);
      expect([...la.subarray(0, na)]).toEqual([...lb.subarray(0, nb)]);
      expect(a.equals(b)).toBe(true);
    }
    // Malformed: not TCP, too short, header past the end: -1 from both.
    for (const bad of [ipv4(100, 17), ipv4(30, 6)]) {
      expect(
        native!.segmentTcp4(bad, 0, bad.length, 1000, Buffer.alloc(4000), 0, 2000, 2, new Int32Array(2), true),
      ).toBe(-1);
      expect(segmentTcp4(bad, 0, bad.length, 1000, Buffer.alloc(4000), 0, 2000, 2, new Int32Array(2))).toBe(-1);
    }
  });
});
