import { rmdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, Lab, parseIperf3, requireRoot, waitUntil } from '../lab/netns.js';
import {
  Engine,
  engineSkipReason,
  IMAGE_BUILD_MS,
  PLUGINS_DIR,
  pingName,
  routerImage,
  routerRunArgs,
  testImage,
  waitRouter,
  weftIn,
} from './dockerd.js';

/** WEFT_NET creates a weft network on the overlay range (see docker-plugin.ts for why --subnet). */
const WEFT_NET = ['-d', 'weft', '--ipam-driver', 'weft', '--subnet', '10.32.0.0/12'];
const IPERF_PORT = '5201';

const reason = engineSkipReason([
  ['/usr/bin/unshare', 'util-linux'],
  ['/usr/bin/iperf3', 'iperf3'],
]);
if (reason !== undefined && requireRoot() === undefined) console.warn(`docker plugin e2e skipped: ${reason}`);

interface PsEntry {
  target: string;
  cidrs: string[];
  name?: string;
  names?: string[];
  endpoint?: string;
}

/**
 * The Docker network plugin as a user runs it: on two hosts, each with its own dockerd (in its
 * own mount namespace, so each sees its own host's /run/docker/plugins), the router runs as the
 * container built from the Dockerfile with `--docker-plugin` and the plugin directory mounted;
 * `docker network create -d weft --ipam-driver weft --subnet ... weftnet` on both, and `docker run
 * --network weftnet` containers ping each other by name across hosts and carry iperf3;
 * `docker rm -f` frees the address and the name on every host; `docker network connect` /
 * `disconnect` plug a running container in and out; `docker stop` / `start` of the router
 * container keeps every address.
 */
describe.skipIf(reason)('Docker network plugin: the router container and docker run --network weftnet', () => {
  let topo: Lab;
  let h1: Host;
  let h2: Host;
  let e1: Engine;
  let e2: Engine;
  const dir = path.join(tmpdir(), `weft-e2e-dplugin-${process.pid}`);
  const routerTag = `weft-e2e:${process.pid}`;
  const image = `weft-e2e-ctr:${process.pid}`;
  const dnsAddr: Record<string, string> = {};
  const started = Date.now();

  async function ps(e: Engine): Promise<PsEntry[]> {
    return JSON.parse((await weftIn(e, ['ps', '--json'])).stdout || '[]') as PsEntry[];
  }

  async function allocations(e: Engine): Promise<string[]> {
    const s = JSON.parse((await weftIn(e, ['status', 'ipam', '--json'])).stdout) as {
      allocations: { addr: string }[];
    };
    return s.allocations.map((a) => a.addr);
  }

  /** runOn starts a container on `net` that resolves names through its router's DNS (via Docker's embedded DNS). */
  async function runOn(e: Engine, name: string, net: string, extra: string[] = []): Promise<void> {
    await e.docker([
      'run',
      '-d',
      '--name',
      name,
      ...['--network', net, '--dns', dnsAddr[e.host.name] as string, '--dns-search', 'weft.local', ...extra],
      image,
      ...['sleep', 'infinity'],
    ]);
  }

  /** weftAddr is a container's address on a network, as Docker has it. */
  async function weftAddr(e: Engine, name: string, net = 'weftnet'): Promise<string> {
    const f = `{{(index .NetworkSettings.Networks "${net}").IPAddress}}`;
    return (await e.docker(['inspect', '-f', f, name])).stdout.trim();
  }

  /** inside is the address on the container's ethwe0, as the kernel has it. */
  async function inside(e: Engine, name: string): Promise<string> {
    return (await e.docker(['exec', name, 'ip', '-4', '-o', 'addr', 'show', 'ethwe0'])).stdout;
  }

  /** named waits until the router has registered `name` for a plugin endpoint. */
  async function named(e: Engine, name: string): Promise<PsEntry> {
    let found: PsEntry | undefined;
    await waitUntil(
      async () => {
        found = (await ps(e)).find((p) => p.endpoint !== undefined && (p.names ?? [p.name]).includes(name));
        return found !== undefined;
      },
      { timeoutMs: 15_000, what: `${name} to be named on ${e.host.name}` },
    );
    return found as PsEntry;
  }

  async function goneEverywhere(name: string, addr: string, owner: Engine): Promise<void> {
    await waitUntil(async () => !(await ps(owner)).some((p) => p.cidrs.some((c) => c.startsWith(`${addr}/`))), {
      timeoutMs: 10_000,
      what: `${name}'s endpoint to go from ${owner.host.name}`,
    });
    expect(await allocations(owner)).not.toContain(addr);
    for (const e of [e1, e2]) {
      await waitUntil(async () => (await weftIn(e, ['dns-lookup', name], true)).code !== 0, {
        timeoutMs: 5_000,
        what: `${name}.weft.local to be gone from ${e.host.name}'s DNS`,
      });
    }
  }

  /** iperf3 runs a 2 s TCP test from container `from` to the iperf3 server in `to` (by name) and checks data crossed. */
  async function iperf3(e: Engine, from: string, to: string): Promise<number> {
    let out = '';
    // The server may still be starting: retry the connect, not the test.
    await waitUntil(
      async () => {
        const r = await e.docker(['exec', from, 'iperf3', '-c', to, '-p', IPERF_PORT, '-t', '2', '-J'], true, 30_000);
        out = r.stdout;
        return r.code === 0 || !/unable to connect/.test(r.stdout + r.stderr);
      },
      { timeoutMs: 20_000, what: `${from} to reach iperf3 on ${to}` },
    );
    const res = parseIperf3(out, false);
    expect(res.seconds).toBeGreaterThan(1);
    expect(res.bitsPerSecond).toBeGreaterThan(0);
    return res.bitsPerSecond;
  }

  beforeAll(async () => {
    topo = await Lab.create({ hosts: 2 });
    [h1, h2] = topo.hosts as [Host, Host];
    e1 = new Engine(h1, path.join(dir, 'h1'), { ownPlugins: true });
    e2 = new Engine(h2, path.join(dir, 'h2'), { ownPlugins: true });
    await Promise.all([e1.start(), e2.start()]);
    const t0 = Date.now();
    // The router image: built once per tree (scripts/build-image.sh caches it by its inputs).
    console.info(`docker plugin e2e: ${await routerImage([e1, e2], routerTag, dir)}`);
    const t1 = Date.now();
    // The containers' image: the router's (its Debian base has ping, ip, getent) plus iperf3.
    await testImage([e1, e2], image, routerTag, dir);
    console.info(`docker plugin e2e: router image ${t1 - t0} ms, test image ${Date.now() - t1} ms`);
    // The router as the container, as the README runs it, with the plugin directory mounted.
    const flags = (e: Engine) => ['--nickname', e.host.name, '--container-grace', '60000', '--docker-plugin'];
    await e1.docker(routerRunArgs(e1, routerTag, flags(e1), { plugin: true }));
    await e2.docker(routerRunArgs(e2, routerTag, [...flags(e2), h1.underlayIp], { plugin: true }));
    await waitRouter(e1, 1);
    await waitRouter(e2, 1);
  }, IMAGE_BUILD_MS + 180_000);

  afterAll(async () => {
    // Containers on weftnet first, while their router still answers Leave and ReleaseAddress.
    for (const e of [e1, e2]) {
      if (e === undefined) continue;
      const ids = (await e.docker(['ps', '-aq', '--filter', 'network=weftnet'], true)).stdout
        .split(/\s+/)
        .filter(Boolean);
      if (ids.length > 0) await e.docker(['rm', '-f', ...ids], true);
      await e.docker(['network', 'rm', 'weftnet'], true);
    }
    await Promise.all([e1?.stop(), e2?.stop()]);
    rmSync(dir, { recursive: true, force: true });
    for (const d of [PLUGINS_DIR, '/run/docker']) {
      try {
        rmdirSync(d);
      } catch {
        // not there, or in use by another engine
      }
    }
    await topo?.destroy();
    console.info(`docker plugin e2e: ${Date.now() - started} ms in all`);
  }, 180_000);

  it('serves the plugin from the router container: status says so; docker network create -d weft --ipam-driver weft --subnet RANGE works on both hosts, without --subnet it is refused', async () => {
    const s = JSON.parse((await weftIn(e1, ['status', '--json'])).stdout) as {
      docker?: { state: string; plugin?: { listening: boolean; socket: string } };
    };
    expect(s.docker).toMatchObject({
      state: 'connected',
      plugin: { listening: true, socket: `${PLUGINS_DIR}/weft.sock` },
    });
    expect((await weftIn(e1, ['status'])).stdout).toMatch(
      /Docker: connected to \/var\/run\/docker\.sock \(events\); network plugin on \/run\/docker\/plugins\/weft\.sock/,
    );
    for (const e of [e1, e2]) {
      await e.docker(['network', 'create', ...WEFT_NET, 'weftnet']);
      const subnet = (await e.docker(['network', 'inspect', '-f', '{{(index .IPAM.Config 0).Subnet}}', 'weftnet']))
        .stdout;
      expect(subnet.trim()).toBe('10.32.0.0/12');
      // The host's overlay address (exposed for the network's gateway), where its router's DNS listens.
      dnsAddr[e.host.name] = (await weftIn(e, ['expose'])).stdout.trim();
    }
    // A pool outside the range is refused with the driver's reason.
    const bad = await e1.docker(
      ['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', '192.168.77.0/24', 'bad'],
      true,
    );
    expect(bad.code).not.toBe(0);
    // Without --subnet libnetwork would ask for pools forever (each overlaps the range's route): refused at once, saying why.
    const none = await e1.docker(
      ['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', 'nosubnet'],
      true,
      20_000,
    );
    expect(none.code).not.toBe(0);
    expect(none.stderr).toMatch(/weft: RequestPool: give the network a subnet/);
  });

  it('gives docker run --network weftnet containers an IPAM address and a DNS name; they ping by name across hosts', async () => {
    // For the record (no assertion: 2 shared cores): what joining the overlay adds to a docker run.
    // The first run of the image pays for its layers: one untimed run first.
    await e1.docker(['run', '-d', '--name', 'n0', '--network', 'none', image, 'sleep', 'infinity']);
    let t0 = Date.now();
    await e1.docker(['run', '-d', '--name', 'n1', '--network', 'none', image, 'sleep', 'infinity']);
    const none = Date.now() - t0;
    t0 = Date.now();
    await runOn(e1, 'db', 'weftnet');
    console.info(`docker plugin e2e: docker run -d --network none ${none} ms, --network weftnet ${Date.now() - t0} ms`);
    await e1.docker(['rm', '-f', 'n0', 'n1']);
    await runOn(e2, 'web', 'weftnet');
    const db = await weftAddr(e1, 'db');
    const web = await weftAddr(e2, 'web');
    expect(db).toMatch(/^10\.(3[2-9]|4[0-7])\./);
    expect(web).not.toBe(db);
    // The address is IPAM's, owned by the endpoint; the interface inside is libnetwork's ethwe0.
    expect(await allocations(e1)).toContain(db);
    expect(await inside(e1, 'db')).toContain(`${db}/12`);
    // Its gateway is the host's overlay address.
    const route = (await e1.docker(['exec', 'db', 'ip', '-4', 'route', 'show', 'default'])).stdout;
    expect(route).toContain(`default via ${dnsAddr[h1.name]} dev ethwe0`);
    expect((await named(e1, 'db')).cidrs).toEqual([`${db}/12`]);
    await named(e2, 'web');
    await pingName(e2, 'web', 'db');
    await pingName(e1, 'db', 'web');
    await pingName(e1, 'db', 'web.weft.local');
  });

  it('carries iperf3 (TCP) between weftnet containers on the two hosts, by name, both ways', async () => {
    for (const [e, name] of [
      [e1, 'db'],
      [e2, 'web'],
    ] as const) {
      await e.docker(['exec', name, 'iperf3', '-s', '-D', '-p', IPERF_PORT]);
    }
    const there = await iperf3(e2, 'web', 'db');
    const back = await iperf3(e1, 'db', 'web');
    // For the record only (2 shared cores, other tests running): not asserted.
    console.info(
      `docker plugin e2e: iperf3 web→db ${(there / 1e6).toFixed(0)} Mbit/s, db→web ${(back / 1e6).toFixed(0)} Mbit/s`,
    );
  });

  it('docker restart of a weftnet container: libnetwork gives the address back and asks IPAM again (the lowest free one comes back), the name follows; with --ip the address stays, and a start fails while another container has it', async () => {
    // low holds the lowest free address of h2's share, rs the next; low goes, so the lowest free is low's.
    await runOn(e2, 'low', 'weftnet');
    await runOn(e2, 'rs', 'weftnet');
    const low = await weftAddr(e2, 'low');
    const before = await weftAddr(e2, 'rs');
    await named(e2, 'rs');
    await e2.docker(['rm', '-f', 'low']);
    await goneEverywhere('low', low, e2);
    await e2.docker(['restart', '-t', '1', 'rs']);
    const after = await weftAddr(e2, 'rs');
    console.info(`docker plugin e2e: docker restart moved rs from ${before} to ${after}`);
    // Docker sends no preferred address without --ip (moby/moby#19001: no stable IP across restarts
    // unless asked for): a new endpoint, RequestAddress as for a new container, the old one freed.
    expect(after).toBe(low);
    expect(await allocations(e2)).not.toContain(before);
    expect(await inside(e2, 'rs')).toContain(`${after}/12`);
    expect((await named(e2, 'rs')).cidrs).toEqual([`${after}/12`]);
    await pingName(e1, 'db', 'rs');
    // An address given with --ip (in this host's share) is asked for on every start: it stays.
    await e2.docker(['rm', '-f', 'rs']);
    await goneEverywhere('rs', after, e2);
    await runOn(e2, 'rs', 'weftnet', ['--ip', before]);
    expect(await weftAddr(e2, 'rs')).toBe(before);
    await e2.docker(['restart', '-t', '1', 'rs']);
    expect(await weftAddr(e2, 'rs')).toBe(before);
    expect(await inside(e2, 'rs')).toContain(`${before}/12`);
    expect((await named(e2, 'rs')).cidrs).toEqual([`${before}/12`]);
    await pingName(e1, 'db', 'rs');
    // Stopped, it holds nothing (libnetwork released the address): when another container has the
    // address by then, the start fails, as Docker documents for --ip, and works once it is free.
    await e2.docker(['stop', '-t', '1', 'rs']);
    expect(await allocations(e2)).not.toContain(before);
    await runOn(e2, 'taker', 'weftnet', ['--ip', before]);
    const refused = await e2.docker(['start', 'rs'], true);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(new RegExp(`weft: .*${before.replaceAll('.', '\\.')} is in use`));
    await e2.docker(['rm', '-f', 'taker']);
    await goneEverywhere('taker', before, e2);
    await e2.docker(['start', 'rs']);
    expect(await weftAddr(e2, 'rs')).toBe(before);
    await pingName(e1, 'db', 'rs');
    await e2.docker(['rm', '-f', 'rs']);
    await goneEverywhere('rs', before, e2);
  });

  it('docker rm -f frees the address and the name on every host', async () => {
    const web = await weftAddr(e2, 'web');
    await e2.docker(['rm', '-f', 'web']);
    await goneEverywhere('web', web, e2);
    expect((await e1.docker(['exec', 'db', 'ping', '-c', '1', '-W', '1', 'web'], true)).code).not.toBe(0);
  });

  it('docker network connect plugs a running container in, disconnect takes it out', async () => {
    await e2.docker(['network', 'create', '-d', 'bridge', '--internal', 'local']);
    await runOn(e2, 'app', 'local');
    expect((await e2.docker(['exec', 'app', 'ip', 'link', 'show', 'ethwe0'], true)).code).not.toBe(0);
    await e2.docker(['network', 'connect', 'weftnet', 'app']);
    const app = await weftAddr(e2, 'app');
    await named(e2, 'app');
    await pingName(e1, 'db', 'app');
    await e2.docker(['network', 'disconnect', 'weftnet', 'app']);
    expect((await e2.docker(['exec', 'app', 'ip', 'link', 'show', 'ethwe0'], true)).code).not.toBe(0);
    await goneEverywhere('app', app, e2);
    // And in again: a new endpoint, a new address from IPAM, the same name.
    await e2.docker(['network', 'connect', 'weftnet', 'app']);
    await named(e2, 'app');
    await pingName(e1, 'db', 'app');
  });

  it('keeps every address across docker stop / start of the router container: records, names, traffic, and cleanup after', async () => {
    const db = await weftAddr(e1, 'db');
    const app = await weftAddr(e2, 'app');
    const before = { h1: await ps(e1), h2: await ps(e2) };
    await e1.docker(['stop', 'weft']);
    await e2.docker(['stop', 'weft']);
    await e1.docker(['start', 'weft']);
    await e2.docker(['start', 'weft']);
    await waitRouter(e1, 1);
    await waitRouter(e2, 1);
    expect(await ps(e1)).toEqual(before.h1);
    expect(await ps(e2)).toEqual(before.h2);
    expect(await weftAddr(e1, 'db')).toBe(db);
    expect(await weftAddr(e2, 'app')).toBe(app);
    expect(await inside(e1, 'db')).toContain(`${db}/12`);
    expect((await weftIn(e1, ['expose'])).stdout.trim()).toBe(dnsAddr[h1.name]);
    await pingName(e2, 'app', 'db');
    await pingName(e1, 'db', 'app');
    // iperf3 -D in db survived (db was never restarted): TCP crosses again.
    await iperf3(e2, 'app', 'db');
    // The endpoint joined before the restart is found again by its record when Docker lets it go.
    await e1.docker(['rm', '-f', 'db']);
    await goneEverywhere('db', db, e1);
  });
});
