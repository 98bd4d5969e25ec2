import { describe, expect, it } from 'vitest';
import {
  containerRows,
  counterTotals,
  formatRate,
  layoutCircle,
  matches,
  meshView,
  nameRows,
  pushSample,
  rates,
  ringView,
  SERIES_LENGTH,
  sparkline,
} from './model.js';

/** A status of h1 in a three-host mesh where h1 and h2 were cut apart: h2 is relayed via h3. */
const STATUS = {
  version: '0.1.0',
  name: 'aa:00:00:00:00:01',
  nickname: 'h1',
  uptimeSeconds: 42,
  peers: [
    {
      name: 'aa:00:00:00:00:02',
      nickname: 'h2',
      state: 'relayed',
      via: 'aa:00:00:00:00:03',
      encap: 'sleeve',
      addr: '',
      neighbours: [{ name: 'aa:00:00:00:00:03', established: true }],
    },
    {
      name: 'aa:00:00:00:00:03',
      nickname: 'h3',
      state: 'established',
      encap: 'vxlan',
      rttMs: 0.42,
      addr: '192.168.1.3',
      dataEncrypted: false,
      neighbours: [
        { name: 'aa:00:00:00:00:01', established: true },
        { name: 'aa:00:00:00:00:02', established: true },
      ],
    },
  ],
  ipam: {
    range: '10.32.0.0/12',
    state: 'ready',
    size: 1000,
    unreachableOwned: 250,
    peers: [
      { name: 'aa:00:00:00:00:01', self: true, owned: 500, free: 490, reachable: true },
      { name: 'aa:00:00:00:00:03', nickname: 'h3', self: false, owned: 250, free: 250, reachable: true },
      { name: 'aa:00:00:00:00:09', self: false, owned: 250, free: 100, reachable: false },
    ],
  },
  counters: { tunRxBytes: 1000, tunTxBytes: 2000, relayed: 5, drops: { no_route: 3, auth: 1 } },
};

describe('meshView', () => {
  it('has this host, every peer with its state, and each link once', () => {
    const m = meshView(STATUS);
    expect(m.problems).toEqual([]);
    expect(m.self).toEqual({ name: 'aa:00:00:00:00:01', nickname: 'h1', version: '0.1.0', uptimeSeconds: 42 });
    expect(m.nodes.map((n) => [n.nickname, n.state, n.label])).toEqual([
      ['h1', 'self', 'this host'],
      ['h2', 'relayed', 'relayed via h3'],
      ['h3', 'established', 'direct, established'],
    ]);
    expect(m.nodes[1]?.via).toBe('h3');
    // h1–h3 from h1's own view (data path and RTT), h2–h3 from the neighbours, reported by both ends once.
    expect(m.links).toEqual([
      { a: 'aa:00:00:00:00:01', b: 'aa:00:00:00:00:03', state: 'established', label: 'vxlan 0.42 ms', local: true },
      { a: 'aa:00:00:00:00:02', b: 'aa:00:00:00:00:03', state: 'established', label: 'established', local: false },
    ]);
  });

  it('labels pending, failed and encrypted links, and marks unknown states unreachable', () => {
    const m = meshView({
      name: 's',
      peers: [
        { name: 'p', state: 'pending', encap: 'sleeve', dataEncrypted: true },
        { name: 'f', state: 'failed', encap: 'sleeve', reason: 'no heartbeats' },
        { name: 'u', state: 'unreachable' },
        { name: 'x', state: 'on fire' },
      ],
    });
    expect(m.links.map((l) => [l.b, l.state, l.label])).toEqual([
      ['s', 'pending', 'sleeve encrypted pending'],
      ['s', 'failed', 'sleeve failed'],
    ]);
    expect(m.nodes.find((n) => n.name === 'x')?.state).toBe('unreachable');
    expect(m.nodes.find((n) => n.name === 'u')?.label).toBe('unreachable');
    expect(m.nodes.find((n) => n.name === 'f')?.reason).toBe('no heartbeats');
  });

  it('an unproven report of a link is pending until one end says it is established', () => {
    const one = meshView({
      name: 's',
      peers: [
        { name: 'a', state: 'relayed', via: 'b', neighbours: [{ name: 'b', established: false }] },
        { name: 'b', state: 'established', neighbours: [{ name: 'a', established: false }] },
      ],
    });
    expect(one.links.find((l) => !l.local)?.state).toBe('pending');
    const other = meshView({
      name: 's',
      peers: [
        { name: 'a', state: 'relayed', via: 'b', neighbours: [{ name: 'b', established: true }] },
        { name: 'b', state: 'established', neighbours: [{ name: 'a', established: false }] },
      ],
    });
    expect(other.links.find((l) => !l.local)?.state).toBe('established');
  });

  it('survives malformed and partial status with a smaller picture and a reason', () => {
    for (const bad of [null, undefined, 42, 'x', [], [1, 2]]) {
      const m = meshView(bad);
      expect(m.nodes).toHaveLength(1);
      expect(m.links).toEqual([]);
      expect(m.problems).toEqual(['the status is not a JSON object']);
    }
    expect(meshView({}).problems).toEqual(['the status names no router']);
    expect(meshView({ name: 's', peers: 'nope' }).problems).toEqual(['"peers" is not a list']);
    const m = meshView({
      name: 's',
      peers: [
        null,
        { nickname: 'nameless' },
        { name: 7 },
        { name: 's' }, // ourselves again
        { name: 'a', state: 'established', rttMs: 'fast', neighbours: 'many' },
        { name: 'a', state: 'established' }, // twice
        { name: 'b', state: 'established', neighbours: [null, { name: 3 }, { name: 'ghost', established: true }] },
      ],
    });
    expect(m.nodes.map((n) => n.name)).toEqual(['s', 'a', 'b']);
    expect(m.nodes[1]?.rttMs).toBeUndefined();
    expect(m.links.every((l) => l.local)).toBe(true);
    expect(m.problems).toEqual(['5 peer entries without a usable name skipped']);
  });
});

describe('layoutCircle', () => {
  it('puts this host on top and the others clockwise by nickname, the same every time', () => {
    const m = meshView(STATUS);
    const at = layoutCircle(m.nodes, 600, 400, 50);
    expect(at.get('aa:00:00:00:00:01')).toEqual({ x: 300, y: 50 });
    const h2 = at.get('aa:00:00:00:00:02');
    const h3 = at.get('aa:00:00:00:00:03');
    expect(h2 !== undefined && h2.x > 300 && h2.y > 200).toBe(true);
    expect(h3 !== undefined && h3.x < 300 && h3.y > 200).toBe(true);
    expect(layoutCircle([...m.nodes].reverse(), 600, 400, 50)).toEqual(at);
    expect(layoutCircle(m.nodes.slice(0, 1), 600, 400, 50).get('aa:00:00:00:00:01')).toEqual({ x: 300, y: 200 });
  });
});

describe('ringView', () => {
  it('gives each owner its share, used and free, and the rmpeer hint for unreachable owners', () => {
    const r = ringView(STATUS);
    expect(r.problems).toEqual([]);
    expect(r.range).toBe('10.32.0.0/12');
    expect(r.unreachableOwned).toBe(250);
    expect(r.shares.map((s) => [s.label, s.owned, s.used, s.free, s.fraction, s.reachable])).toEqual([
      ['h1', 500, 10, 490, 0.5, true],
      ['h3', 250, 0, 250, 0.25, true],
      ['aa:00:00:00:00:09', 250, 150, 100, 0.25, false],
    ]);
    expect(r.shares[2]?.hint).toMatch(/weft rmpeer aa:00:00:00:00:09/);
    expect(r.shares[0]?.hint).toBeUndefined();
  });

  it('survives a missing or malformed ring', () => {
    expect(ringView({}).problems).toEqual(['the status has no IPAM ring']);
    expect(ringView(null).shares).toEqual([]);
    const r = ringView({ ipam: { size: 0, peers: [null, { name: 'a', owned: -5, free: 10 }, { owned: 1 }] } });
    expect(r.shares).toEqual([
      {
        name: 'a',
        label: 'a',
        self: false,
        owned: 0,
        free: 0,
        used: 0,
        fraction: 0,
        reachable: false,
        hint: r.shares[0]?.hint,
      },
    ]);
    expect(r.problems).toHaveLength(2);
  });
});

describe('containers, names and search', () => {
  it('reads /ps and /status/dns, skipping what is not a record', () => {
    expect(
      containerRows([
        { target: 'web', name: 'web', names: ['www'], cidrs: ['10.32.0.5/12'], mac: '02:aa' },
        { target: 'db', cidrs: 'x' },
        { name: 'no target' },
        7,
      ]),
    ).toEqual([
      { target: 'web', names: ['web', 'www'], addrs: ['10.32.0.5/12'], mac: '02:aa' },
      { target: 'db', names: [], addrs: [], mac: '' },
    ]);
    expect(containerRows({ error: 'nope' })).toEqual([]);
    expect(
      nameRows({
        entries: [
          { name: 'web.weft.local', addr: '10.32.0.5', owner: 'p', origin: 'attach' },
          { name: 'db.weft.local', addr: '10.40.0.1' },
          { name: 'broken' },
        ],
      }).map((n) => n.name),
    ).toEqual(['db.weft.local', 'web.weft.local']);
    expect(nameRows(undefined)).toEqual([]);
    expect(matches(['web.weft.local', '10.32.0.5'], ' WEB ')).toBe(true);
    expect(matches(['web.weft.local', '10.32.0.5'], '10.40')).toBe(false);
    expect(matches([], '')).toBe(true);
  });
});

describe('counters', () => {
  it('reads totals, turns them into rates, and counts a restarted router from zero', () => {
    const a = counterTotals(STATUS, { server: { queries: { A: 3, AAAA: 1 } } });
    expect(a.values).toEqual({ sentBytes: 1000, receivedBytes: 2000, relayed: 5, drops: 4, dnsQueries: 4 });
    expect(a.drops).toEqual({ no_route: 3, auth: 1 });
    const b = counterTotals(
      { counters: { tunRxBytes: 3000, tunTxBytes: 2000, relayed: 2, drops: { no_route: 3 } } },
      { server: { queries: { A: 7 } } },
    );
    expect(rates(a, b, 2000)).toEqual({ sentBytes: 1000, receivedBytes: 0, relayed: 1, drops: 1.5, dnsQueries: 1.5 });
    expect(rates(a, b, 0).sentBytes).toBe(0);
    expect(counterTotals('garbage', 7).values).toEqual({
      sentBytes: 0,
      receivedBytes: 0,
      relayed: 0,
      drops: 0,
      dnsQueries: 0,
    });
    expect(counterTotals({ counters: { tunRxBytes: -1, drops: { x: 'many' } } }, null).values.drops).toBe(0);
  });

  it('keeps a minute of samples and draws them newest at the right', () => {
    const s: number[] = [];
    for (let i = 0; i < SERIES_LENGTH + 10; i++) pushSample(s, i);
    expect(s).toHaveLength(SERIES_LENGTH);
    expect(s[0]).toBe(10);
    expect(sparkline([], 100, 20)).toBe('');
    expect(sparkline([0, 0], 118, 20)).toBe('116,20 118,20');
    const pts = sparkline([0, 5, 10], 118, 20).split(' ');
    expect(pts).toEqual(['114,20', '116,10', '118,0']);
  });

  it('formats rates and byte rates', () => {
    expect(formatRate(0, 'B/s')).toBe('0 B/s');
    expect(formatRate(1536, 'B/s')).toBe('1.5 KiB/s');
    expect(formatRate(50 * 1024 * 1024, 'B/s')).toBe('50 MiB/s');
    expect(formatRate(2.5, '/s')).toBe('2.5/s');
    expect(formatRate(12, 'packets/s')).toBe('12 packets/s');
  });
});
