/**
 * aead is the micro-bench of the data-plane AEAD (issue #13): AES-256-GCM against
 * ChaCha20-Poly1305, sealing and opening packets in place, one core.
 *
 *   addon batch   one aeadSealBatch / aeadOpenBatch call per train of `batch` packets (the sleeve path)
 *   addon single  one aeadSeal / aeadOpen call per packet
 *   data-crypto   DataSender.sealBatch / DataReceiver.openBatch (router/crypto): the addon batch plus
 *                 counters, key phase and the replay window, as the datapath will call it
 *   node:crypto   createCipheriv / createDecipheriv per packet (what the issue calls too slow)
 *
 * Payloads are pre-built once, so the figure is the AEAD and its call overhead only. The AAD is a
 * 24-byte header (sleeve header + counter), as on the wire; "bytes" is the payload sealed per
 * packet. Open is in place, so an open run re-seals what it opens and open's rate is derived:
 * 1 / (1/rate(seal + open) − 1/rate(seal)); every packet must authenticate, or the run fails.
 * Each row runs in SLICES slices and reports the best slice's rate (the machine is shared with
 * other work; the best slice is the least disturbed). Every row also reports heap growth (after a
 * forced GC, so a leak and not garbage) and the number of GCs during the timed run: zero
 * allocation per packet means the addon rows stay at 0 GCs while node:crypto's do not.
 *
 * Run: `npm run build && node --expose-gc dist/bench/aead.js [--seconds 1] [--batch 64]`.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { cpus } from 'node:os';
import { PerformanceObserver } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { DataReceiver, DataSender } from '../router/crypto/index.js';
import { loadNative, type NativeAddon, type NativeAeadCipher } from '../router/tun/native.js';

/** AeadBenchRow is one measured combination. */
export interface AeadBenchRow {
  path: 'addon batch' | 'addon single' | 'data-crypto' | 'node:crypto';
  cipher: NativeAeadCipher;
  /** op: 'seal+open' is one packet sealed and opened (both ends' cost); 'open' is derived from it. */
  op: 'seal' | 'open' | 'seal+open';
  /** bytes is the payload per packet (the 24-byte AAD and the 16-byte tag come on top). */
  bytes: number;
  batch: number;
  packets: number;
  seconds: number;
  packetsPerSecond: number;
  /** gbitPerSecond counts payload bytes only. */
  gbitPerSecond: number;
  /** heapGrowthBytes (after a forced GC) and gcCount are over the whole timed run of the row. */
  heapGrowthBytes: number;
  gcCount: number;
}

/** AeadBenchOptions: seconds per row (default 1), packets per batch (64), payload sizes ([1400, 64]). */
export interface AeadBenchOptions {
  seconds?: number;
  batch?: number;
  sizes?: readonly number[];
  ciphers?: readonly NativeAeadCipher[];
}

const AAD = 24;
/** SLICES: each row runs in this many slices and reports the best (the machine is shared). */
const SLICES = 5;
const TAG = 16;
const CIPHERS: readonly NativeAeadCipher[] = ['aes-256-gcm', 'chacha20-poly1305'];

/** runAeadBench measures every path × cipher × op × size and returns the rows in that order. */
export async function runAeadBench(opts: AeadBenchOptions = {}): Promise<AeadBenchRow[]> {
  const native = loadNative();
  const seconds = opts.seconds ?? 1;
  const batch = opts.batch ?? 64;
  const rows: AeadBenchRow[] = [];
  for (const bytes of opts.sizes ?? [1400, 64]) {
    for (const cipher of opts.ciphers ?? CIPHERS) {
      rows.push(...(await addonRows(native, cipher, bytes, batch, seconds, true)));
      rows.push(...(await addonRows(native, cipher, bytes, 1, seconds, false)));
      rows.push(...(await dataCryptoRows(native, cipher, bytes, batch, seconds)));
      rows.push(...(await nodeRows(cipher, bytes, seconds)));
    }
  }
  return rows;
}

/** addonRows seals then opens trains of `batch` packets, timed separately. */
async function addonRows(
  native: NativeAddon,
  cipher: NativeAeadCipher,
  bytes: number,
  batch: number,
  seconds: number,
  batched: boolean,
): Promise<AeadBenchRow[]> {
  const key = native.aeadKey(cipher, randomBytes(32));
  const slot = AAD + bytes + TAG;
  const buf = Buffer.alloc(slot * batch);
  const template = randomBytes(AAD + bytes);
  const offsets = new Int32Array(batch);
  const plainLens = new Int32Array(batch);
  const sealedLens = new Int32Array(batch);
  const counters = new Float64Array(batch);
  const results = new Uint8Array(batch);
  for (let i = 0; i < batch; i++) {
    offsets[i] = i * slot;
    plainLens[i] = AAD + bytes;
    sealedLens[i] = AAD + bytes + TAG;
    template.copy(buf, i * slot);
  }
  let ctr = 0;
  // Seal: counters advance as on the wire (written at byte 16 of the AAD).
  const seal = (): void => {
    if (batched) {
      for (let i = 0; i < batch; i++) counters[i] = ctr++;
      native.aeadSealBatch(key, buf, offsets, plainLens, counters, batch, AAD, 16, 3);
    } else {
      native.aeadSeal(key, buf, 0, AAD + bytes, AAD, ctr++);
    }
  };
  // Open is in place, so each round re-seals what it opens: open alone is then measured as
  // (seal + open) − seal per packet.
  const open = (): void => {
    if (batched) {
      for (let i = 0; i < batch; i++) counters[i] = ctr++;
      native.aeadSealBatch(key, buf, offsets, plainLens, counters, batch, AAD, 16, 3);
      const ok = native.aeadOpenBatch(key, buf, offsets, sealedLens, counters, batch, AAD, 16, 3, results);
      if (ok !== batch) throw new Error(`aead bench: only ${ok} of ${batch} packets opened`);
    } else {
      const c = ctr++;
      native.aeadSeal(key, buf, 0, AAD + bytes, AAD, c);
      if (native.aeadOpen(key, buf, 0, AAD + bytes + TAG, AAD, c) < 0) throw new Error('aead bench: open failed');
    }
  };
  const per = batched ? batch : 1;
  const path = batched ? 'addon batch' : 'addon single';
  const s = await timed(seal, per, seconds);
  const so = await timed(open, per, seconds);
  native.aeadFree(key);
  // open alone = (seal + open) − seal, per packet.
  return [
    row(path, cipher, 'seal', bytes, batch, s, s.rate),
    row(path, cipher, 'open', bytes, batch, so, openRate(s, so)),
    row(path, cipher, 'seal+open', bytes, batch, so, so.rate),
  ];
}

/** dataCryptoRows measures the router/crypto wrappers over the addon (open = (seal + open) − seal). */
async function dataCryptoRows(
  native: NativeAddon,
  cipher: NativeAeadCipher,
  bytes: number,
  batch: number,
  seconds: number,
): Promise<AeadBenchRow[]> {
  const secret = randomBytes(32);
  const tx = new DataSender(native, cipher, secret);
  const rx = new DataReceiver(native, cipher, secret);
  const slot = AAD + bytes + TAG;
  const buf = Buffer.alloc(slot * batch);
  const offsets = Int32Array.from({ length: batch }, (_, i) => i * slot);
  const plainLens = new Int32Array(batch).fill(AAD + bytes);
  const sealedLens = new Int32Array(batch).fill(AAD + bytes + TAG);
  const results = new Uint8Array(batch);
  const seal = (): void => {
    tx.sealBatch(buf, offsets, plainLens, batch);
  };
  const both = (): void => {
    tx.sealBatch(buf, offsets, plainLens, batch);
    const ok = rx.openBatch(buf, offsets, sealedLens, batch, results);
    if (ok !== batch) throw new Error(`aead bench: only ${ok} of ${batch} datagrams opened`);
  };
  const s = await timed(seal, batch, seconds);
  const so = await timed(both, batch, seconds);
  tx.close();
  rx.close();
  return [
    row('data-crypto', cipher, 'seal', bytes, batch, s, s.rate),
    row('data-crypto', cipher, 'open', bytes, batch, so, openRate(s, so)),
    row('data-crypto', cipher, 'seal+open', bytes, batch, so, so.rate),
  ];
}

/** nodeRows is the per-packet node:crypto baseline: one Cipheriv/Decipheriv object per packet. */
async function nodeRows(cipher: NativeAeadCipher, bytes: number, seconds: number): Promise<AeadBenchRow[]> {
  const key = randomBytes(32);
  const iv = Buffer.alloc(12);
  const aad = randomBytes(AAD);
  const plain = randomBytes(bytes);
  let ctr = 0;
  let sealed = Buffer.alloc(0);
  let tag = Buffer.alloc(0);
  const seal = (): void => {
    iv.writeUInt32BE(ctr++ >>> 0, 8);
    const c =
      cipher === 'aes-256-gcm'
        ? createCipheriv(cipher, key, iv, { authTagLength: TAG })
        : createCipheriv(cipher, key, iv, { authTagLength: TAG });
    c.setAAD(aad);
    sealed = c.update(plain);
    c.final();
    tag = c.getAuthTag();
  };
  const open = (): void => {
    const d =
      cipher === 'aes-256-gcm'
        ? createDecipheriv(cipher, key, iv, { authTagLength: TAG })
        : createDecipheriv(cipher, key, iv, { authTagLength: TAG });
    d.setAAD(aad);
    d.setAuthTag(tag);
    d.update(sealed);
    d.final();
  };
  const s = await timed(seal, 1, seconds);
  const o = await timed(open, 1, seconds);
  return [
    row('node:crypto', cipher, 'seal', bytes, 1, s, s.rate),
    row('node:crypto', cipher, 'open', bytes, 1, o, o.rate),
  ];
}

/** Timed is one measurement: the best slice's rate, and heap growth and GCs over all slices. */
interface Timed {
  packets: number;
  seconds: number;
  /** rate is packets/s of the best slice (the machine is shared: the best slice is the least disturbed). */
  rate: number;
  heap: number;
  gcs: number;
}

/** timed runs `fn` (which handles `per` packets) for about `seconds` in SLICES slices, after a warm-up. */
async function timed(fn: () => void, per: number, seconds: number): Promise<Timed> {
  const warm = performance.now() + Math.min(200, seconds * 200);
  while (performance.now() < warm) fn();
  globalThis.gc?.();
  let gcs = 0;
  const obs = new PerformanceObserver((list) => {
    gcs += list.getEntries().length;
  });
  obs.observe({ entryTypes: ['gc'] });
  const heap0 = process.memoryUsage().heapUsed;
  let calls = 0;
  let elapsed = 0;
  let rate = 0;
  for (let s = 0; s < SLICES; s++) {
    const t0 = performance.now();
    const end = t0 + (seconds * 1000) / SLICES;
    let n = 0;
    // Check the clock every 64 calls only, so the clock is not what is measured.
    while (performance.now() < end) {
      for (let i = 0; i < 64; i++) fn();
      n += 64;
    }
    const dt = (performance.now() - t0) / 1000;
    calls += n;
    elapsed += dt;
    rate = Math.max(rate, (n * per) / dt);
  }
  // GC entries reach the observer asynchronously: let them arrive before counting.
  await new Promise((r) => setTimeout(r, 20));
  obs.disconnect();
  globalThis.gc?.();
  const heap = process.memoryUsage().heapUsed - heap0;
  return { packets: calls * per, seconds: elapsed, rate, heap, gcs };
}

/** openRate derives open's rate from a seal run and a seal-then-open run: 1 / (1/both − 1/seal). */
function openRate(seal: Timed, both: Timed): number {
  return 1 / Math.max(1 / both.rate - 1 / seal.rate, 1e-12);
}

function row(
  path: AeadBenchRow['path'],
  cipher: NativeAeadCipher,
  op: AeadBenchRow['op'],
  bytes: number,
  batch: number,
  t: Timed,
  pps: number,
): AeadBenchRow {
  const { packets, seconds, heap, gcs } = t;
  return {
    path,
    cipher,
    op,
    bytes,
    batch,
    packets,
    seconds,
    packetsPerSecond: pps,
    gbitPerSecond: (pps * bytes * 8) / 1e9,
    heapGrowthBytes: heap,
    gcCount: gcs,
  };
}

/** aeadBenchTable renders rows as a markdown table (packets/s in thousands). */
export function aeadBenchTable(rows: readonly AeadBenchRow[]): string {
  const out = [
    '| path | cipher | op | bytes | batch | kpackets/s | Gbit/s | heap growth | GCs |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    const heap = `${(r.heapGrowthBytes / 1024).toFixed(0)} KiB`;
    out.push(
      `| ${r.path} | ${r.cipher} | ${r.op} | ${r.bytes} | ${r.batch} | ${(r.packetsPerSecond / 1e3).toFixed(0)} | ` +
        `${r.gbitPerSecond.toFixed(2)} | ${heap} | ${r.gcCount} |`,
    );
  }
  return out.join('\n');
}

/** aeadBenchMachine is the one-line description of where the rows were measured. */
export function aeadBenchMachine(): string {
  const cpu = cpus()[0]?.model ?? 'unknown cpu';
  return `${cpu}, ${cpus().length} cores, Node ${process.versions.node}, OpenSSL ${process.versions.openssl}`;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: { seconds: { type: 'string', default: '1' }, batch: { type: 'string', default: '64' } },
  });
  if (globalThis.gc === undefined) console.error('aead bench: run with --expose-gc for heap and GC figures');
  const rows = await runAeadBench({ seconds: Number(values.seconds), batch: Number(values.batch) });
  console.log(`AEAD micro-bench (${aeadBenchMachine()})\n`);
  console.log(aeadBenchTable(rows));
}
