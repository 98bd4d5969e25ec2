/**
 * netns is the one network-namespace lab, used by the e2e tests, the benches and `weft demo`: it
 * builds "hosts" from Linux network namespaces joined by veth pairs to one switch namespace (a Linux
 * bridge), runs commands inside them, and removes everything it created — on `destroy()`, on process
 * exit, on SIGINT/SIGTERM and after an uncaught exception (except a {@link LabOptions.persistent} lab,
 * which `weft demo --keep` leaves running and {@link removeLab} removes).
 *
 * ```
 *                      ┌──────────── <p>sw (switch netns) ────────────┐
 *                      │                   <p>br (bridge)              │
 *                      │        <p>s1        <p>s2    ...   <p>sN      │
 *                      └──────────┬────────────┬───────────────┬──────┘
 *                            veth │       veth │          veth │
 *                      <p>u1 ┌────┴───┐   ┌────┴───┐      ┌────┴───┐
 *                            │ <p>h1  │   │ <p>h2  │ ...  │ <p>hN  │   host netns, underlayNet + index
 *                            └────────┘   └────────┘      └────────┘
 * ```
 *
 * With {@link LabOptions.midPathMtu} the second host sits instead behind two router namespaces
 * (`<p>rt1`, `<p>rt2`) whose middle link has a smaller MTU. {@link Lab.setFrameLoss} makes the
 * switch drop a share of frames (nftables in the switch namespace), {@link Lab.partition} cuts
 * the switch between two groups of hosts until {@link Lab.heal}, and
 * {@link Lab.setUnderlayOffloads} turns segmentation offloads of the underlay veths off or on.
 *
 * `<p>` is the topology prefix `w<pid><letters>` (for example `w12345a`): every namespace and every
 * link carries the pid of the process that made it, so parallel runs never clash and {@link sweepStale}
 * can tell leftovers of dead runs from live ones. Nothing is ever created in, or changed in, the root
 * network namespace: links are created directly inside the test namespaces (`ip -n NS link add ...`).
 *
 * Every process started through {@link Netns.spawn}, and every process found inside our namespaces
 * (`ip netns pids`), is killed before its namespace is deleted: a process left inside would keep the
 * namespace and its links alive after the name is gone.
 *
 * Over 400 lines because it is one harness with one promise, that nothing it makes outlives the
 * run: the registry of live namespaces and processes, the exit and signal handlers, command
 * running, Netns, Host and Lab all feed or read that registry, and the ping and iperf3 parsers
 * define what Netns's own methods return. Split, the cleanup guarantee would rest on every file
 * registering what it creates.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { accessSync, constants as fsConstants, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { formatIPv4, parseIPv4 } from '../common/types.js';

/** DEFAULT_EXEC_TIMEOUT_MS bounds {@link Netns.exec} when no `timeoutMs` is given. */
export const DEFAULT_EXEC_TIMEOUT_MS = 30_000;
/** MAX_IFNAME_LEN is the kernel's limit on interface names (IFNAMSIZ − 1). */
export const MAX_IFNAME_LEN = 15;
/** MAX_PREFIX_LEN leaves room for the longest suffix the harness appends to a prefix (`u50`, `sw`, `br`). */
export const MAX_PREFIX_LEN = 11;
/** MAX_HOSTS is the most hosts one {@link Lab} holds (names and the /24 default must fit). */
export const MAX_HOSTS = 50;
/** STOP_GRACE_MS is how long a process gets between SIGTERM and SIGKILL. */
export const STOP_GRACE_MS = 2_000;
/** OUTPUT_TAIL_BYTES is how much of a spawned process's output {@link outputTail} keeps. */
export const OUTPUT_TAIL_BYTES = 16_384;

// ─── errors ─────────────────────────────────────────────────────────────────────────────────────

/**
 * ExecError reports a command that exited non-zero (or could not run, or timed out). The message
 * names the namespace and command and carries the command's stderr.
 */
export class ExecError extends Error {
  /** Exit code; 128+signal when killed by a signal; -1 when it never ran or timed out. */
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;

  constructor(message: string, result: ExecResult, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ExecError';
    this.exitCode = result.code;
    this.stdout = result.stdout;
    this.stderr = result.stderr;
  }
}

// ─── running commands ───────────────────────────────────────────────────────────────────────────

/** ExecOptions tune {@link Netns.exec}. */
export interface ExecOptions {
  /** Kill the command (SIGKILL) and reject after this many milliseconds. Default {@link DEFAULT_EXEC_TIMEOUT_MS}. */
  timeoutMs?: number;
  /** Written to the command's stdin, which is then closed. Without it stdin is empty. */
  input?: string;
  /** Added to (and overriding) this process's environment. */
  env?: Record<string, string>;
  /** Resolve with the exit code instead of rejecting when it is non-zero. Timeouts still reject. */
  allowFail?: boolean;
}

/** ExecResult is what a finished command printed and how it exited. */
export interface ExecResult {
  stdout: string;
  stderr: string;
  /** Exit code; 128+signal number when the command died from a signal. */
  code: number;
}

/** SpawnOptions tune {@link Netns.spawn}. */
export interface SpawnOptions {
  /** Added to (and overriding) this process's environment. */
  env?: Record<string, string>;
  /**
   * `'pipe'` (default): stdout and stderr are piped and drained by the harness, which keeps the last
   * {@link OUTPUT_TAIL_BYTES} for {@link outputTail}; you may add your own `'data'` listeners.
   * `'ignore'` discards output; `'inherit'` shares this process's stdout/stderr. stdin is always closed.
   */
  stdio?: 'pipe' | 'ignore' | 'inherit';
}

const signalNumbers: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };

function runProcess(file: string, args: readonly string[], label: string, opts: ExecOptions = {}): Promise<ExecResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: opts.env ? { ...process.env, ...opts.env } : process.env,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    let failedToStart: Error | undefined;
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    child.stdin?.on('error', () => {}); // EPIPE when the command does not read its input
    child.stdin?.end(opts.input ?? '');
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => {
      failedToStart = e;
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result: ExecResult = {
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        code: code ?? (signal ? 128 + (signalNumbers[signal] ?? 0) : -1),
      };
      if (failedToStart) {
        result.code = -1;
        reject(new ExecError(`${label}: could not start: ${failedToStart.message}`, result, { cause: failedToStart }));
      } else if (timedOut) {
        result.code = -1;
        reject(new ExecError(`${label}: timed out after ${timeoutMs} ms${tailOf(result.stderr)}`, result));
      } else if (result.code !== 0 && !opts.allowFail) {
        reject(
          new ExecError(`${label}: exited with code ${result.code}${tailOf(result.stderr || result.stdout)}`, result),
        );
      } else {
        resolve(result);
      }
    });
  });
}

function tailOf(text: string): string {
  const t = text.trim();
  if (t === '') return '';
  return `: ${t.length > 2000 ? `…${t.slice(-2000)}` : t}`;
}

/** Runs a command in the root namespace; used only for `ip netns add|del|pids|list` and `ip -n NS ...`. */
function runRoot(file: string, args: readonly string[], opts?: ExecOptions): Promise<ExecResult> {
  return runProcess(file, args, `${file} ${args.join(' ')}`, opts);
}

const tails = new WeakMap<ChildProcess, { text: string }>();

/**
 * outputTail returns the last {@link OUTPUT_TAIL_BYTES} of stdout+stderr (interleaved as received) of a
 * process started by {@link Netns.spawn} with `stdio: 'pipe'`, or `''`. Use it in error messages.
 */
export function outputTail(child: ChildProcess): string {
  return tails.get(child)?.text ?? '';
}

/**
 * stopProcess ends a child process: SIGTERM, then SIGKILL after `graceMs`. Resolves once it has exited
 * (immediately if it already had). Never rejects.
 */
export async function stopProcess(child: ChildProcess, graceMs = STOP_GRACE_MS): Promise<void> {
  if (hasExited(child)) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const killed = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      if (!hasExited(child)) child.kill('SIGKILL');
      resolve();
    }, graceMs);
  });
  await Promise.race([exited, killed]);
  clearTimeout(timer);
  if (!hasExited(child)) await exited;
}

function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null || child.pid === undefined;
}

/** WaitOptions tune {@link waitUntil}. */
export interface WaitOptions {
  /** Give up after this many milliseconds. Default 10 000. */
  timeoutMs?: number;
  /** Poll interval in milliseconds. Default 50. */
  intervalMs?: number;
  /** Says what is awaited, for the timeout message ("wg0 to appear in w123ah1"). */
  what?: string;
}

/**
 * waitUntil polls `check` until it returns true, and rejects after `timeoutMs` with a message naming
 * `what` (and the last error `check` threw, if any). An error thrown by `check` is retried, except an
 * {@link AbortWait}, which rejects at once: use it when waiting is pointless (the process died).
 */
export async function waitUntil(check: () => boolean | Promise<boolean>, opts: WaitOptions = {}): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const intervalMs = opts.intervalMs ?? 50;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (err) {
      if (err instanceof AbortWait) throw err;
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const why = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${opts.what ?? 'a condition'}${why}`, {
        cause: lastError,
      });
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** AbortWait, thrown from a {@link waitUntil} check, stops the wait at once with this error. */
export class AbortWait extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AbortWait';
  }
}

// ─── process-level cleanup registry ─────────────────────────────────────────────────────────────

/** Namespaces this process created and has not deleted yet, in creation order. */
const liveNamespaces = new Set<string>();
/** Processes started by {@link Netns.spawn} that have not exited yet. */
const liveChildren = new Set<ChildProcess>();
let handlersInstalled = false;

/**
 * removeNetnsEtc deletes /etc/netns/NAME (per-namespace files such as the resolv.conf a router
 * writes for an attached container), which `ip netns del` leaves behind. Never throws.
 */
function removeNetnsEtc(ns: string): void {
  try {
    rmSync(`/etc/netns/${ns}`, { recursive: true, force: true });
  } catch {
    // best effort
  }
}

/**
 * cleanupSync kills every process we spawned and every process inside our namespaces, then deletes the
 * namespaces; synchronous, so it works inside an 'exit' handler. Never throws.
 */
function cleanupSync(): void {
  for (const child of liveChildren) {
    if (!hasExited(child) && child.pid !== undefined) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  liveChildren.clear();
  const names = [...liveNamespaces].reverse();
  for (const ns of names) killNamespacePidsSync(ns);
  for (const ns of names) {
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: 5_000 });
    } catch {
      // best effort: the name may be gone already
    }
    removeNetnsEtc(ns);
    liveNamespaces.delete(ns);
  }
}

function killNamespacePidsSync(ns: string): void {
  let pids: number[];
  try {
    pids = parsePids(execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', timeout: 5_000 }));
  } catch {
    return;
  }
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

function parsePids(text: string): number[] {
  return text
    .split(/\s+/)
    .filter((s) => /^\d+$/.test(s))
    .map(Number)
    .filter((pid) => pid !== process.pid && pid > 1);
}

/** Kills every process inside `ns`: SIGTERM, then SIGKILL after `graceMs`. */
async function killNamespacePids(ns: string, graceMs: number): Promise<void> {
  const list = async (): Promise<number[]> => {
    const r = await runRoot('ip', ['netns', 'pids', ns], { allowFail: true, timeoutMs: 5_000 });
    return r.code === 0 ? parsePids(r.stdout) : [];
  };
  const signal = (pids: number[], sig: NodeJS.Signals): void => {
    for (const pid of pids) {
      try {
        process.kill(pid, sig);
      } catch {
        // already gone
      }
    }
  };
  const first = await list();
  if (first.length === 0) return;
  signal(first, 'SIGTERM');
  try {
    await waitUntil(async () => (await list()).length === 0, { timeoutMs: graceMs, intervalMs: 50 });
  } catch {
    signal(await list(), 'SIGKILL');
    await waitUntil(async () => (await list()).length === 0, { timeoutMs: 2_000, intervalMs: 20 }).catch(() => {});
  }
}

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', cleanupSync);
  // Signals reach only the main thread; a worker thread relies on 'exit'. node:worker_threads is
  // loaded here, not at import: the router's one-file build holds this module (for `weft demo`),
  // and loading worker_threads there cost every router ~0.25 MB of resident memory.
  const { isMainThread } = createRequire(import.meta.url)(
    'node:worker_threads',
  ) as typeof import('node:worker_threads');
  if (!isMainThread) return;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      cleanupSync();
      process.removeListener(sig, onSignal);
      // When nobody else handles the signal, re-raise it so the process dies as it would have.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}

// ─── naming ─────────────────────────────────────────────────────────────────────────────────────

/**
 * runId returns `w<pid>`: the part of every name this process creates that identifies the run. With a
 * pid of up to 7 digits it is at most 8 characters.
 */
export function runId(): string {
  return `w${process.pid}`;
}

let topologySeq = 0;

function seqLetters(n: number): string {
  let s = '';
  let v = n;
  do {
    s = String.fromCharCode(97 + (v % 26)) + s;
    v = Math.floor(v / 26) - 1;
  } while (v >= 0);
  return s;
}

function checkIfname(name: string): string {
  if (name.length > MAX_IFNAME_LEN) {
    throw new Error(`interface name ${name} is ${name.length} characters; the kernel allows ${MAX_IFNAME_LEN}`);
  }
  return name;
}

// ─── stale sweeping ─────────────────────────────────────────────────────────────────────────────

/** SweepOptions tune {@link sweepStale}. */
export interface SweepOptions {
  /** Decides whether the run with this pid is still alive. Default: `kill(pid, 0)` succeeds or says EPERM. Tests override it. */
  isAlive?: (pid: number) => boolean;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * sweepStale deletes namespaces left behind by dead runs: names matching `^<prefix><pid>[a-z]` (our
 * naming pattern; `prefix` defaults to `w` and must be letters) whose pid is no longer alive. Processes
 * still inside such a namespace are killed first (they are orphans of that run). Namespaces of live
 * runs, including this one, and every other namespace are left alone. Returns the names deleted.
 */
export async function sweepStale(prefix = 'w', opts: SweepOptions = {}): Promise<string[]> {
  if (!/^[a-z]+$/.test(prefix))
    throw new Error(`sweep prefix must be lower-case letters, got ${JSON.stringify(prefix)}`);
  const isAlive = opts.isAlive ?? pidAlive;
  const pattern = new RegExp(`^${prefix}(\\d+)[a-z]`);
  const swept: string[] = [];
  for (const ns of await listNamespaces()) {
    const m = pattern.exec(ns);
    if (!m?.[1]) continue;
    const pid = Number(m[1]);
    if (isAlive(pid)) continue;
    await killNamespacePids(ns, 500);
    const r = await runRoot('ip', ['netns', 'del', ns], { allowFail: true });
    if (r.code === 0) swept.push(ns);
    removeNetnsEtc(ns);
    liveNamespaces.delete(ns);
  }
  return swept;
}

let sweptOnce = false;

/**
 * removeLab removes a persistent lab ({@link LabOptions.persistent}) made by another process: every
 * namespace whose name starts with `prefix` (processes inside get SIGTERM, SIGKILL after `graceMs`),
 * with its /etc/netns files. Returns the names removed; a prefix that matches nothing is not an error.
 */
export async function removeLab(prefix: string, graceMs = STOP_GRACE_MS): Promise<string[]> {
  if (!/^[a-z][a-z0-9-]*$/.test(prefix)) throw new Error(`bad lab prefix ${JSON.stringify(prefix)}`);
  const names = (await listNamespaces()).filter((n) => n.startsWith(prefix));
  await Promise.all(names.map((n) => killNamespacePids(n, graceMs)));
  const removed: string[] = [];
  for (const n of names.reverse()) {
    const r = await runRoot('ip', ['netns', 'del', n], { allowFail: true });
    removeNetnsEtc(n);
    if (r.code === 0) removed.push(n);
  }
  return removed;
}

/** listNamespaces returns the names of all named network namespaces (`ip netns list`). */
export async function listNamespaces(): Promise<string[]> {
  const r = await runRoot('ip', ['netns', 'list']);
  return r.stdout
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[0] ?? '')
    .filter((s) => s !== '');
}

// ─── preconditions ──────────────────────────────────────────────────────────────────────────────

let rootReason: string | undefined | null = null;

/**
 * requireRoot returns a one-line reason why namespaces cannot be built here (not Linux, not root, no
 * `/dev/net/tun`, no iproute2 with netns support), or `undefined` when they can. The first time it finds
 * a reason it also prints it (console.warn), so a skipped suite is never silent:
 * `describe.skipIf(requireRoot())('…', …)`.
 */
export function requireRoot(): string | undefined {
  if (rootReason !== null) return rootReason;
  let reason: string | undefined;
  if (process.platform !== 'linux') {
    reason = `network namespaces need linux; this is ${process.platform}`;
  } else if (process.getuid?.() !== 0) {
    reason = `network namespaces need root; running as uid ${process.getuid?.()}`;
  } else {
    try {
      accessSync('/dev/net/tun', fsConstants.R_OK | fsConstants.W_OK);
    } catch {
      reason = '/dev/net/tun is missing or not accessible';
    }
    if (!reason) {
      try {
        execFileSync('ip', ['netns', 'list'], { stdio: 'ignore', timeout: 5_000 });
      } catch {
        reason = "'ip netns' does not work (is iproute2 installed?)";
      }
    }
  }
  if (reason) console.warn(`netns harness unavailable, skipping: ${reason}`);
  rootReason = reason;
  return reason;
}

// ─── ping and iperf3 ────────────────────────────────────────────────────────────────────────────

/** PingOptions tune {@link Netns.ping}. */
export interface PingOptions {
  /** Echo requests to send. Default 3. */
  count?: number;
  /** ICMP payload bytes (`-s`). Default 56. An IPv4 packet is size + 28 bytes. */
  size?: number;
  /** true: set DF and never fragment (`-M do`); false: allow fragmentation (`-M dont`); default: ping's own. */
  dontFragment?: boolean;
  /** Seconds between requests (`-i`); below 0.2 needs root. Default 0.2. */
  intervalS?: number;
  /** Overall deadline in milliseconds (`-w`, rounded up to seconds). Default count × interval + 3 s. */
  timeoutMs?: number;
}

/** PingResult is parsed `ping` output. RTT fields are NaN when nothing came back. */
export interface PingResult {
  transmitted: number;
  received: number;
  rttAvgMs: number;
  rttMinMs: number;
  rttMaxMs: number;
  rttMdevMs: number;
  /** The RTT of each reply, in arrival order. */
  rttsMs: number[];
  /** ping's whole stdout and stderr. */
  output: string;
}

/**
 * parsePing reads iputils `ping` output: the "N packets transmitted, M received" and "rtt
 * min/avg/max/mdev" summary lines and each reply's `time=`.
 */
export function parsePing(output: string): PingResult {
  const counts = /(\d+) packets transmitted, (\d+) (?:packets )?received/.exec(output);
  const rtt = /= ([\d.]+)\/([\d.]+)\/([\d.]+)\/([\d.]+) ms/.exec(output);
  const rttsMs = [...output.matchAll(/time[=<]([\d.]+) ms/g)].map((m) => Number(m[1]));
  return {
    transmitted: counts ? Number(counts[1]) : 0,
    received: counts ? Number(counts[2]) : 0,
    rttMinMs: rtt ? Number(rtt[1]) : Number.NaN,
    rttAvgMs: rtt ? Number(rtt[2]) : Number.NaN,
    rttMaxMs: rtt ? Number(rtt[3]) : Number.NaN,
    rttMdevMs: rtt ? Number(rtt[4]) : Number.NaN,
    rttsMs,
    output,
  };
}

/** Iperf3ClientOptions tune {@link Netns.iperf3Client}. */
export interface Iperf3ClientOptions {
  /** Test length in seconds (`-t`). Default 5. */
  seconds?: number;
  /** Server port (`-p`). Default 5201. */
  port?: number;
  /** UDP instead of TCP (`-u`). */
  udp?: boolean;
  /** Target bitrate (`-b`), e.g. `'0'` (unlimited) or `'100M'`. iperf3's default: unlimited TCP, 1 Mbit/s UDP. */
  bitrate?: string;
  /** Bytes per write (`-l`); for UDP the datagram payload size. */
  length?: number;
  /** Parallel streams (`-P`). Default 1. */
  parallel?: number;
  /** Receive instead of send (`-R`: the server sends). */
  reverse?: boolean;
}

/** Iperf3Result is the part of `iperf3 --json` a test needs. */
export interface Iperf3Result {
  /** TCP: what the receiver got. UDP: the rate the sender offered (see `receivedPps`). */
  bitsPerSecond: number;
  /** TCP only: sender retransmissions. */
  retransmits?: number;
  /** UDP only: datagrams sent. */
  packets?: number;
  /** UDP only: datagrams the receiver missed. */
  lostPackets?: number;
  /** UDP only: lostPackets / packets × 100. */
  lostPercent?: number;
  /** UDP only: datagrams the receiver got, per second. */
  receivedPps?: number;
  /** Measured duration in seconds. */
  seconds: number;
}

interface Iperf3Sum {
  bits_per_second?: number;
  retransmits?: number;
  packets?: number;
  lost_packets?: number;
  lost_percent?: number;
  seconds?: number;
}

interface Iperf3Json {
  error?: string;
  end?: { sum?: Iperf3Sum; sum_sent?: Iperf3Sum; sum_received?: Iperf3Sum };
}

/** parseIperf3 reads the JSON that `iperf3 --json` prints on the client; throws on iperf3's own `error`. */
export function parseIperf3(json: string, udp: boolean): Iperf3Result {
  let doc: Iperf3Json;
  try {
    doc = JSON.parse(json) as Iperf3Json;
  } catch (err) {
    throw new Error(`iperf3 printed no JSON: ${json.slice(0, 300)}`, { cause: err });
  }
  if (doc.error) throw new Error(`iperf3: ${doc.error}`);
  const end = doc.end ?? {};
  if (udp) {
    // iperf3 ≥ 3.12 reports the receiver's view in sum_received (lost counted by the server); older ones only sum.
    const sent = end.sum_sent ?? end.sum;
    const recv = end.sum_received ?? end.sum;
    if (!sent || !recv) throw new Error('iperf3 JSON has no end.sum');
    const packets = sent.packets ?? recv.packets ?? 0;
    const lost = recv.lost_packets ?? 0;
    const seconds = recv.seconds ?? sent.seconds ?? 0;
    const receivedPackets = (recv.packets ?? packets) - lost;
    return {
      bitsPerSecond: sent.bits_per_second ?? 0,
      packets,
      lostPackets: lost,
      lostPercent: recv.lost_percent ?? (packets > 0 ? (lost / packets) * 100 : 0),
      receivedPps: seconds > 0 ? receivedPackets / seconds : 0,
      seconds,
    };
  }
  const recv = end.sum_received;
  if (!recv) throw new Error('iperf3 JSON has no end.sum_received');
  return {
    bitsPerSecond: recv.bits_per_second ?? 0,
    retransmits: end.sum_sent?.retransmits,
    seconds: recv.seconds ?? 0,
  };
}

/** Iperf3Server is a running `iperf3 -s` inside a namespace; it serves one test at a time. */
export interface Iperf3Server {
  readonly port: number;
  readonly process: ChildProcess;
  /** Ends the server; resolves when it has exited. Idempotent. */
  stop(): Promise<void>;
}

// ─── namespaces and hosts ───────────────────────────────────────────────────────────────────────

/**
 * Netns is one named network namespace made by a {@link Lab}: run commands in it, start tracked
 * processes, ping and iperf3 from it. Nothing it starts outlives the topology.
 */
export class Netns {
  /** The namespace name (`ip netns list`), e.g. `w12345ah1`. */
  readonly name: string;
  readonly #topology: Lab;

  /** @internal Made by {@link Lab}; not for direct use. */
  constructor(name: string, topology: Lab) {
    this.name = name;
    this.#topology = topology;
  }

  /**
   * ifname returns an interface name for this run: the topology prefix + `suffix` (e.g. `vx` →
   * `w12345avx`). Throws when it would exceed 15 characters. The same suffix gives the same name in
   * every namespace of the topology, which is fine: each namespace has its own interfaces.
   */
  ifname(suffix: string): string {
    return checkIfname(`${this.#topology.prefix}${suffix}`);
  }

  /**
   * exec runs `cmd args` inside this namespace (`ip netns exec NAME cmd ...`) and resolves with its
   * output. Rejects with an {@link ExecError} whose message has the command and its stderr when the
   * exit code is not 0 (unless `allowFail`), when it cannot start, or on timeout.
   */
  exec(cmd: string, args: readonly string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
    return runProcess(
      'ip',
      ['netns', 'exec', this.name, cmd, ...args],
      `[${this.name}] ${[cmd, ...args].join(' ')}`,
      opts,
    );
  }

  /** ip runs `ip -n NAME args...` (iproute2 acting inside this namespace); rejects like {@link exec}. */
  ip(...args: string[]): Promise<ExecResult> {
    return runProcess('ip', ['-n', this.name, ...args], `[${this.name}] ip ${args.join(' ')}`);
  }

  /**
   * spawn starts a long-running `cmd args` inside this namespace and returns its ChildProcess, tracked:
   * {@link Lab.destroy}, process exit and SIGINT/SIGTERM kill it. stdin is closed. Stop it earlier
   * with {@link stopProcess}. An 'error' listener is attached, so a failed start never crashes the caller;
   * check `exitCode` and {@link outputTail}.
   */
  spawn(cmd: string, args: readonly string[] = [], opts: SpawnOptions = {}): ChildProcess {
    if (this.#topology.destroyed) throw new Error(`topology ${this.#topology.prefix} is destroyed`);
    installHandlers();
    const stdio = opts.stdio ?? 'pipe';
    const child = spawn('ip', ['netns', 'exec', this.name, cmd, ...args], {
      stdio: ['ignore', stdio, stdio],
      env: opts.env ? { ...process.env, ...opts.env } : process.env,
    });
    const tail = { text: '' };
    tails.set(child, tail);
    const keep = (b: Buffer): void => {
      tail.text = (tail.text + b.toString('utf8')).slice(-OUTPUT_TAIL_BYTES);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    child.on('error', (err) => {
      tail.text += `\nspawn error: ${err.message}`;
    });
    liveChildren.add(child);
    this.#topology.track(child);
    child.once('exit', () => liveChildren.delete(child));
    return child;
  }

  /**
   * ping sends ICMP echo requests from this namespace to `dstIp` and parses the result. Resolves also
   * when replies are missing (check `received`); rejects only when ping itself fails (exit code 2, e.g.
   * a bad address) or the deadline passes by far.
   */
  async ping(dstIp: string, opts: PingOptions = {}): Promise<PingResult> {
    const count = opts.count ?? 3;
    const interval = opts.intervalS ?? 0.2;
    const timeoutMs = opts.timeoutMs ?? Math.ceil(count * interval * 1000) + 3_000;
    const args = [
      '-n',
      '-c',
      String(count),
      '-i',
      String(interval),
      '-w',
      String(Math.max(1, Math.ceil(timeoutMs / 1000))),
    ];
    args.push('-W', '1');
    if (opts.size !== undefined) args.push('-s', String(opts.size));
    if (opts.dontFragment !== undefined) args.push('-M', opts.dontFragment ? 'do' : 'dont');
    args.push(dstIp);
    const r = await this.exec('ping', args, { allowFail: true, timeoutMs: timeoutMs + 5_000 });
    if (r.code !== 0 && r.code !== 1) {
      throw new ExecError(`[${this.name}] ping ${dstIp}: exited with code ${r.code}${tailOf(r.stderr || r.stdout)}`, r);
    }
    return parsePing(r.stdout + r.stderr);
  }

  /**
   * iperf3Server starts `iperf3 -s -p port` in this namespace and resolves once it is listening. It is
   * tracked like any {@link spawn}ed process; `stop()` it when done.
   */
  async iperf3Server(port = 5201): Promise<Iperf3Server> {
    const child = this.spawn('iperf3', ['-s', '-p', String(port)]);
    const server: Iperf3Server = { port, process: child, stop: () => stopProcess(child) };
    try {
      await waitUntil(
        async () => {
          if (hasExited(child))
            throw new AbortWait(`iperf3 server in ${this.name} exited: ${outputTail(child).trim()}`);
          const r = await this.exec('ss', ['-Hltn', `sport = :${port}`]);
          return r.stdout.trim() !== '';
        },
        { timeoutMs: 5_000, what: `iperf3 to listen on port ${port} in ${this.name}` },
      );
    } catch (err) {
      await server.stop();
      throw err;
    }
    return server;
  }

  /**
   * iperf3Client runs one `iperf3 -c dstIp --json` test from this namespace and parses it. Rejects when
   * iperf3 fails (the message has iperf3's error).
   */
  async iperf3Client(dstIp: string, opts: Iperf3ClientOptions = {}): Promise<Iperf3Result> {
    const seconds = opts.seconds ?? 5;
    const args = ['-c', dstIp, '-p', String(opts.port ?? 5201), '-t', String(seconds), '--json'];
    args.push('--connect-timeout', '3000');
    if (opts.udp) args.push('-u');
    if (opts.bitrate !== undefined) args.push('-b', opts.bitrate);
    if (opts.length !== undefined) args.push('-l', String(opts.length));
    if (opts.parallel !== undefined) args.push('-P', String(opts.parallel));
    if (opts.reverse) args.push('-R');
    const r = await this.exec('iperf3', args, { allowFail: true, timeoutMs: seconds * 1000 + 20_000 });
    try {
      return parseIperf3(r.stdout, opts.udp === true);
    } catch (err) {
      throw new ExecError(
        `[${this.name}] iperf3 ${args.join(' ')}: exited with code ${r.code}: ${(err as Error).message}${tailOf(r.stderr)}`,
        r,
        { cause: err },
      );
    }
  }
}

/**
 * Host is one simulated machine: a namespace with one underlay interface (`underlayDev`, address
 * `underlayIp`) plugged into the topology's switch.
 */
export class Host extends Netns {
  /** 1-based position in {@link Lab.hosts}. */
  readonly index: number;
  /** The underlay IPv4 address, without prefix length. */
  readonly underlayIp: string;
  /** The underlay interface inside this namespace (veth to the switch). */
  readonly underlayDev: string;

  /** @internal Made by {@link Lab.create}. */
  constructor(name: string, topology: Lab, index: number, underlayIp: string, underlayDev: string) {
    super(name, topology);
    this.index = index;
    this.underlayIp = underlayIp;
    this.underlayDev = underlayDev;
  }
}

/** LabOptions describe the hosts {@link Lab.create} builds. */
export interface LabOptions {
  /** Number of hosts, 1 to {@link MAX_HOSTS}. */
  hosts: number;
  /** MTU of every underlay veth end and of the bridge. Default 1500. */
  underlayMtu?: number;
  /**
   * Name prefix of every namespace and link: `w<our pid>` followed by a lower-case letter and optional
   * letters/digits, at most {@link MAX_PREFIX_LEN} characters. Default: {@link runId} + a letter unique
   * within this process (`w12345a`, `w12345b`, …).
   */
  prefix?: string;
  /**
   * persistent makes a lab that outlives this process (`weft demo --keep`): `prefix` is then required
   * and free-form (`[a-z][a-z0-9-]*`, at most {@link MAX_PREFIX_LEN} characters, no pid in it), its
   * namespaces are not removed at process exit, and no stale sweep runs; remove it with
   * {@link destroy} or, from another process, {@link removeLab}.
   */
  persistent?: boolean;
  /**
   * IPv4 underlay subnet in CIDR form; host i gets network + i. Default `192.168.<n>.0/24` with n derived
   * from the pid, so that concurrent runs rarely use the same numbers (they never share a link anyway).
   */
  underlayNet?: string;
  /**
   * Puts a routed path with a smaller MTU between the two hosts (needs `hosts: 2` and an underlayNet
   * of /24 or larger): hosts[0] stays on the switch, hosts[1] sits behind two router namespaces
   * whose middle link has this MTU, while both hosts' own links keep `underlayMtu`. Each router sends
   * ICMP "fragmentation needed" for a DF packet too big for the middle link, as a real router does.
   *
   * ```
   *   <p>h1 ─u1── <p>br ──s2─a─ <p>rt1 ─m══════m─ <p>rt2 ─b──u2─ <p>h2
   *          (underlayMtu)             (midPathMtu)        (underlayMtu)
   * ```
   *
   * With a /24 `underlayNet` N: h1 = N.1 and rt1 = N.62 on N.0/26; rt1 = N.65 and rt2 = N.66 on the
   * middle N.64/30; h2 = N.129 and rt2 = N.190 on N.128/26. Hosts route everything via their router.
   */
  midPathMtu?: number;
}

/** LOSS_TABLE is the nftables table (family bridge, switch namespace only) of {@link Lab.setFrameLoss}. */
const LOSS_TABLE = 'weft_loss';
/** PARTITION_TABLE is the nftables table (family bridge, switch namespace only) of {@link Lab.partition}. */
const PARTITION_TABLE = 'weft_partition';

/**
 * OFFLOAD_FEATURES pairs each `ethtool -K` name that {@link Lab.setUnderlayOffloads} turns off
 * with the line `ethtool -k` shows its state on.
 */
const OFFLOAD_FEATURES: readonly (readonly [string, string])[] = [
  ['tso', 'tcp-segmentation-offload'],
  ['gso', 'generic-segmentation-offload'],
  ['gro', 'generic-receive-offload'],
  ['tx-udp-segmentation', 'tx-udp-segmentation'],
  ['tx-udp_tnl-segmentation', 'tx-udp_tnl-segmentation'],
  ['tx-udp_tnl-csum-segmentation', 'tx-udp_tnl-csum-segmentation'],
  ['tx-gso-list', 'tx-gso-list'],
];

/**
 * parseEthtoolFeatures reads `ethtool -k DEV` output into feature → `'on'`/`'off'`, leaving out
 * features the driver fixes (`[fixed]`), which `ethtool -K` cannot change.
 */
export function parseEthtoolFeatures(text: string): Map<string, 'on' | 'off'> {
  const out = new Map<string, 'on' | 'off'>();
  for (const m of text.matchAll(/^\s*([\w-]+): (on|off)(.*)$/gm)) {
    if (!m[3]?.includes('[fixed]')) out.set(m[1]!, m[2] as 'on' | 'off');
  }
  return out;
}

/**
 * Lab is a switch namespace with a bridge and N host namespaces, each joined to the bridge by a
 * veth pair (see the diagram at the top of this file). Create with {@link Lab.create}; always
 * {@link Lab.destroy} it (in `afterAll` / `finally`). Process exit and SIGINT/SIGTERM destroy
 * whatever is left.
 */
export class Lab {
  /** Name prefix of everything this topology created, e.g. `w12345a`. */
  readonly prefix: string;
  /** The hosts, in order (`hosts[0].index === 1`). */
  readonly hosts: Host[] = [];
  /** The switch namespace. */
  readonly switchNs: string;
  /** The bridge inside the switch namespace. */
  readonly bridge: string;
  readonly underlayMtu: number;
  /** The underlay subnet in CIDR form. */
  readonly underlayNet: string;
  /**
   * The router namespaces of a mid-path topology ({@link LabOptions.midPathMtu}), in path order
   * from hosts[0]; empty otherwise.
   */
  readonly routers: Netns[] = [];
  /** MTU of the routed middle link, or undefined when the hosts share the switch. */
  readonly midPathMtu: number | undefined;
  /** persistent: the lab outlives this process ({@link LabOptions.persistent}). */
  readonly persistent: boolean;
  readonly #namespaces: string[] = [];
  readonly #children = new Set<ChildProcess>();
  /** Every underlay veth end (hosts', switch ports, routers'), for {@link setUnderlayOffloads}. */
  readonly #underlayLinks: { ns: Netns; dev: string }[] = [];
  /** Offload settings of each underlay link before the first {@link setUnderlayOffloads}(false), keyed `ns/dev`. */
  readonly #offloadDefaults = new Map<string, string[]>();
  #switch: Netns | undefined;
  #destroying: Promise<void> | undefined;

  private constructor(
    prefix: string,
    underlayMtu: number,
    underlayNet: string,
    midPathMtu: number | undefined,
    persistent: boolean,
  ) {
    this.prefix = prefix;
    this.persistent = persistent;
    this.switchNs = `${prefix}sw`;
    this.bridge = checkIfname(`${prefix}br`);
    this.underlayMtu = underlayMtu;
    this.underlayNet = underlayNet;
    this.midPathMtu = midPathMtu;
  }

  /** switchNetns is the switch namespace that holds the bridge (where {@link setFrameLoss} drops frames). */
  get switchNetns(): Netns {
    if (!this.#switch) throw new Error(`topology ${this.prefix} has no switch namespace`);
    return this.#switch;
  }

  /** destroyed is true once {@link destroy} has been called. */
  get destroyed(): boolean {
    return this.#destroying !== undefined;
  }

  /** namespaces lists the names of every namespace this topology created and has not deleted. */
  get namespaces(): readonly string[] {
    return [...this.#namespaces];
  }

  /**
   * create builds the switch and `opts.hosts` hosts and resolves when every underlay link is up and
   * addressed. On failure it removes what it built and rejects. The first call in a process also runs
   * {@link sweepStale} for leftovers of dead runs.
   */
  static async create(opts: LabOptions): Promise<Lab> {
    const { hosts } = opts;
    if (!Number.isInteger(hosts) || hosts < 1 || hosts > MAX_HOSTS) {
      throw new Error(`hosts must be an integer from 1 to ${MAX_HOSTS}, got ${hosts}`);
    }
    const mtu = opts.underlayMtu ?? 1500;
    if (!Number.isInteger(mtu) || mtu < 576 || mtu > 65535)
      throw new Error(`underlayMtu must be 576..65535, got ${mtu}`);
    const seq = topologySeq++;
    const persistent = opts.persistent === true;
    if (persistent && (opts.prefix === undefined || !/^[a-z][a-z0-9-]*$/.test(opts.prefix))) {
      throw new Error(`a persistent lab needs a prefix of [a-z][a-z0-9-]*, got ${JSON.stringify(opts.prefix)}`);
    }
    const prefix = opts.prefix ?? `${runId()}${seqLetters(seq)}`;
    if (prefix.length > MAX_PREFIX_LEN) {
      throw new Error(`prefix ${JSON.stringify(prefix)} is longer than ${MAX_PREFIX_LEN} characters`);
    }
    if (!persistent && !new RegExp(`^${runId()}[a-z][a-z0-9]*$`).test(prefix)) {
      throw new Error(
        `prefix must be ${runId()} + a lower-case letter + [a-z0-9]*, at most ${MAX_PREFIX_LEN} characters; got ${JSON.stringify(prefix)}`,
      );
    }
    const net = opts.underlayNet ?? `192.168.${((process.pid + seq * 7) % 250) + 1}.0/24`;
    const [netIp, lenText] = net.split('/');
    const len = Number(lenText);
    if (!netIp || !Number.isInteger(len) || len < 8 || len > 30)
      throw new Error(`bad underlayNet ${JSON.stringify(net)}`);
    const size = 2 ** (32 - len);
    const base = parseIPv4(netIp) - (parseIPv4(netIp) % size);
    if (hosts > size - 2) throw new Error(`underlayNet ${net} has no room for ${hosts} hosts`);
    const midPathMtu = opts.midPathMtu;
    if (midPathMtu !== undefined) {
      if (hosts !== 2) throw new Error(`midPathMtu needs exactly 2 hosts, got ${hosts}`);
      if (!Number.isInteger(midPathMtu) || midPathMtu < 576 || midPathMtu > mtu)
        throw new Error(`midPathMtu must be 576..underlayMtu (${mtu}), got ${midPathMtu}`);
      if (len > 24) throw new Error(`midPathMtu needs an underlayNet of /24 or larger, got ${net}`);
    }
    if (!sweptOnce && !persistent) {
      sweptOnce = true;
      await sweepStale('w');
    }

    const topo = new Lab(prefix, mtu, `${formatIPv4(base)}/${len}`, midPathMtu, persistent);
    try {
      const existing = new Set(await listNamespaces());
      const routerNames = midPathMtu === undefined ? [] : [`${prefix}rt1`, `${prefix}rt2`];
      for (const name of [
        topo.switchNs,
        ...Array.from({ length: hosts }, (_, i) => `${prefix}h${i + 1}`),
        ...routerNames,
      ]) {
        if (existing.has(name)) throw new Error(`namespace ${name} already exists`);
      }
      const sw = await topo.#addNamespace(topo.switchNs);
      topo.#switch = sw;
      await sw.ip('link', 'add', topo.bridge, 'type', 'bridge');
      if (midPathMtu !== undefined) {
        await topo.#buildMidPath(sw, base, mtu, midPathMtu);
        return topo;
      }
      for (let i = 1; i <= hosts; i++) {
        const ns = `${prefix}h${i}`;
        const hostDev = checkIfname(`${prefix}u${i}`);
        const swDev = checkIfname(`${prefix}s${i}`);
        await topo.#addNamespace(ns);
        const host = new Host(ns, topo, i, formatIPv4(base + i), hostDev);
        const m = String(mtu);
        await host.ip(
          'link',
          'add',
          hostDev,
          'mtu',
          m,
          'type',
          'veth',
          'peer',
          'name',
          swDev,
          'mtu',
          m,
          'netns',
          sw.name,
        );
        await sw.ip('link', 'set', swDev, 'master', topo.bridge, 'up');
        await host.ip('addr', 'add', `${host.underlayIp}/${len}`, 'dev', hostDev);
        await host.ip('link', 'set', hostDev, 'up');
        topo.hosts.push(host);
        topo.#underlayLinks.push({ ns: host, dev: hostDev }, { ns: sw, dev: swDev });
      }
      await sw.ip('link', 'set', topo.bridge, 'mtu', String(mtu), 'up');
    } catch (err) {
      await topo.destroy().catch(() => {});
      throw err;
    }
    return topo;
  }

  /** Builds the routed two-host path of {@link LabOptions.midPathMtu} (the address plan is there). */
  async #buildMidPath(sw: Netns, base: number, mtu: number, midMtu: number): Promise<void> {
    const p = this.prefix;
    const ip = (offset: number): string => formatIPv4(base + offset);
    const veth = async (a: Netns, aDev: string, aMtu: number, b: Netns, bDev: string, bMtu: number) => {
      await a.ip(
        ...['link', 'add', checkIfname(aDev), 'mtu', String(aMtu), 'type', 'veth'],
        ...['peer', 'name', checkIfname(bDev), 'mtu', String(bMtu), 'netns', b.name],
      );
      this.#underlayLinks.push({ ns: a, dev: aDev }, { ns: b, dev: bDev });
    };
    const up = async (ns: Netns, dev: string, cidr: string) => {
      await ns.ip('addr', 'add', cidr, 'dev', dev);
      await ns.ip('link', 'set', dev, 'up');
    };
    await this.#addNamespace(`${p}h1`);
    const h1 = new Host(`${p}h1`, this, 1, ip(1), `${p}u1`);
    const rt1 = await this.#addNamespace(`${p}rt1`);
    const rt2 = await this.#addNamespace(`${p}rt2`);
    await this.#addNamespace(`${p}h2`);
    const h2 = new Host(`${p}h2`, this, 2, ip(129), `${p}u2`);
    this.routers.push(rt1, rt2);
    // h1 and rt1 on the switch (N.0/26).
    await veth(h1, `${p}u1`, mtu, sw, `${p}s1`, mtu);
    await veth(rt1, `${p}a`, mtu, sw, `${p}s2`, mtu);
    for (const dev of [`${p}s1`, `${p}s2`]) await sw.ip('link', 'set', dev, 'master', this.bridge, 'up');
    await sw.ip('link', 'set', this.bridge, 'mtu', String(mtu), 'up');
    await up(h1, `${p}u1`, `${ip(1)}/26`);
    await up(rt1, `${p}a`, `${ip(62)}/26`);
    // The middle link, N.64/30, at midMtu on both ends.
    await veth(rt1, `${p}m`, midMtu, rt2, `${p}m`, midMtu);
    await up(rt1, `${p}m`, `${ip(65)}/30`);
    await up(rt2, `${p}m`, `${ip(66)}/30`);
    // rt2 and h2 (N.128/26).
    await veth(rt2, `${p}b`, mtu, h2, `${p}u2`, mtu);
    await up(rt2, `${p}b`, `${ip(190)}/26`);
    await up(h2, `${p}u2`, `${ip(129)}/26`);
    await h1.ip('route', 'add', 'default', 'via', ip(62));
    await h2.ip('route', 'add', 'default', 'via', ip(190));
    await rt1.ip('route', 'add', `${ip(128)}/26`, 'via', ip(66));
    await rt2.ip('route', 'add', `${ip(0)}/26`, 'via', ip(65));
    for (const rt of [rt1, rt2]) await rt.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    this.hosts.push(h1, h2);
  }

  /**
   * setFrameLoss makes the switch drop `permille` of every 1000 frames it forwards between its ports,
   * at random, in both directions (an nftables table of family `bridge` in the switch namespace:
   * `numgen random mod 1000 < permille drop` on the forward hook); 0 removes the table. Frames are
   * what the underlay veths carry: turn {@link setUnderlayOffloads} off so that one frame is one
   * wire-sized packet. Nothing is installed outside the switch namespace.
   */
  async setFrameLoss(permille: number): Promise<void> {
    if (!Number.isInteger(permille) || permille < 0 || permille > 1000)
      throw new Error(`frame loss must be an integer 0..1000 per mille, got ${permille}`);
    // Declaring the table first makes the delete succeed whether or not it existed; one transaction.
    const script = [`table bridge ${LOSS_TABLE} {}`, `delete table bridge ${LOSS_TABLE}`];
    if (permille > 0) {
      script.push(
        `table bridge ${LOSS_TABLE} {`,
        '  chain forward {',
        '    type filter hook forward priority 0; policy accept;',
        // numgen's range is 0..999, so "< 1000" is out of range: all frames is a plain drop.
        permille === 1000 ? '    counter drop' : `    numgen random mod 1000 < ${permille} counter drop`,
        '  }',
        '}',
      );
    }
    await this.switchNetns.exec('nft', ['-f', '-'], { input: `${script.join('\n')}\n` });
  }

  /**
   * droppedFrames reads how many frames the {@link setFrameLoss} rule has dropped since it was set
   * (0 when no loss is set).
   */
  async droppedFrames(): Promise<number> {
    const r = await this.switchNetns.exec('nft', ['list', 'table', 'bridge', LOSS_TABLE], { allowFail: true });
    return r.code === 0 ? Number(/counter packets (\d+)/.exec(r.stdout)?.[1] ?? 0) : 0;
  }

  /**
   * partition cuts the underlay between two groups of hosts, as a broken switch would: the switch
   * drops every frame (ARP included) forwarded from a port of a host in `a` to a port of a host in
   * `b`, and back (an nftables table of family `bridge` in the switch namespace, matching the
   * bridge ports by name). Hosts within a group, and hosts in neither group, still reach everyone
   * they reached before. A later call replaces the cut; {@link heal} removes it. Independent of
   * {@link setFrameLoss}. Refused for a mid-path topology, whose hosts do not share the switch.
   */
  async partition(a: readonly Host[], b: readonly Host[]): Promise<void> {
    if (this.midPathMtu !== undefined) throw new Error(`topology ${this.prefix} routes its hosts: no switch to cut`);
    const ports = (group: readonly Host[], which: string): string => {
      if (group.length === 0) throw new Error(`partition group ${which} is empty`);
      for (const h of group) {
        if (this.hosts[h.index - 1] !== h) throw new Error(`${h.name} is not a host of topology ${this.prefix}`);
      }
      // Host i is plugged into the bridge through the switch port <p>s<i> (see create()).
      return `{ ${group.map((h) => `"${this.prefix}s${h.index}"`).join(', ')} }`;
    };
    const pa = ports(a, 'a');
    const pb = ports(b, 'b');
    const both = a.find((h) => b.includes(h));
    if (both) throw new Error(`${both.name} is on both sides of the partition`);
    await this.switchNetns.exec('nft', ['-f', '-'], {
      input: [
        `table bridge ${PARTITION_TABLE} {}`,
        `delete table bridge ${PARTITION_TABLE}`,
        `table bridge ${PARTITION_TABLE} {`,
        '  chain forward {',
        '    type filter hook forward priority -10; policy accept;',
        `    iifname ${pa} oifname ${pb} counter drop`,
        `    iifname ${pb} oifname ${pa} counter drop`,
        '  }',
        '}',
        '',
      ].join('\n'),
    });
  }

  /** heal removes the cut of {@link partition}, if any; frame loss set by {@link setFrameLoss} stays. */
  async heal(): Promise<void> {
    const script = `table bridge ${PARTITION_TABLE} {}\ndelete table bridge ${PARTITION_TABLE}\n`;
    await this.switchNetns.exec('nft', ['-f', '-'], { input: script });
  }

  /** partitionedFrames reads how many frames the {@link partition} cut has dropped (0 when healed). */
  async partitionedFrames(): Promise<number> {
    const r = await this.switchNetns.exec('nft', ['list', 'table', 'bridge', PARTITION_TABLE], { allowFail: true });
    if (r.code !== 0) return 0;
    return [...r.stdout.matchAll(/counter packets (\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
  }

  /**
   * setUnderlayOffloads turns segmentation and receive offloads (TSO, GSO, GRO, and UDP, tunnel
   * and fraglist GSO) off or back on for every underlay veth end: the hosts', the switch ports and
   * the routers'. Off, every frame on the underlay is at most one MTU, so a dropped frame is one
   * packet whatever the tunnel; on restores what the links had before the first call with false.
   */
  async setUnderlayOffloads(on: boolean): Promise<void> {
    for (const { ns, dev } of this.#underlayLinks) {
      const key = `${ns.name}/${dev}`;
      if (on) {
        const saved = this.#offloadDefaults.get(key);
        if (saved) await ns.exec('ethtool', ['-K', dev, ...saved]);
        continue;
      }
      if (!this.#offloadDefaults.has(key)) {
        const features = parseEthtoolFeatures((await ns.exec('ethtool', ['-k', dev])).stdout);
        const saved: string[] = [];
        for (const [name, feature] of OFFLOAD_FEATURES) {
          const state = features.get(feature);
          if (state) saved.push(name, state);
        }
        this.#offloadDefaults.set(key, saved);
      }
      await ns.exec('ethtool', ['-K', dev, ...OFFLOAD_FEATURES.flatMap(([name]) => [name, 'off'])]);
    }
  }

  /**
   * addNamespace creates one more namespace `<prefix><suffix>` (lo up, no links) owned by this
   * topology, e.g. a container; `suffix` is a lower-case letter followed by [a-z0-9]* and must not
   * start with `h` + digit or be `sw` (those are the hosts' and switch's names).
   */
  async addNamespace(suffix: string): Promise<Netns> {
    if (this.destroyed) throw new Error(`topology ${this.prefix} is destroyed`);
    if (!/^[a-z][a-z0-9]*$/.test(suffix) || /^h\d+$/.test(suffix) || /^rt\d+$/.test(suffix) || suffix === 'sw') {
      throw new Error(`bad namespace suffix ${JSON.stringify(suffix)}`);
    }
    return this.#addNamespace(`${this.prefix}${suffix}`);
  }

  /**
   * removeNamespace deletes a namespace made by {@link addNamespace} before the topology goes:
   * processes inside it are stopped first; its links go with it (a veth's peer end too). Resolves
   * when it is gone; a name this topology does not own, a host or the switch is refused.
   */
  async removeNamespace(ns: Netns): Promise<void> {
    const i = this.#namespaces.indexOf(ns.name);
    if (i < 0) throw new Error(`namespace ${ns.name} is not one of topology ${this.prefix}'s`);
    if (
      ns.name === this.switchNs ||
      this.hosts.some((h) => h.name === ns.name) ||
      this.routers.some((r) => r.name === ns.name)
    ) {
      throw new Error(`namespace ${ns.name} is part of topology ${this.prefix}'s underlay`);
    }
    await killNamespacePids(ns.name, STOP_GRACE_MS);
    const r = await runRoot('ip', ['netns', 'del', ns.name], { allowFail: true });
    removeNetnsEtc(ns.name);
    if (r.code !== 0 && (await listNamespaces()).includes(ns.name)) {
      throw new Error(`could not delete namespace ${ns.name}: ${r.stderr.trim()}`);
    }
    this.#namespaces.splice(this.#namespaces.indexOf(ns.name), 1);
    liveNamespaces.delete(ns.name);
  }

  async #addNamespace(name: string): Promise<Netns> {
    if (!this.persistent) installHandlers();
    await runRoot('ip', ['netns', 'add', name]);
    if (!this.persistent) liveNamespaces.add(name);
    this.#namespaces.push(name);
    const ns = new Netns(name, this);
    await ns.ip('link', 'set', 'lo', 'up');
    return ns;
  }

  /** @internal Called by {@link Netns.spawn}: the process is stopped by {@link destroy}. */
  track(child: ChildProcess): void {
    this.#children.add(child);
    child.once('exit', () => this.#children.delete(child));
  }

  /**
   * destroy stops every process started in this topology (SIGTERM, SIGKILL after
   * {@link STOP_GRACE_MS}), also any other process found inside its namespaces, then deletes all its
   * namespaces (which deletes their links). Idempotent: later calls return the same promise. Rejects
   * only when a namespace could not be deleted and still exists.
   */
  destroy(): Promise<void> {
    this.#destroying ??= this.#teardown();
    return this.#destroying;
  }

  async #teardown(): Promise<void> {
    await Promise.all([...this.#children].map((c) => stopProcess(c)));
    await Promise.all(this.#namespaces.map((ns) => killNamespacePids(ns, STOP_GRACE_MS)));
    const failed: string[] = [];
    for (const ns of [...this.#namespaces].reverse()) {
      const r = await runRoot('ip', ['netns', 'del', ns], { allowFail: true });
      removeNetnsEtc(ns);
      if (r.code !== 0 && (await listNamespaces()).includes(ns)) failed.push(`${ns}: ${r.stderr.trim()}`);
      else liveNamespaces.delete(ns);
    }
    this.#namespaces.length = 0;
    if (failed.length > 0) throw new Error(`could not delete namespaces: ${failed.join('; ')}`);
  }
}
