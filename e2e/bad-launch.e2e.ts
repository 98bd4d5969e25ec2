import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DAEMON_MALLOC_ARENA_MAX, DAEMON_MALLOC_MMAP_THRESHOLD, DAEMON_NODE_ARGS } from '../control/cli.js';
import { TARGETS_MAX } from '../control/config.js';
import { type Host, Lab, type Netns, requireRoot, waitUntil } from '../lab/netns.js';
import { CLI, DAEMON_SCRIPT, launch, removeStateDirs, routerPids, stateDir, weft } from './weft.js';

const reason = requireRoot();

/** launchArgs are the flags launch() in weft.ts gives: this run's device name and state directory. */
function launchArgs(ns: Netns): string[] {
  return ['launch', '--device', ns.ifname('t'), '--state-dir', stateDir(ns)];
}

/** stop stops the router of a namespace and waits until no router process is left there. */
async function stop(ns: Netns): Promise<void> {
  await weft(ns, ['stop'], { allowFail: true });
  await waitUntil(async () => (await routerPids(ns)).length === 0, {
    timeoutMs: 20_000,
    what: `the router of ${ns.name} to stop`,
  });
}

/** peers makes 1000 distinct target addresses of batch `b`, unroutable from the hosts (dials fail at once). */
function peers(b: number): string[] {
  return Array.from({ length: 1000 }, (_, i) => `10.${100 + b}.${Math.floor(i / 250)}.${(i % 250) + 1}`);
}

/**
 * Inputs that could brick a host's router (issue "Nothing is lost", part 5): concurrent launches,
 * a loopback that is down, a state directory in /proc, reserved peer names, a closed output pipe,
 * and more targets than a state file holds.
 */
describe.skipIf(reason)('bad launches', () => {
  let topo: Lab;
  let h1: Host;
  let h2: Host;

  beforeAll(async () => {
    topo = await Lab.create({ hosts: 2 });
    h1 = topo.hosts[0] as Host;
    h2 = topo.hosts[1] as Host;
  });

  afterAll(async () => {
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
  });

  it('three concurrent launches give one router, and all three print its name with exit 0', async () => {
    const runs = await Promise.all([0, 1, 2].map(() => weft(h1, launchArgs(h1), { allowFail: true })));
    for (const r of runs) {
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
    }
    const names = runs.map((r) => r.stdout.trim());
    expect(names[0]).toMatch(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    expect(new Set(names).size).toBe(1);
    const pids = await routerPids(h1);
    expect(pids).toHaveLength(1);
    // The background router runs from the one-file build (less memory than the unbundled CLI).
    const cmdline = readFileSync(`/proc/${pids[0]}/cmdline`, 'utf8').split('\0');
    expect(cmdline).toContain(DAEMON_SCRIPT);
    // ... with one V8 worker thread (before the script: a Node option, not a router flag).
    expect(cmdline.slice(0, cmdline.indexOf(DAEMON_SCRIPT))).toEqual(expect.arrayContaining([...DAEMON_NODE_ARGS]));
    // ... with two malloc arenas unless the caller chose a number.
    const environ = readFileSync(`/proc/${pids[0]}/environ`, 'utf8').split('\0');
    expect(environ).toContain(`MALLOC_ARENA_MAX=${process.env.MALLOC_ARENA_MAX ?? DAEMON_MALLOC_ARENA_MAX}`);
    // ... and large blocks mapped on their own (given back when freed), unless the caller chose.
    expect(environ).toContain(
      `MALLOC_MMAP_THRESHOLD_=${process.env.MALLOC_MMAP_THRESHOLD_ ?? DAEMON_MALLOC_MMAP_THRESHOLD}`,
    );
    // The lock is gone once the launch is over; a fourth launch is the idempotent kind.
    expect(() => readFileSync(path.join(stateDir(h1), 'launch.lock'))).toThrow(/ENOENT/);
    expect((await weft(h1, launchArgs(h1))).stdout.trim()).toBe(names[0]);
    expect(await routerPids(h1)).toHaveLength(1);
  });

  it(`refuses connect beyond ${TARGETS_MAX} targets with a clear error, and the next launch still starts`, async () => {
    const sock = `/run/weft/netns/${h1.name}/weft.sock`;
    for (let b = 0; b < TARGETS_MAX / 1000; b++) {
      const r = await h1.exec('curl', [
        '-sS',
        '--max-time',
        '30',
        '--unix-socket',
        sock,
        '-H',
        'content-type: application/json',
        '-d',
        JSON.stringify({ peers: peers(b) }),
        '-w',
        '\n%{http_code}',
        'http://localhost/connect',
      ]);
      expect(r.stdout.trim().split('\n').at(-1), `batch ${b}`).toBe('200');
    }
    // The 11th batch, through the CLI: one line naming the limit, exit 1, nothing added.
    const refused = await weft(h1, ['connect', ...peers(10)], { allowFail: true });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toBe(
      `weft: too many connection targets: ${TARGETS_MAX} kept and 1000 new would make ${TARGETS_MAX + 1000}, more than the limit of ${TARGETS_MAX}; forget some first (\`weft forget\`), or replace the list (\`weft connect --replace\`)\n`,
    );
    const count = async () =>
      (JSON.parse((await weft(h1, ['status', 'targets', '--json'])).stdout) as unknown[]).length;
    expect(await count()).toBe(TARGETS_MAX);
    const saved = JSON.parse(readFileSync(path.join(stateDir(h1), 'state.json'), 'utf8')) as { targets: string[] };
    expect(saved.targets).toHaveLength(TARGETS_MAX);

    await stop(h1);
    const name = await launch(h1, []);
    expect(name).toMatch(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    expect(await count()).toBe(TARGETS_MAX);
    // The text view shows each target's state, last error and next retry.
    await waitUntil(
      async () =>
        / failed {2}\d+ attempts? {2}last error: .+ {2}next retry (in [\d.]+ s|now)$/m.test(
          (await weft(h1, ['status', 'targets'])).stdout,
        ),
      { timeoutMs: 20_000, what: 'a failed target with its error and next retry in `weft status targets`' },
    );
    await weft(h1, ['connect', '--replace', '192.0.2.1']);
    expect(await count()).toBe(1);
    await stop(h1);
  }, 180_000);

  it('brings the loopback interface up when it is down, and launches', async () => {
    await h2.ip('link', 'set', 'lo', 'down');
    const r = await weft(h2, launchArgs(h2), { allowFail: true });
    expect(r.stderr).toBe('weft: the loopback interface lo was down in this network namespace: brought it up\n');
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toMatch(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    expect((await h2.ip('link', 'show', 'lo')).stdout).toMatch(/<[^>]*\bUP\b/);
    expect((await weft(h2, ['status', '--json'])).code).toBe(0);
    await stop(h2);
  });

  it.each([
    { label: '--state-dir /proc/1/x', flags: ['--state-dir', '/proc/1/x'], env: {} as Record<string, string> },
    { label: '--state-dir /sys/weft', flags: ['--state-dir', '/sys/weft'], env: {} },
    { label: 'WEFT_STATE_DIR=/proc/1/x', flags: [], env: { WEFT_STATE_DIR: '/proc/1/x' } },
  ])('refuses $label at once, in one line, exit 2', async ({ flags, env }) => {
    const t0 = Date.now();
    const args = ['launch', '--device', h2.ifname('t'), ...flags];
    const r = await h2.exec(process.execPath, [CLI, ...args], { allowFail: true, env, timeoutMs: 10_000 });
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /^weft: invalid (--state-dir|WEFT_STATE_DIR) "[^"]+": \/(proc|sys) is a kernel file system.*\n$/,
    );
    expect(r.stderr.split('\n')).toHaveLength(2);
    expect(await routerPids(h2)).toHaveLength(0);
  });

  it.each([
    ['ff:ff:ff:ff:ff:ff', 'broadcast'],
    ['00:00:00:00:00:00', 'all-zero'],
    ['01:00:5e:00:00:01', 'multicast'],
  ])('refuses the peer name %s (%s)', async (name, why) => {
    const r = await weft(h2, [...launchArgs(h2), '--name', name], { allowFail: true });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`^weft: invalid --name: peer name "${name}" cannot be used: .*${why}.*\\n$`));
    expect(r.stderr.split('\n')).toHaveLength(2);
    expect(await routerPids(h2)).toHaveLength(0);
  });

  it('`weft --help | head -1` prints the first line and exits 0 without a stack trace', async () => {
    // With pipefail the pipeline fails if the CLI does; the CLI's stderr is bash's.
    for (const reader of ['head -1', 'true', 'head -c 1']) {
      for (let i = 0; i < 3; i++) {
        const r = await h2.exec('bash', ['-o', 'pipefail', '-c', `"${process.execPath}" "${CLI}" --help | ${reader}`], {
          allowFail: true,
        });
        expect(r.stderr, reader).toBe('');
        expect(r.code, reader).toBe(0);
        if (reader === 'head -1') expect(r.stdout).toBe('Usage: weft [options] [command]\n');
      }
    }
  });
});
