import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  completeChecksum,
  copyBytes,
  copyBytesJs,
  fold16,
  ipv4HeaderChecksum,
  segmentTcp4,
  sum16,
  VNET_F_NEEDS_CSUM,
  VNET_GSO_TCPV4,
  vnetValid,
} from './gso.js';

/** tcpPacket builds an IPv4/TCP packet with `payload`, valid checksums, seq and flags. */
function tcpPacket(payload: Buffer, seq = 1000, flags = 0x18 /* PSH|ACK */): Buffer {
  const b = Buffer.alloc(20 + 20 + payload.length);
  b[0] = 0x45;
  b.writeUInt16BE(b.length, 2);
  b.writeUInt16BE(0x1234, 4);
  b[8] = 64;
  b[9] = 6;
  b.writeUInt32BE(0x0a200001, 12);
  b.writeUInt32BE(0x0a200002, 16);
  ipv4HeaderChecksum(b, 0);
  b.writeUInt16BE(40000, 20);
  b.writeUInt16BE(5201, 22);
  b.writeUInt32BE(seq, 24);
  b[32] = 5 << 4;
  b[33] = flags;
  b.writeUInt16BE(65535, 34);
  payload.copy(b, 40);
  b.writeUInt16BE(tcpChecksum(b), 36);
  return b;
}

function tcpChecksum(b: Buffer): number {
  const save = b.readUInt16BE(36);
  b.writeUInt16BE(0, 36);
  const c = ~fold16(sum16(b, 20, b.length, sum16(b, 12, 20, 6 + b.length - 20))) & 0xffff;
  b.writeUInt16BE(save, 36);
  return c;
}

/** valid says whether both checksums of a packet verify. */
function valid(b: Buffer): boolean {
  const ip = fold16(sum16(b, 0, 20, 0)) === 0xffff;
  const tcp = fold16(sum16(b, 20, b.length, sum16(b, 12, 20, 6 + b.length - 20))) === 0xffff;
  return ip && tcp;
}

describe('checksums', () => {
  it('completes a partial TCP checksum to the full one', () => {
    const p = tcpPacket(randomBytes(999));
    expect(valid(p)).toBe(true);
    const full = p.readUInt16BE(36);
    // What the kernel hands us with NEEDS_CSUM: the field holds the folded pseudo-header sum.
    p.writeUInt16BE(fold16(sum16(p, 12, 20, 6 + p.length - 20)), 36);
    completeChecksum(p, 0, p.length, 20, 16);
    expect(p.readUInt16BE(36)).toBe(full);
  });
});

describe('segmentTcp4', () => {
  it('splits a super-packet into MSS segments with valid headers, sequence numbers and flags', () => {
    const payload = randomBytes(10_000);
    const big = tcpPacket(payload, 0xfffffff0, 0x19 /* FIN|PSH|ACK */);
    const out = Buffer.alloc(16 * 2048);
    const lens = new Int32Array(16);
    const n = segmentTcp4(big, 0, big.length, 1400, out, 0, 2048, 16, lens);
    expect(n).toBe(Math.ceil(10_000 / 1400));
    const got: Buffer[] = [];
    for (let i = 0; i < n; i++) {
      const s = out.subarray(i * 2048, i * 2048 + (lens[i] as number));
      expect(valid(s)).toBe(true);
      expect(s.readUInt16BE(2)).toBe(s.length);
      expect(s.readUInt16BE(4)).toBe((0x1234 + i) & 0xffff);
      expect(s.readUInt32BE(24)).toBe((0xfffffff0 + i * 1400) >>> 0); // wraps
      expect(s[33]).toBe(i === n - 1 ? 0x19 : 0x10);
      got.push(s.subarray(40));
    }
    expect(Buffer.concat(got)).toEqual(payload);
  });

  it('refuses what is not IPv4 TCP, or does not fit the slots', () => {
    const lens = new Int32Array(4);
    const out = Buffer.alloc(4 * 2048);
    const udp = tcpPacket(randomBytes(100));
    udp[9] = 17;
    expect(segmentTcp4(udp, 0, udp.length, 1400, out, 0, 2048, 4, lens)).toBe(-1);
    const big = tcpPacket(randomBytes(10_000));
    expect(segmentTcp4(big, 0, big.length, 1400, out, 0, 2048, 4, lens)).toBe(-1);
    expect(segmentTcp4(big, 0, 30, 1400, out, 0, 2048, 4, lens)).toBe(-1);
    const badThl = tcpPacket(randomBytes(100));
    badThl[32] = 0x20;
    expect(segmentTcp4(badThl, 0, badThl.length, 1400, out, 0, 2048, 4, lens)).toBe(-1);
  });
});

describe('copyBytes', () => {
  it.each([
    ['native or fallback', copyBytes],
    ['JavaScript', copyBytesJs],
  ])('copies any length at any offsets (%s)', (_name, copy) => {
    const src = randomBytes(100);
    for (const len of [0, 1, 3, 4, 7, 64, 99]) {
      const dst = Buffer.alloc(120);
      copy(src, 1, dst, 5, len);
      expect(dst.subarray(5, 5 + len)).toEqual(src.subarray(1, 1 + len));
      expect(dst[5 + len] ?? 0).toBe(0);
    }
  });
});

describe('vnetValid', () => {
  it('accepts plain and TCPv4 GSO headers and rejects the rest', () => {
    const h = Buffer.alloc(10);
    expect(vnetValid(h, 0, 100)).toBe(true);
    h[1] = VNET_GSO_TCPV4;
    h.writeUInt16LE(1400, 4);
    expect(vnetValid(h, 0, 100)).toBe(true);
    h[1] = 3; // UDP fragmentation offload: we never ask for it
    expect(vnetValid(h, 0, 100)).toBe(false);
    h[1] = VNET_GSO_TCPV4;
    h.writeUInt16LE(0, 4);
    expect(vnetValid(h, 0, 100)).toBe(false);
    h.writeUInt16LE(1400, 4);
    h[0] = VNET_F_NEEDS_CSUM;
    h.writeUInt16LE(90, 6);
    h.writeUInt16LE(16, 8);
    expect(vnetValid(h, 0, 100)).toBe(false);
    h.writeUInt16LE(20, 6);
    expect(vnetValid(h, 0, 100)).toBe(true);
  });
});
