import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { MsgpackWriter } from './msgpack-writer.js';

/** The reference: msgpackr as Weft configured it before the writer (topology entries). */
const packr = new Packr({ useRecords: false, moreTypes: false });

type Value = boolean | number | string | Uint8Array | Value[];

function write(w: MsgpackWriter, v: Value): void {
  if (typeof v === 'boolean') w.bool(v);
  else if (typeof v === 'number') w.uint(v);
  else if (typeof v === 'string') w.str(v);
  else if (v instanceof Uint8Array) w.bin(v);
  else {
    w.arrayHeader(v.length);
    for (const x of v) write(w, x);
  }
}

/** Integers around every header boundary, and any safe one. */
const uint = fc.oneof(
  fc.constantFrom(0, -0, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 0xffffffff, 0x100000000, Number.MAX_SAFE_INTEGER),
  fc.integer({ min: 0, max: 0xffffffff }),
  fc.maxSafeNat(),
);
/** Strings of any UTF-16 code units (lone surrogates included), ASCII, and lengths around the str 8/16 boundaries. */
const str = fc.oneof(
  fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)), maxLength: 300 }),
  fc.string({ unit: 'grapheme', maxLength: 120 }),
  fc.string({ unit: 'binary-ascii', maxLength: 300 }),
  fc.constantFrom(31, 32, 255, 256, 65_535, 65_536).map((n) => 'x'.repeat(n)),
);
const bin = fc.oneof(
  fc.uint8Array({ maxLength: 300 }),
  fc.constantFrom(255, 256, 65_536).map((n) => new Uint8Array(n)),
);
const value: fc.Arbitrary<Value> = fc.letrec<{ v: Value }>((tie) => ({
  v: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.boolean(),
    uint,
    str,
    bin,
    fc.array(tie('v'), { maxLength: 20 }),
  ),
})).v;

describe('MsgpackWriter', () => {
  it('writes what msgpackr packs, byte for byte, for every value it supports', () => {
    const w = new MsgpackWriter();
    fc.assert(
      fc.property(value, (v) => {
        write(w.reset(), v);
        expect(Buffer.from(w.bytes()).toString('hex')).toBe(Buffer.from(packr.pack(v)).toString('hex'));
      }),
      { numRuns: 2000 },
    );
  });

  it('grows past its first buffer and starts over on reset', () => {
    const w = new MsgpackWriter();
    const big = 'é'.repeat(5000); // 10 000 bytes: several doublings of 4096
    const b = w.reset().arrayHeader(2).str(big).bin(new Uint8Array(7000)).bytes();
    expect(Buffer.from(b).equals(packr.pack([big, new Uint8Array(7000)]))).toBe(true);
    expect([...w.reset().bool(true).bytes()]).toEqual([0xc3]);
  });

  it('returns a copy: later writes do not change bytes already returned', () => {
    const w = new MsgpackWriter();
    const first = w.reset().uint(1).bytes();
    w.reset().uint(2);
    expect([...first]).toEqual([1]);
  });
});
