import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, Lab, type Netns, requireRoot, waitUntil } from '../lab/netns.js';
import { cutUnderlay, launch, removeStateDirs, stateDir, status, waitPeers, weft } from './weft.js';

const reason = requireRoot();

interface IpamJson {
  range: string;
  state: string;
  owned: number;
  used: number;
  size: number;
  unreachableOwned: number;
  peers: { name: string; owned: number; reachable: boolean }[];
  allocations: { addr: string; owner: string }[];
}

async function ipam(h: Host): Promise<IpamJson> {
  return JSON.parse((await weft(h, ['status', 'ipam', '--json'])).stdout) as IpamJson;
}

async function reach(from: Netns, to: string, what: string): Promise<void> {
  await waitUntil(async () => (await from.ping(to, { count: 1, timeoutMs: 1_000 })).received === 1, {
    timeoutMs: 20_000,
    what,
  });
}

/**
 * IPAM with no central store on three hosts with two containers each: distinct addresses from
 * each host's own share, all pairs reach each other, addresses survive `kill -9`, a partition
 * never produces a duplicate, a dead host's space is taken over with rmpeer, and reset hands a
 * leaving host's space to a live one.
 */
describe.skipIf(reason)('IPAM across hosts', () => {
  let topo: Lab;
  let hosts: [Host, Host, Host];
  const containers: { ns: Netns; host: Host; addr: string }[] = [];

  beforeAll(async () => {
    topo = await Lab.create({ hosts: 3 });
    hosts = topo.hosts as [Host, Host, Host];
    const [h1, h2, h3] = hosts;
    await launch(h1, [], ['--nickname', 'h1', '--no-dns']);
    await launch(h2, [h1.underlayIp], ['--nickname', 'h2', '--no-dns']);
    await launch(h3, [h1.underlayIp], ['--nickname', 'h3', '--no-dns']);
    for (const h of hosts) await waitPeers(h, 2, 30_000);
  });

  afterAll(async () => {
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
  });

  const established = async (h: Host) =>
    (await status(h)).peers.filter((p) => p.state === 'established').map((p) => p.nickname);

  it('gives 3 hosts × 2 containers distinct addresses, and all pairs reach each other', async () => {
    for (const [i, h] of hosts.entries()) {
      for (const k of [1, 2]) {
        const ns = await topo.addNamespace(`c${i + 1}${k}`);
        containers.push({ ns, host: h, addr: (await weft(h, ['attach', ns.name])).stdout.trim() });
      }
    }
    expect(new Set(containers.map((c) => c.addr)).size).toBe(6);
    const st = await ipam(hosts[0]);
    expect(st.peers).toHaveLength(3);
    expect(st.peers.reduce((n, p) => n + p.owned, 0)).toBe(st.size);
    for (const h of hosts) expect((await ipam(h)).used).toBe(2);
    for (const a of containers) {
      for (const b of containers) {
        if (a !== b) await reach(a.ns, b.addr, `${a.ns.name} to reach ${b.ns.name} at ${b.addr}`);
      }
    }
    const [c11, , , , c31] = containers as [(typeof containers)[0], unknown, unknown, unknown, (typeof containers)[0]];
    const server = await c31.ns.iperf3Server(5203);
    const r = await c11.ns.iperf3Client(c31.addr, { seconds: 2, port: 5203 });
    expect(r.bitsPerSecond).toBeGreaterThan(1e6);
    await server.stop();
  }, 120_000);

  it('keeps addresses and connectivity when a router is killed with -9 and relaunched', async () => {
    const h2 = hosts[1];
    const before = (await ipam(h2)).allocations;
    const pids = execFileSync('ip', ['netns', 'pids', h2.name], { encoding: 'utf8' }).split('\n').filter(Boolean);
    expect(pids.length).toBeGreaterThan(0);
    for (const pid of pids) process.kill(Number(pid), 'SIGKILL');
    await launch(h2, [hosts[0].underlayIp], ['--nickname', 'h2', '--no-dns']);
    expect((await ipam(h2)).allocations).toEqual(before);
    const mine = containers.filter((c) => c.host === h2);
    expect((await weft(h2, ['ps'])).stdout).toMatch(mine[0]!.ns.name);
    await reach(containers[0]!.ns, mine[0]!.addr, 'a container on h1 to reach one on the relaunched h2');
    await reach(mine[1]!.ns, containers[5]!.addr, 'a container on h2 to reach one on h3');
  }, 90_000);

  it('never hands out one address twice across a partition and its heal', async () => {
    const [h1, h2, h3] = hosts;
    const heal = await cutUnderlay(h3, [h1.underlayIp, h2.underlayIp]);
    const added: { ns: Netns; host: Host; addr: string }[] = [];
    try {
      await waitUntil(async () => (await established(h3)).length === 0, {
        timeoutMs: 30_000,
        what: 'h3 to lose both peers',
      });
      for (const [h, tag] of [
        [h1, 'p1'],
        [h3, 'p3'],
        [h1, 'q1'],
        [h3, 'q3'],
      ] as const) {
        const ns = await topo.addNamespace(tag);
        added.push({ ns, host: h, addr: (await weft(h, ['attach', ns.name])).stdout.trim() });
      }
    } finally {
      await heal();
    }
    for (const h of hosts) await waitPeers(h, 2, 40_000);
    const all = (await Promise.all(hosts.map(ipam))).flatMap((s) => s.allocations.map((a) => a.addr));
    expect(all).toHaveLength(10);
    expect(new Set(all).size).toBe(10);
    await reach(added[0]!.ns, added[1]!.addr, 'containers attached on both sides of the partition to meet');
    await reach(added[3]!.ns, added[2]!.addr, 'and the other way');
    containers.push(...added);
  }, 120_000);

  it('takes over the space of a host gone for good with rmpeer, and refuses a live one', async () => {
    const [h1, h2, h3] = hosts;
    const h2Name = (await status(h2)).name;
    const live = await weft(h1, ['rmpeer', h2Name], { allowFail: true });
    expect(live.code).not.toBe(0);
    expect(live.stderr).toMatch(/is reachable/);
    const h3Status = await ipam(h3);
    const h3Name = (await status(h3)).name;
    const gone = h3Status.allocations[0]!.addr;
    for (const c of containers.filter((x) => x.host === h3)) await weft(h3, ['detach', c.ns.name]);
    await weft(h3, ['stop']);
    await waitUntil(async () => (await ipam(h1)).unreachableOwned === h3Status.owned, {
      timeoutMs: 20_000,
      what: 'h1 to see h3’s space as unreachable',
    });
    expect((await weft(h1, ['status', 'ipam'])).stdout).toMatch(/unreachable!/);
    const ownedBefore = (await ipam(h1)).owned;
    const out = (await weft(h1, ['rmpeer', h3Name])).stdout.trim();
    expect(out).toBe(`${h3Status.owned} IPs taken over from ${h3Name}`);
    expect((await ipam(h1)).owned).toBe(ownedBefore + h3Status.owned);
    await waitUntil(async () => (await ipam(h2)).peers.every((p) => p.name !== h3Name), {
      timeoutMs: 10_000,
      what: 'h2 to learn the takeover',
    });
    // The dead host's addresses are handed out again, here.
    const ns = await topo.addNamespace('r1');
    expect((await weft(h1, ['attach', `${gone}/12`, ns.name])).stdout.trim()).toBe(gone);
    await reach(containers.find((c) => c.host === h2)!.ns, gone, 'h2’s container to reach the reused address');
  }, 90_000);

  it('reset hands a leaving host’s space to a live peer and removes its state', async () => {
    const [h1, h2] = hosts;
    const h1Name = (await status(h1)).name;
    const owned = (await ipam(h2)).owned;
    const out = (await weft(h2, ['reset'])).stdout.trim();
    expect(out).toBe(`${owned} IPs handed to ${h1Name}`);
    await waitUntil(async () => (await ipam(h1)).owned === (await ipam(h1)).size, {
      timeoutMs: 10_000,
      what: 'h1 to own the whole range',
    });
    const gone = await weft(h2, ['status'], { allowFail: true });
    expect(gone.code).toBe(3);
    expect(existsSync(path.join(stateDir(h2), 'ipam.json'))).toBe(false);
    expect(existsSync(path.join(stateDir(h2), 'state.json'))).toBe(false);
    expect((await h2.exec('ip', ['-br', 'link'])).stdout).not.toMatch(/^vw/m);
  }, 60_000);
});

describe.skipIf(reason)('IPAM range and host routes', () => {
  let topo: Lab;
  afterAll(async () => {
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
  });

  it('refuses a default range that overlaps a host route, and only warns for a range given explicitly', async () => {
    topo = await Lab.create({ hosts: 1 });
    const h = topo.hosts[0] as Host;
    await h.exec('ip', ['route', 'add', '10.33.0.0/16', 'dev', h.underlayDev]);
    const r = await weft(h, ['launch', '--device', h.ifname('t'), '--state-dir', stateDir(h)], { allowFail: true });
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim()).toMatch(
      /the address range 10\.32\.0\.0\/12 overlaps the host route 10\.33\.0\.0\/16 .*choose another range with --ipalloc-range/,
    );
    expect((await h.exec('ip', ['-br', 'link'])).stdout).not.toMatch(h.ifname('t'));
    await launch(h, [], ['--ipalloc-range', '10.32.0.0/12', '--no-dns']);
    expect((await ipam(h)).range).toBe('10.32.0.0/12');
    await weft(h, ['stop']);
  }, 60_000);
});
