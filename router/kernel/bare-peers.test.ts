import { describe, expect, it } from 'vitest';
import type { PeerName } from '../../common/types.js';
import { bareWant, subtract, validUnicast } from './bare-peers.js';

const SELF = '02:00:00:00:00:01' as PeerName;
const OTHER = '02:00:00:00:00:02' as PeerName;
const R = 0x0a200000; // 10.32.0.0/12
const ip = (a: number) => `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
const cidrs = (rs: readonly { addr: number; prefix: number }[]) => rs.map((r) => `${ip(r.addr)}/${r.prefix}`);

describe('bareWant', () => {
  it('wants nothing without bare hosts, whatever the share', () => {
    const w = bareWant({
      peers: [],
      self: SELF,
      spans: [{ start: R, end: R + 2 ** 20, owner: SELF }],
      minPrefix: 12,
      others: [],
      local: [R + 1],
    });
    expect(w).toEqual({ flood: [], proxies: [], routes: [] });
  });

  it('floods to each bare host once, answers ARP for our addresses and routes our whole share on-link', () => {
    const w = bareWant({
      peers: [0xc0a80003, 0xc0a80004, 0xc0a80003],
      self: SELF,
      spans: [
        { start: R, end: R + 2 ** 19, owner: SELF },
        { start: R + 2 ** 19, end: R + 2 ** 20, owner: OTHER },
      ],
      minPrefix: 12,
      others: [],
      local: [R + 5, R + 1, R + 5],
    });
    expect(w.flood).toEqual([0xc0a80003, 0xc0a80004]);
    expect(w.proxies).toEqual([R + 1, R + 5]);
    // Our half only, each route more specific than the TUN device's /12.
    expect(cidrs(w.routes)).toEqual(['10.32.0.0/13']);
  });

  it('leaves out what other peers announce inside our share (they are reached through them, not the bare host)', () => {
    const w = bareWant({
      peers: [0xc0a80003],
      self: SELF,
      spans: [{ start: R, end: R + 2 ** 10, owner: SELF }],
      minPrefix: 12,
      others: [
        { addr: R + 7, prefix: 32 },
        { addr: R + 0x105, prefix: 24 }, // host bits: the whole /24 is theirs
      ],
      local: [],
    });
    expect(cidrs(w.routes)).toEqual([
      '10.32.0.0/30',
      '10.32.0.4/31',
      '10.32.0.6/32',
      '10.32.0.8/29',
      '10.32.0.16/28',
      '10.32.0.32/27',
      '10.32.0.64/26',
      '10.32.0.128/25',
      '10.32.2.0/23',
    ]);
  });

  it('refuses underlay addresses no host can have (0/8, loopback, multicast, reserved)', () => {
    for (const bad of [0, 0x00000001, 0x7f000001, 0xe0000001, 0xefffffff, 0xf0000001, 0xffffffff])
      expect(validUnicast(bad), ip(bad)).toBe(false);
    expect(validUnicast(0xc0a80003)).toBe(true);
    const w = bareWant({ peers: [0, 0xe0000001], self: SELF, spans: [], minPrefix: 12, others: [], local: [] });
    expect(w.flood).toEqual([]);
  });

  it('routes a share spanning the whole range as two halves (never the /12 itself)', () => {
    const w = bareWant({
      peers: [0xc0a80003],
      self: SELF,
      spans: [{ start: R, end: R + 2 ** 20, owner: SELF }],
      minPrefix: 12,
      others: [],
      local: [],
    });
    expect(cidrs(w.routes)).toEqual(['10.32.0.0/13', '10.40.0.0/13']);
  });
});

describe('subtract', () => {
  it('cuts holes out of runs, keeping them sorted and disjoint', () => {
    expect(
      subtract(
        [
          [20, 30],
          [0, 10],
        ],
        [
          [5, 7],
          [8, 25],
          [40, 50],
          [3, 3],
        ],
      ),
    ).toEqual([
      [0, 5],
      [7, 8],
      [25, 30],
    ]);
    expect(subtract([[0, 10]], [[0, 10]])).toEqual([]);
    expect(subtract([[0, 2 ** 32]], [])).toEqual([[0, 2 ** 32]]);
  });
});
