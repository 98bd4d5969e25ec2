import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { REJECT_AFTER_MESSAGES, REPLAY_WINDOW_PACKETS, ReplayVerdict, ReplayWindow } from './replay.js';

/** Model is the obvious definition: a set of accepted counters and the highest one. */
class Model {
  readonly seen = new Set<number>();
  last = -1;
  constructor(readonly limit: number) {}
  verdict(c: number): ReplayVerdict {
    if (c < 0 || c >= this.limit) return ReplayVerdict.Limit;
    if (c > this.last) return ReplayVerdict.Ok;
    if (this.last - c >= REPLAY_WINDOW_PACKETS) return ReplayVerdict.TooOld;
    return this.seen.has(c) ? ReplayVerdict.Duplicate : ReplayVerdict.Ok;
  }
  update(c: number): ReplayVerdict {
    const v = this.verdict(c);
    if (v === ReplayVerdict.Ok) {
      this.seen.add(c);
      this.last = Math.max(this.last, c);
    }
    return v;
  }
}

describe('ReplayWindow', () => {
  it('accepts in order, reorder within the window once, and rejects duplicates and too-old counters', () => {
    const w = new ReplayWindow();
    for (let c = 0; c < 5000; c++) expect(w.update(c)).toBe(ReplayVerdict.Ok);
    expect(w.update(4999)).toBe(ReplayVerdict.Duplicate);
    expect(w.update(4999 - REPLAY_WINDOW_PACKETS)).toBe(ReplayVerdict.TooOld);
    expect(w.update(6000)).toBe(ReplayVerdict.Ok);
    expect(w.check(5999)).toBe(ReplayVerdict.Ok); // skipped, inside the window
    expect(w.update(5999)).toBe(ReplayVerdict.Ok);
    expect(w.update(5999)).toBe(ReplayVerdict.Duplicate);
    expect(w.check(6000 - REPLAY_WINDOW_PACKETS + 1)).toBe(ReplayVerdict.Duplicate); // seen, still tracked
    expect(w.check(5500)).toBe(ReplayVerdict.Ok);
    expect(w.check(6000 - REPLAY_WINDOW_PACKETS)).toBe(ReplayVerdict.TooOld);
    expect(w.update(1e9)).toBe(ReplayVerdict.Ok); // a far jump clears the whole ring
    expect(w.update(1e9 - 1)).toBe(ReplayVerdict.Ok);
    expect(w.last).toBe(1e9);
  });

  it('refuses counters at or past the limit, and non-counters', () => {
    const w = new ReplayWindow();
    expect(w.update(REJECT_AFTER_MESSAGES - 1)).toBe(ReplayVerdict.Ok);
    expect(w.update(REJECT_AFTER_MESSAGES)).toBe(ReplayVerdict.Limit);
    expect(w.check(2 ** 53)).toBe(ReplayVerdict.Limit);
    expect(w.check(-1)).toBe(ReplayVerdict.Limit);
    expect(w.check(1.5)).toBe(ReplayVerdict.Limit);
    expect(w.check(Number.NaN)).toBe(ReplayVerdict.Limit);
    const small = new ReplayWindow(10);
    expect(small.update(9)).toBe(ReplayVerdict.Ok);
    expect(small.update(10)).toBe(ReplayVerdict.Limit); // the counter wrap is refused, never wraps
    expect(() => new ReplayWindow(0)).toThrow(RangeError);
    small.reset();
    expect(small.last).toBe(-1);
    expect(small.update(9)).toBe(ReplayVerdict.Ok);
  });

  it('agrees with the model on random traffic (bursts, reorder, duplicates, jumps)', () => {
    const limit = 50_000;
    const step = fc.oneof(
      { weight: 6, arbitrary: fc.integer({ min: -3, max: 40 }) }, // near the front: in order, small reorder, dups
      { weight: 2, arbitrary: fc.integer({ min: -2500, max: -1000 }) }, // around the window's back edge
      { weight: 1, arbitrary: fc.integer({ min: 100, max: 9000 }) }, // jumps ahead
      { weight: 1, arbitrary: fc.integer({ min: -100_000, max: 100_000 }) }, // anywhere, past the limit too
    );
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 600 }), fc.boolean(), (steps, precheck) => {
        const w = new ReplayWindow(limit);
        const m = new Model(limit);
        for (const s of steps) {
          const c = Math.max(m.last, 0) + s;
          if (precheck) expect(w.check(c)).toBe(m.verdict(c));
          expect(w.update(c)).toBe(m.update(c));
          expect(w.last).toBe(m.last);
        }
      }),
      { numRuns: 300 },
    );
  });
});
