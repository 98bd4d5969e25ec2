/**
 * Connection: one TCP control connection to another router (handshake, heartbeats, typed messages).
 *
 * Lifecycle:
 *
 * ```
 *  new Connection ──Hello──▶ handshake ──(Hello ok [, Auth ok])──▶ established ──▶ closed
 *        │                      │                                      │
 *        └──────────────────────┴── error / timeout / close() / EOF ───┘
 * ```
 *
 * `closed` is emitted exactly once, synchronously inside whatever caused it (a `close()` call, a
 * bad frame, a timer); `established` at most once, before it. After `closed` the socket lingers
 * until the peer's FIN (at most CLOSE_LINGER_MS) so that our Close frame reaches it; `done`
 * resolves when the socket is fully released.
 *
 * Over 400 lines because it is one state machine: the handshake (Hello, key exchange, Auth),
 * heartbeats, sealed framing after Auth and the single move to `closed` act on the same socket,
 * timers and state, and `closed` is emitted exactly once only if every path to it stays in view.
 * Framing and schemas are already in protocol.ts, the keys in crypto/.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { type Clock, realClock, type Timer } from '../common/clock.js';
import { ProtocolError, WeftError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { type PeerName, type PeerUid, reservedPeerNameReason } from '../common/types.js';
import { HELLO_MAX_BYTES, LINGER_DISCARD_MAX_BYTES } from './conn-limits.js';
import {
  CLOSE_LINGER_MS,
  CONTROL_MESSAGE_MAX_BYTES,
  CONTROL_PORT,
  HANDSHAKE_TIMEOUT_MS,
  HEARTBEAT_INTERVAL_MS,
  HEARTBEAT_RELAXED_INTERVAL_MS,
  HEARTBEAT_RELAXED_TIMEOUT_MS,
  HEARTBEAT_TIMEOUT_MS,
  PROTOCOL_VERSION_MAX,
  PROTOCOL_VERSION_MIN,
  SEND_BUFFER_MAX_BYTES,
  TCP_KEEPALIVE_DELAY_MS,
} from './constants.js';
import {
  AEAD_CIPHERS,
  type AeadCipher,
  derivePasswordKey,
  FrameOpener,
  FrameSealer,
  KeyExchange,
  KeyExchangeError,
  negotiateCipher,
  SEALED_FRAME_OVERHEAD_BYTES,
  SealedFrameError,
  type SessionKeys,
  X25519_KEY_BYTES,
} from './crypto/index.js';
import {
  CLOSE_REASON_MAX_CHARS,
  decodeBody,
  type Encap,
  encodeFrame,
  FRAME_HEADER_LEN,
  FrameDecoder,
  HEARTBEAT_FRAME,
  type Hello,
  type Message,
  messageType,
  NONCE_LEN,
  type PeerMessage,
  PROTOCOL_ID,
  parseAuth,
  parseClose,
  parseHello,
  parseMessage,
} from './protocol.js';

// ---- Implementation choices (candidates for router/constants.ts) ----

/** CLOSE_SELF is the close reason for a connection whose other end is this very router. */
export const CLOSE_SELF = 'connection to self';
/** CLOSE_HEARTBEAT_TIMEOUT is the close reason after HEARTBEAT_TIMEOUT_MS of silence. */
export const CLOSE_HEARTBEAT_TIMEOUT = 'heartbeat timeout';
/** CLOSE_PEER_EOF is the close reason when the peer ends the stream without a Close message. */
export const CLOSE_PEER_EOF = 'connection closed by peer';
/** CLOSE_REMOTE_PREFIX starts the close reason when the peer sent a Close message; its reason follows. */
export const CLOSE_REMOTE_PREFIX = 'peer closed connection: ';

/** LocalPeerInfo is what we announce about ourselves in Hello. `tcpPort` defaults to CONTROL_PORT. */
export interface LocalPeerInfo {
  readonly name: PeerName;
  readonly nickname: string;
  readonly uid: bigint;
  readonly sleevePort: number;
  readonly vxlanPort: number;
  readonly vni: number;
  readonly encap: Encap;
  /** fastdp: our kernel fast path is up (see Hello.fastdp). */
  readonly fastdp?: boolean;
  readonly mtu: number;
  /** tcpPort is the port we accept control connections on (announced for discovery). */
  readonly tcpPort?: number;
}

/** RemotePeerInfo is what the handshake established about the other router. */
export interface RemotePeerInfo {
  readonly name: PeerName;
  readonly nickname: string;
  readonly uid: PeerUid;
  /** version is the negotiated protocol version. */
  readonly version: number;
  readonly sleevePort: number;
  readonly vxlanPort: number;
  readonly vni: number;
  readonly encap: Encap;
  /** fastdp: the peer's kernel fast path is up (its Hello said so). */
  readonly fastdp: boolean;
  readonly mtu: number;
  /** addr is the peer's IPv4 address as seen on this socket. */
  readonly addr: string;
  /** tcpPort is the port the peer accepts control connections on (from its Hello, not this socket's port). */
  readonly tcpPort: number;
}

/** ConnectionClosed describes why a connection closed. */
export interface ConnectionClosed {
  /** reason is one line for humans and logs; see the CLOSE_* constants for the fixed ones. */
  readonly reason: string;
  /** error is set when the close was caused by a failure (protocol, auth, version, socket). */
  readonly error?: WeftError;
  /** initiator says which side decided to close: 'remote' for a peer's Close, EOF or socket error. */
  readonly initiator: 'local' | 'remote';
}

/** ConnectionEvents are the events a Connection emits; listeners must not throw. */
export interface ConnectionEvents {
  /** established fires once when the handshake completes. */
  established: [remote: RemotePeerInfo];
  /** message fires for every valid Addresses or Gossip message after the handshake. */
  message: [msg: PeerMessage];
  /** closed fires exactly once. */
  closed: [info: ConnectionClosed];
}

/** ConnectionState: 'handshake' until Hello (and Auth) are verified, then 'established', then 'closed'. */
export type ConnectionState = 'handshake' | 'established' | 'closed';

/** ConnectionStats are live counters; read them, never write them. */
export interface ConnectionStats {
  framesIn: number;
  framesOut: number;
  bytesIn: number;
  bytesOut: number;
  /** unknownIn counts messages with a type this version does not know (ignored). */
  unknownIn: number;
  /** sendDropped counts `send()` calls refused because the socket buffer was full or the connection not established. */
  sendDropped: number;
}

/** ConnectionOptions configure a Connection; the timing and version overrides exist for tests. */
export interface ConnectionOptions {
  /** socket may still be connecting; Hello is queued until it connects. The Connection owns it from now on. */
  readonly socket: Socket;
  /** outbound is true when we dialled. */
  readonly outbound: boolean;
  readonly local: LocalPeerInfo;
  /**
   * password, when set, requires the peer to prove it knows the same bytes and encrypts the
   * connection. Prefer `passwordKey`: deriving it from `password` costs a scrypt per connection.
   */
  readonly password?: Buffer;
  /** passwordKey is derivePasswordKey(password), derived once per router; it wins over `password`. */
  readonly passwordKey?: Buffer;
  readonly log: Logger;
  /** label names the other end in logs until the socket is connected (e.g. the dialled `host:port`). */
  readonly label?: string;
  /** clock gives timers, and the time unless `now` is given (default the real clock). */
  readonly clock?: Clock;
  /** now returns the current time in ms (default Date.now, or the clock's when one is given). */
  readonly now?: () => number;
  readonly versionMin?: number;
  readonly versionMax?: number;
  readonly handshakeTimeoutMs?: number;
  readonly heartbeatIntervalMs?: number;
  readonly heartbeatTimeoutMs?: number;
  readonly heartbeatRelaxedIntervalMs?: number;
  readonly heartbeatRelaxedTimeoutMs?: number;
  /**
   * dataLiveness tells when the data path last proved the peer's router alive (its heartbeat
   * heard, ours acked), in this connection's clock; while it does, control heartbeats relax
   * (HEARTBEAT_RELAXED_INTERVAL_MS). Absent: control heartbeats alone prove liveness.
   */
  readonly dataLiveness?: (peer: PeerName) => DataLivenessTimes | undefined;
  readonly sendBufferMaxBytes?: number;
  /**
   * trusts says whether an underlay address (dotted quad) is in our --trusted-subnets. With a
   * password, our Hello says whether we trust the other end (by the dialled address, or the
   * socket's); when both ends do, the data plane stays unencrypted (`dataTrusted`). The control
   * connection is encrypted whatever they say.
   */
  readonly trusts?: (ip: string) => boolean;
}

/** DataLivenessTimes: when the peer's data-path heartbeat last reached us, and when one of ours was last acked (ms). */
export interface DataLivenessTimes {
  readonly heardAt: number;
  readonly ackedAt: number;
}

/** DataKeys are a connection's data-plane traffic secrets (keys.ts dataGeneration expands them). */
export interface DataKeys {
  readonly suite: AeadCipher;
  /** send is the secret of what we send; recv of what the peer sends. Owned by the connection's user. */
  readonly send: Buffer;
  readonly recv: Buffer;
}

/**
 * Connection wraps one control-connection socket. Both ends send Hello at once; with a password
 * each Hello carries an ephemeral X25519 key, both then send Auth (their key confirmation, see
 * router/crypto/keys.ts) and every later frame is sealed (router/crypto/sealed-framer.ts): a frame
 * that was changed, replayed or reordered closes the connection with a ProtocolError that says so.
 * After the handshake it checks twice every HEARTBEAT_INTERVAL_MS: it sends a heartbeat when it has
 * sent nothing for an interval and closes after HEARTBEAT_TIMEOUT_MS without receiving a byte. Unknown message types are counted and ignored.
 *
 * Before the handshake completes (within HANDSHAKE_TIMEOUT_MS) a frame may hold at most
 * HELLO_MAX_BYTES: a longer length prefix closes the connection at once, before any of its body is
 * buffered; after it, CONTROL_MESSAGE_MAX_BYTES.
 */
export class Connection extends EventEmitter<ConnectionEvents> {
  /** outbound is true when we dialled. */
  readonly outbound: boolean;
  /** stats are this connection's live counters. */
  readonly stats: ConnectionStats = {
    framesIn: 0,
    framesOut: 0,
    bytesIn: 0,
    bytesOut: 0,
    unknownIn: 0,
    sendDropped: 0,
  };
  /** done resolves when the socket has been fully released (after `closed`). Never rejects. */
  readonly done: Promise<void>;

  private readonly socket: Socket;
  private readonly local: LocalPeerInfo;
  /** passwordKey is derivePasswordKey(password); set when a password is configured. */
  private readonly passwordKey: Buffer | undefined;
  /** kxPrivate is our ephemeral X25519 private key (raw) until the peer's Hello; wiped after. */
  private kxPrivate: Buffer | undefined;
  /** kxPublic is the public half, sent in Hello. */
  private kxPublic: Buffer | undefined;
  /** trustsPeer: our Hello said the other end's underlay address is in our trusted subnets. */
  private readonly trustsPeer: boolean;
  private readonly trusts: ((ip: string) => boolean) | undefined;
  /** pendingKeys are the session keys between our Auth and the peer's (control secrets wiped at establish). */
  private pendingKeys: SessionKeys | undefined;
  private sealer: FrameSealer | undefined;
  private opener: FrameOpener | undefined;
  private suite: AeadCipher | undefined;
  private data: DataKeys | undefined;
  private readonly now: () => number;
  private readonly versionMin: number;
  private readonly versionMax: number;
  private readonly heartbeatIntervalMs: number;
  private readonly heartbeatTimeoutMs: number;
  private readonly heartbeatRelaxedIntervalMs: number;
  private readonly heartbeatRelaxedTimeoutMs: number;
  private readonly dataLiveness: ((peer: PeerName) => DataLivenessTimes | undefined) | undefined;
  private readonly sendBufferMaxBytes: number;
  /** decoder accepts frames of at most HELLO_MAX_BYTES until the handshake completes. */
  private readonly decoder = new FrameDecoder(HELLO_MAX_BYTES);
  private readonly localNonce: Buffer = randomBytes(NONCE_LEN);
  private log: Logger;
  private label: string;

  private phase: 'hello' | 'auth' | 'established' | 'closed' = 'hello';
  private hello: Hello | undefined;
  private version = 0;
  private remoteInfo: RemotePeerInfo | undefined;
  private closeInfo: ConnectionClosed | undefined;
  private createdAt: number;
  private establishedAt: number | undefined;
  private lastRecvAt: number;
  private lastSentAt: number;
  private readonly clock: Clock;
  private handshakeTimer: Timer | undefined;
  private heartbeatTimer: Timer | undefined;
  private lingerTimer: Timer | undefined;
  /** lingerDiscarded counts bytes received and thrown away after `closed`. */
  private lingerDiscarded = 0;
  private resolveDone!: () => void;

  constructor(opts: ConnectionOptions) {
    super();
    this.socket = opts.socket;
    this.outbound = opts.outbound;
    this.local = opts.local;
    this.passwordKey = opts.passwordKey ?? (opts.password !== undefined ? derivePasswordKey(opts.password) : undefined);
    if (this.passwordKey !== undefined) {
      // Raw keys: KeyExchange binds the suite, known only after the peer's Hello, so the pair is
      // made here and handed to it then.
      const { privateKey, publicKey } = generateKeyPairSync('x25519');
      const priv = privateKey.export({ format: 'der', type: 'pkcs8' });
      const pub = publicKey.export({ format: 'der', type: 'spki' });
      this.kxPrivate = Buffer.from(priv.subarray(priv.length - X25519_KEY_BYTES));
      this.kxPublic = Buffer.from(pub.subarray(pub.length - X25519_KEY_BYTES));
      priv.fill(0);
    }
    const clock = opts.clock ?? realClock;
    this.clock = clock;
    this.now = opts.now ?? (opts.clock === undefined ? () => Date.now() : () => clock.now());
    this.versionMin = opts.versionMin ?? PROTOCOL_VERSION_MIN;
    this.versionMax = opts.versionMax ?? PROTOCOL_VERSION_MAX;
    this.heartbeatIntervalMs = opts.heartbeatIntervalMs ?? HEARTBEAT_INTERVAL_MS;
    this.heartbeatTimeoutMs = opts.heartbeatTimeoutMs ?? HEARTBEAT_TIMEOUT_MS;
    this.heartbeatRelaxedIntervalMs = opts.heartbeatRelaxedIntervalMs ?? HEARTBEAT_RELAXED_INTERVAL_MS;
    this.heartbeatRelaxedTimeoutMs = opts.heartbeatRelaxedTimeoutMs ?? HEARTBEAT_RELAXED_TIMEOUT_MS;
    this.dataLiveness = opts.dataLiveness;
    this.sendBufferMaxBytes = opts.sendBufferMaxBytes ?? SEND_BUFFER_MAX_BYTES;
    this.label = opts.label ?? 'unknown';
    this.refreshLabel();
    this.log = opts.log.child({ remoteAddr: this.label, outbound: this.outbound });
    this.trusts = opts.trusts;
    // By the address we dialled, or the socket's peer: a host name is never trusted.
    this.trustsPeer = this.passwordKey !== undefined && opts.trusts?.(hostOf(this.label)) === true;
    this.createdAt = this.now();
    this.lastRecvAt = this.createdAt;
    this.lastSentAt = this.createdAt;
    this.done = new Promise((resolve) => {
      this.resolveDone = resolve;
    });

    const s = this.socket;
    s.setNoDelay(true);
    s.setKeepAlive(true, TCP_KEEPALIVE_DELAY_MS);
    s.on('connect', () => {
      this.refreshLabel();
      this.log = opts.log.child({ remoteAddr: this.label, outbound: this.outbound });
    });
    s.on('data', (chunk: Buffer) => this.onData(chunk));
    s.on('end', () => this.shutdown({ reason: CLOSE_PEER_EOF, initiator: 'remote' }, false));
    s.on('error', (err: Error) => {
      const error = new WeftError('EWEFT_SYSTEM', `connection to ${this.label} failed: ${err.message}`, {
        cause: err,
      });
      this.shutdown({ reason: err.message, error, initiator: 'remote' }, false);
    });
    s.on('close', () => {
      if (this.lingerTimer !== undefined) this.clock.clearTimeout(this.lingerTimer);
      this.lingerTimer = undefined;
      this.shutdown({ reason: CLOSE_PEER_EOF, initiator: 'remote' }, false);
      this.resolveDone();
    });

    this.handshakeTimer = this.clock.setTimeout(() => {
      this.handshakeTimer = undefined;
      this.fail(
        new ProtocolError(`handshake not completed within ${opts.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS} ms`),
      );
    }, opts.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS);

    if (s.destroyed) {
      // Already gone: report it on the next tick so the owner can attach listeners first.
      process.nextTick(() => {
        this.shutdown({ reason: 'socket already closed', initiator: 'local' }, false);
        this.resolveDone();
      });
      return;
    }
    this.write(
      encodeFrame({
        proto: PROTOCOL_ID,
        versionMin: this.versionMin,
        versionMax: this.versionMax,
        name: this.local.name,
        nickname: this.local.nickname,
        uid: this.local.uid.toString(),
        tcpPort: this.local.tcpPort ?? CONTROL_PORT,
        sleevePort: this.local.sleevePort,
        vxlanPort: this.local.vxlanPort,
        vni: this.local.vni,
        encap: this.local.encap,
        ...(this.local.fastdp === true && { fastdp: true }),
        mtu: this.local.mtu,
        nonce: this.localNonce,
        auth: this.passwordKey !== undefined,
        ...(this.kxPublic !== undefined && { kx: this.kxPublic, ciphers: [...AEAD_CIPHERS] }),
        ...(this.trustsPeer && { trusts: true }),
      }),
    );
  }

  /** state is where the connection is in its life. */
  get state(): ConnectionState {
    return this.phase === 'hello' || this.phase === 'auth' ? 'handshake' : this.phase;
  }

  /**
   * remote is what the handshake established about the peer. It stays readable after close.
   * Throws WeftError (EWEFT_NOT_READY) before `established`: check `state` or `remoteName` first.
   */
  get remote(): RemotePeerInfo {
    if (this.remoteInfo === undefined) {
      throw new WeftError('EWEFT_NOT_READY', `connection to ${this.label} has not completed its handshake`);
    }
    return this.remoteInfo;
  }

  /** remoteName is the peer's name as soon as its Hello has been validated (before auth), else undefined. */
  get remoteName(): PeerName | undefined {
    return this.hello?.name as PeerName | undefined;
  }

  /** remoteAddr is `ip:port` of the other end of the socket (or the dial label before it connects). */
  get remoteAddr(): string {
    return this.label;
  }

  /**
   * connectionId identifies this connection identically at both ends (dialler's nonce, then the
   * acceptor's, in hex); undefined before the peer's Hello. Used to break ties between duplicates.
   */
  get connectionId(): string | undefined {
    if (this.hello === undefined) return undefined;
    const theirs = Buffer.from(this.hello.nonce).toString('hex');
    const ours = this.localNonce.toString('hex');
    return this.outbound ? ours + theirs : theirs + ours;
  }

  /** encrypted is true once an established connection seals its frames (a password is configured). */
  get encrypted(): boolean {
    return this.sealer !== undefined;
  }

  /**
   * dataTrusted is true when an encrypted connection's data plane stays unencrypted: each end's
   * --trusted-subnets hold the other's underlay address (both Hellos said so, bound into the key
   * exchange, and the socket's peer address is still one we trust).
   */
  get dataTrusted(): boolean {
    return (
      this.sealer !== undefined &&
      this.trustsPeer &&
      this.hello?.trusts === true &&
      this.trusts?.(normaliseIPv4(this.socket.remoteAddress)) === true
    );
  }

  /** cipher is the negotiated AEAD of an encrypted connection, else undefined. */
  get cipher(): string | undefined {
    return this.sealer === undefined ? undefined : this.suite;
  }

  /**
   * dataKeys are the data-plane traffic secrets of an established encrypted connection (undefined
   * otherwise), for the datapath to expand with dataGeneration. Wiped when the connection closes:
   * copy them to keep them.
   */
  get dataKeys(): DataKeys | undefined {
    return this.data;
  }

  /** since is when the connection was established, or created if it is still in the handshake (ms). */
  get since(): number {
    return this.establishedAt ?? this.createdAt;
  }

  /** wasEstablished is true once the handshake has completed, and stays true after close. */
  get wasEstablished(): boolean {
    return this.establishedAt !== undefined;
  }

  /**
   * bufferedBytes is how many received bytes are held waiting for a complete frame: at most
   * HELLO_MAX_BYTES plus one socket read before the handshake completes, 0 once closed.
   */
  get bufferedBytes(): number {
    return this.decoder.bufferedBytes;
  }

  /** closedInfo is why the connection closed, once it has. */
  get closedInfo(): ConnectionClosed | undefined {
    return this.closeInfo;
  }

  /**
   * send queues a message. Returns false, dropping and counting it, when the connection is not
   * established or more than `sendBufferMaxBytes` is already queued on the socket. Throws
   * InputError for a message that does not match its schema (a local bug).
   */
  send(msg: Exclude<Message, { t: 'close' }>): boolean {
    if (this.phase !== 'established') {
      this.stats.sendDropped++;
      return false;
    }
    const frame = encodeFrame(msg);
    if (this.socket.writableLength > this.sendBufferMaxBytes) {
      this.stats.sendDropped++;
      if (this.log.isDebug)
        this.log.debug('message dropped', { reason: 'send buffer full', count: this.stats.sendDropped });
      return false;
    }
    this.write(frame);
    return true;
  }

  /**
   * close sends a Close message with `reason` (if the socket is connected), ends the stream and
   * emits `closed` before it returns. Idempotent: later calls do nothing.
   */
  close(reason: string, error?: WeftError): void {
    this.shutdown(error === undefined ? { reason, initiator: 'local' } : { reason, error, initiator: 'local' }, true);
  }

  // ---- receive ----

  private onData(chunk: Buffer): void {
    if (this.closeInfo !== undefined) {
      // Lingering: discard until the peer's FIN. A stranger that keeps sending is cut off.
      this.lingerDiscarded += chunk.length;
      if (this.establishedAt === undefined && this.lingerDiscarded > LINGER_DISCARD_MAX_BYTES) this.socket.destroy();
      return;
    }
    this.stats.bytesIn += chunk.length;
    this.lastRecvAt = this.now();
    this.decoder.push(chunk);
    for (;;) {
      if (this.closeInfo !== undefined) return; // a listener or the last frame closed us
      let body: Uint8Array | undefined;
      try {
        body = this.decoder.next();
      } catch (err) {
        this.fail(err);
        return;
      }
      if (body === undefined) return;
      this.stats.framesIn++;
      if (this.opener !== undefined) {
        try {
          body = this.opener.open(body);
        } catch (err) {
          this.fail(
            err instanceof SealedFrameError
              ? new SealedFrameError(
                  err.reason,
                  err.frame,
                  `sealed frame refused (${err.reason}) from ${this.hello?.name ?? this.label}: ${err.message}`,
                )
              : err,
          );
          return;
        }
      }
      this.onFrame(body);
    }
  }

  private onFrame(body: Uint8Array): void {
    let value: Record<string, unknown>;
    let t: string | undefined;
    try {
      value = decodeBody(body);
      t = messageType(value);
      if (t === 'close') {
        const c = parseClose(value);
        this.shutdown({ reason: CLOSE_REMOTE_PREFIX + c.reason, initiator: 'remote' }, false);
        return;
      }
    } catch (err) {
      this.fail(err);
      return;
    }
    switch (this.phase) {
      case 'hello':
        this.onHello(value, t);
        return;
      case 'auth':
        this.onAuth(value, t);
        return;
      case 'established':
        this.onMessage(value);
        return;
      default:
        return;
    }
  }

  private onHello(value: Record<string, unknown>, t: string | undefined): void {
    let hello: Hello;
    try {
      if (t !== undefined) throw new ProtocolError(`expected hello, got a "${t}" message`);
      const r = parseHello(value, { min: this.versionMin, max: this.versionMax });
      hello = r.hello;
      this.version = r.version;
    } catch (err) {
      this.fail(err);
      return;
    }
    this.hello = hello;
    this.log = this.log.child({ peer: hello.name });
    const local = this.local;
    if (hello.name === local.name) {
      if (hello.uid === local.uid.toString()) {
        this.close(CLOSE_SELF);
      } else {
        this.fail(
          new ProtocolError(
            `peer name collision: ${hello.name} is also used by another router (uid ${hello.uid}, ours ${local.uid})`,
            { code: 'EWEFT_PEER_NAME_COLLISION' },
          ),
        );
      }
      return;
    }
    // No router may have such a name (parseOwnPeerName refuses it at launch): it would be a group
    // MAC in every peer's forwarding table.
    const reserved = reservedPeerNameReason(hello.name as PeerName);
    if (reserved !== undefined) {
      this.fail(new ProtocolError(`peer announced the name ${hello.name}, which no router may have: ${reserved}`));
      return;
    }
    if (hello.auth && this.passwordKey === undefined) {
      this.fail(
        new ProtocolError(`peer ${hello.name} requires a password but none is configured here`, {
          code: 'EWEFT_AUTH',
        }),
      );
      return;
    }
    if (!hello.auth && this.passwordKey !== undefined) {
      this.fail(
        new ProtocolError(`peer ${hello.name} sent no authentication but a password is configured here`, {
          code: 'EWEFT_AUTH',
        }),
      );
      return;
    }
    if (this.passwordKey !== undefined) {
      const keys = this.exchangeKeys(hello);
      if (keys === undefined) return;
      this.pendingKeys = keys;
      this.phase = 'auth';
      this.write(encodeFrame({ t: 'auth', mac: keys.confirm }));
      return;
    }
    this.establish();
  }

  /** exchangeKeys runs our side of the key exchange over both Hellos; undefined when it failed (closed). */
  private exchangeKeys(hello: Hello): SessionKeys | undefined {
    const priv = this.kxPrivate!;
    this.kxPrivate = undefined;
    try {
      const initiator = this.outbound;
      const suite = negotiateCipher(
        initiator ? AEAD_CIPHERS : (hello.ciphers ?? []),
        initiator ? (hello.ciphers ?? []) : AEAD_CIPHERS,
      );
      if (suite === undefined)
        throw new KeyExchangeError(
          'bad-suite',
          `peer ${hello.name} offers no cipher we speak (${(hello.ciphers ?? []).join(', ')}; ours ${AEAD_CIPHERS.join(', ')})`,
        );
      this.suite = suite;
      const kx = new KeyExchange({
        role: initiator ? 'initiator' : 'responder',
        localName: this.local.name,
        passwordKey: this.passwordKey!,
        suite,
        nonce: this.localNonce,
        privateKey: priv,
        trusts: this.trustsPeer,
      });
      return kx.finish({
        name: hello.name,
        publicKey: hello.kx ?? new Uint8Array(0),
        nonce: hello.nonce,
        trusts: hello.trusts === true,
      });
    } catch (err) {
      this.fail(err);
      return undefined;
    } finally {
      priv.fill(0);
    }
  }

  private onAuth(value: Record<string, unknown>, t: string | undefined): void {
    const hello = this.hello!;
    const keys = this.pendingKeys!;
    try {
      if (t !== 'auth') {
        throw new ProtocolError(
          `peer ${hello.name} sent ${t === undefined ? 'a second hello' : `a "${t}" message`} instead of authentication`,
          { code: 'EWEFT_AUTH' },
        );
      }
      const auth = parseAuth(value);
      if (!keys.verifyConfirm(auth.mac)) {
        throw new KeyExchangeError('confirm-mismatch', `peer ${hello.name} failed authentication: passwords differ`);
      }
    } catch (err) {
      this.fail(err);
      return;
    }
    // Keep only the data secrets (copies); the control keys live in the sealer and opener.
    const suite = keys.suite;
    this.sealer = new FrameSealer(suite, {
      key: Buffer.from(keys.controlSend.key),
      iv: Buffer.from(keys.controlSend.iv),
    });
    this.opener = new FrameOpener(
      suite,
      { key: Buffer.from(keys.controlRecv.key), iv: Buffer.from(keys.controlRecv.iv) },
      CONTROL_MESSAGE_MAX_BYTES,
    );
    this.data = { suite, send: Buffer.from(keys.dataSend), recv: Buffer.from(keys.dataRecv) };
    keys.wipe();
    this.pendingKeys = undefined;
    this.establish();
  }

  private onMessage(value: Record<string, unknown>): void {
    let decoded: ReturnType<typeof parseMessage>;
    try {
      decoded = parseMessage(value);
    } catch (err) {
      this.fail(err);
      return;
    }
    if (!decoded.known) {
      this.stats.unknownIn++;
      if (this.log.isDebug) this.log.debug('unknown message ignored', { type: decoded.t });
      return;
    }
    const msg = decoded.msg;
    if (msg.t === 'hb' || msg.t === 'close') return; // close is handled in onFrame
    this.emit('message', msg);
  }

  private establish(): void {
    const hello = this.hello!;
    if (this.handshakeTimer !== undefined) this.clock.clearTimeout(this.handshakeTimer);
    this.handshakeTimer = undefined;
    this.phase = 'established';
    this.decoder.maxBytes = CONTROL_MESSAGE_MAX_BYTES + (this.opener === undefined ? 0 : SEALED_FRAME_OVERHEAD_BYTES);
    this.establishedAt = this.now();
    this.remoteInfo = {
      name: hello.name as PeerName,
      nickname: hello.nickname,
      uid: BigInt(hello.uid) as PeerUid,
      version: this.version,
      sleevePort: hello.sleevePort,
      vxlanPort: hello.vxlanPort,
      vni: hello.vni,
      encap: hello.encap,
      fastdp: hello.fastdp === true,
      mtu: hello.mtu,
      addr: normaliseIPv4(this.socket.remoteAddress),
      tcpPort: hello.tcpPort,
    };
    // Checked twice per interval: silence is noticed within half an interval of the timeout.
    this.heartbeatTimer = this.clock.setInterval(() => this.tick(), this.heartbeatIntervalMs / 2);
    // peer and remoteAddr are the child logger's fields already.
    this.log.info('connection established', {
      nickname: hello.nickname,
      version: this.version,
      encrypted: this.encrypted,
      ...(this.encrypted && { cipher: this.suite }),
      ...(this.dataTrusted && { data: 'unencrypted (trusted subnet)' }),
    });
    this.emit('established', this.remoteInfo);
  }

  /**
   * tick closes a silent connection and sends a heartbeat when one is due. While the data path
   * proves the peer alive, both relax, and stay consistent across the two ends: we send less only
   * while one of our data-path heartbeats was acked within (timeout − interval), so the peer heard
   * us then and relaxes its timeout until a timeout after that; once the acks stop, our next tick
   * (at most half an interval later) sends a control heartbeat, which reaches the peer before
   * that. (A healthy data path is heartbeaten every ~2 s, so the acks' age stays well inside.)
   */
  private tick(): void {
    const t = this.now();
    const name = this.remoteInfo?.name;
    const live = name === undefined ? undefined : this.dataLiveness?.(name);
    const heard = live !== undefined && t - live.heardAt < this.heartbeatTimeoutMs;
    const acked = live !== undefined && t - live.ackedAt < this.heartbeatTimeoutMs - this.heartbeatIntervalMs;
    if (t - this.lastRecvAt >= (heard ? this.heartbeatRelaxedTimeoutMs : this.heartbeatTimeoutMs)) {
      this.close(CLOSE_HEARTBEAT_TIMEOUT);
      return;
    }
    if (t - this.lastSentAt >= (acked ? this.heartbeatRelaxedIntervalMs : this.heartbeatIntervalMs)) {
      this.sendHeartbeat();
    }
  }

  /** sendHeartbeat writes the one heartbeat frame, encoded once (it is sent every interval on every connection). */
  private sendHeartbeat(): void {
    if (this.socket.writableLength > this.sendBufferMaxBytes) return; // the queued bytes will do
    this.write(HEARTBEAT_FRAME);
  }

  // ---- send and shutdown ----

  /** write sends one encoded frame, sealed once the connection is encrypted. */
  private write(plain: Buffer): void {
    const frame = this.sealer === undefined ? plain : this.sealer.seal(plain.subarray(FRAME_HEADER_LEN));
    this.socket.write(frame);
    this.stats.framesOut++;
    this.stats.bytesOut += frame.length;
    this.lastSentAt = this.now();
  }

  /** fail closes the connection because of an error; anything not a WeftError becomes a ProtocolError. */
  private fail(err: unknown): void {
    const error =
      err instanceof WeftError
        ? err
        : new ProtocolError(`internal error: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    this.shutdown({ reason: error.message, error, initiator: 'local' }, true);
  }

  private shutdown(info: ConnectionClosed, sendClose: boolean): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    this.closeInfo = info;
    this.decoder.close();
    this.pendingKeys?.wipe();
    this.pendingKeys = undefined;
    this.kxPrivate?.fill(0);
    this.kxPrivate = undefined;
    this.data?.send.fill(0);
    this.data?.recv.fill(0);
    this.data = undefined;
    if (this.handshakeTimer !== undefined) this.clock.clearTimeout(this.handshakeTimer);
    if (this.heartbeatTimer !== undefined) this.clock.clearInterval(this.heartbeatTimer);
    this.handshakeTimer = undefined;
    this.heartbeatTimer = undefined;

    const s = this.socket;
    if (s.connecting || s.destroyed || info.error?.code === 'EWEFT_SYSTEM') {
      s.destroy();
    } else {
      if (sendClose && s.writable) {
        const reason =
          info.reason.length > CLOSE_REASON_MAX_CHARS ? info.reason.slice(0, CLOSE_REASON_MAX_CHARS) : info.reason;
        this.write(encodeFrame({ t: 'close', reason }));
      }
      s.end();
      this.lingerTimer = this.clock.setTimeout(() => {
        this.lingerTimer = undefined;
        s.destroy();
      }, CLOSE_LINGER_MS);
    }

    const fields = {
      reason: info.reason,
      code: info.error?.code,
      initiator: info.initiator,
    };
    if (this.establishedAt !== undefined) this.log.info('connection closed', fields);
    else if (info.error !== undefined) this.log.warn('connection failed', fields);
    else this.log.debug('connection closed during handshake', fields);
    this.emit('closed', info);
  }

  private refreshLabel(): void {
    const addr = this.socket.remoteAddress;
    const port = this.socket.remotePort;
    if (addr !== undefined && port !== undefined) this.label = `${normaliseIPv4(addr)}:${port}`;
  }
}

/** hostOf is the host part of `host:port` (the whole text when it has no port). */
function hostOf(label: string): string {
  const i = label.lastIndexOf(':');
  return i < 0 ? label : label.slice(0, i);
}

/** normaliseIPv4 strips the IPv4-mapped IPv6 prefix a dual-stack socket reports. */
function normaliseIPv4(addr: string | undefined): string {
  if (addr === undefined) return '';
  return addr.startsWith('::ffff:') ? addr.slice(7) : addr;
}

export { CLOSE_LINGER_MS, SEND_BUFFER_MAX_BYTES, TCP_KEEPALIVE_DELAY_MS };
