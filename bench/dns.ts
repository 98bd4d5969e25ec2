/**
 * dns measures Weft's DNS server against dnsmasq serving the same names, side by side, with
 * dnsperf (Debian): 1,000 names `cN.weft.local` (every 10th with 3 A records), every query a
 * hit. Each server pinned to CPU 0, dnsperf to CPU 1, on 127.0.0.1. Two runs per server: as many
 * queries per second as it answers (100 outstanding), and a fixed 5,000 qps for the latency
 * percentiles (from dnsperf's per-query output) and the server's CPU use.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { quantile } from './attach.js';

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));

/** DnsRow is one server's figures. */
export interface DnsRow {
  server: string;
  qps: number;
  lostPct: number;
  p50Ms: number;
  p99Ms: number;
  cpuPct: number;
}

/** DnsBenchResult is every row plus the ratio of Weft to dnsmasq. */
export interface DnsBenchResult {
  rows: DnsRow[];
  names: number;
  seconds: number;
}

function clockTicks(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return Number(rest[11]) + Number(rest[12]); // utime + stime
}

async function waitReady(child: ChildProcess, port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const r = await run('dig', [
      '+short',
      '+time=1',
      '+tries=1',
      '-p',
      String(port),
      '@127.0.0.1',
      'c1.weft.local',
    ]).catch(() => undefined);
    if (r?.stdout.trim()) return;
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error('server did not answer');
}

async function dnsperf(
  port: number,
  file: string,
  seconds: number,
  qps?: number,
): Promise<{ qps: number; lost: number; lat: number[] }> {
  const args = ['-c', '1', 'dnsperf', '-s', '127.0.0.1', '-p', String(port), '-d', file, '-l', String(seconds)];
  if (qps !== undefined) args.push('-Q', String(qps), '-v');
  const { stdout } = await run('taskset', args, { maxBuffer: 256 * 1024 * 1024 });
  const q = /Queries per second:\s+([\d.]+)/.exec(stdout);
  const lost = /Queries lost:\s+(\d+) \(([\d.]+)%\)/.exec(stdout);
  const lat: number[] = [];
  if (qps !== undefined) {
    for (const m of stdout.matchAll(/^> \S+ .* ([\d.]+)$/gm)) lat.push(Number(m[1]) * 1000);
  }
  return { qps: Number(q?.[1] ?? 0), lost: Number(lost?.[2] ?? 0), lat };
}

async function measure(
  name: string,
  start: () => ChildProcess,
  port: number,
  file: string,
  seconds: number,
): Promise<DnsRow> {
  const child = start();
  try {
    await waitReady(child, port);
    const max = await dnsperf(port, file, seconds);
    const t0 = clockTicks(child.pid as number);
    const w0 = performance.now();
    const fixed = await dnsperf(port, file, seconds, 5_000);
    const cpuPct = ((clockTicks(child.pid as number) - t0) / 100 / ((performance.now() - w0) / 1000)) * 100;
    return {
      server: name,
      qps: max.qps,
      lostPct: max.lost,
      p50Ms: quantile(fixed.lat, 0.5),
      p99Ms: quantile(fixed.lat, 0.99),
      cpuPct,
    };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 200));
    child.kill('SIGKILL');
  }
}

/** runDnsBench measures dnsmasq and Weft's server (bench/dns-server.ts) one after the other. */
export async function runDnsBench(opts: { seconds?: number; names?: number } = {}): Promise<DnsBenchResult> {
  const seconds = opts.seconds ?? 10;
  const names = opts.names ?? 1_000;
  const dir = mkdtempSync(path.join(tmpdir(), 'weft-dnsbench-'));
  try {
    const queries: string[] = [];
    for (let i = 0; i < names; i++) queries.push(`c${i}.weft.local A`);
    // Distinct addresses: 10.32.K.I for record K of name I.
    const lines: string[] = [];
    for (let i = 0; i < names; i++) {
      const count = i % 10 === 0 ? 3 : 1;
      for (let k = 0; k < count; k++) lines.push(`10.${32 + k}.${(i >> 8) & 255}.${i & 255} c${i}.weft.local`);
    }
    const hostsFile = path.join(dir, 'hosts');
    writeFileSync(hostsFile, `${lines.join('\n')}\n`);
    const queryFile = path.join(dir, 'queries');
    writeFileSync(queryFile, `${queries.join('\n')}\n`);
    const rows: DnsRow[] = [];
    rows.push(
      await measure(
        'dnsmasq 2.90',
        () =>
          spawn(
            'taskset',
            [
              '-c',
              '0',
              'dnsmasq',
              '--no-daemon',
              '--no-resolv',
              '--no-hosts',
              `--addn-hosts=${hostsFile}`,
              '--listen-address=127.0.0.1',
              '--bind-interfaces',
              '--port=15353',
              '--pid-file=',
              '--cache-size=10000',
              '--local-ttl=1',
            ],
            { stdio: 'ignore' },
          ),
        15353,
        queryFile,
        seconds,
      ),
    );
    rows.push(
      await measure(
        'weft dns',
        () =>
          spawn('taskset', ['-c', '0', process.execPath, path.join(here, 'dns-server.js'), '15354', hostsFile], {
            stdio: 'ignore',
          }),
        15354,
        queryFile,
        seconds,
      ),
    );
    return { rows, names, seconds };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** renderDnsTable renders the rows with Weft's qps as a ratio of dnsmasq's. */
export function renderDnsTable(r: DnsBenchResult): string {
  const base = r.rows.find((x) => x.server.startsWith('dnsmasq'))?.qps ?? Number.NaN;
  return [
    '| server | A qps (max) | × dnsmasq | lost | p50 / p99 ms at 5k qps | server CPU at 5k qps |',
    '|---|---:|---:|---:|---:|---:|',
    ...r.rows.map(
      (x) =>
        `| ${x.server} | ${(x.qps / 1000).toFixed(1)}k | ${(x.qps / base).toFixed(2)} | ${x.lostPct.toFixed(2)}% | ${x.p50Ms.toFixed(3)} / ${x.p99Ms.toFixed(3)} | ${x.cpuPct.toFixed(0)}% |`,
    ),
  ].join('\n');
}
