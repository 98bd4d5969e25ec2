import ipaddr from 'ipaddr.js';
import { InputError } from './errors.js';

/** PeerName identifies a router for its whole life: 48 bits written like a MAC, `aa:bb:cc:dd:ee:ff`. */
export type PeerName = string & { readonly __brand: 'PeerName' };

/** PeerUid distinguishes incarnations of one peer: random per start, never 0. */
export type PeerUid = bigint & { readonly __brand: 'PeerUid' };

/** IPv4 is an address as an unsigned 32-bit integer in host order (10.0.0.1 = 0x0a000001). */
export type IPv4 = number & { readonly __brand: 'IPv4' };

/** Cidr is an IPv4 prefix; `addr` may have host bits set (an interface address such as 10.32.0.1/12). */
export interface Cidr {
  readonly addr: IPv4;
  readonly prefix: number;
}

/** PEER_NAME_RE matches a peer name in its canonical (lower-case) text form. */
export const PEER_NAME_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const OCTET = '(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
/** IPV4_RE matches canonical dotted-quad text (no leading zeros), as formatIPv4 writes it. */
export const IPV4_RE = new RegExp(`^${OCTET}(\\.${OCTET}){3}$`);
/** CIDR_RE matches canonical `a.b.c.d/n` text, as formatCidr writes it. */
export const CIDR_RE = new RegExp(`^${OCTET}(\\.${OCTET}){3}/(3[0-2]|[12]?[0-9])$`);
const UID_RE = /^[1-9][0-9]{0,19}$/;
const U64_MAX = (1n << 64n) - 1n;

/** isUidText says whether `s` is a peer uid as sent on the wire: the decimal text of a non-zero u64. */
export function isUidText(s: string): boolean {
  return UID_RE.test(s) && BigInt(s) <= U64_MAX;
}

/** parsePeerName validates and normalises a peer name (lower-case MAC form). */
export function parsePeerName(s: string): PeerName {
  const v = s.trim().toLowerCase();
  if (!PEER_NAME_RE.test(v)) throw new InputError(`invalid peer name "${s}": want 6 hex bytes like 02:42:0a:00:00:01`);
  return v as PeerName;
}

/**
 * reservedPeerNameReason says why a peer name cannot be a router's own, or undefined when it can.
 * A peer name doubles as the router's inner MAC address (VXLAN, ARP answers), so it must be a
 * unicast address: not all zeros, and without the I/G (group) bit, the lowest bit of the first
 * byte, which broadcast (ff:ff:ff:ff:ff:ff) and every multicast address carry.
 */
export function reservedPeerNameReason(name: PeerName): string | undefined {
  if (name === '00:00:00:00:00:00') return 'the all-zero MAC address is reserved';
  if (name === 'ff:ff:ff:ff:ff:ff') return 'it is the broadcast MAC address';
  if ((Number.parseInt(name.slice(0, 2), 16) & 0x01) !== 0) {
    return 'it is a multicast MAC address (the lowest bit of the first byte is set)';
  }
  return undefined;
}

/**
 * parseOwnPeerName validates a name a router is to take as its own (`--name`, the persisted
 * name): a valid peer name that is a unicast MAC (see reservedPeerNameReason). Throws InputError.
 */
export function parseOwnPeerName(s: string): PeerName {
  const name = parsePeerName(s);
  const reason = reservedPeerNameReason(name);
  if (reason !== undefined) {
    throw new InputError(
      `peer name "${s}" cannot be used: ${reason}; a peer name is also the router's MAC address, so it must be a unicast one like 02:42:0a:00:00:01`,
    );
  }
  return name;
}

/** peerNameToBytes writes the 6 bytes of a peer name into buf at off. */
export function peerNameToBytes(name: PeerName, buf: Uint8Array, off: number): void {
  for (let i = 0; i < 6; i++) buf[off + i] = Number.parseInt(name.slice(i * 3, i * 3 + 2), 16);
}

/** HEX_BYTE[b] is b as two lower-case hex digits. */
const HEX_BYTE: readonly string[] = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, '0'));

/**
 * peerNameFromBytes reads 6 bytes at off as a peer name (bytes past the end read as 0). Every
 * decoded topology entry names a peer per connection: a table, not six number-to-string steps.
 */
export function peerNameFromBytes(buf: Uint8Array, off: number): PeerName {
  // One string per name, reused: a mesh of N peers decodes the same N names over and over, and
  // a reused string is one allocation fewer and keeps its hash for every map it is looked up in.
  // Keyed by the two halves (small integers: no number is allocated for a key).
  const hi = ((buf[off] ?? 0) << 16) | ((buf[off + 1] ?? 0) << 8) | (buf[off + 2] ?? 0);
  const lo = ((buf[off + 3] ?? 0) << 16) | ((buf[off + 4] ?? 0) << 8) | (buf[off + 5] ?? 0);
  let names = namesByValue.get(hi);
  let name = names?.get(lo);
  if (name === undefined) {
    if (namesCount >= NAMES_BY_VALUE_MAX) {
      namesByValue.clear();
      namesCount = 0;
      names = undefined;
    }
    if (names === undefined) {
      names = new Map();
      namesByValue.set(hi, names);
    }
    const h = (i: number): string => HEX_BYTE[buf[off + i] ?? 0]!;
    name = `${h(0)}:${h(1)}:${h(2)}:${h(3)}:${h(4)}:${h(5)}` as PeerName;
    names.set(lo, name);
    namesCount++;
  }
  return name;
}

/** NAMES_BY_VALUE_MAX bounds {@link peerNameFromBytes}'s strings (cleared when full: names come off the wire). */
const NAMES_BY_VALUE_MAX = 65_536;
/** namesByValue maps a name's first three bytes, then its last three, to its string. */
const namesByValue = new Map<number, Map<number, PeerName>>();
let namesCount = 0;

/** peerNameToBigInt packs a peer name into a 48-bit integer (for table keys off the hot path). */
export function peerNameToBigInt(name: PeerName): bigint {
  return BigInt(`0x${name.replaceAll(':', '')}`);
}

/** randomPeerName makes a locally administered, unicast MAC-form name. */
export function randomPeerName(random: (n: number) => Uint8Array): PeerName {
  const b = random(6);
  b[0] = ((b[0] ?? 0) & 0xfc) | 0x02;
  return peerNameFromBytes(b, 0);
}

/** isIPv4 says whether `s` is dotted-quad IPv4 text as parseIPv4 takes it (no octal, no short forms). */
export function isIPv4(s: string): boolean {
  return ipaddr.IPv4.isValidFourPartDecimal(s);
}

/** parseIPv4 parses dotted-quad text strictly (no octal, no short forms). */
export function parseIPv4(s: string): IPv4 {
  if (!isIPv4(s)) throw new InputError(`invalid IPv4 address "${s}"`);
  const o = ipaddr.IPv4.parse(s).octets;
  return ((((o[0] ?? 0) << 24) | ((o[1] ?? 0) << 16) | ((o[2] ?? 0) << 8) | (o[3] ?? 0)) >>> 0) as IPv4;
}

/** formatIPv4 renders an address as dotted-quad text. */
export function formatIPv4(a: number): string {
  return `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
}

/** prefixMask returns the netmask of a prefix length as an unsigned integer. */
export function prefixMask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** parseCidr parses `a.b.c.d/n`; a bare address is taken as /32 when `bareAs32` is set. */
export function parseCidr(s: string, opts: { bareAs32?: boolean } = {}): Cidr {
  const slash = s.indexOf('/');
  if (slash < 0) {
    if (opts.bareAs32) return { addr: parseIPv4(s), prefix: 32 };
    throw new InputError(`invalid CIDR "${s}": want address/prefix, e.g. 10.32.0.1/12`);
  }
  const addr = parseIPv4(s.slice(0, slash));
  const p = s.slice(slash + 1);
  if (!/^\d{1,2}$/.test(p) || Number(p) > 32) throw new InputError(`invalid prefix length in "${s}": want 0-32`);
  return { addr, prefix: Number(p) };
}

/** formatCidr renders a CIDR as `a.b.c.d/n`. */
export function formatCidr(c: Cidr): string {
  return `${formatIPv4(c.addr)}/${c.prefix}`;
}

/** cidrNetwork returns the network address of a CIDR (host bits cleared). */
export function cidrNetwork(c: Cidr): IPv4 {
  return ((c.addr & prefixMask(c.prefix)) >>> 0) as IPv4;
}

/** cidrContains says whether an address lies inside a prefix. */
export function cidrContains(c: Cidr, a: number): boolean {
  const m = prefixMask(c.prefix);
  return (a & m) >>> 0 === (c.addr & m) >>> 0;
}

/** addressIn returns a test of dotted-quad text against a list of prefixes (false for anything that is not IPv4 text). */
export function addressIn(cidrs: readonly Cidr[]): (ip: string) => boolean {
  return (ip) => isIPv4(ip) && cidrs.some((c) => cidrContains(c, parseIPv4(ip)));
}

/** cidrsOverlap says whether two prefixes share any address. */
export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  const p = Math.min(a.prefix, b.prefix);
  const m = prefixMask(p);
  return (a.addr & m) >>> 0 === (b.addr & m) >>> 0;
}

/**
 * compareText orders strings by UTF-16 code unit, the same on every host and in every locale
 * (`localeCompare` would load ICU's collation data, megabytes of resident memory, to sort names).
 */
export function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
