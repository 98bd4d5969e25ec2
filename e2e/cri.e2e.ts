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
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SocketRouterApi } from '../cni/router-api.js';
import { type Host, Lab, requireRoot, waitUntil } from '../lab/netns.js';
import { CLI, launch, removeStateDirs, waitPeers, weft } from './weft.js';

const ROOT = path.resolve(path.dirname(CLI), '../..');
const PLUGINS = '/usr/lib/cni';
const BUSYBOX = '/bin/busybox';

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
function skipReason(): string | undefined {
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
const reason = skipReason();
if (reason !== undefined) console.warn(`cri e2e skipped: ${reason}`);

const PAUSE = 'docker.io/library/weft-pause:1';

/**
 * buildPauseImage writes an OCI image archive whose only file is a static busybox and whose command
 * sleeps forever: the sandbox ("pause") image, made with no registry.
 */
function buildPauseImage(dir: string): string {
  const stage = path.join(dir, 'rootfs');
  mkdirSync(path.join(stage, 'bin'), { recursive: true });
  copyFileSync(BUSYBOX, path.join(stage, 'bin/busybox'));
  chmodSync(path.join(stage, 'bin/busybox'), 0o755);
  const oci = path.join(dir, 'oci');
  const blobs = path.join(oci, 'blobs/sha256');
  mkdirSync(blobs, { recursive: true });
  const layerTar = path.join(dir, 'layer.tar');
  execFileSync('tar', ['-C', stage, '--owner=0', '--group=0', '-cf', layerTar, '.']);
  const blob = (data: Buffer): { digest: string; size: number } => {
    const hex = createHash('sha256').update(data).digest('hex');
    writeFileSync(path.join(blobs, hex), data);
    return { digest: `sha256:${hex}`, size: data.length };
  };
  const layer = readFileSync(layerTar);
  const layerBlob = blob(layer);
  const config = blob(
    Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        config: { Cmd: ['/bin/busybox', 'sleep', '2147483647'] },
        rootfs: { type: 'layers', diff_ids: [layerBlob.digest] },
      }),
    ),
  );
  const manifest = blob(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...layerBlob }],
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
          annotations: { 'io.containerd.image.name': PAUSE, 'org.opencontainers.image.ref.name': '1' },
        },
      ],
    }),
  );
  const out = path.join(dir, 'pause.tar');
  execFileSync('tar', ['-C', oci, '-cf', out, '.']);
  return out;
}

/** CriClient is the few RuntimeService calls the test makes (CRI v1 over the containerd socket). */
interface CriClient {
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

/** Containerd is one containerd with the CRI plugin, run in a host namespace with its own dirs and socket. */
interface Containerd {
  host: Host;
  dir: string;
  socket: string;
  child: ChildProcess;
  cri: CriClient;
}

/**
 * Pods made by a real container runtime through CRI, the interface the kubelet drives: on two hosts,
 * each running containerd 1.6 (Debian) with its CRI plugin and a Weft router, RunPodSandbox calls the
 * `weft` CNI plugin chained with portmap; the pods get Weft addresses, reach each other across hosts,
 * and StopPodSandbox/RemovePodSandbox (CNI DEL twice, the second with no netns) free them.
 */
describe.skipIf(reason)('CRI (containerd) runs pods on the weft network', () => {
  const net = `weft-cri-${process.pid}`;
  const work = path.join(tmpdir(), `weft-cri-e2e-${process.pid}`);
  const binDir = path.join(work, 'bin');
  const confDir = path.join(work, 'net.d');
  let topo: Lab;
  let hosts: Host[] = [];
  const daemons: Containerd[] = [];
  const pods: { d: Containerd; id: string; ip: string }[] = [];

  async function startContainerd(host: Host, pauseTar: string): Promise<Containerd> {
    const dir = path.join(work, host.name);
    mkdirSync(dir, { recursive: true });
    const socket = path.join(dir, 'containerd.sock');
    writeFileSync(
      path.join(dir, 'config.toml'),
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
        `    bin_dir = "${binDir}"`,
        `    conf_dir = "${confDir}"`,
      ].join('\n'),
    );
    // nsenter, not `ip netns exec`: the latter remounts /sys and hides the cgroups runc needs.
    const child = spawn(
      'nsenter',
      [`--net=/run/netns/${host.name}`, 'containerd', '--config', path.join(dir, 'config.toml')],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let log = '';
    child.stderr?.on('data', (b: Buffer) => {
      log = (log + b.toString()).slice(-20_000);
    });
    const d = { host, dir, socket, child } as Containerd;
    daemons.push(d);
    await waitUntil(() => existsSync(socket) || child.exitCode !== null, {
      timeoutMs: 30_000,
      what: 'containerd socket',
    });
    if (child.exitCode !== null) throw new Error(`containerd exited: ${log.slice(-2000)}`);
    execFileSync('ctr', ['-a', socket, '-n', 'k8s.io', 'images', 'import', pauseTar], { stdio: 'pipe' });
    d.cri = await criClient(socket, proto as string);
    await waitUntil(
      async () => {
        const st = await d.cri.call<{ status: { conditions: { type: string; status: boolean }[] } }>('Status', {});
        return st.status.conditions.every((c) => c.status);
      },
      { timeoutMs: 30_000, what: `containerd on ${host.name} to be ready (runtime and network)` },
    );
    return d;
  }

  beforeAll(async () => {
    mkdirSync(confDir, { recursive: true });
    execFileSync('sh', [
      path.join(ROOT, 'cni/install.sh'),
      binDir,
      process.execPath,
      path.join(ROOT, 'dist/cni/main.js'),
    ]);
    // containerd 1.6 takes one bin_dir: the reference plugins it needs go beside ours.
    for (const p of ['loopback', 'portmap']) symlinkSync(path.join(PLUGINS, p), path.join(binDir, p));
    writeFileSync(
      path.join(confDir, '10-weft.conflist'),
      JSON.stringify({
        cniVersion: '1.0.0',
        name: net,
        plugins: [{ type: 'weft' }, { type: 'portmap', capabilities: { portMappings: true } }],
      }),
    );
    const pauseTar = buildPauseImage(path.join(work, 'image'));
    topo = await Lab.create({ hosts: 2 });
    hosts = topo.hosts as Host[];
    const [h1, h2] = hosts as [Host, Host];
    await launch(h1, [], ['--container-grace', '1000']);
    await launch(h2, [h1.underlayIp], ['--container-grace', '1000']);
    await waitPeers(h1, 1);
    await waitPeers(h2, 1);
    for (const h of hosts) await startContainerd(h, pauseTar);
  });

  afterAll(async () => {
    for (const d of daemons) {
      for (const p of pods.filter((x) => x.d === d)) {
        await d.cri?.call('StopPodSandbox', { podSandboxId: p.id }).catch(() => undefined);
        await d.cri?.call('RemovePodSandbox', { podSandboxId: p.id }).catch(() => undefined);
      }
      d.cri?.close();
      if (d.child.exitCode === null && d.child.pid !== undefined) {
        process.kill(d.child.pid, 'SIGTERM');
        await waitUntil(() => d.child.exitCode !== null, { timeoutMs: 10_000, what: 'containerd to exit' }).catch(
          () => {
            if (d.child.pid !== undefined) process.kill(d.child.pid, 'SIGKILL');
          },
        );
      }
      // Shims it left: stop them by their pid files under its state dir.
      for (const f of findFiles(path.join(d.dir, 'state'), 'shim.pid')) {
        const pid = Number(readFileSync(f, 'utf8'));
        if (pid > 0) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone
          }
        }
      }
      // Mounts it left under its root (snapshots, sandbox shm): lazily unmounted, deepest first.
      const mounts = readFileSync('/proc/mounts', 'utf8')
        .split('\n')
        .map((l) => l.split(' ')[1] ?? '')
        .filter((m) => m.startsWith(`${d.dir}/`))
        .sort()
        .reverse();
      for (const m of mounts) execFileSync('umount', ['-l', m], { stdio: 'ignore' });
    }
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
    rmSync(work, { recursive: true, force: true });
    for (const dir of ['/var/lib/cni/results']) {
      for (const f of existsSync(dir) ? readdirSync(dir) : []) {
        if (f.startsWith(`${net}-`)) rmSync(path.join(dir, f), { force: true });
      }
    }
  });

  it('RunPodSandbox on both hosts gives the pods Weft addresses through the weft CNI plugin', async () => {
    for (const [i, d] of daemons.entries()) {
      const r = await d.cri.call<{ podSandboxId: string }>('RunPodSandbox', {
        config: {
          metadata: { name: `pod${i}`, namespace: 'default', uid: `uid-${process.pid}-${i}`, attempt: 0 },
          hostname: `pod${i}`,
          logDirectory: path.join(d.dir, 'logs'),
          linux: {},
        },
      });
      const st = await d.cri.call<{ status: { state: string; network: { ip: string } } }>('PodSandboxStatus', {
        podSandboxId: r.podSandboxId,
      });
      expect(st.status.state).toBe('SANDBOX_READY');
      expect(st.status.network.ip).toMatch(/^10\.(3[2-9]|4[0-7])\.\d+\.\d+$/);
      pods.push({ d, id: r.podSandboxId, ip: st.status.network.ip });
    }
    expect(new Set(pods.map((p) => p.ip)).size).toBe(2);
  });

  it('the pods reach each other across hosts, and the router holds each address for the sandbox', async () => {
    const [a, b] = pods as [(typeof pods)[0], (typeof pods)[0]];
    const recs = await new SocketRouterApi(`/run/weft/netns/${a.d.host.name}/weft.sock`).list();
    const rec = recs.find((r) => r.target === `${net}:${a.id}:eth0`);
    expect(rec?.cidrs).toEqual([`${a.ip}/12`]);
    expect(rec?.netns).toMatch(/^\/var\/run\/netns\/cni-/);
    await waitUntil(
      async () => {
        const r = await a.d.host.exec('nsenter', [`--net=${rec?.netns}`, 'ping', '-c', '1', '-W', '1', b.ip], {
          allowFail: true,
        });
        return r.code === 0;
      },
      { timeoutMs: 15_000, what: 'pod on h1 to ping pod on h2' },
    );
  });

  it('StopPodSandbox and RemovePodSandbox free the addresses', async () => {
    for (const p of pods.splice(0)) {
      await p.d.cri.call('StopPodSandbox', { podSandboxId: p.id });
      await p.d.cri.call('RemovePodSandbox', { podSandboxId: p.id });
      const ipam = JSON.parse((await weft(p.d.host, ['status', 'ipam', '--json'])).stdout) as {
        allocations: { addr: string }[];
      };
      expect(ipam.allocations.map((x) => x.addr)).not.toContain(p.ip);
    }
  });
});

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
