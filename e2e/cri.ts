/**
 * The containerd + CRI harness of the CRI e2e files (cri.e2e.ts, cri-crash.e2e.ts): a pause image
 * made with no registry, a CRI v1 gRPC client, and containerd 1.6 (Debian) with its CRI plugin run
 * in a lab host namespace with its own root, state dir and socket, stopped by pid.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { unmountUnder } from '../lab/mounts.js';
import { type Host, requireRoot, waitUntil } from '../lab/netns.js';
import { PLUGINS } from './cni-setup.js';
import { CLI } from './weft.js';

export const ROOT = path.resolve(path.dirname(CLI), '../..');
export { PLUGINS };

const BUSYBOX = '/bin/busybox';
export const PAUSE = 'docker.io/library/weft-pause:1';

/** criProto returns the cached CRI v1 proto (cni/fetch-cri-proto.sh extracts it from Debian's containerd source). */
function criProto(): string | undefined {
  try {
    return execFileSync('sh', [path.join(ROOT, 'cni/fetch-cri-proto.sh')], {
      encoding: 'utf8',
      timeout: 120_000,
    }).trim();
  } catch {
    return undefined;
  }
}

function which(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

let proto: string | undefined;
/** criSkipReason says why containerd's CRI cannot run here, or undefined when it can. */
export function criSkipReason(): string | undefined {
  const root = requireRoot();
  if (root !== undefined) return root;
  if (!which('containerd') || !which('ctr') || !which('runc'))
    return 'containerd/ctr/runc not installed (apt-get install containerd)';
  if (!existsSync(BUSYBOX)) return `no static ${BUSYBOX} for the pause image (apt-get install busybox-static)`;
  if (!existsSync(path.join(PLUGINS, 'loopback'))) return `no reference CNI plugins in ${PLUGINS}`;
  if (!existsSync(path.join(ROOT, 'node_modules/@grpc/grpc-js'))) return 'no @grpc/grpc-js (npm ci)';
  proto = criProto();
  if (proto === undefined) return 'cannot get the CRI proto from Debian containerd source (cni/fetch-cri-proto.sh)';
  return undefined;
}

/**
 * buildPauseImage writes an OCI image archive whose only file is a static busybox and whose command
 * sleeps forever: the sandbox ("pause") image, made with no registry.
 */
export function buildPauseImage(dir: string): string {
  const stage = path.join(dir, 'rootfs');
  mkdirSync(path.join(stage, 'bin'), { recursive: true });
  copyFileSync(BUSYBOX, path.join(stage, 'bin/busybox'));
  chmodSync(path.join(stage, 'bin/busybox'), 0o755);
  const layerTar = path.join(dir, 'layer.tar');
  execFileSync('tar', ['-C', stage, '--owner=0', '--group=0', '-cf', layerTar, '.']);
  return buildOciImage(dir, PAUSE, [layerTar], { Cmd: ['/bin/busybox', 'sleep', '2147483647'] });
}

/**
 * buildOciImage writes an OCI image archive (for `ctr images import`) named `name`, whose layers
 * are the given uncompressed tar files, bottom first, and whose config is `config` (Env, Cmd...).
 */
export function buildOciImage(dir: string, name: string, layers: readonly string[], config: object): string {
  const oci = path.join(dir, 'oci');
  const blobs = path.join(oci, 'blobs/sha256');
  mkdirSync(blobs, { recursive: true });
  const blob = (data: Buffer): { digest: string; size: number } => {
    const hex = createHash('sha256').update(data).digest('hex');
    writeFileSync(path.join(blobs, hex), data);
    return { digest: `sha256:${hex}`, size: data.length };
  };
  const layerBlobs = layers.map((l) => blob(readFileSync(l)));
  const cfg = blob(
    Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        config,
        rootfs: { type: 'layers', diff_ids: layerBlobs.map((l) => l.digest) },
      }),
    ),
  );
  const manifest = blob(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...cfg },
        layers: layerBlobs.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...l })),
      }),
    ),
  );
  writeFileSync(path.join(oci, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    path.join(oci, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...manifest,
          annotations: {
            'io.containerd.image.name': name,
            'org.opencontainers.image.ref.name': name.split(':').at(-1),
          },
        },
      ],
    }),
  );
  const out = path.join(dir, 'image.tar');
  execFileSync('tar', ['-C', oci, '-cf', out, '.']);
  rmSync(oci, { recursive: true, force: true });
  return out;
}

/** CriClient is the few RuntimeService calls the tests make (CRI v1 over the containerd socket). */
export interface CriClient {
  call<T>(method: string, req: unknown): Promise<T>;
  close(): void;
}

async function criClient(socket: string, protoFile: string): Promise<CriClient> {
  const grpc = await import('@grpc/grpc-js');
  const loader = await import('@grpc/proto-loader');
  const def = await loader.load(protoFile, { keepCase: false, longs: Number, enums: String, defaults: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    runtime: { v1: { RuntimeService: new (addr: string, creds: unknown) => Record<string, unknown> } };
  };
  const svc = new pkg.runtime.v1.RuntimeService(`unix://${socket}`, grpc.credentials.createInsecure()) as Record<
    string,
    unknown
  > & { close(): void };
  return {
    call: <T>(method: string, req: unknown) =>
      new Promise<T>((resolve, reject) => {
        const fn = svc[method] as (r: unknown, o: unknown, cb: (e: Error | null, v: T) => void) => void;
        fn.call(svc, req, { deadline: Date.now() + 60_000 }, (e, v) => (e ? reject(e) : resolve(v)));
      }),
    close: () => svc.close(),
  };
}

/** PodSandbox is the part of a ListPodSandbox item the tests read. */
export interface PodSandbox {
  id: string;
  state: 'SANDBOX_READY' | 'SANDBOX_NOTREADY';
  metadata: { name: string };
}

/** Containerd is one containerd with the CRI plugin, run in a host namespace with its own dirs and socket. */
export interface Containerd {
  host: Host;
  dir: string;
  socket: string;
  child: ChildProcess;
  cri: CriClient;
  /** log is the tail of its stderr. */
  log(): string;
}

/** ContainerdOptions: where its config puts the CNI plugins and configurations, and the pause image to import. */
export interface ContainerdOptions {
  dir: string;
  binDir: string;
  confDir: string;
  /** pauseTar is imported into the k8s.io namespace once the socket is up (not needed on a restart). */
  pauseTar?: string;
  /** images are more OCI archives to import (e.g. the router's). */
  images?: string[];
  /**
   * mounts runs containerd (and so its shims, containers and CNI plugins) in a mount namespace of
   * its own (propagation slave: the host's mounts reach it, its own stay inside) where each `tmpfs`
   * path gets an empty tmpfs and each [source, target] of `binds` is bind-mounted (targets made).
   * Each `shared` mount point is made shared there, with the mounts below it (--make-rshared), so
   * what containerd mounts (pod network namespaces) reaches containers that mount a path with
   * HostToContainer propagation; nothing propagates back to the machine's own mounts (slave).
   */
  mounts?: { tmpfs?: string[]; binds: [string, string][]; shared?: string[] };
  /** runtimeOnly waits for RuntimeReady alone (NetworkReady needs a CNI config in the conf dir). */
  runtimeOnly?: boolean;
}

/**
 * startContainerd starts containerd in `host`'s namespace with the config in `opts.dir` (written on
 * the first start; a restart with the same dir reuses its root and state) and waits until CRI says
 * runtime and network are ready.
 */
export async function startContainerd(host: Host, opts: ContainerdOptions): Promise<Containerd> {
  const { dir } = opts;
  mkdirSync(dir, { recursive: true });
  const socket = path.join(dir, 'containerd.sock');
  const config = path.join(dir, 'config.toml');
  writeFileSync(
    config,
    [
      'version = 2',
      `root = "${dir}/root"`,
      `state = "${dir}/state"`,
      'disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]',
      '[grpc]',
      `  address = "${socket}"`,
      '[plugins."io.containerd.grpc.v1.cri"]',
      `  sandbox_image = "${PAUSE}"`,
      '  restrict_oom_score_adj = true',
      '  [plugins."io.containerd.grpc.v1.cri".cni]',
      `    bin_dir = "${opts.binDir}"`,
      `    conf_dir = "${opts.confDir}"`,
    ].join('\n'),
  );
  // nsenter, not `ip netns exec`: the latter remounts /sys and hides the cgroups runc needs.
  // nsenter (no --fork) execs containerd: child.pid is containerd's pid.
  let wrap: string[] = [];
  if (opts.mounts !== undefined) {
    const q = (x: string) => `'${x.replace(/'/g, "'\\''")}'`;
    const script = [
      'set -e',
      ...(opts.mounts.tmpfs ?? []).map((t) => `mkdir -p ${q(t)} && mount -t tmpfs tmpfs ${q(t)}`),
      ...opts.mounts.binds.map(([src, dst]) => `mkdir -p ${q(dst)} && mount --bind ${q(src)} ${q(dst)}`),
      ...(opts.mounts.shared ?? []).map((m) => `mount --make-rshared ${q(m)}`),
      'exec "$@"',
    ].join('\n');
    wrap = ['unshare', '--mount', '--propagation', 'slave', 'sh', '-c', script, 'sh'];
  }
  const child = spawn('nsenter', [`--net=/run/netns/${host.name}`, ...wrap, 'containerd', '--config', config], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr?.on('data', (b: Buffer) => {
    log = (log + b.toString()).slice(-20_000);
  });
  const d = { host, dir, socket, child, log: () => log } as Containerd;
  try {
    await ready(d, [...(opts.pauseTar === undefined ? [] : [opts.pauseTar]), ...(opts.images ?? [])]);
    await criReady(d, opts.runtimeOnly === true ? ['RuntimeReady'] : ['RuntimeReady', 'NetworkReady']);
  } catch (err) {
    await stopContainerd(d, 'SIGKILL');
    throw err;
  }
  return d;
}

async function ready(d: Containerd, images: string[]): Promise<void> {
  const { child, socket } = d;
  await waitUntil(() => existsSync(socket) || child.exitCode !== null, {
    timeoutMs: 30_000,
    what: 'containerd socket',
  });
  if (child.exitCode !== null) throw new Error(`containerd exited: ${d.log().slice(-2000)}`);
  for (const tar of images) {
    execFileSync('ctr', ['-a', socket, '-n', 'k8s.io', 'images', 'import', tar], { stdio: 'pipe', timeout: 120_000 });
  }
  d.cri = await criClient(socket, proto as string);
}

/** criReady waits until CRI Status reports each of the `conditions` true. */
export async function criReady(d: Containerd, conditions: readonly string[]): Promise<void> {
  await waitUntil(
    async () => {
      const st = await d.cri
        .call<{ status: { conditions: { type: string; status: boolean }[] } }>('Status', {})
        .catch(() => undefined);
      return conditions.every((c) => st?.status.conditions.find((x) => x.type === c)?.status === true);
    },
    { timeoutMs: 30_000, what: `containerd on ${d.host.name} to report ${conditions.join(' and ')}` },
  );
}

/** listSandboxes is CRI ListPodSandbox: every sandbox the runtime knows, ready or not. */
export async function listSandboxes(d: Containerd): Promise<PodSandbox[]> {
  return (await d.cri.call<{ items: PodSandbox[] }>('ListPodSandbox', {})).items;
}

/** stopContainerd ends containerd with SIGTERM (SIGKILL after 10 s), or with `signal` at once. */
export async function stopContainerd(d: Containerd, signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> {
  d.cri?.close();
  if (d.child.exitCode !== null || d.child.signalCode !== null || d.child.pid === undefined) return;
  process.kill(d.child.pid, signal);
  await waitUntil(() => d.child.exitCode !== null || d.child.signalCode !== null, {
    timeoutMs: 10_000,
    what: 'containerd to exit',
  }).catch(() => {
    if (d.child.pid !== undefined) process.kill(d.child.pid, 'SIGKILL');
  });
}

/**
 * cleanupContainerd removes what a stopped containerd leaves: the shims (by the pid files under its
 * state dir) and the mounts under its dir (snapshots, sandbox shm), lazily, deepest first.
 */
export function cleanupContainerd(dir: string): void {
  for (const f of findFiles(path.join(dir, 'state'), 'shim.pid')) {
    const pid = Number(readFileSync(f, 'utf8'));
    if (pid > 0) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
  unmountUnder(dir);
}

/** findFiles lists files named `name` below `dir`. */
function findFiles(dir: string, name: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...findFiles(p, name));
    else if (e.name === name) out.push(p);
  }
  return out;
}
