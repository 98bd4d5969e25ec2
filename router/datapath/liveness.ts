/**
 * DataState is what the router knows about the data path to one directly connected peer:
 * - pending: control connection up, heartbeats not yet answered both ways;
 * - established: we hear the peer's heartbeats and it acknowledges ours, within the timeout;
 * - failed: one direction has been silent longer than the timeout (blocked UDP, NAT, MTU,
 *   a dead peer whose TCP connection has not dropped yet). Routes avoid a failed link.
 */
export type DataState = 'pending' | 'established' | 'failed';

/**
 * PathLiveness tracks data-path heartbeats for one peer. The router sends heartbeats; the peer's
 * forwarder acks each at once. Both directions are proven when we have heard a heartbeat from
 * the peer and had one of ours acked, each within `timeoutMs`. `due` paces the heartbeats: a
 * healthy path needs one per `healthyMs`, anything else one per tick of the caller's timer (a
 * lost heartbeat or ack is retried at the next tick, and so is the peer's, since its sender
 * misses our ack). Pure state: the caller passes the time.
 */
export class PathLiveness {
  state: DataState = 'pending';
  /** since is when `state` last changed (ms). */
  since: number;
  /** reason says why the state is failed. */
  reason: string | undefined;
  /** rttMs is the last heartbeat round-trip time measured through the tunnel. */
  rttMs: number | undefined;
  private heardMs = Number.NEGATIVE_INFINITY;
  private ackedMs = Number.NEGATIVE_INFINITY;
  private sentMs = Number.NEGATIVE_INFINITY;

  constructor(nowMs: number) {
    this.since = nowMs;
  }

  /** heardAt is when the peer's last heartbeat reached us (ms; -Infinity before the first). */
  get heardAt(): number {
    return this.heardMs;
  }

  /** ackedAt is when one of our heartbeats was last acked (ms; -Infinity before the first). */
  get ackedAt(): number {
    return this.ackedMs;
  }

  /** heard records a heartbeat from the peer (their → our direction works). */
  heard(nowMs: number): void {
    this.heardMs = nowMs;
  }

  /** acked records an ack of one of our heartbeats sent at `sentMs` (our → their direction works). */
  acked(nowMs: number, sentMs: number): void {
    this.ackedMs = nowMs;
    if (Number.isFinite(sentMs) && sentMs <= nowMs) this.rttMs = nowMs - sentMs;
  }

  /** sent records that a heartbeat went out at `nowMs`. */
  sent(nowMs: number): void {
    this.sentMs = nowMs;
  }

  /**
   * due says whether a heartbeat should go out at `nowMs`: always while the path is not
   * established, else when the last one is `healthyMs` old or no ack came for that long.
   */
  due(nowMs: number, healthyMs: number): boolean {
    return this.state !== 'established' || nowMs - this.sentMs >= healthyMs || nowMs - this.ackedMs >= healthyMs;
  }

  /** evaluate updates `state` for the time now; returns true when it changed. */
  evaluate(nowMs: number, timeoutMs: number): boolean {
    const inOk = nowMs - this.heardMs <= timeoutMs;
    const outOk = nowMs - this.ackedMs <= timeoutMs;
    let next: DataState;
    let reason: string | undefined;
    if (inOk && outOk) {
      next = 'established';
    } else if (this.state === 'pending' && nowMs - this.since <= timeoutMs) {
      next = 'pending';
    } else {
      next = 'failed';
      reason =
        !inOk && !outOk
          ? 'no heartbeats either way'
          : !inOk
            ? 'no heartbeats from peer'
            : 'our heartbeats not acknowledged';
    }
    if (next === this.state && reason === this.reason) return false;
    const changed = next !== this.state;
    this.state = next;
    this.reason = reason;
    if (changed) this.since = nowMs;
    return changed;
  }
}
