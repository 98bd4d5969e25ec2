/**
 * Egress: with --masquerade a container reaches an address outside the overlay (a plain host on
 * the underlay, h3, with no route back to the overlay range) behind its host's address, while
 * container to container is never NATed; without it the same ping finds no way back. The router's
 * nftables table is the only one it touches, replaced whole at launch (a killed router's is
 * reconciled) and removed on stop.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, Lab, type Netns, requireRoot, waitUntil } from '../lab/netns.js';
import { expose, launch, removeStateDirs, routerPid, status, waitPeers, weft } from './weft.js';

const reason = requireRoot();

/**
 * ECHO_SOURCE takes one UDP datagram on port 9998 and prints the sender's address. It writes the
 * line in two pieces a moment apart, as Python does anyway with PYTHONUNBUFFERED=1 (set on this
 * machine: each print argument is its own write): a reader that splits each chunk into lines
 * sees "from" and " 10.32.0.1" and never the line (the "lost datagram" of issue #14 on a loaded
 * machine, whose datagram had arrived: the receiver's UDP InDatagrams said 1).
 */
const ECHO_SOURCE = `
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', 9998))
s.settimeout(10)
print('ready', flush=True)
d, a = s.recvfrom(2048)
sys.stdout.write('from'); sys.stdout.flush(); time.sleep(0.2)
print('', a[0], flush=True)
`;

/** tableOf lists the host's egress table (empty when there is none). */
async function tableOf(h: Host): Promise<string> {
  const r = await h.exec('nft', ['list', 'table', 'ip', 'weft'], { allowFail: true });
  return r.code === 0 ? r.stdout : '';
}

/** defaultVia gives a container a default route through its host's overlay address. */
async function defaultVia(c: Netns, gateway: string): Promise<void> {
  await c.exec('ip', ['route', 'replace', 'default', 'via', gateway, 'dev', 'ethwe']);
}

describe.skipIf(reason)('egress masquerading (--masquerade)', () => {
  let topo: Lab;
  let h1: Host;
  let h2: Host;
  let h3: Host;
  let c1: Netns;
  let c2: Netns;
  let a1 = '';
  let a2 = '';

  beforeAll(async () => {
    topo = await Lab.create({ hosts: 3 });
    [h1, h2, h3] = topo.hosts as [Host, Host, Host]; // h3 runs no router
    c1 = await topo.addNamespace('ea');
    c2 = await topo.addNamespace('eb');
    await launch(h1, [], ['--no-dns', '--masquerade']);
    await launch(h2, [h1.underlayIp], ['--no-dns']);
    await waitPeers(h1, 1);
    await waitPeers(h2, 1);
    a1 = (await weft(h1, ['attach', c1.name])).stdout.trim();
    a2 = (await weft(h2, ['attach', c2.name])).stdout.trim();
    await defaultVia(c1, await expose(h1));
    await defaultVia(c2, await expose(h2));
  });

  afterAll(async () => {
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
  });

  it('installs its own table and says so in status', async () => {
    const t = await tableOf(h1);
    expect(t).toMatch(/masquerade/);
    expect(t).toContain(`ip saddr 10.32.0.0/12 ip daddr != 10.32.0.0/12 oifname != "${h1.ifname('t')}"`);
    expect((await status(h1)) as unknown as { egress?: unknown }).toMatchObject({
      egress: { masquerade: '10.32.0.0/12', table: 'ip weft', installed: true },
    });
    expect((await weft(h1, ['status'])).stdout).toMatch(/Egress: masquerade 10\.32\.0\.0\/12 beyond the overlay/);
    expect(await tableOf(h2)).toBe('');
  });

  it('lets a container reach a host beyond the overlay, and not without it', async () => {
    expect((await c1.ping(h3.underlayIp, { count: 2, intervalS: 0.2 })).received).toBe(2);
    // h2 does not masquerade and h3 has no route back to the overlay range: nothing returns.
    expect((await c2.ping(h3.underlayIp, { count: 2, intervalS: 0.2, timeoutMs: 2_000 })).received).toBe(0);
  });

  it('never NATs container to container: the receiver sees the sender’s overlay address', async () => {
    const rx = c2.spawn('python3', ['-c', ECHO_SOURCE]);
    // Whole lines only: a print may reach us in pieces (with PYTHONUNBUFFERED each argument is its own write).
    let out = '';
    rx.stdout?.on('data', (b: Buffer) => {
      out += b.toString('utf8');
    });
    const lines = (): string[] => out.split('\n').slice(0, -1);
    await waitUntil(async () => lines().includes('ready'), { timeoutMs: 10_000, what: 'the receiver' });
    expect((await c1.ping(a2, { count: 1 })).received).toBe(1);
    await c1.exec('python3', [
      '-c',
      `import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor _ in range(5):\n    s.sendto(b'x', ('${a2}', 9998))\n    time.sleep(0.2)`,
    ]);
    await waitUntil(async () => lines().some((l) => l.startsWith('from ')), { timeoutMs: 10_000, what: 'a datagram' });
    expect(lines().find((l) => l.startsWith('from '))).toBe(`from ${a1}`);
  });

  it('reconciles the table after kill -9 and removes it on stop', async () => {
    process.kill(await routerPid(h1), 'SIGKILL');
    await waitUntil(async () => (await weft(h1, ['status'], { allowFail: true })).code !== 0, {
      timeoutMs: 10_000,
      what: 'the router gone',
    });
    expect(await tableOf(h1)).toMatch(/masquerade/); // left behind by the killed router
    await launch(h1, [], ['--no-dns', '--masquerade']);
    const t = await tableOf(h1);
    expect(t.match(/masquerade/g)).toHaveLength(1);
    await weft(h1, ['stop']);
    expect(await tableOf(h1)).toBe('');
  });
});
