import type { PacketConn } from '../conn/packet-conn.js';
import type { Counters } from './counters.js';
import { Drop } from './counters.js';
import type { Hop } from './fib.js';
import { SEAL_TAG_BYTES } from './peer-crypto.js';

/** SEAL_RUN_MAX is how many datagrams one sealBatch call takes (a run of one peer's entries). */
const SEAL_RUN_MAX = 1024;

/**
 * SendBatch collects the datagrams one readiness wake-up sends on one socket, so they leave in
 * one `sendBatch` call (sendmmsg) and in the order they were made. Entry i is
 * `buf[off[i] .. +len[i]]` to `addr[i]:port[i]`; with `gso[i] > 0` it is a UDP GSO train of
 * `gso[i]`-byte datagrams (the last may be shorter). `hop`/`end` serve sleeve bundling: the peer
 * an entry goes to, and the end of the room the entry may grow into.
 *
 * Entries to a hop with data keys (hop.crypto) are laid out sealed but not yet sealed (counter
 * room after the header, SEAL_TAG_BYTES free after each datagram, a train's `gso` counting the
 * tag): flush seals every datagram of them, each segment of a train on its own, first.
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
  /** anySealed says whether an entry goes to a hop with data keys (only then flush seals). */
  private anySealed = false;
  private readonly sealOff = new Int32Array(SEAL_RUN_MAX);
  private readonly sealLen = new Int32Array(SEAL_RUN_MAX);

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
    if (hop !== undefined && hop.crypto !== undefined) this.anySealed = true;
    return k;
  }

  /**
   * flush sends every entry on `conn` from `buf`, counts datagrams and bytes sent (a train counts
   * each of its datagrams) and the rest as UdpSend drops, and empties the batch.
   */
  flush(conn: PacketConn, buf: Buffer, c: Counters): void {
    const n = this.n;
    if (n === 0) return;
    if (this.anySealed) this.seal(buf, c);
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
    this.anySealed = false;
  }

  /**
   * seal seals every datagram of the entries to hops with data keys, in runs of consecutive
   * entries to the same peer (one sealBatch each); each entry grows by the tag. An entry whose
   * peer's keys were closed meanwhile cannot be: its length becomes 0 (an empty datagram, never
   * cleartext; counted as a NoKey drop).
   */
  private seal(buf: Buffer, c: Counters): void {
    const offs = this.sealOff;
    const lens = this.sealLen;
    let run = 0;
    let runCrypto: Hop['crypto'];
    for (let k = 0; k < this.n; k++) {
      const crypto = this.hop[k]?.crypto;
      if (crypto === undefined) continue;
      const len = this.len[k] as number;
      const g = this.gso[k] as number;
      const segs = g > 0 && g < len ? Math.ceil(len / g) : 1;
      if (crypto !== runCrypto || run + segs > SEAL_RUN_MAX) {
        if (run > 0) runCrypto?.sender?.sealBatch(buf, offs, lens, run);
        run = 0;
        runCrypto = crypto;
      }
      if (crypto.sender === undefined) {
        c.drop(Drop.NoKey, segs);
        crypto.want();
        this.len[k] = 0;
        this.gso[k] = 0;
        continue;
      }
      const off = this.off[k] as number;
      if (segs === 1) {
        offs[run] = off;
        lens[run++] = len;
      } else {
        for (let j = 0; j < segs; j++) {
          offs[run] = off + j * g;
          lens[run++] = j < segs - 1 ? g - SEAL_TAG_BYTES : len - j * g;
        }
      }
      this.len[k] = len + SEAL_TAG_BYTES;
    }
    if (run > 0) runCrypto?.sender?.sealBatch(buf, offs, lens, run);
  }
}
