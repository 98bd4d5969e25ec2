import { describe, expect, it } from 'vitest';
import { formatLoss, RAW_ID, RAW_VETH, renderTable, type TunnelResult } from './tunnels.js';

function row(
  over: Partial<TunnelResult> & Pick<TunnelResult, 'id' | 'name' | 'lossPermille' | 'tcpGbps'>,
): TunnelResult {
  return { pingAvgMs: 0.1, pingMedianMs: 0.1, ratioTcp: Number.NaN, ...over };
}

const meta = { date: '2026-01-01T00:00:00.000Z', machine: 'test', underlayMtu: 1500, overlayMtu: 1450 };

describe('formatLoss', () => {
  it('renders per mille as a percentage', () => {
    expect([0, 2, 10, 1000].map(formatLoss)).toEqual(['0', '0.2 %', '1 %', '100 %']);
  });
});

describe('renderTable', () => {
  const results = [
    row({ id: RAW_ID, name: RAW_VETH, lossPermille: 0, tcpGbps: 10, pingMedianMs: 0.05 }),
    row({
      id: 'weft-sleeve',
      name: 'weft sleeve',
      lossPermille: 0,
      tcpGbps: 2,
      pingMedianMs: 0.3,
      fragments: { created: 0, reassembly: 0 },
      cpuPercent: [100, 60],
      gbpsPerCore: 1.25,
    }),
    row({ id: RAW_ID, name: RAW_VETH, lossPermille: 10, tcpGbps: 1 }),
    row({
      id: 'weft-sleeve',
      name: 'weft sleeve',
      lossPermille: 10,
      tcpGbps: 0.5,
      framesDropped: 7,
      pingLost: 1,
      error: 'udp: a | b',
    }),
  ];
  const lines = renderTable(results, meta).split('\n');
  const cells = (line: string) => line.split(' | ').map((c) => c.replace(/^\| |\s\|$/g, ''));

  it('is a markdown table with one row per scenario and loss level', () => {
    expect(lines[0]).toContain('underlay MTU 1500, overlay MTU 1450');
    expect(lines[2]).toMatch(/^\| tunnel \| loss \| TCP Gbit\/s \| × raw veth \|/);
    expect(lines.slice(4)).toHaveLength(4);
    for (const l of lines.slice(2)) expect(l.startsWith('|') && l.endsWith('|')).toBe(true);
  });

  it('takes each ratio against raw veth of the same loss level', () => {
    expect(cells(lines[5]!)[3]).toBe('0.200');
    expect(cells(lines[7]!)[3]).toBe('0.500');
    expect(cells(lines[7]!)[1]).toBe('1 %');
  });

  it('shows fragments, router CPU and Gbit/s per core, and escapes pipes in notes', () => {
    const weft = cells(lines[5]!);
    expect(weft[9]).toBe('0/0');
    expect(weft[10]).toBe('100 / 60');
    expect(weft[11]).toBe('1.25');
    expect(lines[7]).toContain('7 frames dropped; 1/20 pings lost; error: udp: a \\| b');
  });
});
