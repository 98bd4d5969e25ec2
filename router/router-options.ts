import type { Clock } from '../common/clock.js';
import type { Logger } from '../common/log.js';
import type { Cidr, PeerName } from '../common/types.js';
import type { PacketConn } from './conn/packet-conn.js';
import type { Persisted } from './ipam/allocator.js';
import type { IpamInit } from './ipam/service.js';
import type { TunDevice } from './tun/device.js';

/** EncapMode is the data path a router prefers (see RouterOptions.encap). */
export type EncapMode = 'auto' | 'fastdp' | 'sleeve' | 'vxlan';

/** wireEncap is what a mode announces to peers: the userspace encapsulation it accepts. */
export function wireEncap(mode: EncapMode): 'sleeve' | 'vxlan' {
  return mode === 'vxlan' ? 'vxlan' : 'sleeve';
}

/** RouterOptions configures a Router; control/ builds it from the LaunchConfig. */
export interface RouterOptions {
  name: PeerName;
  nickname: string;
  /** uid distinguishes this incarnation of the peer (random per start, non-zero). */
  uid: bigint;
  /** port is the TCP control port and the sleeve UDP port. */
  port: number;
  /** listenHost is where the mesh ports bind (default all addresses). */
  listenHost?: string;
  vxlanPort: number;
  vni: number;
  /**
   * encap is what this router prefers: `auto` the kernel fast path per peer where its heartbeats
   * get through, else sleeve; `fastdp` the same but the fast path must come up; `sleeve`; `vxlan`
   * (userspace, towards peers that prefer it too).
   */
  encap: EncapMode;
  /** mtu is the overlay MTU; undefined means underlay MTU minus ENCAP_OVERHEAD_MAX. */
  mtu?: number;
  /** device is the TUN device name. */
  device: string;
  /** ipallocRange is the overlay range routed into the TUN device. */
  ipallocRange: Cidr;
  password?: Buffer;
  /**
   * trustedSubnets: with a password, data to a peer stays unencrypted when each end's trusted
   * subnets hold the other's underlay address (control connections stay encrypted), as in Weave.
   */
  trustedSubnets?: readonly Cidr[];
  connLimit?: number;
  datapath?: 'native' | 'dgram';
  /**
   * offload lets the kernel hand the router TCP super-packets with partial checksums (TSO over
   * the TUN device's virtio-net header); sleeve carries them whole. Default true.
   */
  offload?: boolean;
  /**
   * incarnation orders this start of the router after every earlier one in the topology; it must
   * only ever grow for a name (the owner persists it). Default: the start time in ms.
   */
  incarnation?: number;
  /** discoveryDegree caps how many connections discovery makes (default DISCOVERY_DEGREE). */
  discoveryDegree?: number;
  /** discovery connects to peers learned from the topology (default true). */
  discovery?: boolean;
  /** peerTimeoutMs: a data path silent this long in either direction is failed (default PEER_DOWN_TIMEOUT_MS). */
  peerTimeoutMs?: number;
  /** rekeyAfterTimeMs: with a password, data keys ratchet at least this often (default REKEY_AFTER_TIME_MS, 120 s). */
  rekeyAfterTimeMs?: number;
  /**
   * ipam configures address allocation in `ipallocRange`: how the ring starts, the persisted
   * state and where to save it. Default: seed alone on first use, nothing persisted.
   */
  ipam?: {
    init: IpamInit;
    persisted?: unknown;
    persist?: (state: Persisted) => void;
    allocateTimeoutMs?: number;
    /** expectCluster: this router belonged to a cluster (persisted targets); see IpamServiceOptions. */
    expectCluster?: boolean;
  };
  log?: Logger;
  /**
   * clock gives the control plane its time and timers: topology reactions, discovery, peer
   * garbage collection, heartbeats and link evaluation, IPAM and control connections (default the
   * real clock; tests and the simulator pass a VirtualClock).
   */
  clock?: Clock;
  /** version is reported in status. */
  version?: string;
  /**
   * vxlanPeers are underlay addresses of kernel vxlan devices (not Weft routers) that may send
   * VXLAN to this router; overlay addresses behind them are learned from their traffic. Traffic
   * from any other non-peer address is dropped.
   */
  vxlanPeers?: string[];
  /** tun/sleeveConn/vxlanConn inject devices (tests); when tun is injected it is not configured with `ip`. */
  tun?: TunDevice;
  sleeveConn?: PacketConn;
  vxlanConn?: PacketConn;
}
