/**
 * FastDataPath is the router's kernel fast path: weft-vx and its forwarding state
 * (KernelFastPath over netlink) plus the heartbeats through it (FastdpHeartbeats). The router
 * opens it after the data plane, feeds `sync` from the topology and the overlay switch, and closes
 * it on stop, which deletes weft-vx (its routes, neighbours and fdb entries go with it, and the
 * peers' addresses fall back to the TUN device's range route).
 *
 * Port sharing: the kernel device owns the VXLAN port, so a router with a fast path opens no
 * userspace VXLAN socket (data-plane.ts); its heartbeats are IPv6 datagrams inside the kernel's
 * VXLAN, to the sleeve port on the peer's weft-vx link-local address.
 */
import type { Logger } from '../../common/log.js';
import type { PeerName } from '../../common/types.js';
import type { NativeAddon } from '../tun/native.js';
import {
  type BareWant,
  clearRpfAnchor,
  FASTDP_DEVICE,
  type FastPeer,
  KernelFastPath,
  linkIndex,
  NO_BARE,
  setRpfAnchor,
  VXLAN_IPV4_OVERHEAD_BYTES,
} from './fastdp.js';
import { type FastdpControl, FastdpHeartbeats } from './fastdp-heartbeats.js';
import { addonTransport, Netlink } from './netlink.js';

/** FastDataPathOptions configure a FastDataPath. */
export interface FastDataPathOptions {
  readonly native: NativeAddon;
  readonly self: PeerName;
  readonly vni: number;
  readonly vxlanPort: number;
  readonly sleevePort: number;
  /** local is the underlay address to send from (host order), 0 to let the route decide. */
  readonly local: number;
  readonly underlayMtu: number;
  readonly log: Logger;
  readonly nowMs: () => number;
  readonly onControl: (c: FastdpControl) => void;
  /** mtuOk says whether our MTU proof towards a peer holds (sent in our heartbeat acks). */
  readonly mtuOk?: (peer: PeerName) => boolean;
  /** tunDevice is the TUN device's name: it gets RPF_ANCHOR while the fast path is open. */
  readonly tunDevice?: string;
}

/** FastDataPath: see the module comment. */
export class FastDataPath {
  up = false;
  private nl: Netlink | undefined;
  private fp: KernelFastPath | undefined;
  private hb: FastdpHeartbeats | undefined;
  private tunIndex = 0;

  constructor(private readonly o: FastDataPathOptions) {}

  /** open creates weft-vx, removes stale state and binds the heartbeat socket; throws when it cannot. */
  async open(): Promise<void> {
    const o = this.o;
    try {
      this.nl = new Netlink(addonTransport(o.native));
      this.fp = new KernelFastPath({
        nl: this.nl,
        log: o.log,
        self: o.self,
        vni: o.vni,
        port: o.vxlanPort,
        local: o.local,
        mtu: this.mtu,
      });
      this.fp.open();
      this.anchorTun();
      this.fp.sync([], true);
      this.hb = new FastdpHeartbeats({
        self: o.self,
        device: this.fp.device,
        port: o.sleevePort,
        log: o.log,
        nowMs: o.nowMs,
        onControl: o.onControl,
        native: o.native,
        ...(o.mtuOk === undefined ? {} : { mtuOk: o.mtuOk }),
      });
      await this.hb.open();
      this.up = true;
      o.log.info('fastdp device up', { device: this.fp.device, mtu: this.mtu });
    } catch (err) {
      this.close();
      throw err;
    }
  }

  /** anchorTun gives the TUN device RPF_ANCHOR; a refusal is logged (switches may then drop a packet). */
  private anchorTun(): void {
    const name = this.o.tunDevice;
    if (name === undefined || this.nl === undefined) return;
    try {
      const ix = linkIndex(this.nl, name);
      if (ix === 0) return;
      setRpfAnchor(this.nl, ix, name);
      this.tunIndex = ix;
    } catch (err) {
      this.o.log.warn('fastdp: TUN device without an IPv4 address', { device: name, err: (err as Error).message });
    }
  }

  /** device is weft-vx's name. */
  get device(): string {
    return this.fp?.device ?? FASTDP_DEVICE;
  }

  /** stats are the reconciler's counters (undefined while closed). */
  stats(): { syncs: number; added: number; removed: number; errors: number; dropped: number } | undefined {
    if (this.fp === undefined) return undefined;
    return { ...this.fp.stats, dropped: this.hb?.dropped ?? 0 };
  }

  /**
   * sync makes the kernel state what `peers` say (see KernelFastPath.sync). `src` (0: none) is
   * the source the host's own packets take on the routes: its overlay address, so that answers
   * come back through the overlay too, not straight over the underlay.
   */
  sync(peers: readonly FastPeer[], src = 0, bare: BareWant = NO_BARE): void {
    this.fp?.sync(peers, false, src, bare);
  }

  /** neighbours are the IPv4 neighbours the kernel learned on weft-vx (bare hosts' addresses). */
  neighbours(): { ip: number; mac: string; state: number }[] {
    return this.fp?.neighbours() ?? [];
  }

  /** sendHeartbeat sends a heartbeat through weft-vx (`mtuOk`: our MTU proof towards the peer holds). */
  sendHeartbeat(peer: PeerName, port: number, mtuOk = false): void {
    this.hb?.sendHeartbeat(peer, port, mtuOk);
  }

  /** mtu is weft-vx's MTU (what an MTU probe fills). */
  get mtu(): number {
    return this.o.underlayMtu - VXLAN_IPV4_OVERHEAD_BYTES;
  }

  /** sendProbe sends an MTU probe filling weft-vx's MTU (kernel/fastdp-mtu.ts). */
  sendProbe(peer: PeerName, port: number): void {
    this.hb?.sendProbe(peer, port, this.mtu);
  }

  /** close deletes weft-vx and closes the sockets; idempotent. */
  close(): void {
    this.up = false;
    this.hb?.close();
    this.hb = undefined;
    if (this.tunIndex !== 0 && this.nl !== undefined) {
      try {
        clearRpfAnchor(this.nl, this.tunIndex, this.o.tunDevice ?? '');
      } catch (err) {
        this.o.log.warn('fastdp: TUN address not removed', { err: (err as Error).message });
      }
    }
    this.tunIndex = 0;
    this.fp?.close();
    this.fp = undefined;
    this.nl?.close();
    this.nl = undefined;
  }
}

/**
 * spanCidrs cuts [start, end) into CIDRs, each strictly longer than `minPrefix` (so a route for it
 * is more specific than the TUN device's route for the whole range).
 */
export function spanCidrs(start: number, end: number, minPrefix: number): { addr: number; prefix: number }[] {
  const out: { addr: number; prefix: number }[] = [];
  let a = start;
  while (a < end) {
    let size = a === 0 ? 2 ** 32 : 2 ** Math.min(32, countTrailingZeros(a));
    while (size > end - a || 32 - Math.log2(size) <= minPrefix) size /= 2;
    out.push({ addr: a >>> 0, prefix: 32 - Math.log2(size) });
    a += size;
  }
  return out;
}

function countTrailingZeros(x: number): number {
  let n = 0;
  while (n < 32 && (x & 1) === 0) {
    x >>>= 1;
    n++;
  }
  return n;
}
