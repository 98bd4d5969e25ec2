import { Encap, Hop } from './fib.js';

/** LearnedEntry is one VXLAN endpoint learned from received traffic; `seenMs` is refreshed per packet. */
export class LearnedEntry {
  constructor(
    readonly hop: Hop,
    public seenMs: number,
  ) {}
}

/**
 * LearnedEndpoints maps an overlay IPv4 address to the VXLAN endpoint (inner MAC + underlay
 * address) it was last seen behind, like the kernel vxlan device's FDB with learning on. It lets
 * a host whose only tunnel is a kernel vxlan device talk to Weft without announcing anything.
 *
 * The datapath calls `learn` per received packet: it allocates only when an address is new or
 * has moved. The control plane calls `expire` on a timer.
 */
export class LearnedEndpoints {
  private readonly entries = new Map<number, LearnedEntry>();

  constructor(
    /** port is the UDP port replies go to (the VXLAN port; the kernel listens on its dstport). */
    private readonly port: number,
    /** maxEntries bounds the table; when full, new addresses are not learned. */
    private readonly maxEntries = 65536,
    /** pmtu is the path MTU given to learned hops (the underlay's: kernel peers are not probed). */
    private readonly pmtu = 1500,
  ) {}

  /** lookup returns the hop an address was learned behind, or undefined. */
  lookup(ip: number): Hop | undefined {
    return this.entries.get(ip)?.hop;
  }

  /** learn records that `ip` was seen behind MAC (hi, lo) at underlay `addr`; returns true when new or moved. */
  learn(ip: number, macHi: number, macLo: number, addr: number, nowMs: number): boolean {
    const e = this.entries.get(ip);
    if (e !== undefined) {
      const h = e.hop;
      if (h.macHi === macHi && h.macLo === macLo && h.addr === addr) {
        e.seenMs = nowMs;
        return false;
      }
    } else if (this.entries.size >= this.maxEntries) {
      return false;
    }
    this.entries.set(
      ip,
      new LearnedEntry(
        new Hop(undefined, 0, 0, macHi, macLo, addr, this.port, Encap.Vxlan, this.port, this.pmtu),
        nowMs,
      ),
    );
    return true;
  }

  /** expire forgets entries not seen since `beforeMs`; returns how many were removed. */
  expire(beforeMs: number): number {
    let n = 0;
    for (const [ip, e] of this.entries) {
      if (e.seenMs < beforeMs) {
        this.entries.delete(ip);
        n++;
      }
    }
    return n;
  }

  /** size is the number of learned addresses. */
  get size(): number {
    return this.entries.size;
  }

  /**
   * snapshot lists at most `max` entries for status (oldest learned first): status stays small and
   * quick to build however large the table is; `size` gives the count.
   */
  snapshot(
    max = Number.POSITIVE_INFINITY,
  ): { ip: number; macHi: number; macLo: number; addr: number; seenMs: number }[] {
    const out: { ip: number; macHi: number; macLo: number; addr: number; seenMs: number }[] = [];
    for (const [ip, e] of this.entries) {
      if (out.length >= max) break;
      out.push({ ip, macHi: e.hop.macHi, macLo: e.hop.macLo, addr: e.hop.addr, seenMs: e.seenMs });
    }
    return out;
  }
}
