import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, Lab, requireRoot, waitUntil } from '../lab/netns.js';
import { cutUnderlay, expose, launch, removeStateDirs, status } from './weft.js';

const reason = requireRoot();
const HOSTS = 5;
/** addrs holds the address IPAM gave each host, by host index. */
const addrs = new Map<number, string>();
const ip = (h: Host): string => {
  const a = addrs.get(h.index);
  if (a === undefined) throw new Error(`${h.name} has no overlay address yet`);
  return a;
};

/**
 * reach waits until `from` gets an answer from `to`'s address: a third host may take a moment to
 * hear, through gossip, the ring that routes it.
 */
async function reach(from: Host, to: Host, what: string): Promise<void> {
  await waitUntil(async () => (await from.ping(ip(to), { count: 1, timeoutMs: 1_000 })).received === 1, {
    timeoutMs: 20_000,
    what,
  });
}

/** established lists the names of the peers `h` has an established data path with. */
async function establishedPeers(h: Host): Promise<string[]> {
  return (await status(h)).peers.filter((p) => p.state === 'established').map((p) => p.nickname);
}

/**
 * Five hosts, each launched knowing only the one before it (a chain): discovery must turn the
 * chain into a full mesh; a cut link must be routed around through a third host; a killed
 * router must be noticed and must rejoin when relaunched.
 */
describe.skipIf(reason)('a mesh of five hosts launched as a chain', () => {
  let topo: Lab;
  let hosts: Host[];

  beforeAll(async () => {
    topo = await Lab.create({ hosts: HOSTS });
    hosts = topo.hosts;
    for (const [i, h] of hosts.entries()) {
      const prev = hosts[i - 1];
      await launch(h, prev === undefined ? [] : [prev.underlayIp], ['--nickname', `h${h.index}`]);
      // h1 exposes first and seeds the IPAM ring; every later host asks a peer for space.
      addrs.set(h.index, await expose(h));
    }
    expect(new Set(addrs.values()).size).toBe(HOSTS);
  });

  afterAll(async () => {
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
  });

  it('discovers every peer and forms a full mesh', async () => {
    for (const h of hosts) {
      await waitUntil(async () => (await establishedPeers(h)).length === HOSTS - 1, {
        timeoutMs: 30_000,
        what: `${h.name} to connect to all ${HOSTS - 1} peers`,
      });
    }
    const s = await status(hosts[0] as Host);
    expect(s.connections.filter((c) => c.state === 'established')).toHaveLength(HOSTS - 1);
    const h1 = hosts[0] as Host;
    for (const h of hosts.slice(1)) {
      await reach(h1, h, `h1 to reach ${h.name} at ${ip(h)}`);
      expect((await h1.ping(ip(h), { count: 2, intervalS: 0.1 })).received).toBe(2);
    }
    // Every host owns a share of the range, and each host's address routes to it from the last host.
    const ring = (s as unknown as { ipam: { size: number; peers: { owned: number }[] } }).ipam;
    expect(ring.peers).toHaveLength(HOSTS);
    expect(ring.peers.reduce((n, p) => n + p.owned, 0)).toBe(ring.size);
    const h5 = hosts[HOSTS - 1] as Host;
    for (const h of hosts.slice(0, -1)) await reach(h5, h, `${h5.name} to reach ${h.name} at ${ip(h)}`);
  });

  it('relays through a third host when two hosts cannot reach each other', async () => {
    const [h1, h2] = hosts as [Host, Host];
    const heal = await cutUnderlay(h1, h2.underlayIp, 'weftcut');
    try {
      await waitUntil(async () => !(await establishedPeers(h1)).includes('h2'), {
        timeoutMs: 20_000,
        what: 'h1 to give up its direct path to h2',
      });
      const before = (await Promise.all(hosts.slice(2).map(status))).reduce(
        (n, s) => n + (s.counters as { relayed?: number }).relayed!,
        0,
      );
      await waitUntil(async () => (await h1.ping(ip(h2), { count: 1, timeoutMs: 2_000 })).received === 1, {
        timeoutMs: 20_000,
        what: 'h1 to reach h2 through a relay',
      });
      const p = await h1.ping(ip(h2), { count: 5, intervalS: 0.1 });
      expect(p.received).toBe(5);
      const after = (await Promise.all(hosts.slice(2).map(status))).reduce(
        (n, s) => n + (s.counters as { relayed?: number }).relayed!,
        0,
      );
      expect(after).toBeGreaterThan(before);
    } finally {
      await heal();
    }
  });

  it('notices a killed router, and takes it back when it is relaunched', async () => {
    const h5 = hosts[HOSTS - 1] as Host;
    const h1 = hosts[0] as Host;
    const before = await status(h5);
    const pids = execFileSync('ip', ['netns', 'pids', h5.name], { encoding: 'utf8' }).split('\n').filter(Boolean);
    expect(pids.length).toBeGreaterThan(0);
    const t0 = Date.now();
    for (const pid of pids) process.kill(Number(pid), 'SIGKILL');
    await waitUntil(async () => !(await establishedPeers(h1)).includes('h5'), {
      timeoutMs: 15_000,
      what: 'h1 to notice h5 is gone',
    });
    const noticedMs = Date.now() - t0;
    console.info(`e2e mesh: h1 noticed the killed router after ${noticedMs} ms`);
    const name = await launch(h5, [], ['--nickname', 'h5']);
    expect(name).toBe(before.name);
    expect((await status(h5)).exposed).toEqual([`${ip(h5)}/12`]);
    await waitUntil(async () => (await establishedPeers(h1)).includes('h5'), {
      timeoutMs: 30_000,
      what: 'h5 to rejoin',
    });
    await reach(h1, h5, 'h1 to reach the relaunched h5');
    expect((await h1.ping(ip(h5), { count: 3, intervalS: 0.1 })).received).toBe(3);
  });
});
