import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadAllYaml } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { parseNetConf } from '../cni/netconf.js';
import {
  BUNDLE_FILE,
  DAEMON_MALLOC_ARENA_MAX,
  DAEMON_MALLOC_MMAP_THRESHOLD,
  DAEMON_NODE_ARGS,
} from '../control/cli.js';
import { HTTP_ADDR } from '../router/constants.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.resolve(here, '../dist/control/cli.js');

// biome-ignore lint/suspicious/noExplicitAny: manifests are free-form YAML, checked field by field below.
type Doc = any;
const docs = loadAllYaml(readFileSync(path.join(here, 'weft.yaml'), 'utf8')) as Doc[];
const byKind = (kind: string): Doc => docs.find((d) => d.kind === kind);
const ds = byKind('DaemonSet');
const pod = ds.spec.template.spec;
const container = (name: string): Doc => pod.containers.find((c: Doc) => c.name === name);
const router = container('weft');
/** hostPathOf returns the host path behind a container's mount at `mountPath`. */
const hostPathOf = (c: Doc, mountPath: string): string | undefined => {
  const m = c.volumeMounts.find((v: Doc) => v.mountPath === mountPath);
  return pod.volumes.find((v: Doc) => v.name === m?.name)?.hostPath?.path;
};
/** launchArgs are the router's `weft launch` words, with the environment the DaemonSet gives. */
const launchArgs = (): string[] => (router.args[0] as string).split(/\s+/).filter((w) => w !== '');
const flagValue = (flag: string): string | undefined => {
  const a = launchArgs();
  return a[a.indexOf(flag) + 1];
};

/**
 * k8s/weft.yaml parsed as the API server would take it (the client library's YAML loader), and
 * checked against what the router, the CNI plugin and kube-peers need.
 */
describe('k8s/weft.yaml', () => {
  it('holds the ServiceAccount, RBAC that reads Nodes, the ConfigMap and the DaemonSet', () => {
    expect(docs.map((d) => d.kind)).toEqual([
      'ServiceAccount',
      'ClusterRole',
      'ClusterRoleBinding',
      'ConfigMap',
      'DaemonSet',
    ]);
    expect(byKind('ClusterRole').rules).toEqual([
      { apiGroups: [''], resources: ['nodes'], verbs: ['get', 'list', 'watch'] },
    ]);
    const binding = byKind('ClusterRoleBinding');
    expect(binding.roleRef).toMatchObject({ kind: 'ClusterRole', name: byKind('ClusterRole').metadata.name });
    expect(binding.subjects).toEqual([
      { kind: 'ServiceAccount', name: pod.serviceAccountName, namespace: byKind('ServiceAccount').metadata.namespace },
    ]);
  });

  it('runs the router on the host network with NET_ADMIN, the TUN device and its state on the host', () => {
    expect(pod.hostNetwork).toBe(true);
    expect(router.securityContext.capabilities.add).toEqual(expect.arrayContaining(['NET_ADMIN', 'SYS_ADMIN']));
    expect(hostPathOf(router, '/dev/net/tun')).toBe('/dev/net/tun');
    expect(pod.volumes.find((v: Doc) => v.hostPath?.path === '/dev/net/tun').hostPath.type).toBe('CharDevice');
    // The one-file build, with the Node options `weft launch` gives a background router.
    expect(launchArgs().slice(0, 5 + DAEMON_NODE_ARGS.length)).toEqual([
      'exec',
      'node',
      ...DAEMON_NODE_ARGS,
      `/opt/weft/dist/${BUNDLE_FILE}`,
      'launch',
      '--foreground',
    ]);
    expect(router.env).toContainEqual({ name: 'MALLOC_ARENA_MAX', value: DAEMON_MALLOC_ARENA_MAX });
    expect(router.env).toContainEqual({ name: 'MALLOC_MMAP_THRESHOLD_', value: DAEMON_MALLOC_MMAP_THRESHOLD });
    expect(hostPathOf(router, flagValue('--state-dir') as string)).toBe('/var/lib/weft');
    // Pod egress (issue 16 part 3): masqueraded beyond the overlay, with the router's own nftables table.
    expect(launchArgs()).toContain('--masquerade');
    expect(hostPathOf(router, '/var/run/netns')).toBe('/var/run/netns');
    // The runtime mounts each new pod's namespace there after the router started: it must see them.
    const netns = router.volumeMounts.find((v: Doc) => v.mountPath === '/var/run/netns');
    expect(netns.mountPropagation).toBe('HostToContainer');
  });

  it('is privileged: the router writes /proc/sys (veth sysctls, ip_forward), read-only in any other container', () => {
    // control/attach.ts writes them for every pod; CRI mounts /proc/sys read-only unless privileged.
    expect(router.securityContext.privileged).toBe(true);
  });

  it("names the router's peer after the Node (kube-peers reclaims a deleted Node's space by it)", () => {
    expect(flagValue('--nickname')).toBe('"$NODE_NAME"');
    const env = router.env.find((e: Doc) => e.name === 'NODE_NAME');
    expect(env.valueFrom.fieldRef.fieldPath).toBe('spec.nodeName');
  });

  it('gives only flags `weft launch` takes, each environment variable from the pod spec', () => {
    const help = spawnSync(process.execPath, [CLI, 'launch', '--help'], { encoding: 'utf8' }).stdout;
    const known = new Set(help.match(/--[a-z][a-z-]+/g));
    expect(known.size).toBeGreaterThan(10);
    const flags = launchArgs().slice(launchArgs().indexOf('launch'));
    for (const w of flags.filter((x) => x.startsWith('--'))) expect(known, w).toContain(w);
    const env = new Set(router.env.map((e: Doc) => e.name));
    for (const v of (router.args[0] as string).match(/\$[A-Z_]+/g) ?? []) expect(env, v).toContain(v.slice(1));
  });

  it('takes the password from the Secret, the range and flags from the ConfigMap', () => {
    const file = flagValue('--password-file') as string;
    const m = router.volumeMounts.find((v: Doc) => file.startsWith(`${v.mountPath}/`));
    const vol = pod.volumes.find((v: Doc) => v.name === m.name);
    expect(vol.secret.secretName).toBe('weft-password');
    expect(path.basename(file)).toBe('password');
    const cm = byKind('ConfigMap');
    const ref = (name: string) => router.env.find((e: Doc) => e.name === name).valueFrom.configMapKeyRef;
    expect(ref('IPALLOC_RANGE')).toEqual({ name: cm.metadata.name, key: 'ipalloc-range' });
    expect(cm.data['ipalloc-range']).toMatch(/^\d+\.\d+\.\d+\.\d+\/\d+$/);
    expect(ref('EXTRA_FLAGS').key).toBe('extra-flags');
  });

  it("probes the router's status endpoint where the API listens", () => {
    const [host, port] = HTTP_ADDR.split(':');
    for (const p of [router.readinessProbe, router.livenessProbe]) {
      expect(p.httpGet).toEqual({ host, port: Number(port), path: '/status' });
    }
  });

  it('installs a conflist the plugin accepts, whose socket the router serves on the host', () => {
    const conflist = JSON.parse(byKind('ConfigMap').data['10-weft.conflist']);
    expect(conflist.plugins.map((p: Doc) => p.type)).toEqual(['weft', 'portmap']);
    const conf = parseNetConf(
      JSON.stringify({ cniVersion: conflist.cniVersion, name: conflist.name, ...conflist.plugins[0] }),
      'ADD',
    );
    const sock = conf.socket as string;
    expect(router.env.find((e: Doc) => e.name === 'WEFT_API_SOCKET').value).toBe(sock);
    expect(hostPathOf(router, path.dirname(sock))).toBe(path.dirname(sock));
    const peers = container('kube-peers');
    expect(peers.env.find((e: Doc) => e.name === 'WEFT_API_SOCKET').value).toBe(sock);
    expect(hostPathOf(peers, path.dirname(sock))).toBe(path.dirname(sock));
  });

  it('installs the plugin shim into the runtime bin dir, pointing at files it copies to the host', () => {
    const init = pod.initContainers[0];
    const script = init.args[0] as string;
    const mounts = (p: string) => hostPathOf(init, p);
    expect(mounts('/host/opt/cni/bin')).toBe('/opt/cni/bin');
    expect(mounts('/host/etc/cni/net.d')).toBe('/etc/cni/net.d');
    expect(mounts('/host/opt/weft-cni')).toBe('/opt/weft-cni');
    expect(script).toMatch(/exec \/opt\/weft-cni\/bin\/node \/opt\/weft-cni\/dist\/cni\/main\.js/);
    expect(script).toMatch(/mv \/host\/opt\/cni\/bin\/\.weft \/host\/opt\/cni\/bin\/weft/);
    expect(script).toMatch(/\/host\/etc\/cni\/net\.d\/10-weft\.conflist/);
  });

  it('runs kube-peers with the node name', () => {
    const peers = container('kube-peers');
    expect(peers.command).toEqual(['node', '/opt/weft/dist/k8s/kube-peers.js']);
    expect(peers.env.find((e: Doc) => e.name === 'NODE_NAME').valueFrom.fieldRef.fieldPath).toBe('spec.nodeName');
  });
});
