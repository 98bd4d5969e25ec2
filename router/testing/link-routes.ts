/**
 * What the gossip channel tests share: linkRoutes gives each node of a hand-built mesh the routes
 * the topology would give if every link were established both ways (the broadcast trees and next
 * hops that MeshCore would derive), and the smallest mergeable data to gossip, a set of strings.
 */
import { ProtocolError } from '../../common/errors.js';
import type { PeerName } from '../../common/types.js';
import { computeRoutes, type Routes } from '../routes.js';
import type { PeerEntry } from '../topology.js';

/** LinkedNode is a node as the channel tests keep it: its name, its links, and routes to set. */
export interface LinkedNode {
  readonly name: PeerName;
  readonly links: ReadonlySet<PeerName>;
  routes: Routes;
}

/** linkRoutes sets every node's routes from the links as they are now (all established). */
export function linkRoutes(nodes: Iterable<LinkedNode>): void {
  const list = [...nodes];
  const entries: PeerEntry[] = list.map((n) => ({
    name: n.name,
    nickname: '',
    uid: '1',
    incarnation: 1,
    version: 1,
    connections: [...n.links].map((peer) => ({
      peer,
      addr: '10.0.0.1',
      tcpPort: 6783,
      outbound: true,
      established: true,
    })),
    cidrs: [],
    sleevePort: 6783,
    vxlanPort: 6784,
    encap: 'sleeve',
  }));
  for (const n of list) n.routes = computeRoutes(n.name, entries);
}

/** testPeer is the peer name 02:00:00:00:00:nn. */
export function testPeer(n: number): PeerName {
  return `02:00:00:00:00:${n.toString(16).padStart(2, '0')}` as PeerName;
}

/** encodeStringSet is a set of strings on the wire: a JSON array. */
export function encodeStringSet(items: readonly string[]): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(items));
}

/** decodeStringSet reads encodeStringSet's form (every string `length` long, if given); ProtocolError otherwise. */
export function decodeStringSet(payload: Uint8Array, length?: number): string[] {
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder().decode(payload));
  } catch (err) {
    throw new ProtocolError('not a set', { cause: err });
  }
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string' && (length === undefined || x.length === length))) {
    throw new ProtocolError('not a set');
  }
  return v;
}
