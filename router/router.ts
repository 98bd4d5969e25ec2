import { InputError, WeftError } from '../common/errors.js';
import type { Startable } from '../common/lifecycle.js';
import type { Logger } from '../common/log.js';
import { noopLogger } from '../common/log.js';
import type { Cidr, IPv4, PeerName } from '../common/types.js';
import { cidrContains, cidrNetwork, formatCidr, formatIPv4, parseCidr } from '../common/types.js';
import { DgramUdp } from './conn/dgram-udp.js';
import { NativeUdp } from './conn/native-udp.js';
import type { PacketConn } from './conn/packet-conn.js';
import type { Connection } from './connection.js';
import { ConnectionMaker, parseTarget } from './connection-maker.js';
import {
  DATA_HEARTBEAT_INTERVAL_MS,
  DISCOVERY_DEGREE,
  ENCAP_OVERHEAD_MAX,
  MTU_MAX,
  MTU_MIN,
  PEER_DOWN_TIMEOUT_MS,
  UDP_RCVBUF_BYTES,
  UDP_SNDBUF_BYTES,
  UNDERLAY_MTU_DEFAULT,
} from './constants.js';
import { DataPath, type DataState } from './data-path.js';
import { Counters } from './datapath/counters.js';
import {
  Encap,
  encapName,
  Fib,
  type FibRange,
  type FibRoute,
  Hop,
  peerKey,
  peerNameHi,
  peerNameLo,
} from './datapath/fib.js';
import type { ControlDatagram } from './datapath/forwarder.js';
import { Forwarder } from './datapath/forwarder.js';
import { VNET_HDR_LEN } from './datapath/gso.js';
import { GOSSIP_INTERVAL_MS, type GossipChannel, GossipMux } from './gossip/channel.js';
import type { Gossip, Gossiper } from './gossip/gossip.js';
import type { Persisted } from './ipam/allocator.js';
import { IPAM_CHANNEL } from './ipam/ipam.js';
import { type IpamInit, IpamService } from './ipam/service.js';
import { readKernelDrops } from './kernel-drops.js';
import { SleeveType } from './overlay/frame.js';
import { PathMtu } from './overlay/pmtu.js';
import type { PeerMessage } from './protocol.js';
import { computeRoutes, emptyRoutes, PEER_GC_DELAY_MS, type Routes, unreachable } from './routes.js';
import type { PeerStatus, RouterStatus } from './status.js';
import { buildStatus } from './status.js';
import {
  type ConnectionSummary,
  type MergeResult,
  REJECT_COLLISION,
  TOPOLOGY_CHANNEL,
  Topology,
  TopologyGossiper,
} from './topology.js';
import type { TunDevice } from './tun/device.js';
import { LinuxTun } from './tun/linux.js';
import { loadNative, tryLoadNative } from './tun/native.js';
import { underlayMtu } from './underlay.js';

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
  /** encap is what this router prefers; VXLAN is used towards a peer only when both prefer it. */
  encap: 'sleeve' | 'vxlan';
  /** mtu is the overlay MTU; undefined means underlay MTU minus ENCAP_OVERHEAD_MAX. */
  mtu?: number;
  /** device is the TUN device name. */
  device: string;
  /** ipallocRange is the overlay range routed into the TUN device. */
  ipallocRange: Cidr;
  password?: Buffer;
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

/** PeerState is what the router knows about one connected peer. */
interface PeerState {
  conn: Connection;
  /** hop is the hop in use: vxlanHop while the VXLAN path works, else sleeveHop. */
  hop: Hop;
  sleeveHop: Hop;
  /** data is the sleeve data path (heartbeats in sleeve framing). */
  data: DataPath;
  /** vxlanHop/vxData exist when both ends prefer VXLAN: heartbeats inside VXLAN prove that path. */
  vxlanHop: Hop | undefined;
  vxData: DataPath | undefined;
  /** vxlanPort is the peer's VXLAN port. */
  vxlanPort: number;
  /** pmtu discovers the path MTU towards the peer; its result is every direct hop's `pmtu`. */
  pmtu: PathMtu;
}

/** linkState is what a direct link offers: established if either overlay works (VXLAN preferred). */
function linkState(st: PeerState): {
  state: DataState;
  reason: string | undefined;
  rttMs: number | undefined;
  since: number;
} {
  const vx = st.vxData;
  if (vx !== undefined && vx.state === 'established')
    return { state: 'established', reason: undefined, rttMs: vx.rttMs, since: vx.since };
  const d = st.data;
  const reason =
    vx !== undefined && vx.state === 'failed'
      ? `vxlan ${vx.reason ?? 'failed'}${d.state === 'established' ? ': using sleeve' : ''}`
      : d.reason;
  return { state: d.state, reason, rttMs: d.rttMs, since: d.since };
}

/**
 * Router is one host's router: it owns the TUN device, the data sockets, the forwarder and the
 * control connections, and turns what peers announce into the forwarding table.
 */
export class Router implements Startable {
  readonly counters = new Counters();
  readonly name: PeerName;
  readonly nickname: string;
  readonly uid: bigint;
  private readonly opts: RouterOptions;
  private readonly log: Logger;
  private tun: TunDevice | undefined;
  private sleeveConn: PacketConn | undefined;
  private vxlanConn: PacketConn | undefined;
  private forwarder: Forwarder | undefined;
  private maker: ConnectionMaker | undefined;
  private readonly peers = new Map<PeerName, PeerState>();
  private readonly peersByKey = new Map<number, PeerState>();
  /** persistent are the targets given to launch/connect (saved); discovered ones are not. */
  private readonly persistent = new Set<string>();
  private exposed: Cidr[] = [];
  /** claims are container addresses served here, by owner (container reference). */
  private readonly claims = new Map<string, Cidr[]>();
  private mtuValue = 0;
  /** underlayMtuValue is the underlay's MTU: where path MTU discovery starts when the route says nothing. */
  private underlayMtuValue = UNDERLAY_MTU_DEFAULT;
  private vnetHdr = false;
  private started = false;
  private ready = false;
  private readonly startedAt = Date.now();
  private learnTimer: NodeJS.Timeout | undefined;
  private gossipTimer: NodeJS.Timeout | undefined;
  private gcTimer: NodeJS.Timeout | undefined;
  private topology: Topology | undefined;
  private mux: GossipMux | undefined;
  private topoChannel: GossipChannel | undefined;
  private ipamChannel: GossipChannel | undefined;
  /** ipam allocates container and host addresses in the range (see router/ipam/service.ts). */
  readonly ipam: IpamService;
  /** lastAnnounced is what our topology entry says we serve (re-announced when the ring moves). */
  private lastAnnounced = '';
  private routes: Routes;
  /** discovered are targets learned from the topology (not persisted). */
  private discovered = new Set<string>();
  /** kernelVxlanPeers are the configured kernel vxlan peers' underlay addresses (see RouterOptions.vxlanPeers). */
  private readonly kernelVxlanPeers = new Set<number>();
  /** relayHops keeps one Hop per (destination, next hop) so its counters survive rebuilds. */
  private relayHops = new Map<string, Hop>();
  /** collisions counts topology entries refused because another router uses our name. */
  private collisions = 0;
  private readonly refusalsLogged = new Map<string, number>();
  private heartbeatTimer: NodeJS.Timeout | undefined;
  /** onTargetsChanged is called after connect/forget so the owner can persist targets. */
  onTargetsChanged: ((targets: string[]) => void) | undefined;
  /** onPeersForgotten is called with peers dropped from the topology (unreachable past the grace delay, or rmpeer'd). */
  onPeersForgotten: ((peers: PeerName[]) => void) | undefined;
  /** gossipers are subsystems (DNS) riding their own gossip channels; registered before or after start. */
  private readonly gossipers: { name: string; gossiper: Gossiper; channel: GossipChannel | undefined }[] = [];

  constructor(opts: RouterOptions) {
    this.opts = opts;
    this.name = opts.name;
    this.nickname = opts.nickname;
    this.uid = opts.uid;
    this.log = opts.log ?? noopLogger;
    this.routes = emptyRoutes(opts.name);
    for (const a of opts.vxlanPeers ?? []) this.kernelVxlanPeers.add(ipToU32(a));
    const ipamOpts = opts.ipam ?? { init: { mode: 'auto', alone: true } };
    this.ipam = new IpamService(
      {
        self: opts.name,
        range: opts.ipallocRange,
        init: ipamOpts.init,
        persisted: ipamOpts.persisted,
        persist: ipamOpts.persist,
        allocateTimeoutMs: ipamOpts.allocateTimeoutMs,
        expectCluster: ipamOpts.expectCluster,
        reachable: () => this.routes.reachable,
        log: this.log,
        onRingChange: () => this.onRingChange(),
      },
      {
        broadcast: (payload, include) => this.ipamChannel?.broadcast(payload, include),
        unicast: (dst, payload) => this.ipamChannel?.unicast(dst, payload) ?? false,
      },
    );
  }

  /** mtu is the overlay MTU in use (0 before start). */
  get mtu(): number {
    return this.mtuValue;
  }

  /** controlPort is the TCP port control connections are accepted on (0 before start). */
  get controlPort(): number {
    return this.maker?.address().port ?? 0;
  }

  /**
   * isReady is true once start() has completed and until stop(), except while IPAM takes back
   * the addresses in use here after a lost state (ipam.reclaim): a launch waits for that.
   */
  get isReady(): boolean {
    return this.ready && !this.ipam.reclaiming;
  }

  /** start opens the device and sockets, starts forwarding and the connection maker; idempotent. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    try {
      await this.openDataPlane();
      this.startMesh();
      this.maker = new ConnectionMaker({
        host: this.opts.listenHost ?? '0.0.0.0',
        port: this.opts.port,
        local: {
          name: this.name,
          nickname: this.nickname,
          uid: this.uid,
          sleevePort: this.sleeveConn?.port ?? this.opts.port,
          vxlanPort: this.vxlanConn?.port ?? this.opts.vxlanPort,
          vni: this.opts.vni,
          encap: this.opts.encap,
          mtu: this.mtuValue,
        },
        password: this.opts.password,
        connLimit: this.opts.connLimit ?? 200,
        log: this.log,
      });
      this.maker.on('connection-established', (conn: Connection) => this.onEstablished(conn));
      this.maker.on('connection-closed', (conn: Connection) => this.onClosed(conn));
      await this.maker.start();
      this.learnTimer = setInterval(() => this.forwarder?.learned.expire(Date.now() - 300_000), 30_000);
      this.learnTimer.unref();
      this.heartbeatTimer = setInterval(() => this.heartbeat(), DATA_HEARTBEAT_INTERVAL_MS);
      this.heartbeatTimer.unref();
      this.gossipTimer = setInterval(() => this.mux?.tick(), GOSSIP_INTERVAL_MS);
      this.gossipTimer.unref();
      this.ready = true;
      this.log.info('router started', {
        peer: this.name,
        nickname: this.nickname,
        device: this.tun?.name,
        encap: this.opts.encap,
        mtu: this.mtuValue,
      });
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** startMesh creates the topology (with our own entry) and the gossip channels. */
  private startMesh(): void {
    this.topology = new Topology({
      name: this.name,
      nickname: this.nickname,
      uid: this.uid.toString(),
      incarnation: this.opts.incarnation ?? this.startedAt,
      version: 1,
      connections: [],
      cidrs: this.announced(),
      sleevePort: this.sleeveConn?.port ?? this.opts.port,
      vxlanPort: this.vxlanConn?.port ?? this.opts.vxlanPort,
      encap: this.opts.encap,
    });
    this.mux = new GossipMux({
      local: this.name,
      send: (neighbour, channel, payload) => {
        this.peers.get(neighbour)?.conn.send({ t: 'gossip', channel, payload });
      },
      neighbours: () => [...this.peers.keys()],
      routes: () => this.routes,
      random: Math.random,
      log: this.log,
    });
    this.topoChannel = this.mux.addChannel(
      TOPOLOGY_CHANNEL,
      new TopologyGossiper(this.topology, (result) => this.onTopologyMerge(result)),
    );
    this.ipamChannel = this.mux.addChannel(IPAM_CHANNEL, this.ipam.gossiper);
    for (const g of this.gossipers) g.channel = this.mux.addChannel(g.name, g.gossiper);
    this.ipam.start();
  }

  /**
   * addGossiper gives a subsystem (e.g. DNS records) its own gossip channel over the mesh; returns
   * the channel's sending side, usable at once (sends before start are dropped).
   */
  addGossiper(name: string, gossiper: Gossiper): Gossip {
    if (name === TOPOLOGY_CHANNEL || name === IPAM_CHANNEL || this.gossipers.some((g) => g.name === name)) {
      throw new InputError(`gossip channel "${name}" is already in use`);
    }
    const entry = { name, gossiper, channel: this.mux?.addChannel(name, gossiper) };
    this.gossipers.push(entry);
    return {
      broadcast: (payload, include) => entry.channel?.broadcast(payload, include),
      unicast: (dst, payload) => entry.channel?.unicast(dst, payload) ?? false,
    };
  }

  /** onRingChange re-announces what moved between the ring and explicit claims, and reroutes. */
  private onRingChange(): void {
    if (!this.started) return;
    if (this.announced().join() !== this.lastAnnounced) this.updateLocal();
    else this.rebuild();
  }

  /** updateLocal publishes our own connections and addresses: a new version of our entry, gossiped. */
  private updateLocal(): void {
    const topology = this.topology;
    if (topology === undefined || !this.started) return;
    const connections: ConnectionSummary[] = [...this.peers.values()].map((st) => ({
      peer: st.conn.remote.name,
      addr: st.conn.remote.addr,
      tcpPort: st.conn.remote.tcpPort,
      outbound: st.conn.outbound,
      established: linkState(st).state === 'established',
    }));
    const cidrs = this.announced();
    this.lastAnnounced = cidrs.join();
    topology.setLocal({ connections, cidrs });
    // Our direct neighbours always hear of a change to their own link from us.
    this.topoChannel?.broadcast(topology.encode([this.name]), [...this.peers.keys()]);
    this.recompute();
  }

  private onTopologyMerge(result: MergeResult): void {
    const now = Date.now();
    for (const r of result.rejected) {
      if (r.reason === REJECT_COLLISION) this.collisions++;
      // The same refusal comes back with every full state a peer sends: log it once a minute.
      const key = `${r.entry.name} ${r.reason}`;
      if ((this.refusalsLogged.get(key) ?? 0) + 60_000 > now) continue;
      this.refusalsLogged.set(key, now);
      const fields = { peer: r.entry.name, nickname: r.entry.nickname, reason: r.reason };
      if (r.reason === REJECT_COLLISION) {
        this.log.error('another router uses our peer name', { ...fields, code: 'EWEFT_PEER_NAME_COLLISION' });
      } else {
        this.log.warn('topology entry refused', fields);
      }
    }
    if (result.changed.length > 0) this.recompute();
  }

  /**
   * recompute derives routes from the topology, connects to newly discovered peers, schedules
   * forgetting unreachable ones, and installs a new forwarding table. Off the hot path.
   */
  private recompute(): void {
    const topology = this.topology;
    if (topology === undefined || !this.started) return;
    const entries = topology.entries();
    this.routes = computeRoutes(this.name, entries);
    this.rediscover(entries);
    this.ipam.onTopologyChange();
    if (unreachable(entries, this.routes).length > 0 && this.gcTimer === undefined) {
      this.gcTimer = setTimeout(() => {
        this.gcTimer = undefined;
        const t = this.topology;
        if (t === undefined) return;
        const gone = t.remove(unreachable(t.entries(), this.routes));
        if (gone.length > 0) {
          this.log.info('forgot unreachable peers', { count: gone.length });
          this.recompute();
          this.onPeersForgotten?.(gone);
        }
      }, PEER_GC_DELAY_MS);
      this.gcTimer.unref();
    }
    this.rebuild();
  }

  /**
   * rediscover targets the peers our peers are connected to and we are not (unless discovery is
   * off). Up to `discoveryDegree` connections that makes a full mesh; past it, each router dials
   * only enough discovered peers to reach the degree (chosen by a hash of both names, so choices
   * spread evenly) and reaches the rest through relays: gossip then grows O(N), not O(N²).
   */
  private rediscover(entries: readonly { name: PeerName; connections: readonly ConnectionSummary[] }[]): void {
    if (this.opts.discovery === false || this.maker === undefined) return;
    const addrOf = new Map<PeerName, string>();
    for (const e of entries) {
      for (const c of e.connections) {
        if (c.peer === this.name || this.peers.has(c.peer)) continue;
        addrOf.set(c.peer, `${c.addr}:${c.tcpPort}`);
      }
    }
    const room = Math.max(0, (this.opts.discoveryDegree ?? DISCOVERY_DEGREE) - this.peers.size);
    const chosen = [...addrOf.keys()]
      .sort((a, b) => pairHash(this.name, a) - pairHash(this.name, b) || (a < b ? -1 : 1))
      .slice(0, room);
    const want = new Set(chosen.map((p) => addrOf.get(p) as string));
    const stale = [...this.discovered].filter((t) => !want.has(t) && !this.persistent.has(t));
    if (stale.length > 0) this.maker.removeTargets(stale);
    const fresh = [...want].filter((t) => !this.discovered.has(t));
    this.discovered = want;
    if (fresh.length > 0) this.maker.addTargets(fresh);
  }

  private async openDataPlane(): Promise<void> {
    const o = this.opts;
    if (o.tun !== undefined) {
      this.tun = o.tun;
      this.mtuValue = o.mtu ?? 1400;
    } else {
      const tun = LinuxTun.open({ name: o.device, mode: 'tun', vnetHdr: true });
      this.tun = tun;
      this.vnetHdr = true;
      tun.setVnetHdrSize(VNET_HDR_LEN);
      this.underlayMtuValue = await underlayMtu(tun.name);
      const mtu = o.mtu ?? this.underlayMtuValue - ENCAP_OVERHEAD_MAX;
      this.mtuValue = Math.max(MTU_MIN, Math.min(MTU_MAX, mtu));
      await tun.setMtu(this.mtuValue);
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
    this.vxlanConn = o.vxlanConn ?? (await this.openConn(host, o.vxlanPort));
    this.forwarder = new Forwarder({
      tun: this.tun,
      sleeve: this.sleeveConn,
      vxlan: this.vxlanConn,
      localName: this.name,
      vni: o.vni,
      vxlanPort: o.vxlanPort,
      counters: this.counters,
      log: this.log,
      vnetHdr: this.vnetHdr,
      underlayMtu: this.underlayMtuValue,
      onControl: (d) => this.onDataControl(d),
    });
    this.forwarder.start();
  }

  private async openConn(host: string, port: number): Promise<PacketConn> {
    const bindAddr = host === '0.0.0.0' ? 0 : ipToU32(host);
    if ((this.opts.datapath ?? 'native') === 'native') {
      return NativeUdp.open({
        bindAddr,
        port,
        rcvbuf: UDP_RCVBUF_BYTES,
        sndbuf: UDP_SNDBUF_BYTES,
        offload: this.opts.offload !== false,
      });
    }
    return DgramUdp.open({ bindAddr, port, rcvbuf: UDP_RCVBUF_BYTES, sndbuf: UDP_SNDBUF_BYTES });
  }

  /** stop closes every connection, socket and the device; idempotent. */
  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    this.ready = false;
    if (this.learnTimer !== undefined) clearInterval(this.learnTimer);
    this.learnTimer = undefined;
    if (this.heartbeatTimer !== undefined) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
    if (this.gossipTimer !== undefined) clearInterval(this.gossipTimer);
    this.gossipTimer = undefined;
    if (this.gcTimer !== undefined) clearTimeout(this.gcTimer);
    this.gcTimer = undefined;
    this.ipam.stop();
    await this.maker?.stop();
    this.maker = undefined;
    this.forwarder?.stop();
    this.forwarder = undefined;
    if (this.opts.sleeveConn === undefined) this.sleeveConn?.close();
    if (this.opts.vxlanConn === undefined) this.vxlanConn?.close();
    if (this.opts.tun === undefined) this.tun?.close();
    this.sleeveConn = undefined;
    this.vxlanConn = undefined;
    this.tun = undefined;
    this.peers.clear();
    this.peersByKey.clear();
    this.topology = undefined;
    this.mux = undefined;
    this.topoChannel = undefined;
    this.ipamChannel = undefined;
    for (const g of this.gossipers) g.channel = undefined;
    this.routes = emptyRoutes(this.name);
    this.discovered.clear();
    this.relayHops.clear();
    this.log.info('router stopped', { peer: this.name });
  }

  /** connect adds persistent connection targets (host[:port]); returns the persistent list. */
  connect(targets: readonly string[]): string[] {
    const maker = this.requireMaker();
    const normal = targets.map((t) => parseTarget(t).address);
    maker.addTargets(normal);
    for (const t of normal) this.persistent.add(t);
    const list = this.targetList();
    this.onTargetsChanged?.(list);
    return list;
  }

  /** forget removes connection targets (persistent or discovered); established connections stay until they drop. */
  forget(targets: readonly string[]): string[] {
    const maker = this.requireMaker();
    const normal = targets.map((t) => parseTarget(t).address);
    maker.removeTargets(normal);
    for (const t of normal) this.persistent.delete(t);
    const list = this.targetList();
    this.onTargetsChanged?.(list);
    return list;
  }

  /** targetList returns the persistent connection targets (from launch and connect). */
  targetList(): string[] {
    return [...this.persistent];
  }

  /**
   * expose gives this host an overlay address: the CIDR given, or one from IPAM (with the range's
   * prefix) when none is given. It is added to the TUN device and routed here by every peer.
   * Idempotent: without a CIDR it returns the address the host already has.
   */
  async expose(cidr?: Cidr): Promise<Cidr[]> {
    if (cidr === undefined) {
      const have = this.exposed.find((c) => cidrContains(this.opts.ipallocRange, c.addr));
      if (have !== undefined) return [...this.exposed];
      const addr = await this.ipam.allocate(EXPOSE_OWNER);
      cidr = { addr, prefix: this.opts.ipallocRange.prefix };
    } else if (cidr.prefix === 32 || cidr.prefix < 1) {
      throw new InputError(`cannot expose ${formatCidr(cidr)}: want a prefix between /1 and /31`);
    }
    const same = this.exposed.find((c) => c.addr === cidr.addr);
    if (same !== undefined) {
      if (same.prefix === cidr.prefix) return [...this.exposed];
      throw new WeftError('EWEFT_CONFLICT', `${formatIPv4(cidr.addr)} is already exposed as ${formatCidr(same)}`);
    }
    const had = this.ipam.lookup(EXPOSE_OWNER);
    try {
      this.checkFree(cidr.addr, EXPOSE_OWNER);
      this.ipam.claim(EXPOSE_OWNER, cidr.addr);
      if (this.tun instanceof LinuxTun) await this.tun.addAddress(formatCidr(cidr));
    } catch (err) {
      this.ipam.keepOnly(EXPOSE_OWNER, had);
      throw err;
    }
    this.exposed = [...this.exposed, cidr];
    this.updateLocal();
    this.log.info('address exposed', { cidr: formatCidr(cidr) });
    return [...this.exposed];
  }

  /** hide removes an exposed address (or all of them when `cidr` is undefined); returns what remains. */
  async hide(cidr?: Cidr): Promise<Cidr[]> {
    const gone = cidr === undefined ? this.exposed : this.exposed.filter((c) => c.addr === cidr.addr);
    if (cidr !== undefined && gone.length === 0) {
      throw new WeftError('EWEFT_NOT_FOUND', `${formatIPv4(cidr.addr)} is not exposed`);
    }
    for (const c of gone) {
      if (this.tun instanceof LinuxTun) await this.tun.delAddress(formatCidr(c));
    }
    this.exposed = this.exposed.filter((c) => !gone.includes(c));
    this.ipam.keepOnly(
      EXPOSE_OWNER,
      this.exposed.map((c) => c.addr as IPv4),
    );
    this.updateLocal();
    return [...this.exposed];
  }

  /**
   * checkFree throws EWEFT_CONFLICT when an address is already served here (exposed or claimed by
   * a container) or announced by another peer.
   */
  checkFree(addr: number, exceptOwner?: string): void {
    const ip = formatIPv4(addr);
    if (exceptOwner !== EXPOSE_OWNER && this.exposed.some((c) => c.addr === addr))
      throw new WeftError('EWEFT_CONFLICT', `${ip} is this host's exposed address`);
    for (const [owner, addrs] of this.claims) {
      if (owner !== exceptOwner && addrs.some((c) => c.addr === addr)) {
        throw new WeftError('EWEFT_CONFLICT', `${ip} is already used by ${owner} on this host`);
      }
    }
    const host = `${ip}/32`;
    for (const e of this.topology?.entries() ?? []) {
      if (e.name !== this.name && e.cidrs.includes(host)) {
        throw new WeftError('EWEFT_CONFLICT', `${ip} is already in use by peer ${e.name}`);
      }
    }
  }

  /**
   * allocate gives `owner` (a container reference) an address from this peer's IPAM space, waiting
   * for space from peers if need be. The owner's existing address is returned again.
   */
  allocate(owner: string, subnet?: Cidr): Promise<IPv4> {
    if (owner === EXPOSE_OWNER) {
      return Promise.reject(new InputError(`"${EXPOSE_OWNER}" is reserved for the host's address`));
    }
    return this.ipam.allocate(owner, subnet);
  }

  /**
   * reserve records given addresses for `owner` in IPAM before they are plumbed: each must be free
   * here and, inside the range, in this peer's space. Throws EWEFT_CONFLICT saying who has it.
   */
  reserve(owner: string, addrs: readonly Cidr[]): void {
    for (const a of addrs) this.checkFree(a.addr, owner);
    for (const a of addrs) this.ipam.claim(owner, a.addr as IPv4);
  }

  /**
   * claim makes this router serve container addresses for `owner` (a container reference): they
   * are reserved in IPAM and routed here by every peer. Replaces the owner's previous claim.
   */
  claim(owner: string, addrs: readonly Cidr[]): void {
    this.reserve(owner, addrs);
    this.claims.set(owner, [...addrs]);
    this.updateLocal();
  }

  /** release stops serving an owner's addresses and frees them in IPAM; returns them (empty when it had none). */
  release(owner: string): Cidr[] {
    const had = this.claims.get(owner) ?? [];
    this.ipam.free(owner);
    if (this.claims.delete(owner)) this.updateLocal();
    return had;
  }

  /**
   * rmpeer takes over the address space of a peer gone for good (by name, or by nickname while it
   * is still in the topology). Refused while the peer is reachable. Run it on one host only.
   */
  rmpeer(peer: string): { peer: PeerName; addresses: number } {
    const name = this.resolvePeer(peer);
    if (name === this.name) throw new InputError('cannot rmpeer this router itself: use `weft reset` to leave');
    if (this.peers.has(name) || this.routes.unicast.has(name)) {
      throw new WeftError('EWEFT_CONFLICT', `peer ${name} is reachable: stop it (or \`weft reset\` it) first`);
    }
    if (!this.ipam.spans().some((s) => s.owner === name)) {
      throw new WeftError('EWEFT_NOT_FOUND', `peer ${name} owns no address space`);
    }
    const addresses = this.ipam.rmpeer(name);
    this.onPeersForgotten?.([name]);
    return { peer: name, addresses };
  }

  /**
   * leave hands all our address space to a reachable peer (the one owning the most) and gossips
   * it, for `weft reset`; the caller detaches containers first. Returns the heir, or undefined
   * when no peer is reachable (the space stays ours until someone runs rmpeer).
   */
  leave(): { heir: PeerName | undefined; addresses: number } {
    const owned = new Map<string, number>();
    for (const s of this.ipam.spans()) owned.set(s.owner, (owned.get(s.owner) ?? 0) + s.end - s.start);
    const candidates = [...this.routes.unicast.keys()]
      .filter((p) => p !== this.name)
      .sort((a, b) => (owned.get(b) ?? 0) - (owned.get(a) ?? 0) || (a < b ? -1 : 1));
    const heir = candidates[0];
    if (heir === undefined) return { heir: undefined, addresses: owned.get(this.name) ?? 0 };
    return { heir, addresses: this.ipam.leave(heir) };
  }

  private resolvePeer(peer: string): PeerName {
    const entries = this.topology?.entries() ?? [];
    const byName = entries.find((e) => e.name === peer) ?? this.ipam.spans().find((s) => s.owner === peer);
    if (byName !== undefined) return peer as PeerName;
    const byNick = entries.filter((e) => e.nickname === peer);
    if (byNick.length === 1) return byNick[0]!.name;
    if (byNick.length > 1) throw new InputError(`nickname "${peer}" is ambiguous: give the peer name`);
    throw new WeftError('EWEFT_NOT_FOUND', `no peer "${peer}" (give a peer name like 0a:1b:2c:3d:4e:5f)`);
  }

  /**
   * addVxlanPeer lets the kernel vxlan device at underlay address `addr` send VXLAN to this router
   * (endpoints behind it are learned); removeVxlanPeer undoes it. Not persisted.
   */
  addVxlanPeer(addr: string): void {
    this.kernelVxlanPeers.add(ipToU32(addr));
    this.rebuild();
  }

  removeVxlanPeer(addr: string): void {
    this.kernelVxlanPeers.delete(ipToU32(addr));
    this.rebuild();
  }

  /** vxlanPeers lists the configured kernel vxlan peers. */
  vxlanPeers(): string[] {
    return [...this.kernelVxlanPeers].map((a) => formatIPv4(a as IPv4));
  }

  /** exposedCidrs lists the host's overlay addresses. */
  exposedCidrs(): Cidr[] {
    return [...this.exposed];
  }

  /** status returns a JSON-safe snapshot of everything the router knows now. */
  status(): RouterStatus {
    return buildStatus({
      version: this.opts.version ?? '0.0.0',
      name: this.name,
      nickname: this.nickname,
      uid: this.uid,
      ready: this.ready,
      startedAt: this.startedAt,
      encap: this.opts.encap,
      port: this.controlPort || this.opts.port,
      sleevePort: this.sleeveConn?.port ?? this.opts.port,
      vxlanPort: this.vxlanConn?.port ?? this.opts.vxlanPort,
      vni: this.opts.vni,
      mtu: this.mtuValue,
      device: this.tun?.name ?? this.opts.device,
      datapath: this.opts.datapath ?? 'native',
      offload: this.vnetHdr && this.opts.offload !== false,
      udpOffload: this.udpOffload(),
      encryption: this.opts.password !== undefined,
      ipallocRange: formatCidr(this.opts.ipallocRange),
      exposed: this.exposed.map(formatCidr),
      peers: this.peerStatus(),
      connections: this.maker?.connections() ?? [],
      targets: this.maker?.targets() ?? [],
      counters: this.counters.snapshot(),
      learned: this.forwarder?.learned.snapshot(LEARNED_STATUS_SAMPLE) ?? [],
      learnedCount: this.forwarder?.learned.size ?? 0,
      vxlanPeers: this.vxlanPeers(),
      kernelDrops:
        this.sleeveConn instanceof NativeUdp
          ? readKernelDrops({ sleeve: this.sleeveConn.port, vxlan: this.vxlanConn?.port ?? 0 })
          : undefined,
      terminations: Object.fromEntries(this.maker?.terminations ?? []),
      ipam: this.ipam.status((p) => {
        const e = this.topology?.entries().find((x) => x.name === p);
        return { nickname: e?.nickname, reachable: this.routes.unicast.has(p) };
      }),
      gossip: {
        collisions: this.collisions,
        channels: (this.mux?.channels() ?? []).map((c) => ({ name: c.name, ...c.stats })),
        unknownChannels: this.mux === undefined ? undefined : { ...this.mux.unknown },
      },
    });
  }

  /** peerStatus describes every peer in the topology: how it is reached and what it serves. */
  private peerStatus(): PeerStatus[] {
    const out: PeerStatus[] = [];
    for (const e of this.topology?.entries() ?? []) {
      if (e.name === this.name) continue;
      const st = this.peers.get(e.name);
      const next = this.routes.unicast.get(e.name);
      const relayed = next !== undefined && next !== e.name;
      const link = st === undefined ? undefined : linkState(st);
      const hops = relayed ? [this.relayHops.get(`${e.name}/${next}`)] : [st?.sleeveHop, st?.vxlanHop];
      const sum = (k: 'txPackets' | 'txBytes' | 'rxPackets' | 'rxBytes') => hops.reduce((n, h) => n + (h?.[k] ?? 0), 0);
      out.push({
        name: e.name,
        nickname: e.nickname,
        uid: e.uid,
        addr: st?.conn.remote.addr ?? '',
        encap: relayed || st === undefined ? 'sleeve' : encapName(st.hop.encap),
        mtu: st?.conn.remote.mtu ?? 0,
        cidrs: [...e.cidrs],
        connections: e.connections.length,
        txPackets: sum('txPackets'),
        txBytes: sum('txBytes'),
        rxPackets: sum('rxPackets'),
        rxBytes: sum('rxBytes'),
        state: relayed ? 'relayed' : directState(link, next === e.name),
        stateSince: link?.since ?? 0,
        reason: link?.reason,
        rttMs: link?.rttMs,
        via: relayed ? next : undefined,
        pmtu: relayed ? this.peers.get(next)?.pmtu.status() : st?.pmtu.status(),
      });
    }
    return out;
  }

  private requireMaker(): ConnectionMaker {
    if (this.maker === undefined) throw new WeftError('EWEFT_NOT_READY', 'router is not running');
    return this.maker;
  }

  private onEstablished(conn: Connection): void {
    const r = conn.remote;
    const vx = this.opts.encap === 'vxlan' && r.encap === 'vxlan';
    const hi = peerNameHi(r.name);
    const lo = peerNameLo(r.name);
    const addr = ipToU32(r.addr);
    const pmtu = new PathMtu(this.routeMtu(addr));
    const sleeveHop = new Hop(r.name, hi, lo, hi, lo, addr, r.sleevePort, Encap.Sleeve, r.sleevePort, pmtu.pmtu);
    const vxlanHop = vx
      ? new Hop(r.name, hi, lo, hi, lo, addr, r.vxlanPort, Encap.Vxlan, r.sleevePort, pmtu.pmtu)
      : undefined;
    const now = preciseNow();
    const st: PeerState = {
      conn,
      hop: sleeveHop,
      sleeveHop,
      data: new DataPath(now),
      vxlanHop,
      vxData: vx ? new DataPath(now) : undefined,
      vxlanPort: r.vxlanPort,
      pmtu,
    };
    this.peers.set(r.name, st);
    this.peersByKey.set(peerKey(hi, lo), st);
    this.sendHeartbeats(st, now);
    conn.on('message', (msg: PeerMessage) => {
      if (msg.t === 'gossip') this.mux?.receive(r.name, msg.channel, msg.payload);
    });
    this.mux?.onNewNeighbour(r.name);
    this.updateLocal();
    this.log.info('peer connected', {
      peer: r.name,
      nickname: r.nickname,
      remoteAddr: r.addr,
      overlay: vx ? 'vxlan' : 'sleeve',
    });
  }

  private sendHeartbeats(st: PeerState, now: number): void {
    this.forwarder?.sendHeartbeat(st.sleeveHop, now);
    if (st.vxlanHop !== undefined) this.forwarder?.sendVxlanHeartbeat(st.vxlanHop, st.vxlanPort, now);
    // Path MTU discovery rides the heartbeat timer: a probe is a heartbeat padded to the size tried.
    const probe = st.pmtu.tick(now, this.kernelPathMtu(st.sleeveHop.addr));
    if (probe > 0 && this.forwarder?.sendHeartbeat(st.sleeveHop, now, probe) === false) st.pmtu.sendFailed(now);
    this.applyPmtu(st);
  }

  /**
   * applyPmtu gives the peer's direct hops, and the relay hops through it, the path MTU in use.
   * A relayed datagram crosses more than this first hop; its relay forwards it unchanged and
   * refuses (counts) one too large for the next link.
   */
  private applyPmtu(st: PeerState): void {
    const pmtu = st.pmtu.pmtu;
    if (st.sleeveHop.pmtu === pmtu) return;
    this.log.info('path mtu', { peer: st.sleeveHop.peer, pmtu, state: st.pmtu.state });
    st.sleeveHop.pmtu = pmtu;
    if (st.vxlanHop !== undefined) st.vxlanHop.pmtu = pmtu;
    for (const h of this.relayHops.values()) {
      if (h.addr === st.sleeveHop.addr && h.sleevePort === st.sleeveHop.sleevePort) h.pmtu = pmtu;
    }
  }

  /** routeMtu is the MTU of the route towards an underlay address: where path MTU discovery starts. */
  private routeMtu(addr: number): number {
    const k = this.kernelPathMtu(addr);
    return k > 0 ? k : this.underlayMtuValue;
  }

  /** kernelPathMtu is the kernel's path MTU towards addr (0 when unknown: injected sockets, no addon). */
  private kernelPathMtu(addr: number): number {
    if (this.opts.sleeveConn !== undefined || (this.opts.datapath ?? 'native') !== 'native') return 0;
    const n = tryLoadNative();
    const m = n?.pathMtu(addr) ?? 0;
    return Math.max(m, 0);
  }

  /** udpOffload says which UDP offloads the data sockets use, and why GSO is off if it is. */
  private udpOffload(): { gso: boolean; gro: boolean; reason?: string } {
    const c = this.sleeveConn;
    if (c === undefined) return { gso: false, gro: false };
    const reason = c instanceof NativeUdp && c.gsoOffReason !== '' ? c.gsoOffReason : undefined;
    return { gso: c.gso, gro: c.gro, ...(reason === undefined ? {} : { reason }) };
  }

  /** heartbeat sends data-path heartbeats to every peer and re-evaluates their data paths. */
  private heartbeat(): void {
    const now = preciseNow();
    let changed = false;
    for (const st of this.peers.values()) {
      this.sendHeartbeats(st, now);
      changed = this.evaluate(st, now) || changed;
    }
    if (changed) this.updateLocal();
  }

  /**
   * evaluate updates both data paths of a peer and picks the overlay: VXLAN while its heartbeats
   * flow both ways, else sleeve (the overlay switch). Returns true when anything changed.
   */
  private evaluate(st: PeerState, now: number): boolean {
    const timeout = this.opts.peerTimeoutMs ?? PEER_DOWN_TIMEOUT_MS;
    const before = linkState(st).state;
    let changed = st.data.evaluate(now, timeout);
    if (st.vxData !== undefined) changed = st.vxData.evaluate(now, timeout) || changed;
    const hop = st.vxlanHop !== undefined && st.vxData?.state === 'established' ? st.vxlanHop : st.sleeveHop;
    const link = linkState(st);
    const fields = { peer: st.sleeveHop.peer, overlay: encapName(hop.encap), reason: link.reason };
    if (hop !== st.hop) {
      this.log.info('overlay switched', { ...fields, from: encapName(st.hop.encap) });
      st.hop = hop;
      changed = true;
    }
    if (link.state !== before) {
      if (link.state === 'failed') this.log.warn('data path failed', fields);
      else if (link.state === 'established') this.log.info('data path established', { ...fields, from: before });
    }
    return changed;
  }

  /** onDataControl records heartbeats and acks from the forwarder, per overlay. */
  private onDataControl(d: ControlDatagram): void {
    const st = this.peersByKey.get(peerKey(d.srcHi, d.srcLo));
    if (st === undefined) return;
    const path = d.overlay === Encap.Vxlan ? st.vxData : st.data;
    if (path === undefined) return;
    const now = preciseNow();
    if (d.type === SleeveType.Heartbeat) {
      path.heard(now);
    } else {
      path.acked(now, d.stamp);
      if (d.overlay === Encap.Sleeve && d.size > 0) {
        st.pmtu.acked(d.size, now);
        this.applyPmtu(st);
      }
    }
    if (this.evaluate(st, now)) this.updateLocal();
  }

  private onClosed(conn: Connection): void {
    if (!conn.wasEstablished) return;
    const name = conn.remote.name;
    const st = this.peers.get(name);
    if (st === undefined || st.conn !== conn) return;
    this.peers.delete(name);
    this.peersByKey.delete(peerKey(st.hop.nameHi, st.hop.nameLo));
    this.updateLocal();
    this.log.info('peer disconnected', { peer: name });
  }

  /**
   * announced is what we tell peers we serve as /32s: exposed and container addresses that are not
   * in our IPAM space (addresses in it are routed here by the ring itself).
   */
  private announced(): string[] {
    return this.localAddrs()
      .filter((a) => !this.ipam.isOurs(a))
      .map((a) => `${formatIPv4(a)}/32`);
  }

  /** localAddrs lists the addresses this host serves itself. */
  private localAddrs(): number[] {
    const out = this.exposed.map((c) => c.addr as number);
    for (const addrs of this.claims.values()) for (const c of addrs) out.push(c.addr);
    return out;
  }

  /**
   * rebuild makes a new Fib from the topology, the routes and the IPAM ring and installs it with
   * one assignment: a peer reached directly uses the direct hop (sleeve or VXLAN); a peer reached
   * through another uses sleeve towards that next hop, with the final peer named in the header.
   * Addresses go to the peer announcing them, else to the owner of their part of the ring.
   */
  private rebuild(): void {
    const topology = this.topology;
    const routes: FibRoute[] = [];
    const hops: Hop[] = [];
    const hopOf = new Map<PeerName, Hop>();
    const relayHops = new Map<string, Hop>();
    for (const e of topology?.entries() ?? []) {
      if (e.name === this.name) continue;
      const next = this.routes.unicast.get(e.name);
      if (next === undefined) continue;
      let hop: Hop | undefined;
      if (next === e.name) {
        hop = this.peers.get(e.name)?.hop;
      } else {
        const via = this.peers.get(next)?.hop;
        if (via !== undefined) {
          const key = `${e.name}/${next}`;
          hop = this.relayHops.get(key) ?? relayHop(e.name, via);
          relayHops.set(key, hop);
        }
      }
      if (hop === undefined) continue;
      hops.push(hop);
      hopOf.set(e.name, hop);
      for (const c of e.cidrs) {
        try {
          routes.push({ cidr: parseCidr(c), hop });
        } catch {
          // entries are validated on merge; an unparsable CIDR here is skipped, not fatal
        }
      }
    }
    this.relayHops = relayHops;
    const ranges: FibRange[] = [];
    for (const span of this.ipam.spans()) {
      const hop = span.owner === this.name ? undefined : hopOf.get(span.owner);
      if (hop !== undefined) ranges.push({ start: span.start, end: span.end, hop });
    }
    // Senders: every peer we hold a control connection with (heartbeats flow before routes exist).
    const endpoints: Hop[] = [];
    for (const st of this.peers.values()) {
      endpoints.push(st.sleeveHop);
      if (st.vxlanHop !== undefined) endpoints.push(st.vxlanHop);
    }
    const fib = Fib.build(routes, this.localAddrs(), hops, ranges, {
      endpoints,
      kernelVxlanPeers: [...this.kernelVxlanPeers],
    });
    if (this.forwarder !== undefined) this.forwarder.fib = fib;
  }
}

/**
 * LEARNED_STATUS_SAMPLE bounds the learned VXLAN endpoints status lists (the count is always
 * given): building and sending status must stay cheap however large the table is, so polling it
 * never delays the datapath, which shares the thread.
 */
export const LEARNED_STATUS_SAMPLE = 100;

/** EXPOSE_OWNER is the IPAM owner key of the host's own overlay addresses. */
export const EXPOSE_OWNER = 'weft:expose';

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

/** preciseNow is the time in ms since the epoch with sub-millisecond precision (heartbeat RTTs). */
function preciseNow(): number {
  return performance.timeOrigin + performance.now();
}

/** pairHash mixes two peer names into a 32-bit number (FNV-1a), the same on both peers' sides. */
function pairHash(a: string, b: string): number {
  const s = a < b ? `${a}${b}` : `${b}${a}`;
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** relayHop is the hop towards `dest` through the neighbour `via`: sleeve to its sleeve port. */
function relayHop(dest: PeerName, via: Hop): Hop {
  const hi = peerNameHi(dest);
  const lo = peerNameLo(dest);
  return new Hop(dest, hi, lo, hi, lo, via.addr, via.sleevePort, Encap.Sleeve, via.sleevePort, via.pmtu);
}

function ipToU32(s: string): number {
  const m = /^(?:::ffff:)?(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s);
  if (m === null) throw new InputError(`not an IPv4 address: "${s}"`);
  return ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
}
