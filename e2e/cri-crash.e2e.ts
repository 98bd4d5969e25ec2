import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AttachRecord, SocketRouterApi } from '../cni/router-api.js';
import { type Host, Lab, waitUntil } from '../lab/netns.js';
import { installWeftCni } from './cni-setup.js';
import {
  buildPauseImage,
  type Containerd,
  cleanupContainerd,
  criSkipReason,
  listSandboxes,
  ROOT,
  startContainerd,
  stopContainerd,
} from './cri.js';
import { launch, removeStateDirs, routerPid, weft } from './weft.js';

const reason = criSkipReason();
if (reason !== undefined) console.warn(`cri-crash e2e skipped: ${reason}`);

const MAIN = path.join(ROOT, 'dist/cni/main.js');

/** procStat reads a process's state letter and parent pid (undefined when it is gone). */
function procStat(pid: number): { state: string; ppid: number } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { state: f[0] as string, ppid: Number(f[1]) };
  } catch {
    return undefined;
  }
}

function procEnv(pid: number): Map<string, string> {
  const env = new Map<string, string>();
  try {
    for (const kv of readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')) {
      const i = kv.indexOf('=');
      if (i > 0) env.set(kv.slice(0, i), kv.slice(i + 1));
    }
  } catch {
    // gone
  }
  return env;
}

/** unixSockets reads /proc/PID/net/unix (the process's network namespace): inode, state (01 listen, 02 queued, 03 connected), path. */
function unixSockets(pid: number): { inode: string; st: string; path: string }[] {
  return readFileSync(`/proc/${pid}/net/unix`, 'utf8')
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 7)
    .map((f) => ({ inode: f[6] as string, st: f[5] as string, path: f[7] ?? '' }));
}

/** socketInodes lists the inodes of the sockets a process holds open. */
function socketInodes(pid: number): string[] {
  const out: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) out.push(m[1] as string);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/**
 * A CNI ADD interrupted by a crash of the runtime leaks no address. On a host with a Weft router
 * and containerd 1.6 (Debian) with its CRI plugin: the router is stopped (SIGSTOP) so that the ADD
 * of a RunPodSandbox waits for it, provably (the plugin process is connected and its connection sits
 * in the router's accept queue); containerd is killed with SIGKILL and the router continued, so the
 * orphaned plugin finishes the attach for a runtime that is gone. containerd restarted with the same
 * root and state lists that sandbox NOT_READY (1.6 records the sandbox and its netns before CNI ADD),
 * and the cleanup the kubelet does for such a sandbox (StopPodSandbox → CNI DEL with the netns,
 * RemovePodSandbox → DEL without) frees the address. A sandbox the runtime lost track of entirely
 * (its container record deleted behind CRI's back, no DEL ever sent) is freed by the plugin's GC
 * given the runtime's own list (ListPodSandbox) as `cni.dev/valid-attachments`, as a libcni ≥ 1.2
 * runtime sends it (containerd 1.6 sends no GC). Throughout, the router is the same process.
 */
describe.skipIf(reason)('containerd killed mid-ADD leaves no leaked address', () => {
  const net = `weft-crc-${process.pid}`;
  const work = path.join(tmpdir(), `weft-cri-crash-e2e-${process.pid}`);
  const binDir = path.join(work, 'bin');
  const confDir = path.join(work, 'net.d');
  const dir = path.join(work, 'containerd');
  let topo: Lab;
  let h1: Host;
  let d: Containerd;
  let routerAtStart = 0;
  let api: SocketRouterApi;
  /** netns paths containerd made for our sandboxes: removed at the end if a failure left them. */
  const netnsPaths = new Set<string>();
  const sandboxIds = new Set<string>();
  let survivor = { id: '', ip: '' };
  let interrupted = { id: '', netns: '', ip: '' };

  const podConfig = (name: string) => ({
    config: {
      metadata: { name, namespace: 'default', uid: `uid-${process.pid}-${name}`, attempt: 0 },
      hostname: name,
      logDirectory: path.join(dir, 'logs'),
      linux: {},
    },
  });
  const allocations = async (): Promise<{ addr: string; owner: string }[]> =>
    (
      JSON.parse((await weft(h1, ['status', 'ipam', '--json'])).stdout) as {
        allocations: { addr: string; owner: string }[];
      }
    ).allocations;
  const record = async (id: string): Promise<AttachRecord | undefined> =>
    (await api.list()).find((r) => r.target === `${net}:${id}:eth0`);

  /**
   * orphans lists the addresses the router holds for this network's containers that the runtime
   * does not list (owner keys are NETWORK:CONTAINERID:IFNAME).
   */
  async function orphans(): Promise<string[]> {
    const listed = new Set((await listSandboxes(d)).map((s) => s.id));
    return (await allocations())
      .filter((a) => a.owner.startsWith(`${net}:`) && !listed.has(a.owner.split(':')[1] as string))
      .map((a) => `${a.addr} (${a.owner})`);
  }

  /**
   * runtimeGc sends the weft plugin the GC a libcni ≥ 1.2 runtime sends (GCNetworkList): the network's
   * plugin configuration at cniVersion 1.1.0 with `cni.dev/valid-attachments`, here every sandbox
   * the runtime lists (ListPodSandbox) with the interface CRI gives it, run from the runtime's bin dir
   * in its namespace.
   */
  async function runtimeGc(): Promise<void> {
    const valid = (await listSandboxes(d)).map((s) => ({ containerID: s.id, ifname: 'eth0' }));
    const r = await h1.exec(path.join(binDir, 'weft'), [], {
      env: { CNI_COMMAND: 'GC', CNI_PATH: binDir },
      input: JSON.stringify({ cniVersion: '1.1.0', name: net, type: 'weft', 'cni.dev/valid-attachments': valid }),
      allowFail: true,
      timeoutMs: 60_000,
    });
    expect([r.code, r.stdout]).toEqual([0, '']);
  }

  async function restartContainerd(signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> {
    await stopContainerd(d, signal);
    d = await startContainerd(h1, { dir, binDir, confDir });
  }

  beforeAll(async () => {
    installWeftCni(binDir, confDir, '10-weft.conflist', net, ['loopback', 'portmap']);
    const pauseTar = buildPauseImage(path.join(work, 'image'));
    topo = await Lab.create({ hosts: 1 });
    [h1] = topo.hosts as [Host];
    await launch(h1, [], ['--container-grace', '1000']);
    routerAtStart = await routerPid(h1);
    api = new SocketRouterApi(`/run/weft/netns/${h1.name}/weft.sock`);
    d = await startContainerd(h1, { dir, binDir, confDir, pauseTar });
  });

  afterAll(async () => {
    if (routerAtStart > 0) {
      try {
        process.kill(routerAtStart, 'SIGCONT');
      } catch {
        // gone
      }
    }
    if (d !== undefined) {
      for (const id of sandboxIds) {
        await d.cri?.call('StopPodSandbox', { podSandboxId: id }).catch(() => undefined);
        await d.cri?.call('RemovePodSandbox', { podSandboxId: id }).catch(() => undefined);
      }
      await stopContainerd(d);
      cleanupContainerd(dir);
    }
    // Namespaces containerd made for our sandboxes and never removed (a sandbox it lost track of).
    for (const p of netnsPaths) {
      if (!existsSync(p)) continue;
      try {
        execFileSync('umount', [p], { stdio: 'ignore' });
      } catch {
        // not mounted
      }
      rmSync(p, { force: true });
    }
    // libcni's result cache (a fixed path): our network's entries and the loopback ones of our sandboxes.
    const results = '/var/lib/cni/results';
    for (const f of existsSync(results) ? readdirSync(results) : []) {
      const ours = f.startsWith(`${net}-`) || [...sandboxIds].some((id) => f === `cni-loopback-${id}-lo`);
      if (ours) rmSync(path.join(results, f), { force: true });
    }
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
    rmSync(work, { recursive: true, force: true });
  });

  it('a pod runs on the weft network (the one that must survive the crash)', async () => {
    const r = await d.cri.call<{ podSandboxId: string }>('RunPodSandbox', podConfig('survivor'));
    sandboxIds.add(r.podSandboxId);
    const st = await d.cri.call<{ status: { state: string; network: { ip: string } } }>('PodSandboxStatus', {
      podSandboxId: r.podSandboxId,
    });
    expect(st.status.state).toBe('SANDBOX_READY');
    survivor = { id: r.podSandboxId, ip: st.status.network.ip };
    const rec = await record(survivor.id);
    expect(rec?.cidrs).toEqual([`${survivor.ip}/12`]);
    if (rec?.netns) netnsPaths.add(rec.netns);
  });

  it('containerd is killed (SIGKILL) while the ADD of a second pod waits for the router', async () => {
    const containerdPid = d.child.pid as number;
    const sock = `/run/weft/netns/${h1.name}/weft.sock`;
    process.kill(routerAtStart, 'SIGSTOP');
    let plugin = 0;
    let failed: unknown;
    try {
      const run = d.cri.call('RunPodSandbox', podConfig('interrupted')).then(
        () => undefined,
        (e: unknown) => {
          failed = e;
        },
      );
      // The ADD is in flight: containerd's child runs the weft plugin with CNI_COMMAND=ADD, that
      // process holds a connected unix socket, and a connection waits in the router's accept queue.
      await waitUntil(
        () => {
          for (const e of readdirSync('/proc')) {
            const pid = Number(e);
            if (!(pid > 0) || procStat(pid)?.ppid !== containerdPid) continue;
            const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
            if (!argv.includes(MAIN) || procEnv(pid).get('CNI_COMMAND') !== 'ADD') continue;
            const mine = new Set(socketInodes(pid));
            const socks = unixSockets(pid);
            const connected = socks.some((s) => mine.has(s.inode) && s.st === '03');
            const queued = socks.some((s) => s.path === sock && s.st === '02');
            if (connected && queued) {
              plugin = pid;
              return true;
            }
          }
          return false;
        },
        { timeoutMs: 60_000, intervalMs: 50, what: 'the weft ADD to wait in the router’s accept queue' },
      );
      const env = procEnv(plugin);
      interrupted = { id: env.get('CNI_CONTAINERID') as string, netns: env.get('CNI_NETNS') as string, ip: '' };
      sandboxIds.add(interrupted.id);
      netnsPaths.add(interrupted.netns);
      expect(interrupted.netns).toMatch(/^\/var\/run\/netns\/cni-/);
      process.kill(containerdPid, 'SIGKILL');
      await waitUntil(() => d.child.exitCode !== null || d.child.signalCode !== null, {
        timeoutMs: 10_000,
        what: 'containerd to die',
      });
      await run;
      expect(failed).toBeDefined();
    } finally {
      process.kill(routerAtStart, 'SIGCONT');
    }
    // The orphaned plugin gets its answer and exits; the router made the attachment for the dead runtime.
    await waitUntil(
      () => {
        const s = procStat(plugin);
        return s === undefined || s.state === 'Z';
      },
      { timeoutMs: 60_000, what: 'the orphaned weft plugin to finish' },
    );
    const rec = await record(interrupted.id);
    expect(rec?.netns).toBe(interrupted.netns);
    interrupted.ip = (rec?.cidrs[0] ?? '').split('/')[0] as string;
    expect((await allocations()).map((a) => a.addr)).toContain(interrupted.ip);
    expect(await routerPid(h1)).toBe(routerAtStart);
  });

  it('containerd restarted on the same state lists that sandbox NOT_READY, and GC with its list keeps both pods', async () => {
    d = await startContainerd(h1, { dir, binDir, confDir });
    const listed = new Map((await listSandboxes(d)).map((s) => [s.id, s.state]));
    expect(listed.get(survivor.id)).toBe('SANDBOX_READY');
    expect(listed.get(interrupted.id)).toBe('SANDBOX_NOTREADY');
    await runtimeGc();
    const held = (await allocations()).map((a) => a.addr);
    expect(held).toContain(survivor.ip);
    expect(held).toContain(interrupted.ip);
    expect(await orphans()).toEqual([]);
  });

  it('the kubelet’s cleanup of a NOT_READY sandbox (Stop, Remove) frees its address and netns; the survivor keeps its own', async () => {
    for (const s of await listSandboxes(d)) {
      if (s.state !== 'SANDBOX_NOTREADY') continue;
      await d.cri.call('StopPodSandbox', { podSandboxId: s.id });
      await d.cri.call('RemovePodSandbox', { podSandboxId: s.id });
    }
    expect((await listSandboxes(d)).map((s) => s.id)).toEqual([survivor.id]);
    const held = (await allocations()).map((a) => a.addr);
    expect(held).not.toContain(interrupted.ip);
    expect(held).toContain(survivor.ip);
    expect(await record(interrupted.id)).toBeUndefined();
    expect(existsSync(interrupted.netns)).toBe(false);
    expect(await orphans()).toEqual([]);
    const rec = await record(survivor.id);
    expect((await h1.exec('nsenter', [`--net=${rec?.netns}`, 'ip', '-br', 'addr', 'show', 'eth0'])).stdout).toContain(
      `${survivor.ip}/12`,
    );
    expect(await routerPid(h1)).toBe(routerAtStart);
  });

  it('a sandbox the runtime lost (its record deleted behind CRI, no DEL) is freed by GC with the runtime’s list', async () => {
    const r = await d.cri.call<{ podSandboxId: string }>('RunPodSandbox', podConfig('lost'));
    sandboxIds.add(r.podSandboxId);
    const rec = await record(r.podSandboxId);
    if (rec?.netns) netnsPaths.add(rec.netns);
    const lost = (rec?.cidrs[0] ?? '').split('/')[0] as string;
    expect(lost).toMatch(/^10\./);
    // Behind CRI's back: the task and the container record go, and a restart makes CRI forget it.
    const ctr = (args: string[]) =>
      execFileSync('ctr', ['-a', d.socket, '-n', 'k8s.io', ...args], { stdio: 'pipe', timeout: 60_000 });
    ctr(['tasks', 'kill', '-s', 'SIGKILL', r.podSandboxId]);
    // CRI's exit monitor deletes the task of a sandbox that exits (and sends no DEL); else remove it.
    await waitUntil(
      () => {
        if (!ctr(['tasks', 'ls', '-q']).toString().split('\n').includes(r.podSandboxId)) return true;
        ctr(['tasks', 'rm', r.podSandboxId]);
        return true;
      },
      { timeoutMs: 20_000, what: 'the killed sandbox task to go' },
    );
    ctr(['containers', 'rm', r.podSandboxId]);
    await restartContainerd();
    expect((await listSandboxes(d)).map((s) => s.id)).toEqual([survivor.id]);
    expect(await orphans()).toEqual([`${lost} (${net}:${r.podSandboxId}:eth0)`]);
    await runtimeGc();
    expect(await orphans()).toEqual([]);
    const held = (await allocations()).map((a) => a.addr);
    expect(held).not.toContain(lost);
    expect(held).toContain(survivor.ip);
    expect(await routerPid(h1)).toBe(routerAtStart);
    expect((await weft(h1, ['status', '--json'])).code).toBe(0);
  });
});
