/**
 * proc-counters reads the kernel counters the tunnel bench reports beside its timings: IP
 * fragmentation from `/proc/net/snmp` (per network namespace), a process's CPU time from
 * `/proc/<pid>/stat`, and (for the soak) its resident memory from `/proc/<pid>/status` and its
 * open file descriptors from `/proc/<pid>/fd`. The parsers are pure; the readers take a namespace or pid.
 */
import { readdir, readFile } from 'node:fs/promises';
import type { Netns } from '../lab/netns.js';

/** IpFragments are the IPv4 fragmentation counters of one namespace (or a sum of several). */
export interface IpFragments {
  /** IpFragCreates: fragments this namespace made, as a sender or a router. */
  created: number;
  /** IpReasmReqds: fragments this namespace received that needed reassembly. */
  reassembly: number;
}

/**
 * parseSnmpIp reads the `Ip:` header and value lines of `/proc/net/snmp` into a map from counter
 * name (`FragCreates`, `ReasmReqds`, …, without the `Ip` prefix) to value. Throws when either line
 * is missing or they disagree in length.
 */
export function parseSnmpIp(text: string): Map<string, number> {
  const lines = text.split('\n').filter((l) => l.startsWith('Ip: '));
  const [names, values] = lines.map((l) => l.slice(4).trim().split(/\s+/));
  if (!names || !values || names.length !== values.length || names[0] === undefined || !/^\D/.test(names[0])) {
    throw new Error(`no Ip: header and value lines in /proc/net/snmp: ${text.slice(0, 200)}`);
  }
  return new Map(names.map((n, i) => [n, Number(values[i])]));
}

/** fragmentsOf picks the two fragmentation counters out of {@link parseSnmpIp}'s map (0 when absent). */
export function fragmentsOf(ip: ReadonlyMap<string, number>): IpFragments {
  return { created: ip.get('FragCreates') ?? 0, reassembly: ip.get('ReasmReqds') ?? 0 };
}

/** readIpFragments sums {@link IpFragments} over the given namespaces (`cat /proc/net/snmp` in each). */
export async function readIpFragments(namespaces: readonly Netns[]): Promise<IpFragments> {
  const sum: IpFragments = { created: 0, reassembly: 0 };
  for (const ns of namespaces) {
    const f = fragmentsOf(parseSnmpIp((await ns.exec('cat', ['/proc/net/snmp'])).stdout));
    sum.created += f.created;
    sum.reassembly += f.reassembly;
  }
  return sum;
}

/**
 * parseStatTicks returns utime + stime (fields 14 and 15, in clock ticks; all threads of the
 * process) from the text of `/proc/<pid>/stat`. The command name (field 2) may contain spaces and
 * parentheses, so fields are counted after its last `)`.
 */
export function parseStatTicks(text: string): number {
  const close = text.lastIndexOf(')');
  if (close < 0) throw new Error(`not a /proc/<pid>/stat line: ${text.slice(0, 100)}`);
  // After "pid (comm) " the next field is field 3 (state): utime is the 12th of these, stime the 13th.
  const rest = text
    .slice(close + 1)
    .trim()
    .split(/\s+/);
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new Error(`no utime/stime in: ${text.slice(0, 100)}`);
  return utime + stime;
}

/**
 * cpuPercent is the share of one core that `ticks` of CPU time over `wallMs` of wall time is, with
 * `ticksPerSecond` clock ticks a second (`getconf CLK_TCK`, 100 on Linux). 200 means two cores busy.
 */
export function cpuPercent(ticks: number, wallMs: number, ticksPerSecond: number): number {
  return wallMs > 0 ? (ticks / ticksPerSecond / (wallMs / 1000)) * 100 : Number.NaN;
}

/** readCpuTicks sums {@link parseStatTicks} over `pids`; a pid that has exited counts 0. */
export async function readCpuTicks(pids: readonly number[]): Promise<number> {
  let sum = 0;
  for (const pid of pids) {
    try {
      sum += parseStatTicks(await readFile(`/proc/${pid}/stat`, 'utf8'));
    } catch {
      // gone: it used no more CPU
    }
  }
  return sum;
}

/**
 * parseVmRssBytes returns the resident set size in bytes from the text of `/proc/<pid>/status`
 * (its `VmRSS:` line, which the kernel gives in kB). Throws when there is no such line (a kernel
 * thread, or not a status file).
 */
export function parseVmRssBytes(text: string): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(text);
  if (!m) throw new Error(`no VmRSS line in: ${text.slice(0, 100)}`);
  return Number(m[1]) * 1024;
}

/** readRssBytes reads {@link parseVmRssBytes} of `pid`; rejects when the process is gone. */
export async function readRssBytes(pid: number): Promise<number> {
  return parseVmRssBytes(await readFile(`/proc/${pid}/status`, 'utf8'));
}

/** readFdCount counts the open file descriptors of `pid` (entries of `/proc/<pid>/fd`); rejects when it is gone. */
export async function readFdCount(pid: number): Promise<number> {
  return (await readdir(`/proc/${pid}/fd`)).length;
}
