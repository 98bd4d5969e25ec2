import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { InputError, ProtocolError } from '../common/errors.js';
import type { PeerName } from '../common/types.js';
import { arbPeerEntry, wireArrayOf } from './testing/arb-entry.js';
import { mulberry32 } from './testing/gossip-sim.js';
import {
  type ConnectionSummary,
  compareVersions,
  decodeEntries,
  encodeEntries,
  entryProblem,
  type PeerEntry,
  REJECT_COLLISION,
  readTopologyId,
  TOPOLOGY_CONNECTIONS_MAX,
  TOPOLOGY_ID_BYTES,
  Topology,
  TopologyGossiper,
  writeTopologyId,
} from './topology.js';

// ---- helpers ----

function peer(n: number): PeerName {
  return `02:00:00:00:${(n >> 8).toString(16).padStart(2, '0')}:${(n & 255).toString(16).padStart(2, '0')}` as PeerName;
}

const LOCAL = peer(1);

function conn(p: PeerName, extra: Partial<ConnectionSummary> = {}): ConnectionSummary {
  return { peer: p, addr: '192.168.0.9', tcpPort: 6783, outbound: true, established: true, ...extra };
}

function entry(name: PeerName, patch: Partial<PeerEntry> = {}): PeerEntry {
  return {
    name,
    nickname: `n-${name.slice(-2)}`,
    uid: '1000',
    incarnation: 1_000,
    version: 1,
    connections: [],
    cidrs: ['10.32.0.1/32'],
    sleevePort: 6783,
    vxlanPort: 6784,
    encap: 'sleeve',
    ...patch,
  };
}

function shuffle<T>(items: readonly T[], random: () => number): T[] {
  const a = [...items];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

/** snapshot is a topology's whole state, comparable with toEqual. */
function snapshot(t: Topology): PeerEntry[] {
  return decodeEntries(t.encode());
}

// ---- tests ----

describe('Topology.merge', () => {
  it('keeps the higher (incarnation, version) of each peer and reports what changed', () => {
    const t = new Topology(entry(LOCAL, { uid: '7' }));
    const b = peer(2);
    expect(t.merge([entry(b, { version: 3 })]).changed.map((e) => e.version)).toEqual([3]);
    expect(t.merge([entry(b, { version: 2 })]).changed).toEqual([]);
    expect(t.merge([entry(b, { version: 3 })]).changed).toEqual([]);
    expect(t.merge([entry(b, { version: 4, nickname: 'new' })]).changed.map((e) => e.nickname)).toEqual(['new']);
    expect(t.get(b)?.version).toBe(4);
    expect(t.size).toBe(2);
  });

  it('lets a restarted peer (new incarnation, version 1) supersede its old incarnation at version 50, in either order', () => {
    const old = entry(peer(2), { uid: '11', incarnation: 1_000, version: 50 });
    const fresh = entry(peer(2), { uid: '22', incarnation: 2_000, version: 1 });
    for (const order of [
      [old, fresh],
      [fresh, old],
    ]) {
      const t = new Topology(entry(LOCAL));
      for (const e of order) t.merge([e]);
      expect(t.get(peer(2))).toEqual(fresh);
    }
  });

  it('resolves equal (incarnation, version) with different contents to the same entry whatever the order', () => {
    const a = entry(peer(2), { uid: '11', nickname: 'a' });
    const b = entry(peer(2), { uid: '12', nickname: 'b' });
    const t1 = new Topology(entry(LOCAL));
    const t2 = new Topology(entry(LOCAL));
    t1.merge([a, b]);
    t2.merge([b, a]);
    expect(t1.get(peer(2))).toEqual(t2.get(peer(2)));
    // Re-delivering the loser changes nothing.
    const loser = t1.get(peer(2)) === a ? b : a;
    expect(t1.merge([loser]).changed).toEqual([]);
  });

  it('refuses another router claiming our name from the same or a newer incarnation', () => {
    const t = new Topology(entry(LOCAL, { uid: '7', incarnation: 5_000 }));
    for (const incarnation of [5_000, 6_000]) {
      const r = t.merge([entry(LOCAL, { uid: '8', incarnation, version: 9 })]);
      expect(r.changed).toEqual([]);
      expect(r.rejected).toHaveLength(1);
      expect(r.rejected[0]!.reason).toContain(REJECT_COLLISION);
      expect(r.rejected[0]!.reason).toContain('uid 8');
    }
    expect(t.local.uid).toBe('7');
    expect(t.local.version).toBe(1);
  });

  it('ignores our previous incarnation, and everyone else prefers our new one', () => {
    const previous = entry(LOCAL, { uid: '6', incarnation: 1_000, version: 50 });
    const current = entry(LOCAL, { uid: '7', incarnation: 2_000, version: 1 });
    const t = new Topology(current);
    expect(t.merge([previous])).toEqual({ changed: [], rejected: [] });
    expect(t.local).toEqual(current);
    // A third peer that still holds our old self replaces it with our new entry.
    const other = new Topology(entry(peer(3)));
    other.merge([previous]);
    expect(other.merge([t.local]).changed).toEqual([current]);
    expect(other.merge([previous]).changed).toEqual([]);
  });

  it('bumps our version past an echo of ourselves that looks newer, keeping our contents', () => {
    const t = new Topology(entry(LOCAL, { uid: '7', version: 3, nickname: 'me' }));
    const r = t.merge([entry(LOCAL, { uid: '7', version: 9, nickname: 'forged' })]);
    expect(r.changed).toEqual([t.local]);
    expect(t.local.version).toBe(10);
    expect(t.local.nickname).toBe('me');
    // An identical copy of our own entry is no news.
    expect(t.merge([t.local]).changed).toEqual([]);
    // An older one is ignored.
    expect(t.merge([entry(LOCAL, { uid: '7', version: 2 })]).changed).toEqual([]);
  });

  it('accepts connections listed out of order when no peer repeats', () => {
    expect(
      entryProblem(entry(peer(2), { connections: [conn(peer(5)), conn(peer(3)), conn(peer(4))] })),
    ).toBeUndefined();
  });

  it.each([
    ['a connection to itself', entry(peer(2), { connections: [conn(peer(2))] }), 'connection to itself'],
    ['two connections to one peer', entry(peer(2), { connections: [conn(peer(3)), conn(peer(3))] }), 'duplicate'],
    [
      'a duplicate after the order breaks',
      entry(peer(2), { connections: [conn(peer(3)), conn(peer(5)), conn(peer(4)), conn(peer(3))] }),
      'duplicate connection to 02:00:00:00:00:03',
    ],
    [
      'a duplicate of a peer listed before the order broke',
      entry(peer(2), { connections: [conn(peer(5)), conn(peer(3)), conn(peer(5))] }),
      'duplicate connection to 02:00:00:00:00:05',
    ],
    ['a bad CIDR', entry(peer(2), { cidrs: ['10.0.0.1/33'] }), 'invalid cidr'],
    ['a CIDR with a leading zero', entry(peer(2), { cidrs: ['10.0.0.01/8'] }), 'invalid cidr'],
    ['a bad peer name', entry('02:00:00:00:00:zz' as PeerName), 'invalid peer name'],
    ['an upper-case peer name', entry('02:00:00:00:00:AB' as PeerName), 'invalid peer name'],
    ['a bad connection peer', entry(peer(2), { connections: [conn('nope' as PeerName)] }), 'invalid connection peer'],
    ['a bad connection address', entry(peer(2), { connections: [conn(peer(3), { addr: '1.2.3' })] }), 'address'],
    ['a zero uid', entry(peer(2), { uid: '0' }), 'invalid uid'],
    ['a uid beyond u64', entry(peer(2), { uid: '18446744073709551616' }), 'invalid uid'],
    ['a negative version', entry(peer(2), { version: -1 }), 'invalid version'],
    ['an unsafe incarnation', entry(peer(2), { incarnation: 2 ** 53 }), 'invalid incarnation'],
    ['a fractional version', entry(peer(2), { version: 1.5 }), 'invalid version'],
    ['port 0', entry(peer(2), { sleevePort: 0 }), 'invalid data port'],
    ['an unknown encap', entry(peer(2), { encap: 'gre' as 'vxlan' }), 'invalid encap'],
    [
      'too many connections',
      entry(peer(2), {
        connections: Array.from({ length: TOPOLOGY_CONNECTIONS_MAX + 1 }, (_, i) => conn(peer(10 + i))),
      }),
      'too many connections',
    ],
  ])('rejects %s with a reason and keeps the rest of the batch', (_what, bad, reason) => {
    const t = new Topology(entry(LOCAL));
    const good = entry(peer(4));
    const r = t.merge([bad, good]);
    expect(r.rejected).toHaveLength(1);
    expect(r.rejected[0]!.reason).toContain(reason);
    expect(r.changed).toEqual([good]);
    expect(t.get(bad.name)).toBeUndefined();
  });

  it('never throws on objects that are not entries at all', () => {
    const t = new Topology(entry(LOCAL));
    const junk = [
      null,
      undefined,
      42,
      'x',
      {},
      { name: peer(2) },
      { ...entry(peer(2)), connections: null },
      { ...entry(peer(2)), connections: [null] },
      { ...entry(peer(2)), cidrs: [1] },
      { ...entry(LOCAL), uid: 5 },
      { ...entry(LOCAL), version: Number.NaN },
    ] as unknown as PeerEntry[];
    const r = t.merge(junk);
    expect(r.changed).toEqual([]);
    expect(r.rejected).toHaveLength(junk.length);
    expect(t.size).toBe(1);
  });
});

describe('Topology', () => {
  it('setLocal bumps the version, sorts connections and refuses invalid contents', () => {
    const t = new Topology(entry(LOCAL, { version: 4 }));
    const next = t.setLocal({ connections: [conn(peer(9)), conn(peer(3))], cidrs: ['10.32.0.5/12'] });
    expect(next.version).toBe(5);
    expect(next.connections.map((c) => c.peer)).toEqual([peer(3), peer(9)]);
    expect(t.local).toBe(next);
    expect(() => t.setLocal({ connections: [conn(LOCAL)] })).toThrow(InputError);
    expect(() => t.setLocal({ cidrs: ['bad'] })).toThrow(InputError);
    expect(t.local).toBe(next);
    expect(() => new Topology(entry('bad' as PeerName))).toThrow(InputError);
  });

  it('remove forgets peers but never ourselves', () => {
    const t = new Topology(entry(LOCAL));
    t.merge([entry(peer(2)), entry(peer(3))]);
    expect(t.remove([LOCAL, peer(2), peer(7)])).toEqual([peer(2)]);
    expect(t.entries().map((e) => e.name)).toEqual([LOCAL, peer(3)]);
  });

  it('forget keeps a copy: the same copy received again is no news, a newer one is, restore takes it back', () => {
    const t = new Topology(entry(LOCAL));
    const two = entry(peer(2), { version: 3 });
    t.merge([two, entry(peer(3))]);
    const full = t.encode();
    expect(t.forget([LOCAL, peer(2), peer(7)], 100)).toEqual([peer(2)]);
    expect(t.entries().map((e) => e.name)).toEqual([LOCAL, peer(3)]);
    expect(t.forgotten()).toEqual([two]);
    // A neighbour that has not forgotten it yet sends its full state, or the entry alone, again:
    // nothing changes, through either path (bytes recognised, or decoded and compared).
    expect(t.mergeEncoded(full)).toEqual({ changed: [], rejected: [] });
    expect(t.merge([two, entry(peer(2), { version: 2 })])).toEqual({ changed: [], rejected: [] });
    expect(t.get(peer(2))).toBeUndefined();
    // restore brings back the copy as it was; unknown names are skipped.
    expect(t.restore([peer(2), peer(9)])).toEqual([two]);
    expect(t.get(peer(2))).toEqual(two);
    expect(t.forgottenCount).toBe(0);
    // A newer copy of a forgotten peer is news, and takes it out of the store.
    t.forget([peer(2)], 200);
    const newer = entry(peer(2), { version: 4 });
    expect(t.merge([newer]).changed).toEqual([newer]);
    expect(t.forgottenCount).toBe(0);
    expect(t.encode()).toEqual(encodeEntries(t.entries()));
  });

  it('forgottenListed names the forgotten peers a held entry lists as established, through every kind of change', () => {
    const t = new Topology(entry(LOCAL));
    const unproven = conn(peer(2), { established: false });
    t.merge([entry(peer(2)), entry(peer(3), { connections: [unproven] }), entry(peer(4))]);
    t.forget([peer(2)], 100);
    // peer(3) lists peer(2), but not as established: no candidate.
    expect(t.forgottenListed()).toEqual([]);
    t.merge([entry(peer(3), { version: 2, connections: [conn(peer(2))] })]);
    expect(t.forgottenListed().map((e) => e.name)).toEqual([peer(2)]);
    // Our own entry counts as a lister too, and two listers need both gone.
    t.setLocal({ connections: [conn(peer(2))] });
    t.merge([entry(peer(3), { version: 3, connections: [] })]);
    expect(t.forgottenListed().map((e) => e.name)).toEqual([peer(2)]);
    t.setLocal({ connections: [] });
    expect(t.forgottenListed()).toEqual([]);
    // A removed (or forgotten) lister no longer counts; a restored one does again.
    t.merge([entry(peer(4), { version: 2, connections: [conn(peer(2))] })]);
    expect(t.forgottenListed().map((e) => e.name)).toEqual([peer(2)]);
    t.forget([peer(4)], 200);
    expect(t.forgottenListed()).toEqual([]);
    t.restore([peer(4)]);
    expect(t.forgottenListed().map((e) => e.name)).toEqual([peer(2)]);
    t.remove([peer(4)]);
    expect(t.forgottenListed()).toEqual([]);
  });

  it('forgottenListed stays exact when new versions add, drop and flip connections, sorted or not', () => {
    const random = mulberry32(7);
    const t = new Topology(entry(LOCAL));
    const forgotten = [peer(20), peer(21), peer(22), peer(23), peer(24)];
    t.merge(forgotten.map((p) => entry(p)));
    t.forget(forgotten, 100);
    const listers = [peer(3), peer(4), peer(5)];
    const versions = new Map(listers.map((p) => [p, 1]));
    for (let step = 0; step < 400; step++) {
      const who = listers[Math.floor(random() * listers.length)]!;
      const picked = forgotten.filter(() => random() < 0.5).map((p) => conn(p, { established: random() < 0.6 }));
      const connections = random() < 0.3 ? shuffle(picked, random) : picked;
      const version = versions.get(who)! + 1;
      versions.set(who, version);
      t.merge([entry(who, { version, connections })]);
      const want = forgotten.filter((f) =>
        listers.some((l) => t.get(l)?.connections.some((c) => c.peer === f && c.established)),
      );
      expect(
        t
          .forgottenListed()
          .map((e) => e.name)
          .sort(),
      ).toEqual(want);
    }
  });

  it('expireForgotten drops copies forgotten before a time, oldest first; after that a copy is news again', () => {
    const t = new Topology(entry(LOCAL));
    t.merge([entry(peer(2)), entry(peer(3))]);
    t.forget([peer(2)], 100);
    t.forget([peer(3)], 300);
    expect(t.expireForgotten(200)).toBe(1);
    expect(t.forgotten().map((e) => e.name)).toEqual([peer(3)]);
    expect(t.merge([entry(peer(2))]).changed.map((e) => e.name)).toEqual([peer(2)]);
    expect(t.merge([entry(peer(3))]).changed).toEqual([]);
  });

  it('encodes entries sorted by name from its cache, as encodeEntries would', () => {
    const t = new Topology(entry(LOCAL));
    t.merge([entry(peer(3), { connections: [conn(peer(2))] }), entry(peer(2))]);
    expect(t.encode()).toEqual(encodeEntries(t.entries()));
    expect(decodeEntries(t.encode([peer(3), peer(99)]))).toEqual([t.get(peer(3))]);
  });

  it('keeps the full state encoded until a merge, setLocal or remove changes it', () => {
    const t = new Topology(entry(LOCAL));
    t.merge([entry(peer(2)), entry(peer(3))]);
    const whole = t.encode();
    expect(t.encode()).toBe(whole);
    // Our own full state, and a neighbour's identical one, change nothing.
    expect(t.mergeEncoded(whole)).toEqual({ changed: [], rejected: [] });
    expect(t.mergeEncoded(whole.slice())).toEqual({ changed: [], rejected: [] });
    t.merge([entry(peer(2), { version: 2 })]);
    expect(t.encode()).not.toBe(whole);
    expect(t.encode()).toEqual(encodeEntries(t.entries()));
    // The old full state is now older in one entry: merging it still changes nothing.
    expect(t.mergeEncoded(whole)).toEqual({ changed: [], rejected: [] });
    const afterMerge = t.encode();
    t.setLocal({ cidrs: ['10.32.0.9/32'] });
    expect(decodeEntries(t.encode()).find((e) => e.name === LOCAL)?.cidrs).toEqual(['10.32.0.9/32']);
    expect(t.encode()).not.toBe(afterMerge);
    t.remove([peer(3)]);
    expect(decodeEntries(t.encode()).map((e) => e.name)).toEqual([LOCAL, peer(2)]);
  });
});

describe('Topology.mergeEncoded', () => {
  it('merges like merge(decodeEntries(bytes))', () => {
    const batch = [entry(peer(2), { version: 2 }), entry(peer(3)), entry(LOCAL, { uid: '99', incarnation: 9_000 })];
    const a = new Topology(entry(LOCAL));
    const b = new Topology(entry(LOCAL));
    expect(a.mergeEncoded(encodeEntries(batch))).toEqual(b.merge(decodeEntries(encodeEntries(batch))));
    expect(snapshot(a)).toEqual(snapshot(b));
  });

  it('skips stale and identical copies without looking into them, and refuses a malformed new one', () => {
    const t = new Topology(entry(LOCAL));
    t.merge([entry(peer(2), { version: 5 })]);
    const packr = new Packr({ useRecords: false, moreTypes: false });
    const name2 = new Uint8Array([2, 0, 0, 0, 0, 2]);
    const name3 = new Uint8Array([2, 0, 0, 0, 0, 3]);
    // An older copy of peer 2 with a field of the wrong type: never validated, so no error.
    expect(t.mergeEncoded(packr.pack([1, [[name2, 'n', '1000', 1_000, 4, 'junk']]]))).toEqual({
      changed: [],
      rejected: [],
    });
    // An identical copy is skipped too; a malformed newer one refuses the whole message.
    const same = t.encode([peer(2)]);
    expect(t.mergeEncoded(same)).toEqual({ changed: [], rejected: [] });
    const bad = packr.pack([1, [[name3, 'n', '1000', 1_000, 1, 'junk']]]);
    expect(() => t.mergeEncoded(bad)).toThrow(/invalid topology: 1\.0: /);
    expect(t.size).toBe(2);
  });

  it('fuzz: on mutated full states agrees with merge(decodeEntries), refuses only with ProtocolError, never stores a bad entry', () => {
    const random = mulberry32(0x5e1f);
    const held = [2, 3, 4, 5].map((n) =>
      entry(peer(n), { version: n, connections: [conn(peer(n + 1)), conn(peer(n + 2), { established: false })] }),
    );
    const fresh = (): Topology => {
      const t = new Topology(entry(LOCAL));
      t.merge(held);
      return t;
    };
    // What a neighbour sends: mostly what we hold byte for byte, some newer, some unknown.
    const newer = [entry(peer(3), { version: 9 }), entry(peer(7)), ...held];
    const valid = encodeEntries(newer);
    let agreed = 0;
    let skippedJunk = 0;
    for (let i = 0; i < 4000; i++) {
      const buf = valid.slice(0, random() < 0.1 ? Math.floor(random() * valid.length) : valid.length);
      const flips = 1 + Math.floor(random() * 3);
      for (let f = 0; f < flips && buf.length > 0; f++)
        buf[Math.floor(random() * buf.length)] = Math.floor(random() * 256);
      const a = fresh();
      let viaBytes: ReturnType<Topology['merge']> | undefined;
      try {
        viaBytes = a.mergeEncoded(buf);
      } catch (err) {
        expect(err).toBeInstanceOf(ProtocolError);
      }
      let decoded: PeerEntry[] | undefined;
      try {
        decoded = decodeEntries(buf);
      } catch (err) {
        expect(err).toBeInstanceOf(ProtocolError);
      }
      if (decoded !== undefined) {
        // Whatever decodes whole merges alike either way.
        const b = fresh();
        expect(viaBytes).toEqual(b.merge(decoded));
        expect(snapshot(a)).toEqual(snapshot(b));
        agreed++;
      } else if (viaBytes !== undefined) skippedJunk++; // junk only in entries too old to matter
      if (viaBytes === undefined) expect(snapshot(a)).toEqual(snapshot(fresh())); // refused: nothing merged
      for (const e of a.entries()) expect(entryProblem(e)).toBeUndefined();
    }
    expect(agreed).toBeGreaterThan(100);
    expect(skippedJunk).toBeGreaterThan(0);
  });
});

describe('TopologyGossiper', () => {
  it('returns only the entries that were new and reports every merge', () => {
    const t = new Topology(entry(LOCAL));
    const seen: number[] = [];
    const g = new TopologyGossiper(t, (r) => seen.push(r.changed.length));
    const payload = encodeEntries([entry(peer(2)), entry(peer(3))]);
    expect(decodeEntries(g.onGossip(peer(2), payload)!).map((e) => e.name)).toEqual([peer(2), peer(3)]);
    expect(g.onGossip(peer(2), payload)).toBeUndefined();
    g.onGossipUnicast(peer(2), encodeEntries([entry(peer(4))]));
    expect(seen).toEqual([2, 0, 1]);
    expect(decodeEntries(g.fullState())).toHaveLength(4);
    expect(() => g.onGossip(peer(2), new Uint8Array([1, 2, 3]))).toThrow(ProtocolError);
  });
});

describe('TopologyAnnouncing (lazy push ids)', () => {
  function ids(...versions: Pick<PeerEntry, 'name' | 'incarnation' | 'version'>[]): Uint8Array {
    const out = new Uint8Array(versions.length * TOPOLOGY_ID_BYTES);
    versions.forEach((v, i) => {
      writeTopologyId(out, i * TOPOLOGY_ID_BYTES, v);
    });
    return out;
  }

  it('names the versions a delta carries, by what we hold of them', () => {
    const t = new Topology(entry(LOCAL));
    const g = new TopologyGossiper(t);
    const delta = g.onGossip(
      peer(9),
      encodeEntries([entry(peer(2), { version: 4 }), entry(peer(3), { incarnation: 7 })]),
    )!;
    const a = g.announcing!;
    expect(a.idBytes).toBe(TOPOLOGY_ID_BYTES);
    const got = a.ids(delta);
    expect(got).toEqual(
      ids({ name: peer(2), incarnation: 1_000, version: 4 }, { name: peer(3), incarnation: 7, version: 1 }),
    );
    expect(readTopologyId(got, TOPOLOGY_ID_BYTES)).toEqual({ name: peer(3), incarnation: 7, version: 1 });
    // A newer version arrived since: the ids name it.
    t.merge([entry(peer(2), { version: 5 })]);
    expect(readTopologyId(a.ids(delta), 0).version).toBe(5);
  });

  it('holds the same or an older version (forgotten ones too) and ourselves, not a newer one or an unknown peer', () => {
    const t = new Topology(entry(LOCAL, { version: 3 }));
    const a = new TopologyGossiper(t).announcing!;
    t.merge([entry(peer(2), { version: 4 }), entry(peer(3), { version: 2 })]);
    t.forget([peer(3)], 0);
    const holds = (v: Pick<PeerEntry, 'name' | 'incarnation' | 'version'>) => a.holds(ids(v), 0);
    expect(holds({ name: peer(2), incarnation: 1_000, version: 4 })).toBe(true);
    expect(holds({ name: peer(2), incarnation: 1_000, version: 3 })).toBe(true);
    expect(holds({ name: peer(2), incarnation: 999, version: 9 })).toBe(true);
    expect(holds({ name: peer(2), incarnation: 1_000, version: 5 })).toBe(false);
    expect(holds({ name: peer(2), incarnation: 1_001, version: 1 })).toBe(false);
    expect(holds({ name: peer(3), incarnation: 1_000, version: 2 })).toBe(true); // forgotten, same
    expect(holds({ name: peer(3), incarnation: 1_000, version: 3 })).toBe(false);
    expect(holds({ name: peer(4), incarnation: 1, version: 1 })).toBe(false);
    expect(holds({ name: LOCAL, incarnation: 1_000, version: 99 })).toBe(true); // never graft ourselves
    // The id at an offset, as the channel passes it inside an envelope.
    const env = new Uint8Array(7 + TOPOLOGY_ID_BYTES);
    env.set(ids({ name: peer(2), incarnation: 1_000, version: 5 }), 7);
    expect(a.holds(env, 7)).toBe(false);
  });

  it('answers with the entries we hold now, each once, and nothing for peers we do not hold', () => {
    const t = new Topology(entry(LOCAL));
    const a = new TopologyGossiper(t).announcing!;
    t.merge([entry(peer(2), { version: 4 }), entry(peer(3))]);
    t.forget([peer(3)], 0);
    const v2 = { name: peer(2), incarnation: 1_000, version: 2 };
    expect(decodeEntries(a.answer(ids(v2, v2, { name: LOCAL, incarnation: 1_000, version: 1 })))).toEqual([
      t.get(peer(2)),
      t.local,
    ]);
    expect(
      a.answer(ids({ name: peer(3), incarnation: 1_000, version: 1 }, { name: peer(7), incarnation: 1, version: 1 })),
    ).toHaveLength(0);
  });

  it('refuses ids that are cut short or whose numbers no entry has, with ProtocolError', () => {
    const a = new TopologyGossiper(new Topology(entry(LOCAL))).announcing!;
    const good = ids({ name: peer(2), incarnation: 1_000, version: 2 });
    expect(() => a.holds(good.subarray(0, TOPOLOGY_ID_BYTES - 1), 0)).toThrow(ProtocolError);
    expect(() => a.holds(good, 1)).toThrow(ProtocolError);
    expect(() => a.answer(good.subarray(1))).toThrow(ProtocolError);
    for (const [at, value] of [
      [6, Number.NaN],
      [6, -1],
      [14, 1.5],
      [14, Number.POSITIVE_INFINITY],
      [6, 2 ** 60],
    ] as const) {
      const bad = good.slice();
      new DataView(bad.buffer).setFloat64(at, value);
      expect(() => a.holds(bad, 0), `${at} ${value}`).toThrow(ProtocolError);
      expect(() => a.answer(bad), `${at} ${value}`).toThrow(ProtocolError);
    }
  });
});

describe('encodeEntries / decodeEntries', () => {
  const sample = [
    entry(peer(2), {
      connections: [conn(peer(3), { addr: '255.255.255.255', established: false }), conn(peer(4), { outbound: false })],
      cidrs: ['10.32.0.0/12', '0.0.0.0/0'],
      encap: 'vxlan',
      uid: '18446744073709551615',
      incarnation: Number.MAX_SAFE_INTEGER,
    }),
    entry(peer(3), { nickname: '', cidrs: [] }),
  ];

  it('round-trips entries', () => {
    expect(decodeEntries(encodeEntries(sample))).toEqual(sample);
    expect(decodeEntries(encodeEntries([]))).toEqual([]);
    const many = Array.from({ length: 300 }, (_, i) => entry(peer(i + 2)));
    expect(decodeEntries(encodeEntries(many))).toEqual(many);
  });

  it('encodes every valid entry in the bytes msgpackr packs its wire array in (the canonical form peers compare)', () => {
    const packr = new Packr({ useRecords: false, moreTypes: false });
    fc.assert(
      fc.property(arbPeerEntry(), (e) => {
        expect(entryProblem(e)).toBeUndefined();
        const want = Buffer.from(packr.pack([1, [wireArrayOf(e)]])).toString('hex');
        expect(Buffer.from(encodeEntries([e])).toString('hex')).toBe(want);
      }),
      { numRuns: 500 },
    );
  });

  it('refuses to encode an invalid entry', () => {
    expect(() => encodeEntries([entry(peer(2), { cidrs: ['x'] })])).toThrow(InputError);
  });

  it('refuses another format, extra fields, wrong types and oversize lists with ProtocolError', () => {
    const packr = new Packr({ useRecords: false, moreTypes: false });
    const name = new Uint8Array(6);
    const wire = [name, 'n', '1', 1, 1, [], [], 6783, 6784, 'sleeve'];
    expect(decodeEntries(packr.pack([1, [wire]]))).toHaveLength(1);
    const bad = [
      [2, [wire]],
      [1, [wire], 'extra'],
      [1, [[...wire, 'extra']]],
      [1, [[new Uint8Array(5), ...wire.slice(1)]]],
      [1, [[name, 'n', '1', -1, 1, [], [], 6783, 6784, 'sleeve']]],
      [1, [[name, 'n', '1', 1, 2 ** 60, [], [], 6783, 6784, 'sleeve']]],
      [1, [[name, 'n', '1', 1, 1, [], [], 0, 6784, 'sleeve']]],
      [1, [[name, 'x'.repeat(65), '1', 1, 1, [], [], 6783, 6784, 'sleeve']]],
      [1, [[name, 'n', '1', 1, 1, [[name, 2 ** 32, 1, true, true]], [], 6783, 6784, 'sleeve']]],
      [1, [[name, 'n', '1', 1, 1, Array(4097).fill([name, 1, 1, true, true]), [], 6783, 6784, 'sleeve']]],
      { format: 1 },
      'text',
    ];
    for (const v of bad)
      expect(() => decodeEntries(packr.pack(v)), JSON.stringify(v).slice(0, 80)).toThrow(ProtocolError);
    expect(() => decodeEntries(new Uint8Array(0))).toThrow(ProtocolError);
  });

  it('fuzz: random and mutated buffers give ProtocolError or entries, and merging those never throws', () => {
    const random = mulberry32(0xf022);
    const valid = encodeEntries(sample);
    const t = new Topology(entry(LOCAL));
    let decoded = 0;
    for (let i = 0; i < 6000; i++) {
      let buf: Uint8Array;
      if (i % 2 === 0) {
        buf = new Uint8Array(Math.floor(random() * 64));
        for (let j = 0; j < buf.length; j++) buf[j] = Math.floor(random() * 256);
      } else {
        buf = valid.slice(0, random() < 0.2 ? Math.floor(random() * valid.length) : valid.length);
        const flips = 1 + Math.floor(random() * 4);
        for (let f = 0; f < flips && buf.length > 0; f++)
          buf[Math.floor(random() * buf.length)] = Math.floor(random() * 256);
      }
      let entries: PeerEntry[];
      try {
        entries = decodeEntries(buf);
      } catch (err) {
        expect(err).toBeInstanceOf(ProtocolError);
        continue;
      }
      decoded++;
      for (const e of entries) expect(typeof e.name === 'string' && Array.isArray(e.connections)).toBe(true);
      const r = t.merge(entries);
      for (const e of r.changed) expect(entryProblem(e)).toBeUndefined();
    }
    // Single-byte mutations of a valid buffer often stay decodable: the merge path was exercised.
    expect(decoded).toBeGreaterThan(100);
  });
});

describe('merge order (property)', () => {
  /** randomEntries makes versions of a few peers: restarts, equal versions with other contents, echoes of us, junk. */
  function randomEntries(random: () => number): PeerEntry[] {
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
    const names = [LOCAL, peer(2), peer(3), peer(4), peer(5)];
    const out: PeerEntry[] = [];
    const count = 5 + Math.floor(random() * 30);
    for (let i = 0; i < count; i++) {
      const name = pick(names);
      const others = names.filter((n) => n !== name);
      const e = entry(name, {
        uid: pick(['7', '8', '9']),
        incarnation: pick([500, 1_000, 2_000]),
        version: 1 + Math.floor(random() * 4),
        nickname: pick(['a', 'b']),
        connections: others.filter(() => random() < 0.4).map((p) => conn(p, { established: random() < 0.5 })),
      });
      out.push(random() < 0.1 ? { ...e, cidrs: ['junk'] } : e);
    }
    return out;
  }

  it('gives identical state for 50 random orders of the same entries (200 random sets)', () => {
    const random = mulberry32(42);
    for (let set = 0; set < 200; set++) {
      const entries = randomEntries(random);
      let expected: PeerEntry[] | undefined;
      for (let order = 0; order < 50; order++) {
        const t = new Topology(entry(LOCAL, { uid: '7', incarnation: 1_000, version: 2 }));
        // Deliver in random batches of 1..4 entries, in a random order.
        const shuffled = shuffle(entries, random);
        while (shuffled.length > 0) {
          const batch = shuffled.splice(0, 1 + Math.floor(random() * 4));
          // Half the batches go through the wire path, which skips stale entries before validating.
          if (random() < 0.5 || batch.some((e) => entryProblem(e) !== undefined)) t.merge(batch);
          else t.mergeEncoded(encodeEntries(batch));
        }
        const state = snapshot(t);
        if (expected === undefined) expected = state;
        else expect(state).toEqual(expected);
      }
    }
  });

  it('orders copies by incarnation first, then version', () => {
    expect(
      compareVersions(entry(peer(2), { incarnation: 2, version: 1 }), entry(peer(2), { incarnation: 1, version: 50 })),
    ).toBeGreaterThan(0);
    expect(compareVersions(entry(peer(2), { version: 3 }), entry(peer(2), { version: 4 }))).toBeLessThan(0);
  });
});
