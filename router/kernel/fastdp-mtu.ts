/**
 * FastdpMtuProof says whether the fast path towards one peer carries full-size frames. The small
 * heartbeats (fastdp-heartbeats.ts) prove that VXLAN gets through, not that a frame filling
 * weft-vx's MTU does: a peer whose underlay MTU is smaller, a middle link or a filter dropping
 * large frames would swallow the containers' large packets while the heartbeats flow. So, once
 * the heartbeats are answered, the switch sends an MTU probe (an IPv6 datagram filling weft-vx's
 * MTU; weft-vx sets DF on the outer header) every tick until one is acked, then one every
 * FASTDP_MTU_REPROBE_MS; the peer's routes go through weft-vx only while the proof is `ok`.
 *
 * - unproven: no probe acked yet (the peer stays on sleeve: "fastdp pending");
 * - ok: a probe was acked, and none sent since is older than the timeout without an ack;
 * - failed: probes went unanswered for the timeout, or the kernel already knows a path MTU
 *   towards the peer's underlay address too small for a full frame (an ICMP "fragmentation
 *   needed" answered one; the kernel would then fragment the next probe at its source and prove
 *   nothing). Failed probes are retried every `healthyMs`; an ack makes the proof ok again.
 *
 * Pure state: the caller passes the time.
 */
import { VXLAN_IPV4_OVERHEAD_BYTES } from './fastdp.js';

/** FASTDP_MTU_REPROBE_MS is how often a proven fast path is probed again at full size. */
export const FASTDP_MTU_REPROBE_MS = 30_000;

export type MtuProofState = 'unproven' | 'ok' | 'failed';

/** FastdpMtuProof: see the module comment. */
export class FastdpMtuProof {
  state: MtuProofState = 'unproven';
  /** reason says why the proof failed (status: `vxlan: MTU 1450 not carried`). */
  reason: string | undefined;
  private okMs = Number.NEGATIVE_INFINITY;
  private sentMs = Number.NEGATIVE_INFINITY;
  /** pathMtu is the kernel's path MTU towards the peer's underlay address (0: unknown), set by the caller. */
  pathMtu = 0;
  /** firstUnackedMs is when the oldest probe not followed by an ack went out (Infinity: none). */
  private firstUnackedMs = Number.POSITIVE_INFINITY;

  /** mtu is weft-vx's MTU: the size of the inner packets the fast path must carry. */
  constructor(readonly mtu: number) {}

  /** due says whether a probe should go out at `nowMs` (see the module comment for the pacing). */
  due(nowMs: number, tickMs: number, healthyMs: number): boolean {
    const since = nowMs - this.sentMs;
    if (this.state === 'unproven') return since >= tickMs;
    if (this.state === 'ok') return since >= tickMs && nowMs - this.okMs >= FASTDP_MTU_REPROBE_MS;
    return since >= healthyMs;
  }

  /** sent records a probe sent at `nowMs`. */
  sent(nowMs: number): void {
    this.sentMs = nowMs;
    if (!Number.isFinite(this.firstUnackedMs)) this.firstUnackedMs = nowMs;
  }

  /** acked records the ack of a full-size probe (the caller checks its size). */
  acked(nowMs: number): void {
    this.okMs = nowMs;
    this.firstUnackedMs = Number.POSITIVE_INFINITY;
  }

  /** evaluate updates `state` for the time now (and `pathMtu`); returns true when it changed. */
  evaluate(nowMs: number, timeoutMs: number): boolean {
    const kernelPathMtu = this.pathMtu;
    const need = this.mtu + VXLAN_IPV4_OVERHEAD_BYTES;
    let next: MtuProofState;
    let reason: string | undefined;
    if (kernelPathMtu > 0 && kernelPathMtu < need) {
      next = 'failed';
      reason = `MTU ${this.mtu} not carried (path MTU ${kernelPathMtu})`;
    } else if (nowMs - this.firstUnackedMs > timeoutMs) {
      next = 'failed';
      reason = `MTU ${this.mtu} not carried`;
    } else if (Number.isFinite(this.okMs)) {
      next = 'ok';
    } else {
      next = this.state === 'failed' ? 'failed' : 'unproven';
      reason = this.reason;
    }
    if (next === 'failed') this.okMs = Number.NEGATIVE_INFINITY; // only a new ack proves it again
    if (next === this.state && reason === this.reason) return false;
    const changed = next !== this.state;
    this.state = next;
    this.reason = reason;
    return changed;
  }
}
