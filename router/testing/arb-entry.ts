/**
 * arbPeerEntry generates valid topology entries (any UTF-16 nickname, lone surrogates included;
 * uids up to u64; counts up to 2^53; up to 40 connections, unsorted as often as not) for property
 * tests of the entry codecs; wireArrayOf gives the array msgpackr packs for one (the wire form).
 */
import fc from 'fast-check';
import { formatIPv4, type PeerName, parseIPv4, peerNameFromBytes, peerNameToBytes } from '../../common/types.js';
import { NICKNAME_MAX_CHARS } from '../protocol.js';
import type { PeerEntry } from '../topology-entry.js';

const name = fc.uint8Array({ minLength: 6, maxLength: 6 });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const port = fc.integer({ min: 1, max: 0xffff });
const anyText = (maxLength: number) =>
  fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)), maxLength });

export function arbPeerEntry(): fc.Arbitrary<PeerEntry> {
  return fc
    .record({
      name,
      nickname: fc.oneof(anyText(NICKNAME_MAX_CHARS), fc.string({ unit: 'grapheme-ascii', maxLength: 64 })),
      uid: fc.bigInt({ min: 1n, max: 2n ** 64n - 1n }).map(String),
      incarnation: fc.oneof(fc.maxSafeNat(), fc.integer({ min: 0, max: 0xffffffff })),
      version: fc.oneof(fc.nat(300), fc.maxSafeNat()),
      connections: fc.uniqueArray(fc.tuple(name, u32, port, fc.boolean(), fc.boolean()), {
        maxLength: 40,
        selector: (c) => Buffer.from(c[0]).toString('hex'),
      }),
      sorted: fc.boolean(),
      cidrs: fc.array(fc.tuple(u32, fc.integer({ min: 0, max: 32 })), { maxLength: 20 }),
      sleevePort: port,
      vxlanPort: port,
      encap: fc.constantFrom('sleeve' as const, 'vxlan' as const),
    })
    .map((w) => {
      const me = peerNameFromBytes(w.name, 0);
      const connections = w.connections
        .map(([p, addr, tcpPort, outbound, established]) => ({
          peer: peerNameFromBytes(p, 0),
          addr: formatIPv4(addr),
          tcpPort,
          outbound,
          established,
        }))
        .filter((c) => c.peer !== me);
      if (w.sorted) connections.sort((a, b) => (a.peer < b.peer ? -1 : 1));
      return {
        name: me,
        nickname: w.nickname,
        uid: w.uid,
        incarnation: w.incarnation,
        version: w.version,
        connections,
        cidrs: w.cidrs.map(([a, n]) => `${formatIPv4(a)}/${n}`),
        sleevePort: w.sleevePort,
        vxlanPort: w.vxlanPort,
        encap: w.encap,
      };
    });
}

function bytesOf(n: PeerName): Uint8Array {
  const b = new Uint8Array(6);
  peerNameToBytes(n, b, 0);
  return b;
}

/** wireArrayOf is the wire form of an entry as msgpackr would be given it (router/topology-wire.ts). */
export function wireArrayOf(e: PeerEntry): unknown[] {
  return [
    bytesOf(e.name),
    e.nickname,
    e.uid,
    e.incarnation,
    e.version,
    e.connections.map((c) => [bytesOf(c.peer), parseIPv4(c.addr), c.tcpPort, c.outbound, c.established]),
    e.cidrs,
    e.sleevePort,
    e.vxlanPort,
    e.encap,
  ];
}
