/**
 * soak is the memory soak: two hosts from network namespaces, a container on each that stays and
 * streams UDP to the other (iperf3 at a fixed rate, plus a ping every 200 ms) for `minutes`, while
 * on each host `cycles` attach/detach cycles of other containers (each with a DNS name, spread
 * evenly over the run; bench/attach-cycles.ts) come and go. Every {@link SAMPLE_EVERY_MS} it reads
 * each router's resident memory (VmRSS from /proc/PID/status), and it checks at the end that
 * nothing was left behind.
 *
 * Warm-up ends at the first sample taken once both a fifth of the run has passed and a tenth of the
 * cycles are done (2 min / 100 cycles for the default 10 min / 1,000). A Node process's RSS is a
 * sawtooth (V8 grows its heap, then a major collection gives memory back), so single readings are
 * not compared: the samples after warm-up are split into a first and a second half by time, and a
 * router is flat when the peak (max) of the second half is within {@link FLAT_LIMIT} of the first
 * half's. A leak keeps raising the peaks; garbage that V8 collects does not. The troughs (min) are
 * reported too, but do not decide: a half in which no major collection happened to run has a high
 * one. "After warm-up" is the first half's min–max, "end" the second half's.
 *
 * Needs root. Run from compiled JS:
 *
 * ```
 * node dist/bench/soak.js [--minutes 10] [--cycles 1000] [--bitrate 20M] [--samples-json FILE]
 * ```
 *
 * `--samples-json` also writes the whole {@link SoakResult}, every sample included, to FILE.
 *
 * Progress goes to stderr, the markdown table to stdout.
 *
 * Over 400 lines because it is one bench run: the statistics (warm-up, halves by time, the flat
 * test) are defined by how runSoak samples, and the table and the command line only show that
 * result; apart, the description above would no longer sit next to the code it describes.
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { launch, removeStateDirs, routerPid, waitPeers, weft } from '../e2e/weft.js';
import { type Host, Lab, type Netns, outputTail, requireRoot, stopProcess, waitUntil } from '../lab/netns.js';
import { readCpuTicks, readRssBytes } from './proc-counters.js';

/** SAMPLE_EVERY_MS is how often each router's RSS is read. */
export const SAMPLE_EVERY_MS = 5_000;
/** FLAT_LIMIT: a second-half peak RSS within this fraction of the first half's counts as flat. */
export const FLAT_LIMIT = 0.1;
/** CHURN_CONTAINERS is how many container namespaces each host's cycles take turns with. */
const CHURN_CONTAINERS = 4;
/** IPERF_PORT is the iperf3 server's port inside the receiving container. */
const IPERF_PORT = 5201;
/** CYCLES_JS is the compiled cycle driver, run inside each host. */
const CYCLES_JS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'attach-cycles.js');

/** SoakOptions size a {@link runSoak}. */
export interface SoakOptions {
  /** Length of the traffic, in minutes; the cycles are spread over it. */
  minutes: number;
  /** Attach/detach cycles on each host. */
  cycles: number;
  /** iperf3 UDP target rate (`-b`), e.g. `'20M'`. Default 20M. */
  bitrate?: string;
  /** Progress lines (stderr in the main). */
  log?: (line: string) => void;
}

/** RssSample is one reading of both routers. */
export interface RssSample {
  /** Milliseconds since the traffic started. */
  tMs: number;
  /** Cycles completed so far, per host. */
  cycles: [number, number];
  /** VmRSS of each router, in bytes. */
  rssBytes: [number, number];
}

/** RssRange is the lowest and highest RSS of a span of samples, in bytes. */
export interface RssRange {
  min: number;
  max: number;
}

/** SoakRouterResult is one router's memory over the soak. */
export interface SoakRouterResult {
  host: string;
  /** The first sample, before any traffic or cycle. */
  startBytes: number;
  /** First half after warm-up. */
  warm: RssRange;
  /** Second half after warm-up, up to the last sample. */
  end: RssRange;
  /** The last sample. */
  lastBytes: number;
  /** end.max / warm.max − 1. */
  peakGrowth: number;
  /** end.min / warm.min − 1. */
  troughGrowth: number;
  /** peakGrowth ≤ FLAT_LIMIT. */
  flat: boolean;
  /** Mean CPU over the run, percent of one core. */
  cpuPercent: number;
}

/** SoakResult is everything {@link renderSoakTable} shows. */
export interface SoakResult {
  date: string;
  machine: string;
  minutes: number;
  /** Cycles asked for and cycles done, per host. */
  cycles: number;
  cyclesDone: [number, number];
  elapsedMs: number;
  /** When warm-up ended and when the second half began (ms since the traffic started). */
  warmupAtMs: number;
  secondHalfAtMs: number;
  samples: RssSample[];
  routers: [SoakRouterResult, SoakRouterResult];
  traffic: {
    bitrate: string;
    udpPackets: number;
    udpLostPercent: number;
    pingSent: number;
    pingReceived: number;
  };
  /** What was left after the last cycle: must all be 0. */
  leftovers: { vwLinks: number; psEntries: number; allocations: number; names: number };
}

/** SoakSummary is what {@link summarize} finds in the samples. */
export interface SoakSummary {
  /** Time of the sample where warm-up ended. */
  warmupAtMs: number;
  /** Time where the second half after warm-up starts. */
  secondHalfAtMs: number;
  routers: Omit<SoakRouterResult, 'host' | 'cpuPercent'>[];
}

function range(xs: readonly number[]): RssRange {
  return { min: Math.min(...xs), max: Math.max(...xs) };
}

/**
 * summarize finds the warm-up point in `samples` (the first sample at or after `warmupMs` with at
 * least `warmupCycles` done on both hosts; the last sample if none is), splits the samples from
 * there into two halves by time, and returns each router's figures (see the module comment).
 * Throws for fewer than two samples.
 */
export function summarize(samples: readonly RssSample[], warmupMs: number, warmupCycles: number): SoakSummary {
  if (samples.length < 2) throw new Error(`too few RSS samples: ${samples.length}`);
  const last = samples[samples.length - 1] as RssSample;
  const at = samples.findIndex((s) => s.tMs >= warmupMs && s.cycles[0] >= warmupCycles && s.cycles[1] >= warmupCycles);
  // With no sample past warm-up, judge the last two (and say so through warmupAtMs).
  const from = at < 0 || at > samples.length - 2 ? samples.length - 2 : at;
  const after = samples.slice(from);
  const mid = ((after[0] as RssSample).tMs + last.tMs) / 2;
  let split = after.findIndex((s) => s.tMs >= mid);
  if (split <= 0) split = 1;
  const first = after.slice(0, split);
  const second = after.slice(split);
  const routers = ([0, 1] as const).map((i) => {
    const warm = range(first.map((s) => s.rssBytes[i]));
    const end = range(second.map((s) => s.rssBytes[i]));
    const peakGrowth = end.max / warm.max - 1;
    const troughGrowth = end.min / warm.min - 1;
    return {
      startBytes: (samples[0] as RssSample).rssBytes[i],
      warm,
      end,
      lastBytes: last.rssBytes[i],
      peakGrowth,
      troughGrowth,
      flat: peakGrowth <= FLAT_LIMIT,
    };
  });
  return { warmupAtMs: (after[0] as RssSample).tMs, secondHalfAtMs: (second[0] as RssSample).tMs, routers };
}

/** perMinute returns the highest RSS of each router in each minute of the run, in bytes. */
export function perMinute(samples: readonly RssSample[]): { minute: number; maxBytes: [number, number] }[] {
  const out: { minute: number; maxBytes: [number, number] }[] = [];
  for (const s of samples) {
    const minute = Math.floor(s.tMs / 60_000);
    let row = out[out.length - 1];
    if (row === undefined || row.minute !== minute) {
      row = { minute, maxBytes: [0, 0] };
      out.push(row);
    }
    row.maxBytes = [Math.max(row.maxBytes[0], s.rssBytes[0]), Math.max(row.maxBytes[1], s.rssBytes[1])];
  }
  return out;
}

/** CycleRun is one host's attach-cycles process with its progress. */
interface CycleRun {
  done: number;
  finished: Promise<{ code: number; last: string }>;
}

function startCycles(h: Host, containers: readonly Netns[], cycles: number, paceMs: number, prefix: string): CycleRun {
  const args = [CYCLES_JS, '--cycles', String(cycles), '--pace-ms', String(paceMs), '--name-prefix', prefix];
  const child = h.spawn(process.execPath, [...args, ...containers.map((c) => c.name)]);
  const run: CycleRun = { done: 0, finished: Promise.resolve({ code: 0, last: '' }) };
  let buffered = '';
  let last = '';
  child.stdout?.on('data', (b: Buffer) => {
    buffered += b.toString('utf8');
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) {
      last = line;
      const m = /^\{"done":(\d+)\}$/.exec(line);
      if (m) run.done = Number(m[1]);
    }
  });
  run.finished = new Promise((resolve) => {
    child.once('close', (code) => resolve({ code: code ?? -1, last: last || outputTail(child) }));
  });
  return run;
}

async function clockTicksPerSecond(): Promise<number> {
  try {
    return Number((await promisify(execFile)('getconf', ['CLK_TCK'])).stdout.trim()) || 100;
  } catch {
    return 100;
  }
}

/**
 * runSoak builds the two hosts, runs the soak described in the module comment, checks what was
 * left behind, and removes everything (also on failure). Rejects when a cycle fails or the
 * routers stop carrying traffic.
 */
export async function runSoak(opts: SoakOptions): Promise<SoakResult> {
  const { minutes, cycles } = opts;
  if (!(minutes > 0) || !Number.isInteger(cycles) || cycles < 1) {
    throw new Error(`soak needs minutes > 0 and whole cycles ≥ 1, got ${minutes} and ${cycles}`);
  }
  const log = opts.log ?? (() => {});
  const bitrate = opts.bitrate ?? '20M';
  const durationMs = Math.round(minutes * 60_000);
  const cpu = cpus();
  const topo = await Lab.create({ hosts: 2 });
  try {
    const hosts = topo.hosts as [Host, Host];
    const [h1, h2] = hosts;
    // Sleeve, named: every packet goes through the routers' own datapath, whatever the default.
    await launch(h1, [], ['--nickname', 'h1', '--encap', 'sleeve']);
    await launch(h2, [h1.underlayIp], ['--nickname', 'h2', '--encap', 'sleeve']);
    for (const h of hosts) await waitPeers(h, 1, 30_000);
    const stay: { ns: Netns; addr: string }[] = [];
    for (const [i, h] of hosts.entries()) {
      const ns = await topo.addNamespace(`s${i + 1}`);
      stay.push({ ns, addr: (await weft(h, ['attach', ns.name, '--name', `stay${i + 1}`])).stdout.trim() });
    }
    const [from, to] = stay as [{ ns: Netns; addr: string }, { ns: Netns; addr: string }];
    const churn: Netns[][] = [];
    for (const [i] of hosts.entries()) {
      const list: Netns[] = [];
      for (let k = 0; k < CHURN_CONTAINERS; k++) list.push(await topo.addNamespace(`k${i + 1}${k}`));
      churn.push(list);
    }
    await waitUntil(async () => (await from.ns.ping(to.addr, { count: 1, timeoutMs: 1_000 })).received === 1, {
      timeoutMs: 30_000,
      what: 'the two staying containers to meet',
    });
    const pids = (await Promise.all(hosts.map(routerPid))) as [number, number];
    const ticksPerS = await clockTicksPerSecond();
    const ticks0 = await Promise.all(pids.map((p) => readCpuTicks([p])));
    log(`routers ${pids.join(', ')}; ${minutes} min of UDP at ${bitrate} and ${cycles} cycles per host`);

    const server = await to.ns.iperf3Server(IPERF_PORT);
    const pinger = from.ns.spawn('ping', ['-n', '-q', '-i', '0.2', to.addr]);
    const started = Date.now();
    const iperf = from.ns.iperf3Client(to.addr, {
      udp: true,
      bitrate,
      length: 1200,
      seconds: Math.max(1, Math.round(durationMs / 1000)),
      port: IPERF_PORT,
    });
    const runs = hosts.map((h, i) => startCycles(h, churn[i] as Netns[], cycles, durationMs / cycles, `soak${i + 1}x`));
    const samples: RssSample[] = [];
    const sample = async () => {
      const rss = (await Promise.all(pids.map(readRssBytes))) as [number, number];
      samples.push({ tMs: Date.now() - started, cycles: [runs[0]!.done, runs[1]!.done], rssBytes: rss });
    };
    let finished = false;
    const all = Promise.all([iperf, ...runs.map((r) => r.finished)]).finally(() => {
      finished = true;
    });
    all.catch(() => {}); // awaited below; this only keeps an early rejection from going unhandled
    let nextLog = 60_000;
    while (!finished) {
      await sample();
      const t = Date.now() - started;
      if (t >= nextLog) {
        nextLog += 60_000;
        const mib = samples[samples.length - 1]!.rssBytes.map((b) => (b / 2 ** 20).toFixed(1));
        log(`${Math.round(t / 1000)} s: cycles ${runs[0]!.done}/${runs[1]!.done}, RSS ${mib.join(' / ')} MiB`);
      }
      await Promise.race([all.catch(() => {}), new Promise((r) => setTimeout(r, SAMPLE_EVERY_MS))]);
    }
    const [udp, ...cycleExits] = await all;
    await sample();
    const elapsedMs = Date.now() - started;
    const ticks1 = await Promise.all(pids.map((p) => readCpuTicks([p])));
    const closed = new Promise((r) => pinger.once('close', r));
    pinger.kill('SIGINT'); // ping prints its summary on SIGINT
    await Promise.race([closed, new Promise((r) => setTimeout(r, 5_000))]);
    await stopProcess(pinger);
    await server.stop();
    for (const [i, e] of cycleExits.entries()) {
      if (e.code !== 0) throw new Error(`attach cycles on h${i + 1} failed: ${e.last}`);
    }
    const ping = /(\d+) packets transmitted, (\d+) received/.exec(outputTail(pinger));

    // Nothing left behind: only the staying containers' interfaces, entries, addresses and names.
    // (The last detaches' tombstones may still be on their way to the other host: give them a moment.)
    const names = async (h: Host): Promise<number> => {
      const dns = JSON.parse((await weft(h, ['status', 'dns', '--json'])).stdout) as { entries: { name: string }[] };
      return dns.entries.filter((e) => e.name.startsWith('soak')).length;
    };
    await waitUntil(async () => (await names(h1)) + (await names(h2)) === 0, { timeoutMs: 10_000 }).catch(() => {});
    const leftovers = { vwLinks: 0, psEntries: 0, allocations: 0, names: 0 };
    for (const [i, h] of hosts.entries()) {
      const links = (await h.exec('ip', ['-br', 'link'])).stdout.split('\n').filter((l) => /^vw[0-9a-f]{8}/.test(l));
      leftovers.vwLinks += links.length - 1;
      const ps = JSON.parse((await weft(h, ['ps', '--json'])).stdout) as { target: string }[];
      leftovers.psEntries += ps.filter((a) => a.target !== stay[i]!.ns.name).length;
      const ipam = JSON.parse((await weft(h, ['status', 'ipam', '--json'])).stdout) as {
        allocations: { owner: string }[];
      };
      leftovers.allocations += ipam.allocations.filter(
        (a) => a.owner !== stay[i]!.ns.name && a.owner !== 'weft:expose',
      ).length;
      leftovers.names += await names(h);
    }

    const warmupMs = durationMs / 5;
    const s = summarize(samples, warmupMs, Math.ceil(cycles / 10));
    const routers = s.routers.map((r, i) => ({
      host: `h${i + 1}`,
      ...r,
      cpuPercent: ((ticks1[i]! - ticks0[i]!) / ticksPerS / (elapsedMs / 1000)) * 100,
    })) as [SoakRouterResult, SoakRouterResult];
    return {
      date: new Date().toISOString(),
      machine: `${cpu.length}× ${cpu[0]?.model.trim() ?? 'unknown cpu'}, Linux ${release()}, Node ${process.version}`,
      minutes,
      cycles,
      cyclesDone: [runs[0]!.done, runs[1]!.done],
      elapsedMs,
      warmupAtMs: s.warmupAtMs,
      secondHalfAtMs: s.secondHalfAtMs,
      samples,
      routers,
      traffic: {
        bitrate,
        udpPackets: udp.packets ?? 0,
        udpLostPercent: udp.lostPercent ?? Number.NaN,
        pingSent: ping ? Number(ping[1]) : 0,
        pingReceived: ping ? Number(ping[2]) : 0,
      },
      leftovers,
    };
  } finally {
    await topo.destroy();
    removeStateDirs(topo);
  }
}

const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/** renderSoakTable renders a {@link SoakResult} as markdown: an intro, the RSS table, RSS per minute and the checks. */
export function renderSoakTable(r: SoakResult): string {
  const pct = (x: number): string => `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)} %`;
  const span = (x: RssRange): string => `${mib(x.min)} – ${mib(x.max)}`;
  const s = (ms: number): string => `${(ms / 1000).toFixed(0)} s`;
  const lines = [
    `Memory soak (bench/soak.ts), ${r.date} on ${r.machine}: 2 hosts, ${r.minutes} min of container-to-container UDP ` +
      `(iperf3 ${r.traffic.bitrate}bit/s, 1200-byte datagrams, sleeve: every packet through the routers' userspace datapath) ` +
      `plus a ping every 200 ms, while ${r.cycles} attach/detach cycles with DNS names ran on each host ` +
      `(${r.cyclesDone.join(' and ')} done) over ${(r.elapsedMs / 60_000).toFixed(1)} min. VmRSS sampled every ` +
      `${SAMPLE_EVERY_MS / 1000} s. After warm-up = min – max from ${s(r.warmupAtMs)} to ${s(r.secondHalfAtMs)}, ` +
      `end = min – max from ${s(r.secondHalfAtMs)} to the end; flat = the end's peak within ${FLAT_LIMIT * 100} % of ` +
      `the warm-up's (RSS of a Node process is a sawtooth: single readings are not compared, and a trough depends on ` +
      `whether a major GC ran in that half).`,
    '',
    '| router | RSS at start | after warm-up | end | last sample | peak growth | trough growth | flat (peak ±10 %) | CPU (mean, one core) |',
    '|---|---:|---:|---:|---:|---:|---:|---|---:|',
    ...r.routers.map(
      (x) =>
        `| ${x.host} | ${mib(x.startBytes)} | ${span(x.warm)} | ${span(x.end)} | ${mib(x.lastBytes)} | ${pct(x.peakGrowth)} | ${pct(x.troughGrowth)} | ${x.flat ? 'yes' : '**no**'} | ${x.cpuPercent.toFixed(0)} % |`,
    ),
    '',
    `| minute | ${r.routers.map((x) => `${x.host} max RSS`).join(' | ')} |`,
    '|---:|---:|---:|',
    ...perMinute(r.samples).map((m) => `| ${m.minute + 1} | ${mib(m.maxBytes[0])} | ${mib(m.maxBytes[1])} |`),
    '',
    '| check | result |',
    '|---|---|',
    `| UDP datagrams sent / lost | ${r.traffic.udpPackets} / ${r.traffic.udpLostPercent.toFixed(2)} % |`,
    `| pings answered | ${r.traffic.pingReceived} of ${r.traffic.pingSent} |`,
    `| left behind after the last cycle (vw* links, ps entries, addresses, names) | ${r.leftovers.vwLinks}, ${r.leftovers.psEntries}, ${r.leftovers.allocations}, ${r.leftovers.names} |`,
  ];
  return lines.join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      minutes: { type: 'string', default: '10' },
      cycles: { type: 'string', default: '1000' },
      bitrate: { type: 'string', default: '20M' },
      'samples-json': { type: 'string' },
    },
  });
  const minutes = Number(values.minutes);
  const cycles = Number(values.cycles);
  if (!(minutes > 0) || !Number.isInteger(cycles) || cycles < 1 || !/^\d+[KMG]?$/.test(values.bitrate)) {
    console.error('usage: soak [--minutes 10] [--cycles 1000] [--bitrate 20M] [--samples-json FILE]');
    process.exit(2);
  }
  const reason = requireRoot();
  if (reason) {
    console.error(`soak: cannot run: ${reason}`);
    process.exit(1);
  }
  const t0 = Date.now();
  const r = await runSoak({
    minutes,
    cycles,
    bitrate: values.bitrate,
    log: (line) => console.error(`[${((Date.now() - t0) / 1000).toFixed(0)} s] soak: ${line}`),
  });
  if (values['samples-json'] !== undefined) writeFileSync(values['samples-json'], `${JSON.stringify(r, null, 1)}\n`);
  console.log(renderSoakTable(r));
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main();
}
