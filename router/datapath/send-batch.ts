import type { PacketConn } from '../conn/packet-conn.js';
import type { Counters } from './counters.js';
import { Drop } from './counters.js';
import type { Hop } from './fib.js';

/**
 * SendBatch collects the datagrams one readiness wake-up sends on one socket, so they leave in
 * one `sendBatch` call (sendmmsg) and in the order they were made. Entry i is
 * `buf[off[i] .. +len[i]]` to `addr[i]:port[i]`; with `gso[i] > 0` it is a UDP GSO train of
 * `gso[i]`-byte datagrams (the last may be shorter). `hop`/`end` serve sleeve bundling: the peer
 * an entry goes to, and the end of the room the entry may grow into.
 *
 * Preallocated: push and flush allocate nothing. All entries refer to one Buffer, given to flush.
 */
export class SendBatch {
  readonly off: Int32Array;
  readonly len: Int32Array;
  readonly addr: Uint32Array;
  readonly port: Uint16Array;
  readonly gso: Uint16Array;
  readonly end: Int32Array;
  readonly hop: (Hop | undefined)[];
  /** n is the number of entries waiting to be sent. */
  n = 0;
  /** anyGso says whether an entry of this batch is a train (only then gsoSizes are passed). */
  private anyGso = false;

  constructor(readonly capacity: number) {
    this.off = new Int32Array(capacity);
    this.len = new Int32Array(capacity);
    this.addr = new Uint32Array(capacity);
    this.port = new Uint16Array(capacity);
    this.gso = new Uint16Array(capacity);
    this.end = new Int32Array(capacity);
    this.hop = new Array<Hop | undefined>(capacity).fill(undefined);
  }

  /** full says whether another entry would not fit (flush first). */
  get full(): boolean {
    return this.n === this.capacity;
  }

  /** push adds one datagram (gso 0) or train; returns its index. The caller checks `full` first. */
  push(off: number, len: number, addr: number, port: number, gso: number, hop: Hop | undefined, end: number): number {
    const k = this.n++;
    this.off[k] = off;
    this.len[k] = len;
    this.addr[k] = addr;
    this.port[k] = port;
    this.gso[k] = gso;
    this.hop[k] = hop;
    this.end[k] = end;
    if (gso !== 0) this.anyGso = true;
    return k;
  }

  /**
   * flush sends every entry on `conn` from `buf`, counts datagrams and bytes sent (a train counts
   * each of its datagrams) and the rest as UdpSend drops, and empties the batch.
   */
  flush(conn: PacketConn, buf: Buffer, c: Counters): void {
    const n = this.n;
    if (n === 0) return;
    const sent = this.anyGso
      ? conn.sendBatch(buf, this.off, this.len, this.addr, this.port, n, this.gso)
      : conn.sendBatch(buf, this.off, this.len, this.addr, this.port, n);
    for (let i = 0; i < n; i++) {
      const len = this.len[i] as number;
      const g = this.gso[i] as number;
      const datagrams = g > 0 && g < len ? Math.ceil(len / g) : 1;
      if (i < sent) {
        c.udpTxPackets += datagrams;
        c.udpTxBytes += len;
        if (datagrams > 1) c.gsoTrains++;
      } else {
        c.drop(Drop.UdpSend, datagrams);
      }
    }
    this.hop.fill(undefined, 0, n);
    this.n = 0;
    this.anyGso = false;
  }
}
