/**
 * The fuzz loop: one target, a seeded input stream, a budget in inputs and in time.
 *
 *   corpus (seeds) ──┬─► mutate (stacked mutations, splices)   ~75 %
 *                    ├─► generate (fast-check, structure-aware) ~15 % when the target has one
 *                    └─► random bytes                          ~10 %
 *                            │
 *                            ▼
 *                       target.run(input) ──► label never seen? ──► joins the corpus (outcome guidance)
 *                            │
 *                            ├─ PropertyViolation / other exception ──► finding (kept with its input)
 *                            ├─ slower than HANG_MS ──► finding (a hang is a bug)
 *                            └─ heap above HEAP_LIMIT_BYTES after a GC ──► finding (unbounded allocation)
 */
import { performance } from 'node:perf_hooks';
import { mulberry32 } from '../common/random.js';
import { int, Mutator, pick, randomBytes, smallLen } from './mutator.js';
import { type FuzzTarget, PropertyViolation } from './target.js';

/** HANG_MS: one input taking longer than this is reported (the slowest parser here needs well under 50 ms). */
export const HANG_MS = 2_000;
/** HEAP_LIMIT_BYTES: heap in use above this after a GC is reported as unbounded allocation. */
export const HEAP_LIMIT_BYTES = 1 << 30;
/** CORPUS_MAX bounds the corpus of one target (seeds plus inputs that showed a new outcome). */
export const CORPUS_MAX = 4096;
/** FINDINGS_MAX bounds the distinct findings kept per target. */
const FINDINGS_MAX = 20;
/** HEAP_CHECK_EVERY: the heap is sampled every this many inputs. */
const HEAP_CHECK_EVERY = 25_000;

/** Finding is one input that broke a property, crashed, hung or grew the heap. */
export interface Finding {
  readonly kind: 'crash' | 'violation' | 'hang' | 'heap';
  readonly message: string;
  readonly inputHex: string;
}

/** FuzzOptions bound a run. */
export interface FuzzOptions {
  inputs: number;
  budgetMs: number;
  seed: number;
  /** onProgress is called about every 2 s of run time. */
  onProgress?: (s: FuzzStats) => void;
}

/** FuzzStats is what one run of one target did. */
export interface FuzzStats {
  target: string;
  inputs: number;
  ms: number;
  /** crashes counts inputs that raised an exception the parser must not raise, violations broken properties. */
  crashes: number;
  violations: number;
  hangs: number;
  /** outcomes counts inputs per outcome label (the distinct ways the parser answered). */
  outcomes: Map<string, number>;
  corpus: number;
  slowestMs: number;
  peakHeapBytes: number;
  findings: Finding[];
}

/** hex renders bytes as lower-case hex (findings and regression files). */
export function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}

/** fuzz runs `target` until `opts.inputs` inputs or `opts.budgetMs`, whichever comes first. setup/teardown are the caller's. */
export async function fuzz(target: FuzzTarget, opts: FuzzOptions): Promise<FuzzStats> {
  const rand = mulberry32(opts.seed);
  const mutator = new Mutator(rand, target.maxLen);
  const corpus = target.seeds().map((s) => Uint8Array.from(s));
  if (corpus.length === 0) corpus.push(new Uint8Array(0));
  const stats: FuzzStats = {
    target: target.name,
    inputs: 0,
    ms: 0,
    crashes: 0,
    violations: 0,
    hangs: 0,
    outcomes: new Map(),
    corpus: corpus.length,
    slowestMs: 0,
    peakHeapBytes: 0,
    findings: [],
  };
  const seen = new Set<string>();
  const t0 = performance.now();
  let nextProgress = t0 + 2_000;
  // Seeds first, unmutated: each must come through (a seed that crashes is a finding too).
  let seedIndex = 0;
  const gen = target.generate?.bind(target);
  while (stats.inputs < opts.inputs) {
    let input: Uint8Array;
    if (seedIndex < corpus.length) input = corpus[seedIndex++] as Uint8Array;
    else {
      const r = rand();
      if (r < 0.1) input = randomBytes(rand, smallLen(rand, target.maxLen));
      else if (gen !== undefined && r < 0.25) input = gen(rand);
      else input = mutator.mutate(pick(rand, corpus), corpus[int(rand, corpus.length)]);
    }
    const start = performance.now();
    let outcome: string;
    try {
      const r = target.run(input);
      outcome = typeof r === 'string' ? r : await withTimeout(r, HANG_MS);
    } catch (err) {
      outcome = record(stats, err, input);
    }
    const took = performance.now() - start;
    stats.inputs++;
    if (took > stats.slowestMs) stats.slowestMs = took;
    if (took > HANG_MS && outcome !== 'hang') {
      stats.hangs++;
      keep(stats, { kind: 'hang', message: `one input took ${took.toFixed(0)} ms`, inputHex: hex(input) });
    }
    stats.outcomes.set(outcome, (stats.outcomes.get(outcome) ?? 0) + 1);
    if (!seen.has(outcome)) {
      seen.add(outcome);
      if (corpus.length < CORPUS_MAX) corpus.push(Uint8Array.from(input));
    }
    if (stats.inputs % HEAP_CHECK_EVERY === 0) {
      checkHeap(stats);
      const now = performance.now();
      if (now - t0 >= opts.budgetMs) break;
      if (opts.onProgress !== undefined && now >= nextProgress) {
        nextProgress = now + 2_000;
        stats.ms = now - t0;
        stats.corpus = corpus.length;
        opts.onProgress(stats);
      }
    } else if ((stats.inputs & 1023) === 0 && performance.now() - t0 >= opts.budgetMs) {
      break;
    }
  }
  checkHeap(stats);
  stats.ms = performance.now() - t0;
  stats.corpus = corpus.length;
  return stats;
}

/** replay runs fixed inputs (regression cases) once each and returns the findings. */
export async function replay(target: FuzzTarget, inputs: readonly Uint8Array[]): Promise<Finding[]> {
  const stats: FuzzStats = {
    target: target.name,
    inputs: 0,
    ms: 0,
    crashes: 0,
    violations: 0,
    hangs: 0,
    outcomes: new Map(),
    corpus: 0,
    slowestMs: 0,
    peakHeapBytes: 0,
    findings: [],
  };
  for (const input of inputs) {
    try {
      const r = target.run(input);
      if (typeof r !== 'string') await withTimeout(r, HANG_MS);
    } catch (err) {
      record(stats, err, input);
    }
  }
  return stats.findings;
}

function record(stats: FuzzStats, err: unknown, input: Uint8Array): string {
  if (err instanceof HangError) {
    stats.hangs++;
    keep(stats, { kind: 'hang', message: err.message, inputHex: hex(input) });
    return 'hang';
  }
  const violation = err instanceof PropertyViolation;
  if (violation) stats.violations++;
  else stats.crashes++;
  const message =
    err instanceof Error
      ? `${err.name}: ${err.message}\n${(err.stack ?? '').split('\n').slice(1, 4).join('\n')}`
      : String(err);
  keep(stats, { kind: violation ? 'violation' : 'crash', message, inputHex: hex(input) });
  return violation ? 'violation' : 'crash';
}

function keep(stats: FuzzStats, f: Finding): void {
  const head = f.message.split('\n')[0];
  if (stats.findings.length >= FINDINGS_MAX || stats.findings.some((g) => g.message.split('\n')[0] === head)) return;
  stats.findings.push(f);
}

function checkHeap(stats: FuzzStats): void {
  const used = process.memoryUsage().heapUsed;
  if (used > stats.peakHeapBytes) stats.peakHeapBytes = used;
  if (used > HEAP_LIMIT_BYTES) {
    (globalThis as { gc?: () => void }).gc?.();
    const after = process.memoryUsage().heapUsed;
    if (after > HEAP_LIMIT_BYTES) {
      keep(stats, { kind: 'heap', message: `heap in use ${after} bytes after a GC`, inputHex: '' });
    }
  }
}

class HangError extends Error {}

function withTimeout(p: Promise<string>, ms: number): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new HangError(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}
