/**
 * DNS names in their two forms: text (normalized: lower case, no trailing dot; `''` is the
 * root) and wire (labels, each a length byte and that many bytes, ending in the root byte or a
 * compression pointer). The server's parser (query.ts) and NameMap hash names the way hashName
 * does; the forwarder's reader (message.ts) walks compressed names with readNameKey.
 */
import { InputError } from '../common/errors.js';
import { MAX_LABEL_LEN, MAX_NAME_WIRE_LEN } from './wire.js';

/** DOT is '.', the label separator of the text form. */
export const DOT = 0x2e;
/** FNV-1a (32-bit) parameters for the name hash; query.ts hashes the parsed name bytes the same way. */
export const FNV_OFFSET = 0x811c9dc5;
export const FNV_PRIME = 0x01000193;
/**
 * NAME_HASH_MASK keeps the hash to 30 bits, so V8 holds it as a small integer: a full 32-bit
 * value is a heap number, and boxing it for every Map lookup cost one allocation per query.
 */
export const NAME_HASH_MASK = 0x3fffffff;

// ---- Text form ----

/**
 * normalizeName lower-cases a name and strips one trailing dot: the form Query.name, NameMap,
 * isInDomain and ptrNameToIPv4 work with. The root is ''.
 */
export function normalizeName(name: string): string {
  const n = name.endsWith('.') ? name.slice(0, -1) : name;
  return n.toLowerCase();
}

/** isInDomain says whether `name` is `domain` or below it; both normalized (normalizeName). */
export function isInDomain(name: string, domain: string): boolean {
  const d = domain.length;
  if (d === 0) return true;
  const n = name.length;
  if (n === d) return name === domain;
  return n > d && name.charCodeAt(n - d - 1) === DOT && name.endsWith(domain);
}

/** hashName is the FNV-1a hash (low 30 bits) of a normalized name's char codes, equal to Query.nameHash for the same name. */
export function hashName(name: string): number {
  let h = FNV_OFFSET;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), FNV_PRIME);
  return h & NAME_HASH_MASK;
}

/**
 * encodeName writes a name in uncompressed wire form (labels, then the root byte). Case is
 * kept. Throws InputError for an empty label, a label over 63 bytes, a name over 255 bytes,
 * or a character outside printable ASCII. '' and '.' are the root.
 */
export function encodeName(name: string): Buffer {
  const n = name.endsWith('.') ? name.slice(0, -1) : name;
  if (n.length === 0) return Buffer.from([0]);
  const wire = Buffer.alloc(n.length + 2);
  let lenAt = 0;
  for (let i = 0; i <= n.length; i++) {
    const c = i < n.length ? n.charCodeAt(i) : DOT;
    if (c === DOT) {
      const l = i - lenAt;
      if (l === 0) throw new InputError(`invalid dns name "${name}": empty label`);
      if (l > MAX_LABEL_LEN) throw new InputError(`invalid dns name "${name}": label longer than 63`);
      wire[lenAt] = l;
      lenAt = i + 1;
    } else if (c <= 0x20 || c >= 0x7f) {
      throw new InputError(`invalid dns name "${name}": character code ${c}`);
    } else {
      wire[i + 1] = c;
    }
  }
  if (wire.length > MAX_NAME_WIRE_LEN) throw new InputError(`invalid dns name "${name}": longer than 255 bytes`);
  return wire;
}

const PTR_SUFFIX = '.in-addr.arpa';

/**
 * ptrNameToIPv4 reads `d.c.b.a.in-addr.arpa` as the address a.b.c.d (unsigned 32-bit, host
 * order), or undefined for anything else: fewer or more than four octets, an octet above 255
 * or with a leading zero, or another suffix. The suffix matches in any case; a trailing dot is
 * allowed. It allocates nothing.
 */
export function ptrNameToIPv4(name: string): number | undefined {
  let end = name.length;
  if (end > 0 && name.charCodeAt(end - 1) === DOT) end--;
  const stem = end - PTR_SUFFIX.length;
  if (stem < 7) return undefined; // "0.0.0.0" is the shortest stem
  for (let i = 0; i < PTR_SUFFIX.length; i++) {
    // Every suffix character has bit 0x20 set, so OR-ing it lower-cases letters and keeps the rest.
    if ((name.charCodeAt(stem + i) | 0x20) !== PTR_SUFFIX.charCodeAt(i)) return undefined;
  }
  let addr = 0;
  let p = 0;
  for (let octet = 0; octet < 4; octet++) {
    if (octet > 0) {
      if (name.charCodeAt(p) !== DOT) return undefined;
      p++;
    }
    const start = p;
    let v = 0;
    for (; p < stem; p++) {
      const c = name.charCodeAt(p) - 0x30;
      if (c < 0 || c > 9) break;
      v = v * 10 + c;
    }
    const digits = p - start;
    if (digits === 0 || digits > 3 || v > 255 || (digits > 1 && name.charCodeAt(start) === 0x30)) return undefined;
    addr += v * 256 ** octet; // the first label is the last octet
  }
  return p === stem ? addr : undefined;
}

/** ipv4ToPtrName writes the reverse-lookup name of an address (unsigned 32-bit, host order). */
export function ipv4ToPtrName(addr: number): string {
  return `${addr & 255}.${(addr >>> 8) & 255}.${(addr >>> 16) & 255}.${addr >>> 24}${PTR_SUFFIX}`;
}

// ---- Wire form, compressed (RFC 1035 §4.1.4) ----

/** NameKey is a name read off the wire by readNameKey. */
export interface NameKey {
  /**
   * key is the name's canonical key: each label as a length character then its bytes, ASCII
   * letters lower-cased; unambiguous even for labels containing dots. The root is ''.
   */
  readonly key: string;
  /** end is the offset just past the name where it sits (after its pointer, if it has one). */
  readonly end: number;
}

/**
 * readNameKey walks the name at `start` of `buf`, following compression pointers, and returns
 * its key (NameKey). Pointers must go strictly backwards from the previous jump, so loops end.
 * Returns undefined on any overrun of `buf`, a label type other than 00 or 11, or a name over
 * 255 wire bytes. Never throws; reads only bytes inside `buf`.
 */
export function readNameKey(buf: Uint8Array, start: number): NameKey | undefined {
  let off = start;
  let limit = start;
  let end = -1;
  let wireLen = 1;
  let key = '';
  for (;;) {
    if (off >= buf.length) return undefined;
    const len = buf[off] as number;
    if (len === 0) return { key, end: end < 0 ? off + 1 : end };
    if ((len & 0xc0) === 0xc0) {
      if (off + 1 >= buf.length) return undefined;
      const ptr = ((len & 0x3f) << 8) | (buf[off + 1] as number);
      if (end < 0) end = off + 2;
      if (ptr >= limit) return undefined;
      limit = ptr;
      off = ptr;
      continue;
    }
    if ((len & 0xc0) !== 0) return undefined;
    wireLen += len + 1;
    if (wireLen > MAX_NAME_WIRE_LEN || off + 1 + len > buf.length) return undefined;
    key += String.fromCharCode(len);
    for (let i = off + 1; i <= off + len; i++) {
      const c = buf[i] as number;
      key += String.fromCharCode(c >= 0x41 && c <= 0x5a ? c + 0x20 : c);
    }
    off += 1 + len;
  }
}

/** nameKeyText renders a NameKey's key as dotted text with the trailing dot, for messages (not escaped; not for the wire). */
export function nameKeyText(key: string): string {
  const labels: string[] = [];
  for (let i = 0; i < key.length; ) {
    const len = key.charCodeAt(i);
    labels.push(key.slice(i + 1, i + 1 + len));
    i += 1 + len;
  }
  return labels.length === 0 ? '.' : `${labels.join('.')}.`;
}
