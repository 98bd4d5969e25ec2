import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { SLEEVE_MAGIC, SLEEVE_VERSION, VXLAN_FLAG_I } from '../constants.js';
import { ipv4Packet } from '../testing/memory-router.js';
import {
  ARP_OP_REQUEST,
  arpIsIPv4,
  arpOp,
  arpSenderIp,
  arpTargetIp,
  checkSleeveHeader,
  checkVxlan,
  ETHERTYPE_IPV4,
  ethDstHi,
  ethDstLo,
  ethSrcLo,
  ethType,
  ipv4PacketLen,
  isGroupMac,
  SLEEVE_PREFIX_LEN,
  SleeveCheck,
  SleeveType,
  sleeveDstHi,
  sleeveDstLo,
  sleeveFrameLen,
  sleeveSrcHi,
  sleeveSrcLo,
  sleeveTtl,
  sleeveType,
  VXLAN_PREFIX_LEN,
  VxlanCheck,
  writeArp,
  writeSleevePrefix,
  writeVxlanPrefix,
} from './frame.js';

/** ipv4 builds a minimal IPv4 packet of `len` bytes from 10.32.0.1 to 10.32.0.2. */
const ipv4 = (len: number): Buffer => ipv4Packet(len, 0x0a200001, 0x0a200002);

describe('sleeve framing', () => {
  it('writes a header in the headroom and reads every field back', () => {
    const buf = Buffer.alloc(200);
    const pkt = ipv4(60);
    pkt.copy(buf, 64);
    const start = writeSleevePrefix(buf, 64, 60, SleeveType.Data, 7, 0x0242, 0x0a000001, 0x02aa, 0xbbccddee);
    expect(start).toBe(64 - SLEEVE_PREFIX_LEN);
    const len = 60 + SLEEVE_PREFIX_LEN;
    expect(checkSleeveHeader(buf, start, len)).toBe(SleeveCheck.Ok);
    expect(buf[start]).toBe(SLEEVE_MAGIC);
    expect(buf[start + 1]).toBe(SLEEVE_VERSION);
    expect(sleeveType(buf, start)).toBe(SleeveType.Data);
    expect(sleeveTtl(buf, start)).toBe(7);
    expect([sleeveSrcHi(buf, start), sleeveSrcLo(buf, start)]).toEqual([0x0242, 0x0a000001]);
    expect([sleeveDstHi(buf, start), sleeveDstLo(buf, start)]).toEqual([0x02aa, 0xbbccddee]);
    expect(sleeveFrameLen(buf, start + 16, start + len)).toBe(60);
    expect(ipv4PacketLen(buf, start + SLEEVE_PREFIX_LEN, 60)).toBe(60);
  });

  it('rejects a bad magic, an unknown version, an unknown type and a short header', () => {
    const buf = Buffer.alloc(64);
    writeSleevePrefix(buf, SLEEVE_PREFIX_LEN, 20, SleeveType.Data, 1, 0, 0, 0, 0);
    expect(checkSleeveHeader(buf, 0, 15)).toBe(SleeveCheck.Truncated);
    const bad = Buffer.from(buf);
    bad[0] = 0x58;
    expect(checkSleeveHeader(bad, 0, 40)).toBe(SleeveCheck.BadMagic);
    const v2 = Buffer.from(buf);
    v2[1] = 2;
    expect(checkSleeveHeader(v2, 0, 40)).toBe(SleeveCheck.BadVersion);
    const t = Buffer.from(buf);
    t[2] = 99;
    expect(checkSleeveHeader(t, 0, 40)).toBe(SleeveCheck.BadType);
  });

  it('reports a frame length that runs past the datagram as truncated', () => {
    const buf = Buffer.alloc(64);
    buf.writeUInt16BE(100, 16);
    expect(sleeveFrameLen(buf, 16, 64)).toBe(-1);
    buf.writeUInt16BE(0, 16);
    expect(sleeveFrameLen(buf, 16, 64)).toBe(-1);
    expect(sleeveFrameLen(buf, 63, 64)).toBe(-1);
  });
});

describe('VXLAN framing', () => {
  it('writes RFC 7348 headers: I flag, VNI in bits 8-31 of the second word, Ethernet after', () => {
    const buf = Buffer.alloc(200);
    ipv4(40).copy(buf, 64);
    const start = writeVxlanPrefix(buf, 64, 0x123456, 0x0211, 0x22334455, 0x02aa, 0xbbccddee, ETHERTYPE_IPV4);
    expect(start).toBe(64 - VXLAN_PREFIX_LEN);
    expect(buf[start]).toBe(VXLAN_FLAG_I);
    expect(buf.subarray(start + 1, start + 4)).toEqual(Buffer.from([0, 0, 0]));
    expect(buf.subarray(start + 4, start + 8)).toEqual(Buffer.from([0x12, 0x34, 0x56, 0]));
    expect(checkVxlan(buf, start, 40 + VXLAN_PREFIX_LEN, 0x123456)).toBe(VxlanCheck.Ok);
    const e = start + 8;
    expect([ethDstHi(buf, e), ethDstLo(buf, e), ethSrcLo(buf, e), ethType(buf, e)]).toEqual([
      0x0211,
      0x22334455,
      0xbbccddee,
      ETHERTYPE_IPV4,
    ]);
  });

  it('drops a datagram without the I flag, for another VNI, or too short for Ethernet', () => {
    const buf = Buffer.alloc(100);
    writeVxlanPrefix(buf, 22, 42, 0, 0, 0, 0, ETHERTYPE_IPV4);
    expect(checkVxlan(buf, 0, 100, 43)).toBe(VxlanCheck.BadVni);
    expect(checkVxlan(buf, 0, 21, 42)).toBe(VxlanCheck.Truncated);
    buf[0] = 0;
    expect(checkVxlan(buf, 0, 100, 42)).toBe(VxlanCheck.NoVniFlag);
  });

  it('ignores reserved bits on receipt', () => {
    const buf = Buffer.alloc(100);
    writeVxlanPrefix(buf, 22, 42, 0, 0, 0, 0, ETHERTYPE_IPV4);
    buf[0] = 0xff;
    buf[3] = 0xff;
    buf[7] = 0xff;
    expect(checkVxlan(buf, 0, 100, 42)).toBe(VxlanCheck.Ok);
  });

  it('tells group MACs from unicast ones', () => {
    expect(isGroupMac(0xffff)).toBe(true);
    expect(isGroupMac(0x0100)).toBe(true);
    expect(isGroupMac(0x0242)).toBe(false);
  });
});

describe('IPv4 and ARP readers', () => {
  it('accepts a well-formed packet and rejects bad version, IHL and lengths', () => {
    const p = ipv4(100);
    expect(ipv4PacketLen(p, 0, 100)).toBe(100);
    expect(ipv4PacketLen(p, 0, 120)).toBe(100); // padding after the packet is not part of it
    expect(ipv4PacketLen(p, 0, 99)).toBe(-1);
    expect(ipv4PacketLen(p, 0, 19)).toBe(-1);
    const v6 = Buffer.from(p);
    v6[0] = 0x65;
    expect(ipv4PacketLen(v6, 0, 100)).toBe(-1);
    const ihl = Buffer.from(p);
    ihl[0] = 0x44;
    expect(ipv4PacketLen(ihl, 0, 100)).toBe(-1);
    const tl = Buffer.from(p);
    tl.writeUInt16BE(10, 2);
    expect(ipv4PacketLen(tl, 0, 100)).toBe(-1);
  });

  it('writes and reads an ARP request', () => {
    const b = Buffer.alloc(28);
    writeArp(b, 0, ARP_OP_REQUEST, 0x0242, 1, 0x0a200002, 0, 0, 0x0a200001);
    expect(arpIsIPv4(b, 0, 28)).toBe(true);
    expect(arpIsIPv4(b, 0, 27)).toBe(false);
    expect(arpOp(b, 0)).toBe(ARP_OP_REQUEST);
    expect(arpSenderIp(b, 0)).toBe(0x0a200002);
    expect(arpTargetIp(b, 0)).toBe(0x0a200001);
  });
});

describe('decoders under random and mutated input', () => {
  it('never throw and never report a length past the buffer', () => {
    const valid = Buffer.alloc(200);
    ipv4(100).copy(valid, SLEEVE_PREFIX_LEN);
    writeSleevePrefix(valid, SLEEVE_PREFIX_LEN, 100, SleeveType.Data, 8, 1, 2, 3, 4);
    const vx = Buffer.alloc(200);
    ipv4(100).copy(vx, VXLAN_PREFIX_LEN);
    writeVxlanPrefix(vx, VXLAN_PREFIX_LEN, 7, 0, 0, 0, 0, ETHERTYPE_IPV4);
    let accepted = 0;
    for (let round = 0; round < 20_000; round++) {
      let b: Buffer;
      const kind = round % 3;
      if (kind === 0) {
        b = randomBytes(round % 150);
      } else {
        b = Buffer.from(kind === 1 ? valid : vx).subarray(0, 40 + (round % 160));
        for (let k = 0; k < 1 + (round % 4); k++) {
          const at = (round * 7919 + k * 104729) % b.length;
          b[at] = (b[at] as number) ^ (1 << (round % 8));
        }
      }
      const len = b.length;
      if (checkSleeveHeader(b, 0, len) === SleeveCheck.Ok) {
        let fo = 16;
        while (fo < len) {
          const fl = sleeveFrameLen(b, fo, len);
          if (fl < 0) break;
          expect(fo + 2 + fl).toBeLessThanOrEqual(len);
          const pl = ipv4PacketLen(b, fo + 2, fl);
          expect(pl).toBeLessThanOrEqual(fl);
          if (pl > 0) accepted++;
          fo += 2 + fl;
        }
      }
      if (checkVxlan(b, 0, len, 7) === VxlanCheck.Ok) {
        const pl = ipv4PacketLen(b, VXLAN_PREFIX_LEN, len - VXLAN_PREFIX_LEN);
        expect(pl).toBeLessThanOrEqual(len - VXLAN_PREFIX_LEN);
        if (arpIsIPv4(b, VXLAN_PREFIX_LEN, len - VXLAN_PREFIX_LEN)) arpTargetIp(b, VXLAN_PREFIX_LEN);
      }
    }
    // Mutations that leave the packet intact are accepted: the fuzzer does reach the inner decoder.
    expect(accepted).toBeGreaterThan(0);
  });
});
