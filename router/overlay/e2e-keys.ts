/**
 * End-to-end data keys with peers we have no control connection with (issue #13, part 3: "a relay
 * forwards what it cannot read"). With a password, a peer reached only through relays has no
 * connection whose handshake made data keys; this exchange makes them through the mesh instead:
 * the same X25519 + password key schedule as a connection (crypto/keys.ts KeyExchange), carried
 * in two gossip unicasts on the `e2e-keys` channel, relayed hop by hop over sealed control
 * connections by peers that need not know the channel. A passive relay sees only the public
 * values: without the ephemeral private keys it cannot derive the secrets, and the password keys
 * the extract step as on a connection. As everywhere in Weft, a router that knows the password is
 * trusted: one relaying the exchange could stand in the middle of it (there is no long-term
 * identity to check), or reset a pair's keys with an Init of its own.
 *
 * ```
 *  Init (51 B)  | type 1 | version 1 | suite | nonce I (16) | public I (32) |
 *  Resp (99 B)  | type 2 | version 1 | suite | nonce I (16) | nonce R (16) | public R (32) | confirm R (32) |
 *  suite: 0 aes-256-gcm, 1 chacha20-poly1305; names in the transcript: "e2e/" + peer name
 * ```
 *
 * Lazily: only when the datapath dropped something for want of keys (PeerCrypto.want: a packet
 * to the peer, or one from it sealed end to end with keys we do not hold — the peer restarted)
 * does `request` send an Init; the responder installs its keys and answers; the initiator checks
 * the responder's confirmation and installs. Datagrams sealed with these keys carry the counter's
 * family bit (crypto/data-crypto.ts), so each end opens them whatever it believes about the
 * other's connection. An unanswered Init is given up after `retryMs` (doubling per failure, up
 * to E2E_RETRY_MAX_MS) and the next drop sends another; when the two ends' keys differ (an answer
 * was lost after the responder installed) the side whose datagrams fail asks again (the switch's
 * auth check); when both ends start at once, the Init of the smaller name wins. Keys ratchet like a connection's
 * (REKEY_AFTER_*); a new exchange installs fresh ones while the receiver keeps the old for
 * datagrams in flight. Malformed messages are refused (ProtocolError, counted by the channel)
 * and counted here by reason; nothing here throws otherwise.
 */
import { randomBytes } from 'node:crypto';
import type { Clock, Timer } from '../../common/clock.js';
import { ProtocolError } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import type { PeerName } from '../../common/types.js';
import type { DataKeys } from '../connection.js';
import { AEAD_CIPHERS, type AeadCipher } from '../crypto/aead.js';
import { CONFIRM_BYTES, KeyExchange, KeyExchangeError, KX_NONCE_BYTES, X25519_KEY_BYTES } from '../crypto/keys.js';
import type { Gossiper } from '../gossip/gossip.js';

/** E2E_CHANNEL is the gossip channel the exchange travels on. */
export const E2E_CHANNEL = 'e2e-keys';
/**
 * E2E_RETRY_MS: an Init unanswered this long is given up; the next drop for want of keys sends
 * another, which waits twice as long, up to E2E_RETRY_MAX_MS (a slow mesh still completes one).
 */
export const E2E_RETRY_MS = 1_000;
export const E2E_RETRY_MAX_MS = 16_000;

const TYPE_INIT = 1;
const TYPE_RESP = 2;
const VERSION = 1;
/** INIT_BYTES / RESP_BYTES are the messages' exact lengths. */
export const INIT_BYTES = 3 + KX_NONCE_BYTES + X25519_KEY_BYTES;
export const RESP_BYTES = 3 + 2 * KX_NONCE_BYTES + X25519_KEY_BYTES + CONFIRM_BYTES;
const NAME_PREFIX = 'e2e/';

/** EndToEndStats count the exchanges, for status and metrics. */
export interface EndToEndStats {
  /** initiated: Inits sent; answered: Inits we answered; completed: exchanges we finished as initiator. */
  initiated: number;
  answered: number;
  completed: number;
  /** refused: malformed messages, unusable public keys, failed confirmations. */
  refused: number;
  /** stale: answers to an Init we no longer wait for; lost: Inits that got no answer in time. */
  stale: number;
  lost: number;
  /** crossed: our Init was dropped for the peer's (both started; the smaller name wins). */
  crossed: number;
  /** unknown: Inits from peers not in our topology (dropped). */
  unknown: number;
}

/** EndToEndKeysOptions wire the exchange to the mesh and the datapath. */
export interface EndToEndKeysOptions {
  readonly self: PeerName;
  /** passwordKey is derivePasswordKey(password). */
  readonly passwordKey: Uint8Array;
  readonly clock: Clock;
  readonly log: Logger;
  /** send is the channel's gossip unicast; false when the peer is unreachable. */
  readonly send: (dst: PeerName, payload: Uint8Array) => boolean;
  /** install gives the datapath new end-to-end keys for `peer` (copy what is kept: wiped after). */
  readonly install: (peer: PeerName, keys: DataKeys) => void;
  /** cleared is called whenever an exchange we started ends without keys, so the datapath's next drop asks again. */
  readonly cleared?: (peer: PeerName) => void;
  /** known says whether a peer is in our topology: Inits from others are dropped (counted), no keys kept for them. */
  readonly known?: (peer: PeerName) => boolean;
  /** suite is what our Inits offer (default: our preferred AEAD). */
  readonly suite?: AeadCipher;
  readonly retryMs?: number;
}

interface Pending {
  readonly kx: KeyExchange;
  readonly nonce: Buffer;
  readonly suite: AeadCipher;
  readonly timer: Timer;
}

/** EndToEndKeys: see the module comment. */
export class EndToEndKeys implements Gossiper {
  readonly stats: EndToEndStats = {
    initiated: 0,
    answered: 0,
    completed: 0,
    refused: 0,
    stale: 0,
    lost: 0,
    crossed: 0,
    unknown: 0,
  };
  private readonly opts: EndToEndKeysOptions;
  private readonly pending = new Map<PeerName, Pending>();
  /** tries counts the Inits given up in a row per peer (the retry backs off); reset by keys. */
  private readonly tries = new Map<PeerName, number>();
  private readonly suite: AeadCipher;

  constructor(opts: EndToEndKeysOptions) {
    if (opts.passwordKey.length === 0) throw new RangeError('end-to-end keys need a password key');
    this.opts = opts;
    this.suite = opts.suite ?? (AEAD_CIPHERS[0] as AeadCipher);
  }

  /** request starts an exchange with `peer` unless one is under way; false when it is unreachable. */
  request(peer: PeerName): boolean {
    if (peer === this.opts.self || this.pending.has(peer)) return true;
    const nonce = randomBytes(KX_NONCE_BYTES);
    const kx = this.kx('initiator', nonce, this.suite);
    const msg = Buffer.alloc(INIT_BYTES);
    msg[0] = TYPE_INIT;
    msg[1] = VERSION;
    msg[2] = suiteId(this.suite);
    nonce.copy(msg, 3);
    kx.publicKey.copy(msg, 3 + KX_NONCE_BYTES);
    if (!this.opts.send(peer, msg)) {
      this.opts.cleared?.(peer);
      return false;
    }
    const wait = Math.min((this.opts.retryMs ?? E2E_RETRY_MS) * 2 ** (this.tries.get(peer) ?? 0), E2E_RETRY_MAX_MS);
    const timer = this.opts.clock.setTimeout(() => this.giveUp(peer, nonce), wait);
    timer.unref();
    this.pending.set(peer, { kx, nonce, suite: this.suite, timer });
    this.stats.initiated++;
    return true;
  }

  /** waiting says whether an Init to `peer` is unanswered. */
  waiting(peer: PeerName): boolean {
    return this.pending.has(peer);
  }

  /** forget drops an exchange under way with `peer` and its retry count (it went). */
  forget(peer: PeerName): void {
    this.drop(peer);
    this.tries.delete(peer);
  }

  /** stop drops every exchange under way. */
  stop(): void {
    for (const peer of [...this.pending.keys()]) this.forget(peer);
  }

  /** drop ends the exchange under way with `peer`, if any, and lets the datapath ask again (cleared). */
  private drop(peer: PeerName): Pending | undefined {
    const p = this.pending.get(peer);
    if (p === undefined) return undefined;
    this.opts.clock.clearTimeout(p.timer);
    this.pending.delete(peer);
    this.opts.cleared?.(peer);
    return p;
  }

  onGossipUnicast(src: PeerName, payload: Uint8Array): void {
    const msg = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
    if (msg.length < 3) throw this.refusal(src, `a ${msg.length}-byte message`);
    if (msg[1] !== VERSION) throw this.refusal(src, `version ${msg[1]}, want ${VERSION}`);
    const suite = suiteOf(msg[2]!);
    if (suite === undefined) throw this.refusal(src, `unknown suite ${msg[2]}`);
    if (msg[0] === TYPE_INIT) this.onInit(src, msg, suite);
    else if (msg[0] === TYPE_RESP) this.onResp(src, msg, suite);
    else throw this.refusal(src, `unknown type ${msg[0]}`);
  }

  /** onGossip: the channel carries unicasts only; a broadcast is news to nobody. */
  onGossip(): undefined {
    return undefined;
  }

  fullState(): Uint8Array {
    return new Uint8Array(0);
  }

  private onInit(src: PeerName, msg: Buffer, suite: AeadCipher): void {
    if (msg.length !== INIT_BYTES) throw this.refusal(src, `a ${msg.length}-byte Init, want ${INIT_BYTES}`);
    if (this.opts.known !== undefined && !this.opts.known(src)) {
      this.stats.unknown++;
      return;
    }
    if (this.pending.has(src)) {
      // Both ends started: the smaller name's Init wins, the other end answers it.
      if (this.opts.self < src) return;
      this.drop(src);
      this.stats.crossed++;
    }
    const nonceI = msg.subarray(3, 3 + KX_NONCE_BYTES);
    const pubI = msg.subarray(3 + KX_NONCE_BYTES, INIT_BYTES);
    const nonceR = randomBytes(KX_NONCE_BYTES);
    const kx = this.kx('responder', nonceR, suite);
    const keys = this.finish(src, kx, pubI, nonceI);
    const resp = Buffer.alloc(RESP_BYTES);
    resp[0] = TYPE_RESP;
    resp[1] = VERSION;
    resp[2] = suiteId(suite);
    nonceI.copy(resp, 3);
    nonceR.copy(resp, 3 + KX_NONCE_BYTES);
    kx.publicKey.copy(resp, 3 + 2 * KX_NONCE_BYTES);
    keys.confirm.copy(resp, 3 + 2 * KX_NONCE_BYTES + X25519_KEY_BYTES);
    this.opts.install(src, { suite, send: keys.dataSend, recv: keys.dataRecv });
    keys.wipe();
    this.tries.delete(src);
    this.stats.answered++;
    this.opts.send(src, resp);
  }

  private onResp(src: PeerName, msg: Buffer, suite: AeadCipher): void {
    if (msg.length !== RESP_BYTES) throw this.refusal(src, `a ${msg.length}-byte Resp, want ${RESP_BYTES}`);
    const p = this.pending.get(src);
    const nonceI = msg.subarray(3, 3 + KX_NONCE_BYTES);
    if (p === undefined || !p.nonce.equals(nonceI) || p.suite !== suite) {
      this.stats.stale++;
      return;
    }
    this.drop(src);
    const nonceR = msg.subarray(3 + KX_NONCE_BYTES, 3 + 2 * KX_NONCE_BYTES);
    const pubR = msg.subarray(3 + 2 * KX_NONCE_BYTES, 3 + 2 * KX_NONCE_BYTES + X25519_KEY_BYTES);
    const confirm = msg.subarray(3 + 2 * KX_NONCE_BYTES + X25519_KEY_BYTES, RESP_BYTES);
    const keys = this.finish(src, p.kx, pubR, nonceR);
    if (!keys.verifyConfirm(confirm)) {
      keys.wipe();
      throw this.refusal(src, 'a confirmation that does not match (another password, or tampered with)');
    }
    this.opts.install(src, { suite, send: keys.dataSend, recv: keys.dataRecv });
    keys.wipe();
    this.tries.delete(src);
    this.stats.completed++;
    this.opts.log.debug('end-to-end data keys made through the mesh', { peer: src, suite });
  }

  private kx(role: 'initiator' | 'responder', nonce: Buffer, suite: AeadCipher): KeyExchange {
    return new KeyExchange({
      role,
      localName: NAME_PREFIX + this.opts.self,
      passwordKey: this.opts.passwordKey,
      suite,
      nonce,
    });
  }

  private finish(src: PeerName, kx: KeyExchange, publicKey: Uint8Array, nonce: Uint8Array) {
    try {
      return kx.finish({ name: NAME_PREFIX + src, publicKey, nonce });
    } catch (err) {
      if (!(err instanceof KeyExchangeError)) throw err;
      throw this.refusal(src, err.message);
    }
  }

  private giveUp(peer: PeerName, nonce: Buffer): void {
    const p = this.pending.get(peer);
    if (p === undefined || !p.nonce.equals(nonce)) return;
    this.drop(peer);
    this.tries.set(peer, (this.tries.get(peer) ?? 0) + 1);
    this.stats.lost++;
  }

  /** refusal counts a refused message and makes the error the channel counts and logs. */
  private refusal(src: PeerName, why: string): ProtocolError {
    this.stats.refused++;
    return new ProtocolError(`end-to-end key exchange from ${src} refused: ${why}`);
  }
}

function suiteId(s: AeadCipher): number {
  return AEAD_CIPHERS.indexOf(s);
}

function suiteOf(id: number): AeadCipher | undefined {
  return AEAD_CIPHERS[id];
}
