import { describe, expect, it } from 'vitest';
import { realClock, VIRTUAL_EPOCH_MS, VirtualClock } from './clock.js';

describe('VirtualClock', () => {
  it('starts at its epoch and moves only when advanced', () => {
    const c = new VirtualClock();
    expect(c.now()).toBe(VIRTUAL_EPOCH_MS);
    const fired: number[] = [];
    c.setTimeout(() => fired.push(c.now()), 100);
    expect(c.advance(99)).toBe(0);
    expect(fired).toEqual([]);
    expect(c.advance(1)).toBe(1);
    expect(fired).toEqual([VIRTUAL_EPOCH_MS + 100]);
    expect(c.now()).toBe(VIRTUAL_EPOCH_MS + 100);
  });

  it('runs timers in order of due time, then of scheduling', () => {
    const c = new VirtualClock(0);
    const order: string[] = [];
    c.setTimeout(() => order.push('b30'), 30);
    c.setTimeout(() => order.push('a10'), 10);
    c.setTimeout(() => order.push('c30'), 30);
    c.setTimeout(() => order.push('d0'), 0);
    c.advance(50);
    expect(order).toEqual(['d0', 'a10', 'b30', 'c30']);
    expect(c.now()).toBe(50);
  });

  it('runs timers that timers schedule within the window, at their own times', () => {
    const c = new VirtualClock(0);
    const at: number[] = [];
    c.setTimeout(() => {
      at.push(c.now());
      c.setTimeout(() => at.push(c.now()), 5);
      c.setTimeout(() => at.push(c.now()), 0);
    }, 10);
    c.advance(12);
    expect(at).toEqual([10, 10]);
    c.advance(10);
    expect(at).toEqual([10, 10, 15]);
  });

  it('repeats intervals until cleared, and cleared timers never run', () => {
    const c = new VirtualClock(0);
    let n = 0;
    const iv = c.setInterval(() => n++, 10);
    const t = c.setTimeout(() => (n += 100), 15);
    c.clearTimeout(t);
    c.advance(35);
    expect(n).toBe(3);
    c.clearInterval(iv);
    c.advance(100);
    expect(n).toBe(3);
    expect(c.pending).toBe(0);
    c.clearInterval(iv); // twice is harmless
    c.clearTimeout(undefined);
  });

  it('clears a timer from inside another due at the same time', () => {
    const c = new VirtualClock(0);
    const ran: string[] = [];
    let second: ReturnType<VirtualClock['setTimeout']> | undefined;
    c.setTimeout(() => {
      ran.push('first');
      c.clearTimeout(second);
    }, 5);
    second = c.setTimeout(() => ran.push('second'), 5);
    c.advance(5);
    expect(ran).toEqual(['first']);
  });

  it('runUntilIdle runs every timeout and stops at the last one; intervals stop at the limit', () => {
    const c = new VirtualClock(0);
    let n = 0;
    c.setTimeout(() => n++, 1_000);
    c.setTimeout(() => c.setTimeout(() => n++, 500), 2_000);
    expect(c.runUntilIdle()).toBe(3);
    expect(n).toBe(2);
    expect(c.now()).toBe(2_500);
    c.setInterval(() => n++, 100);
    c.runUntilIdle(1_000);
    expect(n).toBe(12);
    expect(c.now()).toBe(3_500);
    expect(c.nextAt()).toBe(3_600);
  });

  it('keeps order over many timers (heap)', () => {
    const c = new VirtualClock(0);
    const seen: number[] = [];
    const timers = [];
    for (let i = 0; i < 1_000; i++) {
      const due = (i * 7919) % 1_000;
      timers.push(c.setTimeout(() => seen.push(due), due));
    }
    for (let i = 0; i < 1_000; i += 3) c.clearTimeout(timers[i]);
    c.runUntilIdle();
    expect(seen.length).toBe(1_000 - 334);
    expect([...seen].sort((a, b) => a - b)).toEqual(seen);
  });
});

describe('realClock', () => {
  it('reads epoch milliseconds and runs timers', async () => {
    expect(Math.abs(realClock.now() - Date.now())).toBeLessThan(1_000);
    const fired = await new Promise<boolean>((resolve) => {
      const t = realClock.setTimeout(() => resolve(true), 1);
      expect(t.unref()).toBe(t);
    });
    expect(fired).toBe(true);
    let n = 0;
    const iv = realClock.setInterval(() => n++, 1);
    realClock.clearInterval(iv);
    realClock.clearTimeout(realClock.setTimeout(() => n++, 1));
    await new Promise((r) => setTimeout(r, 10));
    expect(n).toBe(0);
  });
});
