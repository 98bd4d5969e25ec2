/**
 * idle measures what a real router costs when nothing happens: N hosts (network namespaces of the
 * e2e lab), each running the real `weft launch` CLI, launched as a chain (host i is told only about
 * host i−1) and left to discover one another into a full mesh of N−1 peers each. Once every router
 * has all its peers established and a settling pause has passed, nothing is sent for `seconds`:
 * each router's CPU (utime + stime from /proc/PID/stat, as a share of one core), its resident
 * memory (VmRSS) at the end, and its underlay traffic (the host's veth counters) are measured; then
 * its heap and external memory are read from its own `/metrics`.
 *
 * ```
 * node dist/bench/idle.js [--hosts 5,10,20] [--seconds 60] [--settle 10] [--flags="--encap vxlan"]
 *     [--node-options="--max-semi-space-size=1"] [--smaps]
 * ```
 *
 * `--smaps` also prints (stderr) where the routers' resident memory is after the window, from
 * /proc/PID/smaps: mean kB per router by file and by kind of anonymous mapping.
 *
 * `--node-options` is handed to every router as NODE_OPTIONS (flags Node allows there, e.g.
 * `--require HOOK.cjs` for a profiling hook; `--cpu-prof` is not allowed there); routers are
 * stopped with `weft stop` before the topology goes. The heap figures are read from `/metrics`
 * after the window (the first scrape builds the registry, so it is not done inside the window).
 * RSS is the router process's VmRSS: its private memory plus the pages of the node binary it has
 * touched (about 45 MB, shared with every node process). Progress goes to stderr, the table to
 * stdout. Needs root. Every namespace, process and state directory it makes carries the run id
 * (e2e/netns.ts) and is removed on exit and on failure.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CLI, removeStateDirs, routerPids, stateDir, waitPeers, weft } from '../e2e/weft.js';
import { type Host, Lab, requireRoot } from '../lab/netns.js';
import { cpuPercent, readCpuTicks } from './proc-counters.js';

/** CLOCK_TICKS_PER_SECOND is Linux's USER_HZ (`getconf CLK_TCK`), the unit of /proc/PID/stat times. */
const CLOCK_TICKS_PER_SECOND = 100;
/** MB is the unit of the memory columns (10^6 bytes, as `ps` and the issue use). */
const MB = 1e6;

/** IdleOptions tune {@link runIdle}. */
export interface IdleOptions {
  /** hosts lists the cluster sizes to measure, one topology each (e.g. [5, 10, 20]). */
  hosts: readonly number[];
  /** seconds is the idle window measured, after the mesh is complete and settled. Default 60. */
  seconds?: number;
  /** settleSeconds is the pause between the full mesh and the window (start-up work dies down). Default 10. */
  settleSeconds?: number;
  /** flags are extra `weft launch` flags for every router (e.g. ['--encap', 'vxlan']). */
  flags?: readonly string[];
  /** nodeOptions is given to every router as NODE_OPTIONS (e.g. `--cpu-prof --cpu-prof-dir=DIR`). */
  nodeOptions?: string;
  /** smaps: log the routers' mean per-mapping breakdown (/proc/PID/smaps) after the window. */
  smaps?: boolean;
  /** log receives progress lines. */
  log?: (line: string) => void;
}

/** IdleResult is one cluster size's idle cost, per router (mean and max over the N routers). */
export interface IdleResult {
  hosts: number;
  /** peers is the number of established peers every router had (N − 1 for a full mesh). */
  peers: number;
  /** seconds is the measured window. */
  seconds: number;
  /** meshSeconds is how long the chain took from the first launch to the full mesh. */
  meshSeconds: number;
  cpuMeanPercent: number;
  cpuMaxPercent: number;
  rssMeanMb: number;
  rssMaxMb: number;
  /** privateMeanMb is the anonymous (private) part of RSS (RssAnon): RSS less the file pages it shares. */
  privateMeanMb: number;
  /**
   * pssMeanMb is the proportional set size (smaps_rollup Pss): private pages plus each shared page
   * divided by the processes sharing it; ussMeanMb is the unique set (Private_Clean + Private_Dirty),
   * what stopping the router would give back.
   */
  pssMeanMb: number;
  ussMeanMb: number;
  /** heapUsedMeanMb, heapTotalMeanMb, externalMeanMb: V8 heap and external (Buffers) memory, from /metrics. */
  heapUsedMeanMb: number;
  heapTotalMeanMb: number;
  externalMeanMb: number;
  /** txPacketsPerSecond, txBytesPerSecond: what one router's host sends on the underlay at idle (mean). */
  txPacketsPerSecond: number;
  txBytesPerSecond: number;
}

/** IDLE_TABLE_HEADER is the markdown table head of {@link renderIdleTable}. */
const IDLE_TABLE_HEADER = [
  '| routers | peers each | CPU % of a core, mean | max | RSS MB, mean | max | private MB | PSS MB | USS MB | heap used / total MB | external MB | underlay tx pkt/s | tx B/s |',
  '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
];

/** renderIdleTable renders {@link runIdle}'s rows as a markdown table (figures per router). */
export function renderIdleTable(rows: readonly IdleResult[]): string {
  const lines = [...IDLE_TABLE_HEADER];
  for (const r of rows) {
    lines.push(
      `| ${r.hosts} | ${r.peers} | ${r.cpuMeanPercent.toFixed(3)} | ${r.cpuMaxPercent.toFixed(3)} | ${r.rssMeanMb.toFixed(1)} | ${r.rssMaxMb.toFixed(1)} | ${r.privateMeanMb.toFixed(1)} | ${r.pssMeanMb.toFixed(1)} | ${r.ussMeanMb.toFixed(1)} | ${r.heapUsedMeanMb.toFixed(1)} / ${r.heapTotalMeanMb.toFixed(1)} | ${r.externalMeanMb.toFixed(1)} | ${r.txPacketsPerSecond.toFixed(1)} | ${r.txBytesPerSecond.toFixed(0)} |`,
    );
  }
  return lines.join('\n');
}

/** runIdle measures each cluster size of `opts.hosts` in turn, in its own topology. */
export async function runIdle(opts: IdleOptions): Promise<IdleResult[]> {
  const out: IdleResult[] = [];
  for (const n of opts.hosts) out.push(await runOne(n, opts));
  return out;
}

/** runOne builds N hosts, launches the chain, waits for the full mesh, then measures the window. */
async function runOne(n: number, opts: IdleOptions): Promise<IdleResult> {
  const log = opts.log ?? (() => {});
  const seconds = opts.seconds ?? 60;
  const settleSeconds = opts.settleSeconds ?? 10;
  // Discovery stops dialling at DISCOVERY_DEGREE (16) connections: ask for a full mesh at any N.
  const flags = ['--discovery-degree', String(Math.max(1, n - 1)), ...(opts.flags ?? [])];
  const env = opts.nodeOptions === undefined ? undefined : { NODE_OPTIONS: opts.nodeOptions };
  const topo = await Lab.create({ hosts: n });
  const hosts = topo.hosts as readonly Host[];
  try {
    const started = performance.now();
    let prev: Host | undefined;
    for (const h of hosts) {
      const peers = prev === undefined ? [] : [prev.underlayIp];
      const args = ['launch', ...peers, '--device', h.ifname('t'), '--state-dir', stateDir(h), ...flags];
      await h.exec(process.execPath, [CLI, ...args], { timeoutMs: 60_000, env });
      prev = h;
    }
    log(`${n} routers launched in ${((performance.now() - started) / 1000).toFixed(1)} s; waiting for the full mesh`);
    for (const h of hosts) await waitPeers(h, n - 1, 60_000 + n * 5_000);
    const meshSeconds = (performance.now() - started) / 1000;
    log(`full mesh of ${n} in ${meshSeconds.toFixed(1)} s; settling ${settleSeconds} s, then idle for ${seconds} s`);
    await sleep(settleSeconds * 1000);
    const pids: number[][] = [];
    for (const h of hosts) {
      const p = await routerPids(h);
      if (p.length === 0) throw new Error(`no router process in ${h.name}`);
      pids.push(p);
    }
    const link0 = await Promise.all(hosts.map((h) => linkCounters(h)));
    const ticks0 = await Promise.all(pids.map((p) => readCpuTicks(p)));
    const t0 = performance.now();
    await sleep(seconds * 1000);
    const ticks1 = await Promise.all(pids.map((p) => readCpuTicks(p)));
    const wallMs = performance.now() - t0;
    const link1 = await Promise.all(hosts.map((h) => linkCounters(h)));
    const memory = await Promise.all(pids.map((p) => readRss(p)));
    const rss = memory.map((m) => m.rss);
    if (opts.smaps === true) for (const line of await smapsBreakdown(pids.flat())) log(line);
    // After the window: scraping costs the router CPU, so it is not done inside it.
    const mem = await Promise.all(hosts.map((h) => heapOf(h)));
    let peers = Number.POSITIVE_INFINITY;
    for (const h of hosts) {
      const s = await waitPeers(h, n - 1, 10_000);
      peers = Math.min(peers, s.peers.filter((p) => p.state === 'established').length);
    }
    const cpu = ticks1.map((t, i) => cpuPercent(t - (ticks0[i] as number), wallMs, CLOCK_TICKS_PER_SECOND));
    const perSecond = (k: 'txPackets' | 'txBytes') =>
      mean(link1.map((l, i) => (l[k] - (link0[i] as LinkCounters)[k]) / (wallMs / 1000)));
    const result: IdleResult = {
      hosts: n,
      peers,
      seconds: wallMs / 1000,
      meshSeconds,
      cpuMeanPercent: mean(cpu),
      cpuMaxPercent: Math.max(...cpu),
      rssMeanMb: mean(rss) / MB,
      rssMaxMb: Math.max(...rss) / MB,
      privateMeanMb: mean(memory.map((m) => m.anon)) / MB,
      pssMeanMb: mean(memory.map((m) => m.pss)) / MB,
      ussMeanMb: mean(memory.map((m) => m.uss)) / MB,
      heapUsedMeanMb: mean(mem.map((m) => m.heapUsed)) / MB,
      heapTotalMeanMb: mean(mem.map((m) => m.heapTotal)) / MB,
      externalMeanMb: mean(mem.map((m) => m.external)) / MB,
      txPacketsPerSecond: perSecond('txPackets'),
      txBytesPerSecond: perSecond('txBytes'),
    };
    log(
      `${n} routers: CPU ${result.cpuMeanPercent.toFixed(3)} % mean, ${result.cpuMaxPercent.toFixed(3)} % max; RSS ${result.rssMeanMb.toFixed(1)} MB mean, ${result.rssMaxMb.toFixed(1)} MB max`,
    );
    return result;
  } finally {
    // A graceful stop first, so that a profiling hook (see --node-options) can write on exit.
    await Promise.all(hosts.map((h) => weft(h, ['stop'], { allowFail: true, timeoutMs: 20_000 }).catch(() => {})));
    await topo.destroy();
    removeStateDirs(topo);
  }
}

/** LinkCounters are a host's underlay interface transmit counters. */
interface LinkCounters {
  txPackets: number;
  txBytes: number;
}

/** linkCounters reads the transmit counters of `h`'s underlay veth (`ip -s -j link`). */
async function linkCounters(h: Host): Promise<LinkCounters> {
  const r = await h.ip('-s', '-j', 'link', 'show', 'dev', h.underlayDev);
  const [link] = JSON.parse(r.stdout) as { stats64?: { tx?: { bytes?: number; packets?: number } } }[];
  return { txPackets: link?.stats64?.tx?.packets ?? 0, txBytes: link?.stats64?.tx?.bytes ?? 0 };
}

/** MemoryFigures are a router's resident figures in bytes (see {@link IdleResult}). */
interface MemoryFigures {
  rss: number;
  anon: number;
  pss: number;
  uss: number;
}

/**
 * readRss sums VmRSS and RssAnon (/proc/PID/status) and Pss and Private_* (/proc/PID/smaps_rollup)
 * of `pids` in bytes; a pid that has exited counts 0.
 */
async function readRss(pids: readonly number[]): Promise<MemoryFigures> {
  const sum = { rss: 0, anon: 0, pss: 0, uss: 0 };
  const kb = (text: string, field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
  for (const pid of pids) {
    const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
    const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8').catch(() => '');
    sum.rss += kb(status, 'VmRSS');
    sum.anon += kb(status, 'RssAnon');
    sum.pss += kb(rollup, 'Pss');
    sum.uss += kb(rollup, 'Private_Clean') + kb(rollup, 'Private_Dirty');
  }
  return sum;
}

/**
 * smapsBreakdown summarises /proc/PID/smaps of `pids` as lines, mean resident kB per router: per
 * file (all its mappings), [heap] (glibc's brk heap), [stack], V8's heap pages (anonymous 256 kB
 * mappings), V8's code pages (anonymous 240 kB, between guard pages) and all other anonymous
 * memory (thread stacks, mmapped malloc blocks, buffers); largest first.
 */
async function smapsBreakdown(pids: readonly number[]): Promise<string[]> {
  const sum = new Map<string, { rss: number; priv: number }>();
  for (const pid of pids) {
    const text = await readFile(`/proc/${pid}/smaps`, 'utf8').catch(() => '');
    let entry: { rss: number; priv: number } | undefined;
    for (const line of text.split('\n')) {
      const head = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
      if (head) {
        const kb = (Number.parseInt(head[2] as string, 16) - Number.parseInt(head[1] as string, 16)) / 1024;
        const anon = kb === 256 ? 'V8 heap pages' : kb === 240 ? 'V8 code pages' : 'other anonymous';
        const name = head[3] !== '' ? (head[3] as string) : anon;
        entry = sum.get(name) ?? { rss: 0, priv: 0 };
        sum.set(name, entry);
        continue;
      }
      const field = /^(Rss|Private_Clean|Private_Dirty):\s+(\d+) kB/.exec(line);
      if (field && entry) {
        if (field[1] === 'Rss') entry.rss += Number(field[2]);
        else entry.priv += Number(field[2]);
      }
    }
  }
  const n = Math.max(1, pids.length);
  const rows = [...sum].filter(([, e]) => e.rss > 0).sort((a, b) => b[1].rss - a[1].rss);
  return [
    `resident memory per mapping, mean of ${pids.length} routers: kB (private kB)`,
    ...rows
      .slice(0, 16)
      .map(([name, e]) => `  ${(e.rss / n).toFixed(0).padStart(7)} (${(e.priv / n).toFixed(0).padStart(7)}) ${name}`),
  ];
}

/** HeapFigures are a router's V8 heap and external memory in bytes (0 when /metrics did not answer). */
interface HeapFigures {
  heapUsed: number;
  heapTotal: number;
  external: number;
}

/** heapOf reads a router's heap figures from its own Prometheus endpoint (loopback needs no token). */
async function heapOf(h: Host): Promise<HeapFigures> {
  const r = await h.exec('curl', ['-s', '--max-time', '5', 'http://127.0.0.1:6784/metrics'], { allowFail: true });
  const metric = (name: string): number =>
    Number(new RegExp(`^weft_process_nodejs_${name} (\\S+)$`, 'm').exec(r.stdout)?.[1] ?? 0);
  return {
    heapUsed: metric('heap_size_used_bytes'),
    heapTotal: metric('heap_size_total_bytes'),
    external: metric('external_memory_bytes'),
  };
}

function mean(xs: readonly number[]): number {
  return xs.length === 0 ? Number.NaN : xs.reduce((a, b) => a + b, 0) / xs.length;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** main runs the bench from the command line (see the file comment). */
async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      hosts: { type: 'string', default: '5,10,20' },
      seconds: { type: 'string', default: '60' },
      settle: { type: 'string', default: '10' },
      flags: { type: 'string', default: '' },
      'node-options': { type: 'string' },
      smaps: { type: 'boolean', default: false },
    },
  });
  const hosts = values.hosts.split(',').map(Number);
  const seconds = Number(values.seconds);
  const settleSeconds = Number(values.settle);
  if (hosts.some((n) => !Number.isInteger(n) || n < 2 || n > 50) || !(seconds > 0) || !(settleSeconds >= 0)) {
    console.error('usage: idle [--hosts 5,10,20] [--seconds 60] [--settle 10] [--flags="..."] [--node-options="..."]');
    return 2;
  }
  const reason = requireRoot();
  if (reason) {
    console.error(`idle bench: cannot run: ${reason}`);
    return 1;
  }
  const started = Date.now();
  const rows = await runIdle({
    hosts,
    seconds,
    settleSeconds,
    flags: values.flags.trim() === '' ? [] : values.flags.trim().split(/\s+/),
    nodeOptions: values['node-options'],
    smaps: values.smaps,
    log: (line) => console.error(`[${((Date.now() - started) / 1000).toFixed(0)} s] ${line}`),
  });
  console.log(renderIdleTable(rows));
  return 0;
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  process.exitCode = await main();
}
