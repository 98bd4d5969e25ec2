import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import { WeftError } from '../../common/errors.js';
import { type Cidr, cidrNetwork, type IPv4, type PeerName, parseCidr, parseIPv4 } from '../../common/types.js';
import { mulberry32 } from '../testing/gossip-sim.js';
import { Allocator, type Block } from './allocator.js';
import { Ring, type RingState, type Span } from './ring.js';

const p = (n: number) => `02:00:00:00:00:${n.toString(16).padStart(2, '0')}` as PeerName;
const A = p(1);
const B = p(2);
const C = p(3);
const D = p(4);

function clone(s: RingState): RingState {
  return { range: s.range, seedId: s.seedId, tokens: s.tokens.map((t) => ({ ...t })) };
}

/** code returns the WeftError code fn throws, or undefined if it returns. */
function code(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    if (err instanceof WeftError) return err.code;
    throw err;
  }
}

/**
 * NaiveAllocator is the reference model: the allocator's documented behaviour written the obvious
 * way, address by address, with no index. It keeps its own copy of the ring; the test applies
 * every ring change to both.
 */
class NaiveAllocator {
  readonly held = new Map<number, string>();
  /** byOwner keeps each owner's addresses in the order they were taken (allocate returns the first match). */
  readonly byOwner = new Map<string, number[]>();

  constructor(readonly ring: Ring) {}

  isOurs(a: number): boolean {
    return this.ring.ownerOf(a) === this.ring.self;
  }

  allocate(owner: string, subnet?: Cidr): IPv4 | undefined {
    const net = subnet === undefined ? this.ring.range : { addr: cidrNetwork(subnet), prefix: subnet.prefix };
    for (const a of this.byOwner.get(owner) ?? []) {
      if (a >= net.addr && a < net.addr + 2 ** (32 - net.prefix) && this.isOurs(a)) return a as IPv4;
    }
    const broadcast = net.addr + 2 ** (32 - net.prefix) - 1;
    for (let a = net.addr + 1; a < broadcast; a++) {
      if (this.isOurs(a) && !this.held.has(a)) {
        this.take(owner, a);
        return a as IPv4;
      }
    }
    return undefined;
  }

  /** claim returns the error code the allocator must throw, or undefined. */
  claim(owner: string, a: number): string | undefined {
    if (!this.isOurs(a)) return 'EWEFT_CONFLICT';
    const h = this.held.get(a);
    if (h !== undefined && h !== owner) return 'EWEFT_CONFLICT';
    if (h === undefined) this.take(owner, a);
    return undefined;
  }

  free(owner: string): number[] {
    const addrs = [...(this.byOwner.get(owner) ?? [])].sort((x, y) => x - y);
    for (const a of addrs) this.held.delete(a);
    this.byOwner.delete(owner);
    return addrs;
  }

  used(): number {
    let n = 0;
    for (const a of this.held.keys()) if (this.isOurs(a)) n++;
    return n;
  }

  freeRuns(): Span[] {
    const out: Span[] = [];
    for (const s of this.ring.rangesOf(this.ring.self)) {
      let start = -1;
      for (let a = s.start; a <= s.end; a++) {
        const free = a < s.end && !this.held.has(a);
        if (free && start < 0) start = a;
        if (!free && start >= 0) {
          out.push({ start, end: a, owner: this.ring.self });
          start = -1;
        }
      }
    }
    return out;
  }

  donate(requester: PeerName, want: number): Block | undefined {
    if (requester === this.ring.self) return undefined;
    const runs = this.freeRuns();
    if (runs.length === 0) return undefined;
    const total = runs.reduce((n, r) => n + r.end - r.start, 0);
    let run = runs[0]!;
    for (const r of runs) if (r.end - r.start > run.end - run.start) run = r;
    const cap = Math.min(Math.max(1, Math.floor(want)), Math.max(1, Math.floor(total / 2)));
    let k = 1;
    while (k * 2 <= cap) k *= 2;
    for (; k >= 1; k /= 2) {
      const a = Math.ceil(run.start / k) * k;
      if (a + k <= run.end) {
        this.ring.transfer(a, a + k, requester);
        this.refreshFree();
        return { start: a as IPv4, size: k };
      }
    }
    return undefined;
  }

  refreshFree(): boolean {
    let changed = false;
    this.ring.tokens().forEach((t, i) => {
      if (t.owner !== this.ring.self) return;
      let used = 0;
      for (const a of this.held.keys()) if (a >= t.start && a < this.ring.tokenEnd(i)) used++;
      if (this.ring.setFree(i, this.ring.tokenEnd(i) - t.start - used)) changed = true;
    });
    return changed;
  }

  allocations(): [number, string][] {
    return [...this.held.entries()].sort((x, y) => x[0] - y[0]);
  }

  private take(owner: string, a: number): void {
    this.held.set(a, owner);
    const list = this.byOwner.get(owner) ?? [];
    list.push(a);
    this.byOwner.set(owner, list);
  }
}

/** same is expect(actual).toEqual(expected), with a fast path for the usual case where they are equal. */
function same(actual: unknown, expected: unknown): void {
  if (!isDeepStrictEqual(actual, expected)) expect(actual).toEqual(expected);
}

/** checkSame asserts that the allocator and the model agree on everything observable. */
function checkSame(al: Allocator, model: NaiveAllocator): void {
  same(al.ring.state(), model.ring.state());
  const allocs = al.allocations();
  same(allocs, model.allocations());
  expect(al.used()).toBe(model.used());
  expect(al.freeCount()).toBe(al.owned() - model.used());
  same(al.freeRuns(), model.freeRuns());
  same(
    al.orphans(),
    model.allocations().filter(([a]) => !model.isOurs(a)),
  );
  // byOwner and byAddr agree: every owner's addresses are held by it, and nothing is held twice.
  const seen = new Set<number>();
  for (const owner of model.byOwner.keys()) {
    for (const a of al.lookup(owner)) {
      if (seen.has(a) || al.holder(a) !== owner) expect.fail(`${a} held twice, or not by ${owner}`);
      seen.add(a);
    }
  }
  expect(seen.size).toBe(allocs.length);
}

/** randomSubnet returns a prefix inside `range`, /range.prefix … /30, with random host bits set. */
function randomSubnet(rnd: () => number, range: Cidr): Cidr {
  const prefix = range.prefix + Math.floor(rnd() * (31 - range.prefix));
  return { addr: (range.addr + Math.floor(rnd() * 2 ** (32 - range.prefix))) as IPv4, prefix };
}

interface ModelCase {
  readonly name: string;
  readonly range: string;
  /** seed is the ring's seed list; we are always A. */
  readonly seed: readonly PeerName[];
  readonly steps: number;
  /** owners is the number of distinct owner keys used; more than the addresses we own fills our space. */
  readonly owners: number;
}

const CASES: readonly ModelCase[] = [
  { name: 'alone in a /22, few owners', range: '10.32.0.0/22', seed: [A], steps: 1000, owners: 40 },
  { name: 'alone in a /23, crowded', range: '10.32.0.0/23', seed: [A], steps: 1500, owners: 1000 },
  { name: 'one third of a /21, crowded', range: '10.32.0.0/21', seed: [B, A, C], steps: 1500, owners: 1000 },
  { name: 'alone in a /20, crowded', range: '10.32.0.0/20', seed: [A], steps: 1000, owners: 2000 },
  { name: 'alone in a /29', range: '10.32.0.0/29', seed: [A], steps: 300, owners: 12 },
  { name: 'half of a /26', range: '10.32.0.0/26', seed: [A, D], steps: 400, owners: 40 },
];

describe('Allocator against a naive model', () => {
  for (const c of CASES) {
    for (const seed of [1, 2, 3, 4]) {
      it(`${c.name}, seed ${seed}`, () => {
        const rnd = mulberry32(seed * 7919 + c.steps);
        const range = parseCidr(c.range);
        let al = new Allocator(Ring.seeded(range, A, c.seed));
        const model = new NaiveAllocator(Ring.seeded(range, A, c.seed));
        const owners = Array.from({ length: c.owners }, (_, i) => `owner-${i}`);
        const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
        const size = 2 ** (32 - range.prefix);
        for (let step = 0; step < c.steps; step++) {
          const x = rnd();
          if (x < 0.4) {
            // allocate, in the whole range or in a subnet
            const owner = pick(owners);
            const subnet = rnd() < 0.5 ? undefined : randomSubnet(rnd, range);
            const had = al.lookup(owner);
            const got = al.allocate(owner, subnet);
            expect(got).toBe(model.allocate(owner, subnet));
            // A new address (not one the owner already held, which may have been claimed) is ours,
            // inside the subnet, and neither its network nor its broadcast address.
            if (got !== undefined && !had.includes(got)) {
              const net = subnet ?? range;
              const first = cidrNetwork(net);
              const last = first + 2 ** (32 - net.prefix) - 1;
              expect(al.isOurs(got)).toBe(true);
              expect(got > first && got < last, `${got} is the network or broadcast address of the subnet`).toBe(true);
            }
          } else if (x < 0.5) {
            // claim: ours, foreign, taken by another, or outside the range
            const owner = pick(owners);
            const a = rnd() < 0.1 ? range.addr + size + Math.floor(rnd() * 16) : range.addr + Math.floor(rnd() * size);
            expect(code(() => al.claim(owner, a as IPv4))).toBe(model.claim(owner, a));
          } else if (x < 0.72) {
            const owner = pick(owners);
            expect(al.free(owner)).toEqual(model.free(owner));
          } else if (x < 0.8) {
            const requester = pick([A, B, C, D]);
            const want = 1 + Math.floor(rnd() * (size / 8));
            expect(al.donate(requester, want)).toEqual(model.donate(requester, want));
          } else if (x < 0.88) {
            expect(al.refreshFree()).toBe(model.refreshFree());
          } else if (x < 0.92) {
            // a peer takes a donated block back from us by rmpeer-ing the requester
            const back = pick([B, C, D]);
            expect(al.ring.rmpeer(back)).toBe(model.ring.rmpeer(back));
          } else if (x < 0.95) {
            // one of our tokens is lost (a donation we forgot, or an rmpeer of us): its allocations become orphans
            const mine = al.ring.tokens().filter((t) => t.owner === A);
            if (mine.length > 1) {
              const t = pick(mine);
              const other = clone(al.ring.state());
              const tokens = other.tokens.map((u) =>
                u.start === t.start ? { ...u, owner: D, version: u.version + 1 } : u,
              );
              al.ring.merge({ ...other, tokens });
              model.ring.merge(clone({ ...other, tokens }));
            }
          } else if (x < 0.97) {
            // restart from the persisted state
            al = Allocator.fromJSON(JSON.parse(JSON.stringify(al.toJSON())), { self: A, range });
            // the restored allocator knows each owner's addresses in address order
            for (const list of model.byOwner.values()) list.sort((u, v) => u - v);
          }
          // else: nothing, just check
          // Every call above already compared its result; the whole state is compared every few
          // steps (a divergence persists, so it is still caught) and at the end.
          if (step % 4 === 0) checkSame(al, model);
        }
        checkSame(al, model);
      });
    }
  }
});

describe('Allocator input checks', () => {
  const RANGE = parseCidr('10.32.0.0/22');

  it('refuses bad owner keys, leaving nothing behind', () => {
    const al = new Allocator(Ring.seeded(RANGE, A, [A]));
    for (const bad of ['', 'x'.repeat(257), '__proto__', 'constructor', undefined, 42, null]) {
      expect(code(() => al.allocate(bad as never))).toBe('EWEFT_INPUT');
      expect(code(() => al.claim(bad as never, parseIPv4('10.32.0.9')))).toBe('EWEFT_INPUT');
    }
    expect(al.allocations()).toEqual([]);
    expect(al.allocate('x'.repeat(256))).toBe(parseIPv4('10.32.0.1'));
    expect(al.free('unknown')).toEqual([]);
  });

  it('refuses subnets outside the range, larger than it, or smaller than a /30', () => {
    const al = new Allocator(Ring.seeded(RANGE, A, [A]));
    for (const s of ['10.0.0.0/24', '10.33.0.0/24', '10.32.0.0/21', '10.32.0.0/8', '10.32.1.0/31', '10.32.1.7/32']) {
      expect(
        code(() => al.allocate('c', parseCidr(s))),
        s,
      ).toBe('EWEFT_INPUT');
    }
    expect(al.allocations()).toEqual([]);
    // host bits in the subnet are ignored: 10.32.1.77/24 is 10.32.1.0/24
    expect(al.allocate('c', parseCidr('10.32.1.77/24'))).toBe(parseIPv4('10.32.1.1'));
    // the whole range as a subnet is allowed
    expect(al.allocate('d', RANGE)).toBe(parseIPv4('10.32.0.1'));
  });

  it('returns undefined for a subnet in another peer’s space, and claims nothing foreign', () => {
    const al = new Allocator(Ring.seeded(RANGE, A, [A, B]));
    expect(al.allocate('c', parseCidr('10.32.2.0/24'))).toBeUndefined();
    expect(() => al.claim('c', parseIPv4('10.32.2.9'))).toThrow(/owned by peer/);
    expect(() => al.claim('c', parseIPv4('10.32.4.0'))).toThrow(/outside the ipam range/);
    expect(al.allocations()).toEqual([]);
    // a subnet straddling both halves gets our part only
    expect(al.allocate('c', parseCidr('10.32.0.0/22'))).toBe(parseIPv4('10.32.0.1'));
    const top = new Allocator(Ring.seeded(RANGE, B, [A, B]));
    expect(top.allocate('c', parseCidr('10.32.0.0/22'))).toBe(parseIPv4('10.32.2.0'));
  });

  it('keeps allocations from a state file that lie outside the range as orphans', () => {
    const al = new Allocator(Ring.seeded(RANGE, A, [A]));
    al.allocate('c1');
    const json = { ...al.toJSON(), allocations: { c1: ['10.32.0.1'], far: ['10.40.0.1', '10.32.0.2'] } };
    const back = Allocator.fromJSON(json);
    expect(back.used()).toBe(2);
    expect(back.orphans()).toEqual([[parseIPv4('10.40.0.1'), 'far']]);
    expect(back.allocate('c2')).toBe(parseIPv4('10.32.0.3'));
    expect(back.free('far')).toEqual([parseIPv4('10.32.0.2'), parseIPv4('10.40.0.1')]);
    expect(back.orphans()).toEqual([]);
    expect(back.allocate('c3')).toBe(parseIPv4('10.32.0.2'));
  });
});

describe('Allocator at scale', () => {
  it('allocates 50,000 addresses of a /12 in order and reuses the lowest freed first', () => {
    const al = new Allocator(Ring.seeded(parseCidr('10.32.0.0/12'), A, [A]));
    const base = al.ring.base;
    const n = 50_000;
    for (let i = 0; i < n; i++) expect(al.allocate(`c${i}`)).toBe(base + 1 + i);
    expect(al.used()).toBe(n);
    expect(al.freeCount()).toBe(2 ** 20 - n);
    expect(al.allocate('c123')).toBe(base + 124); // idempotent
    for (const i of [40_000, 7, 1023, 1024, 31_999]) al.free(`c${i}`);
    for (const i of [7, 1023, 1024, 31_999, 40_000]) expect(al.allocate(`again${i}`)).toBe(base + 1 + i);
    expect(al.allocate('next')).toBe(base + 1 + n);
    expect(al.freeRuns()).toEqual([
      { start: base, end: base + 1, owner: A },
      { start: base + n + 2, end: base + 2 ** 20, owner: A },
    ]);
    // every other one freed: re-allocation fills the holes from the bottom
    for (let i = 0; i < n; i += 2) al.free(`c${i}`);
    // held: the 25,000 odd offsets (some by the 'again' keys), the even 1024 and 40000 ('again'), and 'next'
    expect(al.used()).toBe(n / 2 + 3);
    for (let i = 0; i < 512; i++) expect(al.allocate(`r${i}`)).toBe(base + 1 + 2 * i);
    expect(al.allocate('r512')).toBe(base + 1 + 1026); // offset 1024 is held by 'again1024'
    // a subnet in the middle of the busy part
    expect(al.allocate('s', parseCidr('10.32.100.0/24'))).toBe(parseIPv4('10.32.100.1'));
    expect(al.refreshFree()).toBe(true);
    expect(al.ring.tokens()[0]!.free).toBe(al.freeCount());
  });

  it('fills a /16 completely, then hands out exactly what is freed', () => {
    const al = new Allocator(Ring.seeded(parseCidr('10.32.0.0/16'), A, [A]));
    let n = 0;
    while (al.allocate(`c${n}`) !== undefined) n++;
    expect(n).toBe(2 ** 16 - 2); // all but the range's network and broadcast addresses
    expect(al.allocate('x', parseCidr('10.32.200.0/24'))).toBeUndefined();
    expect(al.freeRuns()).toEqual([
      { start: al.ring.base, end: al.ring.base + 1, owner: A },
      { start: al.ring.end - 1, end: al.ring.end, owner: A },
    ]);
    al.free('c51000');
    al.free('c100');
    expect(al.allocate('x', parseCidr('10.32.128.0/17'))).toBe(al.ring.base + 51_001);
    expect(al.allocate('y')).toBe(al.ring.base + 101);
    expect(al.allocate('z')).toBeUndefined();
    // donate takes the single free addresses that are left
    expect(al.donate(B, 64)).toEqual({ start: al.ring.base, size: 1 });
    expect(al.donate(B, 64)).toEqual({ start: al.ring.end - 1, size: 1 });
    expect(al.donate(B, 64)).toBeUndefined();
  });

  it('works at the top of a /8', () => {
    const al = new Allocator(Ring.seeded(parseCidr('10.0.0.0/8'), A, [A]));
    expect(al.allocate('a', parseCidr('10.255.255.252/30'))).toBe(parseIPv4('10.255.255.253'));
    expect(al.allocate('b', parseCidr('10.255.255.252/30'))).toBe(parseIPv4('10.255.255.254'));
    expect(al.allocate('c', parseCidr('10.255.255.252/30'))).toBeUndefined();
    al.claim('d', parseIPv4('10.255.255.255'));
    expect(al.used()).toBe(3);
    expect(al.freeRuns().at(-1)).toEqual({ start: parseIPv4('10.0.0.0'), end: parseIPv4('10.255.255.253'), owner: A });
  });
});
