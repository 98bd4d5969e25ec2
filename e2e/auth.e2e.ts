import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, Lab, requireRoot, waitUntil } from '../lab/netns.js';
import { expose, launch, removeStateDirs, stateDir, status, waitPeers, weft } from './weft.js';

const reason = requireRoot();

/** passwordFile writes a password into the host's state directory and returns the path. */
function passwordFile(h: Host, password: string): string {
  const f = `${stateDir(h)}/password`;
  writeFileSync(f, `${password}\n`, { mode: 0o600 });
  return f;
}

describe.skipIf(reason)('peers authenticate when a password is set', () => {
  let topo: Lab;
  let h1: Host;
  let h2: Host;

  beforeAll(async () => {
    topo = await Lab.create({ hosts: 2 });
    [h1, h2] = topo.hosts as [Host, Host];
    await launch(h1, [], ['--password-file', passwordFile(h1, 'correct horse')]);
  });

  afterAll(async () => {
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
  });

  it('refuses a peer with another password and says why', async () => {
    await launch(h2, [h1.underlayIp], ['--password-file', passwordFile(h2, 'battery staple')]);
    let lastError = '';
    await waitUntil(
      async () => {
        const t = (await status(h2)) as unknown as { targets: { lastError?: string }[] };
        lastError = t.targets[0]?.lastError ?? '';
        return /authentication|password/i.test(lastError);
      },
      { timeoutMs: 15_000, what: 'the refusal to show in h2 status targets' },
    );
    expect(lastError).toMatch(/passwords differ|authentication/);
    expect((await status(h1)).peers).toHaveLength(0);
    const metrics = await h1.exec(process.execPath, [
      '-e',
      'fetch("http://127.0.0.1:6784/metrics").then((r) => r.text()).then((t) => process.stdout.write(t))',
    ]);
    expect(metrics.stdout).toMatch(/weft_connection_terminations_total\{reason="EWEFT_AUTH"\} [1-9]/);
    await weft(h2, ['stop']);
  });

  it('connects a peer with the same password', async () => {
    await launch(h2, [h1.underlayIp], ['--password-file', passwordFile(h2, 'correct horse')]);
    // h1 seeds the IPAM ring; h2 can only get space from it over the authenticated connection.
    const a1 = await expose(h1);
    const a2 = await expose(h2);
    expect(a2).not.toBe(a1);
    await waitPeers(h1, 1);
    await waitPeers(h2, 1);
    expect((await h2.ping(a1, { count: 2, intervalS: 0.1 })).received).toBe(2);
    expect((await h1.ping(a2, { count: 2, intervalS: 0.1 })).received).toBe(2);
    expect((await weft(h1, ['status'])).stdout).toMatch(/Encryption: enabled \(aes-256-gcm\)/);
    const conns = (await status(h1)).connections as { state: string; encrypted?: boolean; cipher?: string }[];
    expect(conns.filter((c) => c.state === 'established')).toEqual([
      expect.objectContaining({ encrypted: true, cipher: 'aes-256-gcm' }),
    ]);
  });
});
