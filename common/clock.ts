/**
 * Clock is where control-plane code takes time and timers from: the real one in the product, a
 * VirtualClock in tests and the simulator, so they run on virtual time (no sleeping, no polling
 * the wall clock) and many routers can share one process and one timeline.
 *
 * The per-packet hot path does not call a Clock; it keeps its own cheap cached time.
 */
export interface Clock {
  /** now is the time in ms since the epoch, with sub-millisecond precision. */
  now(): number;
  /** setTimeout runs `fn` once, `ms` from now. */
  setTimeout(fn: () => void, ms: number): Timer;
  clearTimeout(timer: Timer | undefined): void;
  /** setInterval runs `fn` every `ms` from now on, until cleared. */
  setInterval(fn: () => void, ms: number): Timer;
  clearInterval(timer: Timer | undefined): void;
}

/**
 * Timer is a pending timeout or interval. `unref()` lets the process exit while it is pending
 * (real clock); it returns the timer, so `clock.setInterval(f, ms).unref()` reads as with Node.
 */
export interface Timer {
  unref(): Timer;
}

/** realClock is Node's clock and timers; `now()` is performance-precise epoch milliseconds. */
export const realClock: Clock = {
  now: () => performance.timeOrigin + performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (t) => clearTimeout(t as NodeJS.Timeout | undefined),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (t) => clearInterval(t as NodeJS.Timeout | undefined),
};

/** VIRTUAL_EPOCH_MS is the epoch time a VirtualClock starts at by default (2023-11-14). */
export const VIRTUAL_EPOCH_MS = 1_700_000_000_000;

class VirtualTimer implements Timer {
  /** at is when it fires next; seq orders timers due at the same time (earliest scheduled first). */
  at: number;
  seq: number;
  /** heapIndex is where it sits in the clock's heap, -1 when not scheduled. */
  heapIndex = -1;
  constructor(
    readonly fn: () => void,
    /** period is the interval's period in ms, 0 for a timeout. */
    readonly period: number,
    at: number,
    seq: number,
  ) {
    this.at = at;
    this.seq = seq;
  }
  unref(): Timer {
    return this;
  }
}

/**
 * VirtualClock is a Clock whose time moves only when told to (`advance`, `runUntilIdle`). Timers
 * run in order of due time, then of scheduling (a deterministic order); time reads as the due time
 * of the timer running. A timer set to 0 ms (or less) runs at the current time, after the timers
 * already due. Backed by a binary heap, so many thousands of timers stay cheap.
 */
export class VirtualClock implements Clock {
  private t: number;
  private seq = 0;
  private readonly heap: VirtualTimer[] = [];

  constructor(startMs = VIRTUAL_EPOCH_MS) {
    this.t = startMs;
  }

  now(): number {
    return this.t;
  }

  /** pending counts the timers scheduled (intervals included). */
  get pending(): number {
    return this.heap.length;
  }

  /** nextAt is when the next timer is due (undefined when none is). */
  nextAt(): number | undefined {
    return this.heap[0]?.at;
  }

  setTimeout(fn: () => void, ms: number): Timer {
    const timer = new VirtualTimer(fn, 0, this.t + Math.max(0, ms || 0), this.seq++);
    this.push(timer);
    return timer;
  }

  setInterval(fn: () => void, ms: number): Timer {
    const period = Math.max(1, ms || 0);
    const timer = new VirtualTimer(fn, period, this.t + period, this.seq++);
    this.push(timer);
    return timer;
  }

  clearTimeout(timer: Timer | undefined): void {
    if (timer instanceof VirtualTimer && timer.heapIndex >= 0) this.remove(timer);
  }

  clearInterval(timer: Timer | undefined): void {
    this.clearTimeout(timer);
  }

  /**
   * advance moves time forward by `ms`, running every timer due until then (including ones those
   * timers schedule within the window). Returns how many timers ran.
   */
  advance(ms: number): number {
    return this.advanceTo(this.t + Math.max(0, ms));
  }

  /** advanceTo moves time forward to `at` (never back), running every timer due until then. */
  advanceTo(at: number): number {
    let ran = 0;
    for (;;) {
      const next = this.heap[0];
      if (next === undefined || next.at > at) break;
      this.runOne(next);
      ran++;
    }
    if (at > this.t) this.t = at;
    return ran;
  }

  /**
   * runUntilIdle runs timers in order until none is left, or until time would pass `maxMs` from
   * now (intervals never leave the clock idle); time stops at the last timer run, or at the limit.
   * Returns how many timers ran.
   */
  runUntilIdle(maxMs = 3_600_000): number {
    const limit = this.t + maxMs;
    let ran = 0;
    for (;;) {
      const next = this.heap[0];
      if (next === undefined) return ran;
      if (next.at > limit) {
        this.t = limit;
        return ran;
      }
      this.runOne(next);
      ran++;
    }
  }

  private runOne(timer: VirtualTimer): void {
    this.remove(timer);
    if (timer.at > this.t) this.t = timer.at;
    if (timer.period > 0) {
      timer.at = this.t + timer.period;
      timer.seq = this.seq++;
      this.push(timer);
    }
    timer.fn();
  }

  // ---- binary heap on (at, seq) ----

  private less(a: VirtualTimer, b: VirtualTimer): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }

  private push(timer: VirtualTimer): void {
    timer.heapIndex = this.heap.length;
    this.heap.push(timer);
    this.up(timer.heapIndex);
  }

  private remove(timer: VirtualTimer): void {
    const i = timer.heapIndex;
    const last = this.heap.pop()!;
    timer.heapIndex = -1;
    if (last === timer) return;
    this.heap[i] = last;
    last.heapIndex = i;
    this.down(i);
    this.up(last.heapIndex);
  }

  private up(i: number): void {
    const h = this.heap;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(h[i]!, h[p]!)) break;
      this.swap(i, p);
      i = p;
    }
  }

  private down(i: number): void {
    const h = this.heap;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && this.less(h[l]!, h[m]!)) m = l;
      if (r < h.length && this.less(h[r]!, h[m]!)) m = r;
      if (m === i) return;
      this.swap(i, m);
      i = m;
    }
  }

  private swap(i: number, j: number): void {
    const h = this.heap;
    const a = h[i]!;
    const b = h[j]!;
    h[i] = b;
    h[j] = a;
    a.heapIndex = j;
    b.heapIndex = i;
  }
}
