import { afterEach, describe, expect, it } from 'vitest';
import type { PeerName } from '../common/types.js';
import { parseCidr } from '../common/types.js';
import { peerNameHi, peerNameLo } from './datapath/fib.js';
import { SLEEVE_PREFIX_LEN, SleeveType, writeSleevePrefix } from './overlay/frame.js';
import { ipv4Packet, LOOPBACK, MemoryMesh, type MemoryRouter } from './testing/memory-router.js';

const A = 0x0a200001; // 10.32.0.1
const B = 0x0a200002; // 10.32.0.2

async function connectedPair(
  mesh: MemoryMesh,
  encap: 'sleeve' | 'vxlan',
  opts: { peerTimeoutMs?: number } = {},
): Promise<[MemoryRouter, MemoryRouter]> {
  const a = await mesh.add({ encap, ...opts });
  const b = await mesh.add({ encap, ...opts });
  b.router.connect([`127.0.0.1:${a.router.controlPort}`]);
  await a.router.expose(parseCidr('10.32.0.1/12'));
  await b.router.expose(parseCidr('10.32.0.2/12'));
  await mesh.until(
    () =>
      [a, b].every(
        (r) => r.router.status().peers[0]?.cidrs.length === 1 && r.router.status().peers[0]?.state === 'established',
      ),
    'both routers to learn the other address and route to it',
  );
  return [a, b];
}

describe('Router', () => {
  let mesh: MemoryMesh;
  afterEach(async () => {
    await mesh?.stop();
  });

  for (const encap of ['sleeve', 'vxlan'] as const) {
    it(`delivers a packet for an exposed address to the peer that announced it (${encap})`, async () => {
      mesh = new MemoryMesh({ virtual: true });
      const [a, b] = await connectedPair(mesh, encap);
      expect(a.router.status().peers[0]).toMatchObject({ encap, cidrs: ['10.32.0.2/32'] });
      const pkt = ipv4Packet(300, A, B, 0xab);
      a.tun.inject(pkt);
      await mesh.until(() => b.tun.written.length === 1, 'the packet at b');
      expect(b.tun.written[0]).toEqual(pkt);
      expect(a.router.status().peers[0]?.txPackets).toBe(1);
      expect(b.router.status().peers[0]?.rxPackets).toBe(1);
    });
  }

  it('bundles small packets read together for one peer into fewer datagrams, in order', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const [a, b] = await connectedPair(mesh, 'sleeve');
    const sent = Array.from({ length: 10 }, (_, i) => ipv4Packet(60 + i, A, B, i));
    const rxBefore = b.router.counters.udpRxPackets;
    for (const p of sent) a.tun.inject(p);
    await mesh.until(() => b.tun.written.length === 10, 'all ten packets at b');
    expect(b.tun.written).toEqual(sent);
    expect(a.router.counters.bundled).toBeGreaterThan(0);
    // Heartbeats also arrive meanwhile, so compare with what bundling saves.
    expect(b.router.counters.udpRxPackets - rxBefore).toBeLessThan(10);
  });

  it('uses sleeve towards a peer that does not prefer VXLAN', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const a = await mesh.add({ encap: 'vxlan' });
    const b = await mesh.add({ encap: 'sleeve' });
    b.router.connect([`127.0.0.1:${a.router.controlPort}`]);
    await mesh.until(() => a.router.status().peers.length === 1, 'connection');
    expect(a.router.status().peers[0]?.encap).toBe('sleeve');
  });

  it('counts a packet for an address nobody announced as a no_route drop', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const [a] = await connectedPair(mesh, 'sleeve');
    a.tun.inject(ipv4Packet(100, A, 0x0a200063));
    await mesh.until(() => a.router.counters.snapshot().drops.no_route === 1, 'the drop');
  });

  it('counts garbage datagrams on its data ports as drops and keeps forwarding', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const [a, b] = await connectedPair(mesh, 'sleeve');
    const attacker = mesh.net.open({ addr: LOOPBACK });
    const bPorts = b.router.status();
    const garbage = [Buffer.from('hello'), Buffer.alloc(64, 0x57), Buffer.from([0x57, 9, 0, 8, ...Array(40).fill(1)])];
    const buf = Buffer.concat(garbage);
    let off = 0;
    const offs = new Int32Array(garbage.length);
    const lens = new Int32Array(garbage.length);
    garbage.forEach((g, i) => {
      offs[i] = off;
      lens[i] = g.length;
      off += g.length;
    });
    const addrs = new Uint32Array(garbage.length).fill(LOOPBACK);
    for (const port of [bPorts.sleevePort, bPorts.vxlanPort]) {
      attacker.sendBatch(buf, offs, lens, addrs, new Uint16Array(garbage.length).fill(port), garbage.length);
    }
    const bad = () => {
      const x = b.router.counters.snapshot().drops;
      return (x.truncated ?? 0) + (x.bad_magic ?? 0) + (x.bad_version ?? 0) + (x.bad_vni ?? 0);
    };
    await mesh.until(() => bad() >= 6, 'the garbage to arrive');
    expect(bad()).toBe(6);
    expect(b.tun.written).toHaveLength(0);
    a.tun.inject(ipv4Packet(100, A, B));
    await mesh.until(() => b.tun.written.length === 1, 'traffic after the garbage');
    attacker.close();
  });

  it('drops well-formed sleeve data from an endpoint that is not a connected peer, whatever peer it claims', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const [a, b] = await connectedPair(mesh, 'sleeve');
    const attacker = mesh.net.open({ addr: LOOPBACK });
    const send = (src: string, dst: string) => {
      const inner = ipv4Packet(60, A, B);
      const buf = Buffer.alloc(SLEEVE_PREFIX_LEN + inner.length);
      inner.copy(buf, SLEEVE_PREFIX_LEN);
      const n = (x: string) => [peerNameHi(x as PeerName), peerNameLo(x as PeerName)] as const;
      writeSleevePrefix(buf, SLEEVE_PREFIX_LEN, inner.length, SleeveType.Data, 8, ...n(src), ...n(dst));
      const one = (v: number) => new Int32Array([v]);
      attacker.sendBatch(
        buf,
        one(0),
        one(buf.length),
        new Uint32Array([LOOPBACK]),
        new Uint16Array([b.router.status().sleevePort]),
        1,
      );
    };
    send('02:00:00:00:00:99', b.router.name); // a stranger
    send(a.router.name, b.router.name); // claims the connected peer, from another endpoint
    send(a.router.name, '02:00:00:00:00:77'); // asks b to relay
    const d = () => b.router.counters.snapshot().drops;
    await mesh.until(() => (d().not_from_peer ?? 0) >= 3, 'all three datagrams');
    const drops = d();
    expect(drops.not_from_peer).toBe(3);
    expect(drops.unknown_peer ?? 0).toBe(0);
    expect(b.router.counters.relayed).toBe(0);
    expect(b.tun.written).toHaveLength(0);
    attacker.close();
  });

  it('withdraws a peer routes when its connection closes', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const [a, b] = await connectedPair(mesh, 'sleeve');
    await b.router.stop();
    await mesh.until(() => a.router.status().peers.length === 0, 'a to notice');
    a.tun.inject(ipv4Packet(100, A, B));
    await mesh.until(() => a.router.counters.snapshot().drops.no_route === 1, 'no_route after withdrawal');
  });

  it('refuses to expose an address a peer already uses, and a /32', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const [a] = await connectedPair(mesh, 'sleeve');
    await expect(a.router.expose(parseCidr('10.32.0.2/12'))).rejects.toThrow(/already in use by peer/);
    await expect(a.router.expose(parseCidr('10.32.0.7/32'))).rejects.toThrow(/want a prefix/);
    expect(await a.router.expose(parseCidr('10.32.0.1/12'))).toHaveLength(1);
    await expect(a.router.expose(parseCidr('10.32.0.1/16'))).rejects.toThrow(/already exposed/);
    await expect(a.router.hide(parseCidr('10.32.0.5/32'))).rejects.toThrow(/not exposed/);
  });

  it('stops cleanly and can be stopped twice', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const { router } = await mesh.add();
    expect(router.isReady).toBe(true);
    await router.stop();
    await router.stop();
    expect(router.isReady).toBe(false);
  });
});

describe('Router data path', () => {
  let mesh: MemoryMesh;
  afterEach(async () => {
    await mesh?.stop();
  });

  it('proves the data path with heartbeats both ways, then fails it when UDP is blocked', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const [a, b] = await connectedPair(mesh, 'sleeve', { peerTimeoutMs: 1_500 });
    await mesh.until(() => a.router.status().peers[0]?.state === 'established', 'established', 5_000);
    expect(a.router.status().peers[0]?.rttMs).toBeGreaterThanOrEqual(0);
    // Block the data path only (control connections are real TCP and stay up).
    mesh.net.block(LOOPBACK, LOOPBACK);
    await mesh.until(() => a.router.status().peers[0]?.state === 'failed', 'failed', 10_000);
    expect(a.router.status().peers[0]?.reason).toMatch(/heartbeats/);
    // Its routes are withdrawn: traffic for b is now a counted no_route drop, not a black hole.
    a.tun.inject(ipv4Packet(100, A, B));
    await mesh.until(() => a.router.counters.snapshot().drops.no_route === 1, 'no_route');
    mesh.net.unblockAll();
    await mesh.until(() => a.router.status().peers[0]?.state === 'established', 'recovered', 10_000);
    // The route comes back once b's entry (saying its side works too) has reached a by gossip:
    // send until a packet gets through.
    let sent = 0;
    await mesh.until(
      () => {
        if (b.tun.written.length > 0) return true;
        if (sent++ % 10 === 0) a.tun.inject(ipv4Packet(100, A, B));
        return false;
      },
      'traffic after recovery',
      10_000,
    );
  }, 30_000);
});

describe('Router mesh', () => {
  let mesh: MemoryMesh;
  afterEach(async () => {
    await mesh?.stop();
  });

  it('learns a peer it is not connected to by gossip, and relays through the peer in between', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const a = await mesh.add({ discovery: false });
    const b = await mesh.add({ discovery: false });
    const c = await mesh.add({ discovery: false });
    a.router.connect([`127.0.0.1:${b.router.controlPort}`]);
    c.router.connect([`127.0.0.1:${b.router.controlPort}`]);
    await a.router.expose(parseCidr('10.32.0.1/12'));
    await c.router.expose(parseCidr('10.32.0.3/12'));
    const peerOf = (r: MemoryRouter, n: string) => r.router.status().peers.find((p) => p.nickname === n);
    await mesh.until(
      () => peerOf(a, 'r3')?.state === 'relayed' && peerOf(c, 'r1')?.state === 'relayed',
      'relayed routes',
      8_000,
    );
    expect(peerOf(a, 'r3')).toMatchObject({ via: b.router.name, cidrs: ['10.32.0.3/32'] });
    const pkt = ipv4Packet(200, A, 0x0a200003, 7);
    a.tun.inject(pkt);
    await mesh.until(() => c.tun.written.length === 1, 'the relayed packet at c');
    expect(c.tun.written[0]).toEqual(pkt);
    expect(b.router.counters.relayed).toBe(1);
    expect(b.tun.written).toHaveLength(0);
  }, 15_000);

  it('connects to peers it hears about when discovery is on', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const a = await mesh.add();
    const b = await mesh.add();
    const c = await mesh.add();
    b.router.connect([`127.0.0.1:${a.router.controlPort}`]);
    c.router.connect([`127.0.0.1:${b.router.controlPort}`]);
    await mesh.until(
      () => a.router.status().peers.filter((p) => p.state === 'established').length === 2,
      'a to connect to c, which it only heard of',
      10_000,
    );
    // Discovered targets are not persisted: only what launch/connect gave.
    expect(a.router.targetList()).toEqual([]);
    expect(c.router.targetList()).toEqual([`127.0.0.1:${b.router.controlPort}`]);
  }, 15_000);

  it('stops dialling discovered peers at the discovery degree and relays to the rest', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const hub = await mesh.add({ discoveryDegree: 1 });
    const spokes = [
      await mesh.add({ discoveryDegree: 1 }),
      await mesh.add({ discoveryDegree: 1 }),
      await mesh.add({ discoveryDegree: 1 }),
    ];
    for (const s of spokes) s.router.connect([`127.0.0.1:${hub.router.controlPort}`]);
    const first = spokes[0] as MemoryRouter;
    await mesh.until(
      () => first.router.status().peers.filter((p) => p.state === 'relayed').length === 2,
      'the first spoke to reach the other two through the hub',
      10_000,
    );
    expect(first.router.status().targets).toHaveLength(1);
    expect(
      first.router
        .status()
        .peers.filter((p) => p.state === 'established')
        .map((p) => p.name),
    ).toEqual([hub.router.name]);
  }, 15_000);

  it('uses VXLAN while its heartbeats flow, and switches to sleeve when only the VXLAN port is blocked', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const [a, b] = await connectedPair(mesh, 'vxlan', { peerTimeoutMs: 1_500 });
    const peer = () => a.router.status().peers[0];
    await mesh.until(() => peer()?.state === 'established' && peer()?.encap === 'vxlan', 'vxlan established', 5_000);
    const vxlanPorts = new Set([a.router.status().vxlanPort, b.router.status().vxlanPort]);
    mesh.net.filter = (_sa, _sp, _da, dp) => !vxlanPorts.has(dp);
    await mesh.until(() => peer()?.encap === 'sleeve', 'the switch to sleeve', 10_000);
    expect(peer()?.state).toBe('established');
    expect(peer()?.reason).toMatch(/vxlan .*using sleeve/);
    a.tun.inject(ipv4Packet(120, A, B));
    await mesh.until(() => b.tun.written.length === 1, 'traffic over sleeve');
    mesh.net.filter = undefined;
    await mesh.until(() => peer()?.encap === 'vxlan', 'back to vxlan', 5_000);
  }, 20_000);

  it('announces container addresses it claims, and refuses a claim on an address in use', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const [a, b] = await connectedPair(mesh, 'sleeve');
    a.router.claim('c1', [parseCidr('10.32.1.1/12')]);
    await mesh.until(() => b.router.status().peers[0]?.cidrs.includes('10.32.1.1/32') === true, 'the claim at b');
    expect(() => b.router.claim('c2', [parseCidr('10.32.1.1/12')])).toThrow(/already in use by peer/);
    expect(() => a.router.claim('c3', [parseCidr('10.32.1.1/12')])).toThrow(/already used by c1/);
    expect(() => a.router.claim('c3', [parseCidr('10.32.0.1/12')])).toThrow(/exposed address/);
    a.tun.inject(ipv4Packet(80, B, 0x0a200101));
    // b's packet for the container goes to a.
    b.tun.inject(ipv4Packet(80, B, 0x0a200101));
    await mesh.until(() => a.tun.written.length === 1, 'the packet for the container at a');
    expect(a.router.release('c1')).toHaveLength(1);
    await mesh.until(() => b.router.status().peers[0]?.cidrs.includes('10.32.1.1/32') === false, 'the release at b');
  }, 15_000);
});
