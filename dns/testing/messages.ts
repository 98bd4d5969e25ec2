/**
 * Hand-built DNS messages for tests and fuzzers: header fields and labels written byte by byte,
 * so that a test can make any malformation an encoder (dns2, or ours) refuses to write. Test
 * code only; nothing in dns/ imports it.
 */

/** Header holds the header fields rawMessage writes; each has a default. */
export interface Header {
  /** id defaults to 0xbeef. */
  id?: number;
  /** flags is the whole flags word; default RD (0x0100), a standard query. */
  flags?: number;
  /** qd defaults to 1; an, ns and ar to 0. */
  qd?: number;
  an?: number;
  ns?: number;
  ar?: number;
}

/** rawMessage builds a message from a header and body parts, back to back, as given. */
export function rawMessage(h: Header, ...body: (Uint8Array | readonly number[])[]): Buffer {
  const head = Buffer.alloc(12);
  head.writeUInt16BE(h.id ?? 0xbeef, 0);
  head.writeUInt16BE(h.flags ?? 0x0100, 2);
  head.writeUInt16BE(h.qd ?? 1, 4);
  head.writeUInt16BE(h.an ?? 0, 6);
  head.writeUInt16BE(h.ns ?? 0, 8);
  head.writeUInt16BE(h.ar ?? 0, 10);
  return Buffer.concat([head, ...body.map((b) => (b instanceof Uint8Array ? b : Uint8Array.from(b)))]);
}

/**
 * wireName encodes labels uncompressed (latin1 for strings), then `tail`: the root byte by
 * default, or for example a compression pointer, or nothing for a name cut short.
 */
export function wireName(labels: readonly (string | Uint8Array)[], tail: readonly number[] = [0]): Buffer {
  const parts: Uint8Array[] = [];
  for (const l of labels) {
    const b = typeof l === 'string' ? Buffer.from(l, 'latin1') : l;
    parts.push(Uint8Array.of(b.length), b);
  }
  parts.push(Uint8Array.from(tail));
  return Buffer.concat(parts);
}
