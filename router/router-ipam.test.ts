import { afterEach, describe, expect, it } from 'vitest';
import { formatIPv4, type IPv4, type PeerName, parseCidr } from '../common/types.js';
import { ipv4Packet, MemoryMesh, type MemoryRouter, until } from './testing/memory-router.js';

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
  await until(
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
    mesh = new MemoryMesh();
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
    await until(() => a.router.status().ipam.peers.length === 3, 'the ring at a');
    expect(a.router.status().peers.every((p) => p.cidrs.length === 0)).toBe(true);
    await until(
      () => [a, b, c].every((r) => r.router.status().ipam.peers.every((p) => p.reachable)),
      'every owner reachable',
    );
    a.tun.inject(ipv4Packet(90, addrs[0]!, addrs[2]!));
    await until(() => c.tun.written.length === 1, `a packet for ${formatIPv4(addrs[2]!)} at c`);
    c.tun.inject(ipv4Packet(90, addrs[2]!, addrs[1]!));
    await until(() => b.tun.written.length === 1, 'a packet for b’s container at b');
    const st = a.router.status().ipam;
    expect(st.state).toBe('ready');
    expect(st.peers.reduce((n, p) => n + p.owned, 0)).toBe(2 ** 20);
  }, 20_000);

  it('refuses a given address in another peer’s space, and one held by another container', async () => {
    mesh = new MemoryMesh();
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
    mesh = new MemoryMesh();
    const [a, b] = (await ipamMesh(mesh, 2)) as [MemoryRouter, MemoryRouter];
    await a.router.allocate('x');
    await b.router.allocate('y');
    const bName = b.router.name;
    expect(() => a.router.rmpeer(bName)).toThrow(/is reachable/);
    expect(() => a.router.rmpeer('r2')).toThrow(/is reachable/);
    const bOwned = a.router.status().ipam.peers.find((p) => p.name === bName)?.owned ?? 0;
    expect(bOwned).toBeGreaterThan(0);
    await b.router.stop();
    await until(() => a.router.status().peers.length === 0, 'a to forget b');
    expect(a.router.status().ipam.unreachableOwned).toBe(bOwned);
    expect(a.router.rmpeer(bName)).toEqual({ peer: bName as PeerName, addresses: bOwned });
    expect(a.router.ipam.ownerOf(a.router.ipam.spans().at(-1)!.start)).toBe(a.router.name);
    expect(a.router.status().ipam.owned).toBe(2 ** 20);
    expect(() => a.router.rmpeer(bName)).toThrow(/no peer/);
  }, 20_000);

  it('hands its space to a live peer when it leaves', async () => {
    mesh = new MemoryMesh();
    const [a, b] = (await ipamMesh(mesh, 2)) as [MemoryRouter, MemoryRouter];
    await a.router.allocate('x');
    await b.router.allocate('y');
    const left = b.router.leave();
    expect(left.heir).toBe(a.router.name);
    expect(left.addresses).toBeGreaterThan(0);
    await until(() => a.router.status().ipam.owned === 2 ** 20, 'a to own the whole range');
    expect(b.router.ipam.lookup('y')).toEqual([]);
  }, 20_000);

  it('never merges rings seeded differently, and says so', async () => {
    mesh = new MemoryMesh();
    const a = await mesh.add({ ipallocRange: RANGE, ipam: { init: { mode: 'auto', alone: true } } });
    const b = await mesh.add({ ipallocRange: RANGE, ipam: { init: { mode: 'auto', alone: true } } });
    await a.router.allocate('x');
    await b.router.allocate('y');
    b.router.connect([`127.0.0.1:${a.router.controlPort}`]);
    await until(() => a.router.status().ipam.conflicts.length > 0, 'the conflict reported at a');
    expect(a.router.status().ipam.conflicts[0]).toMatch(/seeded with a different list of peers/);
    expect(a.router.status().ipam.owned).toBe(2 ** 20);
    expect(b.router.status().ipam.owned).toBe(2 ** 20);
  }, 20_000);

  it('fails an allocation that cannot be served with a message that says why', async () => {
    mesh = new MemoryMesh();
    const r = await mesh.add({
      ipallocRange: RANGE,
      ipam: { init: { mode: 'auto', alone: false }, allocateTimeoutMs: 200 },
    });
    await expect(r.router.allocate('x')).rejects.toThrow(/no peer has seeded the address ring yet/);
    expect(r.router.status().ipam.state).toBe('awaiting-seed');
    await expect(r.router.allocate('weft:expose')).rejects.toThrow(/reserved/);
  });
});
