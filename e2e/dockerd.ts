/**
 * Engine is one dockerd started inside a lab host's network namespace (`nsenter --net`, which,
 * unlike `ip netns exec`, leaves /sys and so the cgroups visible), with everything it keeps in
 * `dir`: data and exec roots, socket, pid file, log. It touches no firewall and makes no bridge
 * (`--iptables=false --bridge=none`). Shared by e2e/docker.e2e.ts and e2e/docker-plugin.e2e.ts.
 *
 * With `ownPlugins`, dockerd runs in a mount namespace of its own (`unshare --mount`, propagation
 * slave: the host's mounts still reach it, its own stay inside) where `DIR/plugins` is bind-mounted
 * on /run/docker/plugins. Two dockerds on one machine share the filesystem and dockerd finds
 * plugins only at the fixed /run/docker/plugins/NAME.sock: with one directory both engines would
 * reach whichever router made weft.sock last, and per-host plugin names would make the commands
 * differ from what a user types (`-d weft`). The host's router (outside that mount namespace)
 * listens on `DIR/plugins/weft.sock`, the inode dockerd sees as /run/docker/plugins/weft.sock.
 */
import { execFile, spawn } from 'node:child_process';
import { cpSync, existsSync, lstatSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'vitest';
import { removeMounted } from '../lab/mounts.js';
import { type Host, requireRoot, waitUntil } from '../lab/netns.js';

const run = promisify(execFile);

/** DOCKER is the engine's own 20.10 client (BuildKit built in); /usr/local/bin/docker may be a newer one without buildx. */
export const DOCKER = '/usr/bin/docker';
export const DOCKERD = '/usr/sbin/dockerd';
/** PLUGINS_DIR is where dockerd looks for plugin sockets. */
export const PLUGINS_DIR = '/run/docker/plugins';
/** ENGINE_STOP_MS: how long a dockerd gets after SIGTERM before SIGKILL. */
const ENGINE_STOP_MS = 20_000;
/** IMAGE_BUILD_MS bounds building (cold: base rootfs + image, ~3 min on 2 busy cores) or loading an image. */
export const IMAGE_BUILD_MS = 600_000;
const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
/** TEST_IMAGE_PACKAGES are copied from this machine into the test containers' image (bookworm, as the base). */
const TEST_IMAGE_PACKAGES = ['iperf3', 'libiperf0', 'libsctp1'];

/**
 * engineSkipReason says in one line why no Docker engine can be started here (not root, a missing
 * program — `extra` adds some — or no cgroup filesystem), or undefined when one can.
 */
export function engineSkipReason(extra: readonly (readonly [string, string])[] = []): string | undefined {
  const root = requireRoot();
  if (root !== undefined) return root;
  for (const [file, pkg] of [
    [DOCKERD, 'docker.io'],
    [DOCKER, 'docker.io'],
    ['/usr/sbin/debootstrap', 'debootstrap'],
    ...extra,
  ]) {
    if (!existsSync(file)) return `${file} is missing (apt-get install ${pkg})`;
  }
  if (!existsSync('/sys/fs/cgroup/devices') && !existsSync('/sys/fs/cgroup/cgroup.controllers')) {
    return 'no cgroup filesystem at /sys/fs/cgroup: dockerd cannot run containers';
  }
  return undefined;
}

/** DockerResult is what one docker CLI call printed, and its exit status. */
export interface DockerResult {
  stdout: string;
  stderr: string;
  code: number;
}

export class Engine {
  readonly socket: string;
  readonly pidFile: string;
  /** plugins is this engine's /run/docker/plugins when started with `ownPlugins`. */
  readonly plugins: string;
  pid: number | undefined;

  constructor(
    readonly host: Host,
    readonly dir: string,
    readonly opts: { ownPlugins?: boolean } = {},
  ) {
    this.socket = path.join(dir, 'docker.sock');
    this.pidFile = path.join(dir, 'docker.pid');
    this.plugins = path.join(dir, 'plugins');
  }

  async start(): Promise<void> {
    mkdirSync(this.dir, { recursive: true });
    const log = openSync(path.join(this.dir, 'dockerd.log'), 'a');
    const dockerd = [
      DOCKERD,
      ...['--data-root', path.join(this.dir, 'root'), '--exec-root', path.join(this.dir, 'exec')],
      ...['-H', `unix://${this.socket}`, '--pidfile', this.pidFile],
      ...['--iptables=false', '--ip6tables=false', '--bridge=none', '--storage-driver', 'overlay2'],
    ];
    let wrap: string[] = [];
    if (this.opts.ownPlugins === true) {
      mkdirSync(this.plugins, { recursive: true });
      mkdirSync(PLUGINS_DIR, { recursive: true });
      wrap = [
        ...['unshare', '--mount', '--propagation', 'slave'],
        ...['sh', '-c', 'mount --bind "$1" "$2" && shift 2 && exec "$@"', 'sh', this.plugins, PLUGINS_DIR],
      ];
    }
    const child = spawn('nsenter', [`--net=/run/netns/${this.host.name}`, ...wrap, ...dockerd], {
      stdio: ['ignore', log, log],
      detached: true,
    });
    child.unref();
    this.pid = child.pid;
    await waitUntil(async () => (await this.docker(['version', '--format', '{{.Server.Version}}'], true)).code === 0, {
      timeoutMs: 60_000,
      what: `dockerd in ${this.host.name} to answer (log: ${path.join(this.dir, 'dockerd.log')})`,
    });
  }

  /** docker runs the docker CLI against this engine; throws with its stderr unless `allowFail`. */
  async docker(args: string[], allowFail = false, timeoutMs = 60_000): Promise<DockerResult> {
    try {
      const r = await run(DOCKER, args, {
        env: { ...process.env, DOCKER_HOST: `unix://${this.socket}` },
        timeout: timeoutMs,
      });
      return { stdout: r.stdout, stderr: r.stderr, code: 0 };
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; code?: number };
      if (allowFail)
        return { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: typeof e.code === 'number' ? e.code : 1 };
      throw new Error(`[${this.host.name}] docker ${args.join(' ')}: ${(e.stderr ?? String(err)).trim()}`);
    }
  }

  /**
   * stop removes every container, network, image and volume, stops dockerd by its pid (SIGTERM,
   * SIGKILL after ENGINE_STOP_MS), unmounts what it left here and removes its directory. Never throws.
   */
  async stop(): Promise<void> {
    if (this.pid !== undefined && existsSync(this.socket)) {
      const ids = (await this.docker(['ps', '-aq'], true)).stdout.split(/\s+/).filter(Boolean);
      if (ids.length > 0) await this.docker(['rm', '-f', '-v', ...ids], true);
      await this.docker(['network', 'prune', '-f'], true);
      const images = (await this.docker(['images', '-q'], true)).stdout.split(/\s+/).filter(Boolean);
      if (images.length > 0) await this.docker(['rmi', '-f', ...new Set(images)], true);
      await this.docker(['volume', 'prune', '-f'], true);
    }
    const pid = this.pid;
    if (pid !== undefined) {
      try {
        process.kill(pid, 'SIGTERM');
        const deadline = Date.now() + ENGINE_STOP_MS;
        while (isAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
        if (isAlive(pid)) process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
      this.pid = undefined;
    }
    removeMounted(this.dir);
  }
}

/** isAlive says whether a process exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** pingName pings `name` from container `from` until it answers (resolving it through the router's DNS), then three times. */
export async function pingName(e: Engine, from: string, name: string): Promise<void> {
  await waitUntil(async () => (await e.docker(['exec', from, 'ping', '-c', '1', '-W', '1', name], true)).code === 0, {
    timeoutMs: 20_000,
    what: `${from} on ${e.host.name} to ping ${name}`,
  });
  const r = await e.docker(['exec', from, 'ping', '-c', '3', '-i', '0.2', '-W', '1', name]);
  expect(r.stdout).toMatch(/3 received/);
}

/**
 * routerImage puts the router image built from the Dockerfile on every engine as `tag`: built on
 * the first by scripts/build-image.sh (or loaded from its cache, keyed by the image's inputs), and
 * loaded on the others from the same cached tarball (the tree may change meanwhile: every host
 * runs the same image). Returns what it took, for the log.
 */
export async function routerImage(engines: readonly Engine[], tag: string, scratch: string): Promise<string> {
  const [first, ...rest] = engines;
  if (first === undefined) return '';
  const t0 = Date.now();
  const built = await run('sh', [path.join(ROOT, 'scripts/build-image.sh'), tag], {
    cwd: ROOT,
    env: { ...process.env, DOCKER_HOST: `unix://${first.socket}`, DOCKER },
    timeout: IMAGE_BUILD_MS,
  });
  const note = built.stderr.trim().split('\n').at(-1) ?? '';
  const t1 = Date.now();
  const tarball = /(\/\S+\/router-([0-9a-f]{16})\.tar)/.exec(note);
  if (tarball !== null) {
    await Promise.all(
      rest.map(async (e) => {
        await e.docker(['load', '-q', '-i', tarball[1] as string], false, IMAGE_BUILD_MS);
        await e.docker(['tag', `weft-router:${tarball[2]}`, tag]);
      }),
    );
  } else if (rest.length > 0) {
    const file = path.join(scratch, 'router.tar');
    mkdirSync(scratch, { recursive: true });
    await first.docker(['save', '-o', file, tag], false, IMAGE_BUILD_MS);
    await Promise.all(rest.map((e) => e.docker(['load', '-q', '-i', file], false, IMAGE_BUILD_MS)));
    rmSync(file, { force: true });
  }
  return `image on ${first.host.name} in ${t1 - t0} ms (${note}), on ${rest.length} more in ${Date.now() - t1} ms`;
}

/**
 * testImage makes the test containers' image on every engine as `tag`: the router image `from`
 * (already there: the local Debian base with ping, ip, getent; no second base to import) plus
 * iperf3, whose files (TEST_IMAGE_PACKAGES, bookworm's, as the base) are copied from this machine
 * as scripts/build-base-image.sh copies Node, with no entrypoint. A build with no network: about a
 * second. `scratch` is a directory it may use.
 */
export async function testImage(engines: readonly Engine[], tag: string, from: string, scratch: string): Promise<void> {
  const ctx = path.join(scratch, 'test-image');
  const files = (await run('dpkg', ['-L', ...TEST_IMAGE_PACKAGES])).stdout
    .split('\n')
    .filter((f) => f.startsWith('/usr/') && !f.startsWith('/usr/share/'));
  for (const f of files) {
    if (lstatSync(f).isDirectory()) continue;
    mkdirSync(path.join(ctx, 'root', path.dirname(f)), { recursive: true });
    cpSync(f, path.join(ctx, 'root', f), { verbatimSymlinks: true });
  }
  writeFileSync(
    path.join(ctx, 'Dockerfile'),
    `FROM ${from}\nCOPY root/ /\nRUN iperf3 --version >/dev/null\nENTRYPOINT []\nCMD ["sleep", "infinity"]\n`,
  );
  await Promise.all(
    engines.map((e) => e.docker(['build', '-q', '--network', 'none', '-t', tag, ctx], false, IMAGE_BUILD_MS)),
  );
}

/**
 * routerRunArgs are the `docker run` arguments of the router container as the README gives them
 * (host network, pid namespace, NET_ADMIN and SYS_ADMIN, /dev/net/tun, the state volume, the
 * engine's socket), with this engine's socket for /var/run/docker.sock; with `plugin` also the
 * plugin directory, where `--docker-plugin` makes weft.sock for dockerd.
 */
export function routerRunArgs(
  e: Engine,
  image: string,
  args: readonly string[],
  opts: { plugin?: boolean } = {},
): string[] {
  return [
    ...['run', '-d', '--name', 'weft'],
    ...['--network', 'host', '--pid', 'host', '--cap-add', 'NET_ADMIN', '--cap-add', 'SYS_ADMIN'],
    ...['--security-opt', 'systempaths=unconfined', '--device', '/dev/net/tun'],
    ...['-v', 'weft-state:/var/lib/weft', '-v', `${e.socket}:/var/run/docker.sock`],
    ...(opts.plugin === true ? ['-v', `${PLUGINS_DIR}:${PLUGINS_DIR}`] : []),
    image,
    ...args,
  ];
}

/** weftIn runs the CLI inside an engine's router container (`docker exec weft weft ...`), as a user does. */
export function weftIn(e: Engine, args: string[], allowFail = false): Promise<DockerResult> {
  return e.docker(['exec', 'weft', 'weft', ...args], allowFail);
}

/** waitRouter waits until the router container on `e` is ready with at least `peers` established peers. */
export async function waitRouter(e: Engine, peers = 0): Promise<void> {
  await waitUntil(
    async () => {
      const r = await weftIn(e, ['status', '--json'], true);
      if (r.code !== 0) return false;
      const s = JSON.parse(r.stdout) as { ready: boolean; peers: { state: string }[] };
      return s.ready && s.peers.filter((p) => p.state === 'established').length >= peers;
    },
    { timeoutMs: 30_000, what: `the router container on ${e.host.name} to be ready with ${peers} peer(s)` },
  );
}
