import type { DataKeys } from '../connection.js';
import { AEAD_TAG_BYTES } from '../crypto/aead.js';
import { DATA_AAD_BYTES, type DataCryptoOptions, DataReceiver, DataSender } from '../crypto/data-crypto.js';
import type { NativeAddon } from '../tun/native.js';

/** SEAL_COUNTER_BYTES is the counter a sealed sleeve datagram carries after its header (data-crypto.ts). */
export const SEAL_COUNTER_BYTES = DATA_AAD_BYTES - 16;
/** SEAL_TAG_BYTES is the tag that follows a sealed sleeve datagram. */
export const SEAL_TAG_BYTES = AEAD_TAG_BYTES;

/**
 * PeerCrypto is the data-plane encryption state towards one directly connected peer (a password
 * is set): our DataSender (the connection's `send` data secret) and the peer's DataReceiver
 * (`recv`). The control plane makes it when the first encrypted connection to the peer is
 * established, `install`s the next connection's secrets on reconnect (the receiver keeps the old
 * key for datagrams in flight), and `close`s it when the peer goes; the peer's hops keep referring
 * to it, so after close the datapath drops (Drop.NoKey, Drop.Auth) instead of falling back to
 * cleartext. Only the datapath calls sender/receiver, synchronously.
 */
export class PeerCrypto {
  #sender: DataSender | undefined;
  #receiver: DataReceiver | undefined;
  /** cipher is the AEAD in use (for status). */
  readonly cipher: string;

  constructor(
    private readonly native: NativeAddon | undefined,
    keys: DataKeys | undefined,
    /** limits shortens the sender's rekey limits (WEFT_REKEY_AFTER_MS). */
    private readonly limits: DataCryptoOptions = {},
  ) {
    this.cipher = keys?.suite ?? 'none';
    if (native === undefined || keys === undefined) return; // NO_KEYS
    this.#sender = new DataSender(native, keys.suite, keys.send, limits);
    this.#receiver = new DataReceiver(native, keys.suite, keys.recv);
  }

  /**
   * NO_KEYS stands for the keys we must have but do not: with a password, a peer reached only
   * through a relay (no control connection of its own with us, so no data keys) gets it on its
   * relay hop, and everything to it is dropped (Drop.NoKey) and everything from it too (Drop.Auth)
   * instead of crossing the underlay in the clear. Never opened, never installed into.
   */
  static readonly NO_KEYS: PeerCrypto = new PeerCrypto(undefined, undefined);

  /** sender seals what we send; undefined after close. */
  get sender(): DataSender | undefined {
    return this.#sender;
  }

  /** receiver opens what the peer sends; undefined after close. */
  get receiver(): DataReceiver | undefined {
    return this.#receiver;
  }

  /** rekeys counts the generations our sender moved to (ratchets and installs); 0 after close. */
  get rekeys(): number {
    return this.#sender?.rekeys ?? 0;
  }

  /** open says whether keys are installed (not closed). */
  get open(): boolean {
    return this.#sender !== undefined;
  }

  /**
   * install switches to a new connection's data secrets (a reconnect); the suite must be the
   * same (a new one needs a new PeerCrypto). Reopens a closed PeerCrypto.
   */
  install(keys: DataKeys): void {
    if (keys.suite !== this.cipher) throw new Error(`data cipher changed from ${this.cipher} to ${keys.suite}`);
    const native = this.native;
    if (native === undefined) throw new Error('NO_KEYS takes no keys');
    if (this.#sender === undefined || this.#receiver === undefined) {
      this.#sender = new DataSender(native, keys.suite, keys.send, this.limits);
      this.#receiver = new DataReceiver(native, keys.suite, keys.recv);
      return;
    }
    this.#sender.install(keys.send);
    this.#receiver.install(keys.recv);
  }

  /** close wipes and frees both directions' keys; idempotent. */
  close(): void {
    this.#sender?.close();
    this.#receiver?.close();
    this.#sender = undefined;
    this.#receiver = undefined;
  }
}
