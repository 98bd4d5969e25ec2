import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { arbPeerEntry, wireArrayOf } from './testing/arb-entry.js';
import type { PeerEntry } from './topology-entry.js';
import { readCanonicalEntry } from './topology-reader.js';
import { packEntry, toEntry, unpackWire } from './topology-wire.js';

/** fresh is a copy of an entry that no codec cache knows. */
function fresh(e: PeerEntry): PeerEntry {
  return { ...e, connections: e.connections.map((c) => ({ ...c })), cidrs: [...e.cidrs] };
}

/** general is the general path for one entry's bytes: msgpackr, then the wire checks (throws ProtocolError). */
function general(bytes: Uint8Array): PeerEntry {
  return toEntry(unpackWire(bytes), 0);
}

const isAscii = (s: string) => [...s].every((c) => c.charCodeAt(0) < 0x80);

describe('readCanonicalEntry', () => {
  it('reads every canonical entry back as it was, adopting the bytes as its encoding', () => {
    fc.assert(
      fc.property(arbPeerEntry(), (e) => {
        const bytes = packEntry(fresh(e));
        const framed = new Uint8Array(bytes.length + 7);
        framed.set(bytes, 3);
        const got = readCanonicalEntry(framed, 3, 3 + bytes.length);
        if (!isAscii(e.nickname)) {
          expect(got).toBeUndefined(); // the general path reads those
          return;
        }
        expect(got).toEqual(e);
        expect(packEntry(got!)).toEqual(bytes);
        expect(readCanonicalEntry(framed, 3, 3 + bytes.length - 1)).toBeUndefined(); // one byte short
        expect(readCanonicalEntry(framed, 3, 3 + bytes.length + 1)).toBeUndefined(); // a byte after it
      }),
      { numRuns: 400 },
    );
  });

  it('accepts a changed or cut encoding only when the general path reads the same entry, whose canonical bytes those are', () => {
    const edit = fc.oneof(
      fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), value: fc.constant(0) }),
    );
    let accepted = 0;
    fc.assert(
      fc.property(arbPeerEntry(), fc.array(edit, { minLength: 1, maxLength: 3 }), (e, edits) => {
        const b = [...packEntry(fresh(e))];
        for (const x of edits) {
          const at = x.at % (b.length + 1);
          if (x.kind === 'set' && at < b.length) b[at] = x.value;
          else if (x.kind === 'insert') b.splice(at, 0, x.value);
          else if (x.kind === 'delete' && at < b.length) b.splice(at, 1);
        }
        const bytes = Uint8Array.from(b);
        const got = readCanonicalEntry(bytes, 0, bytes.length);
        if (got === undefined) return;
        accepted++;
        expect(general(bytes)).toEqual(got);
        expect(Buffer.from(packEntry(fresh(got))).toString('hex')).toBe(Buffer.from(bytes).toString('hex'));
      }),
      { numRuns: 3000 },
    );
    expect(accepted).toBeGreaterThan(0); // some edits keep an entry valid (a flag, a port, a letter)
  });

  it('leaves other encoders’ choices of headers to the general path', () => {
    const e: PeerEntry = {
      name: '02:00:00:00:00:01' as PeerEntry['name'],
      nickname: 'a',
      uid: '1',
      incarnation: 5,
      version: 1,
      connections: [],
      cidrs: [],
      sleevePort: 6783,
      vxlanPort: 6784,
      encap: 'sleeve',
    };
    const canonical = packEntry(fresh(e));
    expect(readCanonicalEntry(canonical, 0, canonical.length)).toEqual(e);
    // A small integer in uint 16 and a float 64, a short string as str 8: valid, not canonical.
    const wire = wireArrayOf(e);
    const msgpackr = new Packr({ useRecords: false, moreTypes: false }).pack(wire);
    expect(readCanonicalEntry(msgpackr, 0, msgpackr.length)).toEqual(e); // msgpackr's own bytes are canonical
    // Bytes 1-8 are the name (bin 8 of 6), 9-10 the nickname, 11-12 the uid, 13 the incarnation.
    const at = (from: number, to?: number) => [...canonical.slice(from, to)];
    const variants = [
      Uint8Array.from([...at(0, 13), 0xcc, 0x05, ...at(14)]), // 5 as uint 8
      Uint8Array.from([...at(0, 13), 0xcd, 0x00, 0x05, ...at(14)]), // 5 as uint 16
      Uint8Array.from([...at(0, 15), 0xdc, 0x00, 0x00, ...at(16)]), // no connections as array 16
      Uint8Array.from([...at(0, 13), 0xcb, 0x40, 0x14, 0, 0, 0, 0, 0, 0, ...at(14)]), // 5 as float 64
      Uint8Array.from([...at(0, 9), 0xd9, 0x01, 0x61, ...at(11)]), // 'a' as str 8
    ];
    for (const v of variants) {
      expect(general(v)).toEqual(e);
      expect(readCanonicalEntry(v, 0, v.length)).toBeUndefined();
    }
  });
});
