import { Packr, Unpackr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { InputError, ProtocolError, WeftError } from '../common/errors.js';
import { mulberry32 } from '../common/random.js';
import { type IPv4, type PeerName, parseIPv4 } from '../common/types.js';
import {
  DNS_ENTRIES_MAX,
  DNS_EXTERN_OWNER,
  DNS_FORMAT,
  DNS_ORIGIN_ENTRIES_MAX,
  DNS_TOMBSTONE_TTL_MS,
  DnsGossiper,
  type DnsRecord,
  DnsRecords,
  type DnsRecordsOptions,
  type DnsSection,
  type DnsWireRecord,
  decodeDnsMessage,
  dnsNameProblem,
  encodeDnsMessage,
  normalizeDnsName,
} from './records.js';

// ---- Helpers ----

const peer = (n: number) => `02:00:00:00:00:${n.toString(16).padStart(2, '0')}` as PeerName;
const A = peer(1);
const B = peer(2);
const C = peer(3);
const OBSERVER = peer(200);

const NAMES = ['db.weft.local', 'web.weft.local', 'cache.weft.local', 'a.weft.local', 'b.weft.local'];
const ADDRS = [1, 2, 3, 4, 5].map((i) => parseIPv4(`10.32.0.${i}`));
const OWNERS = ['c1', 'c2', 'c3', DNS_EXTERN_OWNER];
const DB = 'db.weft.local';
const IP1 = parseIPv4('10.32.0.1');
const IP2 = parseIPv4('10.32.0.2');

interface Made {
  readonly r: DnsRecords;
  readonly time: { t: number };
}

function make(self: PeerName, incarnation = 1, extra: Partial<DnsRecordsOptions> = {}): Made {
  const time = { t: 0 };
  const r = new DnsRecords({ self, incarnation, now: () => time.t, ...extra });
  return { r, time };
}

const writeId = (e: DnsRecord) => `${e.origin}|${e.owner}|${e.name}|${e.addr}|${e.incarnation}|${e.version}`;
const keyOf = (e: DnsRecord) => `${e.origin}|${e.owner}|${e.name}|${e.addr}`;

function liveIds(r: DnsRecords): string[] {
  return r
    .entries()
    .filter((e) => !e.deleted)
    .map(writeId)
    .sort();
}

/** canonical is the state that matters: records and floors once every implied tombstone is collected. */
function canonical(m: Made): unknown {
  m.time.t += 1e12;
  m.r.gc();
  return { entries: m.r.entries(), origins: m.r.origins() };
}

/** checkIndexes compares the lookups with a naive recomputation from entries(). */
function checkIndexes(r: DnsRecords): void {
  const entries = r.entries();
  const live = entries.filter((e) => !e.deleted);
  const byName = new Map<string, Set<number>>();
  const byAddr = new Map<number, Set<string>>();
  for (const e of live) {
    if (!byName.has(e.name)) byName.set(e.name, new Set());
    byName.get(e.name)!.add(e.addr);
    if (!byAddr.has(e.addr)) byAddr.set(e.addr, new Set());
    byAddr.get(e.addr)!.add(e.name);
  }
  for (const n of new Set([...NAMES, ...byName.keys()])) {
    expect(r.lookupName(n)).toEqual([...(byName.get(n) ?? [])].sort((x, y) => x - y));
  }
  for (const a of new Set([...ADDRS, ...byAddr.keys()])) {
    expect(r.lookupAddr(a)).toEqual([...(byAddr.get(a) ?? [])].sort());
  }
  expect(r.liveCount).toBe(live.length);
  expect(r.size).toBe(entries.length);
  expect(r.origins().reduce((s, o) => s + o.records, 0)).toBe(entries.length);
}

function pick<T>(random: () => number, xs: readonly T[]): T {
  return xs[Math.floor(random() * xs.length)]!;
}

// ---- Simulation ----

interface History {
  /** live is the set of live write ids at the last observation. */
  live: Set<string>;
  /** gone holds write ids that were live and left: they must never come back. */
  gone: Set<string>;
  /** high is the highest (incarnation, version) ever held per record key. */
  high: Map<string, [number, number]>;
}

interface Host {
  readonly name: PeerName;
  rec: DnsRecords;
  /** offset is this host's clock minus the simulation's (skew, and jumps). */
  offset: number;
  hist: History;
}

interface Msg {
  readonly to: number;
  readonly payload: Uint8Array;
  readonly at: number;
}

interface SimOptions {
  readonly hosts?: number;
  readonly maxEntries?: number;
  readonly maxEntriesPerOrigin?: number;
  /** checkIndexes compares lookups with a naive recomputation at every observation (slower). */
  readonly checkIndexes?: boolean;
}

function newHistory(): History {
  return { live: new Set(), gone: new Set(), high: new Map() };
}

/**
 * Sim runs several hosts, each the origin of its own records and a replica of everyone's, over a
 * network that delays (up to well past the tombstone TTL), duplicates, reorders and loses
 * messages. Every host has its own clock: skewed by hours from the others, and jumping. After
 * every change at a host, `observe` checks that no record that left its live set comes back and
 * that nothing older than a copy it held is shown.
 */
class Sim {
  t = 0;
  readonly hosts: Host[] = [];
  queue: Msg[] = [];
  readonly random: () => number;
  private readonly opts: SimOptions;

  constructor(seed: number, opts: SimOptions = {}) {
    this.random = mulberry32(seed);
    this.opts = opts;
    for (let i = 0; i < (opts.hosts ?? 4); i++) {
      const h: Host = {
        name: peer(i + 1),
        rec: undefined as unknown as DnsRecords,
        offset: (this.random() - 0.5) * 6 * 3600_000,
        hist: newHistory(),
      };
      h.rec = this.newRecords(h, 1_700_000_000_000 + Math.floor(this.random() * 1e6), 0);
      this.hosts.push(h);
    }
  }

  private newRecords(h: Host, incarnation: number, clock: number): DnsRecords {
    return new DnsRecords({
      self: h.name,
      incarnation,
      clock,
      now: () => this.t + h.offset,
      ...(this.opts.maxEntries !== undefined ? { maxEntries: this.opts.maxEntries } : {}),
      ...(this.opts.maxEntriesPerOrigin !== undefined ? { maxEntriesPerOrigin: this.opts.maxEntriesPerOrigin } : {}),
    });
  }

  delay(): number {
    const x = this.random();
    if (x < 0.7) return this.random() * 2_000;
    if (x < 0.9) return this.random() * 60_000;
    return this.random() * 3 * DNS_TOMBSTONE_TTL_MS;
  }

  send(to: number, payload: Uint8Array): void {
    if (this.random() < 0.05) return; // lost
    this.queue.push({ to, payload, at: this.t + this.delay() });
    if (this.random() < 0.2) this.queue.push({ to, payload, at: this.t + this.delay() }); // duplicated
  }

  broadcast(from: number, payload: Uint8Array | undefined): void {
    if (payload === undefined) return;
    for (let i = 0; i < this.hosts.length; i++) if (i !== from) this.send(i, payload);
  }

  /** relay passes what was new on to two random other hosts, like the epidemic. */
  relay(from: number, payload: Uint8Array | undefined): void {
    if (payload === undefined) return;
    for (let k = 0; k < 2; k++) {
      const to = Math.floor(this.random() * this.hosts.length);
      if (to !== from) this.send(to, payload);
    }
  }

  deliverAt(index: number): void {
    const [m] = this.queue.splice(index, 1);
    if (m === undefined) return;
    const h = this.hosts[m.to]!;
    const out = h.rec.merge(m.payload);
    this.observe(h);
    this.relay(m.to, out);
  }

  observe(h: Host): void {
    const entries = h.rec.entries();
    const live = new Set<string>();
    for (const e of entries) {
      if (e.deleted) continue;
      const id = writeId(e);
      if (h.hist.gone.has(id)) throw new Error(`${h.name}: ${id} came back after it was removed`);
      const hi = h.hist.high.get(keyOf(e));
      if (hi !== undefined && (e.incarnation < hi[0] || (e.incarnation === hi[0] && e.version < hi[1]))) {
        throw new Error(`${h.name}: ${id} shown after a newer copy (${hi.join(',')}) was held`);
      }
      live.add(id);
    }
    for (const id of h.hist.live) if (!live.has(id)) h.hist.gone.add(id);
    h.hist.live = live;
    for (const e of entries) {
      const hi = h.hist.high.get(keyOf(e));
      if (hi === undefined || e.incarnation > hi[0] || (e.incarnation === hi[0] && e.version > hi[1])) {
        h.hist.high.set(keyOf(e), [e.incarnation, e.version]);
      }
    }
    if (this.opts.checkIndexes) checkIndexes(h.rec);
  }

  localOp(i: number): void {
    const h = this.hosts[i]!;
    const random = this.random;
    const owner = pick(random, OWNERS);
    let delta: Uint8Array | undefined;
    const x = random();
    try {
      if (x < 0.55) delta = h.rec.add(owner, pick(random, NAMES), pick(random, ADDRS));
      else if (x < 0.75) delta = h.rec.remove(owner);
      else if (x < 0.9) delta = h.rec.remove(owner, pick(random, NAMES));
      else delta = h.rec.remove(owner, undefined, pick(random, ADDRS));
    } catch (err) {
      // Only a full table may refuse a local add.
      if (!(err instanceof WeftError) || err.code !== 'EWEFT_UNAVAILABLE') throw err;
    }
    this.observe(h);
    this.broadcast(i, delta);
  }

  /**
   * restart replaces a host's DnsRecords, as a restarted router would: either in a new incarnation
   * with its clock reset, or in the same one with its clock restored; it re-adds a random part of
   * its live records (the containers that survived) and pushes its full state to a neighbour.
   */
  restart(i: number): void {
    const h = this.hosts[i]!;
    const old = h.rec;
    const survivors = old.entries().filter((e) => e.origin === h.name && !e.deleted && this.random() < 0.6);
    h.rec =
      this.random() < 0.6
        ? this.newRecords(h, old.incarnation + 1 + Math.floor(this.random() * 1000), 0)
        : this.newRecords(h, old.incarnation, old.clock);
    h.hist = newHistory();
    for (const e of survivors) {
      try {
        this.broadcast(i, h.rec.add(e.owner, e.name, e.addr));
      } catch (err) {
        if (!(err instanceof WeftError) || err.code !== 'EWEFT_UNAVAILABLE') throw err;
      }
    }
    this.observe(h);
    const to = (i + 1 + Math.floor(this.random() * (this.hosts.length - 1))) % this.hosts.length;
    this.send(to, h.rec.fullState());
  }

  step(): void {
    const random = this.random;
    const n = this.hosts.length;
    const x = random();
    if (x < 0.3) this.localOp(Math.floor(random() * n));
    else if (x < 0.55) {
      for (let k = 0; k < 3; k++) {
        const due = this.queue.map((m, idx) => [m, idx] as const).filter(([m]) => m.at <= this.t);
        if (due.length === 0) break;
        this.deliverAt(pick(random, due)[1]);
      }
    } else if (x < 0.68) {
      const from = Math.floor(random() * n);
      const to = (from + 1 + Math.floor(random() * (n - 1))) % n;
      this.send(to, this.hosts[from]!.rec.fullState());
    } else if (x < 0.83) {
      this.t += random() < 0.9 ? random() * 120_000 : random() * 2 * DNS_TOMBSTONE_TTL_MS;
    } else if (x < 0.95) {
      const h = pick(random, this.hosts);
      h.rec.gc();
      this.observe(h);
    } else if (x < 0.98) {
      // A clock jump, backwards or forwards, by up to two hours.
      pick(random, this.hosts).offset += (random() - 0.5) * 4 * 3600_000;
    } else this.restart(Math.floor(random() * n));
  }

  /** drain delivers everything still queued (and what it causes), in random order. */
  drain(): void {
    for (let guard = 0; this.queue.length > 0 && guard < 1_000_000; guard++) {
      this.deliverAt(Math.floor(this.random() * this.queue.length));
    }
  }

  /** antiEntropy exchanges full states between every pair until nothing changes, collecting at every turn. */
  antiEntropy(): void {
    const fingerprint = () => JSON.stringify(this.hosts.map((h) => [h.rec.entries(), h.rec.origins()]));
    for (let round = 0; round < 10; round++) {
      const before = fingerprint();
      for (let i = 0; i < this.hosts.length; i++) {
        for (let j = 0; j < this.hosts.length; j++) {
          if (i === j) continue;
          this.hosts[j]!.rec.merge(this.hosts[i]!.rec.fullState());
          this.observe(this.hosts[j]!);
        }
      }
      this.t += 2 * DNS_TOMBSTONE_TTL_MS + 1;
      for (const h of this.hosts) {
        h.rec.gc();
        this.observe(h);
      }
      if (fingerprint() === before) return;
    }
    throw new Error('anti-entropy did not reach a fixpoint');
  }

  /** truth is every host's own live records: what every replica must end up answering. */
  truth(): string[] {
    return this.hosts
      .flatMap((h) => h.rec.entries().filter((e) => e.origin === h.name && !e.deleted))
      .map(writeId)
      .sort();
  }
}

// ---- Names ----

describe('dns names', () => {
  it('normalizeDnsName lower-cases and strips one trailing dot', () => {
    expect(normalizeDnsName('DB.Weft.Local.')).toBe('db.weft.local');
    expect(normalizeDnsName('_svc.x-1.weft.local')).toBe('_svc.x-1.weft.local');
  });

  it('refuses empty labels, bad characters, long labels and long names', () => {
    for (const bad of ['', '.', 'a..b', '-a.b', 'a-.b', 'a b', 'a*.b', 'é.b', `${'a'.repeat(64)}.b`]) {
      expect(() => normalizeDnsName(bad), bad).toThrow(InputError);
    }
    const long = Array.from({ length: 64 }, () => 'abc').join('.'); // 255 characters
    expect(dnsNameProblem(long)).toBeDefined();
    expect(dnsNameProblem(long.slice(0, 253))).toBeUndefined();
    expect(dnsNameProblem('Upper.case')).toBeDefined();
    expect(dnsNameProblem('trailing.dot.')).toBeDefined();
  });
});

// ---- Local operations and lookups ----

describe('DnsRecords local operations', () => {
  it('answers every address of a shared name, deduplicated, and names for an address', () => {
    const { r } = make(A);
    r.add('c1', DB, IP1);
    r.add('c2', 'DB.weft.local.', IP2);
    r.add(DNS_EXTERN_OWNER, DB, IP1);
    r.add('c2', 'web.weft.local', IP2);
    expect(r.lookupName(DB)).toEqual([IP1, IP2]);
    expect(r.lookupAddr(IP2)).toEqual([DB, 'web.weft.local']);
    expect(r.lookupName('nope.weft.local')).toEqual([]);
    expect(r.liveCount).toBe(4);
    checkIndexes(r);
  });

  it('remove by owner, by name and by address writes tombstones and returns them as the delta', () => {
    const { r } = make(A);
    r.add('c1', DB, IP1);
    r.add('c1', 'web.weft.local', IP1);
    r.add('c1', 'web.weft.local', IP2);
    r.add('c2', DB, IP2);
    const byAddr = decodeDnsMessage(r.remove('c1', undefined, IP2)!);
    expect(byAddr[0]!.records.map((x) => [x.name, x.addr, x.deleted])).toEqual([['web.weft.local', IP2, true]]);
    const byName = decodeDnsMessage(r.remove('c1', 'WEB.weft.local')!);
    expect(byName[0]!.records).toHaveLength(1);
    expect(r.lookupName(DB)).toEqual([IP1, IP2]);
    const all = decodeDnsMessage(r.remove('c1')!);
    expect(all[0]!.records.map((x) => x.name)).toEqual([DB]);
    expect(r.lookupName(DB)).toEqual([IP2]);
    expect(r.remove('c1')).toBeUndefined();
    expect(r.remove('nobody')).toBeUndefined();
    expect(r.clock).toBe(7);
    checkIndexes(r);
  });

  it('version and onChange move only when the live set changes; lookups are cached until then', () => {
    let changes = 0;
    const { r } = make(A, 1, { onChange: () => changes++ });
    const v0 = r.version;
    r.add('c1', DB, IP1);
    const first = r.lookupName(DB);
    expect(r.lookupName(DB)).toBe(first);
    expect(Object.isFrozen(first)).toBe(true);
    expect(r.add('c1', DB, IP1)).toBeUndefined(); // already live
    expect(r.remove('c2')).toBeUndefined();
    expect(r.version).toBe(v0 + 1);
    expect(changes).toBe(1);
    r.add('c2', DB, IP2);
    expect(r.lookupName(DB)).not.toBe(first);
    expect(r.version).toBe(v0 + 2);
    expect(changes).toBe(2);
  });

  it('refuses bad input with InputError and a full table with EWEFT_UNAVAILABLE, counted', () => {
    const { r } = make(A, 1, { maxEntries: 2 });
    expect(() => r.add('c1', 'bad..name', IP1)).toThrow(InputError);
    expect(() => r.add('', DB, IP1)).toThrow(InputError);
    expect(() => r.add('c\u0000', DB, IP1)).toThrow(InputError);
    expect(() => r.add('c1', DB, 2 ** 32)).toThrow(InputError);
    expect(() => r.add('c1', DB, -1)).toThrow(InputError);
    r.add('c1', DB, IP1);
    r.add('c1', DB, IP2);
    let err: unknown;
    try {
      r.add('c1', 'web.weft.local', IP1);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(WeftError);
    expect((err as WeftError).code).toBe('EWEFT_UNAVAILABLE');
    expect(r.stats.overflow).toBe(1);
    // Our own tombstones are implied at once (our floor is our clock): they make room even before the TTL.
    r.remove('c1', DB, IP2);
    expect(r.add('c1', 'web.weft.local', IP1)).toBeDefined();
    expect(r.size).toBe(2);
  });

  it('refuses an invalid incarnation or clock', () => {
    expect(() => make(A, -1)).toThrow(InputError);
    expect(() => make(A, 1.5)).toThrow(InputError);
    expect(() => make(A, Number.MAX_SAFE_INTEGER)).toThrow(InputError);
    expect(() => make(A, 1, { clock: -1 })).toThrow(InputError);
  });
});

// ---- Merge ----

describe('DnsRecords merge', () => {
  it('spreads adds and removals; a duplicate or an older copy changes nothing', () => {
    const a = make(A).r;
    const c = make(C).r;
    const add = a.add('c1', DB, IP1)!;
    expect(c.merge(add)).toBeDefined();
    expect(c.lookupName(DB)).toEqual([IP1]);
    expect(c.merge(add)).toBeUndefined();
    const del = a.remove('c1')!;
    expect(c.merge(del)).toBeDefined();
    expect(c.lookupName(DB)).toEqual([]);
    expect(c.merge(add)).toBeUndefined();
    expect(c.lookupName(DB)).toEqual([]);
    expect(c.stats.stale).toBe(1);
  });

  it('keeps one name+address from several origins apart: removing one copy leaves the other', () => {
    const a = make(A).r;
    const b = make(B).r;
    const c = make(C).r;
    c.merge(a.add('c1', DB, IP1)!);
    c.merge(b.add('c9', DB, IP1)!);
    expect(c.lookupName(DB)).toEqual([IP1]);
    expect(c.liveCount).toBe(2);
    c.merge(b.remove('c9')!);
    expect(c.lookupName(DB)).toEqual([IP1]);
    c.merge(a.remove('c1')!);
    expect(c.lookupName(DB)).toEqual([]);
    checkIndexes(c);
  });

  it('a tombstone received before its add wins, whatever the order', () => {
    const a = make(A).r;
    const add = a.add('c1', DB, IP1)!;
    const del = a.remove('c1')!;
    const c = make(C).r;
    c.merge(del);
    expect(c.merge(add)).toBeUndefined();
    expect(c.lookupName(DB)).toEqual([]);
  });

  it('an equal version with different contents resolves to the tombstone everywhere', () => {
    const live: DnsWireRecord = { owner: 'c1', name: DB, addr: IP1, version: 3, deleted: false };
    const dead: DnsWireRecord = { ...live, deleted: true };
    const msg = (rec: DnsWireRecord) => encodeDnsMessage([{ origin: A, incarnation: 1, floor: 0, records: [rec] }]);
    const x = make(B).r;
    const y = make(C).r;
    x.merge(msg(live));
    x.merge(msg(dead));
    y.merge(msg(dead));
    y.merge(msg(live));
    expect(x.entries()).toEqual(y.entries());
    expect(x.entries()[0]!.deleted).toBe(true);
  });

  it('a full state drops the records its sender proves overwritten (no tombstone needed)', () => {
    const a = make(A);
    const c = make(C).r;
    c.merge(a.r.add('c1', DB, IP1)!);
    a.r.remove('c1'); // the tombstone delta is lost
    a.time.t += DNS_TOMBSTONE_TTL_MS;
    a.r.gc(); // and A has forgotten the tombstone
    c.merge(a.r.fullState());
    expect(c.lookupName(DB)).toEqual([]);
    expect(c.stats.superseded).toBe(1);
    expect(c.origins().find((o) => o.origin === A)!.floor).toBe(2);
  });

  it('a restarted origin in a new incarnation supersedes all its old records', () => {
    const a1 = make(A, 100).r;
    const c = make(C).r;
    const oldAdd = a1.add('c1', DB, IP1)!;
    c.merge(oldAdd);
    c.merge(a1.add('c2', 'web.weft.local', IP2)!);
    const oldState = a1.fullState();
    const a2 = make(A, 200).r; // forgot its clock; only c1 survived
    c.merge(a2.add('c1', DB, IP1)!);
    expect(c.lookupName(DB)).toEqual([IP1]);
    expect(c.lookupName('web.weft.local')).toEqual([]);
    expect(c.merge(oldState)).toBeUndefined();
    expect(c.merge(oldAdd)).toBeUndefined();
    expect(liveIds(c)).toEqual([`${A}|c1|${DB}|${IP1}|200|1`]);
    // A restart with no records at all supersedes too: its full state always carries its incarnation.
    const a3 = make(A, 300).r;
    const relayed = c.merge(a3.fullState());
    expect(c.lookupName(DB)).toEqual([]);
    const d = make(B).r;
    d.merge(a2.fullState());
    d.merge(relayed!);
    expect(d.liveCount).toBe(0);
  });

  it('a restart that kept its clock in the same incarnation continues it', () => {
    const a1 = make(A, 7).r;
    const c = make(C).r;
    c.merge(a1.add('c1', DB, IP1)!);
    c.merge(a1.add('c2', DB, IP2)!);
    c.merge(a1.fullState()); // C's floor for A is now A's clock
    const a2 = make(A, 7, { clock: a1.clock }).r;
    expect(a2.clock).toBe(a1.clock + 1); // the restart itself takes a version
    c.merge(a2.add('c2', DB, IP2)!);
    c.merge(a2.fullState()); // c1 did not survive: A's full state proves it
    expect(c.lookupName(DB)).toEqual([IP2]);
    a2.merge(c.fullState());
    expect(a2.stats.selfConflicts).toBe(0); // C's copies of ours are no newer than our clock
    expect(a2.incarnation).toBe(7);
  });

  it('copies of our records newer than our clock make us re-stamp ours in a new incarnation', () => {
    const a1 = make(A, 5).r;
    const c = make(C).r;
    c.merge(a1.add('c1', DB, IP1)!);
    c.merge(a1.add('c2', DB, IP2)!);
    c.merge(a1.remove('c2')!);
    const a2 = make(A, 5).r; // restarted in the same incarnation but lost its clock: a fault
    c.merge(a2.add('c9', 'web.weft.local', IP1)!); // version 1 again: ignored as stale by C
    const out = a2.merge(c.fullState());
    expect(a2.stats.selfConflicts).toBe(1);
    expect(a2.incarnation).toBe(6);
    expect(a2.lookupName('web.weft.local')).toEqual([IP1]);
    c.merge(out!);
    expect(c.lookupName(DB)).toEqual([]);
    expect(c.lookupName('web.weft.local')).toEqual([IP1]);
    expect(a2.merge(c.fullState())).toBeUndefined();
  });

  it('merge is commutative, associative and idempotent over random replica states', () => {
    for (let seed = 1; seed <= 40; seed++) {
      const sim = new Sim(seed, { hosts: 4 });
      for (let i = 0; i < 150; i++) sim.step();
      const states = sim.hosts.map((h) => h.rec.fullState());
      // Half-delivered states too: what a replica holds while messages are in flight.
      sim.drain();
      states.push(...sim.hosts.map((h) => h.rec.fullState()));
      const random = sim.random;
      const join = (...parts: Uint8Array[]): Made => {
        const m = make(OBSERVER);
        for (const p of parts) m.r.merge(p);
        return m;
      };
      for (let k = 0; k < 6; k++) {
        const [x, y, z] = [pick(random, states), pick(random, states), pick(random, states)];
        expect(canonical(join(x, y)), `seed ${seed}: commutative`).toEqual(canonical(join(y, x)));
        const left = join(join(x, y).r.fullState(), z);
        const right = join(x, join(y, z).r.fullState());
        expect(canonical(left), `seed ${seed}: associative`).toEqual(canonical(right));
        const once = join(x);
        expect(once.r.merge(x), `seed ${seed}: idempotent`).toBeUndefined();
        expect(canonical(once)).toEqual(canonical(join(x, x)));
      }
    }
  });
});

// ---- Tombstones, clocks ----

describe('DnsRecords tombstone GC', () => {
  it('drops an implied tombstone after the TTL on the local clock; the stale add is then refused', () => {
    const a = make(A).r;
    const q = make(C);
    const add = a.add('c1', DB, IP1)!;
    const del = a.remove('c1')!;
    q.r.merge(del);
    q.r.merge(a.fullState()); // floor 2: the tombstone is implied
    q.time.t += DNS_TOMBSTONE_TTL_MS - 1;
    expect(q.r.gc()).toBe(0);
    q.time.t += 1;
    expect(q.r.gc()).toBe(1);
    expect(q.r.size).toBe(0);
    expect(q.r.merge(add)).toBeUndefined();
    // A lagging replica that only ever saw the add sends its full state: refused as well.
    const lagging = make(B).r;
    lagging.merge(add);
    q.r.merge(lagging.fullState());
    expect(q.r.lookupName(DB)).toEqual([]);
    expect(q.r.entries().filter((e) => e.origin === A)).toEqual([]);
  });

  it('keeps a tombstone above the floor however far the clock moves, so nothing comes back', () => {
    const a = make(A).r;
    const q = make(C);
    const add = a.add('c1', DB, IP1)!;
    q.r.merge(a.remove('c1')!);
    for (const jump of [DNS_TOMBSTONE_TTL_MS * 100, -1e9, 1e12]) {
      q.time.t += jump;
      expect(q.r.gc()).toBe(0);
    }
    expect(q.r.merge(add)).toBeUndefined();
    expect(q.r.lookupName(DB)).toEqual([]);
  });

  it('hosts with clocks hours apart, one jumping back, agree and resurrect nothing', () => {
    const a = make(A);
    const b = make(B);
    const c = make(C);
    a.time.t = 5 * 3600_000;
    b.time.t = -3 * 3600_000;
    const add = a.r.add('c1', DB, IP1)!;
    b.r.merge(add);
    c.r.merge(add);
    const del = a.r.remove('c1')!;
    b.r.merge(del);
    c.r.merge(del);
    for (const m of [a, b, c]) m.r.merge(a.r.fullState());
    b.time.t -= 10 * 3600_000; // b's clock goes back: its tombstone just lives longer
    c.time.t += DNS_TOMBSTONE_TTL_MS;
    for (const m of [a, b, c]) m.r.gc();
    expect(b.r.size).toBe(1);
    expect(c.r.size).toBe(0);
    for (const m of [b, c]) {
      m.r.merge(add);
      expect(m.r.lookupName(DB)).toEqual([]);
    }
  });
});

// ---- dropOrigin ----

describe('DnsRecords dropOrigin', () => {
  it('forgets a peer gone for good and refuses its records in that incarnation, but not a newer one', () => {
    const a = make(A, 10).r;
    const b = make(B).r;
    const c = make(C).r;
    const add = a.add('c1', DB, IP1)!;
    c.merge(add);
    b.merge(add);
    const v = c.version;
    expect(c.dropOrigin(A)).toBe(1);
    expect(c.version).toBe(v + 1);
    expect(c.lookupName(DB)).toEqual([]);
    expect(c.origins().find((o) => o.origin === A)).toMatchObject({ dropped: true, incarnation: 10, records: 0 });
    expect(c.merge(add)).toBeUndefined();
    c.merge(b.fullState()); // B's own (empty) section is news; its copy of A's record is refused
    expect(c.merge(a.add('c2', DB, IP2)!)).toBeUndefined();
    expect(c.lookupName(DB)).toEqual([]);
    expect(c.stats.droppedOrigin).toBe(3);
    expect(c.fullState().length).toBeLessThan(b.fullState().length); // dropped origins are not gossiped
    const back = make(A, 11).r;
    c.merge(back.add('c1', DB, IP2)!);
    expect(c.lookupName(DB)).toEqual([IP2]);
  });

  it('with an incarnation given, refuses a peer we never heard from; never drops ourselves', () => {
    const c = make(C).r;
    expect(c.dropOrigin(A, 50)).toBe(0);
    expect(c.merge(make(A, 50).r.add('c1', DB, IP1)!)).toBeUndefined();
    expect(c.merge(make(A, 49).r.add('c1', DB, IP1)!)).toBeUndefined();
    expect(c.lookupName(DB)).toEqual([]);
    expect(() => c.dropOrigin(C)).toThrow(InputError);
  });
});

// ---- Bounds ----

describe('DnsRecords bounds', () => {
  it('refuses and counts records beyond the caps without throwing, and claims no floor past a hole', () => {
    const a = make(A).r;
    for (let i = 0; i < 8; i++) a.add('c1', `h${i}.weft.local`, IP1);
    const c = make(C, 1, { maxEntriesPerOrigin: 5 }).r;
    expect(() => c.merge(a.fullState())).not.toThrow();
    expect(c.liveCount).toBe(5);
    expect(c.stats.overflow).toBe(3);
    const floor = c.origins().find((o) => o.origin === A)!.floor;
    expect(floor).toBeLessThan(a.clock);
    // What C passes on never claims more than it holds.
    const d = make(B).r;
    d.merge(c.fullState());
    expect(d.liveCount).toBe(5);
    d.merge(a.fullState());
    expect(d.liveCount).toBe(8);
    checkIndexes(c);
  });

  it('caps the total over all origins and the number of origins', () => {
    const c = make(C, 1, { maxEntries: 4, maxOrigins: 3 }).r;
    for (let i = 10; i < 14; i++) {
      const o = make(peer(i)).r;
      o.add('c1', DB, parseIPv4(`10.32.1.${i}`));
      o.add('c2', DB, parseIPv4(`10.32.2.${i}`));
      c.merge(o.fullState());
    }
    expect(c.origins()).toHaveLength(3); // ourselves and two others
    expect(c.size).toBe(4);
    expect(c.stats.overflow).toBe(4);
    checkIndexes(c);
  });
});

// ---- Properties ----

describe('DnsRecords under skewed clocks, reordering, duplicates, loss and restarts', () => {
  it('all replicas converge to the origins live records and no removed record ever reappears', () => {
    for (let seed = 1; seed <= 60; seed++) {
      const sim = new Sim(seed * 7919, { hosts: 5 });
      for (let i = 0; i < 400; i++) sim.step();
      sim.drain();
      sim.antiEntropy();
      const truth = sim.truth();
      for (const h of sim.hosts) expect(liveIds(h.rec), `seed ${seed} host ${h.name}`).toEqual(truth);
      // Clocks that jumped back keep tombstones longer; far enough ahead, every implied one goes.
      sim.t += 1e12;
      for (const h of sim.hosts) h.rec.gc();
      const first = sim.hosts[0]!.rec;
      for (const h of sim.hosts) {
        expect(h.rec.entries(), `seed ${seed}`).toEqual(first.entries());
        expect(h.rec.origins().map((o) => [o.origin, o.incarnation, o.floor])).toEqual(
          first.origins().map((o) => [o.origin, o.incarnation, o.floor]),
        );
      }
    }
  });

  it('keeps lookups and indexes equal to a naive recomputation after every change', () => {
    for (let seed = 1; seed <= 10; seed++) {
      const sim = new Sim(seed, { hosts: 3, checkIndexes: true });
      for (let i = 0; i < 300; i++) sim.step();
      sim.drain();
      sim.antiEntropy();
      for (const h of sim.hosts) {
        h.rec.dropOrigin(sim.hosts[(sim.hosts.indexOf(h) + 1) % 3]!.name);
        checkIndexes(h.rec);
      }
    }
  });

  // 30 seeded simulations: ~4 s alone, 27 s measured on a machine running two CPU-bound benches.
  it('with tiny caps: never throws, never resurrects, and converges once the records fit', () => {
    for (let seed = 1; seed <= 30; seed++) {
      const sim = new Sim(seed * 31, { hosts: 4, maxEntries: 14, maxEntriesPerOrigin: 6, checkIndexes: true });
      for (let i = 0; i < 300; i++) sim.step();
      sim.drain();
      sim.antiEntropy();
      const truth = sim.truth();
      if (truth.length <= 14 - 4) {
        // Room for every live record (tombstones are collected once implied): all agree.
        for (const h of sim.hosts) expect(liveIds(h.rec), `seed ${seed}`).toEqual(truth);
      }
    }
  }, 60_000);
});

// ---- Wire ----

function randomSections(random: () => number, n: number): DnsSection[] {
  const out: DnsSection[] = [];
  for (let i = 0; i < n; i++) {
    const records: DnsWireRecord[] = [];
    const seen = new Set<string>();
    const count = Math.floor(random() * 6);
    for (let k = 0; k < count; k++) {
      const rec = {
        owner: pick(random, OWNERS),
        name: pick(random, NAMES),
        addr: Math.floor(random() * 2 ** 32) as IPv4,
        version: 1 + Math.floor(random() * 1e9),
        deleted: random() < 0.3,
      };
      const key = `${rec.owner}/${rec.name}/${rec.addr}`;
      if (!seen.has(key)) {
        seen.add(key);
        records.push(rec);
      }
    }
    out.push({
      origin: peer(i + 1),
      incarnation: Math.floor(random() * 2 ** 50),
      floor: Math.floor(random() * 1e9),
      records,
    });
  }
  return out;
}

const byOwner = (a: DnsWireRecord, b: DnsWireRecord) =>
  a.owner < b.owner ? -1 : a.owner > b.owner ? 1 : a.name < b.name ? -1 : a.name > b.name ? 1 : a.addr - b.addr;

describe('dns wire form', () => {
  const packr = new Packr({ useRecords: false, moreTypes: false });
  const pack = (v: unknown) => new Uint8Array(packr.pack(v));
  const name6 = new Uint8Array([2, 0, 0, 0, 0, 1]);
  const good = () => [DNS_FORMAT, [[name6, 1, 0, [['c1', [[DB, IP1, 1, false]]]]]]];

  it('round-trips random sections', () => {
    const random = mulberry32(42);
    for (let i = 0; i < 200; i++) {
      const sections = randomSections(random, Math.floor(random() * 5));
      const back = decodeDnsMessage(encodeDnsMessage(sections));
      expect(back.map((s) => ({ ...s, records: [...s.records].sort(byOwner) }))).toEqual(
        sections.map((s) => ({ ...s, records: [...s.records].sort(byOwner) })),
      );
    }
    expect(decodeDnsMessage(pack(good()))[0]!.origin).toBe(A);
  });

  it('refuses each malformed or out-of-bounds field with ProtocolError', () => {
    const cases: [string, (m: unknown[]) => unknown][] = [
      ['format', (m) => [2, m[1]]],
      ['peer length', () => [DNS_FORMAT, [[new Uint8Array(5), 1, 0, []]]]],
      ['negative incarnation', () => [DNS_FORMAT, [[name6, -1, 0, []]]]],
      ['unsafe incarnation', () => [DNS_FORMAT, [[name6, 2 ** 53, 0, []]]]],
      ['fractional floor', () => [DNS_FORMAT, [[name6, 1, 0.5, []]]]],
      ['version 0', () => [DNS_FORMAT, [[name6, 1, 0, [['c1', [[DB, IP1, 0, false]]]]]]]],
      ['address > u32', () => [DNS_FORMAT, [[name6, 1, 0, [['c1', [[DB, 2 ** 32, 1, false]]]]]]]],
      ['upper-case name', () => [DNS_FORMAT, [[name6, 1, 0, [['c1', [['DB.weft.local', IP1, 1, false]]]]]]]],
      ['long label', () => [DNS_FORMAT, [[name6, 1, 0, [['c1', [[`${'a'.repeat(64)}.x`, IP1, 1, false]]]]]]]],
      ['long name', () => [DNS_FORMAT, [[name6, 1, 0, [['c1', [[`${'abc.'.repeat(63)}abc`, IP1, 1, false]]]]]]]],
      ['empty owner', () => [DNS_FORMAT, [[name6, 1, 0, [['', [[DB, IP1, 1, false]]]]]]]],
      ['empty owner group', () => [DNS_FORMAT, [[name6, 1, 0, [['c1', []]]]]]],
      ['deleted not boolean', () => [DNS_FORMAT, [[name6, 1, 0, [['c1', [[DB, IP1, 1, 0]]]]]]]],
      ['extra field', () => [DNS_FORMAT, [[name6, 1, 0, [['c1', [[DB, IP1, 1, false, 9]]]]]]]],
      [
        'origin twice',
        () => [
          DNS_FORMAT,
          [
            [name6, 1, 0, []],
            [name6, 2, 0, []],
          ],
        ],
      ],
      ['not an array', () => ({ a: 1 })],
    ];
    for (const [what, f] of cases) {
      expect(() => decodeDnsMessage(pack(f(good()))), what).toThrow(ProtocolError);
    }
    expect(() => decodeDnsMessage(new Uint8Array(0))).toThrow(ProtocolError);
    expect(() => decodeDnsMessage(new Uint8Array([0xc1]))).toThrow(ProtocolError);
  });

  it('refuses a section over the per-origin bound and a message over the total bound', () => {
    // Two owners, so each group stays within its own bound and the section total is what overflows.
    const recs = (n: number, tag: string) =>
      ['c1', 'c2'].map((owner, k) => [
        owner,
        Array.from({ length: n / 2 }, (_, i) => [`${tag}${i}.weft.local`, i, k * n + i + 1, false]),
      ]);
    const big = [DNS_FORMAT, [[name6, 1, 0, recs(DNS_ORIGIN_ENTRIES_MAX + 2, 'h')]]];
    expect(() => decodeDnsMessage(pack(big))).toThrow(/records \(max/);
    const sections = Math.ceil((DNS_ENTRIES_MAX + 1) / DNS_ORIGIN_ENTRIES_MAX);
    const many = [
      DNS_FORMAT,
      Array.from({ length: sections }, (_, i) => [
        new Uint8Array([2, 0, 0, 0, 1, i]),
        1,
        0,
        recs(DNS_ORIGIN_ENTRIES_MAX, 'h'),
      ]),
    ];
    expect(() => decodeDnsMessage(pack(many))).toThrow(/more than/);
  });

  it('10,000+ fuzzed and mutated payloads only ever throw ProtocolError, and a refusal changes nothing', () => {
    const random = mulberry32(7);
    const sim = new Sim(99, { hosts: 4 });
    for (let i = 0; i < 200; i++) sim.step();
    const seeds: Uint8Array[] = sim.hosts.map((h) => h.rec.fullState());
    seeds.push(encodeDnsMessage(randomSections(random, 4)), pack(good()));
    const base = seeds[0]!;
    const fresh = () => {
      const m = make(OBSERVER, 3);
      m.r.merge(base);
      return m.r;
    };
    let target = fresh();
    const fingerprint = (r: DnsRecords) => JSON.stringify([r.entries(), r.origins(), r.version, r.stats]);
    let before = fingerprint(target);
    const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, structuredClone: false, moreTypes: false });
    let refused = 0;
    let accepted = 0;

    const randomValue = (depth: number): unknown => {
      const x = random();
      if (depth > 3 || x < 0.15) return Math.floor(random() * 2 ** 32) * (random() < 0.2 ? -1 : 1);
      if (x < 0.25) return random() * 1e6;
      if (x < 0.35) return pick(random, [DB, '', 'X', 'a'.repeat(300), 'c1', true, false, null]);
      if (x < 0.45) return new Uint8Array(Math.floor(random() * 8));
      if (x < 0.55) return { k: randomValue(depth + 1) };
      if (x < 0.6) return 2 ** 60;
      return Array.from({ length: Math.floor(random() * 5) }, () => randomValue(depth + 1));
    };
    /** mutateTree replaces one random node of an unpacked message with a random value. */
    const mutateTree = (v: unknown): unknown => {
      if (!Array.isArray(v) || v.length === 0 || random() < 0.25) return randomValue(0);
      const copy = [...v];
      const i = Math.floor(random() * copy.length);
      copy[i] = mutateTree(copy[i]);
      if (random() < 0.1) copy.push(randomValue(1));
      return copy;
    };
    const mutateBytes = (b: Uint8Array): Uint8Array => {
      const x = random();
      if (x < 0.4) {
        const out = new Uint8Array(b);
        for (let k = 1 + Math.floor(random() * 4); k > 0; k--) {
          out[Math.floor(random() * out.length)] = Math.floor(random() * 256);
        }
        return out;
      }
      if (x < 0.6) return b.slice(0, Math.floor(random() * b.length));
      if (x < 0.8) {
        const at = Math.floor(random() * b.length);
        const junk = Uint8Array.from({ length: 1 + Math.floor(random() * 8) }, () => Math.floor(random() * 256));
        return Uint8Array.from([...b.subarray(0, at), ...junk, ...b.subarray(at)]);
      }
      const other = pick(random, seeds);
      return Uint8Array.from([
        ...b.subarray(0, Math.floor(random() * b.length)),
        ...other.subarray(Math.floor(random() * other.length)),
      ]);
    };

    const N = 12_000;
    for (let i = 0; i < N; i++) {
      const src = pick(random, seeds);
      const x = random();
      const payload =
        x < 0.6 ? mutateBytes(src) : x < 0.9 ? pack(mutateTree(unpackr.unpack(src))) : pack(randomValue(0));
      try {
        target.merge(payload);
        accepted++;
        target = fresh();
        before = fingerprint(target);
      } catch (err) {
        if (!(err instanceof ProtocolError)) {
          throw new Error(`payload ${i} threw ${String(err)}: ${Buffer.from(payload).toString('hex').slice(0, 200)}`);
        }
        refused++;
        expect(fingerprint(target)).toBe(before);
      }
    }
    expect(refused + accepted).toBe(N);
    expect(refused).toBeGreaterThan(N / 2);
  });
});

// ---- Gossiper ----

describe('DnsGossiper', () => {
  it('passes on only what was new, and what it passes on brings a third peer to the same records', () => {
    const a = make(A).r;
    const c = make(C).r;
    const d = make(B).r;
    const gc = new DnsGossiper(c);
    const delta = a.add('c1', DB, IP1)!;
    const relayed = gc.onGossip(A, delta);
    expect(relayed).toBeDefined();
    expect(gc.onGossip(A, delta)).toBeUndefined();
    new DnsGossiper(d).onGossip(C, relayed!);
    expect(d.lookupName(DB)).toEqual([IP1]);
    gc.onGossipUnicast(A, a.remove('c1')!);
    expect(c.lookupName(DB)).toEqual([]);
    expect(() => gc.onGossip(A, new Uint8Array([1, 2, 3]))).toThrow(ProtocolError);
  });

  it('fullState always carries our own section, even with no records', () => {
    const g = new DnsGossiper(make(A, 9).r);
    const s = decodeDnsMessage(g.fullState());
    expect(s).toEqual([{ origin: A, incarnation: 9, floor: 0, records: [] }]);
  });
});
