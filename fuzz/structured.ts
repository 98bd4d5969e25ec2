/**
 * Structure-aware inputs from fast-check: values shaped like what a parser expects (tuples of the
 * right arity with edge-case fields, maps with the right keys) are drawn once into a pool and
 * encoded the way the wire does; the engine picks from the pool and mutates on top. Drawing a pool
 * up front keeps fast-check's per-sample cost out of the loop.
 */
import * as fc from 'fast-check';
import { Packr } from 'msgpackr';
import { int } from './mutator.js';
import type { Rand } from './target.js';

/** POOL_SIZE is how many structured inputs each target draws. */
export const POOL_SIZE = 4096;

const packr = new Packr({ useRecords: false, moreTypes: false });

/** pack encodes a value with MessagePack as the gossip and control channels do; undefined when it cannot be packed. */
export function pack(value: unknown): Uint8Array | undefined {
  try {
    return Uint8Array.from(packr.pack(value));
  } catch {
    return undefined;
  }
}

/** Pool draws `POOL_SIZE` values of an arbitrary once, encodes them, and hands them out at random. */
export class Pool {
  private items: Uint8Array[] | undefined;

  constructor(
    private readonly arb: fc.Arbitrary<unknown>,
    private readonly encode: (v: unknown) => Uint8Array | undefined,
    private readonly seed: number,
  ) {}

  /** next returns one structured input (borrowed from the pool: the engine copies before mutating). */
  next(rand: Rand): Uint8Array {
    if (this.items === undefined) {
      this.items = [];
      for (const v of fc.sample(this.arb, { numRuns: POOL_SIZE, seed: this.seed })) {
        const e = this.encode(v);
        if (e !== undefined) this.items.push(e);
      }
      if (this.items.length === 0) this.items.push(new Uint8Array(0));
    }
    return this.items[int(rand, this.items.length)] as Uint8Array;
  }
}

/** edgeInt draws integers around the bounds parsers check (0, 1, 2^16, 2^32, safe-integer limits, negatives). */
export const edgeInt: fc.Arbitrary<number> = fc.oneof(
  fc.constantFrom(0, 1, -1, 2, 255, 256, 0xffff, 0x10000, 0xffffffff, 2 ** 32, 2 ** 53 - 1, 2 ** 53, -(2 ** 31)),
  fc.integer({ min: 0, max: 0xffff }),
  fc.integer(),
  fc.double(),
);

/** peerBytes draws a 6-byte peer name, mostly valid, sometimes the wrong length. */
export const peerBytes: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(1, 2, 3, 10, 11).map((n) => Uint8Array.of(2, 0, 0, 0, 0, n)) },
  { weight: 2, arbitrary: fc.uint8Array({ minLength: 6, maxLength: 6 }) },
  { weight: 1, arbitrary: fc.uint8Array({ minLength: 0, maxLength: 8 }) },
);

/** oddValue draws anything at all (the wrong type in a field). */
export const oddValue: fc.Arbitrary<unknown> = fc.anything({
  maxDepth: 2,
  withTypedArray: true,
  withNullPrototype: true,
});

/** cidrText draws CIDR-looking strings, valid and not. */
export const cidrText: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    '10.32.0.0/12',
    '10.40.0.1/32',
    '0.0.0.0/0',
    '255.255.255.255/32',
    '10.32.0.0/33',
    '1.2.3/8',
    '01.2.3.4/8',
  ),
  fc
    .tuple(fc.nat(300), fc.nat(300), fc.nat(300), fc.nat(300), fc.nat(40))
    .map(([a, b, c, d, p]) => `${a}.${b}.${c}.${d}/${p}`),
  fc.string({ maxLength: 20 }),
);

/** dnsName draws names, valid and not. */
export const dnsName: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom('db.weft.local', 'a', 'x-y.z', '-bad.weft.local', 'a..b', 'UPPER.weft.local', `${'a'.repeat(64)}.b`),
  fc.stringMatching(/^[a-z0-9_-]{1,20}(\.[a-z0-9-]{1,10}){0,3}$/),
  fc.string({ maxLength: 40 }),
);
