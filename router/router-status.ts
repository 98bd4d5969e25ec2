/**
 * Status assembly: the Router's JSON-safe snapshot (RouterStatus) built on request from its parts
 * (mesh core, overlay switch, data plane, connection maker, IPAM), never live objects. Kept cheap:
 * status may be polled while the datapath shares the thread.
 */
import type { Cidr, PeerName } from '../common/types.js';
import { formatCidr } from '../common/types.js';
import type { ConnectionMaker } from './connection-maker.js';
import { DEFAULT_AEAD_CIPHER } from './crypto/index.js';
import type { DataPlane } from './data-plane.js';
import type { Counters } from './datapath/counters.js';
import { encapName, type Hop } from './datapath/fib.js';
import type { DataState } from './datapath/liveness.js';
import type { FibCompiler } from './fib-compiler.js';
import type { IpamService } from './ipam/service.js';
import type { MeshCore } from './mesh.js';
import type { EndToEndStats } from './overlay/e2e-keys.js';
import { fastActive, linkState, type OverlaySwitch } from './overlay/switch.js';
import type { PeerStatus, RouterStatus, VxlanPeerPath } from './status.js';
import { buildStatus } from './status.js';

/**
 * RELAYED_NO_KEYS_REASON: with a password, a relayed peer's traffic is dropped while we hold no data
 * keys with it (the end-to-end exchange through the mesh has not completed, or the addon is missing).
 */
export const RELAYED_NO_KEYS_REASON =
  'no data keys with it yet: made end to end through the mesh on its first traffic; until then dropped, never sent in the clear';

/**
 * LEARNED_STATUS_SAMPLE bounds the learned VXLAN endpoints status lists (the count is always
 * given): building and sending status must stay cheap however large the table is, so polling it
 * never delays the datapath, which shares the thread.
 */
export const LEARNED_STATUS_SAMPLE = 100;

/** StatusSources are the Router's parts and settings a status is assembled from. */
export interface StatusSources {
  readonly version: string;
  readonly name: PeerName;
  readonly nickname: string;
  readonly uid: bigint;
  readonly ready: boolean;
  readonly startedAt: number;
  readonly nowMs: number;
  readonly encap: 'auto' | 'fastdp' | 'sleeve' | 'vxlan';
  readonly fastdp: { device: string; up: boolean; reason?: string } | undefined;
  readonly port: number;
  readonly vni: number;
  readonly device: string;
  readonly datapath: 'native' | 'dgram';
  readonly offload: boolean;
  readonly encryption: boolean;
  /** endToEnd counts the end-to-end key exchanges (a password is set). */
  readonly endToEnd: EndToEndStats | undefined;
  /** trustedSubnets are the --trusted-subnets (with a password: data to peers in them may stay unencrypted). */
  readonly trustedSubnets: readonly Cidr[];
  readonly ipallocRange: Cidr;
  readonly exposed: readonly Cidr[];
  readonly vxlanPeers: string[];
  readonly vxlanPeerPaths: VxlanPeerPath[] | undefined;
  readonly counters: Counters;
  readonly plane: DataPlane;
  readonly maker: ConnectionMaker | undefined;
  readonly mesh: MeshCore;
  readonly links: OverlaySwitch;
  readonly fib: FibCompiler;
  readonly ipam: IpamService;
}

/** assembleStatus returns a JSON-safe snapshot of everything the router knows now. */
export function assembleStatus(s: StatusSources): RouterStatus {
  const { plane, maker, mesh } = s;
  const fwd = plane.forwarder;
  const unknown = mesh.unknownChannels;
  return buildStatus(
    {
      version: s.version,
      name: s.name,
      nickname: s.nickname,
      uid: s.uid,
      ready: s.ready,
      startedAt: s.startedAt,
      encap: s.encap,
      ...(s.fastdp !== undefined && { fastdp: s.fastdp }),
      port: s.port,
      sleevePort: plane.sleevePort,
      vxlanPort: plane.vxlanPort,
      vni: s.vni,
      mtu: plane.mtu,
      device: plane.tun?.name ?? s.device,
      datapath: s.datapath,
      offload: plane.vnetHdr && s.offload,
      udpOffload: plane.udpOffload(),
      encryption: s.encryption,
      ...(s.encryption && { cipher: DEFAULT_AEAD_CIPHER }),
      ...(s.endToEnd !== undefined && { endToEnd: { ...s.endToEnd } }),
      ...(s.encryption && s.trustedSubnets.length > 0 && { trustedSubnets: s.trustedSubnets.map(formatCidr) }),
      ipallocRange: formatCidr(s.ipallocRange),
      exposed: s.exposed.map(formatCidr),
      peers: peerStatus(s),
      connections: maker?.connections() ?? [],
      targets: maker?.targets() ?? [],
      counters: s.counters.snapshot(),
      learned: fwd?.learned.snapshot(LEARNED_STATUS_SAMPLE) ?? [],
      learnedCount: fwd?.learned.size ?? 0,
      vxlanPeers: s.vxlanPeers,
      ...(s.vxlanPeerPaths !== undefined && { vxlanPeerPaths: s.vxlanPeerPaths }),
      kernelDrops: plane.kernelDrops(),
      terminations: Object.fromEntries(maker?.terminations ?? []),
      ipam: s.ipam.status((p) => {
        const e = mesh.topology?.get(p);
        return { nickname: e?.nickname, reachable: mesh.routes.unicast.has(p) };
      }),
      gossip: {
        collisions: mesh.collisions,
        channels: mesh.channels().map((c) => ({ name: c.name, ...c.stats })),
        unknownChannels: unknown === undefined ? undefined : { ...unknown },
      },
    },
    s.nowMs,
  );
}

/** peerStatus describes every peer in the topology: how it is reached and what it serves. */
function peerStatus(s: StatusSources): PeerStatus[] {
  const { mesh, links } = s;
  const out: PeerStatus[] = [];
  for (const e of mesh.entries()) {
    if (e.name === s.name) continue;
    const st = links.get(e.name);
    const next = mesh.routes.unicast.get(e.name);
    const relayed = next !== undefined && next !== e.name;
    const link = st === undefined ? undefined : linkState(st);
    const encapReason = st === undefined ? undefined : links.reason(st, s.nowMs);
    const hops: (Hop | undefined)[] = relayed ? [s.fib.relayHop(e.name, next)] : [st?.sleeveHop, st?.vxlanHop];
    const sum = (k: 'txPackets' | 'txBytes' | 'rxPackets' | 'rxBytes') => hops.reduce((n, h) => n + (h?.[k] ?? 0), 0);
    out.push({
      name: e.name,
      nickname: e.nickname,
      uid: e.uid,
      addr: st?.conn.remote.addr ?? '',
      encap: relayed || st === undefined ? 'sleeve' : fastActive(st) ? 'fastdp' : encapName(st.hop.encap),
      ...(!relayed && encapReason !== undefined && { encapReason }),
      ...(!relayed &&
        st?.sleeveHop.crypto?.open === true && { dataEncrypted: true, dataRekeys: st.sleeveHop.crypto.rekeys }),
      ...(relayed &&
        hops[0]?.crypto?.open === true && {
          dataEncrypted: true,
          dataRekeys: hops[0].crypto.rekeys,
          ...(hops[0].crypto.endToEnd && { dataEndToEnd: true }),
        }),
      ...(!relayed && st?.conn.dataTrusted === true && { dataTrusted: true }),
      mtu: st?.conn.remote.mtu ?? 0,
      cidrs: [...e.cidrs],
      connections: e.connections.length,
      neighbours: e.connections.map((c) => ({ name: c.peer, established: c.established })),
      txPackets: sum('txPackets'),
      txBytes: sum('txBytes'),
      rxPackets: sum('rxPackets'),
      rxBytes: sum('rxBytes'),
      state: relayed ? 'relayed' : directState(link, next === e.name),
      stateSince: link?.since ?? 0,
      reason: relayed && hops[0]?.crypto !== undefined && !hops[0].crypto.open ? RELAYED_NO_KEYS_REASON : link?.reason,
      rttMs: link?.rttMs,
      via: relayed ? next : undefined,
      pmtu: relayed ? links.get(next)?.pmtu.status() : st?.pmtu.status(),
    });
  }
  return out;
}

/**
 * directState is what status reports for a directly connected peer: 'established' only once the
 * route to it is installed (both ends have gossiped that the link works), so a user (or a test)
 * seeing 'established' can send traffic.
 */
function directState(link: { state: DataState } | undefined, routed: boolean): PeerStatus['state'] {
  if (link === undefined) return 'unreachable';
  if (link.state === 'established' && !routed) return 'pending';
  return link.state;
}
