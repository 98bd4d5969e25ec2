/**
 * readCanonicalEntry: the fast way in for one topology entry received in canonical form, the
 * bytes packEntry writes (router/topology-wire.ts). It walks the bytes once, straight into a
 * PeerEntry, and accepts only the one encoding packEntry gives for those values: minimal headers
 * and integers, booleans, ASCII strings, nothing after the entry. So whatever it accepts is, byte
 * for byte, the canonical encoding of what it returns, and the entry is handed to packEntry's
 * cache with those bytes (no re-encoding to learn them). Anything else — another encoder's choice
 * of headers, non-ASCII text, a malformed or truncated value — gives undefined, and the caller
 * takes the general path (msgpackr, the wire schema and its errors). It decides nothing the
 * general path would decide differently: router/topology-reader.test.ts checks that on generated
 * and mutated entries.
 *
 * Why: every router decodes every new version of every entry (~50 connections each in a large
 * mesh), and the general path makes an array and a byte view per connection, then encodes the
 * entry again to learn its canonical bytes.
 */
import { formatIPv4, type PeerName, peerNameFromBytes } from '../common/types.js';
import { NICKNAME_MAX_CHARS } from './protocol.js';
import {
  CIDR_MAX_CHARS,
  type ConnectionSummary,
  type PeerEntry,
  TOPOLOGY_CIDRS_MAX,
  TOPOLOGY_CONNECTIONS_MAX,
  UID_MAX_CHARS,
} from './topology-entry.js';
import { adoptCanonical } from './topology-wire.js';

/** ADDRS_MAX bounds the cache of underlay address strings (cleared when full: addresses come off the wire). */
const ADDRS_MAX = 65_536;
const addrs = new Map<number, string>();

function addrText(a: number): string {
  let s = addrs.get(a);
  if (s === undefined) {
    s = formatIPv4(a);
    if (addrs.size >= ADDRS_MAX) addrs.clear();
    addrs.set(a, s);
  }
  return s;
}

/** Reader is a cursor over one entry's bytes; every read returns -1 (or undefined) when not canonical. */
class Reader {
  /** text is `b` as a Buffer, for its one-step latin1 (here: ASCII) decoding. */
  private readonly text: Buffer;

  constructor(
    readonly b: Uint8Array,
    public off: number,
    readonly end: number,
  ) {
    this.text = Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  }

  byte(): number {
    return this.off < this.end ? this.b[this.off++]! : -1;
  }

  /** uint reads a non-negative integer in its minimal form (float 64 only above 32 bits), else -1. */
  uint(): number {
    const t = this.byte();
    if (t < 0) return -1;
    if (t < 0x80) return t;
    const b = this.b;
    const o = this.off;
    if (t === 0xcc && o + 1 <= this.end) {
      this.off = o + 1;
      return b[o]! >= 0x80 ? b[o]! : -1;
    }
    if (t === 0xcd && o + 2 <= this.end) {
      this.off = o + 2;
      const v = (b[o]! << 8) | b[o + 1]!;
      return v >= 0x100 ? v : -1;
    }
    if (t === 0xce && o + 4 <= this.end) {
      this.off = o + 4;
      const v = b[o]! * 0x1000000 + ((b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!);
      return v >= 0x10000 ? v : -1;
    }
    if (t === 0xcb && o + 8 <= this.end) {
      this.off = o + 8;
      const v = new DataView(b.buffer, b.byteOffset + o, 8).getFloat64(0);
      return Number.isSafeInteger(v) && v > 0xffffffff ? v : -1;
    }
    return -1;
  }

  /** arrayHeader reads a minimal array header, else -1. */
  arrayHeader(): number {
    const t = this.byte();
    if (t >= 0x90 && t <= 0x9f) return t & 0x0f;
    const b = this.b;
    const o = this.off;
    if (t === 0xdc && o + 2 <= this.end) {
      this.off = o + 2;
      const n = (b[o]! << 8) | b[o + 1]!;
      return n >= 0x10 ? n : -1;
    }
    if (t === 0xdd && o + 4 <= this.end) {
      this.off = o + 4;
      const n = b[o]! * 0x1000000 + ((b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!);
      return n >= 0x10000 ? n : -1;
    }
    return -1;
  }

  /** name reads a 6-byte bin (a peer name), else undefined. */
  name(): PeerName | undefined {
    const o = this.off;
    if (o + 8 > this.end || this.b[o] !== 0xc4 || this.b[o + 1] !== 6) return undefined;
    this.off = o + 8;
    return peerNameFromBytes(this.b, o + 2);
  }

  /** ascii reads a string of at most `max` ASCII characters under its minimal header, else undefined. */
  ascii(max: number): string | undefined {
    const t = this.byte();
    let n: number;
    if (t >= 0xa0 && t <= 0xbf) n = t & 0x1f;
    else if (t === 0xd9 && this.off < this.end) {
      n = this.b[this.off++]!;
      if (n < 0x20) return undefined;
    } else return undefined; // longer strings are never this short
    const o = this.off;
    if (n > max || o + n > this.end) return undefined;
    for (let i = o; i < o + n; i++) if (this.b[i]! >= 0x80) return undefined;
    this.off = o + n;
    return this.text.toString('latin1', o, o + n);
  }

  bool(): boolean | undefined {
    const t = this.byte();
    return t === 0xc3 ? true : t === 0xc2 ? false : undefined;
  }
}

function isPort(n: number): boolean {
  return n >= 1 && n <= 0xffff;
}

/**
 * readCanonicalEntry reads the entry at `bytes[start, end)` if it is exactly in canonical form
 * (see the module comment) and adopts those bytes as its canonical encoding; undefined otherwise.
 */
export function readCanonicalEntry(bytes: Uint8Array, start: number, end: number): PeerEntry | undefined {
  const r = new Reader(bytes, start, end);
  if (r.byte() !== 0x9a) return undefined;
  const name = r.name();
  const nickname = r.ascii(NICKNAME_MAX_CHARS);
  const uid = r.ascii(UID_MAX_CHARS);
  if (name === undefined || nickname === undefined || uid === undefined) return undefined;
  const incarnation = r.uint();
  const version = r.uint();
  const count = r.arrayHeader();
  if (incarnation < 0 || version < 0 || count < 0 || count > TOPOLOGY_CONNECTIONS_MAX) return undefined;
  const connections: ConnectionSummary[] = [];
  for (let i = 0; i < count; i++) {
    if (r.byte() !== 0x95) return undefined;
    const peer = r.name();
    const addr = r.uint();
    if (peer === undefined || addr < 0 || addr > 0xffffffff) return undefined;
    const tcpPort = r.uint();
    const outbound = r.bool();
    const established = r.bool();
    if (!isPort(tcpPort) || outbound === undefined || established === undefined) return undefined;
    connections.push({ peer, addr: addrText(addr), tcpPort, outbound, established });
  }
  const ncidrs = r.arrayHeader();
  if (ncidrs < 0 || ncidrs > TOPOLOGY_CIDRS_MAX) return undefined;
  const cidrs: string[] = [];
  for (let i = 0; i < ncidrs; i++) {
    const c = r.ascii(CIDR_MAX_CHARS);
    if (c === undefined) return undefined;
    cidrs.push(c);
  }
  const sleevePort = r.uint();
  const vxlanPort = r.uint();
  const encap = r.ascii(6);
  if (!isPort(sleevePort) || !isPort(vxlanPort) || (encap !== 'sleeve' && encap !== 'vxlan')) return undefined;
  if (r.off !== end) return undefined;
  const e: PeerEntry = { name, nickname, uid, incarnation, version, connections, cidrs, sleevePort, vxlanPort, encap };
  adoptCanonical(e, bytes.slice(start, end));
  return e;
}
