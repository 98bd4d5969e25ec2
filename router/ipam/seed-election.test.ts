import { describe, expect, it } from 'vitest';
import { type PeerName, parseCidr } from '../../common/types.js';
import { decodeMessage, encodeMessage } from './ipam.js';
import { SeedElection } from './seed-election.js';

const A = '02:00:00:00:00:01' as PeerName;
const B = '02:00:00:00:00:02' as PeerName;
const C = '02:00:00:00:00:03' as PeerName;

describe('SeedElection', () => {
  it('seeds alone when nobody is reachable and an address is needed', () => {
    const e = new SeedElection(B, true, 1);
    expect(e.decide([])).toEqual({ seed: false, reason: 'nobody needs an address yet' });
    expect(e.decide([], true)).toEqual({ seed: true });
  });

  it('waits to hear every reachable peer, and leaves the seed to a smaller seed-capable one', () => {
    const b = new SeedElection(B, true, 1);
    expect(b.decide([A, C], true)).toMatchObject({ seed: false, reason: expect.stringMatching(/waiting to hear/) });
    b.merge([
      { name: C, epoch: 1, counter: 1, seedCapable: false, waiting: true },
      { name: A, epoch: 1, counter: 0, seedCapable: true, waiting: false },
    ]);
    expect(b.decide([A, C])).toMatchObject({
      seed: false,
      reason: expect.stringMatching(/peer 02:00:00:00:00:01 seeds/),
    });
    expect(b.seeder([A, C])).toBe(A);
    // A gone (unreachable): B is the smallest that may seed, and C waits.
    expect(b.decide([C])).toEqual({ seed: true });
    const a = new SeedElection(A, true, 1);
    a.merge(b.all());
    a.merge([{ name: C, epoch: 1, counter: 1, seedCapable: false, waiting: true }]);
    expect(a.decide([B, C])).toEqual({ seed: true });
  });

  it('keeps the newest record of each peer: a later run wins over an earlier one', () => {
    const e = new SeedElection(A, false, 1);
    expect(e.merge([{ name: B, epoch: 5, counter: 3, seedCapable: true, waiting: true }])).toHaveLength(1);
    expect(e.merge([{ name: B, epoch: 5, counter: 2, seedCapable: false, waiting: false }])).toHaveLength(0);
    expect(e.merge([{ name: B, epoch: 6, counter: 0, seedCapable: false, waiting: false }])).toHaveLength(1);
    expect(e.get(B)?.seedCapable).toBe(false);
    // Records about ourselves come only from us.
    expect(e.merge([{ name: A, epoch: 9, counter: 9, seedCapable: true, waiting: true }])).toHaveLength(0);
    expect(e.decide([B], true)).toEqual({ seed: false, reason: 'this router may not seed' });
  });

  it('round-trips seed records on the wire', () => {
    const range = parseCidr('10.32.0.0/12');
    const records = [{ name: B, epoch: 1_700_000_000_000, counter: 4, seedCapable: true, waiting: false }];
    expect(decodeMessage(encodeMessage({ kind: 'seed-records', range, records }))).toEqual({
      kind: 'seed-records',
      range,
      records,
    });
  });
});
