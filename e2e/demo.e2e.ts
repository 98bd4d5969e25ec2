import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { listNamespaces, requireRoot, runId } from '../lab/netns.js';
import { CLI } from './weft.js';

const run = promisify(execFile);
const reason = requireRoot();
/** PREFIX carries this run's id, so the demo's namespaces are ours alone. */
const PREFIX = `${runId()}d`;
/** CONTAINERS_PER_HOST is control/demo.ts DEMO_CONTAINERS_PER_HOST. */
const CONTAINERS_PER_HOST = 2;

/** ours lists the namespaces that carry the demo's prefix. */
async function ours(): Promise<string[]> {
  return (await listNamespaces()).filter((n) => n.startsWith(`${PREFIX}-`)).sort();
}

/** expectedNamespaces is every namespace a demo of `hosts` hosts makes: the switch, the hosts and their containers. */
function expectedNamespaces(hosts: number): string[] {
  const names = [`${PREFIX}-sw`];
  for (let i = 1; i <= hosts; i++) {
    names.push(`${PREFIX}-h${i}`);
    for (let k = 1; k <= CONTAINERS_PER_HOST; k++) names.push(`${PREFIX}-h${i}c${k}`);
  }
  return names.sort();
}

/** containerLines parses the demo's `container NS on HOST: ADDR` lines. */
function containerLines(stdout: string): { ns: string; host: string; addr: string }[] {
  return [...stdout.matchAll(/^ {2}container (\S+) on (\S+): ([\d.]+), named \S+$/gm)].map((m) => ({
    ns: m[1] as string,
    host: m[2] as string,
    addr: m[3] as string,
  }));
}

describe.skipIf(reason)('weft demo', () => {
  afterAll(async () => {
    await run(process.execPath, [CLI, 'demo', '--down', '--prefix', PREFIX]).catch(() => undefined);
  });

  it('builds three hosts with two containers each, pings container to container across hosts, and removes everything', async () => {
    const { stdout } = await run(process.execPath, [CLI, 'demo', '--hosts', '3', '--prefix', PREFIX], {
      timeout: 180_000,
    });
    // Six containers, each with its own address from the cluster range, two on each host.
    const containers = containerLines(stdout);
    expect(containers.map((c) => c.ns).sort()).toEqual(expectedNamespaces(3).filter((n) => /-h\dc\d$/.test(n)));
    for (const c of containers) {
      expect(c.addr).toMatch(/^10\.(3[2-9]|4[0-7])\.\d+\.\d+$/);
      expect(c.ns.startsWith(`${c.host}c`)).toBe(true);
    }
    expect(new Set(containers.map((c) => c.addr)).size).toBe(6);
    // Every container pings the first container of the two other hosts: 12 pings, none lost.
    expect(stdout).toMatch(/^12\/12 pings answered in full$/m);
    const rows = stdout.split('\n').filter((l) => /^ {2}h\dc\d .*ms/.test(l));
    expect(rows).toHaveLength(6);
    for (const r of rows) expect(r.match(/\b3\/3 [\d.]+ ms/g)).toHaveLength(2);
    expect(stdout).toMatch(/Connections: 2 \(2 established\)/);
    // `weft ps` of the first host lists its two containers; `weft status ipam` shows the three shares.
    for (const c of containers.filter((x) => x.host === `${PREFIX}-h1`)) {
      expect(stdout).toMatch(new RegExp(`^${c.ns} [0-9a-f:]{17} ${c.addr.replaceAll('.', '\\.')}/12 h1c\\d$`, 'm'));
    }
    expect(stdout.match(/ IPs \([\d.]+% of total\)/g)).toHaveLength(3);
    // Names: the first container finds the first container of each other host through its router's DNS.
    for (const label of ['h2c1', 'h3c1']) {
      const c = containers.find((x) => x.ns.endsWith(`-${label}`));
      expect(stdout).toMatch(new RegExp(`^ {2}${label} +→ ${c?.addr.replaceAll('.', '\\.')}$`, 'm'));
    }
    expect(stdout).toMatch(/demo hosts removed/);
    expect(await ours()).toEqual([]);
  });

  it('leaves hosts and containers running with --keep until --down removes every namespace it made', async () => {
    const kept = await run(process.execPath, [CLI, 'demo', '--keep', '--hosts', '2', '--prefix', PREFIX], {
      timeout: 180_000,
    });
    expect(await ours()).toEqual(expectedNamespaces(2));
    // The URL of the first host's web page, and how to open it from outside its namespace.
    expect(kept.stdout).toMatch(/^http:\/\/127\.0\.0\.1:6784\/ui$/m);
    expect(kept.stdout).toContain(`ip netns exec ${PREFIX}-h1 socat STDIO TCP\\:127.0.0.1\\:6784`);
    const { stdout } = await run('ip', ['netns', 'exec', `${PREFIX}-h2`, process.execPath, CLI, 'status', 'peers']);
    expect(stdout.split('\n').filter(Boolean).length).toBeGreaterThanOrEqual(3);
    const ps = await run('ip', ['netns', 'exec', `${PREFIX}-h2`, process.execPath, CLI, 'ps']);
    expect(ps.stdout).toMatch(new RegExp(`^${PREFIX}-h2c1 `, 'm'));
    expect(ps.stdout).toMatch(new RegExp(`^${PREFIX}-h2c2 `, 'm'));
    await run(process.execPath, [CLI, 'demo', '--down', '--prefix', PREFIX]);
    expect(await ours()).toEqual([]);
  });
});
