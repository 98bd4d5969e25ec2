/**
 * FibCompiler turns the control plane's view (topology entries, routes, the connected peers'
 * hops, the IPAM ring and our own addresses) into a forwarding table: a new Fib, built off the
 * hot path and installed by the caller with one assignment. It keeps one relay Hop per
 * (destination, next hop) across compilations so their counters survive rebuilds.
 */
import type { PeerName } from '../common/types.js';
import { parseCidr } from '../common/types.js';
import { Encap, Fib, type FibRange, type FibRoute, Hop, peerNameHi, peerNameLo } from './datapath/fib.js';
import { PeerCrypto } from './datapath/peer-crypto.js';
import type { Routes } from './routes.js';
import type { PeerEntry } from './topology.js';

/** FibInput is everything a forwarding table is compiled from. */
export interface FibInput {
  readonly self: PeerName;
  readonly entries: readonly PeerEntry[];
  readonly routes: Routes;
  /** directHop is the hop in use towards a connected peer (undefined when not connected). */
  readonly directHop: (peer: PeerName) => Hop | undefined;
  /** endpoints are every connected peer's direct hops: heartbeats flow before routes exist. */
  readonly endpoints: readonly Hop[];
  /** spans are the IPAM ring's ranges with their owners. */
  readonly spans: readonly { start: number; end: number; owner: PeerName }[];
  /** localAddrs are the addresses this host serves itself. */
  readonly localAddrs: readonly number[];
  readonly kernelVxlanPeers: readonly number[];
  /**
   * encrypted: a password is set. A relayed peer's datagrams are sealed end to end with its
   * PeerCrypto (`dataKeys`): the keys of our own connection to it (one whose data path is not
   * proven yet, so routes go round it), else keys made end to end through the mesh
   * (overlay/e2e-keys.ts), asked for when the datapath first drops for want of them; NO_KEYS
   * when there can be none. Never sent or taken in the clear.
   */
  readonly encrypted?: boolean;
  readonly dataKeys?: (peer: PeerName) => PeerCrypto | undefined;
}

/** FibCompiler: see the module comment. */
export class FibCompiler {
  private relayHops = new Map<string, Hop>();

  /**
   * compile makes a new Fib: a peer reached directly uses the direct hop (sleeve or VXLAN); a peer
   * reached through another uses sleeve towards that next hop, with the final peer named in the
   * header. Addresses go to the peer announcing them, else to the owner of their part of the ring.
   */
  compile(input: FibInput): Fib {
    const routes: FibRoute[] = [];
    const hops: Hop[] = [];
    const hopOf = new Map<PeerName, Hop>();
    const relayHops = new Map<string, Hop>();
    for (const e of input.entries) {
      if (e.name === input.self) continue;
      const next = input.routes.unicast.get(e.name);
      if (next === undefined) continue;
      let hop: Hop | undefined;
      if (next === e.name) {
        hop = input.directHop(e.name);
      } else {
        const via = input.directHop(next);
        if (via !== undefined) {
          const key = `${e.name}/${next}`;
          hop = this.relayHops.get(key) ?? relayHop(e.name, via);
          hop.crypto = input.encrypted === true ? (input.dataKeys?.(e.name) ?? PeerCrypto.NO_KEYS) : undefined;
          relayHops.set(key, hop);
        }
      }
      if (hop === undefined) continue;
      hops.push(hop);
      hopOf.set(e.name, hop);
      for (const c of e.cidrs) {
        try {
          routes.push({ cidr: parseCidr(c), hop });
        } catch {
          // entries are validated on merge; an unparsable CIDR here is skipped, not fatal
        }
      }
    }
    this.relayHops = relayHops;
    const ranges: FibRange[] = [];
    for (const span of input.spans) {
      const hop = span.owner === input.self ? undefined : hopOf.get(span.owner);
      if (hop !== undefined) ranges.push({ start: span.start, end: span.end, hop });
    }
    return Fib.build(routes, [...input.localAddrs], hops, ranges, {
      endpoints: [...input.endpoints],
      kernelVxlanPeers: [...input.kernelVxlanPeers],
    });
  }

  /** relayHop is the relay hop towards `dest` through `next` in the table compiled last. */
  relayHop(dest: PeerName, next: PeerName): Hop | undefined {
    return this.relayHops.get(`${dest}/${next}`);
  }

  /** onPmtu gives the relay hops through the direct hop `via` its new path MTU. */
  onPmtu(via: Hop, pmtu: number): void {
    for (const h of this.relayHops.values()) {
      if (h.addr === via.addr && h.sleevePort === via.sleevePort) h.pmtu = pmtu;
    }
  }

  /** clear forgets the relay hops (router stopped). */
  clear(): void {
    this.relayHops.clear();
  }
}

/** relayHop is the hop towards `dest` through the neighbour `via`: sleeve to its sleeve port. */
function relayHop(dest: PeerName, via: Hop): Hop {
  const hi = peerNameHi(dest);
  const lo = peerNameLo(dest);
  return new Hop(dest, hi, lo, hi, lo, via.addr, via.sleevePort, Encap.Sleeve, via.sleevePort, via.pmtu);
}
