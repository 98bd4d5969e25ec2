import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { tryLoadNative } from '../tun/native.js';
import {
  DATA_AAD_BYTES,
  DATA_COUNTER_OFFSET,
  DATA_SEALED_MIN_BYTES,
  DATA_TTL_OFFSET,
  DataReceiver,
  DataSender,
  isEndToEnd,
  KEY_PHASES,
} from './data-crypto.js';

const native = tryLoadNative();
const STRIDE = 1600;

/** Train is a batch of sleeve-like datagrams: 16-byte header, 8 counter bytes, payload. */
class Train {
  readonly buf: Buffer;
  readonly offsets: Int32Array;
  readonly lengths: Int32Array;
  readonly payloads: Buffer[] = [];
  constructor(
    readonly count: number,
    size = (i: number) => 20 + ((i * 97) % 1300),
  ) {
    this.buf = Buffer.alloc(count * STRIDE);
    this.offsets = Int32Array.from({ length: count }, (_, i) => i * STRIDE + 8);
    this.lengths = new Int32Array(count);
    for (let i = 0; i < count; i++) {
      const off = this.offsets[i]!;
      const p = randomBytes(size(i));
      this.buf.fill(0, off, off + DATA_AAD_BYTES);
      this.buf[off] = 0x57; // 'W'
      this.buf[off + 1] = 1;
      this.buf[off + DATA_TTL_OFFSET] = 8;
      this.buf.write('srcdstpeers!', off + 4, 'latin1');
      p.copy(this.buf, off + DATA_AAD_BYTES);
      this.payloads.push(p);
      this.lengths[i] = DATA_AAD_BYTES + p.length;
    }
  }
  /** sealedLengths are the lengths after sealing (tag appended). */
  sealedLengths(): Int32Array {
    return this.lengths.map((l) => l + 16);
  }
  payload(i: number): Buffer {
    const off = this.offsets[i]! + DATA_AAD_BYTES;
    return this.buf.subarray(off, off + this.payloads[i]!.length);
  }
}

describe.skipIf(native === undefined)('DataSender / DataReceiver', () => {
  const n = native!;
  const secret = () => randomBytes(32);

  it.each(['aes-256-gcm', 'chacha20-poly1305'] as const)('%s: seals a train that opens once, in place', (suite) => {
    const s = secret();
    const tx = new DataSender(n, suite, s);
    const rx = new DataReceiver(n, suite, s);
    const t = new Train(64);
    expect(tx.sealBatch(t.buf, t.offsets, t.lengths, t.count)).toBe(64);
    for (let i = 0; i < t.count; i++) {
      expect(t.buf.readBigUInt64BE(t.offsets[i]! + DATA_COUNTER_OFFSET)).toBe(BigInt(i));
      expect(t.payload(i).equals(t.payloads[i]!)).toBe(false);
    }
    const copy = Buffer.from(t.buf);
    const res = new Uint8Array(64);
    const lens = t.sealedLengths();
    t.buf[t.offsets[5]! + DATA_TTL_OFFSET] = 3; // a relay decremented the ttl: still authentic
    expect(rx.openBatch(t.buf, t.offsets, lens, 64, res)).toBe(64);
    for (let i = 0; i < t.count; i++) expect(t.payload(i)).toEqual(t.payloads[i]);
    // the same datagrams again: replays, dropped and counted
    expect(rx.openBatch(copy, t.offsets, lens, 64, res)).toBe(0);
    expect(rx.replayDrops).toBe(64);
    expect(rx.authDrops).toBe(0);
    expect(rx.opened).toBe(64);
    tx.close();
    rx.close();
  });

  it('drops forged, truncated and wrong-key datagrams as auth, per packet', () => {
    const s = secret();
    const tx = new DataSender(n, 'aes-256-gcm', s);
    const rx = new DataReceiver(n, 'aes-256-gcm', s);
    const t = new Train(8);
    tx.sealBatch(t.buf, t.offsets, t.lengths, t.count);
    const lens = t.sealedLengths();
    t.buf[t.offsets[1]! + 30]! ^= 1; // ciphertext
    t.buf[t.offsets[2]! + 6]! ^= 1; // header (source peer)
    t.buf[t.offsets[3]! + DATA_COUNTER_OFFSET]! = 1; // counter's reserved bits
    lens[4] = DATA_SEALED_MIN_BYTES - 1; // truncated
    t.buf[t.offsets[5]! + lens[5]! - 1]! ^= 1; // tag
    const res = new Uint8Array(8);
    expect(rx.openBatch(t.buf, t.offsets, lens, 8, res)).toBe(3);
    expect([...res]).toEqual([1, 0, 0, 0, 0, 0, 1, 1]);
    expect(rx.authDrops).toBe(5);
    const other = new DataReceiver(n, 'aes-256-gcm', secret());
    const u = new Train(4);
    tx.sealBatch(u.buf, u.offsets, u.lengths, 4);
    expect(other.openBatch(u.buf, u.offsets, u.sealedLengths(), 4, new Uint8Array(4))).toBe(0);
    expect(other.authDrops).toBe(4);
    expect(() => rx.openBatch(t.buf, t.offsets, lens, 9, res)).toThrow(RangeError);
    tx.close();
    rx.close();
    other.close();
  });

  it('rekeys by ratchet without losing in-flight or reordered datagrams', () => {
    const s = secret();
    const tx = new DataSender(n, 'chacha20-poly1305', s, { rekeyAfterMessages: 100 });
    const rx = new DataReceiver(n, 'chacha20-poly1305', s);
    const trains: Train[] = [];
    for (let k = 0; k < 40; k++) {
      const t = new Train(16, () => 64);
      tx.sealBatch(t.buf, t.offsets, t.lengths, t.count);
      trains.push(t);
    }
    expect(tx.rekeys).toBeGreaterThanOrEqual(6);
    expect(tx.phase).toBe(tx.rekeys % KEY_PHASES);
    // deliver with the trains pairwise swapped (datagrams of the old key arrive after the new key's)
    let ok = 0;
    for (let k = 0; k < trains.length; k += 2) {
      for (const t of [trains[k + 1]!, trains[k]!]) {
        const res = new Uint8Array(16);
        ok += rx.openBatch(t.buf, t.offsets, t.sealedLengths(), 16, res);
        for (let i = 0; i < 16; i++) expect(t.payload(i)).toEqual(t.payloads[i]);
      }
    }
    expect(ok).toBe(40 * 16);
    expect(rx.authDrops + rx.replayDrops).toBe(0);
    expect(rx.phase).toBe(tx.phase);
    tx.close();
    rx.close();
  });

  it('rekeys on time and mixes generations within one batch', () => {
    let now = 0;
    const s = secret();
    const tx = new DataSender(n, 'aes-256-gcm', s, { now: () => now, rekeyAfterTimeMs: 1000 });
    const rx = new DataReceiver(n, 'aes-256-gcm', s);
    const t = new Train(32);
    // seal the first half under generation 0 and the second half under generation 1, one buffer
    tx.sealBatch(t.buf, t.offsets, t.lengths, 16, 0);
    now = 1500;
    // the clock is read once per 64 batches: empty batches until it is
    for (let i = 0; i < 64 && tx.rekeys === 0; i++) tx.sealBatch(t.buf, t.offsets, t.lengths, 0, 16);
    tx.sealBatch(t.buf, t.offsets, t.lengths, 16, 16);
    expect(tx.rekeys).toBe(1); // one ratchet
    const res = new Uint8Array(32);
    expect(rx.openBatch(t.buf, t.offsets, t.sealedLengths(), 32, res)).toBe(32);
    for (let i = 0; i < 32; i++) expect(t.payload(i)).toEqual(t.payloads[i]);
    tx.close();
    rx.close();
  });

  it('installs a new epoch (reconnect) while datagrams of the old one are in flight', () => {
    const s1 = secret();
    const s2 = secret();
    const tx = new DataSender(n, 'aes-256-gcm', s1);
    const rx = new DataReceiver(n, 'aes-256-gcm', s1);
    const old = new Train(8);
    tx.sealBatch(old.buf, old.offsets, old.lengths, 8);
    tx.install(s2);
    rx.install(s2);
    const neu = new Train(8);
    tx.sealBatch(neu.buf, neu.offsets, neu.lengths, 8);
    // both epochs are at phase 0: the receiver tells them apart by trying
    const res = new Uint8Array(8);
    expect(rx.openBatch(neu.buf, neu.offsets, neu.sealedLengths(), 8, res)).toBe(8);
    expect(rx.openBatch(old.buf, old.offsets, old.sealedLengths(), 8, res)).toBe(8);
    for (let i = 0; i < 8; i++) expect(old.payload(i)).toEqual(old.payloads[i]);
    expect(rx.authDrops + rx.replayDrops).toBe(0);
    tx.close();
    rx.close();
    expect(() => tx.sealBatch(old.buf, old.offsets, old.lengths, 1)).toThrow(/after close/);
  });

  it('seals and opens runs of one shared list, one run per peer (first)', () => {
    const sa = secret();
    const sb = secret();
    const txA = new DataSender(n, 'aes-256-gcm', sa);
    const txB = new DataSender(n, 'aes-256-gcm', sb);
    const rxA = new DataReceiver(n, 'aes-256-gcm', sa);
    const rxB = new DataReceiver(n, 'aes-256-gcm', sb);
    const t = new Train(12);
    // entries 0..4 go to A, 5..11 to B
    txA.sealBatch(t.buf, t.offsets, t.lengths, 5, 0);
    txB.sealBatch(t.buf, t.offsets, t.lengths, 7, 5);
    expect(t.buf.readBigUInt64BE(t.offsets[5]! + DATA_COUNTER_OFFSET)).toBe(0n);
    expect(t.buf.readBigUInt64BE(t.offsets[11]! + DATA_COUNTER_OFFSET)).toBe(6n);
    const res = new Uint8Array(12);
    const lens = t.sealedLengths();
    expect(rxB.openBatch(t.buf, t.offsets, lens, 7, res, 5)).toBe(7);
    expect(rxA.openBatch(t.buf, t.offsets, lens, 5, res, 0)).toBe(5);
    expect([...res].every((r) => r === 1)).toBe(true);
    for (let i = 0; i < 12; i++) expect(t.payload(i)).toEqual(t.payloads[i]);
    expect(() => rxA.openBatch(t.buf, t.offsets, lens, 5, res, 8)).toThrow(RangeError);
    expect(() => txA.sealBatch(t.buf, t.offsets, t.lengths, 5, 8)).toThrow(RangeError);
    for (const x of [txA, txB, rxA, rxB]) x.close();
  });

  it('never throws on random datagrams, and counts every one as an auth drop', () => {
    const rx = new DataReceiver(n, 'chacha20-poly1305', secret());
    const buf = randomBytes(64 * 256);
    const offsets = Int32Array.from({ length: 64 }, (_, i) => i * 256);
    const lengths = new Int32Array(64);
    const res = new Uint8Array(64);
    for (let round = 0; round < 100; round++) {
      for (let i = 0; i < 64; i++) {
        lengths[i] = Math.floor(Math.random() * 257);
        const off = offsets[i]!;
        // a valid-looking counter field half the time, so both paths run
        if (i % 2 === 0) buf.writeUInt16BE(round % 3, off + DATA_COUNTER_OFFSET);
      }
      expect(rx.openBatch(buf, offsets, lengths, 64, res)).toBe(0);
    }
    expect(rx.authDrops).toBe(6400);
    expect(rx.replayDrops).toBe(0);
    rx.close();
  });

  it('keeps the two key families apart: the family bit picks the keys, the other family refuses', () => {
    const s = secret();
    const tx = new DataSender(n, 'aes-256-gcm', s, { endToEnd: true, rekeyAfterMessages: 16 });
    const e2e = new DataReceiver(n, 'aes-256-gcm', s, { endToEnd: true });
    const conn = new DataReceiver(n, 'aes-256-gcm', s);
    let opened = 0;
    for (let k = 0; k < KEY_PHASES + 3; k++) {
      // through every key phase and past its wrap, with the family bit on every datagram
      const t = new Train(16, () => 64);
      tx.sealBatch(t.buf, t.offsets, t.lengths, t.count);
      for (let i = 0; i < t.count; i++) expect(isEndToEnd(t.buf, t.offsets[i]!)).toBe(true);
      const copy = Buffer.from(t.buf);
      const res = new Uint8Array(16);
      expect(conn.openBatch(copy, t.offsets, t.sealedLengths(), 16, res)).toBe(0); // same secret, other family
      opened += e2e.openBatch(t.buf, t.offsets, t.sealedLengths(), 16, res);
    }
    expect(opened).toBe((KEY_PHASES + 3) * 16);
    expect(tx.rekeys).toBeGreaterThan(KEY_PHASES);
    expect(e2e.authDrops + e2e.replayDrops).toBe(0);
    expect(conn.authDrops).toBe((KEY_PHASES + 3) * 16);
    // and a connection-family datagram is not opened by end-to-end keys
    const plain = new DataSender(n, 'aes-256-gcm', s);
    const t = new Train(4, () => 64);
    plain.sealBatch(t.buf, t.offsets, t.lengths, t.count);
    expect(isEndToEnd(t.buf, t.offsets[0]!)).toBe(false);
    expect(e2e.openBatch(t.buf, t.offsets, t.sealedLengths(), 4, new Uint8Array(4))).toBe(0);
    for (const x of [tx, e2e, conn, plain]) x.close();
  });

  it('seals and opens without allocating per packet', () => {
    const s = secret();
    const tx = new DataSender(n, 'aes-256-gcm', s);
    const rx = new DataReceiver(n, 'aes-256-gcm', s);
    const t = new Train(64, () => 1400);
    const lens = t.sealedLengths();
    const res = new Uint8Array(64);
    const round = () => {
      tx.sealBatch(t.buf, t.offsets, t.lengths, 64);
      if (rx.openBatch(t.buf, t.offsets, lens, 64, res) !== 64) throw new Error('open failed');
    };
    for (let i = 0; i < 200; i++) round();
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < 2000; i++) round(); // 128k packets each way
    const grown = process.memoryUsage().heapUsed - before;
    expect(grown).toBeLessThan(2 * 1024 * 1024); // no GC forced here: < 16 bytes per packet at most
    tx.close();
    rx.close();
  });
});
