import { execFile } from 'node:child_process';
import { existsSync, rmdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, Lab, requireRoot, waitUntil } from '../lab/netns.js';
import { Engine, engineSkipReason, PLUGINS_DIR, pingName } from './dockerd.js';
import { launch, removeStateDirs, weft } from './weft.js';

const run = promisify(execFile);
const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
/** BASE_BUILD_MS bounds building the local base rootfs on a cold cache (debootstrap). */
const BASE_BUILD_MS = 600_000;
/** WEFT_NET creates a weft network on the overlay range (see docker-plugin.ts for why --subnet). */
const WEFT_NET = ['-d', 'weft', '--ipam-driver', 'weft', '--subnet', '10.32.0.0/12'];
const IMAGE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

const reason = engineSkipReason([['/usr/bin/unshare', 'util-linux']]);
if (reason !== undefined && requireRoot() === undefined) console.warn(`docker plugin e2e skipped: ${reason}`);

interface PsEntry {
  target: string;
  cidrs: string[];
  name?: string;
  names?: string[];
  endpoint?: string;
}

/**
 * The Docker network plugin on two hosts, each with its own dockerd and a Weft router (a process
 * here; the router's image is tested in docker.e2e.ts): `docker network create -d weft
 * --ipam-driver weft weftnet` on both, `docker run --network weftnet` containers ping each other
 * by name across hosts, `docker rm -f` frees the address and the name on every host, and
 * `docker network connect` / `disconnect` plug a running container in and out.
 */
describe.skipIf(reason)('Docker network plugin: docker run --network weftnet', () => {
  let topo: Lab;
  let h1: Host;
  let h2: Host;
  let e1: Engine;
  let e2: Engine;
  const dir = path.join(tmpdir(), `weft-e2e-dplugin-${process.pid}`);
  const image = `weft-e2e-base:${process.pid}`;
  const dnsAddr: Record<string, string> = {};
  let routerFlags: (e: Engine) => string[];

  async function ps(h: Host): Promise<PsEntry[]> {
    return JSON.parse((await weft(h, ['ps', '--json'])).stdout || '[]') as PsEntry[];
  }

  async function allocations(h: Host): Promise<string[]> {
    const s = JSON.parse((await weft(h, ['status', 'ipam', '--json'])).stdout) as { allocations: { addr: string }[] };
    return s.allocations.map((a) => a.addr);
  }

  /** runOn starts a container on `net` that resolves names through its router's DNS (via Docker's embedded DNS). */
  async function runOn(e: Engine, name: string, net: string): Promise<void> {
    await e.docker([
      'run',
      '-d',
      '--name',
      name,
      ...['--network', net, '--dns', dnsAddr[e.host.name] as string, '--dns-search', 'weft.local'],
      image,
      ...['sleep', 'infinity'],
    ]);
  }

  /** weftAddr is a container's address on a network, as Docker has it. */
  async function weftAddr(e: Engine, name: string, net = 'weftnet'): Promise<string> {
    const f = `{{(index .NetworkSettings.Networks "${net}").IPAddress}}`;
    return (await e.docker(['inspect', '-f', f, name])).stdout.trim();
  }

  /** named waits until the router has registered `name` for a plugin endpoint. */
  async function named(h: Host, name: string): Promise<PsEntry> {
    let found: PsEntry | undefined;
    await waitUntil(
      async () => {
        found = (await ps(h)).find((p) => p.endpoint !== undefined && (p.names ?? [p.name]).includes(name));
        return found !== undefined;
      },
      { timeoutMs: 15_000, what: `${name} to be named on ${h.name}` },
    );
    return found as PsEntry;
  }

  async function goneEverywhere(name: string, addr: string, owner: Host): Promise<void> {
    await waitUntil(async () => !(await ps(owner)).some((p) => p.cidrs.some((c) => c.startsWith(`${addr}/`))), {
      timeoutMs: 10_000,
      what: `${name}'s endpoint to go from ${owner.name}`,
    });
    expect(await allocations(owner)).not.toContain(addr);
    for (const h of [h1, h2]) {
      await waitUntil(async () => (await weft(h, ['dns-lookup', name], { allowFail: true })).code !== 0, {
        timeoutMs: 5_000,
        what: `${name}.weft.local to be gone from ${h.name}'s DNS`,
      });
    }
  }

  beforeAll(async () => {
    topo = await Lab.create({ hosts: 2 });
    [h1, h2] = topo.hosts as [Host, Host];
    e1 = new Engine(h1, path.join(dir, 'h1'), { ownPlugins: true });
    e2 = new Engine(h2, path.join(dir, 'h2'), { ownPlugins: true });
    await Promise.all([e1.start(), e2.start()]);
    // The containers' image: the local Debian base (ping, ip, getent), cached by its inputs.
    const base = path.join(ROOT, 'scripts/build-base-image.sh');
    const key = (await run('sh', [base, '--key-only'], { cwd: ROOT })).stdout.trim();
    const cache = process.env.WEFT_BASE_CACHE ?? '/var/cache/weft-ci';
    const tar = path.join(cache, `base-${key}-run.tar`);
    if (!existsSync(tar)) await run('sh', [base, '--no-import'], { cwd: ROOT, timeout: BASE_BUILD_MS });
    await Promise.all(
      [e1, e2].map((e) => e.docker(['import', '--change', `ENV PATH=${IMAGE_PATH}`, tar, image], false, BASE_BUILD_MS)),
    );
    routerFlags = (e: Engine) => [
      ...['--docker-socket', e.socket, '--docker-plugin', '--docker-plugin-socket', path.join(e.plugins, 'weft.sock')],
      ...['--container-grace', '60000'],
    ];
    await launch(h1, [], routerFlags(e1));
    await launch(h2, [h1.underlayIp], routerFlags(e2));
    await waitUntil(
      async () => {
        const s = JSON.parse((await weft(h2, ['status', '--json'])).stdout) as { peers: { state: string }[] };
        return s.peers.some((p) => p.state === 'established');
      },
      { timeoutMs: 30_000, what: 'h2 to connect to h1' },
    );
  }, BASE_BUILD_MS + 180_000);

  afterAll(async () => {
    await Promise.all([e1?.stop(), e2?.stop()]);
    for (const h of [h1, h2]) if (h !== undefined) await weft(h, ['stop'], { allowFail: true });
    rmSync(dir, { recursive: true, force: true });
    for (const d of [PLUGINS_DIR, '/run/docker']) {
      try {
        rmdirSync(d);
      } catch {
        // not there, or in use by another engine
      }
    }
    if (topo !== undefined) {
      removeStateDirs(topo);
      await topo.destroy();
    }
  }, 120_000);

  it('serves the plugin: status says so; docker network create -d weft --ipam-driver weft --subnet RANGE works on both hosts, without --subnet it is refused', async () => {
    const s = JSON.parse((await weft(h1, ['status', '--json'])).stdout) as {
      docker?: { state: string; plugin?: { listening: boolean; socket: string } };
    };
    expect(s.docker).toMatchObject({ state: 'connected', plugin: { listening: true } });
    expect((await weft(h1, ['status'])).stdout).toMatch(
      /Docker: connected to .* \(events\); network plugin on \S+weft\.sock/,
    );
    for (const e of [e1, e2]) {
      await e.docker(['network', 'create', ...WEFT_NET, 'weftnet']);
      const subnet = (await e.docker(['network', 'inspect', '-f', '{{(index .IPAM.Config 0).Subnet}}', 'weftnet']))
        .stdout;
      expect(subnet.trim()).toBe('10.32.0.0/12');
      // The host's overlay address (exposed for the network's gateway), where its router's DNS listens.
      dnsAddr[e.host.name] = (await weft(e.host, ['expose'])).stdout.trim();
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
    expect(await allocations(h1)).toContain(db);
    const inside = (await e1.docker(['exec', 'db', 'ip', '-4', '-o', 'addr', 'show', 'ethwe0'])).stdout;
    expect(inside).toContain(`${db}/12`);
    // Its gateway is the host's overlay address.
    const route = (await e1.docker(['exec', 'db', 'ip', '-4', 'route', 'show', 'default'])).stdout;
    expect(route).toContain(`default via ${dnsAddr[h1.name]} dev ethwe0`);
    expect((await named(h1, 'db')).cidrs).toEqual([`${db}/12`]);
    await named(h2, 'web');
    await pingName(e2, 'web', 'db');
    await pingName(e1, 'db', 'web');
    await pingName(e1, 'db', 'web.weft.local');
  });

  it('docker rm -f frees the address and the name on every host', async () => {
    const web = await weftAddr(e2, 'web');
    await e2.docker(['rm', '-f', 'web']);
    await goneEverywhere('web', web, h2);
    expect((await e1.docker(['exec', 'db', 'ping', '-c', '1', '-W', '1', 'web'], true)).code).not.toBe(0);
  });

  it('docker network connect plugs a running container in, disconnect takes it out', async () => {
    await e2.docker(['network', 'create', '-d', 'bridge', '--internal', 'local']);
    await runOn(e2, 'app', 'local');
    expect((await e2.docker(['exec', 'app', 'ip', 'link', 'show', 'ethwe0'], true)).code).not.toBe(0);
    await e2.docker(['network', 'connect', 'weftnet', 'app']);
    const app = await weftAddr(e2, 'app');
    await named(h2, 'app');
    await pingName(e1, 'db', 'app');
    await e2.docker(['network', 'disconnect', 'weftnet', 'app']);
    expect((await e2.docker(['exec', 'app', 'ip', 'link', 'show', 'ethwe0'], true)).code).not.toBe(0);
    await goneEverywhere('app', app, h2);
    // And in again: a new endpoint, a new address from IPAM, the same name.
    await e2.docker(['network', 'connect', 'weftnet', 'app']);
    await named(h2, 'app');
    await pingName(e1, 'db', 'app');
  });

  it('keeps plugin endpoints across a restart of the router: addresses, names, and their cleanup', async () => {
    const db = await weftAddr(e1, 'db');
    const before = await ps(h1);
    await weft(h1, ['stop']);
    await launch(h1, [], routerFlags(e1));
    await waitUntil(
      async () => {
        const s = JSON.parse((await weft(h1, ['status', '--json'])).stdout) as {
          ready: boolean;
          peers: { state: string }[];
        };
        return s.ready && s.peers.some((p) => p.state === 'established');
      },
      { timeoutMs: 30_000, what: 'the restarted router on h1 to be ready and connected' },
    );
    expect(await ps(h1)).toEqual(before);
    await pingName(e2, 'app', 'db');
    await pingName(e1, 'db', 'app');
    // The endpoint joined before the restart is found again by its record when Docker lets it go.
    await e1.docker(['rm', '-f', 'db']);
    await goneEverywhere('db', db, h1);
  });
});
