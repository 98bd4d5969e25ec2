/**
 * IPAM benchmark: the {@link Allocator} alone, in one process, no gossip and no disk. One peer owns
 * the default range 10.32.0.0/12 (1,048,576 addresses) alone and:
 *
 * 1. allocates N addresses one after another (default 100,000), each to a new owner key;
 * 2. frees every other one of them (N/2 frees);
 * 3. allocates N/2 again: each takes the lowest free address, so every hole left by step 2 is
 *    refilled in order;
 * 4. serialises the resulting state (toJSON + JSON.stringify: what each persisted write costs);
 * 5. reads used() (what a status request costs);
 * 6. answers 1,000 space requests from new peers, each for 64 addresses (donate(): a 64-address
 *    block while we have at least 128 free, smaller ones after that).
 *
 * Owner keys and peer names are built before the clock starts, so each figure measures only the
 * allocator call it names. Each step checks its result (the addresses it got, the counts after),
 * so a fast but wrong allocator fails the bench instead of reporting a number.
 */
import { type PeerName, parseCidr } from '../common/types.js';
import { Allocator, type Block } from '../router/ipam/allocator.js';
import { Ring } from '../router/ipam/ring.js';

/** IpamBenchOptions configure {@link runIpamBench}. */
export interface IpamBenchOptions {
  /** allocations is N, the number of sequential allocations (default 100,000). */
  readonly allocations?: number;
}

/** IpamBenchResult is one run's figures; times are wall-clock milliseconds. */
export interface IpamBenchResult {
  /** range is the cluster range, owned by the one peer. */
  readonly range: string;
  readonly owned: number;
  readonly allocations: number;
  readonly allocateMs: number;
  readonly allocationsPerSecond: number;
  /** frees is N/2: every other owner of step 1 released. */
  readonly frees: number;
  readonly freeMs: number;
  readonly freesPerSecond: number;
  /** reallocations is N/2 new owners refilling the holes, lowest first. */
  readonly reallocations: number;
  readonly reallocateMs: number;
  readonly reallocationsPerSecond: number;
  /** persistBytes is the size of the serialised state holding N allocations. */
  readonly persistBytes: number;
  /** persistMs is the median time of toJSON + JSON.stringify of that state (one persisted write, without the disk). */
  readonly persistMs: number;
  /** usedMicros is the mean time of one used() call on that state. */
  readonly usedMicros: number;
  /** donations is how many of the {@link IpamBenchResult.donationRequests} got a block. */
  readonly donations: number;
  readonly donationRequests: number;
  readonly donateMs: number;
  /** donationsPerSecond is donate() calls (space requests answered) per second. */
  readonly donationsPerSecond: number;
}

const SELF = '02:00:00:00:00:01' as PeerName;
const RANGE = '10.32.0.0/12';
const DONATION_REQUESTERS = 1_000;
const DONATION_SIZE = 64;
const PERSIST_REPEATS = 5;
const USED_REPEATS = 100;

/** requester returns the i-th requesting peer's name (i < 65,536), distinct from SELF. */
function requester(i: number): PeerName {
  const hex = (i + 2).toString(16).padStart(4, '0');
  return `02:00:00:01:${hex.slice(0, 2)}:${hex.slice(2)}` as PeerName;
}

function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(`ipam bench: ${what}`);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function newAllocator(): Allocator {
  return new Allocator(Ring.seeded(parseCidr(RANGE), SELF, [SELF]));
}

/**
 * runIpamBench runs the steps above once and returns the figures. The work is synchronous; it is
 * async like the other benches so bench/run.ts awaits them alike.
 */
export async function runIpamBench(opts: IpamBenchOptions = {}): Promise<IpamBenchResult> {
  const n = opts.allocations ?? 100_000;
  check(Number.isInteger(n) && n >= 2 && n <= 1_000_000, `allocations must be 2 … 1,000,000, got ${n}`);
  const keys = Array.from({ length: n }, (_, i) => `container-${i}`);
  const rekeys = Array.from({ length: Math.floor(n / 2) }, (_, i) => `again-${i}`);
  const requesters = Array.from({ length: DONATION_REQUESTERS }, (_, i) => requester(i));

  // Warm up (JIT) on a throwaway allocator.
  const warm = newAllocator();
  for (let i = 0; i < 2_000; i++) warm.allocate(`w${i}`);
  for (let i = 0; i < 2_000; i += 2) warm.free(`w${i}`);
  for (let i = 0; i < 1_000; i++) warm.allocate(`v${i}`);
  JSON.stringify(warm.toJSON());
  warm.used();
  for (let i = 0; i < 10; i++) warm.donate(requester(60_000 + i), DONATION_SIZE);

  const al = newAllocator();
  const base = al.ring.base;
  const owned = al.owned();
  check(n <= owned - 2, `${n} allocations do not fit in ${RANGE}`);

  // 1. N sequential allocations: the i-th gets base + 1 + i (the network address is skipped).
  let t0 = performance.now();
  for (const k of keys) al.allocate(k);
  const allocateMs = performance.now() - t0;
  check(al.lookup(keys[n - 1]!)[0] === base + n, 'sequential allocation did not take the lowest free addresses');

  // 2. free every other owner: base + 1, base + 3, …
  const freed = keys.filter((_, i) => i % 2 === 0);
  t0 = performance.now();
  for (const k of freed) al.free(k);
  const freeMs = performance.now() - t0;
  check(al.used() === n - freed.length, 'frees did not release');

  // 3. re-allocate as many: each takes the lowest hole left by step 2.
  const reallocations = Math.min(rekeys.length, freed.length);
  t0 = performance.now();
  for (let i = 0; i < reallocations; i++) al.allocate(rekeys[i]!);
  const reallocateMs = performance.now() - t0;
  check(al.lookup(rekeys[0]!)[0] === base + 1, 're-allocation did not reuse the lowest freed address');
  check(al.used() === n - freed.length + reallocations, 're-allocation count');

  // 4. one persisted write (without the disk).
  let persistBytes = 0;
  const persistTimes: number[] = [];
  for (let r = 0; r < PERSIST_REPEATS; r++) {
    t0 = performance.now();
    persistBytes = JSON.stringify(al.toJSON()).length;
    persistTimes.push(performance.now() - t0);
  }

  // 5. status.
  let used = 0;
  t0 = performance.now();
  for (let r = 0; r < USED_REPEATS; r++) used = al.used();
  const usedMicros = ((performance.now() - t0) * 1000) / USED_REPEATS;
  check(used === n - freed.length + reallocations, 'used() count');

  // 6. answer space requests.
  const blocks: (Block | undefined)[] = [];
  t0 = performance.now();
  for (const p of requesters) blocks.push(al.donate(p, DONATION_SIZE));
  const donateMs = performance.now() - t0;
  const given = blocks.filter((b) => b !== undefined);
  // Each request gets 64 addresses while we have 128 free; with N close to the range, fewer.
  check(given.length > 0, 'no donation succeeded');
  check(al.owned() === owned - given.reduce((sum, b) => sum + b.size, 0), 'donations did not move the space');
  const donations = given.length;

  const perSecond = (count: number, ms: number) => (count * 1000) / Math.max(ms, 1e-3);
  return {
    range: RANGE,
    owned,
    allocations: n,
    allocateMs,
    allocationsPerSecond: perSecond(n, allocateMs),
    frees: freed.length,
    freeMs,
    freesPerSecond: perSecond(freed.length, freeMs),
    reallocations,
    reallocateMs,
    reallocationsPerSecond: perSecond(reallocations, reallocateMs),
    persistBytes,
    persistMs: median(persistTimes),
    usedMicros,
    donations,
    donationRequests: requesters.length,
    donateMs,
    donationsPerSecond: perSecond(requesters.length, donateMs),
  };
}

function rate(perSecond: number): string {
  if (perSecond >= 1e6) return `${(perSecond / 1e6).toFixed(2)} M/s`;
  return perSecond >= 1e3 ? `${(perSecond / 1e3).toFixed(1)} k/s` : `${perSecond.toFixed(0)} /s`;
}

/** renderIpamTable renders a result as a markdown table, one row per step. */
export function renderIpamTable(r: IpamBenchResult): string {
  return [
    `One peer owning ${r.range} alone (${r.owned.toLocaleString('en-US')} addresses); allocator calls only, no gossip, no disk.`,
    '',
    '| step | calls | total | per call | rate |',
    '|---|---:|---:|---:|---:|',
    `| allocate, sequential | ${r.allocations} | ${r.allocateMs.toFixed(1)} ms | ${((r.allocateMs * 1000) / r.allocations).toFixed(2)} µs | ${rate(r.allocationsPerSecond)} |`,
    `| free every other | ${r.frees} | ${r.freeMs.toFixed(1)} ms | ${((r.freeMs * 1000) / r.frees).toFixed(2)} µs | ${rate(r.freesPerSecond)} |`,
    `| re-allocate into the holes | ${r.reallocations} | ${r.reallocateMs.toFixed(1)} ms | ${((r.reallocateMs * 1000) / r.reallocations).toFixed(2)} µs | ${rate(r.reallocationsPerSecond)} |`,
    `| toJSON + JSON.stringify of that state (${(r.persistBytes / 1024 / 1024).toFixed(1)} MiB) | ${PERSIST_REPEATS} | — | ${r.persistMs.toFixed(1)} ms (median) | — |`,
    `| used() (status) | ${USED_REPEATS} | ${((r.usedMicros * USED_REPEATS) / 1000).toFixed(2)} ms | ${r.usedMicros.toFixed(1)} µs | — |`,
    `| donate up to ${DONATION_SIZE} addresses to a new peer (${r.donations} given) | ${r.donationRequests} | ${r.donateMs.toFixed(1)} ms | ${((r.donateMs * 1000) / r.donationRequests).toFixed(1)} µs | ${rate(r.donationsPerSecond)} |`,
  ].join('\n');
}
