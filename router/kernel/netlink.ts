/**
 * rtnetlink (NETLINK_ROUTE) messages, built and parsed in TypeScript: links, addresses, routes,
 * neighbours and bridge fdb entries: what the kernel fast path (fastdp.ts) programs. Pure
 * functions over Buffers plus a small synchronous request/reply socket over the addon's
 * nlOpen/nlSend/nlRecv. Control plane only: nothing here runs per packet.
 *
 * ```
 *  nlmsghdr (16 B, host byte order)     | len u32 | type u16 | flags u16 | seq u32 | pid u32 |
 *  then a family header (ifinfomsg 16 B, ifaddrmsg 8 B, rtmsg 12 B, ndmsg 12 B)
 *  then attributes                       | len u16 | type u16 | value ... | pad to 4 |
 * ```
 *
 * Decoding never trusts a length: a message or attribute that runs past its container is a
 * NetlinkFormatError (the reply is refused whole), never an out-of-bounds read.
 */
import { WeftError } from '../../common/errors.js';
import type { NativeAddon } from '../tun/native.js';

// ---- specification (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/neighbour.h) ----

export const NLMSG_HDR_LEN = 16;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_GETLINK = 18;
export const RTM_NEWADDR = 20;
export const RTM_DELADDR = 21;
export const RTM_NEWROUTE = 24;
export const RTM_DELROUTE = 25;
export const RTM_GETROUTE = 26;
export const RTM_NEWNEIGH = 28;
export const RTM_DELNEIGH = 29;
export const RTM_GETNEIGH = 30;
export const RTM_SETNEIGHTBL = 67;

export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_DUMP = 0x300;
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
export const NLM_F_APPEND = 0x800;
export const NLA_F_NESTED = 0x8000;

export const AF_UNSPEC = 0;
export const AF_INET = 2;
export const AF_BRIDGE = 7;
export const AF_INET6 = 10;

export const IFLA_ADDRESS = 1;
export const IFLA_IFNAME = 3;
export const IFLA_MTU = 4;
export const IFLA_LINKINFO = 18;
export const IFLA_AF_SPEC = 26;
export const IFLA_INFO_KIND = 1;
export const IFLA_INFO_DATA = 2;
export const IFLA_VXLAN_ID = 1;
export const IFLA_VXLAN_LOCAL = 4;
export const IFLA_VXLAN_LEARNING = 7;
export const IFLA_VXLAN_PORT = 15;
export const IFLA_VXLAN_DF = 29;
/** VXLAN_DF_SET: the outer IPv4 header always carries DF (the underlay never fragments). */
export const VXLAN_DF_SET = 1;
export const IFLA_INET6_ADDR_GEN_MODE = 8;
export const IN6_ADDR_GEN_MODE_NONE = 1;
export const IFF_UP = 0x1;

export const IFA_ADDRESS = 1;
export const IFA_LOCAL = 2;
export const IFA_FLAGS = 8;
export const IFA_F_NODAD = 0x02;
export const IFA_F_PERMANENT = 0x80;

export const RTA_DST = 1;
export const RTA_OIF = 4;
export const RTA_GATEWAY = 5;
export const RTA_PREFSRC = 7;
export const RTA_TABLE = 15;
export const RT_TABLE_MAIN = 254;
export const RT_TABLE_LOCAL = 255;
export const RTN_UNICAST = 1;
export const RTN_LOCAL = 2;
export const RT_SCOPE_UNIVERSE = 0;
export const RT_SCOPE_LINK = 253;
export const RT_SCOPE_HOST = 254;
/** RT_SCOPE_NOWHERE in a delete request matches a route of any scope. */
export const RT_SCOPE_NOWHERE = 255;
export const RTNH_F_ONLINK = 4;

export const NDA_DST = 1;
export const NDA_LLADDR = 2;
export const NUD_NOARP = 0x40;
export const NUD_PERMANENT = 0x80;
export const NUD_INCOMPLETE = 0x01;
export const NUD_FAILED = 0x20;
export const NTF_SELF = 0x02;
export const NTF_PROXY = 0x08;
export const NDTA_NAME = 1;
export const NDTA_PARMS = 6;
export const NDTPA_IFINDEX = 1;
export const NDTPA_PROXY_DELAY = 13;

// ---- implementation ----

/** RTPROT_WEFT marks the routes Weft installs (rtm_protocol), so a restart finds its own stale ones. */
export const RTPROT_WEFT = 87;
/** NL_BUF_BYTES is the receive buffer: a dump datagram is at most a page or two; 64 KiB is ample. */
const NL_BUF_BYTES = 65536;
const EAGAIN = 11;

/** NetlinkError is a request the kernel refused: `errno` is the positive errno it returned. */
export class NetlinkError extends WeftError {
  readonly errno: number;
  constructor(message: string, errno: number) {
    super('EWEFT_SYSTEM', message);
    this.errno = errno;
  }
}

/** NetlinkFormatError is a reply that does not parse (lengths past the end, short headers). */
export class NetlinkFormatError extends WeftError {
  constructor(message: string) {
    super('EWEFT_SYSTEM', `malformed netlink reply: ${message}`);
  }
}

/** Attr is one attribute to encode: raw bytes, or nested attributes (NLA_F_NESTED set). */
export type Attr =
  | { readonly type: number; readonly value: Buffer }
  | { readonly type: number; readonly nested: Attr[] };

/** attrU8/U16/U32/Str/Be16 make attributes of the usual scalar shapes (host byte order unless be). */
export function attrU8(type: number, v: number): Attr {
  return { type, value: Buffer.from([v & 0xff]) };
}

export function attrU32(type: number, v: number): Attr {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return { type, value: b };
}

export function attrU64(type: number, v: number): Attr {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return { type, value: b };
}

export function attrBe16(type: number, v: number): Attr {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return { type, value: b };
}

export function attrStr(type: number, s: string): Attr {
  return { type, value: Buffer.from(`${s}\0`, 'utf8') };
}

export function attrBytes(type: number, value: Buffer): Attr {
  return { type, value };
}

export function attrNested(type: number, nested: Attr[]): Attr {
  return { type, nested };
}

const align4 = (n: number): number => (n + 3) & ~3;

function attrLen(a: Attr): number {
  return 4 + ('nested' in a ? a.nested.reduce((s, x) => s + align4(attrLen(x)), 0) : a.value.length);
}

function writeAttrs(buf: Buffer, off: number, attrs: readonly Attr[]): number {
  for (const a of attrs) {
    const len = attrLen(a);
    buf.writeUInt16LE(len, off);
    if ('nested' in a) {
      buf.writeUInt16LE(a.type | NLA_F_NESTED, off + 2);
      writeAttrs(buf, off + 4, a.nested);
    } else {
      buf.writeUInt16LE(a.type, off + 2);
      a.value.copy(buf, off + 4);
    }
    off += align4(len);
  }
  return off;
}

/**
 * encodeMessage builds one netlink message: header, the family header `fixed` (padded to 4) and
 * the attributes. `seq` is the caller's sequence number; pid 0 (the kernel fills ours in).
 */
export function encodeMessage(type: number, flags: number, seq: number, fixed: Buffer, attrs: readonly Attr[]): Buffer {
  const body = align4(fixed.length) + attrs.reduce((s, a) => s + align4(attrLen(a)), 0);
  const buf = Buffer.alloc(NLMSG_HDR_LEN + body);
  buf.writeUInt32LE(buf.length, 0);
  buf.writeUInt16LE(type, 4);
  buf.writeUInt16LE(flags, 6);
  buf.writeUInt32LE(seq >>> 0, 8);
  buf.writeUInt32LE(0, 12);
  fixed.copy(buf, NLMSG_HDR_LEN);
  writeAttrs(buf, NLMSG_HDR_LEN + align4(fixed.length), attrs);
  return buf;
}

/** NlMessage is one decoded message: header fields and its payload (a view into the reply). */
export interface NlMessage {
  readonly type: number;
  readonly flags: number;
  readonly seq: number;
  readonly payload: Buffer;
}

/** decodeMessages splits one datagram into messages; throws NetlinkFormatError on a bad length. */
export function decodeMessages(buf: Buffer): NlMessage[] {
  const out: NlMessage[] = [];
  let off = 0;
  while (off < buf.length) {
    if (buf.length - off < NLMSG_HDR_LEN)
      throw new NetlinkFormatError(`${buf.length - off} bytes left, header needs 16`);
    const len = buf.readUInt32LE(off);
    if (len < NLMSG_HDR_LEN || len > buf.length - off)
      throw new NetlinkFormatError(`message length ${len} at ${off} of ${buf.length}`);
    out.push({
      type: buf.readUInt16LE(off + 4),
      flags: buf.readUInt16LE(off + 6),
      seq: buf.readUInt32LE(off + 8),
      payload: buf.subarray(off + NLMSG_HDR_LEN, off + len),
    });
    off += align4(len);
  }
  return out;
}

/** Attrs maps attribute type (NLA_F_NESTED masked off) to its value; the first of a type wins. */
export type Attrs = Map<number, Buffer>;

/** decodeAttrs parses attributes from `off` to the end of buf; throws NetlinkFormatError on a bad length. */
export function decodeAttrs(buf: Buffer, off = 0): Attrs {
  const out: Attrs = new Map();
  while (off + 4 <= buf.length) {
    const len = buf.readUInt16LE(off);
    const type = buf.readUInt16LE(off + 2) & 0x3fff;
    if (len < 4 || len > buf.length - off)
      throw new NetlinkFormatError(`attribute length ${len} at ${off} of ${buf.length}`);
    if (!out.has(type)) out.set(type, buf.subarray(off + 4, off + len));
    off += align4(len);
  }
  return out;
}

/** decodeError reads an NLMSG_ERROR payload: 0 for an ack, else the positive errno. */
export function decodeError(payload: Buffer): number {
  if (payload.length < 4) throw new NetlinkFormatError(`error message of ${payload.length} bytes`);
  return -payload.readInt32LE(0);
}

// ---- family headers ----

/** ifinfomsg: family, type, index, flags, change. */
export function ifinfomsg(index: number, flags = 0, change = 0): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt8(AF_UNSPEC, 0);
  b.writeInt32LE(index, 4);
  b.writeUInt32LE(flags >>> 0, 8);
  b.writeUInt32LE(change >>> 0, 12);
  return b;
}

/** ifaddrmsg: family, prefix length, flags, scope, index. */
export function ifaddrmsg(family: number, prefix: number, flags: number, scope: number, index: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt8(family, 0);
  b.writeUInt8(prefix, 1);
  b.writeUInt8(flags & 0xff, 2);
  b.writeUInt8(scope, 3);
  b.writeUInt32LE(index, 4);
  return b;
}

/** rtmsg for an IPv4 route: unicast in the main table unless `table`/`type` say otherwise. */
export function rtmsg(
  dstLen: number,
  protocol: number,
  scope: number,
  flags: number,
  table = RT_TABLE_MAIN,
  type = RTN_UNICAST,
): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt8(AF_INET, 0);
  b.writeUInt8(dstLen, 1);
  b.writeUInt8(table, 4);
  b.writeUInt8(protocol, 5);
  b.writeUInt8(scope, 6);
  b.writeUInt8(type, 7);
  b.writeUInt32LE(flags >>> 0, 8);
  return b;
}

/** ndmsg: family, index, state, flags. */
export function ndmsg(family: number, index: number, state = 0, flags = 0): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt8(family, 0);
  b.writeInt32LE(index, 4);
  b.writeUInt16LE(state, 8);
  b.writeUInt8(flags, 10);
  return b;
}

/** ndtmsg: the family of a neighbour table (RTM_SETNEIGHTBL). */
export function ndtmsg(family: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt8(family, 0);
  return b;
}

// ---- decoded objects ----

/** Link is a decoded RTM_NEWLINK (the parts fastdp compares). */
export interface Link {
  readonly index: number;
  readonly flags: number;
  readonly name: string | undefined;
  readonly mtu: number | undefined;
  readonly kind: string | undefined;
  readonly vni: number | undefined;
  readonly port: number | undefined;
  readonly local: number | undefined;
  readonly learning: number | undefined;
  /** df is IFLA_VXLAN_DF (undefined when the kernel did not say: VXLAN_DF_UNSET). */
  readonly df: number | undefined;
  readonly mac: string | undefined;
}

function need(p: Buffer, n: number, what: string): void {
  if (p.length < n) throw new NetlinkFormatError(`${what} of ${p.length} bytes, want ${n}`);
}

function cstr(b: Buffer | undefined): string | undefined {
  if (b === undefined) return undefined;
  const z = b.indexOf(0);
  return b.subarray(0, z < 0 ? b.length : z).toString('utf8');
}

function u32(b: Buffer | undefined): number | undefined {
  return b !== undefined && b.length >= 4 ? b.readUInt32LE(0) : undefined;
}

function ipv4(b: Buffer | undefined): number | undefined {
  return b !== undefined && b.length === 4 ? b.readUInt32BE(0) : undefined;
}

/** macText formats 6 bytes as aa:bb:cc:dd:ee:ff (undefined when not 6 bytes). */
export function macText(b: Buffer | undefined): string | undefined {
  if (b === undefined || b.length !== 6) return undefined;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** macBytes parses aa:bb:cc:dd:ee:ff. */
export function macBytes(mac: string): Buffer {
  const parts = mac.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-f]{2}$/i.test(p)))
    throw new NetlinkFormatError(`bad mac ${mac}`);
  return Buffer.from(parts.map((p) => Number.parseInt(p, 16)));
}

/** decodeLink parses an RTM_NEWLINK payload. */
export function decodeLink(p: Buffer): Link {
  need(p, 16, 'ifinfomsg');
  const a = decodeAttrs(p, 16);
  const info = a.get(IFLA_LINKINFO);
  const li = info === undefined ? undefined : decodeAttrs(info);
  const data = li?.get(IFLA_INFO_DATA);
  const vx = data === undefined ? undefined : decodeAttrs(data);
  const port = vx?.get(IFLA_VXLAN_PORT);
  return {
    index: p.readInt32LE(4),
    flags: p.readUInt32LE(8),
    name: cstr(a.get(IFLA_IFNAME)),
    mtu: u32(a.get(IFLA_MTU)),
    kind: cstr(li?.get(IFLA_INFO_KIND)),
    vni: u32(vx?.get(IFLA_VXLAN_ID)),
    port: port !== undefined && port.length >= 2 ? port.readUInt16BE(0) : undefined,
    local: ipv4(vx?.get(IFLA_VXLAN_LOCAL)),
    learning: vx?.get(IFLA_VXLAN_LEARNING)?.[0],
    df: vx?.get(IFLA_VXLAN_DF)?.[0],
    mac: macText(a.get(IFLA_ADDRESS)),
  };
}

/** Route is a decoded IPv4 route (RTM_NEWROUTE). */
export interface Route {
  readonly dst: number;
  readonly dstLen: number;
  readonly table: number;
  readonly protocol: number;
  readonly oif: number | undefined;
  readonly gateway: number | undefined;
  readonly prefsrc: number | undefined;
}

/** decodeRoute parses an RTM_NEWROUTE payload (AF_INET only; others give undefined). */
export function decodeRoute(p: Buffer): Route | undefined {
  need(p, 12, 'rtmsg');
  if (p[0] !== AF_INET) return undefined;
  const a = decodeAttrs(p, 12);
  return {
    dst: ipv4(a.get(RTA_DST)) ?? 0,
    dstLen: p.readUInt8(1),
    table: u32(a.get(RTA_TABLE)) ?? p.readUInt8(4),
    protocol: p.readUInt8(5),
    oif: u32(a.get(RTA_OIF)),
    gateway: ipv4(a.get(RTA_GATEWAY)),
    prefsrc: ipv4(a.get(RTA_PREFSRC)),
  };
}

/** Neigh is a decoded neighbour or fdb entry (RTM_NEWNEIGH). `dst` is the raw address (4 or 16 B). */
export interface Neigh {
  readonly family: number;
  readonly index: number;
  readonly state: number;
  readonly flags: number;
  readonly dst: Buffer | undefined;
  readonly mac: string | undefined;
}

/** decodeNeigh parses an RTM_NEWNEIGH payload. */
export function decodeNeigh(p: Buffer): Neigh {
  need(p, 12, 'ndmsg');
  const a = decodeAttrs(p, 12);
  return {
    family: p.readUInt8(0),
    index: p.readInt32LE(4),
    state: p.readUInt16LE(8),
    flags: p.readUInt8(10),
    dst: a.get(NDA_DST),
    mac: macText(a.get(NDA_LLADDR)),
  };
}

/** ipv4Bytes is a host-order IPv4 address in network byte order. */
export function ipv4Bytes(addr: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(addr >>> 0);
  return b;
}

// ---- the socket ----

/** NetlinkTransport moves datagrams to and from the kernel (the addon, or a fake in tests). */
export interface NetlinkTransport {
  send(buf: Buffer): void;
  /** recv returns one datagram, or undefined after the receive timeout. */
  recv(): Buffer | undefined;
  close(): void;
}

/** addonTransport is a NetlinkTransport over the addon's NETLINK_ROUTE socket. */
export function addonTransport(native: NativeAddon): NetlinkTransport {
  const fd = native.nlOpen();
  const buf = Buffer.alloc(NL_BUF_BYTES);
  let open = true;
  return {
    send(msg) {
      const n = native.nlSend(fd, msg, msg.length);
      if (n < 0) throw new NetlinkError(`netlink send: errno ${-n}`, -n);
    },
    recv() {
      const n = native.nlRecv(fd, buf);
      if (n === -EAGAIN) return undefined;
      if (n < 0) throw new NetlinkError(`netlink recv: errno ${-n}`, -n);
      return Buffer.from(buf.subarray(0, n));
    },
    close() {
      if (open) native.close(fd);
      open = false;
    },
  };
}

/**
 * Netlink sends one request at a time and collects its reply: the messages of a dump until
 * NLMSG_DONE, or the ack of a change. A refused request throws NetlinkError (errno set); a
 * reply that does not parse throws NetlinkFormatError; no answer within the transport's timeout
 * throws too. Messages with another sequence number (late answers to an earlier request) are
 * skipped.
 */
export class Netlink {
  private seq = 1;
  constructor(private readonly t: NetlinkTransport) {}

  /** request sends a change (NLM_F_ACK added) and waits for its ack. */
  request(type: number, flags: number, fixed: Buffer, attrs: readonly Attr[], what: string): void {
    this.exchange(type, flags | NLM_F_REQUEST | NLM_F_ACK, fixed, attrs, what);
  }

  /** dump sends a dump request and returns the payloads of the messages of `replyType`. */
  dump(type: number, fixed: Buffer, attrs: readonly Attr[], replyType: number, what: string): Buffer[] {
    return this.exchange(type, NLM_F_REQUEST | NLM_F_DUMP, fixed, attrs, what)
      .filter((m) => m.type === replyType)
      .map((m) => m.payload);
  }

  /** get sends a get request (no dump) and returns the one answer's payload, or undefined for ENODEV/ENOENT. */
  get(type: number, fixed: Buffer, attrs: readonly Attr[], replyType: number, what: string): Buffer | undefined {
    try {
      const r = this.exchange(type, NLM_F_REQUEST, fixed, attrs, what).find((m) => m.type === replyType);
      return r?.payload;
    } catch (err) {
      if (err instanceof NetlinkError && (err.errno === 19 || err.errno === 2)) return undefined;
      throw err;
    }
  }

  close(): void {
    this.t.close();
  }

  private exchange(type: number, flags: number, fixed: Buffer, attrs: readonly Attr[], what: string): NlMessage[] {
    const seq = this.seq++ >>> 0;
    this.t.send(encodeMessage(type, flags, seq, fixed, attrs));
    const dump = (flags & NLM_F_DUMP) === NLM_F_DUMP;
    const out: NlMessage[] = [];
    for (;;) {
      const d = this.t.recv();
      if (d === undefined) throw new NetlinkError(`${what}: no answer from the kernel`, EAGAIN);
      for (const m of decodeMessages(d)) {
        if (m.seq !== seq) continue;
        if (m.type === NLMSG_ERROR) {
          const e = decodeError(m.payload);
          if (e !== 0) throw new NetlinkError(`${what}: ${errnoText(e)}`, e);
          return out;
        }
        if (m.type === NLMSG_DONE) return out;
        out.push(m);
        if (!dump && (m.flags & NLM_F_MULTI) === 0) return out;
      }
    }
  }
}

const ERRNO_TEXT: Record<number, string> = {
  1: 'operation not permitted (EPERM)',
  2: 'no such entry (ENOENT)',
  3: 'no such process (ESRCH)',
  17: 'exists (EEXIST)',
  19: 'no such device (ENODEV)',
  22: 'invalid argument (EINVAL)',
  93: 'protocol not supported (EPROTONOSUPPORT)',
  95: 'not supported (EOPNOTSUPP)',
  98: 'address in use (EADDRINUSE)',
};

function errnoText(e: number): string {
  return ERRNO_TEXT[e] ?? `errno ${e}`;
}
