/**
 * Router is one host's router, a thin composition of named parts:
 *
 * ```
 *  DataPlane      TUN device, data sockets, Forwarder (data-plane.ts)
 *  MeshCore       topology, gossip channels, routes, discovery, peer GC (mesh.ts)
 *  OverlaySwitch  per-peer hops, heartbeats, sleeve/VXLAN choice, path MTU (overlay/switch.ts)
 *  FibCompiler    topology + routes + ring → forwarding table (fib-compiler.ts)
 *  LocalAddresses exposed and container addresses (local-addresses.ts)
 *  IpamFacade     allocate, rmpeer, leave (ipam-facade.ts) over IpamService (ipam/service.ts)
 *  ConnectionMaker control connections and targets (connection-maker.ts)
 *  assembleStatus the status snapshot (router-status.ts)
 * ```
 *
 * Router owns start/stop and the wiring between them: a connection established or closed
 * changes the switch and our topology entry; a topology change rebuilds the forwarding table.
 *
 * Over 400 lines for a reason: besides the wiring it carries the whole public API control/ and
 * the tests use (connect, expose, allocate, status, ...), each a documented one-line delegation
 * to the part that does the work, so callers keep one object.
 */
import { type Clock, realClock, type Timer } from '../common/clock.js';
import { WeftError } from '../common/errors.js';
import type { Startable } from '../common/lifecycle.js';
import type { Logger } from '../common/log.js';
import { noopLogger } from '../common/log.js';
import type { Cidr, IPv4, PeerName } from '../common/types.js';
import { addressIn, formatCidr, formatIPv4 } from '../common/types.js';
import type { Connection } from './connection.js';
import { ConnectionMaker, parseTarget } from './connection-maker.js';
import { CONN_LIMIT_DEFAULT } from './constants.js';
import { derivePasswordKey } from './crypto/keys.js';
import { DataPlane } from './data-plane.js';
import { Counters } from './datapath/counters.js';
import { FibCompiler } from './fib-compiler.js';
import type { Gossip, Gossiper } from './gossip/gossip.js';
import { IPAM_CHANNEL } from './ipam/ipam.js';
import type { Span } from './ipam/ring.js';
import { IpamService } from './ipam/service.js';
import { IpamFacade } from './ipam-facade.js';
import { bareWant } from './kernel/bare-peers.js';
import { FastDataPath, spanCidrs } from './kernel/fast-data-path.js';
import { type BareWant, type FastPeer, NO_BARE } from './kernel/fastdp.js';
import { EXPOSE_OWNER, LocalAddresses } from './local-addresses.js';
import { MeshCore } from './mesh.js';
import { E2E_CHANNEL, EndToEndKeys } from './overlay/e2e-keys.js';
import { fastActive, ipToU32, OverlaySwitch } from './overlay/switch.js';
import type { PeerMessage } from './protocol.js';
import { type RouterOptions, wireEncap } from './router-options.js';
import { assembleStatus, LEARNED_STATUS_SAMPLE } from './router-status.js';
import type { RouterStatus, VxlanPeerPath } from './status.js';
import { tryLoadNative } from './tun/native.js';

export type { RouterOptions };
export { EXPOSE_OWNER, LEARNED_STATUS_SAMPLE };

/** LEARNED_EXPIRY_MS: a learned VXLAN endpoint unheard this long is forgotten (checked every LEARNED_SWEEP_MS). */
const LEARNED_EXPIRY_MS = 300_000;
const LEARNED_SWEEP_MS = 30_000;

/**
 * Router is one host's router: it owns the TUN device, the data sockets, the forwarder and the
 * control connections, and turns what peers announce into the forwarding table.
 */
export class Router implements Startable {
  readonly counters = new Counters();
  readonly name: PeerName;
  readonly nickname: string;
  readonly uid: bigint;
  /** ipam allocates container and host addresses in the range (see router/ipam/service.ts). */
  readonly ipam: IpamService;
  /** onTargetsChanged is called after connect/forget so the owner can persist targets. */
  onTargetsChanged: ((targets: string[]) => void) | undefined;
  /**
   * onPeersForgotten is called with peers dropped from the topology: `forGood` false when they were
   * unreachable past the grace delay (they may come back with the same incarnation, e.g. when a
   * partition heals), true when rmpeer'd.
   */
  onPeersForgotten: ((peers: PeerName[], forGood: boolean) => void) | undefined;
  private readonly opts: RouterOptions;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly plane: DataPlane;
  private readonly mesh: MeshCore;
  private readonly links: OverlaySwitch;
  private readonly fib = new FibCompiler();
  private readonly addrs: LocalAddresses;
  private readonly ipamFacade: IpamFacade;
  private maker: ConnectionMaker | undefined;
  /** persistent are the targets given to launch/connect (saved); discovered ones are not. */
  private readonly persistent = new Set<string>();
  /** kernelVxlanPeers are the configured kernel vxlan peers' underlay addresses (see RouterOptions.vxlanPeers). */
  private readonly kernelVxlanPeers = new Set<number>();
  /** lastAnnounced is what our topology entry says we serve (re-announced when the ring moves). */
  private lastAnnounced = '';
  private started = false;
  private ready = false;
  private readonly startedAt: number;
  private learnTimer: Timer | undefined;
  /** fast is the kernel fast path (kernel/fast-data-path.ts), open with `--encap auto|fastdp`. */
  private fast: FastDataPath | undefined;
  /** fastOff says why a router that wants the fast path has none. */
  private fastOff: string | undefined;
  /** passwordKey is derivePasswordKey(password) when a password is set. */
  private readonly passwordKey: Buffer | undefined;
  /** e2e makes data keys with peers reached only through relays (a password is set). */
  private readonly e2e: EndToEndKeys | undefined;

  constructor(opts: RouterOptions) {
    this.opts = opts;
    this.name = opts.name;
    this.nickname = opts.nickname;
    this.uid = opts.uid;
    this.log = opts.log ?? noopLogger;
    const clock = opts.clock ?? realClock;
    this.clock = clock;
    this.startedAt = Math.floor(clock.now());
    for (const a of opts.vxlanPeers ?? []) this.kernelVxlanPeers.add(ipToU32(a));
    this.plane = new DataPlane(opts, this.counters, this.log);
    this.links = new OverlaySwitch({
      clock,
      log: this.log,
      encap: opts.encap,
      peerTimeoutMs: opts.peerTimeoutMs,
      ...(opts.rekeyAfterTimeMs === undefined ? {} : { rekeyAfterTimeMs: opts.rekeyAfterTimeMs }),
      forwarder: () => this.plane.forwarder,
      routeMtu: (addr) => this.plane.routeMtu(addr),
      kernelPathMtu: (addr) => this.plane.kernelPathMtu(addr),
      onPmtu: (via, pmtu) => this.fib.onPmtu(via, pmtu),
      onChange: () => {
        this.updateLocal();
        this.syncFast();
      },
      wantKeys: (peer) => this.e2e?.request(peer),
      native: tryLoadNative(),
      fastdp: () => this.fast,
    });
    this.mesh = new MeshCore({
      name: opts.name,
      clock,
      log: this.log,
      links: {
        neighbours: () => this.links.names(),
        has: (p) => this.links.has(p),
        send: (neighbour, channel, payload) => this.links.get(neighbour)?.conn.send({ t: 'gossip', channel, payload }),
      },
      discovery: opts.discovery,
      discoveryDegree: opts.discoveryDegree,
      onChange: () => {
        this.ipam.onTopologyChange();
        this.rebuild();
      },
      onPeersForgotten: (gone) => {
        this.forgetKeys(gone);
        this.onPeersForgotten?.(gone, false);
      },
    });
    if (opts.password !== undefined) {
      // One scrypt per process, shared by the control connections and the end-to-end exchange.
      const passwordKey = derivePasswordKey(opts.password);
      this.passwordKey = passwordKey;
    }
    if (this.passwordKey !== undefined && tryLoadNative() !== undefined) {
      // Without the addon's AEAD there is nothing to seal with: no exchange (its peers stay NO_KEYS).
      const passwordKey = this.passwordKey;
      let e2eGossip: Gossip | undefined;
      this.e2e = new EndToEndKeys({
        self: opts.name,
        passwordKey,
        clock,
        log: this.log,
        send: (dst, payload) => e2eGossip?.unicast(dst, payload) ?? false,
        install: (peer, keys) => this.links.installEndToEnd(peer, keys),
        cleared: (peer) => this.links.clearWant(peer),
        known: (peer) => this.mesh.topology?.get(peer) !== undefined,
      });
      e2eGossip = this.mesh.addGossiper(E2E_CHANNEL, this.e2e);
    }
    const ipamOpts = opts.ipam ?? { init: { mode: 'auto', alone: true } };
    let ipamGossip: Gossip | undefined;
    this.ipam = new IpamService(
      {
        self: opts.name,
        range: opts.ipallocRange,
        init: ipamOpts.init,
        persisted: ipamOpts.persisted,
        persist: ipamOpts.persist,
        allocateTimeoutMs: ipamOpts.allocateTimeoutMs,
        expectCluster: ipamOpts.expectCluster,
        reachable: () => this.mesh.routes.reachable,
        log: this.log,
        clock,
        onRingChange: () => this.onRingChange(),
      },
      {
        broadcast: (payload, include) => ipamGossip?.broadcast(payload, include),
        unicast: (dst, payload) => ipamGossip?.unicast(dst, payload) ?? false,
      },
    );
    ipamGossip = this.mesh.addGossiper(IPAM_CHANNEL, this.ipam.gossiper);
    this.addrs = new LocalAddresses({
      self: opts.name,
      range: opts.ipallocRange,
      ipam: this.ipam,
      log: this.log,
      tun: () => this.plane.tun,
      entries: () => this.mesh.entries(),
      onChange: () => this.updateLocal(),
    });
    this.ipamFacade = new IpamFacade({
      self: opts.name,
      ipam: this.ipam,
      entries: () => this.mesh.entries(),
      forgottenEntries: () => this.mesh.topology?.forgotten() ?? [],
      routes: () => this.mesh.routes,
      connected: (p) => this.links.has(p),
      forgotten: (peers) => {
        this.forgetKeys(peers);
        this.onPeersForgotten?.(peers, true);
      },
    });
  }

  /** mtu is the overlay MTU in use (0 before start). */
  get mtu(): number {
    return this.plane.mtu;
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
      const clock = this.clock;
      await this.plane.open(clock === realClock ? Date.now : () => clock.now(), (d) => this.links.onDataControl(d));
      await this.openFast(clock === realClock ? Date.now : () => clock.now());
      this.startMesh();
      const maker = new ConnectionMaker({
        host: this.opts.listenHost ?? '0.0.0.0',
        port: this.opts.port,
        local: {
          name: this.name,
          nickname: this.nickname,
          uid: this.uid,
          sleevePort: this.plane.sleevePort,
          vxlanPort: this.plane.vxlanPort,
          vni: this.opts.vni,
          encap: wireEncap(this.opts.encap),
          fastdp: this.fast?.up === true,
          mtu: this.plane.mtu,
        },
        password: this.opts.password,
        ...(this.passwordKey !== undefined && { passwordKey: this.passwordKey }),
        connLimit: this.opts.connLimit ?? CONN_LIMIT_DEFAULT,
        dataLiveness: (peer) => this.links.get(peer)?.data,
        ...(this.opts.trustedSubnets !== undefined &&
          this.opts.trustedSubnets.length > 0 && { trusts: addressIn(this.opts.trustedSubnets) }),
        log: this.log,
        ...(this.opts.clock === undefined ? {} : { clock }),
      });
      this.maker = maker;
      this.mesh.dialer = {
        addTargets: (list) => maker.addTargets(list),
        removeTargets: (list) => maker.removeTargets(list),
        isPersistent: (t) => this.persistent.has(t),
      };
      maker.on('connection-established', (conn: Connection) => this.onEstablished(conn));
      maker.on('connection-closed', (conn: Connection) => this.onClosed(conn));
      await maker.start();
      this.learnTimer = clock.setInterval(() => {
        const fwd = this.plane.forwarder;
        fwd?.learned.expire(fwd.nowMs() - LEARNED_EXPIRY_MS);
      }, LEARNED_SWEEP_MS);
      this.learnTimer.unref();
      this.links.start();
      this.ready = true;
      this.log.info('router started', {
        peer: this.name,
        nickname: this.nickname,
        device: this.plane.tun?.name,
        encap: this.opts.encap,
        mtu: this.plane.mtu,
      });
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** startMesh creates the topology (with our own entry) and the gossip channels. */
  private startMesh(): void {
    this.mesh.start({
      name: this.name,
      nickname: this.nickname,
      uid: this.uid.toString(),
      incarnation: this.opts.incarnation ?? this.startedAt,
      version: 1,
      connections: [],
      cidrs: this.addrs.announced(),
      sleevePort: this.plane.sleevePort,
      vxlanPort: this.plane.vxlanPort,
      encap: wireEncap(this.opts.encap),
    });
    this.ipam.start();
  }

  /**
   * addGossiper gives a subsystem (e.g. DNS records) its own gossip channel over the mesh; returns
   * the channel's sending side, usable at once (sends before start are dropped).
   */
  addGossiper(name: string, gossiper: Gossiper): Gossip {
    return this.mesh.addGossiper(name, gossiper);
  }

  /** onRingChange re-announces what moved between the ring and explicit claims, and reroutes. */
  private onRingChange(): void {
    if (!this.started) return;
    if (this.addrs.announced().join() !== this.lastAnnounced) this.updateLocal();
    else this.rebuild();
  }

  /** updateLocal publishes our own connections and addresses: a new version of our entry, gossiped. */
  private updateLocal(): void {
    if (this.mesh.topology === undefined || !this.started) return;
    const cidrs = this.addrs.announced();
    this.lastAnnounced = cidrs.join();
    this.mesh.setLocal({ connections: this.links.summaries(), cidrs });
  }

  /** rebuild compiles a new forwarding table and installs it with one assignment. */
  private rebuild(): void {
    if (!this.started) return;
    const endpoints = [];
    for (const st of this.links.values()) {
      endpoints.push(st.sleeveHop);
      if (st.vxlanHop !== undefined) endpoints.push(st.vxlanHop);
    }
    const fib = this.fib.compile({
      self: this.name,
      entries: this.mesh.entries(),
      routes: this.mesh.routes,
      directHop: (p) => this.links.get(p)?.hop,
      endpoints,
      spans: this.ipam.spans(),
      localAddrs: this.addrs.addrs(),
      kernelVxlanPeers: [...this.kernelVxlanPeers],
      encrypted: this.opts.password !== undefined,
      dataKeys: (p) => this.links.dataKeys(p),
    });
    const fwd = this.plane.forwarder;
    if (fwd !== undefined) fwd.fib = fib;
    this.syncFast();
  }

  /**
   * openFast opens the kernel fast path when the mode wants one: never with a password (the
   * kernel device would carry containers' traffic in the clear), nor with an injected device
   * (tests). With `auto` a failure leaves this router on sleeve (logged, in status); with `fastdp`
   * it fails the start.
   */
  private async openFast(nowMs: () => number): Promise<void> {
    const o = this.opts;
    if (o.encap !== 'auto' && o.encap !== 'fastdp') return;
    const native = tryLoadNative();
    const why =
      o.password !== undefined
        ? 'encrypted'
        : o.tun !== undefined
          ? 'no kernel device'
          : native === undefined
            ? 'native addon missing'
            : undefined;
    if (why !== undefined || native === undefined) {
      this.fastOff = why;
      if (o.encap === 'fastdp') throw new WeftError('EWEFT_SYSTEM', `--encap fastdp: no fast path (${why})`);
      return;
    }
    const fast = new FastDataPath({
      native,
      self: this.name,
      vni: o.vni,
      vxlanPort: o.vxlanPort,
      sleevePort: this.plane.sleevePort,
      local: o.listenHost === undefined || o.listenHost === '0.0.0.0' ? 0 : ipToU32(o.listenHost),
      underlayMtu: this.plane.underlayMtu,
      log: this.log,
      nowMs,
      onControl: (c) => this.links.onFastdpControl(c),
      mtuOk: (p) => this.links.get(p)?.fastMtu?.state === 'ok',
      ...(this.plane.tun === undefined ? {} : { tunDevice: this.plane.tun.name }),
    });
    try {
      await fast.open();
      this.fast = fast;
      this.fastOff = undefined;
    } catch (err) {
      this.fastOff = (err as Error).message;
      if (o.encap === 'fastdp') throw err;
      this.log.warn('fastdp unavailable: using sleeve', { err: this.fastOff });
    }
  }

  /**
   * syncFast programs weft-vx from the links: every peer with a fast path gets its fdb and
   * neighbour entries (for the heartbeats), those whose heartbeats are answered also routes for
   * their IPAM share and announced addresses, each more specific than the TUN device's range.
   */
  private syncFast(): void {
    const fast = this.fast;
    if (fast === undefined || !this.started) return;
    const min = this.opts.ipallocRange.prefix;
    const spans = this.ipam.spans();
    const entries = new Map(this.mesh.entries().map((e) => [e.name, e]));
    const peers: FastPeer[] = [];
    for (const st of this.links.values()) {
      if (st.fast === undefined) continue;
      const name = st.conn.remote.name;
      const routes: { addr: number; prefix: number }[] = [];
      if (fastActive(st) && this.mesh.routes.unicast.get(name) === name) {
        for (const s of spans) if (s.owner === name) routes.push(...spanCidrs(s.start, s.end, min));
        for (const c of entries.get(name)?.cidrs ?? []) {
          const [a, p] = c.split('/');
          const prefix = Number(p ?? 32);
          const addr = ipToU32(a ?? '');
          const net = prefix === 0 ? 0 : (addr & (~0 << (32 - prefix))) >>> 0;
          routes.push(...(prefix > min ? [{ addr: net, prefix }] : spanCidrs(net, net + 2 ** (32 - prefix), min)));
        }
      }
      peers.push({ name, underlay: ipToU32(st.conn.remote.addr), routes });
    }
    const exposed = this.addrs.exposedCidrs()[0];
    fast.sync(peers, exposed === undefined ? 0 : exposed.addr, this.bareWant(spans, min));
  }

  /** bareWant is weft-vx's state for the bare kernel vxlan hosts (--vxlan-peer; kernel/bare-peers.ts). */
  private bareWant(spans: readonly Span[], min: number): BareWant {
    if (this.kernelVxlanPeers.size === 0) return NO_BARE;
    const others: { addr: number; prefix: number }[] = [];
    for (const e of this.mesh.entries()) {
      if (e.name === this.name) continue;
      for (const c of e.cidrs) {
        const [a, p] = c.split('/');
        others.push({ addr: ipToU32(a ?? ''), prefix: Number(p ?? 32) });
      }
    }
    return bareWant({
      peers: [...this.kernelVxlanPeers],
      self: this.name,
      spans,
      minPrefix: min,
      others,
      local: this.addrs.addrs(),
    });
  }

  /** fastdpStatus says whether the fast path is up, and why not. */
  fastdpStatus(): { device: string; up: boolean; reason?: string } | undefined {
    if (this.opts.encap !== 'auto' && this.opts.encap !== 'fastdp') return undefined;
    return {
      device: this.fast?.device ?? 'weft-vx',
      up: this.fast?.up === true,
      ...(this.fastOff === undefined ? {} : { reason: this.fastOff }),
    };
  }

  private onEstablished(conn: Connection): void {
    const r = conn.remote;
    const st = this.links.add(conn);
    conn.on('message', (msg: PeerMessage) => {
      if (msg.t === 'gossip') this.mesh.receive(r.name, msg.channel, msg.payload);
    });
    this.mesh.neighbourUp(r.name);
    this.updateLocal();
    this.log.info('peer connected', {
      peer: r.name,
      nickname: r.nickname,
      remoteAddr: r.addr,
      overlay: st.vxlanHop !== undefined ? 'vxlan' : 'sleeve',
    });
  }

  private onClosed(conn: Connection): void {
    if (!conn.wasEstablished) return;
    if (!this.links.remove(conn)) return;
    this.updateLocal();
    this.log.info('peer disconnected', { peer: conn.remote.name });
  }

  /** stop closes every connection, socket and the device; idempotent. */
  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    this.ready = false;
    this.clock.clearInterval(this.learnTimer);
    this.learnTimer = undefined;
    this.links.stop();
    this.e2e?.stop();
    this.fast?.close();
    this.fast = undefined;
    this.mesh.stop();
    this.ipam.stop();
    await this.maker?.stop();
    this.maker = undefined;
    this.mesh.dialer = undefined;
    this.plane.close();
    this.fib.clear();
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

  private requireMaker(): ConnectionMaker {
    if (this.maker === undefined) throw new WeftError('EWEFT_NOT_READY', 'router is not running');
    return this.maker;
  }

  /** expose: see LocalAddresses.expose. */
  expose(cidr?: Cidr): Promise<Cidr[]> {
    return this.addrs.expose(cidr);
  }

  /** hide: see LocalAddresses.hide. */
  hide(cidr?: Cidr): Promise<Cidr[]> {
    return this.addrs.hide(cidr);
  }

  /** checkFree: see LocalAddresses.checkFree. */
  checkFree(addr: number, exceptOwner?: string): void {
    this.addrs.checkFree(addr, exceptOwner);
  }

  /** allocate: see IpamFacade.allocate. */
  allocate(owner: string, subnet?: Cidr): Promise<IPv4> {
    return this.ipamFacade.allocate(owner, subnet);
  }

  /** reserve: see LocalAddresses.reserve. */
  reserve(owner: string, addrs: readonly Cidr[]): void {
    this.addrs.reserve(owner, addrs);
  }

  /** claim: see LocalAddresses.claim. */
  claim(owner: string, addrs: readonly Cidr[]): void {
    this.addrs.claim(owner, addrs);
  }

  /** release: see LocalAddresses.release. */
  release(owner: string): Cidr[] {
    return this.addrs.release(owner);
  }

  /** rmpeer: see IpamFacade.rmpeer. */
  rmpeer(peer: string): { peer: PeerName; addresses: number } {
    return this.ipamFacade.rmpeer(peer);
  }

  /** leave: see IpamFacade.leave. */
  leave(): { heir: PeerName | undefined; addresses: number } {
    return this.ipamFacade.leave();
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

  /**
   * vxlanPeerPaths says how each bare kernel vxlan host is reached: through weft-vx (the fast path
   * is up), the router's own VXLAN socket (--encap vxlan or sleeve), or not at all (fast path off).
   */
  private vxlanPeerPaths(): VxlanPeerPath[] | undefined {
    if (this.kernelVxlanPeers.size === 0) return undefined;
    const fast = this.fast;
    if (fast?.up === true) {
      const routed = this.bareWant(this.ipam.spans(), this.opts.ipallocRange.prefix).routes.map((r) =>
        formatCidr({ addr: r.addr as IPv4, prefix: r.prefix }),
      );
      const seen = fast
        .neighbours()
        .slice(0, LEARNED_STATUS_SAMPLE)
        .map((n) => formatIPv4(n.ip as IPv4));
      return this.vxlanPeers().map((addr) => ({ addr, via: 'fastdp', seen, routed }));
    }
    const fwd = this.plane.forwarder;
    if (fwd?.vxlan !== undefined) {
      const learned = fwd.learned.snapshot(LEARNED_STATUS_SAMPLE);
      return [...this.kernelVxlanPeers].map((a) => ({
        addr: formatIPv4(a as IPv4),
        via: 'vxlan',
        seen: learned.filter((l) => l.addr === a).map((l) => formatIPv4(l.ip as IPv4)),
      }));
    }
    const reason = this.fastOff === undefined ? 'no VXLAN socket' : `fastdp off: ${this.fastOff}`;
    return this.vxlanPeers().map((addr) => ({ addr, via: 'none', reason, seen: [] }));
  }

  /** exposedCidrs lists the host's overlay addresses. */
  exposedCidrs(): Cidr[] {
    return this.addrs.exposedCidrs();
  }

  /** forgetKeys wipes the data keys of peers that left the topology. */
  private forgetKeys(peers: readonly PeerName[]): void {
    this.links.forget(peers);
    for (const p of peers) this.e2e?.forget(p);
  }

  /** status returns a JSON-safe snapshot of everything the router knows now. */
  status(): RouterStatus {
    const o = this.opts;
    return assembleStatus({
      version: o.version ?? '0.0.0',
      name: this.name,
      nickname: this.nickname,
      uid: this.uid,
      ready: this.ready,
      startedAt: this.startedAt,
      nowMs: this.clock.now(),
      encap: o.encap,
      fastdp: this.fastdpStatus(),
      port: this.controlPort || o.port,
      vni: o.vni,
      device: o.device,
      datapath: o.datapath ?? 'native',
      offload: o.offload !== false,
      encryption: o.password !== undefined,
      endToEnd: this.e2e?.stats,
      trustedSubnets: o.trustedSubnets ?? [],
      ipallocRange: o.ipallocRange,
      exposed: this.addrs.exposedCidrs(),
      vxlanPeers: this.vxlanPeers(),
      vxlanPeerPaths: this.vxlanPeerPaths(),
      counters: this.counters,
      plane: this.plane,
      maker: this.maker,
      mesh: this.mesh,
      links: this.links,
      fib: this.fib,
      ipam: this.ipam,
    });
  }
}
