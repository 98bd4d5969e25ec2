import { PMTU_MIN, PMTU_PROBE_TIMEOUT_MS, PMTU_PROBE_TRIES, PMTU_REPROBE_MS } from '../constants.js';

/** PathMtuState says where discovery stands: still searching, or the size in use is proven. */
export type PathMtuState = 'searching' | 'confirmed';

/** PathMtuStatus is a JSON-safe snapshot of one peer's path MTU discovery. */
export interface PathMtuStatus {
  /** pmtu is the IP-level path MTU in use: no datagram to the peer is larger. */
  pmtu: number;
  state: PathMtuState;
  /** ceiling is the most the local route allows (device MTU, lowered by ICMP the kernel heard). */
  ceiling: number;
  /** probing is the size of the probe in flight, 0 when none. */
  probing: number;
}

/**
 * PathMtu discovers the path MTU towards one peer (packetization-layer PMTUD in the manner of
 * RFC 4821 / RFC 8899): a size is believed only when a probe of that size — a heartbeat padded
 * to it, sent with DF like every data datagram — is acked, and it is given up only after
 * PMTU_PROBE_TRIES lost probes, so frame loss is not mistaken for a small path and a path that
 * drops ICMP is still measured. The kernel's own path MTU towards the peer (the route's MTU,
 * lowered by any ICMP "fragmentation needed" it heard) caps the search and takes effect at once.
 *
 *   [PMTU_MIN ........ lo ==== known good ====|.... untried ....| hi: known too big / cap + 1 ]
 *
 * The first probe after the cap changes tries the cap itself (the common answer); after a loss
 * the search is binary between lo and hi. While the cap is untried the cap is used (optimistic:
 * most paths carry it, and the kernel refuses larger sends); once the cap failed, lo is used
 * until a larger size is proven. A confirmed MTU below the device's is re-probed upwards after
 * PMTU_REPROBE_MS. The owner calls `tick` from its heartbeat timer and sends the probe it asks
 * for; times are in ms from one clock.
 */
export class PathMtu {
  private lo = PMTU_MIN;
  private hi: number;
  private deviceMtu: number;
  private optimistic = true;
  private topTried = false;
  private probing = 0;
  private tries = 0;
  private sentAt = 0;
  private confirmedAt = 0;
  private stateValue: PathMtuState = 'searching';

  constructor(deviceMtu: number) {
    this.deviceMtu = Math.max(PMTU_MIN, deviceMtu);
    this.hi = this.deviceMtu + 1;
  }

  /** pmtu is the size in use now. */
  get pmtu(): number {
    return this.optimistic ? this.hi - 1 : this.lo;
  }

  get state(): PathMtuState {
    return this.stateValue;
  }

  /**
   * tick advances discovery at `now`; `kernelMtu` is the kernel's path MTU towards the peer (or
   * 0 when unknown). Returns the size of a probe to send now, or 0.
   */
  tick(now: number, kernelMtu = 0): number {
    if (kernelMtu >= PMTU_MIN && kernelMtu + 1 < this.hi) {
      // The route (or an ICMP message the kernel believed) allows less: cap at once.
      this.hi = kernelMtu + 1;
      if (this.lo >= this.hi) this.lo = Math.min(this.lo, kernelMtu);
      this.restart();
    } else if (kernelMtu > this.deviceMtu) {
      this.deviceMtu = kernelMtu;
    }
    if (this.probing !== 0) {
      if (now - this.sentAt < PMTU_PROBE_TIMEOUT_MS) return 0;
      return this.lost(now);
    }
    if (this.stateValue === 'confirmed') {
      if (this.lo >= this.deviceMtu || now - this.confirmedAt < PMTU_REPROBE_MS) return 0;
      // Re-probe upwards: the path may have grown (the kernel forgets ICMP-learned MTUs too).
      this.hi = Math.max(this.hi, (kernelMtu >= PMTU_MIN ? Math.min(kernelMtu, this.deviceMtu) : this.deviceMtu) + 1);
      this.topTried = false;
      this.stateValue = 'searching';
    }
    return this.next(now);
  }

  /** acked records that a probe (or any padded heartbeat) of `size` bytes got through. */
  acked(size: number, now: number): void {
    if (size <= 0) return;
    if (size >= this.hi) return; // larger than the cap allows now: stale
    if (size > this.lo) this.lo = size;
    if (size === this.probing) {
      this.probing = 0;
      this.tries = 0;
    }
    if (this.lo + 1 >= this.hi) this.confirm(now);
  }

  /** sendFailed records that the probe asked for could not be sent (EMSGSIZE: larger than the kernel allows). */
  sendFailed(now: number): void {
    if (this.probing === 0) return;
    this.tries = PMTU_PROBE_TRIES - 1;
    this.lost(now);
  }

  /** status is a JSON-safe snapshot. */
  status(): PathMtuStatus {
    return { pmtu: this.pmtu, state: this.stateValue, ceiling: this.hi - 1, probing: this.probing };
  }

  private restart(): void {
    this.topTried = false;
    this.optimistic = true;
    this.probing = 0;
    this.tries = 0;
    this.stateValue = 'searching';
  }

  private lost(now: number): number {
    this.tries++;
    if (this.tries < PMTU_PROBE_TRIES) {
      this.sentAt = now;
      return this.probing;
    }
    // Too big: PMTU_PROBE_TRIES probes of this size were lost.
    this.hi = this.probing;
    this.optimistic = false;
    this.probing = 0;
    this.tries = 0;
    if (this.lo >= this.hi) this.lo = Math.max(PMTU_MIN, this.hi - 1);
    return this.next(now);
  }

  private next(now: number): number {
    if (this.lo + 1 >= this.hi) {
      this.confirm(now);
      return 0;
    }
    const size = this.topTried ? Math.floor((this.lo + this.hi) / 2) : this.hi - 1;
    this.topTried = true;
    this.probing = size;
    this.tries = 0;
    this.sentAt = now;
    return size;
  }

  private confirm(now: number): void {
    if (this.stateValue !== 'confirmed') this.confirmedAt = now;
    this.stateValue = 'confirmed';
    this.optimistic = false;
    this.probing = 0;
  }
}
