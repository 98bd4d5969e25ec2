/**
 * OverlaySwitch keeps, for every directly connected peer, its direct hops (sleeve always; VXLAN
 * too when both ends prefer it), the liveness of each overlay as proven by data-path heartbeats,
 * and the peer's path MTU discovery, and picks the overlay each peer uses: VXLAN while its
 * heartbeats flow both ways, else sleeve. The timer ticks every DATA_HEARTBEAT_INTERVAL_MS from
 * the injected Clock; a path that is not established (or whose last heartbeat was not acked)
 * gets a heartbeat every tick, a healthy one only every `healthyIntervalMs` (two per peer timeout
 * with a tick to spare: an idle router's cost is mostly these). PMTU probes ride the ticks;
 * heartbeats and acks come back through `onDataControl`. `onChange` tells the owner a link's
 * state or overlay changed.
 *
 * With a password every connection is encrypted and the switch keeps each peer's PeerCrypto (the
 * data keys of its connection, datapath/peer-crypto.ts) on its hops: made when the first
 * connection is established, `install`ed from a reconnect, its connection keys closed when the
 * connection goes. Peers without a connection get one too (`dataKeys`, for relay hops), with keys
 * made end to end through the mesh (`installEndToEnd`, overlay/e2e-keys.ts). A connected peer
 * uses sleeve only (VXLAN cannot be sealed) unless its data is trusted (both ends' trusted subnets
 * hold the other): then its direct hops are in the clear and relays still seal with its keys.
 *
 * The kernel fast path (`--encap auto|fastdp`, issue #14) is a third overlay beside the hops: when
 * both ends have weft-vx up and the connection is not encrypted, the link gets `fast`, a
 * PathLiveness fed by heartbeats that travel through the kernel device (kernel/fastdp-heartbeats.ts).
 * Once those heartbeats are answered, a full-size MTU probe must be too (`fastMtu`,
 * kernel/fastdp-mtu.ts), and the peer's heartbeats must say that its own probes are answered
 * (`fastPeerMtuOk`: both directions, so both ends choose the same path): only then, and while
 * all hold, the router routes the peer's addresses
 * through weft-vx (the kernel carries the data; the hop stays sleeve for what still reaches the
 * TUN device); when either fails they go back to the TUN device and sleeve.
 */
import type { Clock, Timer } from '../../common/clock.js';
import { InputError } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import type { PeerName } from '../../common/types.js';
import type { Connection, DataKeys } from '../connection.js';
import { DATA_HEARTBEAT_INTERVAL_MS, PEER_DOWN_TIMEOUT_MS } from '../constants.js';
import { Encap, encapName, Hop, peerKey, peerNameHi, peerNameLo } from '../datapath/fib.js';
import type { ControlDatagram, Forwarder } from '../datapath/forwarder.js';
import { type DataState, PathLiveness } from '../datapath/liveness.js';
import { PeerCrypto } from '../datapath/peer-crypto.js';
import {
  FASTDP_ACK,
  FASTDP_HEARTBEAT,
  FASTDP_PROBE,
  FASTDP_PROBE_ACK,
  type FastdpControl,
  fastdpProbeSize,
} from '../kernel/fastdp-heartbeats.js';
import { FastdpMtuProof } from '../kernel/fastdp-mtu.js';
import type { ConnectionSummary } from '../topology.js';
import type { NativeAddon } from '../tun/native.js';
import { SleeveType } from './frame.js';
import { PathMtu } from './pmtu.js';

/** PeerLink is what the switch knows about one connected peer. */
export interface PeerLink {
  readonly conn: Connection;
  /** hop is the hop in use: vxlanHop while the VXLAN path works, else sleeveHop. */
  hop: Hop;
  readonly sleeveHop: Hop;
  /** data is the sleeve path's liveness (heartbeats in sleeve framing). */
  readonly data: PathLiveness;
  /** vxlanHop/vxData exist when both ends prefer VXLAN: heartbeats inside VXLAN prove that path. */
  readonly vxlanHop: Hop | undefined;
  readonly vxData: PathLiveness | undefined;
  /** vxlanPort is the peer's VXLAN port. */
  readonly vxlanPort: number;
  /** pmtu discovers the path MTU towards the peer; its result is every direct hop's `pmtu`. */
  readonly pmtu: PathMtu;
  /** fast is the kernel fast path's liveness, when both ends have one (see the module comment). */
  readonly fast: PathLiveness | undefined;
  /** fastMtu proves that the fast path carries full-size frames (with `fast`; renewed when `fast` fails). */
  fastMtu: FastdpMtuProof | undefined;
  /** fastPeerMtuOk: the peer's last heartbeat or ack said its MTU proof towards us holds. */
  fastPeerMtuOk: boolean;
  /** fastOff says why the fast path is not tried towards this peer (undefined when it is, or not wanted). */
  readonly fastOff: string | undefined;
}

/** fastActive says the kernel fast path carries this peer's traffic now. */
export function fastActive(st: PeerLink): boolean {
  return st.fast?.state === 'established' && st.fastMtu?.state === 'ok' && st.fastPeerMtuOk;
}

/**
 * fastProves says whether the fast path's heartbeats stand in for the sleeve ones now (an idle
 * router's cost is mostly heartbeats, and two proofs of one peer double it): weft-vx carries the
 * peer and its heartbeats flowed both ways within a healthy interval and a tick. A late one
 * brings the sleeve heartbeats back at once, while the sleeve's proof (fed by the fast path's
 * until then) is still fresh, so falling back finds sleeve established.
 */
export function fastProves(st: PeerLink, nowMs: number, healthyMs: number): boolean {
  const f = st.fast;
  if (f === undefined || !fastActive(st)) return false;
  const fresh = healthyMs + DATA_HEARTBEAT_INTERVAL_MS;
  return nowMs - f.ackedAt < fresh && nowMs - f.heardAt < fresh;
}

/**
 * fastReason says why a peer with a fast path wanted is on sleeve: `vxlan blocked: no heartbeat
 * for 5 s` once failed, undefined while it works or is not wanted. A one-way block (our
 * heartbeats no longer reach the peer, theirs still reach us) is named as a block as soon as our
 * acks are a healthy interval and a tick late, even while the path's state is still established:
 * the peer then renews its MTU proof and says so in its heartbeats, but that is a consequence,
 * and which of the two expires first must not decide what status says. The seconds count from
 * the last heartbeat of the silent direction.
 */
export function fastReason(st: PeerLink, nowMs: number, healthyMs: number): string | undefined {
  const f = st.fast;
  if (f === undefined) return st.fastOff;
  if (f.state === 'pending') return 'fastdp pending';
  const silentSince = Math.min(f.heardAt, f.ackedAt);
  const stale = nowMs - silentSince >= healthyMs + DATA_HEARTBEAT_INTERVAL_MS;
  if (f.state === 'established' && (!stale || fastActive(st))) {
    const m = st.fastMtu;
    if (m === undefined) return undefined;
    if (m.state === 'ok') return st.fastPeerMtuOk ? undefined : 'vxlan: MTU not proven by peer';
    return m.state === 'failed' ? `vxlan: ${m.reason ?? 'MTU not carried'}` : 'fastdp pending';
  }
  const s = Number.isFinite(silentSince)
    ? Math.max(0, Math.round((nowMs - silentSince) / 1000))
    : Math.round((nowMs - f.since) / 1000);
  return `vxlan blocked: no heartbeat for ${s} s`;
}

/** FastdpSender sends heartbeats through the kernel fast path (kernel/fastdp-heartbeats.ts). */
export interface FastdpSender {
  /** up says weft-vx is open (our end of the fast path exists). */
  readonly up: boolean;
  /** mtu is weft-vx's MTU: the size an MTU probe fills. */
  readonly mtu: number;
  /** sendHeartbeat sends a heartbeat; `mtuOk` tells the peer our MTU proof towards it holds. */
  sendHeartbeat(peer: PeerName, port: number, mtuOk?: boolean): void;
  /** sendProbe sends a probe filling `mtu` (kernel/fastdp-mtu.ts). */
  sendProbe(peer: PeerName, port: number): void;
}

/** LinkState is what a direct link offers: established if either overlay works (VXLAN preferred). */
export interface LinkState {
  state: DataState;
  reason: string | undefined;
  rttMs: number | undefined;
  since: number;
}

/** linkState is the state of a peer's direct link (see LinkState). */
export function linkState(st: PeerLink): LinkState {
  const f = st.fast;
  if (f !== undefined && f.state === 'established' && st.data.state !== 'established')
    return { state: 'established', reason: undefined, rttMs: f.rttMs, since: f.since };
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
 * E2E_AUTH_CHECK_MS: after end-to-end datagrams failed under the keys we hold, the switch checks
 * this much later whether any opened meanwhile before it asks for new keys.
 */
export const E2E_AUTH_CHECK_MS = 200;

/** OverlaySwitchOptions configure an OverlaySwitch. */
export interface OverlaySwitchOptions {
  readonly clock: Clock;
  readonly log: Logger;
  /** encap is what this router prefers; VXLAN is used towards a peer only when both prefer it. */
  readonly encap: 'auto' | 'fastdp' | 'sleeve' | 'vxlan';
  /** fastdp sends the fast path's heartbeats (absent or not `up`: no fast path). */
  readonly fastdp?: () => FastdpSender | undefined;
  /** peerTimeoutMs: an overlay silent this long in either direction is failed (default PEER_DOWN_TIMEOUT_MS). */
  readonly peerTimeoutMs?: number;
  /** rekeyAfterTimeMs: data keys ratchet at least this often (default REKEY_AFTER_TIME_MS). */
  readonly rekeyAfterTimeMs?: number;
  /**
   * wantKeys is called (from a timer, never inside the datapath) when the datapath dropped a
   * peer's traffic for want of data keys: the owner starts an end-to-end exchange (e2e-keys.ts).
   */
  readonly wantKeys?: (peer: PeerName) => void;
  /** forwarder sends the heartbeats (undefined while the data plane is closed). */
  readonly forwarder: () => Forwarder | undefined;
  /** routeMtu is where path MTU discovery starts towards an underlay address. */
  readonly routeMtu: (addr: number) => number;
  /** kernelPathMtu is the kernel's path MTU towards an underlay address (0 when unknown). */
  readonly kernelPathMtu: (addr: number) => number;
  /** onPmtu fires when a peer's path MTU moved (relay hops through it follow). */
  readonly onPmtu?: (via: Hop, pmtu: number) => void;
  /** onChange fires when a link's state or overlay changed. */
  readonly onChange: () => void;
  /** native seals and opens data of encrypted connections (without it their data is dropped, logged). */
  readonly native?: NativeAddon | undefined;
}

/** OverlaySwitch: see the module comment. */
export class OverlaySwitch {
  private readonly opts: OverlaySwitchOptions;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly links = new Map<PeerName, PeerLink>();
  private readonly byKey = new Map<number, PeerLink>();
  /** cryptos: the data keys of each peer whose connection is encrypted. */
  private readonly cryptos = new Map<PeerName, PeerCrypto>();
  private timer: Timer | undefined;
  private readonly timeoutMs: number;
  private readonly healthyMs: number;

  constructor(opts: OverlaySwitchOptions) {
    this.opts = opts;
    this.clock = opts.clock;
    this.log = opts.log;
    this.timeoutMs = opts.peerTimeoutMs ?? PEER_DOWN_TIMEOUT_MS;
    this.healthyMs = healthyIntervalMs(this.timeoutMs);
  }

  /** start begins the heartbeat timer; idempotent. */
  start(): void {
    if (this.timer !== undefined) return;
    this.timer = this.clock.setInterval(() => this.heartbeat(), DATA_HEARTBEAT_INTERVAL_MS);
    this.timer.unref();
  }

  /** stop ends the heartbeat timer and forgets every peer. */
  stop(): void {
    this.clock.clearInterval(this.timer);
    this.timer = undefined;
    this.links.clear();
    this.byKey.clear();
    for (const pc of this.cryptos.values()) pc.close();
    this.cryptos.clear();
  }

  /** crypto is the data encryption towards a peer, or undefined (none made: cleartext, or not yet). */
  crypto(peer: PeerName): PeerCrypto | undefined {
    return this.cryptos.get(peer);
  }

  /**
   * dataKeys is the data encryption towards any peer, made (without keys) when there is none: what
   * a relay hop seals with. Keys come from our connection with the peer when one is established,
   * else from an end-to-end exchange through the mesh, asked for (wantKeys) when the datapath
   * first drops for want of them. NO_KEYS without the native addon (never the clear).
   */
  dataKeys(peer: PeerName): PeerCrypto {
    const old = this.cryptos.get(peer);
    if (old !== undefined) return old;
    const native = this.opts.native;
    if (native === undefined) return PeerCrypto.NO_KEYS;
    const pc = this.newCrypto(native, peer, undefined);
    return pc;
  }

  /** installEndToEnd gives `peer` end-to-end data keys made through the mesh. */
  installEndToEnd(peer: PeerName, keys: DataKeys): void {
    const native = this.opts.native;
    if (native === undefined) return;
    const pc = this.cryptos.get(peer) ?? this.newCrypto(native, peer, undefined);
    pc.installEndToEnd(keys);
  }

  /** clearWant lets the next drop for want of `peer`'s keys ask again (an exchange was given up). */
  clearWant(peer: PeerName): void {
    this.cryptos.get(peer)?.clearWant();
  }

  /** forget wipes the data keys of peers that left the topology. */
  forget(peers: readonly PeerName[]): void {
    for (const p of peers) {
      if (this.links.has(p)) continue;
      this.cryptos.get(p)?.close();
      this.cryptos.delete(p);
    }
  }

  private newCrypto(native: NativeAddon, peer: PeerName, keys: DataKeys | undefined): PeerCrypto {
    const rekey = this.opts.rekeyAfterTimeMs;
    const pc = new PeerCrypto(native, keys, rekey === undefined ? {} : { rekeyAfterTimeMs: rekey });
    const want = this.opts.wantKeys;
    if (want !== undefined)
      pc.onWant = (auth) => {
        // Never inside the datapath; after an auth failure a moment later, so one forged datagram
        // among good ones does not start an exchange (stillWanted: nothing opened since).
        this.clock
          .setTimeout(
            () => {
              if (pc.stillWanted()) want(peer);
              else pc.clearWant();
            },
            auth ? E2E_AUTH_CHECK_MS : 0,
          )
          .unref();
      };
    this.cryptos.set(peer, pc);
    return pc;
  }

  get size(): number {
    return this.links.size;
  }

  get(peer: PeerName): PeerLink | undefined {
    return this.links.get(peer);
  }

  has(peer: PeerName): boolean {
    return this.links.has(peer);
  }

  /** reason says why a link that wants the fast path is on sleeve now (fastReason at this switch's pace). */
  reason(st: PeerLink, nowMs: number): string | undefined {
    return fastReason(st, nowMs, this.healthyMs);
  }

  /** names lists the connected peers. */
  names(): PeerName[] {
    return [...this.links.keys()];
  }

  values(): IterableIterator<PeerLink> {
    return this.links.values();
  }

  /** summaries describe our connections for our topology entry. */
  summaries(): ConnectionSummary[] {
    return [...this.links.values()].map((st) => ({
      peer: st.conn.remote.name,
      addr: st.conn.remote.addr,
      tcpPort: st.conn.remote.tcpPort,
      outbound: st.conn.outbound,
      established: linkState(st).state === 'established',
    }));
  }

  /** add makes the hops towards a newly connected peer and sends its first heartbeats. */
  add(conn: Connection): PeerLink {
    const r = conn.remote;
    // A trusted peer (--trusted-subnets on both ends) keeps its keys for what a relay carries;
    // its direct hops are in the clear, and may be VXLAN.
    const keys = this.cryptoFor(conn);
    const crypto = conn.dataTrusted ? undefined : keys;
    const vx = this.opts.encap === 'vxlan' && r.encap === 'vxlan' && crypto === undefined;
    const hi = peerNameHi(r.name);
    const lo = peerNameLo(r.name);
    const addr = ipToU32(r.addr);
    const pmtu = new PathMtu(this.opts.routeMtu(addr));
    const sleeveHop = new Hop(r.name, hi, lo, hi, lo, addr, r.sleevePort, Encap.Sleeve, r.sleevePort, pmtu.pmtu);
    const vxlanHop = vx
      ? new Hop(r.name, hi, lo, hi, lo, addr, r.vxlanPort, Encap.Vxlan, r.sleevePort, pmtu.pmtu)
      : undefined;
    sleeveHop.crypto = crypto;
    if (vxlanHop !== undefined) vxlanHop.crypto = crypto;
    const fastWanted = this.opts.encap === 'auto' || this.opts.encap === 'fastdp';
    const sender = this.opts.fastdp?.();
    const fastUp = sender?.up === true;
    const fastOff = !fastWanted
      ? undefined
      : conn.dataKeys !== undefined
        ? 'fastdp off: encrypted'
        : !fastUp
          ? 'fastdp off here'
          : !r.fastdp
            ? 'peer has no fast path'
            : undefined;
    const now = this.clock.now();
    const st: PeerLink = {
      conn,
      fast: fastWanted && fastOff === undefined ? new PathLiveness(now) : undefined,
      fastMtu: fastWanted && fastOff === undefined ? new FastdpMtuProof(sender?.mtu ?? 0) : undefined,
      fastPeerMtuOk: false,
      fastOff,
      hop: sleeveHop,
      sleeveHop,
      data: new PathLiveness(now),
      vxlanHop,
      vxData: vx ? new PathLiveness(now) : undefined,
      vxlanPort: r.vxlanPort,
      pmtu,
    };
    this.links.set(r.name, st);
    this.byKey.set(peerKey(hi, lo), st);
    this.tickLink(st, now);
    return st;
  }

  /** remove forgets a peer whose connection `conn` closed; false when another connection replaced it. */
  remove(conn: Connection): boolean {
    const name = conn.remote.name;
    const st = this.links.get(name);
    if (st === undefined || st.conn !== conn) return false;
    this.links.delete(name);
    this.byKey.delete(peerKey(st.hop.nameHi, st.hop.nameLo));
    // The hops keep the PeerCrypto: what is still sent to them is sealed with end-to-end keys
    // (asked for on the first drop) or dropped, never sent in the clear. What the peer still
    // seals with this connection's keys before it notices opens for one peer timeout.
    const pc = this.cryptos.get(name);
    if (pc !== undefined) {
      pc.closeConnection(true);
      this.clock.setTimeout(() => pc.dropGrace(), this.timeoutMs).unref();
    }
    return true;
  }

  /**
   * cryptoFor gives an encrypted connection's peer its data keys: a new PeerCrypto, or the
   * peer's current one with the new connection's secrets installed (a reconnect, or a peer we had
   * end-to-end keys with). Undefined for a cleartext connection.
   */
  private cryptoFor(conn: Connection): PeerCrypto | undefined {
    const keys = conn.dataKeys;
    if (keys === undefined) return undefined;
    const native = this.opts.native;
    const name = conn.remote.name;
    if (native === undefined) {
      // Never the clear with a password: without the addon's AEAD this peer's data is dropped.
      this.log.warn('data to this peer dropped: a password is set but the native addon (AEAD) is missing', {
        peer: name,
      });
      return PeerCrypto.NO_KEYS;
    }
    const old = this.cryptos.get(name);
    if (old === undefined) return this.newCrypto(native, name, keys);
    old.install(keys);
    return old;
  }

  /** heartbeat sends data-path heartbeats to every peer and re-evaluates their data paths. */
  heartbeat(): void {
    const now = this.clock.now();
    let changed = false;
    for (const st of this.links.values()) {
      this.tickLink(st, now);
      changed = this.evaluate(st, now) || changed;
    }
    if (changed) this.opts.onChange();
  }

  /** onDataControl records heartbeats and acks from the forwarder, per overlay. */
  onDataControl(d: ControlDatagram): void {
    const st = this.byKey.get(peerKey(d.srcHi, d.srcLo));
    if (st === undefined) return;
    const path = d.overlay === Encap.Vxlan ? st.vxData : st.data;
    if (path === undefined) return;
    const now = this.clock.now();
    if (d.type === SleeveType.Heartbeat) {
      path.heard(now);
    } else {
      path.acked(now, d.stamp);
      if (d.overlay === Encap.Sleeve && d.size > 0) {
        st.pmtu.acked(d.size, now);
        this.applyPmtu(st);
      }
    }
    if (this.evaluate(st, now)) this.opts.onChange();
  }

  /** onFastdpControl records heartbeats and acks heard through the kernel fast path. */
  onFastdpControl(c: FastdpControl): void {
    const st = this.links.get(c.from);
    const path = st?.fast;
    if (st === undefined || path === undefined) return;
    const now = this.clock.now();
    const before = fastActive(st);
    if (c.type === FASTDP_HEARTBEAT || c.type === FASTDP_ACK) st.fastPeerMtuOk = c.mtuOk;
    // While weft-vx carries the peer its heartbeats prove the peer for sleeve too (fastProves).
    if (before && c.type === FASTDP_HEARTBEAT) st.data.heard(now);
    if (before && c.type === FASTDP_ACK) st.data.acked(now, c.stamp);
    if (c.type === FASTDP_HEARTBEAT) path.heard(now);
    else if (c.type === FASTDP_PROBE)
      return; // answered by the heartbeat socket; proves the other direction
    else if (c.type === FASTDP_PROBE_ACK) {
      const m = st.fastMtu;
      if (m === undefined || c.size !== fastdpProbeSize(m.mtu)) return; // a smaller probe proves nothing
      m.acked(now);
    } else path.acked(now, c.stamp);
    if (this.evaluate(st, now) || fastActive(st) !== before) this.opts.onChange();
  }

  /** tickLink sends the heartbeats that are due towards one peer and advances its path MTU discovery. */
  private tickLink(st: PeerLink, now: number): void {
    const fwd = this.opts.forwarder();
    if (st.fast?.due(now, this.healthyMs) === true) this.sendFastHeartbeat(st, now);
    // The MTU probe once the heartbeats are answered; the kernel's path MTU (a syscall) with it.
    const m = st.fastMtu;
    if (st.fast?.state === 'established' && m?.due(now, DATA_HEARTBEAT_INTERVAL_MS, this.healthyMs) === true) {
      m.pathMtu = this.opts.kernelPathMtu(st.sleeveHop.addr);
      this.opts.fastdp?.()?.sendProbe(st.conn.remote.name, st.conn.remote.sleevePort);
      m.sent(now);
    }
    // While the fast path's heartbeats prove the peer, sleeve sends none (nor PMTU probes).
    const proxied = fastProves(st, now, this.healthyMs);
    const sleeveDue = !proxied && st.data.due(now, this.healthyMs);
    if (sleeveDue) {
      fwd?.sendHeartbeat(st.sleeveHop, now);
      st.data.sent(now);
    }
    if (st.vxlanHop !== undefined && st.vxData?.due(now, this.healthyMs) === true) {
      fwd?.sendVxlanHeartbeat(st.vxlanHop, st.vxlanPort, now);
      st.vxData.sent(now);
    }
    // Path MTU discovery rides the ticks: a probe is a heartbeat padded to the size tried. The
    // kernel's view (a syscall) is read with the sleeve heartbeats, often enough to follow an ICMP.
    if (proxied) return;
    const probe = st.pmtu.tick(now, sleeveDue ? this.opts.kernelPathMtu(st.sleeveHop.addr) : 0);
    if (probe > 0 && fwd?.sendHeartbeat(st.sleeveHop, now, probe) === false) st.pmtu.sendFailed(now);
    this.applyPmtu(st);
  }

  /** sendFastHeartbeat sends a heartbeat through weft-vx saying whether our MTU proof holds. */
  private sendFastHeartbeat(st: PeerLink, now: number): void {
    this.opts.fastdp?.()?.sendHeartbeat(st.conn.remote.name, st.conn.remote.sleevePort, st.fastMtu?.state === 'ok');
    st.fast?.sent(now);
  }

  /**
   * applyPmtu gives the peer's direct hops, and (through onPmtu) the relay hops through it, the
   * path MTU in use. A relayed datagram crosses more than this first hop; its relay forwards it
   * unchanged and refuses (counts) one too large for the next link.
   */
  private applyPmtu(st: PeerLink): void {
    const pmtu = st.pmtu.pmtu;
    if (st.sleeveHop.pmtu === pmtu) return;
    this.log.info('path mtu', { peer: st.sleeveHop.peer, pmtu, state: st.pmtu.state });
    st.sleeveHop.pmtu = pmtu;
    if (st.vxlanHop !== undefined) st.vxlanHop.pmtu = pmtu;
    this.opts.onPmtu?.(st.sleeveHop, pmtu);
  }

  /**
   * evaluate updates both data paths of a peer and picks the overlay: VXLAN while its heartbeats
   * flow both ways, else sleeve. Returns true when anything changed.
   */
  private evaluate(st: PeerLink, now: number): boolean {
    const timeout = this.timeoutMs;
    const before = linkState(st).state;
    let changed = st.data.evaluate(now, timeout);
    if (st.vxData !== undefined) changed = st.vxData.evaluate(now, timeout) || changed;
    if (st.fast !== undefined) {
      const was = st.fast.state;
      if (st.fast.evaluate(now, timeout)) {
        changed = true;
        const fields = { peer: st.sleeveHop.peer, reason: this.reason(st, now) };
        if (st.fast.state === 'established') this.log.info('fastdp heartbeats answered', { ...fields, from: was });
        else if (st.fast.state === 'failed') this.log.warn('fastdp failed: using sleeve', fields);
        // The MTU is proven again each time the heartbeats come back.
        if (was === 'established' && st.fastMtu !== undefined) st.fastMtu = new FastdpMtuProof(st.fastMtu.mtu);
      }
      const m = st.fastMtu;
      if (st.fast.state === 'established' && m !== undefined) {
        const wasMtu = m.state;
        if (m.evaluate(now, timeout)) {
          changed = true;
          const fields = { peer: st.sleeveHop.peer, mtu: m.mtu, pathMtu: m.pathMtu };
          if (m.state === 'ok') this.log.info('fastdp mtu proven', { ...fields, from: wasMtu });
          else if (m.state === 'failed') this.log.warn('fastdp mtu not carried: using sleeve', fields);
          // Tell the peer at once: it uses the fast path only once our proof holds too.
          this.sendFastHeartbeat(st, now);
        }
      }
    }
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
}

/**
 * healthyIntervalMs is how often a healthy path gets a heartbeat for a peer timeout: two per
 * timeout with a tick to spare for a retry, never more often than the ticks.
 */
export function healthyIntervalMs(timeoutMs: number): number {
  return Math.max(DATA_HEARTBEAT_INTERVAL_MS, timeoutMs / 2 - DATA_HEARTBEAT_INTERVAL_MS);
}

/** ipToU32 parses a dotted IPv4 address (an IPv4-mapped IPv6 form too) to a host-order integer. */
export function ipToU32(s: string): number {
  const m = /^(?:::ffff:)?(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s);
  if (m === null) throw new InputError(`not an IPv4 address: "${s}"`);
  return ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
}
