/**
 * linkRoutes gives each node of a hand-built mesh the routes the topology would give if every link
 * were established both ways: the gossip channel tests wire nodes by hand and need the broadcast
 * trees and next hops that MeshCore would derive.
 */
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
