import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ExecResult, type Host, Lab, type Netns, requireRoot, waitUntil } from '../lab/netns.js';
import { CLI, launch, removeStateDirs, waitPeers, weft } from './weft.js';

/** PLUGINS is where Debian's containernetworking-plugins put the reference plugins. */
const PLUGINS = '/usr/lib/cni';
const ROOT = path.resolve(path.dirname(CLI), '../..');
const MAIN = path.join(ROOT, 'dist/cni/main.js');

/** findCnitool returns the cached cnitool (cni/build-cnitool.sh builds it when Go is there), or undefined. */
function findCnitool(): string | undefined {
  const cache = '/var/cache/weft-ci';
  const cached = existsSync(cache) ? readdirSync(cache).filter((f) => /^cnitool-/.test(f) && !f.endsWith('.tmp')) : [];
  if (cached.length > 0) return path.join(cache, cached.sort().at(-1) as string);
  try {
    execFileSync('sh', ['-c', 'command -v go'], { stdio: 'ignore' });
    return execFileSync('sh', [path.join(ROOT, 'cni/build-cnitool.sh')], { encoding: 'utf8', timeout: 120_000 }).trim();
  } catch {
    return undefined;
  }
}

function skipReason(): string | undefined {
  const root = requireRoot();
  if (root !== undefined) return root;
  if (!existsSync(path.join(PLUGINS, 'portmap'))) {
    return `no reference CNI plugins in ${PLUGINS} (apt-get install containernetworking-plugins)`;
  }
  if (findCnitool() === undefined) return 'no cnitool: run `sh cni/build-cnitool.sh` (needs golang-go)';
  return undefined;
}
const reason = skipReason();
if (reason !== undefined) console.warn(`cni e2e skipped: ${reason}`);

interface CniResultJson {
  cniVersion: string;
  interfaces: { name: string; mac?: string; sandbox?: string }[];
  ips: { address: string; gateway?: string; interface: number }[];
  routes: { dst: string; gw?: string }[];
  dns: { nameservers?: string[]; search?: string[] };
}

interface IpamJson {
  allocations: { addr: string; owner: string }[];
}

/** SHAPE is bandwidth's ingress limit: a tbf qdisc on the pod's host-side veth (which it finds in our result). */
const SHAPE = { bandwidth: { ingressRate: 100_000_000, ingressBurst: 1_000_000 } };
/**
 * PORTS also asks portmap to map host port 18080 of h1 to port 8080 of its pod. A runtime gives
 * ADD, CHECK and DEL the same capability arguments (bandwidth 1.1.1's CHECK even crashes without).
 */
const PORTS = JSON.stringify({ portMappings: [{ hostPort: 18080, containerPort: 8080, protocol: 'tcp' }], ...SHAPE });
const SHAPED = JSON.stringify(SHAPE);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

/**
 * The `weft` CNI plugin driven by the CNI project's own runtime driver (cnitool, built from Debian's
 * source) through a conflist chained with the reference portmap, firewall and bandwidth plugins, against real
 * routers on two hosts: pods (network namespaces) get Weft addresses, reach each other across hosts
 * with their own addresses, a mapped host port reaches a pod, CHECK notices a broken pod, DEL frees
 * the address and is idempotent, GC frees what the runtime no longer lists, STATUS and errors follow
 * the spec. Every plugin runs inside a lab host namespace (`ip netns exec`), so their iptables rules
 * land there and nowhere else.
 */
describe.skipIf(reason)('CNI plugin weft with cnitool, portmap, firewall and bandwidth', () => {
  const cnitool = findCnitool() as string;
  const net = `weft-e2e-${process.pid}`;
  const checkNet = `${net}-check`;
  const work = path.join(tmpdir(), `weft-cni-e2e-${process.pid}`);
  const binDir = path.join(work, 'bin');
  const confDir = path.join(work, 'net.d');
  let topo: Lab;
  let h1: Host;
  let h2: Host;
  let p1: Netns;
  let p2: Netns;
  const result: Record<string, CniResultJson> = {};

  const env = (extra: Record<string, string> = {}): Record<string, string> => ({
    NETCONFPATH: confDir,
    CNI_PATH: `${binDir}:${PLUGINS}`,
    ...extra,
  });
  /** tool runs cnitool in a host namespace. */
  const tool = (h: Host, args: string[], extra: Record<string, string> = {}, allowFail = false): Promise<ExecResult> =>
    h.exec(cnitool, args, { env: env(extra), allowFail, timeoutMs: 60_000 });
  /** plugin runs the weft plugin directly (as a runtime would) in a host namespace. */
  const plugin = (h: Host, conf: unknown, vars: Record<string, string>): Promise<ExecResult> =>
    h.exec(path.join(binDir, 'weft'), [], {
      env: { CNI_PATH: `${binDir}:${PLUGINS}`, ...vars },
      input: JSON.stringify(conf),
      allowFail: true,
      timeoutMs: 60_000,
    });
  const ipam = async (h: Host): Promise<IpamJson> =>
    JSON.parse((await weft(h, ['status', 'ipam', '--json'])).stdout) as IpamJson;
  const single = (cniVersion: string) => ({ cniVersion, name: net, type: 'weft' });

  beforeAll(async () => {
    mkdirSync(confDir, { recursive: true });
    execFileSync('sh', [path.join(ROOT, 'cni/install.sh'), binDir, process.execPath, MAIN]);
    writeFileSync(
      path.join(confDir, '10-weft.conflist'),
      JSON.stringify({
        cniVersion: '1.0.0',
        name: net,
        plugins: [
          // No "socket": the plugin finds the router of the namespace it runs in, as the CLI does.
          { type: 'weft' },
          { type: 'portmap', capabilities: { portMappings: true } },
          { type: 'firewall', backend: 'iptables' },
          { type: 'bandwidth', capabilities: { bandwidth: true } },
        ],
      }),
    );
    writeFileSync(
      path.join(confDir, '20-weft-check.conflist'),
      JSON.stringify({
        cniVersion: '1.0.0',
        name: checkNet,
        plugins: [
          { type: 'weft' },
          { type: 'firewall', backend: 'iptables' },
          { type: 'bandwidth', capabilities: { bandwidth: true } },
        ],
      }),
    );
    topo = await Lab.create({ hosts: 2 });
    [h1, h2] = topo.hosts as [Host, Host];
    p1 = await topo.addNamespace('pa');
    p2 = await topo.addNamespace('pb');
    await launch(h1, [], ['--container-grace', '1000']);
    await launch(h2, [h1.underlayIp], ['--container-grace', '1000']);
    await waitPeers(h1, 1);
    await waitPeers(h2, 1);
  });

  afterAll(async () => {
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
    rmSync(work, { recursive: true, force: true });
    // cnitool keeps results under a fixed path, keyed by our network's name.
    for (const dir of ['/var/lib/cni/results']) {
      for (const f of existsSync(dir) ? readdirSync(dir) : []) {
        if (f.startsWith(`${net}-`)) rmSync(path.join(dir, f), { force: true });
      }
    }
  });

  it('ADD through the chain gives pods on both hosts Weft addresses, gateway, routes and DNS', async () => {
    const r1 = await tool(h1, ['add', net, `/run/netns/${p1.name}`], { CAP_ARGS: PORTS });
    const r2 = await tool(h2, ['add', net, `/run/netns/${p2.name}`], { CAP_ARGS: SHAPED });
    result.p1 = JSON.parse(r1.stdout) as CniResultJson;
    result.p2 = JSON.parse(r2.stdout) as CniResultJson;
    for (const [p, r] of [
      [p1, result.p1],
      [p2, result.p2],
    ] as const) {
      expect(r.cniVersion).toBe('1.0.0');
      const pod = r.interfaces[1];
      expect(pod).toMatchObject({ name: 'eth0', sandbox: `/run/netns/${p.name}` });
      expect(r.interfaces[0]?.sandbox).toBeUndefined();
      expect(r.ips).toHaveLength(1);
      expect(r.ips[0]?.address).toMatch(/^10\.(3[2-9]|4[0-7])\.\d+\.\d+\/12$/);
      expect(r.ips[0]?.interface).toBe(1);
      expect(r.routes).toEqual([{ dst: '0.0.0.0/0', gw: r.ips[0]?.gateway }]);
      expect(r.dns).toEqual({ nameservers: [r.ips[0]?.gateway], search: ['weft.local'] });
      const inside = JSON.parse((await p.exec('ip', ['-j', 'addr', 'show', 'eth0'])).stdout) as {
        address: string;
        addr_info: { local: string; prefixlen: number }[];
      }[];
      expect(inside[0]?.address).toBe(pod?.mac);
      expect(`${inside[0]?.addr_info[0]?.local}/${inside[0]?.addr_info[0]?.prefixlen}`).toBe(r.ips[0]?.address);
    }
    // bandwidth shaped the pod's host-side veth, found through the result's host interface.
    const hostVeth = result.p1.interfaces[0]?.name as string;
    expect((await h1.exec('tc', ['qdisc', 'show', 'dev', hostVeth])).stdout).toMatch(/tbf/);
    // Each address is held by its host's router, owned by NETWORK:CONTAINERID:IFNAME.
    const a1 = result.p1.ips[0]?.address.split('/')[0];
    expect((await ipam(h1)).allocations).toContainEqual({ addr: a1, owner: expect.stringMatching(`^${net}:cnitool-`) });
  });

  it('pods ping each other across hosts, and the receiver sees the sender’s own address (no NAT)', async () => {
    const a1 = result.p1?.ips[0]?.address.split('/')[0] as string;
    const a2 = result.p2?.ips[0]?.address.split('/')[0] as string;
    await waitUntil(async () => (await p1.ping(a2, { count: 1, timeoutMs: 1_000 })).received === 1, {
      timeoutMs: 15_000,
      what: 'pod on h1 to reach pod on h2',
    });
    expect((await p2.ping(a1, { count: 3, intervalS: 0.1 })).received).toBe(3);
    // A TCP server in p2 prints the peer address it sees.
    const server = p2.spawn(process.execPath, [
      '-e',
      `require('net').createServer((s)=>{console.log(s.remoteAddress);s.end();process.exit(0)}).listen(7000,'${a2}',()=>console.log('up'))`,
    ]);
    let out = '';
    server.stdout?.on('data', (b: Buffer) => {
      out += b.toString();
    });
    await waitUntil(() => out.includes('up'), { timeoutMs: 10_000, what: 'server in p2' });
    await p1.exec(process.execPath, ['-e', `require('net').connect(7000,'${a2}').on('close',()=>process.exit(0))`]);
    await waitUntil(() => out.includes(a1), { timeoutMs: 5_000, what: `p2 to see ${a1}` });
  });

  it('portmap maps a host port of h1 to the pod, reachable from the other host', async () => {
    const a1 = result.p1?.ips[0]?.address.split('/')[0] as string;
    const server = p1.spawn(process.execPath, [
      '-e',
      `require('net').createServer((s)=>s.end('hello from pod\\n')).listen(8080,'${a1}',()=>console.log('up'))`,
    ]);
    let up = '';
    server.stdout?.on('data', (b: Buffer) => {
      up += b.toString();
    });
    await waitUntil(() => up.includes('up'), { timeoutMs: 10_000, what: 'server in p1' });
    const got = await h2.exec(process.execPath, [
      '-e',
      `const s=require('net').connect(18080,'${h1.underlayIp}');let d='';s.on('data',(b)=>d+=b);s.on('close',()=>{console.log(d.trim())});setTimeout(()=>process.exit(2),5000).unref()`,
    ]);
    expect(got.stdout.trim()).toBe('hello from pod');
    // The DNAT rule lives in h1's namespace (not the machine's).
    expect((await h1.exec('iptables-save', ['-t', 'nat'])).stdout).toMatch(/--dport 18080/);
    server.kill();
  });

  it('CHECK passes for a healthy pod and fails (code 102) when its address is gone', async () => {
    // p1's chain has portmap, whose 1.1.1 CHECK fails an IPv4-only pod ("could not check ipv6 dnat"):
    // weft's own CHECK runs on it directly, with the chain's final result as the runtime gives it.
    const a1 = result.p1?.ips[0]?.address.split('/')[0];
    const owner = (await ipam(h1)).allocations.find((a) => a.addr === a1)?.owner as string;
    const ok = await plugin(
      h1,
      { ...single('1.0.0'), prevResult: result.p1 },
      {
        CNI_COMMAND: 'CHECK',
        CNI_CONTAINERID: owner.split(':')[1] as string,
        CNI_NETNS: `/run/netns/${p1.name}`,
        CNI_IFNAME: 'eth0',
      },
    );
    expect([ok.code, ok.stdout]).toEqual([0, '']);
    // The whole chain without portmap, through cnitool.
    const p3 = await topo.addNamespace('pc');
    await tool(h1, ['add', checkNet, `/run/netns/${p3.name}`], { CAP_ARGS: SHAPED });
    const r = await tool(h1, ['check', checkNet, `/run/netns/${p3.name}`], { CAP_ARGS: SHAPED });
    expect([r.code, r.stdout]).toEqual([0, '']);
    const addr = (
      JSON.parse((await p3.exec('ip', ['-j', 'addr', 'show', 'eth0'])).stdout) as {
        addr_info: { local: string; prefixlen: number }[];
      }[]
    )[0]?.addr_info[0];
    await p3.exec('ip', ['addr', 'del', `${addr?.local}/${addr?.prefixlen}`, 'dev', 'eth0']);
    const bad = await tool(h1, ['check', checkNet, `/run/netns/${p3.name}`], { CAP_ARGS: SHAPED }, true);
    expect(bad.code).not.toBe(0);
    expect(`${bad.stdout}${bad.stderr}`).toMatch(/lacks address/);
    await tool(h1, ['del', checkNet, `/run/netns/${p3.name}`], { CAP_ARGS: SHAPED });
    await topo.removeNamespace(p3);
  });

  it('DEL frees the address and removes the port mapping; DEL again, with no netns, or of an unknown container succeeds', async () => {
    const a1 = result.p1?.ips[0]?.address.split('/')[0] as string;
    // The runtime gives DEL the same capability arguments as ADD (portmap removes what they name).
    await tool(h1, ['del', net, `/run/netns/${p1.name}`], { CAP_ARGS: PORTS });
    expect((await ipam(h1)).allocations.map((a) => a.addr)).not.toContain(a1);
    expect((await p1.exec('ip', ['-br', 'link'])).stdout).not.toMatch(/eth0/);
    expect((await h1.exec('iptables-save', ['-t', 'nat'])).stdout).not.toMatch(/--dport 18080/);
    // Twice (cnitool has dropped its cached result: the plugin gets no prevResult).
    expect((await tool(h1, ['del', net, `/run/netns/${p1.name}`])).code).toBe(0);
    const vars = { CNI_COMMAND: 'DEL', CNI_IFNAME: 'eth0' };
    for (const [id, netns] of [
      ['never-added', `/run/netns/${p1.name}`],
      ['never-added', ''],
      ['gone-netns', '/run/netns/does-not-exist'],
    ]) {
      const r = await plugin(h1, single('1.0.0'), {
        ...vars,
        CNI_CONTAINERID: id as string,
        CNI_NETNS: netns as string,
      });
      expect([r.code, r.stdout]).toEqual([0, '']);
    }
  });

  it('GC frees the addresses of attachments not in cni.dev/valid-attachments, and keeps the rest', async () => {
    const p4 = await topo.addNamespace('pd');
    const add = await plugin(h2, single('1.1.0'), {
      CNI_COMMAND: 'ADD',
      CNI_CONTAINERID: 'stale-pod',
      CNI_NETNS: `/run/netns/${p4.name}`,
      CNI_IFNAME: 'eth0',
    });
    expect(add.code).toBe(0);
    const stale = (JSON.parse(add.stdout) as CniResultJson).ips[0]?.address.split('/')[0];
    const keep = result.p2?.ips[0]?.address.split('/')[0];
    const kept = (await ipam(h2)).allocations.find((a) => a.addr === keep);
    const keepId = kept?.owner.split(':')[1] as string;
    const gc = await plugin(
      h2,
      { ...single('1.1.0'), 'cni.dev/valid-attachments': [{ containerID: keepId, ifname: 'eth0' }] },
      { CNI_COMMAND: 'GC' },
    );
    expect([gc.code, gc.stdout]).toEqual([0, '']);
    const after = (await ipam(h2)).allocations.map((a) => a.addr);
    expect(after).toContain(keep);
    expect(after).not.toContain(stale);
    await topo.removeNamespace(p4);
  });

  it('ADD and DEL are fast (median of 20, printed)', async () => {
    const p5 = await topo.addNamespace('pe');
    const vars = { CNI_CONTAINERID: 'timing', CNI_NETNS: `/run/netns/${p5.name}`, CNI_IFNAME: 'eth0' };
    const adds: number[] = [];
    const dels: number[] = [];
    for (let i = 0; i < 20; i++) {
      let t = performance.now();
      const a = await plugin(h1, single('1.0.0'), { ...vars, CNI_COMMAND: 'ADD' });
      adds.push(performance.now() - t);
      expect(a.code).toBe(0);
      t = performance.now();
      const d = await plugin(h1, single('1.0.0'), { ...vars, CNI_COMMAND: 'DEL' });
      dels.push(performance.now() - t);
      expect(d.code).toBe(0);
    }
    // The floor: the same exec path running node with nothing to do.
    const floor: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      await h1.exec(process.execPath, ['-e', '0']);
      floor.push(performance.now() - t);
    }
    console.log(
      `cni timing (ms, median of 20, incl. ip netns exec + node start ${median(floor).toFixed(0)}): ADD ${median(adds).toFixed(0)}, DEL ${median(dels).toFixed(0)}`,
    );
    await topo.removeNamespace(p5);
  });

  it('STATUS answers ready; with the router stopped STATUS is 50 and ADD is 11 (try again later)', async () => {
    expect((await plugin(h1, single('1.1.0'), { CNI_COMMAND: 'STATUS' })).code).toBe(0);
    await weft(h1, ['stop']);
    await waitUntil(async () => (await plugin(h1, single('1.1.0'), { CNI_COMMAND: 'STATUS' })).code === 1, {
      timeoutMs: 10_000,
      what: 'the router on h1 to stop',
    });
    const st = JSON.parse((await plugin(h1, single('1.1.0'), { CNI_COMMAND: 'STATUS' })).stdout);
    expect(st).toMatchObject({ cniVersion: '1.1.0', code: 50 });
    const add = await plugin(h1, single('1.0.0'), {
      CNI_COMMAND: 'ADD',
      CNI_CONTAINERID: 'router-down',
      CNI_NETNS: `/run/netns/${p1.name}`,
      CNI_IFNAME: 'eth0',
    });
    expect(add.code).toBe(1);
    expect(JSON.parse(add.stdout)).toMatchObject({ cniVersion: '1.0.0', code: 11 });
  });
});
