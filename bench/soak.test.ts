import { describe, expect, it } from 'vitest';
import { perMinute, type RssSample, renderSoakTable, type SoakResult, summarize } from './soak.js';

const MiB = 2 ** 20;

/** samples every 5 s for `seconds`, one cycle per second on both hosts, RSS from `rss(tMs)`. */
function samples(seconds: number, rss: (tMs: number) => [number, number]): RssSample[] {
  const out: RssSample[] = [];
  for (let t = 0; t <= seconds * 1000; t += 5_000) out.push({ tMs: t, cycles: [t / 1000, t / 1000], rssBytes: rss(t) });
  return out;
}

/** sawtooth climbs from 80 to 110 MiB over each 5 minutes, then a collection drops it back. */
const sawtooth = (t: number): number => (80 + 30 * ((t % 300_000) / 300_000)) * MiB;

describe('summarize', () => {
  it('starts after both the warm-up time and cycles, and splits the rest in two halves', () => {
    const s = summarize(
      samples(600, () => [80 * MiB, 90 * MiB]),
      120_000,
      150,
    );
    expect(s.warmupAtMs).toBe(150_000);
    expect(s.secondHalfAtMs).toBe(375_000);
    expect(s.routers[0]).toMatchObject({ warm: { min: 80 * MiB, max: 80 * MiB }, peakGrowth: 0, flat: true });
    expect(s.routers[1]?.lastBytes).toBe(90 * MiB);
  });

  it('finds a garbage-collected sawtooth flat, though single readings differ by a third', () => {
    const s = summarize(
      samples(600, (t) => [sawtooth(t), sawtooth(t + 100_000)]),
      120_000,
      10,
    );
    for (const r of s.routers) {
      expect(r.end.max / r.end.min).toBeGreaterThan(1.3);
      expect(r.flat).toBe(true);
    }
  });

  it('finds a router whose floor and peaks keep rising after warm-up not flat', () => {
    const leak = (t: number): [number, number] => [sawtooth(t) * (1 + (0.4 * t) / 600_000), 50 * MiB];
    const s = summarize(samples(600, leak), 120_000, 10);
    expect(s.routers[0]!.peakGrowth).toBeGreaterThan(0.1);
    expect(s.routers[0]!.flat).toBe(false);
    expect(s.routers[1]!.flat).toBe(true);
  });

  it('does not count a high trough (no major GC in the second half) against a router whose peaks stay', () => {
    const plateau = (t: number): [number, number] => [t < 300_000 ? sawtooth(t) : 110 * MiB, 50 * MiB];
    const s = summarize(samples(600, plateau), 120_000, 10);
    expect(s.routers[0]!.troughGrowth).toBeGreaterThan(0.1);
    expect(s.routers[0]!.flat).toBe(true);
  });

  it('judges the last two samples when warm-up never ended, and rejects fewer than two', () => {
    const s = summarize(
      samples(60, () => [1 * MiB, 1 * MiB]),
      120_000,
      10,
    );
    expect(s.warmupAtMs).toBe(55_000);
    expect(() =>
      summarize(
        samples(0, () => [1, 1]),
        0,
        0,
      ),
    ).toThrow(/too few RSS samples/);
  });
});

describe('perMinute', () => {
  it('keeps the highest RSS of each minute', () => {
    const rows = perMinute(samples(125, (t) => [t, 2 * t]));
    expect(rows.map((r) => r.minute)).toEqual([0, 1, 2]);
    expect(rows[0]!.maxBytes).toEqual([55_000, 110_000]);
  });
});

describe('renderSoakTable', () => {
  it('renders one row per router, the minutes and the checks', () => {
    const r: SoakResult = {
      date: '2026-12-04T00:00:00Z',
      machine: 'test',
      minutes: 10,
      cycles: 1000,
      cyclesDone: [1000, 1000],
      elapsedMs: 600_000,
      warmupAtMs: 120_000,
      secondHalfAtMs: 360_000,
      samples: samples(120, () => [80 * MiB, 81 * MiB]),
      routers: [
        {
          host: 'h1',
          startBytes: 70 * MiB,
          warm: { min: 80 * MiB, max: 90 * MiB },
          end: { min: 81 * MiB, max: 92 * MiB },
          lastBytes: 85 * MiB,
          peakGrowth: 92 / 90 - 1,
          troughGrowth: 81 / 80 - 1,
          flat: true,
          cpuPercent: 30,
        },
        {
          host: 'h2',
          startBytes: 70 * MiB,
          warm: { min: 80 * MiB, max: 90 * MiB },
          end: { min: 100 * MiB, max: 120 * MiB },
          lastBytes: 120 * MiB,
          peakGrowth: 1 / 3,
          troughGrowth: 0.25,
          flat: false,
          cpuPercent: 20,
        },
      ],
      traffic: { bitrate: '20M', udpPackets: 1000, udpLostPercent: 0.5, pingSent: 3000, pingReceived: 2999 },
      leftovers: { vwLinks: 0, psEntries: 0, allocations: 0, names: 0 },
    };
    const t = renderSoakTable(r);
    expect(t).toMatch(
      /\| h1 \| 70\.0 MiB \| 80\.0 MiB – 90\.0 MiB \| 81\.0 MiB – 92\.0 MiB \| 85\.0 MiB \| \+2\.2 % \| \+1\.2 % \| yes \| 30 % \|/,
    );
    expect(t).toMatch(/\| h2 .*\| \+33\.3 % \| \+25\.0 % \| \*\*no\*\* \|/);
    expect(t).toMatch(/\| 3 \| 80\.0 MiB \| 81\.0 MiB \|/);
    expect(t).toMatch(/pings answered \| 2999 of 3000/);
  });
});
