import { describe, expect, it } from 'vitest';
import { PMTU_MIN, PMTU_PROBE_TIMEOUT_MS, PMTU_PROBE_TRIES, PMTU_REPROBE_MS } from '../constants.js';
import { PathMtu } from './pmtu.js';

/**
 * run drives a PathMtu against a simulated path that carries datagrams up to `path` bytes and
 * loses probes as `lose(size, n)` says, ticking every 500 ms (the heartbeat interval), until it
 * is confirmed or `maxMs` pass. Returns the time it took.
 */
function run(
  p: PathMtu,
  path: number,
  opts: { kernel?: number; lose?: (n: number) => boolean; from?: number; maxMs?: number } = {},
): number {
  let n = 0;
  const from = opts.from ?? 0;
  for (let t = from; t < from + (opts.maxMs ?? 120_000); t += 500) {
    const size = p.tick(t, opts.kernel ?? 0);
    if (size > 0 && size <= path && !(opts.lose?.(n++) ?? false)) p.acked(size, t + 1);
    if (p.state === 'confirmed') return t - from;
  }
  return Number.POSITIVE_INFINITY;
}

describe('PathMtu', () => {
  it('confirms the device MTU with one probe when the path carries it', () => {
    const p = new PathMtu(1500);
    expect(p.pmtu).toBe(1500); // optimistic until told otherwise
    expect(run(p, 1500)).toBe(0);
    expect(p.pmtu).toBe(1500);
  });

  it('finds a smaller path by probing alone (no ICMP: a black hole), and never goes above it', () => {
    for (const path of [1400, 1280, 1000, 600]) {
      const p = new PathMtu(1500);
      run(p, path);
      expect(p.state).toBe('confirmed');
      expect(p.pmtu).toBe(path);
    }
  });

  it('takes the kernel path MTU (lowered by ICMP) at once and confirms it', () => {
    const p = new PathMtu(1500);
    expect(run(p, 1400, { kernel: 1400 })).toBeLessThanOrEqual(500);
    expect(p.pmtu).toBe(1400);
  });

  it('does not mistake lost probes for a small path', () => {
    const p = new PathMtu(1500);
    // Lose every other probe: fewer than PMTU_PROBE_TRIES in a row.
    run(p, 1500, { lose: (n) => n % 2 === 0 && n < 2 * (PMTU_PROBE_TRIES - 1) });
    expect(p.pmtu).toBe(1500);
  });

  it('falls back to the floor while searching once the cap failed', () => {
    const p = new PathMtu(1500);
    let t = 0;
    expect(p.tick(t)).toBe(1500);
    for (let i = 0; i < PMTU_PROBE_TRIES; i++) {
      t += PMTU_PROBE_TIMEOUT_MS;
      p.tick(t);
    }
    expect(p.pmtu).toBe(PMTU_MIN);
    expect(p.status().ceiling).toBe(1499);
  });

  it('gives up a size at once when the kernel refuses to send it', () => {
    const p = new PathMtu(1500);
    expect(p.tick(0)).toBe(1500);
    p.sendFailed(1);
    expect(p.status().probing).toBeLessThan(1500);
    expect(p.status().probing).toBeGreaterThan(PMTU_MIN);
  });

  it('probes upwards again after PMTU_REPROBE_MS and finds a path that grew', () => {
    const p = new PathMtu(1500);
    run(p, 1300);
    expect(p.pmtu).toBe(1300);
    expect(run(p, 1500, { from: 2 * PMTU_REPROBE_MS })).toBeLessThan(Number.POSITIVE_INFINITY);
    expect(p.pmtu).toBe(1500);
  });

  it('ignores acks larger than the cap and non-positive sizes', () => {
    const p = new PathMtu(1500);
    p.tick(0, 1400);
    p.acked(1450, 1);
    p.acked(0, 1);
    p.acked(-5, 1);
    expect(p.pmtu).toBeLessThanOrEqual(1400);
  });
});
