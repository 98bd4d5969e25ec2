import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, Lab, requireRoot } from '../lab/netns.js';
import { addBareVxlan, expose, launch, removeStateDirs, status } from './weft.js';

const reason = requireRoot();

/** VNI is Weft's default VXLAN network identifier (router/constants.ts VXLAN_VNI_DEFAULT). */
const VNI = 22342;
/**
 * KERNEL_IP is the kernel host's address: inside the cluster range, and so inside the Weft host's
 * own IPAM share (it is the only peer), but never allocated by IPAM — the router learns it by ARP.
 */
const KERNEL_IP = '10.32.0.9';

/**
 * The Linux kernel's own vxlan device is a peer Weft did not write: host 2 runs no router at all,
 * only `ip link add ... type vxlan` with a static all-zeros FDB entry towards host 1.
 */
describe.skipIf(reason)('a kernel vxlan device talks to a Weft router', () => {
  let topo: Lab;
  let weftHost: Host;
  let kernelHost: Host;
  /** weftIp is the address IPAM gave the Weft host. */
  let weftIp: string;

  beforeAll(async () => {
    topo = await Lab.create({ hosts: 2 });
    [weftHost, kernelHost] = topo.hosts as [Host, Host];
    await launch(weftHost, [], ['--encap', 'vxlan', '--vxlan-peer', kernelHost.underlayIp]);
    weftIp = await expose(weftHost);
    expect(weftIp).toMatch(/^10\.(3[2-9]|4[0-7])\.\d+\.\d+$/);
    expect(weftIp).not.toBe(KERNEL_IP);
    await addBareVxlan(kernelHost, VNI, `${KERNEL_IP}/12`, [weftHost.underlayIp]);
  });

  afterAll(async () => {
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
  });

  it('answers the kernel host ARP and ping, and learns where it is', async () => {
    const p = await kernelHost.ping(weftIp, { count: 3, intervalS: 0.1 });
    expect(p.received).toBe(3);
    const s = await status(weftHost);
    expect(s.counters.arpReplies).toBeGreaterThanOrEqual(1);
    expect(s.learned).toContainEqual(expect.objectContaining({ ip: KERNEL_IP, endpoint: kernelHost.underlayIp }));
    // Learned, not allocated: IPAM records only the Weft host's own address.
    const allocations = (s as unknown as { ipam: { allocations: { addr: string }[] } }).ipam.allocations;
    expect(allocations.map((a) => a.addr)).toEqual([weftIp]);
  });

  it('pings the kernel host from the Weft host once learned', async () => {
    const p = await weftHost.ping(KERNEL_IP, { count: 3, intervalS: 0.1 });
    expect(p.received).toBe(3);
  });

  it('carries TCP both ways (iperf3)', async () => {
    const server = await kernelHost.iperf3Server(5201);
    try {
      const up = await weftHost.iperf3Client(KERNEL_IP, { seconds: 2 });
      const down = await weftHost.iperf3Client(KERNEL_IP, { seconds: 2, reverse: true });
      expect(up.bitsPerSecond).toBeGreaterThan(1e6);
      expect(down.bitsPerSecond).toBeGreaterThan(1e6);
    } finally {
      await server.stop();
    }
  });

  it('drops VXLAN frames for another VNI and counts them', async () => {
    const other = kernelHost.ifname('vy');
    await kernelHost.ip(
      'link',
      'add',
      other,
      'type',
      'vxlan',
      'id',
      String(VNI + 1),
      'dstport',
      '6784',
      'local',
      kernelHost.underlayIp,
      'dev',
      kernelHost.underlayDev,
    );
    await kernelHost.exec('bridge', ['fdb', 'append', '00:00:00:00:00:00', 'dev', other, 'dst', weftHost.underlayIp]);
    await kernelHost.ip('addr', 'add', '10.33.0.9/16', 'dev', other);
    await kernelHost.ip('link', 'set', other, 'up');
    const p = await kernelHost.ping('10.33.0.1', { count: 2, intervalS: 0.1 });
    expect(p.received).toBe(0);
    const s = await status(weftHost);
    expect(s.counters.drops.bad_vni).toBeGreaterThanOrEqual(2);
    // ...and the router still serves the right VNI.
    expect((await kernelHost.ping(weftIp, { count: 1 })).received).toBe(1);
  });
});
