/** Byte-string helpers shared by the gossip wire code and the fuzz mutator. */

/** concatBytes joins byte strings into a new, unshared one (never a pooled Buffer slice). */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
