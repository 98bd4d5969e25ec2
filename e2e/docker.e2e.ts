import { rmdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, Lab, requireRoot, waitUntil } from '../lab/netns.js';
import {
  Engine,
  engineSkipReason,
  IMAGE_BUILD_MS,
  pingName,
  routerImage,
  routerRunArgs,
  waitRouter,
  weftIn,
} from './dockerd.js';
import { launch, weft } from './weft.js';

const reason = engineSkipReason();
if (reason !== undefined && requireRoot() === undefined) console.warn(`docker e2e skipped: ${reason}`);

interface StatusJson {
  ready: boolean;
  peers: { state: string }[];
  docker?: { state: string; events: boolean; socket: string };
}

interface PsEntry {
  target: string;
  cidrs: string[];
  name?: string;
}

/**
 * The router as a container built from the Dockerfile on two hosts, each with its own dockerd;
 * Docker containers attached by name (`weft attach c1`) ping each other across hosts by DNS name,
 * stay attached across `docker restart`, give their address and name back at once on `docker rm
 * -f`, and keep their addresses across `docker stop`/`start` of the router container.
 */
describe.skipIf(reason)('Docker: the router container and weft attach of Docker containers', () => {
  let topo: Lab;
  let h1: Host;
  let h2: Host;
  let e1: Engine;
  let e2: Engine;
  const dir = path.join(tmpdir(), `weft-e2e-docker-${process.pid}`);
  const image = `weft-e2e:${process.pid}`;
  /** dnsAddr: each host's exposed overlay address, where its router's DNS listens. */
  const dnsAddr: Record<string, string> = {};
  const addr: Record<string, string> = {};

  /** startRouter runs the router container on an engine (host network, TUN, the engine's socket, a state volume). */
  async function startRouter(e: Engine, peers: string[]): Promise<void> {
    await e.docker(routerRunArgs(e, image, ['--nickname', e.host.name, '--container-grace', '60000', ...peers]));
    await waitRouter(e);
  }

  async function status(e: Engine): Promise<StatusJson> {
    return JSON.parse((await weftIn(e, ['status', '--json'])).stdout) as StatusJson;
  }

  async function ps(e: Engine): Promise<PsEntry[]> {
    return JSON.parse((await e.docker(['exec', 'weft', 'weft', 'ps', '--json'], true)).stdout || '[]') as PsEntry[];
  }

  /** runContainer starts a container with no network of Docker's own, resolving names with its router's DNS. */
  async function runContainer(e: Engine, name: string): Promise<void> {
    await e.docker([
      'run',
      '-d',
      '--name',
      name,
      '--network',
      'none',
      ...['--dns', dnsAddr[e.host.name] as string, '--dns-search', 'weft.local', '--entrypoint', 'sleep'],
      image,
      'infinity',
    ]);
  }

  async function containerAddr(e: Engine, name: string): Promise<string | undefined> {
    const r = await e.docker(['exec', name, 'ip', '-j', '-4', 'addr', 'show', 'ethwe'], true);
    if (r.code !== 0) return undefined;
    const info = JSON.parse(r.stdout || '[]') as { addr_info?: { local: string }[] }[];
    return info[0]?.addr_info?.[0]?.local;
  }

  beforeAll(async () => {
    topo = await Lab.create({ hosts: 2 });
    [h1, h2] = topo.hosts as [Host, Host];
    e1 = new Engine(h1, path.join(dir, 'h1'));
    e2 = new Engine(h2, path.join(dir, 'h2'));
    await Promise.all([e1.start(), e2.start()]);
    // Built once (or loaded from the cache keyed by its inputs), loaded into the second engine.
    console.info(`docker e2e: ${await routerImage([e1, e2], image, dir)}`);
    await startRouter(e1, []);
    await startRouter(e2, [h1.underlayIp]);
    await waitRouter(e1, 1);
    await waitRouter(e2, 1);
    for (const e of [e1, e2]) dnsAddr[e.host.name] = (await weftIn(e, ['expose'])).stdout.trim();
  }, IMAGE_BUILD_MS + 180_000);

  afterAll(async () => {
    await Promise.all([e1?.stop(), e2?.stop()]);
    rmSync(dir, { recursive: true, force: true });
    // Directories dockerd makes outside its roots: removed only when empty (no other engine uses them).
    // (containerd's /run/containerd/{s,runc} are shared with any other containerd here: left alone.)
    for (const d of ['/run/docker/plugins', '/run/docker']) {
      try {
        rmdirSync(d);
      } catch {
        // not there, or in use
      }
    }
    await topo?.destroy();
  }, 120_000);

  it('runs the router container: status says the Docker integration is connected', async () => {
    const s = await status(e1);
    expect(s.docker).toMatchObject({ state: 'connected', events: true, socket: '/var/run/docker.sock' });
    expect((await weftIn(e1, ['status'])).stdout).toMatch(/Docker: connected to \/var\/run\/docker\.sock \(events\)/);
    // The image's size, for the record.
    const size = Number((await e1.docker(['image', 'inspect', '-f', '{{.Size}}', image])).stdout);
    console.info(`docker e2e: router image ${image} is ${(size / 1e6).toFixed(0)} MB`);
  });

  it('without an engine, a router says so in its status and works', async () => {
    const ns = await topo.addNamespace('nd');
    try {
      await launch(ns, [], ['--docker-socket', path.join(dir, 'no-engine.sock')]);
      const text = (await weft(ns, ['status'])).stdout;
      expect(text).toContain(`Docker: not found at ${path.join(dir, 'no-engine.sock')}`);
      const r = await weft(ns, ['attach', 'no-such-container'], { allowFail: true });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/no running Docker container of that name/);
      await weft(ns, ['stop']);
    } finally {
      await topo.removeNamespace(ns);
      for (const d of [path.join(tmpdir(), 'weft-e2e', ns.name), path.join('/run/weft/netns', ns.name)]) {
        rmSync(d, { recursive: true, force: true });
      }
    }
  });

  it('attaches Docker containers by name on both hosts; they ping each other by DNS name', async () => {
    await runContainer(e1, 'c1');
    await runContainer(e2, 'c2');
    await runContainer(e2, 'c3');
    addr.c1 = (await weftIn(e1, ['attach', 'c1'])).stdout.trim();
    addr.c2 = (await weftIn(e2, ['attach', 'c2'])).stdout.trim();
    addr.c3 = (await weftIn(e2, ['attach', 'c3'])).stdout.trim();
    expect(new Set(Object.values(addr)).size).toBe(3);
    expect(await containerAddr(e1, 'c1')).toBe(addr.c1);
    // Keyed by the container's id, named after it by default.
    const id = (await e1.docker(['inspect', '-f', '{{.Id}}', 'c1'])).stdout.trim();
    expect(await ps(e1)).toEqual([expect.objectContaining({ target: id, name: 'c1' })]);
    // Idempotent, by name or by id.
    expect((await weftIn(e1, ['attach', id.slice(0, 12)])).stdout.trim()).toBe(addr.c1);
    await pingName(e1, 'c1', 'c2');
    await pingName(e2, 'c2', 'c1');
    await pingName(e2, 'c3', 'c1.weft.local');
  });

  it('keeps a container attached across docker restart', async () => {
    await e1.docker(['restart', '-t', '1', 'c1']);
    await waitUntil(async () => (await containerAddr(e1, 'c1')) === addr.c1, {
      timeoutMs: 15_000,
      what: 'c1 to be re-attached with its address after docker restart',
    });
    await pingName(e2, 'c2', 'c1');
    await pingName(e1, 'c1', 'c3');
  });

  it('frees the address and the name of a removed container at once, on every host', async () => {
    await e2.docker(['rm', '-f', 'c2']);
    await waitUntil(async () => !(await ps(e2)).some((p) => p.name === 'c2'), {
      timeoutMs: 5_000,
      what: 'c2 to be detached after docker rm -f',
    });
    const ipam = JSON.parse((await weftIn(e2, ['status', 'ipam', '--json'])).stdout) as {
      allocations: { addr: string }[];
    };
    expect(ipam.allocations.map((a) => a.addr)).not.toContain(addr.c2);
    for (const e of [e1, e2]) {
      await waitUntil(async () => (await weftIn(e, ['dns-lookup', 'c2'], true)).code !== 0, {
        timeoutMs: 5_000,
        what: `c2.weft.local to be gone from ${e.host.name}'s DNS`,
      });
    }
    expect((await e1.docker(['exec', 'c1', 'ping', '-c', '1', '-W', '1', 'c2'], true)).code).not.toBe(0);
  });

  it('keeps every address across docker stop / start of the router container', async () => {
    const before = { h1: await ps(e1), h2: await ps(e2) };
    await e1.docker(['stop', 'weft']);
    // A container restarted while its router is down is plugged in again when the router is back.
    await e1.docker(['restart', '-t', '1', 'c1']);
    expect(await containerAddr(e1, 'c1')).toBeUndefined();
    await e1.docker(['start', 'weft']);
    await waitRouter(e1, 1);
    expect(await ps(e1)).toEqual(before.h1);
    await waitUntil(async () => (await containerAddr(e1, 'c1')) === addr.c1, {
      timeoutMs: 15_000,
      what: 'c1, restarted while the router was down, to be re-attached with its address',
    });
    expect((await weftIn(e1, ['expose'])).stdout.trim()).toBe(dnsAddr[h1.name]);
    await pingName(e1, 'c1', 'c3');
    await pingName(e2, 'c3', 'c1');
    expect(await ps(e2)).toEqual(before.h2);
  });
});
