import { describe, expect, it } from 'vitest';
import { ProtocolError, WeftError } from '../../common/errors.js';
import { type IPv4, type PeerName, parseCidr, parseIPv4 } from '../../common/types.js';
import type { Gossip } from '../gossip/gossip.js';
import { mulberry32 } from '../testing/gossip-sim.js';
import { Allocator } from './allocator.js';
import { decodeMessage, encodeMessage, Ipam, IpamGossiper } from './ipam.js';
import { Ring, type RingState } from './ring.js';

const p = (n: number) => `02:00:00:00:00:${n.toString(16).padStart(2, '0')}` as PeerName;
const RANGE = parseCidr('10.32.0.0/22');
const A = p(1);
const B = p(2);
const C = p(3);

function clone(s: RingState): RingState {
  return { range: s.range, seedId: s.seedId, tokens: s.tokens.map((t) => ({ ...t })) };
}

/** spans of every peer in its own ring must be pairwise disjoint. */
function assertNoDoubleOwner(rings: Ring[]): void {
  const iv: [number, number, PeerName][] = [];
  for (const r of rings) for (const s of r.rangesOf(r.self)) iv.push([s.start, s.end, r.self]);
  iv.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < iv.length; i++) expect(iv[i]![0] >= iv[i - 1]![1], `overlap ${iv[i - 1]} / ${iv[i]}`).toBe(true);
}

describe('Ring', () => {
  it('a single host alone owns the whole range at once', () => {
    const r = Ring.seeded(RANGE, A, [A]);
    expect(r.ownedBy(A)).toBe(1024);
    const al = new Allocator(r);
    expect(al.allocate('c1')).toBe(parseIPv4('10.32.0.1'));
  });

  it('seeds alike on every peer whatever the order, in equal shares', () => {
    const r1 = Ring.seeded(RANGE, A, [C, A, B]);
    const r2 = Ring.seeded(RANGE, B, [A, B, C, A]);
    expect(r1.state()).toEqual(r2.state());
    expect(r1.ownerOf(parseIPv4('10.32.0.0'))).toBe(A);
    expect(r1.ownerOf(parseIPv4('10.32.3.255'))).toBe(C);
    expect(r1.ownerOf(parseIPv4('10.33.0.0'))).toBeUndefined();
    expect([A, B, C].map((x) => r1.ownedBy(x)).reduce((a, b) => a + b)).toBe(1024);
  });

  it('transfer splits tokens and only the owner may donate', () => {
    const r = Ring.seeded(RANGE, A, [A, B]);
    r.transfer(parseIPv4('10.32.0.64'), parseIPv4('10.32.0.128'), C);
    expect(r.ownerOf(parseIPv4('10.32.0.63'))).toBe(A);
    expect(r.ownerOf(parseIPv4('10.32.0.64'))).toBe(C);
    expect(r.ownerOf(parseIPv4('10.32.0.128'))).toBe(A);
    expect(r.tokens()).toHaveLength(4);
    expect(() => r.transfer(parseIPv4('10.32.2.0'), parseIPv4('10.32.2.4'), C)).toThrow(/not ours/);
    expect(() => r.transfer(parseIPv4('10.32.0.64'), parseIPv4('10.32.0.65'), B)).toThrow(/not ours/);
  });

  it('merge is commutative, associative and idempotent', () => {
    const a = Ring.seeded(RANGE, A, [A, B, C]);
    const b = Ring.seeded(RANGE, B, [A, B, C]);
    const c = Ring.seeded(RANGE, C, [A, B, C]);
    a.transfer(a.base, a.base + 16, B);
    b.transfer(b.rangesOf(B)[0]!.start, b.rangesOf(B)[0]!.start + 32, C);
    c.rmpeer(A);
    const states = [a, b, c].map((r) => clone(r.state()));
    const orders = [
      [0, 1, 2],
      [2, 1, 0],
      [1, 0, 2],
      [2, 0, 1],
    ];
    const results = orders.map((o) => {
      const r = new Ring(RANGE, p(9));
      for (const i of o) r.merge(states[i]!);
      r.merge(states[o[0]!]!);
      return r.state();
    });
    for (const s of results) expect(s).toEqual(results[0]);
  });

  it('equal versions with different owners resolve alike and are reported', () => {
    const a = Ring.seeded(RANGE, A, [B]);
    const c = Ring.seeded(RANGE, C, [B]);
    a.rmpeer(B);
    c.rmpeer(B);
    const ra = a.merge(c.state());
    const rc = c.merge(clone(a.state()));
    expect(ra.conflicts.length).toBe(1);
    expect(a.state()).toEqual(c.state());
    expect(a.ownerOf(a.base)).toBe(C);
    expect(ra.lost.length).toBe(1);
    expect(rc.lost.length).toBe(0);
  });

  it('refuses rings of another range or another seed', () => {
    const a = Ring.seeded(RANGE, A, [A, B]);
    expect(() => a.merge(Ring.seeded(RANGE, B, [B]).state())).toThrow(/different list/);
    expect(() => a.merge(Ring.seeded(parseCidr('10.40.0.0/22'), B, [A, B]).state())).toThrow(/range/);
    const empty = new Ring(RANGE, C);
    expect(empty.merge(a.state()).changed).toBe(true);
    expect(empty.seedId).toBe(a.seedId);
  });

  it('rmpeer of a dead peer makes its space reusable', () => {
    const a = Ring.seeded(RANGE, A, [A, B]);
    const al = new Allocator(a);
    expect(al.claim.bind(al, 'x', parseIPv4('10.32.3.1') as IPv4)).toThrow(/owned by peer/);
    expect(a.rmpeer(B)).toBe(512);
    al.claim('x', parseIPv4('10.32.3.1'));
    expect(a.ownedBy(A)).toBe(1024);
  });
});

describe('Allocator', () => {
  it('allocates lowest first, never network/broadcast, idempotent per owner', () => {
    const al = new Allocator(Ring.seeded(RANGE, A, [A]));
    const sub = parseCidr('10.32.1.0/30');
    expect(al.allocate('a', sub)).toBe(parseIPv4('10.32.1.1'));
    expect(al.allocate('a', sub)).toBe(parseIPv4('10.32.1.1'));
    expect(al.allocate('b', sub)).toBe(parseIPv4('10.32.1.2'));
    expect(al.allocate('c', sub)).toBeUndefined();
    expect(() => al.allocate('d', parseCidr('10.0.0.0/24'))).toThrow(/not inside/);
    expect(al.free('a')).toEqual([parseIPv4('10.32.1.1')]);
    expect(al.allocate('c', sub)).toBe(parseIPv4('10.32.1.1'));
  });

  it('claim refuses foreign and used addresses', () => {
    const al = new Allocator(Ring.seeded(RANGE, A, [A, B]));
    al.claim('a', parseIPv4('10.32.0.5'));
    al.claim('a', parseIPv4('10.32.0.5'));
    expect(() => al.claim('b', parseIPv4('10.32.0.5'))).toThrow(/in use/);
    expect(() => al.claim('b', parseIPv4('10.32.2.5'))).toThrow(/owned by/);
    expect(() => al.claim('b', parseIPv4('11.0.0.1'))).toThrow(/outside/);
  });

  it('donates an aligned block of the largest free run and updates the ring', () => {
    const al = new Allocator(Ring.seeded(RANGE, A, [A]));
    for (let i = 0; i < 10; i++) al.allocate(`c${i}`);
    const blk = al.donate(B, 256)!;
    expect(blk.size).toBe(256);
    expect(blk.start % 256).toBe(0);
    expect(al.ring.ownerOf(blk.start)).toBe(B);
    expect(al.ring.ownerOf(blk.start + 255)).toBe(B);
    expect(al.ring.ownedBy(A)).toBe(768);
    const tiny = new Allocator(Ring.seeded(parseCidr('10.32.0.0/30'), A, [A]));
    tiny.claim('x', parseIPv4('10.32.0.0'));
    tiny.claim('y', parseIPv4('10.32.0.1'));
    tiny.claim('z', parseIPv4('10.32.0.2'));
    expect(tiny.donate(B, 64)).toEqual({ start: parseIPv4('10.32.0.3'), size: 1 });
    expect(tiny.donate(B, 64)).toBeUndefined();
  });

  it('persistence round-trips and refuses bad data', () => {
    const al = new Allocator(Ring.seeded(RANGE, A, [A, B]));
    al.allocate('c1');
    al.claim('c2', parseIPv4('10.32.0.77'));
    al.donate(C, 64);
    const json = JSON.parse(JSON.stringify(al.toJSON()));
    const back = Allocator.fromJSON(json, { self: A, range: RANGE });
    expect(back.toJSON()).toEqual(al.toJSON());
    expect(back.ring.state()).toEqual(al.ring.state());
    expect(back.allocate('c3')).toBe(al.allocate('c3'));
    expect(() => Allocator.fromJSON(json, { self: B })).toThrow(WeftError);
    expect(() => Allocator.fromJSON({ ...json, format: 2 })).toThrow(/invalid ipam state/);
    expect(() => Allocator.fromJSON({ ...json, allocations: { a: ['10.32.0.1'], b: ['10.32.0.1'] } })).toThrow(/twice/);
    expect(() => Allocator.fromJSON({ ...json, tokens: [] })).toThrow(/invalid ipam/);
  });
});

class Net {
  readonly peers = new Map<PeerName, Ipam>();
  cut = new Set<string>();
  gossipFor(self: PeerName): Gossip {
    return {
      broadcast: () => {},
      unicast: (dst, payload) => {
        const q = this.peers.get(dst);
        if (q === undefined || this.cut.has(`${self}|${dst}`)) return false;
        new IpamGossiper(q).onGossipUnicast(self, payload);
        return true;
      },
    };
  }
}

describe('Ipam', () => {
  it('a joiner asks the peer with most free space and gets a block', () => {
    const net = new Net();
    const a = new Ipam(new Allocator(Ring.seeded(RANGE, A, [A])), net.gossipFor(A));
    const b = new Ipam(new Allocator(new Ring(RANGE, B)), net.gossipFor(B));
    net.peers.set(A, a).set(B, b);
    new IpamGossiper(b).onGossip(A, new IpamGossiper(a).fullState());
    const r = b.allocate('c1');
    expect(r).toEqual({ pending: A });
    const r2 = b.allocate('c1');
    expect('addr' in r2).toBe(true);
    expect(a.ring.ownerOf((r2 as { addr: IPv4 }).addr)).toBe(B);
    expect(new IpamGossiper(new Ipam(new Allocator(new Ring(RANGE, C)), net.gossipFor(C))).fullState()).toHaveLength(0);
  });

  it('round-trips messages and survives thousands of mutated payloads with only validation errors', () => {
    const ring = Ring.seeded(RANGE, A, [A, B, C]);
    ring.transfer(ring.base, ring.base + 8, C);
    const good = encodeMessage({ kind: 'ring', ring: ring.state() });
    expect(decodeMessage(good)).toEqual({ kind: 'ring', ring: ring.state() });
    expect(decodeMessage(encodeMessage({ kind: 'space-request', want: 64 }))).toEqual({
      kind: 'space-request',
      want: 64,
    });
    const rnd = mulberry32(42);
    const target = new IpamGossiper(new Ipam(new Allocator(Ring.seeded(RANGE, B, [A, B, C])), new Net().gossipFor(B)));
    let accepted = 0;
    for (let n = 0; n < 4000; n++) {
      const buf = good.slice(0, rnd() < 0.2 ? Math.floor(rnd() * good.length) : good.length);
      const flips = 1 + Math.floor(rnd() * 4);
      for (let k = 0; k < flips && buf.length > 0; k++) buf[Math.floor(rnd() * buf.length)] = Math.floor(rnd() * 256);
      try {
        target.onGossip(A, buf);
        accepted++;
      } catch (err) {
        expect(err instanceof ProtocolError || (err instanceof WeftError && err.code === 'EWEFT_CONFLICT')).toBe(true);
      }
    }
    expect(accepted).toBeLessThan(4000);
  });
});

describe('property: partitions and merges', () => {
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    it(`never two owners nor a duplicate allocation (seed ${seed})`, () => {
      const rnd = mulberry32(seed);
      const names = [p(1), p(2), p(3), p(4), p(5)];
      const seedList = names.slice(0, 3);
      const als = names.map(
        (n) => new Allocator(seedList.includes(n) ? Ring.seeded(RANGE, n, seedList) : new Ring(RANGE, n)),
      );
      let group = names.map(() => 0);
      let owners = 0;
      const pick = () => Math.floor(rnd() * names.length);
      for (let step = 0; step < 600; step++) {
        const x = rnd();
        const i = pick();
        const al = als[i]!;
        if (x < 0.35) {
          if (!al.ring.isEmpty()) al.allocate(`o${owners++}`);
        } else if (x < 0.45) {
          const held = al.allocations();
          if (held.length > 0) al.free(held[Math.floor(rnd() * held.length)]![1]);
        } else if (x < 0.6) {
          const j = pick();
          if (i !== j && group[i] === group[j] && !als[j]!.ring.isEmpty()) {
            als[j]!.donate(names[i]!, 1 + Math.floor(rnd() * 128));
            al.ring.merge(clone(als[j]!.ring.state()));
          }
        } else if (x < 0.9) {
          const j = pick();
          if (group[i] === group[j]) al.ring.merge(clone(als[j]!.ring.state()));
        } else if (x < 0.95) {
          group = names.map(() => (rnd() < 0.5 ? 0 : 1));
        } else {
          group = names.map(() => 0);
        }
        assertNoDoubleOwner(als.map((a) => a.ring));
        const seen = new Map<number, PeerName>();
        for (const a of als) {
          for (const [addr] of a.allocations()) {
            expect(seen.has(addr), `duplicate ${addr}`).toBe(false);
            seen.set(addr, a.self);
            expect(a.isOurs(addr)).toBe(true);
          }
        }
      }
      // heal: full exchange converges to one ring
      for (let round = 0; round < 2; round++)
        for (const a of als) for (const b of als) a.ring.merge(clone(b.ring.state()));
      for (const a of als) expect(a.ring.state()).toEqual(als[0]!.ring.state());
      expect(als.map((a) => a.ring.ownedBy(a.self)).reduce((s, n) => s + n)).toBe(1024);
    });
  }
});
