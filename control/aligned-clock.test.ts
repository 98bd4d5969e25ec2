import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { alignedClock } from './aligned-clock.js';

describe('alignedClock', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(1_700_000_000_123);
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('runs an interval on the wall-clock multiples of its period', () => {
    const clock = alignedClock();
    const at: number[] = [];
    clock.setInterval(() => at.push(Date.now()), 500);
    vi.advanceTimersByTime(2_000);
    expect(at).toEqual([1_700_000_000_500, 1_700_000_001_000, 1_700_000_001_500, 1_700_000_002_000]);
  });

  it('puts intervals of one period made at different times on the same instants', () => {
    const clock = alignedClock();
    const a: number[] = [];
    const b: number[] = [];
    clock.setInterval(() => a.push(Date.now()), 1_000);
    vi.advanceTimersByTime(300);
    clock.setInterval(() => b.push(Date.now()), 1_000);
    vi.advanceTimersByTime(3_000);
    expect(b).toEqual(a.slice(-b.length));
    expect(b.length).toBe(3);
  });

  it('keeps its phase after a late run', () => {
    const clock = alignedClock();
    const at: number[] = [];
    clock.setInterval(() => {
      at.push(Date.now());
      // The wall clock moves 120 ms on: the next run is 120 ms late, the one after on time again.
      if (at.length === 1) vi.setSystemTime(Date.now() + 120);
    }, 500);
    vi.advanceTimersByTime(1_400);
    expect(at.map((t) => t % 500)).toEqual([0, 120, 0]);
  });

  it('stops an interval on clearInterval, and clears timeouts as the base clock does', () => {
    const clock = alignedClock();
    const fn = vi.fn();
    const t = clock.setInterval(fn, 100);
    vi.advanceTimersByTime(100);
    clock.clearInterval(t);
    clock.clearInterval(t);
    const once = vi.fn();
    clock.clearTimeout(clock.setTimeout(once, 10));
    vi.advanceTimersByTime(1_000);
    expect(fn).toHaveBeenCalledTimes(1);
    expect(once).not.toHaveBeenCalled();
  });

  it('keeps an unref()ed interval unref()ed after each run', () => {
    const clock = alignedClock();
    const handles: NodeJS.Timeout[] = [];
    const real = globalThis.setTimeout;
    const spy = vi.spyOn(globalThis, 'setTimeout').mockImplementation(((fn: () => void, ms?: number) => {
      const h = real(fn, ms);
      handles.push(h);
      return h;
    }) as typeof setTimeout);
    let runs = 0;
    const t = clock.setInterval(() => runs++, 100).unref();
    vi.advanceTimersByTime(300);
    spy.mockRestore();
    clock.clearInterval(t);
    expect(runs).toBe(3);
    expect(handles.length).toBe(4);
    expect(handles.every((h) => !h.hasRef())).toBe(true);
  });
});
