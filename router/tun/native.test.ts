import { describe, expect, it } from 'vitest';
import { tryLoadNative } from './native.js';

const native = tryLoadNative();

describe.skipIf(native === undefined)('native copyBytes', () => {
  it('copies between and within buffers, and refuses out-of-bounds ranges with a TypeError', () => {
    const n = native!;
    const src = Buffer.from('abcdefgh');
    const dst = Buffer.alloc(8, 0x2e);
    n.copyBytes(src, 2, dst, 1, 4);
    expect(dst.toString()).toBe('.cdef...');
    n.copyBytes(src, 0, src, 2, 6); // overlapping: memmove semantics
    expect(src.toString()).toBe('ababcdef');
    expect(() => n.copyBytes(src, 5, dst, 0, 4)).toThrow(TypeError);
    expect(() => n.copyBytes(src, 0, dst, 6, 4)).toThrow(/out of bounds/);
    expect(() => n.copyBytes(src, -1, dst, 0, 1)).toThrow(TypeError);
  });
});
