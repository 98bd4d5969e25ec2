import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { FrameDecoder } from '../protocol.js';
import type { DirectionKey } from './keys.js';
import { FrameOpener, FrameSealer, SEALED_FRAME_OVERHEAD_BYTES, SealedFrameError } from './sealed-framer.js';

const MAX = 1 << 20;

function link(suite: 'aes-256-gcm' | 'chacha20-poly1305' = 'aes-256-gcm') {
  const keys: DirectionKey = { key: randomBytes(32), iv: randomBytes(12) };
  return { sealer: new FrameSealer(suite, keys), opener: new FrameOpener(suite, keys, MAX) };
}

/** body strips the 4-byte length, as the length-prefixed decoder hands frames over. */
const body = (frame: Buffer) => frame.subarray(4);

function reasonOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(SealedFrameError);
    return (err as SealedFrameError).reason;
  }
  return undefined;
}

describe('sealed control frames', () => {
  it.each(['aes-256-gcm', 'chacha20-poly1305'] as const)(
    '%s: round trip through the length-prefixed decoder',
    (suite) => {
      const { sealer, opener } = link(suite);
      const msgs = [Buffer.alloc(0), Buffer.from('{"t":"hb"}'), randomBytes(70_000)];
      const dec = new FrameDecoder(MAX + SEALED_FRAME_OVERHEAD_BYTES);
      for (const m of msgs) {
        const f = sealer.seal(m);
        expect(f.readUInt32BE(0)).toBe(m.length + 16);
        expect(f.includes(Buffer.from('"hb"'))).toBe(false);
        dec.push(f);
      }
      for (const m of msgs) expect(opener.open(dec.next()!)).toEqual(m);
      expect(opener.opened).toBe(3);
      expect(sealer.sealed).toBe(3);
    },
  );

  it('closes with reason tamper on a flipped bit in the body, the tag, or the length', () => {
    for (const where of ['body', 'tag', 'length'] as const) {
      const { sealer, opener } = link();
      const f = sealer.seal(Buffer.from('gossip payload'));
      let sealed = Buffer.from(body(f));
      if (where === 'body') sealed[3]! ^= 1;
      if (where === 'tag') sealed[sealed.length - 1]! ^= 0x80;
      if (where === 'length') sealed = Buffer.concat([sealed, Buffer.alloc(1)]); // the prefix said one more byte
      expect(reasonOf(() => opener.open(sealed))).toBe('tamper');
      // the opener is unusable afterwards: even the genuine frame is refused
      expect(reasonOf(() => opener.open(body(f)))).toBeDefined();
    }
  });

  it('names replay and reorder', () => {
    const a = link();
    const f0 = a.sealer.seal(Buffer.from('zero'));
    const f1 = a.sealer.seal(Buffer.from('one'));
    expect(a.opener.open(body(f0)).toString()).toBe('zero');
    expect(a.opener.open(body(f1)).toString()).toBe('one');
    expect(reasonOf(() => a.opener.open(body(f0)))).toBe('replay');

    const b = link();
    const g0 = b.sealer.seal(Buffer.from('zero'));
    const g1 = b.sealer.seal(Buffer.from('one'));
    void g0;
    expect(reasonOf(() => b.opener.open(body(g1)))).toBe('reorder');

    const c = link();
    const other = link(); // a frame sealed under other keys
    expect(reasonOf(() => c.opener.open(body(other.sealer.seal(Buffer.from('x')))))).toBe('tamper');
  });

  it('refuses truncated and oversized frames', () => {
    const { opener } = link();
    expect(reasonOf(() => opener.open(Buffer.alloc(15)))).toBe('truncated');
    const small = new FrameOpener('aes-256-gcm', { key: randomBytes(32), iv: randomBytes(12) }, 10);
    expect(reasonOf(() => small.open(Buffer.alloc(27)))).toBe('too-large');
    const err = (() => {
      try {
        opener.open(Buffer.alloc(15));
      } catch (e) {
        return e as SealedFrameError;
      }
    })();
    expect(err?.code).toBe('EWEFT_PROTOCOL');
    expect(err?.message).toMatch(/control frame 0 is 15 bytes/);
  });
});
