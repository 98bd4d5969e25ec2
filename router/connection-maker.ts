/**
 * ConnectionMaker: accepts control connections, dials targets with backoff and keeps exactly one
 * connection per peer.
 *
 * Target states (as in Weave's `status connections`):
 *
 * ```
 *            dial                 handshake ok
 *  add ──▶ connecting ─────────────────────────────▶ established ◀── peer reached another way
 *              │ fails                                   │ drops (backoff restarts from initial)
 *              ▼                                         ▼
 *           failed ──(nextRetryAt)──▶ retrying ──ok──▶ established
 *              ▲                         │ fails
 *              └─────────────────────────┘
 * ```
 *
 * `connecting` is a first attempt in progress, `retrying` an attempt after an error, `failed`
 * waiting for `nextRetryAt` with `lastError` (no `nextRetryAt` means it gave up: connection to
 * self or a peer name collision). A target is `established` when a connection to the peer it led
 * to exists, whichever side dialled it.
 *
 * Admission of inbound connections (limits in conn-limits.ts):
 *
 * ```
 *  accept ──▶ established ≥ connLimit? ─────────────yes──▶ refused "too many connections" (conn_limit)
 *               │ no
 *               ▼
 *             ≥ HANDSHAKES_PER_ADDR_MAX from this address? ──yes──▶ refused (handshake_limit)
 *               │ no
 *               ▼
 *             ≥ HANDSHAKES_MAX in progress, and the address is
 *             neither a known peer's nor a target's? ─────────yes──▶ refused (handshake_limit)
 *               │ no
 *               ▼
 *             handshake (its own slot, ≤ HELLO_MAX_BYTES buffered) ──▶ established: counts against connLimit only
 * ```
 *
 * A refused socket gets a Close frame with the reason and is destroyed within REFUSE_LINGER_MS;
 * no Connection is made for it. Connections we dial never take a handshake slot and are never
 * refused by the limits. A handshake that completes into a duplicate of an existing connection is
 * resolved by `prefer` as before; one that would add a peer beyond connLimit is closed.
 *
 * Over 400 lines because the target states, inbound admission and duplicate resolution above all
 * decide one thing, which connection a peer ends up with, and they share the target table, the
 * handshake slots and the per-peer connection map; split, a change to one would have to be checked
 * against the others across files. The limits themselves are in conn-limits.ts.
 */
import { EventEmitter } from 'node:events';
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { type Clock, realClock, type Timer } from '../common/clock.js';
import { InputError, WeftError } from '../common/errors.js';
import type { Startable } from '../common/lifecycle.js';
import type { Logger } from '../common/log.js';
import { compareText, type PeerName } from '../common/types.js';
import {
  HANDSHAKES_MAX,
  HANDSHAKES_PER_ADDR_MAX,
  KNOWN_PEER_ADDRS_MAX,
  LINGER_DISCARD_MAX_BYTES,
  REFUSALS_LOG_INTERVAL_MS,
  REFUSE_LINGER_MS,
  REFUSED_LINGER_MAX,
  TERMINATION_CONN_LIMIT,
  TERMINATION_HANDSHAKE_LIMIT,
} from './conn-limits.js';
import {
  CLOSE_SELF,
  Connection,
  type ConnectionClosed,
  type ConnectionOptions,
  type LocalPeerInfo,
} from './connection.js';
import {
  CONN_LIMIT_DEFAULT,
  CONTROL_PORT,
  RECONNECT_FACTOR,
  RECONNECT_INITIAL_MS,
  RECONNECT_JITTER,
  RECONNECT_MAX_MS,
} from './constants.js';
import { derivePasswordKey } from './crypto/index.js';
import { encodeFrame } from './protocol.js';

// ---- Implementation choices (candidates for router/constants.ts) ----

/** CLOSE_DUPLICATE is the close reason of the connection dropped when two connect the same pair of peers. */
export const CLOSE_DUPLICATE = 'duplicate connection';
/** CLOSE_SHUTDOWN is the close reason of every connection when the maker stops. */
export const CLOSE_SHUTDOWN = 'router shutting down';

/**
 * TARGETS_MAX_DEFAULT bounds the targets one ConnectionMaker holds, so no caller can grow the list
 * without bound: the persistent ones (launch and connect; control/ keeps at most 10 000, what a
 * state file holds) plus those discovery adds (at most --discovery-degree, itself at most 10 000).
 */
export const TARGETS_MAX_DEFAULT = 20_000;

/** TargetState: see the module comment. */
export type TargetState = 'connecting' | 'established' | 'retrying' | 'failed';

/** TargetStatus is a JSON-safe snapshot of one connection target. */
export interface TargetStatus {
  /** address is the normalised `host:port`. */
  readonly address: string;
  readonly state: TargetState;
  /** lastError is why the last attempt failed or the last connection closed. */
  readonly lastError?: string;
  /** nextRetryAt is when the next attempt starts (ms since the epoch). */
  readonly nextRetryAt?: number;
  /** attempts counts dials since the target was added or last established. */
  readonly attempts: number;
  /** peer is the name of the router this address led to, once known. */
  readonly peer?: string;
}

/** ConnectionStatus is a JSON-safe snapshot of one live control connection. */
export interface ConnectionStatus {
  readonly peer?: string;
  readonly nickname?: string;
  readonly remoteAddr: string;
  readonly outbound: boolean;
  readonly state: 'pending' | 'established';
  /** since is when it was established, or opened if still pending (ms since the epoch). */
  readonly since: number;
  /** encrypted is true for an established connection whose frames are sealed; cipher names its AEAD. */
  readonly encrypted?: boolean;
  readonly cipher?: string;
}

/** ConnectionMakerEvents: `connection-closed` fires only for connections that fired `connection-established`. */
export interface ConnectionMakerEvents {
  'connection-established': [conn: Connection];
  'connection-closed': [conn: Connection, reason: string];
}

/** ConnectionMakerOptions configure a ConnectionMaker. */
export interface ConnectionMakerOptions {
  /** local describes this router; `tcpPort` is filled in with the port actually bound. */
  readonly local: Omit<LocalPeerInfo, 'tcpPort'>;
  /** password authenticates and encrypts every connection; its key is derived once, here (scrypt). */
  readonly password?: Buffer;
  /** passwordKey is derivePasswordKey(password) when the caller has it already (saves a scrypt). */
  readonly passwordKey?: Buffer;
  /** host to listen on (default 0.0.0.0). */
  readonly host?: string;
  /** port to listen on (default CONTROL_PORT; 0 picks a free one, see `address()`). */
  readonly port?: number;
  /**
   * connLimit caps established connections; inbound ones beyond it are refused (default
   * CONN_LIMIT_DEFAULT). Connections still in their handshake do not count: see handshakesMax.
   */
  readonly connLimit?: number;
  /** handshakesMax caps inbound handshakes in progress from strangers (default HANDSHAKES_MAX). */
  readonly handshakesMax?: number;
  /** handshakesPerAddrMax caps inbound handshakes in progress from one address (default HANDSHAKES_PER_ADDR_MAX). */
  readonly handshakesPerAddrMax?: number;
  /** targets to dial once started. */
  readonly targets?: readonly string[];
  /** targetsMax caps the targets held; addTargets refuses beyond it (default TARGETS_MAX_DEFAULT). */
  readonly targetsMax?: number;
  readonly log: Logger;
  /** random returns a number in [0, 1) for backoff jitter (default Math.random). */
  readonly random?: () => number;
  /** clock gives timers to the maker and its connections, and the time unless `now` is given (default real). */
  readonly clock?: Clock;
  /** now returns the current time in ms (default Date.now, or the clock's when one is given). */
  readonly now?: () => number;
  /** connection passes timing/version overrides to every Connection (tests). */
  readonly connection?: Pick<
    ConnectionOptions,
    | 'versionMin'
    | 'versionMax'
    | 'handshakeTimeoutMs'
    | 'heartbeatIntervalMs'
    | 'heartbeatTimeoutMs'
    | 'heartbeatRelaxedIntervalMs'
    | 'heartbeatRelaxedTimeoutMs'
  >;
  /** dataLiveness relaxes every connection's control heartbeats while the data path proves its peer alive. */
  readonly dataLiveness?: ConnectionOptions['dataLiveness'];
  /** trusts says whether an underlay address is in our trusted subnets (see ConnectionOptions.trusts). */
  readonly trusts?: ConnectionOptions['trusts'];
}

interface Target {
  readonly address: string;
  readonly host: string;
  readonly port: number;
  state: TargetState;
  attempts: number;
  /** failures counts consecutive failed attempts; it sets the backoff delay. */
  failures: number;
  lastError: string | undefined;
  nextRetryAt: number | undefined;
  peer: PeerName | undefined;
  /** conn is the attempt or connection this target dialled, while it lives. */
  conn: Connection | undefined;
  timer: Timer | undefined;
}

const HOSTNAME_RE =
  /^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*\.?$/;
const IPV4_RE = /^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$/;

/**
 * parseTarget normalises a target `host[:port]` (IPv4 literal or hostname; port defaults to
 * CONTROL_PORT) to `{ host, port, address: 'host:port' }`. Throws InputError otherwise.
 */
export function parseTarget(s: string): { host: string; port: number; address: string } {
  const v = s.trim();
  const colon = v.lastIndexOf(':');
  const host = (colon < 0 ? v : v.slice(0, colon)).toLowerCase();
  const portText = colon < 0 ? undefined : v.slice(colon + 1);
  if (!IPV4_RE.test(host) && !(HOSTNAME_RE.test(host) && /[a-z]/.test(host))) {
    throw new InputError(`invalid target "${s}": want host[:port] with an IPv4 address or a hostname`);
  }
  let port = CONTROL_PORT;
  if (portText !== undefined) {
    if (!/^[0-9]{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
      throw new InputError(`invalid port in target "${s}": want 1-65535`);
    }
    port = Number(portText);
  }
  return { host, port, address: `${host}:${port}` };
}

/**
 * ConnectionMaker owns the control-plane listener, the target list and every control connection.
 * It dials targets with exponential backoff (RECONNECT_INITIAL_MS × RECONNECT_FACTOR^n, ±10 %
 * jitter, at most RECONNECT_MAX_MS), redials a target whose connection drops (from the initial
 * delay again), and when two connections link the same pair of peers keeps the one dialled by the
 * peer with the smaller name (ties: the smaller connection id), which both ends compute alike.
 *
 * `start()` listens; `stop()` closes the listener, every connection and every timer and resolves
 * when their sockets are released. Both are idempotent; a stopped maker cannot be started again.
 */
export class ConnectionMaker extends EventEmitter<ConnectionMakerEvents> implements Startable {
  private readonly opts: ConnectionMakerOptions;
  private readonly log: Logger;
  private readonly random: () => number;
  private readonly now: () => number;
  private readonly clock: Clock;
  private readonly connLimit: number;
  private readonly handshakesMax: number;
  private readonly handshakesPerAddrMax: number;
  private readonly targetsMax: number;
  private readonly targetMap = new Map<string, Target>();
  private readonly conns = new Set<Connection>();
  /** byPeer holds the one established connection kept per peer. */
  private readonly byPeer = new Map<PeerName, Connection>();
  /** announced holds connections that fired `connection-established`. */
  private readonly announced = new Set<Connection>();
  /** handshakes maps each inbound connection still in its handshake to its source address. */
  private readonly handshakes = new Map<Connection, string>();
  /** handshakesByAddr counts the entries of `handshakes` per source address (no zero entries). */
  private readonly handshakesByAddr = new Map<string, number>();
  /** knownAddrs are source addresses that completed a handshake, oldest first (at most KNOWN_PEER_ADDRS_MAX). */
  private readonly knownAddrs = new Set<string>();
  /** overLimit holds connections closed because they would exceed connLimit (counted as conn_limit). */
  private readonly overLimit = new WeakSet<Connection>();
  /** refused holds refused sockets still lingering for the other end's FIN. */
  private readonly refused = new Set<Socket>();
  /** refusals counts refusals not yet logged; refusalsLoggedAt is when the last warning was written. */
  private refusals = 0;
  private refusalsLoggedAt = Number.NEGATIVE_INFINITY;
  private server: Server | undefined;
  private boundPort = 0;
  /**
   * terminations counts closed connections by kind: the error code for failures
   * (EWEFT_PROTOCOL, EWEFT_AUTH, EWEFT_PROTOCOL_VERSION, ...), 'handshake_limit' / 'conn_limit' for
   * inbound connections refused by a limit, else 'closed_by_peer' / 'closed_by_us'.
   */
  readonly terminations = new Map<string, number>();
  /** passwordKey is derivePasswordKey(opts.password), shared by every connection. */
  private readonly passwordKey: Buffer | undefined;
  private started = false;
  private stopped = false;
  private stopping: Promise<void> | undefined;

  constructor(opts: ConnectionMakerOptions) {
    super();
    this.opts = opts;
    this.passwordKey = opts.passwordKey ?? (opts.password === undefined ? undefined : derivePasswordKey(opts.password));
    this.log = opts.log;
    this.random = opts.random ?? Math.random;
    const clock = opts.clock ?? realClock;
    this.clock = clock;
    this.now = opts.now ?? (opts.clock === undefined ? () => Date.now() : () => clock.now());
    this.connLimit = opts.connLimit ?? CONN_LIMIT_DEFAULT;
    this.handshakesMax = opts.handshakesMax ?? HANDSHAKES_MAX;
    this.handshakesPerAddrMax = opts.handshakesPerAddrMax ?? HANDSHAKES_PER_ADDR_MAX;
    this.targetsMax = opts.targetsMax ?? TARGETS_MAX_DEFAULT;
    if (opts.targets !== undefined) this.addTargets(opts.targets);
  }

  /** start listens for connections, then dials every target. Rejects with WeftError (EWEFT_SYSTEM) if it cannot listen. */
  async start(): Promise<void> {
    if (this.stopped) throw new WeftError('EWEFT_CONFLICT', 'connection maker has been stopped');
    if (this.started) return;
    this.started = true;
    const host = this.opts.host ?? '0.0.0.0';
    const port = this.opts.port ?? CONTROL_PORT;
    const server = createServer({ noDelay: true, keepAlive: true });
    server.on('connection', (socket) => this.onInbound(socket));
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host, port, exclusive: true }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      this.started = false;
      const msg = err instanceof Error ? err.message : String(err);
      throw new WeftError('EWEFT_SYSTEM', `cannot listen for control connections on ${host}:${port}: ${msg}`, {
        cause: err,
      });
    }
    server.on('error', (err) => this.log.error('control listener error', { err: err.message }));
    this.server = server;
    const addr = server.address();
    this.boundPort = typeof addr === 'object' && addr !== null ? addr.port : port;
    this.log.info('listening for control connections', { addr: `${host}:${this.boundPort}` });
    for (const t of this.targetMap.values()) if (t.conn === undefined && t.timer === undefined) this.dial(t);
  }

  /** stop closes the listener, every connection and every timer; resolves when all sockets are released. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  /** address is where the maker listens; `port` is the bound port (useful after asking for 0). */
  address(): { host: string; port: number } {
    return { host: this.opts.host ?? '0.0.0.0', port: this.boundPort };
  }

  /**
   * addTargets adds `host[:port]` targets and dials new ones at once (if started). Addresses
   * already present are left alone, so discovery may call this repeatedly. Throws InputError for
   * an invalid entry, or when the new ones would take the list beyond `targetsMax`, adding none.
   */
  addTargets(list: readonly string[]): void {
    const parsed = list.map(parseTarget);
    const fresh = new Set(parsed.filter((p) => !this.targetMap.has(p.address)).map((p) => p.address));
    if (this.targetMap.size + fresh.size > this.targetsMax) {
      throw new InputError(
        `too many connection targets: ${this.targetMap.size} held and ${fresh.size} new would pass the limit of ${this.targetsMax}`,
      );
    }
    for (const p of parsed) {
      if (this.targetMap.has(p.address)) continue;
      const t: Target = {
        ...p,
        state: 'connecting',
        attempts: 0,
        failures: 0,
        lastError: undefined,
        nextRetryAt: undefined,
        peer: undefined,
        conn: undefined,
        timer: undefined,
      };
      this.targetMap.set(p.address, t);
      this.log.info('target added', { addr: p.address });
      if (this.started && !this.stopped) this.dial(t);
    }
  }

  /**
   * removeTargets forgets targets: no more dials or retries. A connection they already made (or
   * an attempt in flight) is left alone. Throws InputError for an invalid entry, removing none.
   */
  removeTargets(list: readonly string[]): void {
    const parsed = list.map(parseTarget);
    for (const p of parsed) {
      const t = this.targetMap.get(p.address);
      if (t === undefined) continue;
      if (t.timer !== undefined) this.clock.clearTimeout(t.timer);
      t.timer = undefined;
      this.targetMap.delete(p.address);
      this.log.info('target removed', { addr: p.address });
    }
  }

  /** targets returns a snapshot of every target, sorted by address. */
  targets(): TargetStatus[] {
    return [...this.targetMap.values()]
      .sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0))
      .map((t) => ({
        address: t.address,
        state: t.state,
        attempts: t.attempts,
        ...(t.lastError !== undefined && { lastError: t.lastError }),
        ...(t.nextRetryAt !== undefined && { nextRetryAt: t.nextRetryAt }),
        ...(t.peer !== undefined && { peer: t.peer }),
      }));
  }

  /** connections returns a snapshot of every live connection, established ones first, then by peer. */
  connections(): ConnectionStatus[] {
    const out: ConnectionStatus[] = [];
    for (const c of this.conns) {
      const established = c.state === 'established';
      const peer = c.remoteName;
      out.push({
        ...(peer !== undefined && { peer }),
        ...(established && { nickname: c.remote.nickname }),
        remoteAddr: c.remoteAddr,
        outbound: c.outbound,
        state: established ? 'established' : 'pending',
        since: c.since,
        ...(established && { encrypted: c.encrypted }),
        ...(c.cipher !== undefined && { cipher: c.cipher }),
      });
    }
    return out.sort(
      (a, b) =>
        (a.state === b.state ? 0 : a.state === 'established' ? -1 : 1) ||
        compareText(a.peer ?? '~', b.peer ?? '~') ||
        compareText(a.remoteAddr, b.remoteAddr),
    );
  }

  /** peerConnection returns the established connection kept for a peer, if any. */
  peerConnection(peer: PeerName): Connection | undefined {
    return this.byPeer.get(peer);
  }

  // ---- connections ----

  /** handshakesInProgress is how many inbound connections are in their handshake now. */
  get handshakesInProgress(): number {
    return this.handshakes.size;
  }

  private onInbound(socket: Socket): void {
    const addr = socket.remoteAddress;
    if (this.stopped || addr === undefined) {
      socket.destroy();
      return;
    }
    const ip = normaliseIPv4(addr);
    if (this.announced.size >= this.connLimit) {
      this.refuse(socket, TERMINATION_CONN_LIMIT, `too many connections (limit ${this.connLimit})`);
      return;
    }
    const fromAddr = this.handshakesByAddr.get(ip) ?? 0;
    if (fromAddr >= this.handshakesPerAddrMax) {
      this.refuse(
        socket,
        TERMINATION_HANDSHAKE_LIMIT,
        `too many handshakes in progress from ${ip} (limit ${this.handshakesPerAddrMax})`,
      );
      return;
    }
    if (this.handshakes.size >= this.handshakesMax && !this.isKnownAddr(ip)) {
      this.refuse(socket, TERMINATION_HANDSHAKE_LIMIT, `too many handshakes in progress (limit ${this.handshakesMax})`);
      return;
    }
    const conn = this.track(socket, false, undefined);
    if (conn.state !== 'handshake') return;
    this.handshakes.set(conn, ip);
    this.handshakesByAddr.set(ip, fromAddr + 1);
  }

  /** handshakeDone frees the handshake slot of an inbound connection (established or closed); idempotent. */
  private handshakeDone(conn: Connection): void {
    const ip = this.handshakes.get(conn);
    if (ip === undefined) return;
    this.handshakes.delete(conn);
    const n = (this.handshakesByAddr.get(ip) ?? 1) - 1;
    if (n > 0) this.handshakesByAddr.set(ip, n);
    else this.handshakesByAddr.delete(ip);
  }

  /** isKnownAddr says whether an address completed a handshake before or is a target's host. */
  private isKnownAddr(ip: string): boolean {
    if (this.knownAddrs.has(ip)) return true;
    for (const t of this.targetMap.values()) if (t.host === ip) return true;
    return false;
  }

  /** rememberAddr records the address of a connection that completed its handshake (most recent last). */
  private rememberAddr(ip: string): void {
    if (ip === '') return;
    this.knownAddrs.delete(ip);
    this.knownAddrs.add(ip);
    if (this.knownAddrs.size > KNOWN_PEER_ADDRS_MAX) {
      const oldest = this.knownAddrs.values().next().value;
      if (oldest !== undefined) this.knownAddrs.delete(oldest);
    }
  }

  /**
   * refuse turns an inbound socket away without making a Connection: a Close frame with the
   * reason, FIN, and destroy on the other end's FIN, after REFUSE_LINGER_MS, or once it has sent
   * more than LINGER_DISCARD_MAX_BYTES (all discarded). Beyond REFUSED_LINGER_MAX lingering
   * sockets it is destroyed at once.
   */
  private refuse(socket: Socket, kind: string, reason: string): void {
    this.terminations.set(kind, (this.terminations.get(kind) ?? 0) + 1);
    this.noteRefusal(kind, reason);
    socket.on('error', () => {}); // a reset while we refuse changes nothing
    if (this.refused.size >= REFUSED_LINGER_MAX || !socket.writable) {
      socket.destroy();
      return;
    }
    this.refused.add(socket);
    let discarded = 0;
    socket.on('data', (chunk: Buffer) => {
      discarded += chunk.length;
      if (discarded > LINGER_DISCARD_MAX_BYTES) socket.destroy();
    });
    socket.on('end', () => socket.destroy());
    const timer = this.clock.setTimeout(() => socket.destroy(), REFUSE_LINGER_MS);
    socket.once('close', () => {
      this.clock.clearTimeout(timer);
      this.refused.delete(socket);
    });
    socket.end(encodeFrame({ t: 'close', reason }));
  }

  /** noteRefusal logs refusals: every one at debug level, and a warning at most every REFUSALS_LOG_INTERVAL_MS. */
  private noteRefusal(kind: string, reason: string): void {
    this.refusals++;
    if (this.log.isDebug) this.log.debug('inbound connection refused', { reason, code: kind });
    const t = this.now();
    if (t - this.refusalsLoggedAt < REFUSALS_LOG_INTERVAL_MS) return;
    this.log.warn('inbound connections refused', { reason, code: kind, count: this.refusals });
    this.refusals = 0;
    this.refusalsLoggedAt = t;
  }

  private dial(t: Target): void {
    t.timer = undefined;
    t.nextRetryAt = undefined;
    if (t.peer !== undefined && this.byPeer.has(t.peer)) {
      this.markEstablished(t, t.peer);
      return;
    }
    t.attempts++;
    t.state = t.lastError === undefined ? 'connecting' : 'retrying';
    const socket = netConnect({ host: t.host, port: t.port, family: 4 });
    t.conn = this.track(socket, true, t);
  }

  private track(socket: Socket, outbound: boolean, target: Target | undefined): Connection {
    const conn = new Connection({
      ...this.opts.connection,
      socket,
      outbound,
      local: { ...this.opts.local, tcpPort: this.boundPort },
      ...(this.passwordKey !== undefined && { passwordKey: this.passwordKey }),
      log: this.log,
      now: this.now,
      clock: this.clock,
      ...(this.opts.dataLiveness !== undefined && { dataLiveness: this.opts.dataLiveness }),
      ...(this.opts.trusts !== undefined && { trusts: this.opts.trusts }),
      ...(target !== undefined && { label: target.address }),
    });
    this.conns.add(conn);
    conn.on('established', () => this.onEstablished(conn, target));
    conn.on('closed', (info) => this.onClosed(conn, target, info));
    return conn;
  }

  private onEstablished(conn: Connection, target: Target | undefined): void {
    this.handshakeDone(conn);
    if (this.stopped) return;
    const name = conn.remote.name;
    this.rememberAddr(conn.remote.addr);
    const existing = this.byPeer.get(name);
    if (existing !== undefined && prefer(existing, conn, this.opts.local.name) === existing) {
      conn.close(CLOSE_DUPLICATE); // onClosed marks its target established via `existing`
      return;
    }
    if (existing === undefined && !conn.outbound && this.announced.size >= this.connLimit) {
      // Handshakes that were in progress together may complete beyond the limit: the first ones win.
      this.overLimit.add(conn);
      conn.close(`too many connections (limit ${this.connLimit})`);
      return;
    }
    this.byPeer.set(name, conn);
    if (existing !== undefined) existing.close(CLOSE_DUPLICATE);
    this.announced.add(conn);
    if (target !== undefined && this.targetMap.get(target.address) === target) this.markEstablished(target, name);
    for (const t of this.targetMap.values()) {
      if (t.peer === name && t.state !== 'established' && t.conn === undefined) this.markEstablished(t, name);
    }
    this.emit('connection-established', conn);
  }

  private onClosed(conn: Connection, target: Target | undefined, info: ConnectionClosed): void {
    this.conns.delete(conn);
    this.handshakeDone(conn);
    const kind = this.overLimit.has(conn) ? TERMINATION_CONN_LIMIT : terminationKind(info);
    this.terminations.set(kind, (this.terminations.get(kind) ?? 0) + 1);
    const name = conn.remoteName;
    let peerLost = false;
    if (name !== undefined && this.byPeer.get(name) === conn) {
      this.byPeer.delete(name);
      peerLost = true;
    }
    if (this.announced.delete(conn)) this.emit('connection-closed', conn, info.reason);
    if (this.stopped) return;

    if (target !== undefined && target.conn === conn) {
      target.conn = undefined;
      if (this.targetMap.get(target.address) === target) this.afterAttempt(target, conn, info);
    }
    if (peerLost) {
      // Targets that counted on this connection (an inbound one, or a duplicate's survivor) redial.
      for (const t of this.targetMap.values()) {
        if (t.peer === name && t.state === 'established' && t.conn === undefined) {
          this.retryLater(t, info.reason, true);
        }
      }
    }
  }

  /** afterAttempt decides what a target does once the connection it dialled has closed. */
  private afterAttempt(t: Target, conn: Connection, info: ConnectionClosed): void {
    const name = conn.remoteName;
    if (name !== undefined) t.peer = name;
    if (name !== undefined && this.byPeer.has(name)) {
      this.markEstablished(t, name); // closed as a duplicate, or superseded: the peer is still reached
      return;
    }
    if (info.reason === CLOSE_SELF || info.error?.code === 'EWEFT_PEER_NAME_COLLISION') {
      t.state = 'failed';
      t.lastError = info.reason;
      t.nextRetryAt = undefined;
      this.log.warn('target given up', { addr: t.address, reason: info.reason });
      return;
    }
    this.retryLater(t, info.reason, conn.wasEstablished);
  }

  /** retryLater schedules the next dial; `reset` restarts the backoff (after a connection that worked). */
  private retryLater(t: Target, reason: string, reset: boolean): void {
    if (reset) {
      t.failures = 0;
      t.attempts = 0;
    }
    const delay = backoffMs(t.failures, this.random);
    t.failures++;
    t.state = 'failed';
    t.lastError = reason;
    t.nextRetryAt = this.now() + delay;
    if (t.timer !== undefined) this.clock.clearTimeout(t.timer);
    t.timer = this.clock.setTimeout(() => this.dial(t), delay);
    this.log.info('connection to target failed, retrying', { addr: t.address, reason, ms: Math.round(delay) });
  }

  private markEstablished(t: Target, peer: PeerName): void {
    if (t.timer !== undefined) this.clock.clearTimeout(t.timer);
    t.timer = undefined;
    t.state = 'established';
    t.peer = peer;
    t.attempts = 0;
    t.failures = 0;
    t.lastError = undefined;
    t.nextRetryAt = undefined;
  }

  private async doStop(): Promise<void> {
    this.stopped = true;
    for (const t of this.targetMap.values()) {
      if (t.timer !== undefined) this.clock.clearTimeout(t.timer);
      t.timer = undefined;
      t.nextRetryAt = undefined;
    }
    const server = this.server;
    this.server = undefined;
    const serverClosed =
      server === undefined
        ? Promise.resolve()
        : new Promise<void>((resolve) => {
            server.close(() => resolve());
          });
    const conns = [...this.conns];
    for (const c of conns) c.close(CLOSE_SHUTDOWN);
    const refused = [...this.refused].map((s) => {
      const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
      s.destroy();
      return closed;
    });
    await Promise.all([serverClosed, ...conns.map((c) => c.done), ...refused]);
    if (this.started) this.log.info('control listener stopped');
  }
}

/**
 * prefer picks which of two connections to the same peer to keep: the one dialled by the peer
 * with the smaller name, then the smaller connection id. Both ends see the same names and ids,
 * so both keep the same one.
 */
function prefer(a: Connection, b: Connection, localName: PeerName): Connection {
  const ka = `${a.outbound ? localName : a.remote.name}/${a.connectionId ?? ''}`;
  const kb = `${b.outbound ? localName : b.remote.name}/${b.connectionId ?? ''}`;
  return ka <= kb ? a : b;
}

/** backoffMs is the delay after `failures` earlier consecutive failures: initial × factor^failures ±jitter, at most RECONNECT_MAX_MS. */
export function backoffMs(failures: number, random: () => number = Math.random): number {
  const base = RECONNECT_INITIAL_MS * RECONNECT_FACTOR ** Math.max(0, failures);
  return Math.min(RECONNECT_MAX_MS, base * (1 + RECONNECT_JITTER * (2 * random() - 1)));
}

/** normaliseIPv4 strips the IPv4-mapped IPv6 prefix a dual-stack socket reports. */
function normaliseIPv4(addr: string): string {
  return addr.startsWith('::ffff:') ? addr.slice(7) : addr;
}

/** terminationKind classifies a closed connection for the terminations counter. */
function terminationKind(info: ConnectionClosed): string {
  if (info.error !== undefined) return info.error.code;
  return info.initiator === 'remote' ? 'closed_by_peer' : 'closed_by_us';
}

export { CONN_LIMIT_DEFAULT, RECONNECT_JITTER };
