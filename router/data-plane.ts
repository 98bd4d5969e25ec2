/**
 * DataPlane opens and closes what carries packets: the TUN device (configured with `ip` unless
 * injected), the sleeve and VXLAN sockets, and the Forwarder between them. It also answers the
 * data-plane questions the control plane asks: the MTUs, the kernel's path MTU towards a peer,
 * the UDP offloads in use and the kernel's drop counters.
 */
import type { Logger } from '../common/log.js';
import type { Cidr, PeerName } from '../common/types.js';
import { cidrNetwork, formatCidr } from '../common/types.js';
import { DgramUdp } from './conn/dgram-udp.js';
import { NativeUdp } from './conn/native-udp.js';
import type { PacketConn } from './conn/packet-conn.js';
import {
  ENCAP_OVERHEAD_MAX,
  MTU_MAX,
  MTU_MIN,
  UDP_RCVBUF_BYTES,
  UDP_SNDBUF_BYTES,
  UNDERLAY_MTU_DEFAULT,
} from './constants.js';
import type { Counters } from './datapath/counters.js';
import { type ControlDatagram, Forwarder } from './datapath/forwarder.js';
import { VNET_HDR_LEN } from './datapath/gso.js';
import { readKernelDrops } from './kernel-drops.js';
import { ipToU32 } from './overlay/switch.js';
import type { TunDevice } from './tun/device.js';
import { LinuxTun } from './tun/linux.js';
import { loadNative, tryLoadNative } from './tun/native.js';
import { underlayMtu } from './underlay.js';

/** DataPlaneOptions are the RouterOptions the data plane reads. */
export interface DataPlaneOptions {
  readonly name: PeerName;
  readonly port: number;
  readonly listenHost?: string;
  readonly vxlanPort: number;
  readonly vni: number;
  readonly mtu?: number;
  readonly device: string;
  readonly ipallocRange: Cidr;
  readonly datapath?: 'native' | 'dgram';
  readonly offload?: boolean;
  readonly tun?: TunDevice;
  readonly sleeveConn?: PacketConn;
  readonly vxlanConn?: PacketConn;
  /** encap: with `auto`/`fastdp` the kernel's weft-vx owns the VXLAN port, so no VXLAN socket is opened. */
  readonly encap?: 'auto' | 'fastdp' | 'sleeve' | 'vxlan';
}

/** DataPlane: see the module comment. Open with `open()`, release with `close()`; reopenable. */
export class DataPlane {
  tun: TunDevice | undefined;
  sleeveConn: PacketConn | undefined;
  vxlanConn: PacketConn | undefined;
  forwarder: Forwarder | undefined;
  /** mtu is the overlay MTU in use (0 before open). */
  mtu = 0;
  /** underlayMtu is the underlay's MTU: where path MTU discovery starts when the route says nothing. */
  underlayMtu = UNDERLAY_MTU_DEFAULT;
  /** vnetHdr says the TUN device carries virtio-net headers (kernel device). */
  vnetHdr = false;

  constructor(
    private readonly o: DataPlaneOptions,
    private readonly counters: Counters,
    private readonly log: Logger,
  ) {}

  /** open opens the device and sockets and starts forwarding; `onControl` gets heartbeats and acks. */
  async open(nowMs: () => number, onControl: (d: ControlDatagram) => void): Promise<void> {
    const o = this.o;
    if (o.tun !== undefined) {
      this.tun = o.tun;
      this.mtu = o.mtu ?? 1400;
    } else {
      const tun = LinuxTun.open({ name: o.device, mode: 'tun', vnetHdr: true });
      this.tun = tun;
      this.vnetHdr = true;
      tun.setVnetHdrSize(VNET_HDR_LEN);
      this.underlayMtu = await underlayMtu(tun.name);
      const mtu = o.mtu ?? this.underlayMtu - ENCAP_OVERHEAD_MAX;
      this.mtu = Math.max(MTU_MIN, Math.min(MTU_MAX, mtu));
      await tun.setMtu(this.mtu);
      if (o.offload !== false) {
        // Super-packets are cut into segments that fit the path (datapath/inside.ts), so any size
        // the kernel makes will do: the default gso_max_size (65536) lets forwarded container
        // packets of any size reach us whole.
        const n = loadNative();
        tun.setOffload(n.TUN_F_CSUM | n.TUN_F_TSO4 | n.TUN_F_TSO_ECN);
      }
      await tun.setUp();
      await tun.addRoute(formatCidr({ addr: cidrNetwork(o.ipallocRange), prefix: o.ipallocRange.prefix }));
    }
    const host = o.listenHost ?? '0.0.0.0';
    this.sleeveConn = o.sleeveConn ?? (await this.openConn(host, o.port));
    const kernelOwnsPort = o.encap === 'auto' || o.encap === 'fastdp';
    this.vxlanConn = o.vxlanConn ?? (kernelOwnsPort ? undefined : await this.openConn(host, o.vxlanPort));
    this.forwarder = new Forwarder({
      tun: this.tun,
      sleeve: this.sleeveConn,
      vxlan: this.vxlanConn,
      localName: o.name,
      vni: o.vni,
      vxlanPort: o.vxlanPort,
      counters: this.counters,
      log: this.log,
      vnetHdr: this.vnetHdr,
      underlayMtu: this.underlayMtu,
      nowMs,
      onControl,
    });
    this.forwarder.start();
  }

  private async openConn(host: string, port: number): Promise<PacketConn> {
    const bindAddr = host === '0.0.0.0' ? 0 : ipToU32(host);
    if ((this.o.datapath ?? 'native') === 'native') {
      return NativeUdp.open({
        bindAddr,
        port,
        rcvbuf: UDP_RCVBUF_BYTES,
        sndbuf: UDP_SNDBUF_BYTES,
        offload: this.o.offload !== false,
      });
    }
    return DgramUdp.open({ bindAddr, port, rcvbuf: UDP_RCVBUF_BYTES, sndbuf: UDP_SNDBUF_BYTES });
  }

  /** close stops forwarding and closes what open() opened (injected devices stay open). */
  close(): void {
    this.forwarder?.stop();
    this.forwarder = undefined;
    if (this.o.sleeveConn === undefined) this.sleeveConn?.close();
    if (this.o.vxlanConn === undefined) this.vxlanConn?.close();
    if (this.o.tun === undefined) this.tun?.close();
    this.sleeveConn = undefined;
    this.vxlanConn = undefined;
    this.tun = undefined;
  }

  /** sleevePort/vxlanPort are the bound data ports (the configured ones before open). */
  get sleevePort(): number {
    return this.sleeveConn?.port ?? this.o.port;
  }

  get vxlanPort(): number {
    return this.vxlanConn?.port ?? this.o.vxlanPort;
  }

  /** routeMtu is the MTU of the route towards an underlay address: where path MTU discovery starts. */
  routeMtu(addr: number): number {
    const k = this.kernelPathMtu(addr);
    return k > 0 ? k : this.underlayMtu;
  }

  /** kernelPathMtu is the kernel's path MTU towards addr (0 when unknown: injected sockets, no addon). */
  kernelPathMtu(addr: number): number {
    if (this.o.sleeveConn !== undefined || (this.o.datapath ?? 'native') !== 'native') return 0;
    const n = tryLoadNative();
    const m = n?.pathMtu(addr) ?? 0;
    return Math.max(m, 0);
  }

  /** udpOffload says which UDP offloads the data sockets use, and why GSO is off if it is. */
  udpOffload(): { gso: boolean; gro: boolean; reason?: string } {
    const c = this.sleeveConn;
    if (c === undefined) return { gso: false, gro: false };
    const reason = c instanceof NativeUdp && c.gsoOffReason !== '' ? c.gsoOffReason : undefined;
    return { gso: c.gso, gro: c.gro, ...(reason === undefined ? {} : { reason }) };
  }

  /** kernelDrops reads the kernel's drop counters for our sockets (native sockets only). */
  kernelDrops(): ReturnType<typeof readKernelDrops> | undefined {
    return this.sleeveConn instanceof NativeUdp
      ? readKernelDrops({ sleeve: this.sleeveConn.port, vxlan: this.vxlanConn?.port ?? 0 })
      : undefined;
  }
}
