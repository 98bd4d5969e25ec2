import { describe, expect, it } from 'vitest';
import { noopLogger } from '../common/log.js';
import { type PeerName, parseCidr } from '../common/types.js';
import { MemoryUdpNet } from './conn/memory-udp.js';
import { DataPlane } from './data-plane.js';
import { Counters } from './datapath/counters.js';
import { MemoryTun } from './tun/memory.js';

const LOOPBACK = 0x7f000001;

function plane(mtu?: number) {
  const net = new MemoryUdpNet();
  const tun = new MemoryTun({ name: 'mem0' });
  const sleeveConn = net.open({ addr: LOOPBACK });
  const vxlanConn = net.open({ addr: LOOPBACK });
  const p = new DataPlane(
    {
      name: '02:00:00:00:00:01' as PeerName,
      port: 6783,
      vxlanPort: 6784,
      vni: 42,
      device: 'weft',
      ipallocRange: parseCidr('10.32.0.0/12'),
      mtu,
      tun,
      sleeveConn,
      vxlanConn,
    },
    new Counters(),
    noopLogger,
  );
  return { p, tun, sleeveConn, vxlanConn };
}

describe('DataPlane', () => {
  it('uses injected devices as they are and leaves them open on close', async () => {
    const { p, tun, sleeveConn, vxlanConn } = plane();
    expect(p.mtu).toBe(0);
    expect(p.sleevePort).toBe(6783);
    await p.open(
      () => 0,
      () => {},
    );
    expect(p.mtu).toBe(1400);
    expect(p.forwarder).toBeDefined();
    expect(p.sleevePort).toBe(sleeveConn.port);
    expect(p.vxlanPort).toBe(vxlanConn.port);
    expect(p.vnetHdr).toBe(false);
    // Injected sockets: the kernel's path MTU is not asked; discovery starts at the underlay MTU.
    expect(p.kernelPathMtu(LOOPBACK)).toBe(0);
    expect(p.routeMtu(LOOPBACK)).toBe(p.underlayMtu);
    expect(p.kernelDrops()).toBeUndefined();
    expect(p.udpOffload()).toEqual({ gso: sleeveConn.gso, gro: sleeveConn.gro });
    p.close();
    expect(p.forwarder).toBeUndefined();
    expect(p.tun).toBeUndefined();
    expect(tun.closed).toBe(false);
    expect(sleeveConn.closed).toBe(false);
    expect(p.udpOffload()).toEqual({ gso: false, gro: false });
  });

  it('takes the configured MTU for an injected device', async () => {
    const { p } = plane(1300);
    await p.open(
      () => 0,
      () => {},
    );
    expect(p.mtu).toBe(1300);
    p.close();
  });
});
