import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, Lab, type Netns, outputTail, requireRoot, stopProcess, waitUntil } from '../lab/netns.js';
import { launch, removeStateDirs, routerPid, status, waitPeers, weft } from './weft.js';

/** HANDSHAKES_MAX and HANDSHAKES_PER_ADDR_MAX as in router/conn-limits.ts: what the floods should find full. */
const HANDSHAKES_MAX = 32;
const HANDSHAKES_PER_ADDR_MAX = 4;

const reason = requireRoot();

/** PREFIX_CONNS is how many connections the memory attack opens (the probe: 100). */
const PREFIX_CONNS = 100;
/** JUNK_CONNS is how many junk connections the lock-out attack keeps trying to hold open (the probe: 400). */
const JUNK_CONNS = 400;
/** RSS_GROWTH_MAX_MB is the generous bound on the router's peak RSS growth under the memory attack (it was ~700 MB). */
const RSS_GROWTH_MAX_MB = 100;
/** JUNK_REOPEN_MS is how soon the junk flood reopens a connection the router closed: at once, to retake every freed slot. */
const JUNK_REOPEN_MS = 0;
/** REJOIN_MAX_MS is the normal time a restarted peer takes to be established again (waitPeers' default). */
const REJOIN_MAX_MS = 20_000;

/**
 * FLOOD is the attack tool, run with `node -e` in the attacker's namespace (a host with no router).
 * argv: mode, target underlay IP, connections, hold ms, and optionally source addresses (comma-separated,
 * used in turn; default: the namespace's own address).
 *   prefix  opens every connection at once; each sends the length prefix of an 8 MiB frame
 *           (CONTROL_MESSAGE_MAX_BYTES) and then 8 MiB − 1 bytes of body, so the frame never
 *           completes; holds them until the router closes them or hold ms pass. Prints one JSON line
 *           at the end: { opened, open, closedByRouter }.
 *   junk    keeps `connections` connections open that send nothing, reopening each one the router
 *           closes (after JUNK_REOPEN_MS), until hold ms pass. Prints a JSON line every second:
 *           { opened, open, closedByRouter }.
 */
const FLOOD = `
const net = require('node:net');
const [mode, target, countText, holdText, sourcesText] = process.argv.slice(1);
const sources = sourcesText ? sourcesText.split(',') : [undefined];
let opens = 0;
const count = Number(countText);
const hold = Number(holdText);
const stats = { opened: 0, open: 0, closedByRouter: 0 };
const sockets = new Set();
let stopping = false;
const body = Buffer.alloc(8 * 1024 * 1024 - 1);
function open() {
  if (stopping) return;
  const localAddress = sources[opens++ % sources.length];
  const s = net.connect({ port: 6783, host: target, ...(localAddress && { localAddress }) });
  sockets.add(s);
  s.on('error', () => {});
  s.on('data', () => {});
  s.on('connect', () => {
    s.wasOpen = true;
    stats.opened++;
    stats.open++;
    if (mode === 'prefix') {
      const h = Buffer.alloc(4);
      h.writeUInt32BE(8 * 1024 * 1024);
      s.write(h);
      s.write(body);
    }
  });
  s.on('close', () => {
    sockets.delete(s);
    if (s.wasOpen) stats.open--;
    if (!stopping) {
      stats.closedByRouter++;
      if (mode === 'junk') setTimeout(open, ${JUNK_REOPEN_MS});
    }
  });
}
for (let i = 0; i < count; i++) open();
const report = mode === 'junk' ? setInterval(() => console.log(JSON.stringify(stats)), 1000) : undefined;
const finish = () => {
  stopping = true;
  if (report) clearInterval(report);
  for (const s of sockets) s.destroy();
  console.log(JSON.stringify(stats));
  setTimeout(() => process.exit(0), 100);
};
setTimeout(finish, hold);
process.on('SIGTERM', finish);
if (mode === 'prefix') {
  const check = setInterval(() => { if (sockets.size === 0) { clearInterval(check); finish(); } }, 100);
}
`;

/** JUNK_SOURCES is how many source addresses the distributed junk flood uses: 16 × 4 per address fills all 32 handshake slots. */
const JUNK_SOURCES = 16;

/** memory reads a process's resident set size now and its peak (VmHWM), in MB. */
function memory(pid: number): { rssMb: number; peakMb: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? Number.NaN);
  return { rssMb: Math.round(kb('VmRSS') / 1024), peakMb: Math.round(kb('VmHWM') / 1024) };
}

/** resetPeak resets a process's VmHWM to its current RSS (`echo 5 > /proc/PID/clear_refs`); false if the kernel refuses. */
function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** terminations reads the router's closed-connection counters by kind. */
async function terminations(ns: Netns): Promise<Record<string, number>> {
  return ((await status(ns)) as unknown as { terminations: Record<string, number> }).terminations;
}

/**
 * Attacks on the control port before authentication, from a host that runs no router: memory
 * (frames announced as 8 MiB before Hello) and lock-out (hundreds of junk connections held open).
 */
describe.skipIf(reason)('a router under a flood of unauthenticated control connections', () => {
  let topo: Lab;
  let h1: Host;
  let h2: Host;
  let attacker: Host;

  beforeAll(async () => {
    topo = await Lab.create({ hosts: 3 });
    [h1, h2, attacker] = topo.hosts as [Host, Host, Host];
    await launch(h1, []);
    await launch(h2, [h1.underlayIp]);
    await waitPeers(h1, 1);
    await waitPeers(h2, 1);
  });

  afterAll(async () => {
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
  });

  it(`does not buffer ${PREFIX_CONNS} frames announced as 8 MiB before Hello`, async () => {
    const pid = await routerPid(h1);
    const before = memory(pid);
    const peakReset = resetPeak(pid);
    let sampledPeakMb = before.rssMb;
    const sampler = setInterval(() => {
      sampledPeakMb = Math.max(sampledPeakMb, memory(pid).rssMb);
    }, 100);
    let out: { opened: number; closedByRouter: number };
    try {
      const args = ['-e', FLOOD, 'prefix', h1.underlayIp, String(PREFIX_CONNS), '8000'];
      const r = await attacker.exec(process.execPath, args, { timeoutMs: 60_000 });
      out = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}');
    } finally {
      clearInterval(sampler);
    }
    const after = memory(pid);
    const peakMb = Math.max(sampledPeakMb, peakReset ? after.peakMb : 0);
    const t = await terminations(h1);
    console.log(
      `control-flood (a): ${out.opened} connections × 8 MiB prefix: router RSS ${before.rssMb} MB before, ` +
        `peak ${peakMb} MB, ${after.rssMb} MB after (${out.closedByRouter} closed by the router; ` +
        `terminations ${JSON.stringify(t)})`,
    );
    expect(out.opened).toBe(PREFIX_CONNS);
    expect(out.closedByRouter).toBe(PREFIX_CONNS);
    expect(peakMb - before.rssMb).toBeLessThan(RSS_GROWTH_MAX_MB);
    expect(after.rssMb - before.rssMb).toBeLessThan(RSS_GROWTH_MAX_MB);
    expect((t.handshake_limit ?? 0) + (t.EWEFT_PROTOCOL ?? 0)).toBeGreaterThanOrEqual(PREFIX_CONNS);
    // The real peer was never disturbed.
    expect((await status(h1)).connections.filter((c) => c.state === 'established')).toHaveLength(1);
  });

  /**
   * restartUnderJunk holds the junk flood (from `sources`, or the attacker's own address) until h1
   * shows `pending` handshakes in progress, restarts h2's router and checks that h2 is established
   * again on both sides within REJOIN_MAX_MS while the flood goes on.
   */
  async function restartUnderJunk(label: string, sources: string[], pending: number): Promise<void> {
    const args = ['-e', FLOOD, 'junk', h1.underlayIp, String(JUNK_CONNS), '90000'];
    if (sources.length > 0) args.push(sources.join(','));
    const flood = attacker.spawn(process.execPath, args);
    let text = '';
    flood.stdout?.on('data', (b: Buffer) => {
      text = (text + b.toString('utf8')).slice(-4096);
    });
    /** last is the flood's latest complete stats line. */
    const last = (): { opened: number; open: number; closedByRouter: number } =>
      JSON.parse(text.split('\n').slice(0, -1).at(-1) ?? '{"opened":0,"open":0,"closedByRouter":0}');
    const pendingOf = async (): Promise<number> =>
      (await status(h1)).connections.filter((c) => c.state === 'pending').length;
    try {
      await waitUntil(() => last().opened >= JUNK_CONNS, {
        timeoutMs: 20_000,
        what: `the attacker to open ${JUNK_CONNS} connections (${outputTail(flood)})`,
      });
      await waitUntil(async () => (await pendingOf()) === pending, {
        timeoutMs: 10_000,
        what: `${pending} junk handshakes in progress on h1`,
      });
      const refusedBefore = (await terminations(h1)).handshake_limit ?? 0;

      await weft(h2, ['stop']);
      await waitUntil(async () => (await status(h1)).peers.length === 0, {
        timeoutMs: 15_000,
        what: 'h1 to notice h2 is gone',
      });
      const t0 = Date.now();
      await launch(h2, [h1.underlayIp]);
      const launchMs = Date.now() - t0;
      // Watch h2's target while it connects: every failed attempt schedules a retry (nextRetryAt).
      const retries = new Set<number>();
      const errors = new Set<string>();
      await waitUntil(
        async () => {
          const s = (await status(h2)) as Awaited<ReturnType<typeof status>> & {
            targets: { nextRetryAt?: number; lastError?: string }[];
          };
          for (const t of s.targets) {
            if (t.nextRetryAt !== undefined) retries.add(t.nextRetryAt);
            if (t.lastError !== undefined) errors.add(t.lastError);
          }
          return s.peers.length === 1 && s.peers.every((p) => p.state === 'established');
        },
        { timeoutMs: REJOIN_MAX_MS, what: 'h2 to be established with h1 again' },
      );
      await waitPeers(h1, 1, REJOIN_MAX_MS);
      const rejoinMs = Date.now() - t0;

      expect(flood.exitCode).toBeNull(); // the flood was held all along
      const during = last();
      const t = await terminations(h1);
      console.log(
        `control-flood (${label}): h2 re-established in ${rejoinMs} ms under the junk flood (launch ${launchMs} ms, ` +
          `${retries.size} failed attempt(s), errors ${JSON.stringify([...errors])}) ` +
          `(attacker: ${during.opened} opened, ${during.open} open, ${during.closedByRouter} closed by the router; ` +
          `h1 terminations ${JSON.stringify(t)})`,
      );
      expect(rejoinMs).toBeLessThan(REJOIN_MAX_MS);
      expect([...errors].filter((e) => /too many/.test(e))).toEqual([]);
      expect((t.handshake_limit ?? 0) - refusedBefore).toBeGreaterThan(0);
      expect((await status(h1)).connections.filter((c) => c.state === 'established')).toHaveLength(1);
    } finally {
      await stopProcess(flood);
    }
  }

  it(`lets a restarted peer back in while ${JUNK_CONNS} junk connections are held open`, async () => {
    await restartUnderJunk('b', [], HANDSHAKES_PER_ADDR_MAX);
  });

  it(`lets a restarted peer back in while junk from ${JUNK_SOURCES} addresses fills the whole handshake pool`, async () => {
    const net = attacker.underlayIp.split('.').slice(0, 3).join('.');
    const sources = Array.from({ length: JUNK_SOURCES }, (_, i) => `${net}.${100 + i}`);
    for (const a of sources) await attacker.ip('addr', 'add', `${a}/24`, 'dev', attacker.underlayDev);
    await restartUnderJunk('c', sources, HANDSHAKES_MAX);
  });
});
