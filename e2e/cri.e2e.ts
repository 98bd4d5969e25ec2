import { execFile } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SocketRouterApi } from '../cni/router-api.js';
import { type Host, Lab, waitUntil } from '../lab/netns.js';
import { installWeftCni } from './cni-setup.js';
import {
  buildPauseImage,
  type Containerd,
  cleanupContainerd,
  criSkipReason,
  startContainerd,
  stopContainerd,
} from './cri.js';
import { launch, removeStateDirs, waitPeers, weft } from './weft.js';

const run = promisify(execFile);
const reason = criSkipReason();
if (reason !== undefined) console.warn(`cri e2e skipped: ${reason}`);

/**
 * Pods made by a real container runtime through CRI, the interface the kubelet drives: on two hosts,
 * each running containerd 1.6 (Debian) with its CRI plugin and a Weft router, RunPodSandbox calls the
 * `weft` CNI plugin chained with portmap; the pods get Weft addresses, reach each other across hosts,
 * iperf3 each other with no NAT (the receiver sees the sender's pod address), resolve each other's
 * names through Weft DNS, and StopPodSandbox/RemovePodSandbox (CNI DEL twice, the second with no
 * netns) free them.
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

  beforeAll(async () => {
    installWeftCni(binDir, confDir, '10-weft.conflist', net, ['loopback', 'portmap']);
    const pauseTar = buildPauseImage(path.join(work, 'image'));
    topo = await Lab.create({ hosts: 2 });
    hosts = topo.hosts as Host[];
    const [h1, h2] = hosts as [Host, Host];
    await launch(h1, [], ['--container-grace', '1000']);
    await launch(h2, [h1.underlayIp], ['--container-grace', '1000']);
    await waitPeers(h1, 1);
    await waitPeers(h2, 1);
    for (const h of hosts) {
      daemons.push(await startContainerd(h, { dir: path.join(work, h.name), binDir, confDir, pauseTar }));
    }
  });

  afterAll(async () => {
    for (const d of daemons) {
      for (const p of pods.filter((x) => x.d === d)) {
        await d.cri?.call('StopPodSandbox', { podSandboxId: p.id }).catch(() => undefined);
        await d.cri?.call('RemovePodSandbox', { podSandboxId: p.id }).catch(() => undefined);
      }
      await stopContainerd(d);
      cleanupContainerd(d.dir);
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

  /** inPod runs a command in a pod's network namespace (the path the router recorded for it). */
  async function inPod(p: (typeof pods)[0], cmd: string[], timeoutMs = 30_000) {
    const recs = await new SocketRouterApi(`/run/weft/netns/${p.d.host.name}/weft.sock`).list();
    const netns = recs.find((r) => r.target === `${net}:${p.id}:eth0`)?.netns as string;
    return run('nsenter', [`--net=${netns}`, ...cmd], { timeout: timeoutMs });
  }

  it('iperf3 from pod to pod across hosts: the receiver sees the sender’s pod address (no NAT)', async () => {
    const [a, b] = pods as [(typeof pods)[0], (typeof pods)[0]];
    const server = inPod(b, ['iperf3', '-s', '-1', '-J', '-B', b.ip, '-p', '5301'], 60_000);
    type Iperf = {
      error?: string;
      start: { connected: { local_host: string; remote_host: string }[] };
      end: { sum_received?: { bytes: number } };
    };
    let sent: Iperf | undefined;
    // Until the server listens the client fails (iperf3 -J may exit 0 with an `error` in its JSON).
    await waitUntil(
      async () => {
        const r = await inPod(a, ['iperf3', '-c', b.ip, '-p', '5301', '-t', '1', '-J']).catch(
          (e: { stdout?: string }) => e,
        );
        sent = JSON.parse(r.stdout || '{}') as Iperf;
        return sent.error === undefined && sent.start?.connected?.length === 1;
      },
      { timeoutMs: 30_000, what: 'iperf3 from the pod on h1 to the pod on h2' },
    );
    expect(sent?.start.connected[0]?.local_host).toBe(a.ip);
    expect(sent?.end.sum_received?.bytes).toBeGreaterThan(0);
    const got = JSON.parse((await server).stdout) as Iperf;
    expect(got.start.connected[0]?.remote_host).toBe(a.ip);
  });

  it('pods resolve each other’s names (K8S_POD_NAME.weft.local) through Weft DNS on their node', async () => {
    const [a, b] = pods as [(typeof pods)[0], (typeof pods)[0]];
    for (const [from, to, name] of [
      [a, b, 'pod1'],
      [b, a, 'pod0'],
    ] as const) {
      // The DNS server the CNI result names: the node's overlay address, the pod's gateway.
      const gw = /via (\S+)/.exec((await inPod(from, ['ip', '-4', 'route', 'show', 'default'])).stdout)?.[1];
      expect(gw).toMatch(/^10\./);
      await waitUntil(
        async () => {
          const r = await inPod(from, ['dig', '+short', '+time=1', '+tries=1', `@${gw}`, `${name}.weft.local`]).catch(
            () => ({ stdout: '' }),
          );
          return r.stdout.trim() === to.ip;
        },
        { timeoutMs: 20_000, what: `${name}.weft.local to resolve to ${to.ip} from the other pod` },
      );
    }
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
