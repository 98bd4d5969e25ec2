import type { Cidr, PeerName } from '../../common/types.js';
import { prefixMask } from '../../common/types.js';
import { UNDERLAY_MTU_DEFAULT } from '../constants.js';
import type { PeerCrypto } from './peer-crypto.js';

/** Encap names the encapsulation used towards a hop. */
export const Encap = { Sleeve: 0, Vxlan: 1 } as const;
export type Encap = (typeof Encap)[keyof typeof Encap];

/** encapName renders an Encap for status and logs. */
export function encapName(e: Encap): 'sleeve' | 'vxlan' {
  return e === Encap.Vxlan ? 'vxlan' : 'sleeve';
}

/**
 * Hop is where the datapath sends a packet: a Weft peer (named) or a VXLAN endpoint learned from
 * traffic (a kernel vxlan device, unnamed). Identity fields are fixed; the counters are bumped by
 * the datapath only.
 */
export class Hop {
  /** txPackets/txBytes count inner packets and bytes sent towards this hop. */
  txPackets = 0;
  txBytes = 0;
  /** rxPackets/rxBytes count inner packets and bytes received from this hop. */
  rxPackets = 0;
  rxBytes = 0;
  /**
   * pmtu is the IP-level path MTU towards `addr` in bytes: no datagram to this hop is larger. The
   * control plane writes it (path MTU discovery, see overlay/pmtu.ts); the datapath reads it per
   * packet. Defaults to the underlay MTU the Hop was made with.
   */
  pmtu: number;
  /**
   * crypto is the data encryption towards this peer (a password is set and its connection is
   * encrypted), else undefined: then datagrams to and from it are in the clear. The control
   * plane sets it before the hop enters a Fib; an installed one stays (closed when the peer goes).
   */
  crypto: PeerCrypto | undefined = undefined;

  constructor(
    /** peer is the Weft peer name, or undefined for a learned kernel VXLAN endpoint. */
    readonly peer: PeerName | undefined,
    /** nameHi/nameLo are the peer name's 48 bits (0 for learned endpoints). */
    readonly nameHi: number,
    readonly nameLo: number,
    /** macHi/macLo is the inner destination MAC used with VXLAN. */
    readonly macHi: number,
    readonly macLo: number,
    /** addr is the hop's underlay IPv4 address (host order). */
    readonly addr: number,
    /** port is the hop's UDP port for `encap`. */
    readonly port: number,
    readonly encap: Encap,
    /** sleevePort is the hop's sleeve UDP port, used to relay sleeve datagrams whatever `encap` is. */
    readonly sleevePort: number = port,
    pmtu = UNDERLAY_MTU_DEFAULT,
  ) {
    this.pmtu = pmtu;
  }
}

/** peerNameHi and peerNameLo split a MAC-form peer name into 16 + 32 bits. */
export function peerNameHi(name: PeerName): number {
  return Number.parseInt(name.slice(0, 5).replace(':', ''), 16);
}
export function peerNameLo(name: PeerName): number {
  return Number.parseInt(name.slice(6).replaceAll(':', ''), 16) >>> 0;
}

/** peerKey makes one number (48 bits, exact in a double) from a peer name's halves. */
export function peerKey(hi: number, lo: number): number {
  return hi * 0x1_0000_0000 + lo;
}

/** endpointKey makes one number of an underlay address and UDP port. */
export function endpointKey(addr: number, port: number): number {
  return addr * 65536 + port;
}

/**
 * FibSenders says who may send to the datapath (without a password, senders are known by their
 * underlay endpoint, as Weave's sleeve did): `endpoints` are the sleeve (and Weft VXLAN) hops of
 * every peer we hold a control connection with, `kernelVxlanPeers` the underlay addresses of
 * kernel vxlan devices the operator configured (`--vxlan-peer`), the only sources VXLAN endpoints
 * are learned from.
 */
export interface FibSenders {
  endpoints?: readonly Hop[];
  kernelVxlanPeers?: readonly number[];
}

/** FibRoute is one prefix announced by a peer. */
export interface FibRoute {
  readonly cidr: Cidr;
  readonly hop: Hop;
}

/** FibRange is a run of addresses [start, end) owned by a peer in the IPAM ring (end may be 2^32). */
export interface FibRange {
  readonly start: number;
  readonly end: number;
  readonly hop: Hop;
}

/**
 * Fib is an immutable forwarding snapshot: destination address → hop, plus the set of addresses
 * this host itself serves. The control plane builds a new Fib on every change and installs it
 * with one assignment; the datapath only reads it. Lookup order: announced /32s (one Map
 * lookup), then the IPAM ring's ranges (binary search over sorted, disjoint runs), then other
 * announced prefixes, longest first.
 */
export class Fib {
  private readonly hosts = new Map<number, Hop>();
  private readonly prefixes: { net: number; mask: number; hop: Hop }[] = [];
  private readonly local = new Set<number>();
  private readonly byPeer = new Map<number, Hop>();
  /** byEndpoint: connected peers' hops by (underlay address, UDP port) they send from. */
  private readonly byEndpoint = new Map<number, Hop>();
  /** vxlanSources: underlay addresses allowed to send VXLAN (Weft peers and configured kernel peers). */
  private readonly vxlanSources = new Set<number>();
  /** kernelVxlan: configured kernel vxlan peers, the only sources endpoints are learned from. */
  private readonly kernelVxlan = new Set<number>();
  private readonly rangeStarts: Float64Array;
  private readonly rangeEnds: Float64Array;
  private readonly rangeHops: Hop[];

  constructor(routes: readonly FibRoute[] = [], localAddrs: readonly number[] = [], ranges: readonly FibRange[] = []) {
    const sorted = ranges.filter((r) => r.end > r.start).sort((a, b) => a.start - b.start);
    this.rangeStarts = new Float64Array(sorted.map((r) => r.start));
    this.rangeEnds = new Float64Array(sorted.map((r) => r.end));
    this.rangeHops = sorted.map((r) => r.hop);
    for (const r of routes) {
      if (r.hop.peer !== undefined) this.byPeer.set(peerKey(r.hop.nameHi, r.hop.nameLo), r.hop);
      if (r.cidr.prefix === 32) {
        this.hosts.set(r.cidr.addr >>> 0, r.hop);
      } else {
        const mask = prefixMask(r.cidr.prefix);
        this.prefixes.push({ net: (r.cidr.addr & mask) >>> 0, mask, hop: r.hop });
      }
    }
    // Longest prefix first, so the first match wins.
    this.prefixes.sort((a, b) => b.mask - a.mask);
    for (const a of localAddrs) this.local.add(a >>> 0);
  }

  /**
   * build makes a Fib that also knows `hops` by peer (for peers with no routes) and the senders
   * the datapath accepts. Without `senders.endpoints` every peer hop counts as a sender endpoint.
   */
  static build(
    routes: readonly FibRoute[],
    localAddrs: readonly number[],
    peers: readonly Hop[],
    ranges: readonly FibRange[] = [],
    senders: FibSenders = {},
  ): Fib {
    const fib = new Fib(routes, localAddrs, ranges);
    for (const h of peers) if (h.peer !== undefined) fib.byPeer.set(peerKey(h.nameHi, h.nameLo), h);
    for (const h of senders.endpoints ?? peers) {
      if (h.peer === undefined) continue;
      fib.byEndpoint.set(endpointKey(h.addr, h.port), h);
      fib.byEndpoint.set(endpointKey(h.addr, h.sleevePort), h);
      // An encrypted peer sends nothing over VXLAN (it cannot be sealed): VXLAN from it is cleartext.
      if (h.crypto === undefined) fib.vxlanSources.add(h.addr);
    }
    for (const a of senders.kernelVxlanPeers ?? []) {
      fib.kernelVxlan.add(a >>> 0);
      fib.vxlanSources.add(a >>> 0);
    }
    return fib;
  }

  /** sender returns the connected peer's hop that sends from (addr, port), or undefined for a stranger. */
  sender(addr: number, port: number): Hop | undefined {
    return this.byEndpoint.get(endpointKey(addr, port));
  }

  /** vxlanSource says whether VXLAN from this underlay address is accepted (a Weft peer or a configured kernel peer). */
  vxlanSource(addr: number): boolean {
    return this.vxlanSources.has(addr);
  }

  /** kernelVxlanPeer says whether addr is a configured kernel vxlan peer (endpoints behind it may be learned). */
  kernelVxlanPeer(addr: number): boolean {
    return this.kernelVxlan.has(addr);
  }

  /** lookup returns the hop for a destination address, or undefined. */
  lookup(dst: number): Hop | undefined {
    const h = this.hosts.get(dst);
    if (h !== undefined) return h;
    const starts = this.rangeStarts;
    if (starts.length > 0 && dst >= starts[0]!) {
      let lo = 0;
      let hi = starts.length - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (starts[mid]! <= dst) lo = mid;
        else hi = mid - 1;
      }
      if (dst < this.rangeEnds[lo]!) return this.rangeHops[lo];
    }
    const p = this.prefixes;
    for (let i = 0; i < p.length; i++) {
      const e = p[i]!;
      if ((dst & e.mask) >>> 0 === e.net) return e.hop;
    }
    return undefined;
  }

  /** isLocal says whether an address is served by this host itself. */
  isLocal(addr: number): boolean {
    return this.local.has(addr);
  }

  /** peer returns the hop of a connected Weft peer by its name halves, or undefined. */
  peer(hi: number, lo: number): Hop | undefined {
    return this.byPeer.get(peerKey(hi, lo));
  }

  /** hops lists every distinct peer hop (for status). */
  hops(): Hop[] {
    return [...this.byPeer.values()];
  }
}
