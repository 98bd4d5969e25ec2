/**
 * kube-peers, the DaemonSet's sidecar (k8s/kube-peers.ts), run as in a cluster: through the
 * official client (@kubernetes/client-node, a kubeconfig), beside real routers launched with
 * `--nickname NODE_NAME`. No API server can be installed here: the Node list comes from a small
 * HTTP server on h1 answering GET /api/v1/nodes with NodeList JSON in the shape a v1.29 API server
 * gives (the test edits the list between rounds). Against a real API server: see the last describe.
 *
 * Three hosts launched with no peers at all: kube-peers on h1 and h2 connect everyone; when
 * node-c's Node is deleted (its router stopped first, then the Node removed), the smallest live
 * Node's sidecar (node-a, on h1) takes over node-c's address space, also after the routers have
 * forgotten node-c as unreachable, and node-b's sidecar does not.
 */
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, Lab, outputTail, requireRoot, waitUntil } from '../lab/netns.js';
import { expose, launch, removeStateDirs, stateDir, status, weft } from './weft.js';

const reason = requireRoot();
const ROOT = path.resolve(import.meta.dirname, '..');
const KUBE_PEERS = path.join(ROOT, 'dist/k8s/kube-peers.js');
const API_PORT = 16443;

/** API_SERVER answers GET /api/v1/nodes with the JSON file argv[1] holds now (re-read per request). */
const API_SERVER = `
const http = require('node:http');
const fs = require('node:fs');
const [file, host, port] = process.argv.slice(1);
http.createServer((req, res) => {
  if (req.method !== 'GET' || !req.url.startsWith('/api/v1/nodes')) { res.writeHead(404); res.end(); return; }
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(fs.readFileSync(file));
}).listen(Number(port), host, () => console.log('ready'));
`;

/** nodeList is a NodeList as an API server returns it, one Node per [name, InternalIP]. */
function nodeList(nodes: readonly (readonly [string, string])[]): string {
  return JSON.stringify({
    kind: 'NodeList',
    apiVersion: 'v1',
    metadata: { resourceVersion: String(48_000 + nodes.length) },
    items: nodes.map(([name, ip], i) => ({
      metadata: {
        name,
        uid: `8b9d6c2e-3f41-4d7a-9a51-0f6b1b3c2d1${i}`,
        resourceVersion: String(48_100 + i),
        creationTimestamp: '2026-11-30T09:12:44Z',
        labels: { 'kubernetes.io/hostname': name, 'kubernetes.io/os': 'linux' },
      },
      spec: { podCIDR: `10.244.${i}.0/24`, podCIDRs: [`10.244.${i}.0/24`] },
      status: {
        addresses: [
          { type: 'InternalIP', address: ip },
          { type: 'Hostname', address: name },
        ],
        nodeInfo: { kubeletVersion: 'v1.29.4', containerRuntimeVersion: 'containerd://1.6.20' },
      },
    })),
  });
}

/** kubeconfig is a kubeconfig for the server at `url` with a bearer token (plain HTTP: the client insists on skip-TLS-verify for it). */
function kubeconfig(url: string): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: lab',
    `  cluster: {server: "${url}", insecure-skip-tls-verify: true}`,
    'users:',
    '- name: weft',
    '  user: {token: "lab-token"}',
    'contexts:',
    '- name: lab',
    '  context: {cluster: lab, user: weft}',
    'current-context: lab',
    '',
  ].join('\n');
}

/** ipamOwners lists the peers owning address space in a router's view. */
async function ipamOwners(h: Host): Promise<string[]> {
  const s = (await status(h)) as unknown as { ipam: { peers: { name: string; owned: number }[] } };
  return s.ipam.peers.filter((p) => p.owned > 0).map((p) => p.name);
}

describe.skipIf(reason)('kube-peers: the mesh from the Node list, reclaiming deleted Nodes', () => {
  let topo: Lab;
  let h1: Host;
  let h2: Host;
  let h3: Host;
  let names: string[] = [];
  let nodesFile: string;
  const sidecars: ChildProcess[] = [];

  beforeAll(async () => {
    topo = await Lab.create({ hosts: 3 });
    [h1, h2, h3] = topo.hosts as [Host, Host, Host];
    names = [];
    for (const [h, nick] of [
      [h1, 'node-a'],
      [h2, 'node-b'],
      [h3, 'node-c'],
    ] as const) {
      names.push(await launch(h, [], ['--no-dns', '--nickname', nick]));
    }
    nodesFile = path.join(stateDir(h1), 'nodes.json');
    writeFileSync(
      nodesFile,
      nodeList([
        ['node-a', h1.underlayIp],
        ['node-b', h2.underlayIp],
        ['node-c', h3.underlayIp],
      ]),
    );
    const api = h1.spawn(process.execPath, ['-e', API_SERVER, nodesFile, h1.underlayIp, String(API_PORT)]);
    await waitUntil(async () => outputTail(api).includes('ready'), { timeoutMs: 10_000, what: 'the Node list server' });
    for (const [h, node] of [
      [h1, 'node-a'],
      [h2, 'node-b'],
    ] as const) {
      const config = path.join(stateDir(h), 'kubeconfig');
      writeFileSync(config, kubeconfig(`http://${h1.underlayIp}:${API_PORT}`));
      sidecars.push(
        h.spawn(process.execPath, [KUBE_PEERS], {
          env: {
            KUBECONFIG: config,
            NODE_NAME: node,
            WEFT_API_SOCKET: `/run/weft/netns/${h.name}/weft.sock`,
            WEFT_KUBE_PEERS_INTERVAL_S: '1',
          },
        }),
      );
    }
  }, 120_000);

  afterAll(async () => {
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
  });

  it('connects routers launched with no peers into a full mesh from the Node list', async () => {
    for (const h of [h1, h2, h3]) {
      await waitUntil(
        async () => {
          const s = await status(h);
          return s.peers.length === 2 && s.peers.every((p) => p.state === 'established');
        },
        { timeoutMs: 30_000, what: `${h.name} established with both other nodes` },
      ).catch((err: Error) => {
        throw new Error(`${err.message}; sidecars said: ${sidecars.map((c) => outputTail(c)).join(' | ')}`);
      });
    }
    // Every router takes a share of the range once it is asked for an address.
    for (const h of [h1, h2, h3]) await expose(h);
    await waitUntil(async () => (await ipamOwners(h1)).length === 3, { timeoutMs: 20_000, what: 'three owners' });
  });

  it("takes a deleted Node's address space over on node-a only, after the routers forgot it", async () => {
    const gone = names[2]!;
    expect(await ipamOwners(h1)).toContain(gone);
    await weft(h3, ['stop']);
    // The Node goes from the list only after its router was forgotten (unreachable for the peer
    // timeout, then the GC delay): rmpeer must then find it by nickname among forgotten peers.
    await waitUntil(async () => !(await status(h1)).peers.some((p) => p.name === gone), {
      timeoutMs: 30_000,
      what: 'node-c forgotten by h1',
    });
    writeFileSync(
      nodesFile,
      nodeList([
        ['node-a', h1.underlayIp],
        ['node-b', h2.underlayIp],
      ]),
    );
    await waitUntil(async () => !(await ipamOwners(h1)).includes(gone), {
      timeoutMs: 20_000,
      what: "node-c's space taken over",
    });
    await waitUntil(async () => !(await ipamOwners(h2)).includes(gone), {
      timeoutMs: 20_000,
      what: "h2 hearing that node-c's space is node-a's",
    });
    expect(outputTail(sidecars[0]!)).toMatch(/node node-c deleted: rmpeer answered HTTP 200/);
    expect(outputTail(sidecars[1]!)).not.toMatch(/rmpeer/);
    // The routers were never restarted: the sidecars' rounds did not disturb them.
    expect(sidecars.every((c) => c.exitCode === null)).toBe(true);
  });
});

const apiServer = process.env.KUBECONFIG ?? process.env.KUBERNETES_SERVICE_HOST;

describe.skipIf(apiServer === undefined)('kube-peers against a real API server (KUBECONFIG or in-cluster)', () => {
  it('lists the Nodes through the official client and finds each one an InternalIP or says why not', async () => {
    const { nodePeers } = await import('../k8s/kube-peers.js');
    const k8s = await import('@kubernetes/client-node');
    const kc = new k8s.KubeConfig();
    kc.loadFromDefault();
    const list = await kc.makeApiClient(k8s.CoreV1Api).listNode();
    expect(list.kind ?? 'NodeList').toBe('NodeList');
    const peers = nodePeers(list.items as Parameters<typeof nodePeers>[0]);
    for (const p of peers) expect(p.ip).toMatch(/^\d{1,3}(\.\d{1,3}){3}$/);
  });
});
if (apiServer === undefined) {
  console.log('kube-peers e2e: no real API server here (neither KUBECONFIG nor KUBERNETES_SERVICE_HOST): skipped');
}
