import type { DataKeys } from '../connection.js';
import { AEAD_TAG_BYTES } from '../crypto/aead.js';
import { DATA_AAD_BYTES, type DataCryptoOptions, DataReceiver, DataSender, isEndToEnd } from '../crypto/data-crypto.js';
import type { NativeAddon } from '../tun/native.js';

/** SEAL_COUNTER_BYTES is the counter a sealed sleeve datagram carries after its header (data-crypto.ts). */
export const SEAL_COUNTER_BYTES = DATA_AAD_BYTES - 16;
/** SEAL_TAG_BYTES is the tag that follows a sealed sleeve datagram. */
export const SEAL_TAG_BYTES = AEAD_TAG_BYTES;

/**
 * PeerCrypto is the data-plane encryption state towards one peer (a password is set), in two key
 * families. The connection family: our DataSender (the control connection's `send` data secret)
 * and the peer's DataReceiver (`recv`), made when the first encrypted connection to the peer is
 * established and `install`ed from the next one on reconnect (the receiver keeps the old key for
 * datagrams in flight). The end-to-end family: keys agreed through the mesh with a peer we have no
 * connection with (overlay/e2e-keys.ts), `installEndToEnd`ed; their datagrams carry the counter's
 * family bit (data-crypto.ts), so the receiver picks the right keys whatever each end believes
 * about the other's connection. What we send is sealed with the connection's keys while they are
 * open, else with the end-to-end ones; with neither the datapath drops it (Drop.NoKey) and calls
 * `want()`, which asks the owner (`onWant`) for end-to-end keys. The hops keep referring to one
 * PeerCrypto per peer, so after a close the datapath drops instead of falling back to cleartext.
 * Only the datapath calls sender/receiverOf/want, synchronously.
 */
export class PeerCrypto {
  #sender: DataSender | undefined;
  #receiver: DataReceiver | undefined;
  #e2eSender: DataSender | undefined;
  #e2eReceiver: DataReceiver | undefined;
  #cipher: string;
  #e2eCipher = 'none';
  /** #grace is the connection receiver of a connection that closed, until dropGrace (the peer may not know yet). */
  #grace: DataReceiver | undefined;
  #wanted = false;
  #wantAuth = false;
  #openedAtWant = 0;
  /**
   * onWant is called (once until clearWant) when the datapath had to drop for want of keys:
   * `auth` when end-to-end datagrams failed under the keys we hold (the two ends' keys differ).
   */
  onWant: ((auth: boolean) => void) | undefined;

  constructor(
    private readonly native: NativeAddon | undefined,
    keys: DataKeys | undefined,
    /** limits shortens the sender's rekey limits (WEFT_REKEY_AFTER_MS). */
    private readonly limits: DataCryptoOptions = {},
  ) {
    this.#cipher = keys?.suite ?? 'none';
    if (native === undefined || keys === undefined) return; // NO_KEYS, or end-to-end keys to come
    this.#sender = new DataSender(native, keys.suite, keys.send, limits);
    this.#receiver = new DataReceiver(native, keys.suite, keys.recv);
  }

  /**
   * NO_KEYS stands for the keys we must have but can never get: with a password but without the
   * native addon's AEAD, everything to the peer is dropped (Drop.NoKey) and everything from it too
   * (Drop.Auth) instead of crossing the underlay in the clear. Never opened, never installed into.
   */
  static readonly NO_KEYS: PeerCrypto = new PeerCrypto(undefined, undefined);

  /** cipher is the AEAD in use (for status): the connection's, else the end-to-end keys'. */
  get cipher(): string {
    return this.#sender !== undefined || this.#e2eSender === undefined ? this.#cipher : this.#e2eCipher;
  }

  /** sender seals what we send: the connection's keys while open, else the end-to-end ones. */
  get sender(): DataSender | undefined {
    return this.#sender ?? this.#e2eSender;
  }

  /** receiver opens what the peer sends with its connection's keys; undefined after close. */
  get receiver(): DataReceiver | undefined {
    return this.#receiver;
  }

  /** receiverOf is the receiver for the sealed datagram at `off`: by its counter's family bit. */
  receiverOf(buf: Buffer, off: number): DataReceiver | undefined {
    return isEndToEnd(buf, off) ? this.#e2eReceiver : (this.#receiver ?? this.#grace);
  }

  /** endToEnd says whether what we send is sealed with end-to-end keys (no connection keys open). */
  get endToEnd(): boolean {
    return this.#sender === undefined && this.#e2eSender !== undefined;
  }

  /** hasEndToEnd says whether end-to-end keys are installed. */
  get hasEndToEnd(): boolean {
    return this.#e2eSender !== undefined;
  }

  /** rekeys counts the generations our sender in use moved to (ratchets and installs); 0 after close. */
  get rekeys(): number {
    return this.sender?.rekeys ?? 0;
  }

  /** open says whether we can seal (connection or end-to-end keys installed). */
  get open(): boolean {
    return this.sender !== undefined;
  }

  /**
   * want tells the owner, once until clearWant, that the datapath dropped for want of keys: none
   * to seal or open with, or (`auth`) end-to-end datagrams that failed under the keys we hold.
   */
  want(auth = false): void {
    if (this.#wanted || this.native === undefined) return;
    this.#wanted = true;
    this.#wantAuth = auth;
    this.#openedAtWant = this.#e2eReceiver?.opened ?? 0;
    this.onWant?.(auth);
  }

  /**
   * stillWanted says whether the last want still holds when the owner gets to it: no keys to seal
   * with yet, or (auth) nothing opened under our end-to-end keys since (not one forged datagram
   * among good ones, but keys that differ).
   */
  stillWanted(): boolean {
    return this.#wantAuth ? (this.#e2eReceiver?.opened ?? 0) === this.#openedAtWant : !this.open;
  }

  /** clearWant lets the next drop for want of keys call onWant again. */
  clearWant(): void {
    this.#wanted = false;
  }

  /**
   * install switches to a new connection's data secrets (a reconnect): the receiver keeps the old
   * key for datagrams in flight. Reopens a closed connection family; a new suite starts it afresh.
   */
  install(keys: DataKeys): void {
    const native = this.native;
    if (native === undefined) throw new Error('NO_KEYS takes no keys');
    if (this.#sender === undefined || this.#receiver === undefined || keys.suite !== this.#cipher) {
      // Made before the old ones go: a failure leaves the old state whole, never a closed sender in use.
      const sender = new DataSender(native, keys.suite, keys.send, this.limits);
      const receiver = new DataReceiver(native, keys.suite, keys.recv);
      this.#sender?.close();
      this.#receiver?.close();
      this.#cipher = keys.suite;
      this.#sender = sender;
      this.#receiver = receiver;
      return;
    }
    this.#sender.install(keys.send);
    this.#receiver.install(keys.recv);
  }

  /**
   * installEndToEnd switches to new end-to-end secrets (a new exchange through the mesh): fresh
   * sender and receiver; the previous receiver is kept as the receiver's previous generation when
   * the suite is the same, so datagrams in flight under it still open.
   */
  installEndToEnd(keys: DataKeys): void {
    const native = this.native;
    if (native === undefined) throw new Error('NO_KEYS takes no keys');
    // Made before the old ones go: a failure leaves the old state whole, never a closed sender in use.
    const sender = new DataSender(native, keys.suite, keys.send, { ...this.limits, endToEnd: true });
    const same = this.#e2eReceiver !== undefined && this.#e2eCipher === keys.suite;
    const receiver = same ? undefined : new DataReceiver(native, keys.suite, keys.recv, { endToEnd: true });
    this.#e2eSender?.close();
    this.#e2eSender = sender;
    if (receiver === undefined) this.#e2eReceiver?.install(keys.recv);
    else {
      this.#e2eReceiver?.close();
      this.#e2eReceiver = receiver;
    }
    this.#e2eCipher = keys.suite;
    this.#wanted = false;
  }

  /**
   * closeConnection wipes the connection family's sender (its connection went); end-to-end keys
   * stay. With `grace` its receiver stays until dropGrace, for what the peer still seals with it
   * before it notices the connection is gone; else it is wiped too.
   */
  closeConnection(grace = false): void {
    this.#sender?.close();
    this.#sender = undefined;
    this.dropGrace();
    if (grace) this.#grace = this.#receiver;
    else this.#receiver?.close();
    this.#receiver = undefined;
  }

  /** dropGrace wipes the receiver a closed connection left (closeConnection with grace). */
  dropGrace(): void {
    this.#grace?.close();
    this.#grace = undefined;
  }

  /** close wipes and frees every key; idempotent. */
  close(): void {
    this.closeConnection();
    this.dropGrace();
    this.#e2eSender?.close();
    this.#e2eReceiver?.close();
    this.#e2eSender = undefined;
    this.#e2eReceiver = undefined;
  }
}
