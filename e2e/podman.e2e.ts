import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, Lab, requireRoot, waitUntil } from '../lab/netns.js';
import { BASE_BUILD_MS, Podman, podmanSkipReason } from './podman.js';
import { launch, removeStateDirs, weft } from './weft.js';

const reason = podmanSkipReason();
if (reason !== undefined && requireRoot() === undefined) console.warn(`podman e2e skipped: ${reason}`);

interface PsEntry {
  target: string;
  cidrs: string[];
  name?: string;
}

/**
 * Podman containers (daemonless, run by podman 4.3 with its own --root, --runroot and --tmpdir
 * under one directory, cgroupfs, file events and 1024 ulimits: see
 * shared/reference/runtime-recipes.md) join the overlay with `weft attach PID` on two hosts,
 * ping each other by DNS name across hosts, and `podman rm -f` takes the name off every host at
 * once and gives the address back after the grace period. Podman has no engine API Weft follows,
 * so a container is attached by its pid (its network namespace); podman's `--network none` gives
 * it a namespace of its own with only `lo`.
 */
describe.skipIf(reason)('podman: containers attached by pid', () => {
  let topo: Lab;
  let h1: Host;
  let h2: Host;
  const dir = path.join(tmpdir(), `weft-e2e-podman-${process.pid}`);
  const image = `localhost/weft-e2e-base:${process.pid}`;
  const dnsAddr: Record<string, string> = {};

  const pm = new Podman(dir);
  const podman = (h: Host, args: string[], allowFail = false) => pm.run(h, args, allowFail);

  async function ps(h: Host): Promise<PsEntry[]> {
    return JSON.parse((await weft(h, ['ps', '--json'])).stdout || '[]') as PsEntry[];
  }

  /** runAttached starts a podman container on `h` and attaches it by pid; returns its overlay address. */
  async function runAttached(h: Host, name: string): Promise<string> {
    // --network none refuses --dns: the resolver file is mounted instead (the host's router's DNS).
    const resolv = path.join(dir, `resolv-${h.name}.conf`);
    writeFileSync(resolv, `nameserver ${dnsAddr[h.name]}\nsearch weft.local\noptions timeout:1 attempts:2\n`);
    await podman(h, [
      'run',
      '-d',
      ...['--name', name, '--network', 'none', '-v', `${resolv}:/etc/resolv.conf:ro`],
      image,
      ...['sleep', 'infinity'],
    ]);
    const pid = (await podman(h, ['inspect', '-f', '{{.State.Pid}}', name])).stdout.trim();
    expect(pid).toMatch(/^[1-9][0-9]*$/);
    return (await weft(h, ['attach', pid, '--name', name])).stdout.trim();
  }

  beforeAll(async () => {
    pm.writeConf();
    topo = await Lab.create({ hosts: 2 });
    [h1, h2] = topo.hosts as [Host, Host];
    await pm.importBase(h1, image);
    const flags = ['--docker-socket', 'none', '--container-grace', '1000'];
    await launch(h1, [], flags);
    await launch(h2, [h1.underlayIp], flags);
    await waitUntil(
      async () => {
        const s = JSON.parse((await weft(h2, ['status', '--json'])).stdout) as { peers: { state: string }[] };
        return s.peers.some((p) => p.state === 'established');
      },
      { timeoutMs: 30_000, what: 'h2 to connect to h1' },
    );
    for (const h of [h1, h2]) dnsAddr[h.name] = (await weft(h, ['expose'])).stdout.trim();
  }, BASE_BUILD_MS + 120_000);

  afterAll(async () => {
    await pm.remove(h1);
    for (const h of [h1, h2]) if (h !== undefined) await weft(h, ['stop'], { allowFail: true });
    if (topo !== undefined) {
      removeStateDirs(topo);
      await topo.destroy();
    }
  }, 120_000);

  it('attaches podman containers by pid on both hosts; they ping each other by DNS name', async () => {
    const p1 = await runAttached(h1, 'p1');
    const p2 = await runAttached(h2, 'p2');
    expect(p1).toMatch(/^10\.(3[2-9]|4[0-7])\./);
    expect(p2).not.toBe(p1);
    const inside = (await podman(h1, ['exec', 'p1', 'ip', '-4', '-o', 'addr', 'show', 'ethwe'])).stdout;
    expect(inside).toContain(`${p1}/12`);
    expect(await ps(h1)).toEqual([expect.objectContaining({ cidrs: [`${p1}/12`], name: 'p1' })]);
    await pm.pingName(h1, 'p1', 'p2');
    await pm.pingName(h2, 'p2', 'p1.weft.local');
  });

  it('podman rm -f takes the name off every host at once and frees the address after the grace period', async () => {
    const p2 = (await ps(h2)).find((p) => p.name === 'p2')?.cidrs[0]?.split('/')[0];
    expect(p2).toBeDefined();
    await podman(h2, ['rm', '-f', '-t', '0', 'p2']);
    for (const h of [h1, h2]) {
      await waitUntil(async () => (await weft(h, ['dns-lookup', 'p2'], { allowFail: true })).code !== 0, {
        timeoutMs: 5_000,
        what: `p2.weft.local to be gone from ${h.name}'s DNS`,
      });
    }
    await waitUntil(
      async () => {
        const s = JSON.parse((await weft(h2, ['status', 'ipam', '--json'])).stdout) as {
          allocations: { addr: string }[];
        };
        return !s.allocations.some((a) => a.addr === p2) && (await ps(h2)).length === 0;
      },
      { timeoutMs: 15_000, what: "p2's address to be freed on h2" },
    );
    expect((await podman(h1, ['exec', 'p1', 'ping', '-c', '1', '-W', '1', 'p2'], true)).code).not.toBe(0);
  });
});
