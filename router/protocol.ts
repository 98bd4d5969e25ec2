/**
 * Control-connection wire protocol: framing, message schemas and version negotiation.
 *
 * A control connection is a TCP stream of frames:
 *
 * ```
 *  0               1               2               3
 * +---------------+---------------+---------------+---------------+
 * |          body length (u32, big-endian, 1..CONTROL_MESSAGE_MAX_BYTES)
 * +---------------+---------------+---------------+---------------+
 * |          body: one MessagePack map (msgpackr, no records)     ...
 * +---------------+---------------+---------------+---------------+
 * ```
 *
 * Conversation, both ends at once:
 *
 * ```
 *   A                                   B
 *   |-- Hello (nonceA, range, auth[, kx, ciphers, trusts]) --->|   sent as soon as the socket exists
 *   |<--- Hello (nonceB, range, auth[, kx, ciphers, trusts]) --|
 *   |-- Auth  (key confirmation of A) ---------------->|   only when both sides have a password
 *   |<--- Auth (key confirmation of B) ----------------|
 *   |<========= Heartbeat / Addresses / Gossip / unknown (ignored) ======>|
 *   |-- Close (reason) ---------------->|   then FIN
 * ```
 *
 * With a password, `kx` is the sender's ephemeral X25519 public key and `ciphers` the AEADs it
 * offers; both sides run the key exchange of router/crypto/keys.ts over the two Hellos, and Auth
 * carries the key confirmation. Every frame after the two Auths (both directions, heartbeats and
 * Close included) is sealed (router/crypto/sealed-framer.ts): its length then counts the
 * ciphertext and a 16-byte tag.
 *
 * Every body is validated with zod after decoding. Any malformed input raises {@link ProtocolError};
 * nothing else escapes the decode functions, whatever the bytes.
 *
 * Over 400 lines because it is the whole wire contract of a control connection: the frame layout,
 * every message's type and zod schema, version negotiation and the FrameDecoder that cuts a byte
 * stream into frames are what both ends must agree on, and they are reviewed together whenever the
 * protocol changes.
 */
import { Packr, Unpackr } from 'msgpackr';
import { z } from 'zod';
import { InputError, ProtocolError } from '../common/errors.js';
import { CIDR_RE, isUidText, PEER_NAME_RE } from '../common/types.js';
import { CONTROL_MESSAGE_MAX_BYTES, MTU_MAX, MTU_MIN, VXLAN_VNI_MAX } from './constants.js';

// ---- Wire constants (candidates for router/constants.ts) ----

/** FRAME_HEADER_LEN is the 4-byte big-endian length before every frame body. */
export const FRAME_HEADER_LEN = 4;
/** PROTOCOL_ID is the value of Hello's `proto` field; anything else is not a Weft router. */
export const PROTOCOL_ID = 'weft';
/** NONCE_LEN is the length in bytes of the per-connection random nonce in Hello. */
export const NONCE_LEN = 16;
/** AUTH_MAC_LEN is the length of an HMAC-SHA256 tag in Auth. */
export const AUTH_MAC_LEN = 32;
/** KX_PUBLIC_KEY_LEN is the length of Hello's `kx` field: a raw X25519 public key. */
export const KX_PUBLIC_KEY_LEN = 32;
/** HELLO_CIPHERS_MAX bounds the cipher list of a Hello. */
export const HELLO_CIPHERS_MAX = 8;
/** CIPHER_NAME_MAX_CHARS bounds one cipher name in a Hello. */
export const CIPHER_NAME_MAX_CHARS = 32;
/** NICKNAME_MAX_CHARS bounds a peer's nickname. */
export const NICKNAME_MAX_CHARS = 64;
/** CHANNEL_MAX_CHARS bounds a gossip channel name. */
export const CHANNEL_MAX_CHARS = 64;
/** CLOSE_REASON_MAX_CHARS bounds a Close reason; longer reasons are truncated when sent. */
export const CLOSE_REASON_MAX_CHARS = 256;
/** ADDRESSES_MAX is the most CIDRs one Addresses message may carry. */
export const ADDRESSES_MAX = 4096;
/** MESSAGE_TYPE_MAX_CHARS bounds the `t` field of any message, known or not. */
export const MESSAGE_TYPE_MAX_CHARS = 64;

// ---- Message types ----

/** Encap is the data-plane encapsulation a peer prefers. */
export type Encap = 'sleeve' | 'vxlan';

/**
 * Hello is the first frame each side sends. `auth` says whether the sender will follow it with
 * an {@link Auth} (that is, whether it has a password), so that a password mismatch in either
 * direction is detected by both sides before anything else is exchanged. `tcpPort` is the port the
 * sender listens on for control connections (for discovery: an inbound connection's source port
 * is ephemeral). `uid` is the decimal text of a non-zero u64.
 */
export interface Hello {
  readonly proto: typeof PROTOCOL_ID;
  readonly versionMin: number;
  readonly versionMax: number;
  readonly name: string;
  readonly nickname: string;
  readonly uid: string;
  readonly tcpPort: number;
  readonly sleevePort: number;
  readonly vxlanPort: number;
  readonly vni: number;
  readonly encap: Encap;
  /** fastdp says the sender's kernel fast path (weft-vx) is up and takes its heartbeats (issue #14). */
  readonly fastdp?: boolean;
  readonly mtu: number;
  readonly nonce: Uint8Array;
  readonly auth: boolean;
  /** kx is the sender's ephemeral X25519 public key (KX_PUBLIC_KEY_LEN bytes); required when `auth`. */
  readonly kx?: Uint8Array;
  /** ciphers are the AEADs the sender offers, most preferred first; required when `auth`. */
  readonly ciphers?: string[];
  /**
   * trusts: the sender's --trusted-subnets hold the receiver's underlay address. Only with `auth`
   * (it is bound into the key exchange); data stays unencrypted when both ends say it.
   */
  readonly trusts?: boolean;
}

/** Auth proves knowledge of the shared password: `mac` is the sender's key confirmation (keys.ts SessionKeys.confirm). */
export interface Auth {
  readonly t: 'auth';
  readonly mac: Uint8Array;
}

/** Heartbeat keeps an idle connection alive; it carries nothing. */
export interface Heartbeat {
  readonly t: 'hb';
}

/** Addresses lists the overlay prefixes the sender serves (`a.b.c.d/n`), replacing any earlier list. */
export interface Addresses {
  readonly t: 'addrs';
  readonly cidrs: string[];
}

/**
 * Gossip carries an opaque payload for a named gossip channel.
 *
 * On receive, `payload` is a view into the received frame (no copy). It stays valid, but holding
 * it keeps the frame's memory alive: copy it if it is kept for long.
 */
export interface Gossip {
  readonly t: 'gossip';
  readonly channel: string;
  readonly payload: Uint8Array;
}

/** Close says why the sender is closing the connection; a FIN follows. */
export interface Close {
  readonly t: 'close';
  readonly reason: string;
}

/** PeerMessage is a message a connection hands to its owner (the router) after the handshake. */
export type PeerMessage = Addresses | Gossip;

/** Message is any message valid after the handshake. */
export type Message = Heartbeat | Close | PeerMessage;

/** MessageType is the `t` tag of a known post-handshake message. */
export type MessageType = Message['t'];

/**
 * Decoded is the result of {@link parseMessage}: a known, valid message, or the tag of a message
 * type this version does not know (which the caller counts and ignores).
 */
export type Decoded = { readonly known: true; readonly msg: Message } | { readonly known: false; readonly t: string };

/** VersionRange is an inclusive range of protocol versions. */
export interface VersionRange {
  readonly min: number;
  readonly max: number;
}

// ---- Schemas ----

const port = z.int().min(1).max(0xffff);
const version = z.int().min(0).max(0xffff);
const bytes = (len: number) =>
  z.instanceof(Uint8Array).refine((b) => b.length === len, { message: `want exactly ${len} bytes` });

/** HelloSchema validates a Hello. Unknown keys are dropped, not refused: a later version may add some. */
export const HelloSchema = z
  .object({
    proto: z.literal(PROTOCOL_ID),
    versionMin: version,
    versionMax: version,
    name: z.string().regex(PEER_NAME_RE, 'want a lower-case peer name like 02:42:0a:00:00:01'),
    nickname: z.string().max(NICKNAME_MAX_CHARS),
    // One check: zod runs every check even after one fails, and BigInt needs the digits checked first.
    uid: z.string().refine(isUidText, 'want a non-zero decimal u64'),
    tcpPort: port,
    sleevePort: port,
    vxlanPort: port,
    vni: z.int().min(0).max(VXLAN_VNI_MAX),
    encap: z.enum(['sleeve', 'vxlan']),
    fastdp: z.boolean().optional(),
    mtu: z.int().min(MTU_MIN).max(MTU_MAX),
    nonce: bytes(NONCE_LEN),
    auth: z.boolean(),
    kx: bytes(KX_PUBLIC_KEY_LEN).optional(),
    ciphers: z.array(z.string().min(1).max(CIPHER_NAME_MAX_CHARS)).min(1).max(HELLO_CIPHERS_MAX).optional(),
    trusts: z.boolean().optional(),
  })
  .superRefine((h, ctx) => {
    // A Hello with auth is the start of a key exchange: without a key there is nothing to agree on.
    if (h.auth && h.kx === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['kx'],
        message: `auth needs a ${KX_PUBLIC_KEY_LEN}-byte x25519 public key`,
      });
    if (h.auth && h.ciphers === undefined)
      ctx.addIssue({ code: 'custom', path: ['ciphers'], message: 'auth needs a cipher list' });
    if (h.trusts === true && !h.auth)
      ctx.addIssue({ code: 'custom', path: ['trusts'], message: 'trust is only offered with auth' });
  }) satisfies z.ZodType<Hello>;

/** HelloPreambleSchema is the part of Hello every version must keep: identity of the protocol and version range. */
const HelloPreambleSchema = z.object({ proto: z.literal(PROTOCOL_ID), versionMin: version, versionMax: version });

/** AuthSchema validates an Auth. */
export const AuthSchema = z.strictObject({ t: z.literal('auth'), mac: bytes(AUTH_MAC_LEN) }) satisfies z.ZodType<Auth>;

/** HeartbeatSchema validates a Heartbeat. */
export const HeartbeatSchema = z.strictObject({ t: z.literal('hb') }) satisfies z.ZodType<Heartbeat>;

/** AddressesSchema validates an Addresses message: at most ADDRESSES_MAX strict `a.b.c.d/n` strings. */
export const AddressesSchema = z.strictObject({
  t: z.literal('addrs'),
  cidrs: z.array(z.string().max(18).regex(CIDR_RE, 'want a.b.c.d/n')).max(ADDRESSES_MAX),
}) satisfies z.ZodType<Addresses>;

/** GossipSchema validates a Gossip message. */
export const GossipSchema = z.strictObject({
  t: z.literal('gossip'),
  channel: z.string().min(1).max(CHANNEL_MAX_CHARS),
  payload: z.instanceof(Uint8Array).refine((b) => b.length <= CONTROL_MESSAGE_MAX_BYTES, 'payload too large'),
}) satisfies z.ZodType<Gossip>;

/** CloseSchema validates a Close message. */
export const CloseSchema = z.strictObject({
  t: z.literal('close'),
  reason: z.string().max(CLOSE_REASON_MAX_CHARS),
}) satisfies z.ZodType<Close>;

/** MESSAGE_SCHEMAS maps each known post-handshake tag to its schema (a Map: tags such as "constructor" must miss). */
const MESSAGE_SCHEMAS: ReadonlyMap<string, z.ZodType<Message>> = new Map<MessageType, z.ZodType<Message>>([
  ['hb', HeartbeatSchema],
  ['addrs', AddressesSchema],
  ['gossip', GossipSchema],
  ['close', CloseSchema],
]);

// ---- Encoding ----

const packr = new Packr({ useRecords: false, moreTypes: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, structuredClone: false, moreTypes: false });

/**
 * encodeFrame validates a message and returns it framed (length + MessagePack body) in a new
 * buffer the caller owns. Throws InputError if the message does not match its schema or its body
 * exceeds CONTROL_MESSAGE_MAX_BYTES: sending what the peer would refuse is a local bug.
 */
export function encodeFrame(msg: Hello | Auth | Message): Buffer {
  const schema = 'proto' in msg ? HelloSchema : msg.t === 'auth' ? AuthSchema : MESSAGE_SCHEMAS.get(msg.t);
  const checked = schema?.safeParse(msg);
  if (!checked?.success) {
    const tag = 't' in msg ? msg.t : 'hello';
    throw new InputError(`refusing to send invalid ${tag} message: ${describeIssue(checked?.error)}`, {
      cause: checked?.error,
    });
  }
  const body = packr.pack(msg);
  if (body.length > CONTROL_MESSAGE_MAX_BYTES) {
    throw new InputError(`refusing to send a ${body.length}-byte message: limit is ${CONTROL_MESSAGE_MAX_BYTES}`);
  }
  // packr returns a view into its reusable scratch buffer: copy it out before the next pack.
  const frame = Buffer.allocUnsafe(FRAME_HEADER_LEN + body.length);
  frame.writeUInt32BE(body.length, 0);
  frame.set(body, FRAME_HEADER_LEN);
  return frame;
}

// ---- Decoding ----

/**
 * decodeBody unpacks one frame body to a plain object (`__proto__` keys are renamed by msgpackr
 * and then refused or dropped by the schemas). Throws ProtocolError for anything that is not a
 * single MessagePack map.
 *
 * @param body borrowed: byte arrays in the result are views into it.
 */
export function decodeBody(body: Uint8Array): Record<string, unknown> {
  let value: unknown;
  try {
    value = unpackr.unpack(body);
  } catch (err) {
    throw new ProtocolError(`undecodable message: ${describeError(err)}`, { cause: err });
  }
  if (
    typeof value !== 'object' ||
    value === null ||
    Array.isArray(value) ||
    Object.getPrototypeOf(value) !== Object.prototype
  ) {
    throw new ProtocolError(`message is not a map: got ${describeValue(value)}`);
  }
  return value as Record<string, unknown>;
}

/** messageType returns the `t` tag of a decoded body, or undefined for a body without one (a Hello). */
export function messageType(value: Record<string, unknown>): string | undefined {
  if (!Object.hasOwn(value, 't')) return undefined;
  const t = value.t;
  if (typeof t !== 'string' || t.length === 0 || t.length > MESSAGE_TYPE_MAX_CHARS) {
    throw new ProtocolError(`invalid message type ${describeValue(t)}`);
  }
  return t;
}

/**
 * negotiateVersion returns the highest version in both ranges. Throws ProtocolError with code
 * EWEFT_PROTOCOL_VERSION when they do not overlap.
 */
export function negotiateVersion(ours: VersionRange, theirs: VersionRange): number {
  const lo = Math.max(ours.min, theirs.min);
  const hi = Math.min(ours.max, theirs.max);
  if (lo > hi || theirs.min > theirs.max) {
    throw new ProtocolError(
      `remote version range [${theirs.min},${theirs.max}] is incompatible with ours [${ours.min},${ours.max}]`,
      { code: 'EWEFT_PROTOCOL_VERSION' },
    );
  }
  return hi;
}

/**
 * parseHello checks a decoded body is a Hello, negotiates the version against `ours` and then
 * validates the rest. Version comes first so that a peer whose Hello differs in a later version
 * gets the version error, not a schema error.
 */
export function parseHello(value: Record<string, unknown>, ours: VersionRange): { hello: Hello; version: number } {
  const pre = HelloPreambleSchema.safeParse(value);
  if (!pre.success) {
    throw new ProtocolError(`invalid hello: ${describeIssue(pre.error)}`, { cause: pre.error });
  }
  const version = negotiateVersion(ours, { min: pre.data.versionMin, max: pre.data.versionMax });
  const full = HelloSchema.safeParse(value);
  if (!full.success) {
    throw new ProtocolError(`invalid hello: ${describeIssue(full.error)}`, { cause: full.error });
  }
  return { hello: full.data, version };
}

/** parseAuth validates a decoded body as an Auth message. */
export function parseAuth(value: Record<string, unknown>): Auth {
  const r = AuthSchema.safeParse(value);
  if (!r.success) throw new ProtocolError(`invalid auth message: ${describeIssue(r.error)}`, { cause: r.error });
  return r.data;
}

/** parseClose validates a decoded body as a Close message. */
export function parseClose(value: Record<string, unknown>): Close {
  const r = CloseSchema.safeParse(value);
  if (!r.success) throw new ProtocolError(`invalid close message: ${describeIssue(r.error)}`, { cause: r.error });
  return r.data;
}

/**
 * parseMessage validates a decoded post-handshake body. Known tags must match their schema
 * (ProtocolError otherwise); an unknown tag is returned as `{ known: false, t }` for forward
 * compatibility. `auth` is a handshake-only message and is refused here.
 */
export function parseMessage(value: Record<string, unknown>): Decoded {
  const t = messageType(value);
  if (t === undefined) throw new ProtocolError('message has no type');
  if (t === 'auth') throw new ProtocolError('unexpected auth message after the handshake');
  // The heartbeat, every connection's most frequent message, needs no schema: only its tag.
  if (t === 'hb' && Object.keys(value).length === 1) return HEARTBEAT_DECODED;
  const schema = MESSAGE_SCHEMAS.get(t);
  if (schema === undefined) return { known: false, t };
  const r = schema.safeParse(value);
  if (!r.success) throw new ProtocolError(`invalid ${t} message: ${describeIssue(r.error)}`, { cause: r.error });
  return { known: true, msg: r.data };
}

/** decodeMessage is decodeBody followed by parseMessage: one post-handshake frame body to a message. */
export function decodeMessage(body: Uint8Array): Decoded {
  return parseMessage(decodeBody(body));
}

// ---- Framing ----

/**
 * FrameDecoder splits a byte stream into frame bodies. Push each socket chunk, then call `next()`
 * until it returns undefined.
 *
 * A body that lies inside one pushed chunk is returned as a view of that chunk (no copy); a body
 * spanning chunks is copied once into a new buffer. Chunks must therefore not be reused by the
 * caller after `push` (socket chunks never are). A header declaring a length of 0 or more than
 * `maxBytes` raises ProtocolError as soon as its 4 bytes have arrived, before anything is
 * allocated for the body, so at most one frame of `maxBytes` plus one chunk is ever buffered.
 * After an error the decoder stays failed, drops what it held and ignores later pushes.
 */
export class FrameDecoder {
  /**
   * maxBytes is the largest body accepted. It may be changed between frames: a connection starts
   * at HELLO_MAX_BYTES and raises it to CONTROL_MESSAGE_MAX_BYTES once the handshake completes.
   * A header already read is not checked again.
   */
  maxBytes: number;
  private readonly chunks: Uint8Array[] = [];
  /** Read offset into chunks[0]. */
  private offset = 0;
  /** Bytes buffered and not yet returned, over all chunks. */
  private buffered = 0;
  /** Body length of the frame whose header has been read, or -1 while waiting for a header. */
  private pending = -1;
  private failed: ProtocolError | undefined;

  constructor(maxBytes: number = CONTROL_MESSAGE_MAX_BYTES) {
    this.maxBytes = maxBytes;
  }

  /** bufferedBytes is how many bytes are held waiting for a complete frame (0 after an error). */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /** push appends a chunk; the decoder keeps a reference to it (see the class comment). */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0 || this.failed !== undefined) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /**
   * next returns the next complete frame body, or undefined if more bytes are needed. Throws
   * ProtocolError for a bad length.
   */
  next(): Uint8Array | undefined {
    if (this.failed) throw this.failed;
    if (this.pending < 0) {
      if (this.buffered < FRAME_HEADER_LEN) return undefined;
      const len = this.readHeader();
      if (len === 0 || len > this.maxBytes) {
        this.failed = new ProtocolError(
          len === 0 ? 'frame with zero length' : `frame length ${len} exceeds the limit of ${this.maxBytes} bytes`,
        );
        this.release(); // hold nothing for a stream that is dead: its owner closes it
        throw this.failed;
      }
      this.pending = len;
    }
    if (this.buffered < this.pending) return undefined;
    const body = this.take(this.pending);
    this.pending = -1;
    return body;
  }

  /**
   * close drops everything buffered; from then on pushes are ignored and `next()` throws
   * ProtocolError. Idempotent. The owner calls it when the stream ends.
   */
  close(): void {
    this.failed ??= new ProtocolError('frame decoder closed');
    this.release();
  }

  private release(): void {
    this.chunks.length = 0;
    this.offset = 0;
    this.buffered = 0;
    this.pending = -1;
  }

  /** readHeader consumes 4 bytes (possibly spanning chunks) as a big-endian u32. */
  private readHeader(): number {
    const first = this.chunks[0]!;
    if (first.length - this.offset >= FRAME_HEADER_LEN) {
      const o = this.offset;
      const v = ((first[o]! << 24) | (first[o + 1]! << 16) | (first[o + 2]! << 8) | first[o + 3]!) >>> 0;
      this.advance(FRAME_HEADER_LEN);
      return v;
    }
    const h = this.take(FRAME_HEADER_LEN);
    return ((h[0]! << 24) | (h[1]! << 16) | (h[2]! << 8) | h[3]!) >>> 0;
  }

  /** take removes and returns exactly n buffered bytes (n <= buffered). */
  private take(n: number): Uint8Array {
    const first = this.chunks[0]!;
    if (first.length - this.offset >= n) {
      const view = first.subarray(this.offset, this.offset + n);
      this.advance(n);
      return view;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    let used = 0; // whole chunks consumed
    while (filled < n) {
      const c = this.chunks[used]!;
      const avail = c.length - this.offset;
      const want = n - filled;
      if (avail <= want) {
        out.set(this.offset === 0 ? c : c.subarray(this.offset), filled);
        filled += avail;
        used++;
        this.offset = 0;
      } else {
        out.set(c.subarray(this.offset, this.offset + want), filled);
        this.offset += want;
        filled += want;
      }
    }
    this.chunks.splice(0, used);
    this.buffered -= n;
    return out;
  }

  /** advance consumes n bytes that all lie in chunks[0]. */
  private advance(n: number): void {
    this.offset += n;
    this.buffered -= n;
    if (this.offset === this.chunks[0]!.length) {
      this.chunks.shift();
      this.offset = 0;
    }
  }
}

// ---- Helpers ----

function describeIssue(err: z.ZodError | undefined): string {
  const issue = err?.issues[0];
  if (!issue) return 'unknown message type';
  const path = issue.path.length > 0 ? `${issue.path.map(String).join('.')}: ` : '';
  return `${path}${issue.message}`;
}

function describeError(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.length > 120 ? `${msg.slice(0, 120)}…` : msg;
}

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return JSON.stringify(v.length > 64 ? `${v.slice(0, 64)}…` : v);
  if (typeof v === 'object') return `an object (${Object.prototype.toString.call(v)})`;
  return `${typeof v} ${String(v)}`;
}

/** HEARTBEAT_FRAME is the heartbeat's frame, encoded once: every connection sends one every interval. */
export const HEARTBEAT_FRAME: Buffer = encodeFrame({ t: 'hb' });
const HEARTBEAT_DECODED: Decoded = Object.freeze({ known: true, msg: Object.freeze({ t: 'hb' }) });
