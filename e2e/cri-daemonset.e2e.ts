import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadAllYaml } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SocketRouterApi } from '../cni/router-api.js';
import { type Host, Lab, waitUntil } from '../lab/netns.js';
import {
  buildOciImage,
  buildPauseImage,
  type Containerd,
  cleanupContainerd,
  criReady,
  criSkipReason,
  listSandboxes,
  PLUGINS,
  ROOT,
  startContainerd,
  stopContainerd,
} from './cri.js';
import { removeStateDirs } from './weft.js';

function skipReason(): string | undefined {
  const cri = criSkipReason();
  if (cri !== undefined) return cri;
  if (!existsSync(path.join(ROOT, 'router/tun/native/build/Release/weft_native.node'))) {
    return 'native addon not built (npm run build:native)';
  }
  return undefined;
}
const reason = skipReason();
if (reason !== undefined) console.warn(`cri-daemonset e2e skipped: ${reason}`);

/** BASE_BUILD_MS bounds building the local base rootfs on a cold cache (debootstrap). */
const BASE_BUILD_MS = 600_000;

// biome-ignore lint/suspicious/noExplicitAny: manifests are free-form YAML, read field by field.
type Doc = any;

/**
 * The /proc paths the kubelet asks the runtime to mask and to mount read-only in every container
 * whose procMount is not Unmasked (Kubernetes pkg/securitycontext/util.go); containerd clears them
 * for a privileged container.
 */
const KUBELET_MASKED_PATHS = [
  '/proc/asound',
  '/proc/acpi',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/sys/firmware',
  '/sys/devices/virtual/powercap',
];
const KUBELET_READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

/** The CRI shapes of what the kubelet makes from a pod spec (the parts used here). */
interface CriMount {
  containerPath: string;
  hostPath: string;
  readonly: boolean;
  propagation: 'PROPAGATION_PRIVATE' | 'PROPAGATION_HOST_TO_CONTAINER' | 'PROPAGATION_BIDIRECTIONAL';
}

/**
 * k8s/weft.yaml's DaemonSet pod run by a real runtime as the kubelet runs it: containerd 1.6's CRI
 * in a lab host namespace (the "node") gets a host-network sandbox, the `install-cni` init
 * container and then the `weft` router container, each made from the manifest's own command, args,
 * env (fieldRef, configMapKeyRef), volume mounts (hostPath, ConfigMap, Secret, mount propagation)
 * and securityContext (with the kubelet's masked and read-only /proc paths), with an image built here from this tree (the base rootfs of
 * scripts/build-base-image.sh + /opt/weft as the Dockerfile lays it out). The node paths the
 * manifest names (/opt/cni/bin, /etc/cni/net.d, /opt/weft-cni, /run/weft, /var/lib/weft) are
 * directories of this test bind-mounted there in containerd's own mount namespace, so the machine's
 * are untouched and the shim the init container writes runs as written. Then a pod sandbox on the
 * CNI network: containerd runs the installed shim, which finds the router in its container through
 * the conflist's socket; the router enters the pod's netns (mounted after it started: the
 * HostToContainer mount) and writes the host veth's sysctls (privileged). The same router made
 * unprivileged fails every ADD on the read-only /proc/sys: why the manifest says privileged.
 * kube-peers needs an API server, which cannot run here: it is not started.
 */
describe.skipIf(reason)('the DaemonSet of k8s/weft.yaml run through CRI serves pods', () => {
  const work = path.join(tmpdir(), `weft-cri-ds-e2e-${process.pid}`);
  const image = `docker.io/library/weft-ds:${process.pid}`;
  const node = (p: string) => path.join(work, 'node', p);
  /** The node directories the manifest uses, as seen by containerd (and all it runs). */
  const NODE_DIRS: [string, string][] = [
    ['opt/cni/bin', '/opt/cni/bin'],
    ['opt/weft-cni', '/opt/weft-cni'],
    ['etc/cni/net.d', '/etc/cni/net.d'],
    ['run/weft', '/run/weft'],
    ['var/lib/weft', '/var/lib/weft'],
  ];
  let topo: Lab;
  let h1: Host;
  let d: Containerd;
  let ds: Doc;
  let cm: Doc;
  let sandboxId = '';
  const sandboxConfig = () => ({
    metadata: { name: 'weft-node1', namespace: 'kube-system', uid: `uid-ds-${process.pid}`, attempt: 0 },
    // No hostname: a host-network pod shares the node's UTS namespace (the kubelet sets none).
    logDirectory: path.join(work, 'logs'),
    linux: { securityContext: { privileged: true, namespaceOptions: { network: 'NODE', pid: 'CONTAINER' } } },
  });
  const containers: string[] = [];
  const pods: string[] = [];
  let api: SocketRouterApi;
  const netnsBefore = new Set<string>();
  let routerId = '';

  /** volumeDir gives a pod volume's directory on the node: hostPath as is, ConfigMap/Secret written out as the kubelet does. */
  function volumeDir(vol: Doc): string {
    if (vol.hostPath !== undefined) return vol.hostPath.path;
    const dir = path.join(work, 'volumes', vol.name);
    mkdirSync(dir, { recursive: true });
    if (vol.configMap !== undefined) {
      for (const item of vol.configMap.items) writeFileSync(path.join(dir, item.path), cm.data[item.key]);
    } else if (vol.secret !== undefined) {
      writeFileSync(path.join(dir, 'password'), 'weft-ds-e2e-password\n');
    } else {
      throw new Error(`volume ${vol.name}: a kind this test does not make`);
    }
    return dir;
  }

  /** criContainer is the CRI ContainerConfig the kubelet makes from a pod spec container. */
  function criContainer(c: Doc, extraFlags: string, attempt: number): unknown {
    const pod = ds.spec.template.spec;
    const envs = (c.env ?? []).map((e: Doc) => {
      if (e.value !== undefined) return { key: e.name, value: e.value };
      if (e.valueFrom?.fieldRef?.fieldPath === 'spec.nodeName') return { key: e.name, value: 'node1' };
      const ref = e.valueFrom?.configMapKeyRef;
      if (ref !== undefined) {
        expect(ref.name).toBe(cm.metadata.name);
        return { key: e.name, value: ref.key === 'extra-flags' ? extraFlags : cm.data[ref.key] };
      }
      throw new Error(`env ${e.name}: a source this test does not resolve`);
    });
    const mounts: CriMount[] = (c.volumeMounts ?? []).map((m: Doc) => {
      const vol = pod.volumes.find((v: Doc) => v.name === m.name);
      return {
        containerPath: m.mountPath,
        hostPath: volumeDir(vol),
        readonly: m.readOnly === true || vol.configMap !== undefined || vol.secret !== undefined,
        propagation: m.mountPropagation === 'HostToContainer' ? 'PROPAGATION_HOST_TO_CONTAINER' : 'PROPAGATION_PRIVATE',
      };
    });
    const sc = c.securityContext ?? {};
    return {
      metadata: { name: c.name, attempt },
      image: { image },
      command: c.command ?? [],
      args: c.args ?? [],
      envs,
      mounts,
      logPath: `${c.name}-${attempt}.log`,
      linux: {
        securityContext: {
          privileged: sc.privileged === true,
          capabilities: { addCapabilities: sc.capabilities?.add ?? [] },
          maskedPaths: sc.procMount === 'Unmasked' ? [] : KUBELET_MASKED_PATHS,
          readonlyPaths: sc.procMount === 'Unmasked' ? [] : KUBELET_READONLY_PATHS,
          namespaceOptions: { network: 'NODE', pid: 'CONTAINER' },
        },
      },
    };
  }

  async function runContainer(c: Doc, extraFlags = '', attempt = 0): Promise<string> {
    const r = await d.cri.call<{ containerId: string }>('CreateContainer', {
      podSandboxId: sandboxId,
      config: criContainer(c, extraFlags, attempt),
      sandboxConfig: sandboxConfig(),
    });
    containers.push(r.containerId);
    await d.cri.call('StartContainer', { containerId: r.containerId });
    return r.containerId;
  }

  /** startRouter runs the manifest's router container and waits for its readiness probe (as the kubelet's). */
  async function startRouter(c: Doc, attempt: number): Promise<string> {
    // The ConfigMap's extra-flags, as an operator edits them: a device name carrying the run id.
    const id = await runContainer(c, `--device ${h1.ifname('t')}`, attempt);
    const probe = c.readinessProbe.httpGet;
    await waitUntil(
      async () => {
        if ((await containerState(id)).state === 'CONTAINER_EXITED') return true;
        const r = await h1.exec(
          process.execPath,
          [
            '-e',
            `require('http').get({host:'${probe.host}',port:${probe.port},path:'${probe.path}'},(r)=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1))`,
          ],
          { allowFail: true },
        );
        return r.code === 0;
      },
      { timeoutMs: 60_000, what: 'the router’s readiness probe' },
    );
    expect((await containerState(id)).state, log(`weft-${attempt}`)).toBe('CONTAINER_RUNNING');
    return id;
  }

  const containerState = async (id: string) =>
    (await d.cri.call<{ status: { state: string; exitCode: number } }>('ContainerStatus', { containerId: id })).status;
  const log = (name: string) => {
    const f = path.join(work, 'logs', `${name}.log`);
    return existsSync(f) ? readFileSync(f, 'utf8').slice(-3000) : '(no log)';
  };

  beforeAll(async () => {
    const docs = loadAllYaml(readFileSync(path.join(ROOT, 'k8s/weft.yaml'), 'utf8')) as Doc[];
    ds = docs.find((x) => x.kind === 'DaemonSet');
    cm = docs.find((x) => x.kind === 'ConfigMap');
    for (const [rel] of NODE_DIRS) mkdirSync(node(rel), { recursive: true });
    // The node's own reference plugins, as a node has them beside what the init container installs.
    for (const p of ['loopback', 'portmap']) symlinkSync(path.join(PLUGINS, p), path.join(node('opt/cni/bin'), p));
    // The image: the base rootfs of scripts/build-base-image.sh and /opt/weft as the Dockerfile makes it.
    const base = path.join(ROOT, 'scripts/build-base-image.sh');
    const key = execFileSync('sh', [base, '--key-only'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const baseTar = path.join(process.env.WEFT_BASE_CACHE ?? '/var/cache/weft-ci', `base-${key}-run.tar`);
    if (!existsSync(baseTar)) execFileSync('sh', [base, '--no-import'], { cwd: ROOT, timeout: BASE_BUILD_MS });
    const app = path.join(work, 'app');
    mkdirSync(path.join(app, 'opt/weft/router/tun/native/build/Release'), { recursive: true });
    execFileSync('cp', ['-r', path.join(ROOT, 'dist'), path.join(ROOT, 'package.json'), path.join(app, 'opt/weft')]);
    execFileSync('cp', [
      path.join(ROOT, 'router/tun/native/build/Release/weft_native.node'),
      path.join(app, 'opt/weft/router/tun/native/build/Release/'),
    ]);
    const appTar = path.join(work, 'app.tar');
    execFileSync('tar', ['-C', app, '--owner=0', '--group=0', '-cf', appTar, '.']);
    const imageTar = buildOciImage(path.join(work, 'image'), image, [baseTar, appTar], {
      Env: [
        'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        'WEFT_STATE_DIR=/var/lib/weft',
        'WEFT_API_SOCKET=/run/weft/weft.sock',
      ],
      WorkingDir: '/opt/weft',
    });
    rmSync(app, { recursive: true, force: true });
    const pauseTar = buildPauseImage(path.join(work, 'pause'));
    topo = await Lab.create({ hosts: 1 });
    [h1] = topo.hosts as [Host];
    for (const f of readdirSync('/run/netns')) netnsBefore.add(f);
    d = await startContainerd(h1, {
      dir: path.join(work, 'containerd'),
      binDir: '/opt/cni/bin',
      confDir: '/etc/cni/net.d',
      pauseTar,
      images: [imageTar],
      // No CNI config until the DaemonSet's init container installs it: host-network pods run anyway.
      runtimeOnly: true,
      // Shared mounts, as on a systemd node (CRI refuses HostToContainer from a private mount).
      mounts: { tmpfs: ['/opt'], binds: NODE_DIRS.map(([rel, p]) => [node(rel), p]), shared: ['/'] },
    });
    api = new SocketRouterApi(path.join(node('run/weft'), 'weft.sock'));
  }, BASE_BUILD_MS + 180_000);

  afterAll(async () => {
    if (d !== undefined) {
      // Pods first (their DEL needs the router), then the router's containers, then its sandbox;
      // also sandboxes a failed RunPodSandbox left behind.
      const left = d.cri === undefined ? [] : await listSandboxes(d).catch(() => []);
      for (const id of [...pods, ...left.map((x) => x.id).filter((x) => x !== sandboxId && !pods.includes(x))]) {
        await d.cri?.call('StopPodSandbox', { podSandboxId: id }).catch(() => undefined);
        await d.cri?.call('RemovePodSandbox', { podSandboxId: id }).catch(() => undefined);
      }
      for (const id of containers.reverse()) {
        await d.cri?.call('StopContainer', { containerId: id, timeout: 10 }).catch(() => undefined);
        await d.cri?.call('RemoveContainer', { containerId: id }).catch(() => undefined);
      }
      if (sandboxId !== '') {
        await d.cri?.call('StopPodSandbox', { podSandboxId: sandboxId }).catch(() => undefined);
        await d.cri?.call('RemovePodSandbox', { podSandboxId: sandboxId }).catch(() => undefined);
      }
      await stopContainerd(d);
      cleanupContainerd(d.dir);
    }
    // A pod netns our containerd mounted in its own mount namespace leaves an empty file in
    // /run/netns if it was not removed: new cni-* entries that are no mount point out here are ours.
    const mounted = new Set(
      readFileSync('/proc/self/mounts', 'utf8')
        .split('\n')
        .map((l) => l.split(' ')[1]),
    );
    for (const f of readdirSync('/run/netns')) {
      const p = path.join('/run/netns', f);
      if (f.startsWith('cni-') && !netnsBefore.has(f) && !mounted.has(p)) rmSync(p, { force: true });
    }
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
    rmSync(work, { recursive: true, force: true });
  }, 120_000);

  it('the init container installs the plugin shim, Node, the plugin and the conflist on the node', async () => {
    const r = await d.cri.call<{ podSandboxId: string }>('RunPodSandbox', { config: sandboxConfig() });
    sandboxId = r.podSandboxId;
    const pod = ds.spec.template.spec;
    expect(pod.hostNetwork).toBe(true);
    const id = await runContainer(pod.initContainers[0]);
    await waitUntil(async () => (await containerState(id)).state === 'CONTAINER_EXITED', {
      timeoutMs: 60_000,
      what: 'install-cni to finish',
    });
    expect((await containerState(id)).exitCode, log('install-cni-0')).toBe(0);
    expect(readFileSync(node('opt/cni/bin/weft'), 'utf8')).toContain('/opt/weft-cni/dist/cni/main.js');
    expect(existsSync(node('opt/weft-cni/bin/node'))).toBe(true);
    expect(existsSync(node('opt/weft-cni/dist/cni/main.js'))).toBe(true);
    expect(JSON.parse(readFileSync(node('etc/cni/net.d/10-weft.conflist'), 'utf8'))).toEqual(
      JSON.parse(cm.data['10-weft.conflist']),
    );
    // containerd picks the conflist up: its network is ready now.
    await criReady(d, ['NetworkReady']);
  });

  it('the router container starts on the node’s network and its readiness probe answers', async () => {
    const router = ds.spec.template.spec.containers.find((c: Doc) => c.name === 'weft');
    routerId = await startRouter(router, 0);
    expect((await h1.exec('ip', ['-br', 'link', 'show', h1.ifname('t')])).stdout).toContain(h1.ifname('t'));
  });

  it('a pod on the CNI network gets a Weft address from the router in the DaemonSet, and is freed on removal', async () => {
    const r = await d.cri.call<{ podSandboxId: string }>('RunPodSandbox', {
      config: {
        metadata: { name: 'web', namespace: 'default', uid: `uid-web-${process.pid}`, attempt: 0 },
        hostname: 'web',
        logDirectory: path.join(work, 'logs'),
        linux: {},
      },
    });
    pods.push(r.podSandboxId);
    const st = await d.cri.call<{ status: { state: string; network: { ip: string } } }>('PodSandboxStatus', {
      podSandboxId: r.podSandboxId,
    });
    expect(st.status.state).toBe('SANDBOX_READY');
    const ip = st.status.network.ip;
    expect(ip).toMatch(/^10\.(3[2-9]|4[0-7])\.\d+\.\d+$/);
    const rec = (await api.list()).find((x) => x.target === `weft:${r.podSandboxId}:eth0`);
    expect(rec?.cidrs).toEqual([`${ip}/12`]);
    expect(rec?.name).toBe('web');
    // The node reaches the pod over its veth (proxy ARP and the /32 route the router set up).
    expect((await h1.ping(ip, { count: 2, intervalS: 0.2 })).received).toBe(2);
    await d.cri.call('StopPodSandbox', { podSandboxId: r.podSandboxId });
    await d.cri.call('RemovePodSandbox', { podSandboxId: r.podSandboxId });
    pods.splice(0);
    expect((await api.list()).find((x) => x.target === `weft:${r.podSandboxId}:eth0`)).toBeUndefined();
  });

  it('why it is privileged: the same router without it (the kubelet’s read-only /proc/sys) fails every ADD', async () => {
    await d.cri.call('StopContainer', { containerId: routerId, timeout: 10 });
    const router = ds.spec.template.spec.containers.find((c: Doc) => c.name === 'weft');
    const unprivileged = { ...router, securityContext: { ...router.securityContext, privileged: false } };
    await startRouter(unprivileged, 1);
    const err = await d.cri
      .call('RunPodSandbox', {
        config: {
          metadata: { name: 'web2', namespace: 'default', uid: `uid-web2-${process.pid}`, attempt: 0 },
          hostname: 'web2',
          logDirectory: path.join(work, 'logs'),
          linux: {},
        },
      })
      .then(
        () => undefined,
        (e: Error) => e,
      );
    expect(err?.message).toMatch(
      /cannot set up forwarding for .*read-only file system.*\/proc\/sys\/net\/ipv4\/conf\/.*\/proxy_arp/,
    );
  });
});
