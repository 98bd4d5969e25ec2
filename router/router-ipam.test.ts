import { afterEach, describe, expect, it } from 'vitest';
import { formatIPv4, type IPv4, type PeerName, parseCidr } from '../common/types.js';
import { seedIdOf } from './ipam/ring.js';
import { ipv4Packet, MemoryMesh, type MemoryRouter } from './testing/memory-router.js';

const RANGE = parseCidr('10.32.0.0/12');

/** ipamMesh starts `n` routers sharing IPAM in 10.32.0.0/12: the first launched alone, the rest with it as peer. */
async function ipamMesh(mesh: MemoryMesh, n: number): Promise<MemoryRouter[]> {
  const first = await mesh.add({ ipallocRange: RANGE, ipam: { init: { mode: 'auto', alone: true } } });
  const out = [first];
  for (let i = 1; i < n; i++) {
    const r = await mesh.add({
      ipallocRange: RANGE,
      ipam: { init: { mode: 'auto', alone: false }, allocateTimeoutMs: 5_000 },
    });
    r.router.connect([`127.0.0.1:${first.router.controlPort}`]);
    out.push(r);
  }
  await mesh.until(
    () => out.every((r) => r.router.status().peers.filter((p) => p.state === 'established').length === n - 1),
    'a full mesh',
    10_000,
  );
  return out;
}

describe('Router with IPAM', () => {
  let mesh: MemoryMesh;
  afterEach(async () => {
    await mesh?.stop();
  });

  it('gives every host distinct addresses from its own share and routes them by ring ownership', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const [a, b, c] = (await ipamMesh(mesh, 3)) as [MemoryRouter, MemoryRouter, MemoryRouter];
    // Nobody has a ring until the lone-launched router needs an address.
    expect(b.router.ipam.seeded).toBe(false);
    const addrs: IPv4[] = [];
    for (const r of [a, b, c, a, b, c]) addrs.push(await r.router.allocate(`ctr-${addrs.length}`));
    expect(new Set(addrs).size).toBe(6);
    for (const [i, r] of [a, b, c, a, b, c].entries()) expect(r.router.ipam.ownerOf(addrs[i]!)).toBe(r.router.name);
    // Same owner, same address.
    expect(await b.router.allocate('ctr-1')).toBe(addrs[1]);
    for (const [i, r] of [a, b, c].entries()) r.router.claim(`ctr-${i}`, [{ addr: addrs[i]!, prefix: 12 }]);
    // Addresses in one's own share are not announced as /32s: peers route them by the ring.
    await mesh.until(() => a.router.status().ipam.peers.length === 3, 'the ring at a');
    expect(a.router.status().peers.every((p) => p.cidrs.length === 0)).toBe(true);
    await mesh.until(
      () => [a, b, c].every((r) => r.router.status().ipam.peers.every((p) => p.reachable)),
      'every owner reachable',
    );
    a.tun.inject(ipv4Packet(90, addrs[0]!, addrs[2]!));
    await mesh.until(() => c.tun.written.length === 1, `a packet for ${formatIPv4(addrs[2]!)} at c`);
    c.tun.inject(ipv4Packet(90, addrs[2]!, addrs[1]!));
    await mesh.until(() => b.tun.written.length === 1, 'a packet for b’s container at b');
    const st = a.router.status().ipam;
    expect(st.state).toBe('ready');
    expect(st.peers.reduce((n, p) => n + p.owned, 0)).toBe(2 ** 20);
  }, 20_000);

  it('refuses a given address in another peer’s space, and one held by another container', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const [a, b] = (await ipamMesh(mesh, 2)) as [MemoryRouter, MemoryRouter];
    const x = await a.router.allocate('x');
    await b.router.allocate('y');
    expect(() => b.router.reserve('z', [{ addr: x, prefix: 12 }])).toThrow(/address space of peer 02:00:00:00:00:01/);
    expect(() => a.router.reserve('z', [{ addr: x, prefix: 12 }])).toThrow(/in use by x/);
    a.router.reserve('z', [{ addr: (x + 5) as IPv4, prefix: 12 }]);
    expect(a.router.ipam.lookup('z')).toEqual([x + 5]);
    a.router.release('z');
    expect(a.router.ipam.lookup('z')).toEqual([]);
  }, 20_000);

  it('refuses rmpeer of a reachable peer, and takes over the space of a stopped one', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const [a, b] = (await ipamMesh(mesh, 2)) as [MemoryRouter, MemoryRouter];
    await a.router.allocate('x');
    await b.router.allocate('y');
    const bName = b.router.name;
    expect(() => a.router.rmpeer(bName)).toThrow(/is reachable/);
    expect(() => a.router.rmpeer('r2')).toThrow(/is reachable/);
    const bOwned = a.router.status().ipam.peers.find((p) => p.name === bName)?.owned ?? 0;
    expect(bOwned).toBeGreaterThan(0);
    await b.router.stop();
    await mesh.until(() => a.router.status().peers.length === 0, 'a to forget b');
    expect(a.router.status().ipam.unreachableOwned).toBe(bOwned);
    expect(a.router.rmpeer(bName)).toEqual({ peer: bName as PeerName, addresses: bOwned });
    expect(a.router.ipam.ownerOf(a.router.ipam.spans().at(-1)!.start)).toBe(a.router.name);
    expect(a.router.status().ipam.owned).toBe(2 ** 20);
    expect(() => a.router.rmpeer(bName)).toThrow(/no peer/);
  }, 20_000);

  it('hands its space to a live peer when it leaves', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const [a, b] = (await ipamMesh(mesh, 2)) as [MemoryRouter, MemoryRouter];
    await a.router.allocate('x');
    await b.router.allocate('y');
    const left = b.router.leave();
    expect(left.heir).toBe(a.router.name);
    expect(left.addresses).toBeGreaterThan(0);
    await mesh.until(() => a.router.status().ipam.owned === 2 ** 20, 'a to own the whole range');
    expect(b.router.ipam.lookup('y')).toEqual([]);
  }, 20_000);

  it('never merges rings seeded differently, and says so', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const a = await mesh.add({ ipallocRange: RANGE, ipam: { init: { mode: 'auto', alone: true } } });
    const b = await mesh.add({ ipallocRange: RANGE, ipam: { init: { mode: 'auto', alone: true } } });
    await a.router.allocate('x');
    await b.router.allocate('y');
    b.router.connect([`127.0.0.1:${a.router.controlPort}`]);
    await mesh.until(() => a.router.status().ipam.conflicts.length > 0, 'the conflict reported at a');
    expect(a.router.status().ipam.conflicts[0]).toMatch(/seeded with a different list of peers/);
    expect(a.router.status().ipam.owned).toBe(2 ** 20);
    expect(b.router.status().ipam.owned).toBe(2 ** 20);
  }, 20_000);

  it('fails an allocation that cannot be served with a message that says why', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const r = await mesh.add({
      ipallocRange: RANGE,
      ipam: { init: { mode: 'auto', alone: false }, allocateTimeoutMs: 200 },
    });
    await expect(r.router.allocate('x')).rejects.toThrow(/no reachable router may seed the address ring/);
    expect(r.router.status().ipam.state).toBe('awaiting-seed');
    await expect(r.router.allocate('weft:expose')).rejects.toThrow(/reserved/);
  });
});

/** fullMesh waits until every router has an established connection to each other one. */
async function fullMesh(mesh: MemoryMesh, rs: readonly MemoryRouter[]): Promise<void> {
  await mesh.until(
    () => rs.every((r) => r.router.status().peers.filter((p) => p.state === 'established').length === rs.length - 1),
    'a full mesh',
    10_000,
  );
}

/** expectOneRing checks every router holds the same seeded ring with no conflict, and the addresses are distinct. */
async function expectOneRing(mesh: MemoryMesh, rs: readonly MemoryRouter[], addrs: readonly IPv4[]): Promise<void> {
  expect(new Set(addrs).size).toBe(addrs.length);
  const same = () => new Set(rs.map((r) => JSON.stringify(r.router.ipam.spans()))).size === 1;
  await mesh.until(same, 'one ring everywhere');
  const spans = JSON.stringify(rs[0]!.router.ipam.spans());
  for (const r of rs) {
    const st = r.router.status().ipam;
    expect(st.conflicts, r.router.nickname).toEqual([]);
    expect(st.seeded).toBe(true);
    expect(JSON.stringify(r.router.ipam.spans())).toBe(spans);
  }
  for (const a of addrs) expect(rs.filter((r) => r.router.ipam.ownerOf(a) !== undefined).length).toBe(rs.length);
}

describe('Router with IPAM: who seeds', () => {
  let mesh: MemoryMesh;
  afterEach(async () => {
    await mesh?.stop();
  });
  const alone = (timeout = 5_000) => ({
    ipallocRange: RANGE,
    ipam: { init: { mode: 'auto', alone: true } as const, allocateTimeoutMs: timeout },
  });
  const withPeers = (timeout = 5_000) => ({
    ipallocRange: RANGE,
    ipam: { init: { mode: 'auto', alone: false } as const, allocateTimeoutMs: timeout },
  });

  it('a router launched with peers that allocates first makes the lone-launched one seed at once', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const a = await mesh.add(alone());
    const b = await mesh.add(withPeers(20_000));
    b.router.connect([`127.0.0.1:${a.router.controlPort}`]);
    await fullMesh(mesh, [a, b]);
    const t0 = mesh.clock.now();
    const y = await b.router.allocate('y');
    expect(mesh.clock.now() - t0).toBeLessThan(3_000);
    const x = await a.router.allocate('x');
    await expectOneRing(mesh, [a, b], [x, y]);
    expect(b.router.ipam.ownerOf(y)).toBe(b.router.name);
  }, 20_000);

  it('an allocation waiting before the seed-capable router is reachable completes once it is', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const a = await mesh.add(alone());
    const b = await mesh.add(withPeers(20_000));
    const pending = b.router.allocate('y');
    expect(b.router.status().ipam.message).toMatch(/no reachable router may seed/);
    await mesh.sleep(300);
    b.router.connect([`127.0.0.1:${a.router.controlPort}`]);
    const y = await pending;
    const x = await a.router.allocate('x');
    await expectOneRing(mesh, [a, b], [x, y]);
  }, 20_000);

  // Two seed-capable routers (1 and 3) and one launched with peers (2), all connected: whoever
  // allocates first, in any order or all at once, one ring is made (by the smallest name, 1).
  const orders: number[][] = [
    [0, 1, 2],
    [0, 2, 1],
    [1, 0, 2],
    [1, 2, 0],
    [2, 0, 1],
    [2, 1, 0],
  ];
  for (const order of orders) {
    it(`makes one ring when routers ${order.map((i) => i + 1).join(', ')} allocate in that order`, async () => {
      mesh = new MemoryMesh({ virtual: true });
      const rs = [await mesh.add(alone()), await mesh.add(withPeers()), await mesh.add(alone())];
      rs[1]!.router.connect([`127.0.0.1:${rs[0]!.router.controlPort}`]);
      rs[2]!.router.connect([`127.0.0.1:${rs[1]!.router.controlPort}`]);
      await fullMesh(mesh, rs);
      const addrs: IPv4[] = [];
      for (const i of order) addrs.push(await rs[i]!.router.allocate(`c${i}`));
      await expectOneRing(mesh, rs, addrs);
      for (const r of rs) expect(r.router.ipam.seedId).toBe(seedIdOf([rs[0]!.router.name]));
    }, 20_000);
  }

  it('makes one ring when all allocate at once, the larger seed-capable router too', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const rs = [await mesh.add(alone()), await mesh.add(withPeers()), await mesh.add(alone())];
    rs[1]!.router.connect([`127.0.0.1:${rs[0]!.router.controlPort}`]);
    rs[2]!.router.connect([`127.0.0.1:${rs[1]!.router.controlPort}`]);
    await fullMesh(mesh, rs);
    const addrs = await Promise.all([2, 1, 0].flatMap((i) => [0, 1].map((k) => rs[i]!.router.allocate(`c${i}-${k}`))));
    await expectOneRing(mesh, rs, addrs);
    for (const r of rs) expect(r.router.ipam.seedId).toBe(seedIdOf([rs[0]!.router.name]));
  }, 20_000);
});

describe('Router with IPAM: a lost state', () => {
  let mesh: MemoryMesh;
  afterEach(async () => {
    await mesh?.stop();
  });

  it('rejoins the cluster ring and takes back its containers’ addresses, even launched with no peers', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const a = await mesh.add({ ipallocRange: RANGE, ipam: { init: { mode: 'auto', alone: true } } });
    const b = await mesh.add({ ipallocRange: RANGE, ipam: { init: { mode: 'auto', alone: false } } });
    b.router.connect([`127.0.0.1:${a.router.controlPort}`]);
    await fullMesh(mesh, [a, b]);
    await a.router.allocate('x');
    const used = [await b.router.allocate('web'), await b.router.allocate('db')];
    const name = b.router.name;
    const uid = b.router.uid;
    await b.router.stop();
    mesh.routers.splice(mesh.routers.indexOf(b), 1);
    // b comes back with no ipam state, launched with no peers, but it had targets.
    const b2 = await mesh.add({
      name,
      uid: (uid + 1n) as typeof uid,
      incarnation: Math.floor(mesh.clock.now()) + 1,
      ipallocRange: RANGE,
      ipam: { init: { mode: 'auto', alone: true }, expectCluster: true },
    });
    const reclaimed = b2.router.ipam.reclaim([
      { owner: 'web', addrs: [used[0]!] },
      { owner: 'db', addrs: [used[1]!] },
    ]);
    // It neither seeds nor hands out anything before it hears the cluster.
    const early = b2.router.allocate('new');
    expect(b2.router.ipam.seeded).toBe(false);
    expect(b2.router.status().ipam.recovering).toBe(true);
    b2.router.connect([`127.0.0.1:${a.router.controlPort}`]);
    await reclaimed;
    expect(b2.router.ipam.lookup('web')).toEqual([used[0]]);
    expect(b2.router.ipam.lookup('db')).toEqual([used[1]]);
    const fresh = await early;
    expect(used).not.toContain(fresh);
    await expectOneRing(mesh, [a, b2], [...used, fresh, await a.router.allocate('x2')]);
  }, 20_000);

  it('refuses to take back addresses the cluster gave away (an rmpeer of this peer)', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const a = await mesh.add({ ipallocRange: RANGE, ipam: { init: { mode: 'auto', alone: true } } });
    const b = await mesh.add({ ipallocRange: RANGE, ipam: { init: { mode: 'auto', alone: false } } });
    b.router.connect([`127.0.0.1:${a.router.controlPort}`]);
    await fullMesh(mesh, [a, b]);
    const web = await b.router.allocate('web');
    const name = b.router.name;
    const uid = b.router.uid;
    await b.router.stop();
    mesh.routers.splice(mesh.routers.indexOf(b), 1);
    await mesh.until(
      () =>
        a.router.status().peers.length === 0 || !a.router.status().ipam.peers.find((p) => p.name === name)?.reachable,
      'b unreachable at a',
    );
    a.router.rmpeer(name);
    const b2 = await mesh.add({
      name,
      uid: (uid + 1n) as typeof uid,
      incarnation: Math.floor(mesh.clock.now()) + 1,
      ipallocRange: RANGE,
      ipam: { init: { mode: 'auto', alone: false }, expectCluster: true },
    });
    const reclaimed = b2.router.ipam.reclaim([{ owner: 'web', addrs: [web] }]).catch((e: unknown) => e);
    b2.router.connect([`127.0.0.1:${a.router.controlPort}`]);
    const err = await reclaimed;
    expect((err as Error).message).toMatch(/refusing to start/);
    expect(b2.router.ipam.lookup('web')).toEqual([]);
  }, 20_000);
});
