/**
 * The podman harness of the podman e2e files: podman 4.3 with this test's own storage (--root,
 * --runroot, --tmpdir under one directory) and containers.conf (CONTAINERS_CONF), run in a host's
 * network namespace with nsenter (where conmon, and the CNI plugins, then live), so nothing of
 * the machine's own podman state is used (shared/reference/runtime-recipes.md: cgroupfs, file
 * events, 1024 ulimits). The image is the local base rootfs of scripts/build-base-image.sh.
 */
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { removeMounted } from '../lab/mounts.js';
import { type Host, requireRoot, waitUntil } from '../lab/netns.js';

const run = promisify(execFile);
const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
export const PODMAN = '/usr/bin/podman';
/** BASE_BUILD_MS bounds building the local base rootfs on a cold cache (debootstrap). */
export const BASE_BUILD_MS = 600_000;
/** IMAGE_BUILD_MS bounds building the router image on a cold cache (base rootfs + image). */
export const IMAGE_BUILD_MS = 600_000;
const IMAGE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** PODMAN_CACHE is the image blob cache podman keeps outside --root (removed after, when this test made it). */
const PODMAN_CACHE = '/var/lib/containers/cache';

/** podmanSkipReason says why podman cannot run containers here (undefined: it can). */
export function podmanSkipReason(): string | undefined {
  const root = requireRoot();
  if (root !== undefined) return root;
  if (!existsSync(PODMAN)) return `${PODMAN} is missing (apt-get install podman)`;
  if (!existsSync('/usr/sbin/debootstrap')) return '/usr/sbin/debootstrap is missing (apt-get install debootstrap)';
  if (!existsSync('/sys/fs/cgroup/devices') && !existsSync('/sys/fs/cgroup/cgroup.controllers')) {
    return 'no cgroup filesystem at /sys/fs/cgroup: podman cannot run containers';
  }
  return undefined;
}

/** PodmanResult is one podman command's output and exit code. */
export interface PodmanResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** Podman runs podman with one test's storage and configuration under `dir`. */
export class Podman {
  readonly #cacheExisted = existsSync(PODMAN_CACHE);

  constructor(readonly dir: string) {}

  /**
   * writeConf writes the test's containers.conf: cgroupfs, file events, ulimits runc can set here
   * (no CAP_SYS_RESOURCE to raise them past the bounding set), then `extra` lines (e.g. a [network]
   * section).
   */
  writeConf(extra: readonly string[] = []): void {
    mkdirSync(this.dir, { recursive: true });
    writeFileSync(
      path.join(this.dir, 'containers.conf'),
      [
        '[containers]',
        'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]',
        '[engine]',
        'cgroup_manager = "cgroupfs"',
        'events_logger = "file"',
        `events_logfile_path = "${path.join(this.dir, 'events.log')}"`,
        ...extra,
        '',
      ].join('\n'),
    );
  }

  /** storageArgs are the flags that give podman this test's storage. */
  get #storageArgs(): string[] {
    const dir = this.dir;
    return ['--root', path.join(dir, 'root'), '--runroot', path.join(dir, 'run'), '--tmpdir', path.join(dir, 'tmp')];
  }

  /**
   * pingName waits until container `from` on `h` pings `name` once, then requires 3 of 3 pings
   * (throws otherwise).
   */
  async pingName(h: Host, from: string, name: string): Promise<void> {
    await waitUntil(
      async () => (await this.run(h, ['exec', from, 'ping', '-c', '1', '-W', '1', name], true)).code === 0,
      { timeoutMs: 20_000, what: `${from} on ${h.name} to ping ${name}` },
    );
    const r = await this.run(h, ['exec', from, 'ping', '-c', '3', '-i', '0.2', '-W', '1', name]);
    if (!/3 received/.test(r.stdout)) throw new Error(`${from} on ${h.name} pinging ${name}: ${r.stdout}`);
  }

  /** run runs podman in `h`'s network namespace; throws with podman's stderr unless `allowFail`. */
  async run(h: Host, args: readonly string[], allowFail = false): Promise<PodmanResult> {
    const dir = this.dir;
    try {
      const r = await run('nsenter', [`--net=/run/netns/${h.name}`, PODMAN, ...this.#storageArgs, ...args], {
        env: { ...process.env, CONTAINERS_CONF: path.join(dir, 'containers.conf') },
        timeout: 120_000,
      });
      return { stdout: r.stdout, stderr: r.stderr, code: 0 };
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; code?: number };
      if (allowFail) {
        return { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: typeof e.code === 'number' ? e.code : 1 };
      }
      throw new Error(`[${h.name}] podman ${args.join(' ')}: ${(e.stderr ?? String(err)).trim()}`);
    }
  }

  /**
   * wrapper writes a script that runs podman as `run` does (in `h`'s network namespace, with this
   * storage and containers.conf, and TMPDIR in the test's directory for buildah's scratch files),
   * for a program that takes its engine as a command (scripts/build-image.sh's DOCKER); returns its path.
   */
  wrapper(h: Host): string {
    const file = path.join(this.dir, `podman-${h.name}.sh`);
    const tmp = path.join(this.dir, 'tmp');
    mkdirSync(tmp, { recursive: true });
    const q = (s: string): string => `'${s.replaceAll("'", "'\\''")}'`;
    writeFileSync(
      file,
      [
        '#!/bin/sh',
        `export CONTAINERS_CONF=${q(path.join(this.dir, 'containers.conf'))} TMPDIR=${q(tmp)}`,
        `exec nsenter --net=${q(`/run/netns/${h.name}`)} ${[PODMAN, ...this.#storageArgs].map(q).join(' ')} "$@"`,
        '',
      ].join('\n'),
    );
    chmodSync(file, 0o755);
    return file;
  }

  /**
   * routerImage builds the router image from the Dockerfile with podman (buildah) as `tag`:
   * scripts/build-image.sh with this storage as its DOCKER, which imports the local base images,
   * builds with no network, and caches what podman built by its inputs (a podman-router-KEY.tar in
   * WEFT_BASE_CACHE, apart from the Docker build's), so an unchanged tree costs one `podman load`.
   * Returns the script's last line of log (built in N s, or loaded from the cache).
   */
  async routerImage(h: Host, tag: string): Promise<string> {
    const built = await run('sh', [path.join(ROOT, 'scripts/build-image.sh'), tag], {
      cwd: ROOT,
      env: { ...process.env, DOCKER: this.wrapper(h) },
      timeout: IMAGE_BUILD_MS,
    });
    return built.stderr.trim().split('\n').at(-1) ?? '';
  }

  /**
   * importBase makes the local base rootfs (built on a cold cache, up to BASE_BUILD_MS) podman's
   * image `image`. One storage serves every host: a container's network is its own namespace,
   * whichever host ran podman.
   */
  async importBase(h: Host, image: string): Promise<void> {
    const base = path.join(ROOT, 'scripts/build-base-image.sh');
    const key = (await run('sh', [base, '--key-only'], { cwd: ROOT })).stdout.trim();
    const tar = path.join(process.env.WEFT_BASE_CACHE ?? '/var/cache/weft-ci', `base-${key}-run.tar`);
    if (!existsSync(tar)) await run('sh', [base, '--no-import'], { cwd: ROOT, timeout: BASE_BUILD_MS });
    await this.run(h, ['import', '--change', `ENV PATH=${IMAGE_PATH}`, tar, image]);
  }

  /**
   * remove takes away every container and image of this storage (through `h`), the mounts podman
   * left and the directory, and podman's blob cache if this test made it.
   */
  async remove(h: Host | undefined): Promise<void> {
    if (h !== undefined && existsSync(path.join(this.dir, 'root'))) {
      await this.run(h, ['rm', '-a', '-f', '-t', '0'], true);
      await this.run(h, ['rmi', '-a', '-f'], true);
    }
    removeMounted(this.dir);
    if (!this.#cacheExisted) {
      rmSync(PODMAN_CACHE, { recursive: true, force: true });
      try {
        rmdirSync(path.dirname(PODMAN_CACHE));
      } catch {
        // not empty: someone else's
      }
    }
  }
}
