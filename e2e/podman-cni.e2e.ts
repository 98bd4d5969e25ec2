import { existsSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, Lab, waitUntil } from '../lab/netns.js';
import { installWeftCni, PLUGINS } from './cni-setup.js';
import { BASE_BUILD_MS, Podman, podmanSkipReason } from './podman.js';
import { CLI, launch, removeStateDirs, waitPeers, weft } from './weft.js';

const _ROOT = path.resolve(path.dirname(CLI), '../..');
/** CNI_RESULTS is libcni's result cache, a fixed path (entries NETWORK-CONTAINERID-IFNAME). */
const CNI_RESULTS = '/var/lib/cni/results';

function skipReason(): string | undefined {
  const podman = podmanSkipReason();
  if (podman !== undefined) return podman;
  if (!existsSync(path.join(PLUGINS, 'portmap'))) {
    return `no reference CNI plugins in ${PLUGINS} (apt-get install containernetworking-plugins)`;
  }
  return undefined;
}

const reason = skipReason();
if (reason !== undefined) console.warn(`podman-cni e2e skipped: ${reason}`);

interface IpamJson {
  allocations: { addr: string; owner: string }[];
}

/**
 * Podman 4.3 with its CNI network backend (`network_backend = "cni"`) as a real runtime calling the
 * `weft` CNI plugin: `podman run --network NET` on two hosts, where NET is a conflist of weft +
 * portmap in podman's network config dir and the plugin sits in its `cni_plugin_dirs` beside
 * Debian's reference plugins. Each container gets its address from the host router's IPAM (owned
 * by NET:CONTAINERID:eth0), the resolver podman writes from the CNI result points at Weft's DNS,
 * the containers ping each other across hosts by address and by name, a published port
 * (`-p`, portmap through podman's capability arguments) reaches a container, and `podman rm -f`
 * (CNI DEL) frees address and name. Podman runs with its own containers.conf (CONTAINERS_CONF),
 * --root, --runroot and --tmpdir under one directory, in the host's network namespace (nsenter),
 * so nothing of the machine's own podman state is used.
 */
describe.skipIf(reason)('podman with the CNI backend runs containers on the weft network', () => {
  let topo: Lab;
  let h1: Host;
  let h2: Host;
  const net = `weftpm${process.pid}`;
  const dir = path.join(tmpdir(), `weft-e2e-podman-cni-${process.pid}`);
  const binDir = path.join(dir, 'cni-bin');
  const confDir = path.join(dir, 'net.d');
  const image = `localhost/weft-e2e-base-cni:${process.pid}`;
  const ids: string[] = [];
  const addr: Record<string, string> = {};

  const pm = new Podman(dir);
  const podman = (h: Host, args: string[], allowFail = false) => pm.run(h, args, allowFail);

  const ipam = async (h: Host): Promise<IpamJson> =>
    JSON.parse((await weft(h, ['status', 'ipam', '--json'])).stdout) as IpamJson;

  /** runOn starts a container on `h` on the weft network; returns its id and the address podman reports. */
  async function runOn(h: Host, name: string, extra: string[] = []): Promise<{ id: string; ip: string; ms: number }> {
    const t = performance.now();
    const id = (
      await podman(h, ['run', '-d', '--name', name, '--network', net, ...extra, image, 'sleep', 'infinity'])
    ).stdout.trim();
    const ms = performance.now() - t;
    ids.push(id);
    const ip = (
      await podman(h, ['inspect', '-f', `{{(index .NetworkSettings.Networks "${net}").IPAddress}}`, name])
    ).stdout.trim();
    return { id, ip, ms };
  }

  async function pingFrom(h: Host, from: string, to: string): Promise<void> {
    await waitUntil(async () => (await podman(h, ['exec', from, 'ping', '-c', '1', '-W', '1', to], true)).code === 0, {
      timeoutMs: 20_000,
      what: `${from} on ${h.name} to ping ${to}`,
    });
    expect((await podman(h, ['exec', from, 'ping', '-c', '3', '-i', '0.2', '-W', '1', to])).stdout).toMatch(
      /3 received/,
    );
  }

  beforeAll(async () => {
    installWeftCni(binDir, confDir, `${net}.conflist`, net);
    pm.writeConf([
      '[network]',
      'network_backend = "cni"',
      `cni_plugin_dirs = ["${binDir}", "${PLUGINS}"]`,
      `network_config_dir = "${confDir}"`,
    ]);
    topo = await Lab.create({ hosts: 2 });
    [h1, h2] = topo.hosts as [Host, Host];
    // One storage for both hosts: a container's network is the namespace podman makes for it, and
    // its CNI plugins run where podman runs (so each host's router serves its own containers).
    await pm.importBase(h1, image);
    const flags = ['--docker-socket', 'none', '--container-grace', '1000'];
    await launch(h1, [], flags);
    await launch(h2, [h1.underlayIp], flags);
    await waitPeers(h1, 1);
    await waitPeers(h2, 1);
  }, BASE_BUILD_MS + 120_000);

  afterAll(async () => {
    if (h1 !== undefined && existsSync(path.join(dir, 'root'))) {
      // Each container is removed from the host whose router holds it (its DEL goes there).
      for (const [h, name] of [
        [h1, 'c1'],
        [h2, 'c2'],
      ] as const) {
        if (h !== undefined) await podman(h, ['rm', '-f', '-t', '0', name], true);
      }
    }
    await pm.remove(h1);
    for (const h of [h1, h2]) if (h !== undefined) await weft(h, ['stop'], { allowFail: true });
    for (const f of existsSync(CNI_RESULTS) ? readdirSync(CNI_RESULTS) : []) {
      if (f.startsWith(`${net}-`)) rmSync(path.join(CNI_RESULTS, f), { force: true });
    }
    if (topo !== undefined) {
      removeStateDirs(topo);
      await topo.destroy();
    }
  }, 120_000);

  it('podman run --network NET on two hosts: each container gets a Weft address from its host’s IPAM', async () => {
    const c1 = await runOn(h1, 'c1', ['-p', '18081:8080']);
    const c2 = await runOn(h2, 'c2');
    console.log(
      `podman-cni: podman run -d with the weft network took ${c1.ms.toFixed(0)} / ${c2.ms.toFixed(0)} ms (whole run, one each, untimed otherwise)`,
    );
    for (const [h, name, c] of [
      [h1, 'c1', c1],
      [h2, 'c2', c2],
    ] as const) {
      expect(c.ip).toMatch(/^10\.(3[2-9]|4[0-7])\.\d+\.\d+$/);
      addr[name] = c.ip;
      const inside = (await podman(h, ['exec', name, 'ip', '-4', '-o', 'addr', 'show', 'eth0'])).stdout;
      expect(inside).toContain(`${c.ip}/12`);
      expect((await ipam(h)).allocations).toContainEqual({ addr: c.ip, owner: `${net}:${c.id}:eth0` });
    }
    expect(c1.ip).not.toBe(c2.ip);
  });

  it('podman writes the resolver from the CNI result: Weft’s DNS on the host’s overlay address', async () => {
    const gw = (await podman(h1, ['exec', 'c1', 'ip', '-4', 'route', 'show', 'default'])).stdout;
    const via = /via (\S+)/.exec(gw)?.[1];
    expect(via).toMatch(/^10\./);
    const resolv = (await podman(h1, ['exec', 'c1', 'cat', '/etc/resolv.conf'])).stdout;
    expect(resolv).toContain(`nameserver ${via}`);
    expect(resolv).toMatch(/search .*weft\.local/);
  });

  it('the containers ping each other across hosts, by address and by name through Weft DNS', async () => {
    await pingFrom(h1, 'c1', addr.c2 as string);
    await pingFrom(h2, 'c2', addr.c1 as string);
    await pingFrom(h1, 'c1', 'c2');
    await pingFrom(h2, 'c2', 'c1.weft.local');
  });

  it('a port published with -p (portmap, from podman’s capability arguments) reaches the container from the other host', async () => {
    // A TCP server inside c1 (the base image carries Node).
    await podman(h1, [
      'exec',
      '-d',
      'c1',
      'node',
      '-e',
      "require('net').createServer((s)=>s.end('hello from c1\\n')).listen(8080)",
    ]);
    await waitUntil(
      async () => {
        const r = await h2.exec(
          process.execPath,
          [
            '-e',
            `const s=require('net').connect(18081,'${h1.underlayIp}');let d='';s.on('data',(b)=>d+=b);s.on('error',()=>process.exit(1));s.on('close',()=>{console.log(d.trim())});setTimeout(()=>process.exit(2),2000).unref()`,
          ],
          { allowFail: true },
        );
        return r.stdout.trim() === 'hello from c1';
      },
      { timeoutMs: 20_000, what: `h1:18081 to reach c1:8080 from h2` },
    );
    expect((await h1.exec('iptables-save', ['-t', 'nat'])).stdout).toMatch(/--dport 18081/);
  });

  it('podman rm -f (CNI DEL) frees the address and the name, and removes the port mapping', async () => {
    await podman(h2, ['rm', '-f', '-t', '0', 'c2']);
    expect((await ipam(h2)).allocations.map((a) => a.addr)).not.toContain(addr.c2);
    await waitUntil(async () => (await weft(h1, ['dns-lookup', 'c2'], { allowFail: true })).code !== 0, {
      timeoutMs: 10_000,
      what: "c2's name to be gone from h1's DNS",
    });
    await podman(h1, ['rm', '-f', '-t', '0', 'c1']);
    expect((await ipam(h1)).allocations.map((a) => a.addr)).not.toContain(addr.c1);
    expect((await h1.exec('iptables-save', ['-t', 'nat'])).stdout).not.toMatch(/--dport 18081/);
    expect(JSON.parse((await weft(h1, ['ps', '--json'])).stdout || '[]')).toEqual([]);
  });
});
