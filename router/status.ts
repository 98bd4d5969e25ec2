import type { CountersSnapshot } from './datapath/counters.js';
import type { KernelDrops } from './kernel-drops.js';
import type { EndToEndStats } from './overlay/e2e-keys.js';
import type { PathMtuStatus } from './overlay/pmtu.js';

/** PeerStatus describes one connected peer. */
export interface PeerStatus {
  name: string;
  nickname: string;
  uid: string;
  /** addr is the peer's underlay address. */
  addr: string;
  /** encap is the path this peer's traffic takes now: `fastdp` = the kernel's weft-vx. */
  encap: 'sleeve' | 'vxlan' | 'fastdp';
  /**
   * encapReason says why a peer that could use the kernel fast path does not now (`vxlan blocked:
   * no heartbeat for 5 s`, `fastdp off: encrypted`, `peer has no fast path`); absent otherwise.
   */
  encapReason?: string;
  /**
   * dataEncrypted is true when the datagrams to and from this peer are sealed (a password is set:
   * with our connection's keys, or, for a peer reached only through relays, with keys made end to
   * end through the mesh); absent or false: data crosses in the clear, or (relayed) none crosses yet.
   */
  dataEncrypted?: boolean;
  /** dataEndToEnd is true when what we send the peer is sealed with end-to-end keys (no connection of ours). */
  dataEndToEnd?: boolean;
  /** dataRekeys counts the data key generations our sender in use moved to (ratchets and installs; a new sender starts at 1). */
  dataRekeys?: number;
  /**
   * dataTrusted is true when a password is set but each end's --trusted-subnets hold the other's
   * underlay address: its direct datagrams cross in the clear (the control connection is encrypted).
   */
  dataTrusted?: boolean;
  mtu: number;
  /** cidrs are the overlay addresses the peer announced. */
  cidrs: string[];
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
  /**
   * state: for a direct connection, its data path (pending, established = heartbeats both ways,
   * failed); 'relayed' when the peer is reached through another peer (`via`); 'unreachable'.
   */
  state: 'pending' | 'established' | 'failed' | 'relayed' | 'unreachable';
  /** via is the neighbour traffic to this peer goes through, when relayed. */
  via?: string;
  /** connections is how many connections the peer itself reports. */
  connections: number;
  /**
   * neighbours are the peers this peer reports control connections to (its gossiped topology
   * entry, sorted by name), each with whether that connection's data path is proven both ways: the
   * edges of the mesh that do not touch this router (`weft status`'s graph, `GET /ui`).
   */
  neighbours: { name: string; established: boolean }[];
  /** stateSince is when the state last changed (ms since the epoch). */
  stateSince: number;
  /** reason says why a data path failed. */
  reason?: string;
  /** rttMs is the last heartbeat round trip through the tunnel. */
  rttMs?: number;
  /** pmtu is path MTU discovery towards the peer (for a relayed peer: towards its next hop). */
  pmtu?: PathMtuStatus;
}

/** LearnedStatus is a VXLAN endpoint learned from traffic (e.g. a kernel vxlan device). */
export interface LearnedStatus {
  ip: string;
  mac: string;
  endpoint: string;
  ageSeconds: number;
}

import type { IpamStatus } from './ipam/service.js';

/** VxlanPeerPath is one bare kernel vxlan host (--vxlan-peer) and how this router reaches it. */
export interface VxlanPeerPath {
  /** addr is its underlay address. */
  addr: string;
  /**
   * via: `fastdp` — the kernel's weft-vx floods to it (an all-zeros fdb entry) and answers its ARP;
   * `vxlan` — the router's own VXLAN socket; `none` — not reachable (`reason`).
   */
  via: 'fastdp' | 'vxlan' | 'none';
  reason?: string;
  /**
   * seen are overlay addresses seen behind it: with `vxlan` the endpoints learned from it, with
   * `fastdp` the neighbours the kernel learned by ARP on weft-vx (shared by every bare host there).
   */
  seen: string[];
  /** routed (fastdp): our IPAM share routed on-link through weft-vx, where bare hosts' addresses live. */
  routed?: string[];
}

/** RouterStatus is a JSON-safe snapshot of a router; never live objects. */
export interface RouterStatus {
  version: string;
  name: string;
  nickname: string;
  uid: string;
  ready: boolean;
  uptimeSeconds: number;
  encap: 'auto' | 'fastdp' | 'sleeve' | 'vxlan';
  /** fastdp is the kernel fast path (with encap auto or fastdp): its device, whether it is up, why not. */
  fastdp?: { device: string; up: boolean; reason?: string };
  /** port is the TCP control port. */
  port: number;
  /** sleevePort and vxlanPort are the UDP data ports. */
  sleevePort: number;
  vxlanPort: number;
  vni: number;
  mtu: number;
  device: string;
  datapath: 'native' | 'dgram';
  /** offload is true when the kernel hands the router TCP super-packets (TSO over virtio-net headers). */
  offload: boolean;
  /**
   * udpOffload says whether the data sockets send trains with UDP GSO and receive them with UDP
   * GRO (else one datagram per system call entry), and why GSO is off when it was wanted.
   */
  udpOffload: { gso: boolean; gro: boolean; reason?: string };
  /** encryption is true with a password: control connections and every peer's data are sealed. */
  encryption: boolean;
  /** cipher is the AEAD offered first on every connection when encryption is on. */
  cipher?: string;
  /** trustedSubnets: with encryption, peers whose underlay address is in them (and who trust ours) get unencrypted data. */
  trustedSubnets?: string[];
  /** endToEnd counts the key exchanges through the mesh with peers reached only through relays (encryption on). */
  endToEnd?: EndToEndStats;
  ipallocRange: string;
  exposed: string[];
  peers: PeerStatus[];
  connections: unknown[];
  targets: unknown[];
  counters: CountersSnapshot;
  /** learned is a sample (the oldest LEARNED_STATUS_SAMPLE) of the VXLAN endpoints learned; learnedCount counts them all. */
  learned: LearnedStatus[];
  learnedCount: number;
  /** kernelDrops are datagrams the kernel dropped on the data sockets before the router read them (undefined: unknown). */
  kernelDrops?: KernelDrops;
  /** vxlanPeers are the configured kernel vxlan peers (the only sources endpoints are learned from). */
  vxlanPeers: string[];
  /** vxlanPeerPaths says how each of vxlanPeers is reached (absent without any). */
  vxlanPeerPaths?: VxlanPeerPath[];
  /** terminations counts closed control connections by kind (error code, or who closed it). */
  terminations: Record<string, number>;
  /** gossip: per-channel message counters and refused entries. */
  gossip: { collisions: number; channels: unknown[]; unknownChannels: unknown };
  /** ipam: the address ring, our share, allocations and what waits. */
  ipam: IpamStatus;
}

/** StatusInput is what the Router hands buildStatus. */
export interface StatusInput extends Omit<RouterStatus, 'uid' | 'uptimeSeconds' | 'learned'> {
  uid: bigint;
  startedAt: number;
  learned: { ip: number; macHi: number; macLo: number; addr: number; seenMs: number }[];
}

/** buildStatus assembles a RouterStatus; plain data in, plain data out. */
export function buildStatus(s: StatusInput, nowMs = Date.now()): RouterStatus {
  const { startedAt, learned, uid, ...rest } = s;
  return {
    ...rest,
    uid: uid.toString(),
    uptimeSeconds: Math.round((nowMs - startedAt) / 1000),
    learned: learned.map((l) => ({
      ip: ip(l.ip),
      mac: mac(l.macHi, l.macLo),
      endpoint: ip(l.addr),
      ageSeconds: Math.round((nowMs - l.seenMs) / 1000),
    })),
  };
}

function ip(a: number): string {
  return `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
}

function mac(hi: number, lo: number): string {
  const b = [hi >>> 8, hi & 255, lo >>> 24, (lo >>> 16) & 255, (lo >>> 8) & 255, lo & 255];
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}
