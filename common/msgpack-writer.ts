/**
 * MsgpackWriter writes the few MessagePack forms Weft's canonical encodings use (arrays, 6-byte
 * names as bin, strings, non-negative integers, booleans) straight into one growing buffer, in the
 * exact bytes msgpackr's `pack` chooses for the same values (with `useRecords: false`): the
 * smallest unsigned form for an integer that fits 32 bits, float 64 above that, the smallest str
 * and bin header for the UTF-8 length. Canonical bytes are compared across routers, so a router
 * that encodes with this writer and one that encodes with msgpackr must agree byte for byte
 * (common/msgpack-writer.test.ts checks it against msgpackr on generated values).
 *
 * Why not msgpackr: it writes a Uint8Array through its extension machinery (a closure, a
 * try/finally and a destructured allocation per value), ~3 µs each, and a topology entry lists
 * every connection's peer as one: 100-190 µs per 48-connection entry, against ~2 µs here.
 */

/** INITIAL_BYTES is the first buffer's size; it doubles when a value does not fit. */
const INITIAL_BYTES = 4096;

const encoder = new TextEncoder();

export class MsgpackWriter {
  private buf = new Uint8Array(INITIAL_BYTES);
  private view = new DataView(this.buf.buffer);
  private pos = 0;

  /** reset starts a new encoding (the buffer is reused). */
  reset(): this {
    this.pos = 0;
    return this;
  }

  /** bytes returns a copy of what was written since the last reset. */
  bytes(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }

  arrayHeader(n: number): this {
    this.room(5);
    if (n < 0x10) this.buf[this.pos++] = 0x90 | n;
    else if (n < 0x10000) {
      this.buf[this.pos++] = 0xdc;
      this.view.setUint16(this.pos, n);
      this.pos += 2;
    } else {
      this.buf[this.pos++] = 0xdd;
      this.view.setUint32(this.pos, n);
      this.pos += 4;
    }
    return this;
  }

  /** bin writes a byte string (bin 8/16/32). */
  bin(b: Uint8Array): this {
    const n = b.length;
    this.room(5 + n);
    if (n < 0x100) {
      this.buf[this.pos++] = 0xc4;
      this.buf[this.pos++] = n;
    } else if (n < 0x10000) {
      this.buf[this.pos++] = 0xc5;
      this.view.setUint16(this.pos, n);
      this.pos += 2;
    } else {
      this.buf[this.pos++] = 0xc6;
      this.view.setUint32(this.pos, n);
      this.pos += 4;
    }
    this.buf.set(b, this.pos);
    this.pos += n;
    return this;
  }

  /** str writes a string as UTF-8 (a lone surrogate as U+FFFD, as msgpackr and TextEncoder do). */
  str(s: string): this {
    const chars = s.length;
    this.room(5 + 3 * chars);
    // Most strings here are ASCII: write them directly after a one- or two-byte header.
    let ascii = true;
    const start = this.pos + (chars < 0x20 ? 1 : chars < 0x100 ? 2 : chars < 0x10000 ? 3 : 5);
    for (let i = 0; i < chars; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) {
        ascii = false;
        break;
      }
      this.buf[start + i] = c;
    }
    const len = ascii ? chars : Buffer.byteLength(s, 'utf8');
    const head = len < 0x20 ? 1 : len < 0x100 ? 2 : len < 0x10000 ? 3 : 5;
    const body = this.pos + head;
    if (!ascii) encoder.encodeInto(s, this.buf.subarray(body, body + len));
    else if (body !== start) this.buf.copyWithin(body, start, start + len);
    if (head === 1) this.buf[this.pos] = 0xa0 | len;
    else if (head === 2) {
      this.buf[this.pos] = 0xd9;
      this.buf[this.pos + 1] = len;
    } else if (head === 3) {
      this.buf[this.pos] = 0xda;
      this.view.setUint16(this.pos + 1, len);
    } else {
      this.buf[this.pos] = 0xdb;
      this.view.setUint32(this.pos + 1, len);
    }
    this.pos = body + len;
    return this;
  }

  /** uint writes a non-negative integer (fixint, uint 8/16/32; float 64 above 32 bits, as msgpackr). */
  uint(n: number): this {
    this.room(9);
    if (n >>> 0 === n) {
      if (n < 0x80) this.buf[this.pos++] = n;
      else if (n < 0x100) {
        this.buf[this.pos++] = 0xcc;
        this.buf[this.pos++] = n;
      } else if (n < 0x10000) {
        this.buf[this.pos++] = 0xcd;
        this.view.setUint16(this.pos, n);
        this.pos += 2;
      } else {
        this.buf[this.pos++] = 0xce;
        this.view.setUint32(this.pos, n);
        this.pos += 4;
      }
    } else {
      this.buf[this.pos++] = 0xcb;
      this.view.setFloat64(this.pos, n);
      this.pos += 8;
    }
    return this;
  }

  bool(b: boolean): this {
    this.room(1);
    this.buf[this.pos++] = b ? 0xc3 : 0xc2;
    return this;
  }

  /** room makes sure `n` more bytes fit. */
  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
}
