import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { listNamespaces, requireRoot, runId } from './netns.js';
import { CLI } from './weft.js';

const run = promisify(execFile);
const reason = requireRoot();
/** PREFIX carries this run's id, so the demo's namespaces are ours alone. */
const PREFIX = `${runId()}d`;

describe.skipIf(reason)('weft demo', () => {
  afterAll(async () => {
    await run(process.execPath, [CLI, 'demo', '--down', '--prefix', PREFIX]).catch(() => undefined);
  });

  it('builds three hosts, pings across the overlay, prints status, and removes everything', async () => {
    const { stdout } = await run(process.execPath, [CLI, 'demo', '--hosts', '3', '--prefix', PREFIX], {
      timeout: 120_000,
    });
    const pings = stdout.split('\n').filter((l) => l.includes('packets transmitted'));
    expect(pings).toHaveLength(6);
    for (const p of pings) expect(p).toMatch(/3 packets transmitted, 3 received/);
    expect(stdout).toMatch(/Connections: 2 \(2 established\)/);
    expect(stdout).toMatch(/demo hosts removed/);
    expect((await listNamespaces()).filter((n) => n.startsWith(PREFIX))).toEqual([]);
  });

  it('leaves the hosts running with --keep until --down', async () => {
    await run(process.execPath, [CLI, 'demo', '--keep', '--prefix', PREFIX], { timeout: 120_000 });
    expect((await listNamespaces()).filter((n) => n.startsWith(PREFIX))).toHaveLength(3);
    const { stdout } = await run('ip', ['netns', 'exec', `${PREFIX}-h2`, process.execPath, CLI, 'status', 'peers']);
    expect(stdout.split('\n').filter(Boolean).length).toBeGreaterThanOrEqual(3);
    await run(process.execPath, [CLI, 'demo', '--down', '--prefix', PREFIX]);
    expect((await listNamespaces()).filter((n) => n.startsWith(PREFIX))).toEqual([]);
  });
});
