/**
 * Bare kernel vxlan hosts on the fast path: a host with only `ip link add … type vxlan` (no Weft
 * router) and Weft's VNI and port, configured with `--vxlan-peer ITS_UNDERLAY_IP`. Under
 * `--encap auto|fastdp` the kernel's weft-vx owns the VXLAN port, so the kernel meets such a host,
 * programmed from here (KernelFastPath.sync, see `BareWant`):
 *
 * ```
 *  bare host C  vx0 10.32.0.9/12, fdb 00:00:00:00:00:00 dst U_A        (its own setup, by hand)
 *      │ ARP "who has 10.32.0.5 (a container here)?"  ──▶ weft-vx: proxy entry 10.32.0.5 → answered
 *      │                                                 (the kernel learns 10.32.0.9 lladdr M_C)
 *  host A: fdb 00:00:00:00:00:00 dst U_C self permanent  (our ARP and frames for M_C go to C)
 *          route <our IPAM share minus others' addresses> dev weft-vx proto 87 (more specific than
 *          the TUN device's range route): C's addresses are somewhere in it, found by ARP
 * ```
 *
 * As in userspace VXLAN mode, a bare host's addresses are the ones in our own IPAM share (the
 * learnable ones: no Weft peer owns or announces them). Traffic from other Weft peers for them
 * arrives on the TUN device (sleeve) or weft-vx (fast path) and the kernel forwards it on.
 */
import type { Span } from '../ipam/ring.js';
import { spanCidrs } from './fast-data-path.js';
import type { BareWant } from './fastdp.js';

/** BareInput is what bareWant needs (addresses host-order). */
export interface BareInput {
  /** peers are the bare hosts' underlay addresses (--vxlan-peer). */
  readonly peers: readonly number[];
  /** self is our peer name: spans owned by it are our share. */
  readonly self: string;
  readonly spans: readonly Span[];
  /** minPrefix is the TUN device's range prefix: every route is more specific. */
  readonly minPrefix: number;
  /** others are addresses other peers announce (CIDRs): never routed to bare hosts. */
  readonly others: readonly { readonly addr: number; readonly prefix: number }[];
  /** local are this host's own overlay addresses (exposed, containers): ARP is answered for them. */
  readonly local: readonly number[];
}

/** bareWant is the weft-vx state for the bare hosts (nothing without any). */
export function bareWant(i: BareInput): BareWant {
  const flood = [...new Set(i.peers.map((a) => a >>> 0))].filter(validUnicast).sort((a, b) => a - b);
  if (flood.length === 0) return { flood: [], proxies: [], routes: [] };
  const ours = i.spans.filter((s) => s.owner === i.self && s.end > s.start).map((s) => [s.start, s.end] as const);
  const holes = i.others.map((c) => {
    const size = 2 ** (32 - c.prefix);
    const start = c.prefix === 0 ? 0 : Math.floor((c.addr >>> 0) / size) * size;
    return [start, start + size] as const;
  });
  const routes: { addr: number; prefix: number }[] = [];
  for (const [s, e] of subtract(ours, holes)) routes.push(...spanCidrs(s, e, i.minPrefix));
  const proxies = [...new Set(i.local.map((a) => a >>> 0))].sort((a, b) => a - b);
  return { flood, proxies, routes };
}

/** validUnicast refuses 0.0.0.0/8, loopback, multicast and the reserved/broadcast block as an underlay address. */
export function validUnicast(a: number): boolean {
  const first = a >>> 24;
  return first !== 0 && first !== 127 && first < 224;
}

/** subtract removes the `holes` from the runs [start, end), giving sorted, disjoint runs. */
export function subtract(
  runs: readonly (readonly [number, number])[],
  holes: readonly (readonly [number, number])[],
): [number, number][] {
  const hs = [...holes].filter(([s, e]) => e > s).sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const [start, end] of [...runs].sort((a, b) => a[0] - b[0])) {
    let a = start;
    for (const [hs0, he] of hs) {
      if (he <= a || hs0 >= end) continue;
      if (hs0 > a) out.push([a, hs0]);
      a = Math.max(a, he);
      if (a >= end) break;
    }
    if (a < end) out.push([a, end]);
  }
  return out;
}
