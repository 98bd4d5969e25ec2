/**
 * AlignedClock is the daemon's real clock: time and timeouts as the real clock gives them, and
 * intervals that fire on the wall clock's multiples of their period (a 500 ms interval at
 * …:00.000, …:00.500, …) instead of at whatever phase each was created with.
 *
 * An idle router's cost is its wake-ups: with one phase per timer, the data-path heartbeat tick,
 * one heartbeat timer per control connection and the gossip tick each woke the process
 * separately. Aligned, every interval of one period fires in one wake-up, and because every router
 * aligns to the same (NTP-disciplined) wall clock, the heartbeats and acks of a whole cluster cross
 * at the same moments and are read in batches: the measured idle CPU of a 20-router full mesh
 * halves (bench/idle.ts). Nothing depends on the phase for correctness.
 */
import { type Clock, realClock, type Timer } from '../common/clock.js';

/** AlignedInterval is the Timer an aligned `setInterval` returns. */
class AlignedInterval implements Timer {
  private handle: NodeJS.Timeout | undefined;
  private unrefd = false;
  private cleared = false;

  constructor(
    private readonly fn: () => void,
    private readonly periodMs: number,
  ) {
    this.arm();
  }

  unref(): Timer {
    this.unrefd = true;
    this.handle?.unref();
    return this;
  }

  /** clear stops the interval; idempotent. */
  clear(): void {
    this.cleared = true;
    clearTimeout(this.handle);
    this.handle = undefined;
  }

  /** arm schedules the next run at the next multiple of the period (never 0 ms from now). */
  private arm(): void {
    const p = this.periodMs;
    this.handle = setTimeout(this.run, p - (Date.now() % p) || p);
    if (this.unrefd) this.handle.unref();
  }

  private readonly run = (): void => {
    if (this.cleared) return;
    // Armed before fn runs: a callback that throws or clears the interval leaves it consistent.
    this.arm();
    this.fn();
  };
}

/**
 * alignedClock returns a Clock whose `now`, `setTimeout` and `clearTimeout` are `base`'s and whose
 * `setInterval(fn, ms)` first runs `fn` at the next wall-clock multiple of `ms` (within `ms` from
 * now), then at every following multiple (a run that is late does not shift the next one).
 * `clearInterval` stops such an interval, and any other timer `base` made.
 */
export function alignedClock(base: Clock = realClock): Clock {
  return {
    now: () => base.now(),
    setTimeout: (fn, ms) => base.setTimeout(fn, ms),
    clearTimeout: (t) => base.clearTimeout(t),
    setInterval: (fn, ms) => new AlignedInterval(fn, Math.max(1, Math.floor(ms))),
    clearInterval: (t) => {
      if (t instanceof AlignedInterval) t.clear();
      else base.clearInterval(t);
    },
  };
}
