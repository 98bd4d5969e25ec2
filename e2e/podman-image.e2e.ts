import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, Lab, requireRoot, waitUntil } from '../lab/netns.js';
import { IMAGE_BUILD_MS, Podman, type PodmanResult, podmanSkipReason } from './podman.js';

const reason = podmanSkipReason();
if (reason !== undefined && requireRoot() === undefined) console.warn(`podman image e2e skipped: ${reason}`);

interface PsEntry {
  target: string;
  cidrs: string[];
  name?: string;
}

interface StatusJson {
  ready: boolean;
  nickname: string;
  peers: { state: string }[];
  docker?: unknown;
}

/**
 * The router image built from the Dockerfile by podman (buildah, scripts/build-image.sh with
 * this test's storage as DOCKER; the build is cached by its inputs apart from Docker's), then run
 * by podman as the router on two lab hosts as the README runs it with Docker: the host's network
 * (the lab host's namespace), NET_ADMIN, /dev/net/tun, a state volume, --pid host and SYS_ADMIN
 * for `weft attach PID`, /proc/sys writable for the veth sysctls (`unmask=/proc/sys`, podman's
 * spelling of Docker's systempaths=unconfined). `weft status` works through `podman exec`, a
 * podman container attached by pid gets an address and pings one on the other host by name,
 * `podman stop` (SIGTERM) stops the router with exit code 0, and after `podman start` every
 * address is where it was.
 */
describe.skipIf(reason)('podman: the router image built and run by podman', () => {
  let topo: Lab;
  let h1: Host;
  let h2: Host;
  const dir = path.join(tmpdir(), `weft-e2e-podman-image-${process.pid}`);
  const image = `localhost/weft-e2e-router:${process.pid}`;
  const pm = new Podman(dir);
  const podman = (h: Host, args: string[], allowFail = false): Promise<PodmanResult> => pm.run(h, args, allowFail);
  const router = (h: Host): string => `weft-${h.name}`;
  /** weftIn runs the CLI inside a host's router container, as a user does. */
  const weftIn = (h: Host, args: string[], allowFail = false): Promise<PodmanResult> =>
    podman(h, ['exec', router(h), 'weft', ...args], allowFail);
  const dnsAddr: Record<string, string> = {};
  const addr: Record<string, string> = {};

  async function ps(h: Host): Promise<PsEntry[]> {
    return JSON.parse((await weftIn(h, ['ps', '--json'])).stdout || '[]') as PsEntry[];
  }

  async function waitRouter(h: Host, peers: number): Promise<void> {
    await waitUntil(
      async () => {
        const r = await weftIn(h, ['status', '--json'], true);
        if (r.code !== 0) return false;
        const s = JSON.parse(r.stdout) as StatusJson;
        return s.ready && s.peers.filter((p) => p.state === 'established').length >= peers;
      },
      { timeoutMs: 30_000, what: `the router container on ${h.name} to be ready with ${peers} peer(s)` },
    );
  }

  /** startRouter runs the router container on `h` (the README's `docker run` line, with podman). */
  async function startRouter(h: Host, peers: string[]): Promise<void> {
    await podman(h, [
      ...['run', '-d', '--name', router(h)],
      ...['--network', 'host', '--pid', 'host', '--cap-add', 'NET_ADMIN', '--cap-add', 'SYS_ADMIN'],
      ...['--security-opt', 'unmask=/proc/sys', '--device', '/dev/net/tun'],
      ...['-v', `weft-state-${h.name}:/var/lib/weft`],
      image,
      ...['--nickname', h.name, '--device', h.ifname('t'), '--docker-socket', 'none', ...peers],
    ]);
    await waitRouter(h, peers.length);
  }

  /** runAttached starts a podman container on `h` and attaches it by pid through the router container. */
  async function runAttached(h: Host, name: string): Promise<string> {
    // --network none refuses --dns: the resolver file is mounted instead (the host's router's DNS).
    const resolv = path.join(dir, `resolv-${h.name}.conf`);
    writeFileSync(resolv, `nameserver ${dnsAddr[h.name]}\nsearch weft.local\noptions timeout:1 attempts:2\n`);
    await podman(h, [
      ...['run', '-d', '--name', name, '--network', 'none', '-v', `${resolv}:/etc/resolv.conf:ro`],
      ...['--entrypoint', 'sleep', image, 'infinity'],
    ]);
    const pid = (await podman(h, ['inspect', '-f', '{{.State.Pid}}', name])).stdout.trim();
    expect(pid).toMatch(/^[1-9][0-9]*$/);
    return (await weftIn(h, ['attach', pid, '--name', name])).stdout.trim();
  }

  async function containerAddr(h: Host, name: string): Promise<string | undefined> {
    const r = await podman(h, ['exec', name, 'ip', '-j', '-4', 'addr', 'show', 'ethwe'], true);
    if (r.code !== 0) return undefined;
    const info = JSON.parse(r.stdout || '[]') as { addr_info?: { local: string }[] }[];
    return info[0]?.addr_info?.[0]?.local;
  }

  beforeAll(async () => {
    pm.writeConf();
    topo = await Lab.create({ hosts: 2 });
    [h1, h2] = topo.hosts as [Host, Host];
    const t0 = Date.now();
    const note = await pm.routerImage(h1, image);
    console.info(`podman image e2e: image in ${Date.now() - t0} ms (${note})`);
    await startRouter(h1, []);
    await startRouter(h2, [h1.underlayIp]);
    await waitRouter(h1, 1);
    for (const h of [h1, h2]) dnsAddr[h.name] = (await weftIn(h, ['expose'])).stdout.trim();
  }, IMAGE_BUILD_MS + 120_000);

  afterAll(async () => {
    // Every container (the routers too), image and volume of this storage, its directory, podman's blob cache.
    await pm.remove(h1);
    await topo?.destroy();
  }, 120_000);

  it('podman built the image from the Dockerfile; weft status works through podman exec', async () => {
    const size = Number((await podman(h1, ['image', 'inspect', '-f', '{{.Size}}', image])).stdout);
    console.info(`podman image e2e: router image ${image} is ${(size / 1e6).toFixed(0)} MB`);
    expect(size).toBeGreaterThan(0);
    const s = JSON.parse((await weftIn(h2, ['status', '--json'])).stdout) as StatusJson;
    expect(s).toMatchObject({ ready: true, nickname: h2.name });
    expect(s.docker).toBeUndefined();
    const text = (await weftIn(h1, ['status'])).stdout;
    expect(text).toMatch(/Peers: 2 \(1 direct, 0 relayed\)/);
    expect(text).toMatch(/Docker: off/);
  });

  it('attaches podman containers by pid through the router containers; they ping each other by name', async () => {
    addr.p1 = await runAttached(h1, 'p1');
    addr.p2 = await runAttached(h2, 'p2');
    expect(addr.p1).toMatch(/^10\.(3[2-9]|4[0-7])\./);
    expect(addr.p2).not.toBe(addr.p1);
    expect(await containerAddr(h1, 'p1')).toBe(addr.p1);
    expect(await ps(h1)).toEqual([expect.objectContaining({ cidrs: [`${addr.p1}/12`], name: 'p1' })]);
    await pm.pingName(h1, 'p1', 'p2');
    await pm.pingName(h2, 'p2', 'p1.weft.local');
  });

  it('podman stop stops the router cleanly (SIGTERM, exit 0); after podman start every address is kept', async () => {
    const before = await ps(h1);
    // -t 60: were SIGTERM not enough, podman would SIGKILL after 60 s and the exit code be 137.
    await podman(h1, ['stop', '-t', '60', router(h1)]);
    expect((await podman(h1, ['inspect', '-f', '{{.State.ExitCode}}', router(h1)])).stdout.trim()).toBe('0');
    // Its log (JSON lines): stopping on SIGTERM, then stopped.
    const logs = await podman(h1, ['logs', router(h1)]);
    const lines = `${logs.stdout}${logs.stderr}`
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { msg?: string; reason?: string });
    const stopping = lines.findIndex((l) => l.msg === 'router stopping');
    expect(lines[stopping]?.reason).toBe('SIGTERM');
    expect(lines.findIndex((l) => l.msg === 'router stopped')).toBeGreaterThan(stopping);
    await podman(h1, ['start', router(h1)]);
    await waitRouter(h1, 1);
    expect(await ps(h1)).toEqual(before);
    expect(await containerAddr(h1, 'p1')).toBe(addr.p1);
    expect((await weftIn(h1, ['expose'])).stdout.trim()).toBe(dnsAddr[h1.name]);
    // Attaching again is idempotent: the same address, from the state volume.
    const pid = (await podman(h1, ['inspect', '-f', '{{.State.Pid}}', 'p1'])).stdout.trim();
    expect((await weftIn(h1, ['attach', pid, '--name', 'p1'])).stdout.trim()).toBe(addr.p1);
    await pm.pingName(h1, 'p1', 'p2');
    await pm.pingName(h2, 'p2', 'p1');
  });
});
