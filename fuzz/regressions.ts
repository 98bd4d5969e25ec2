/**
 * Regression cases: inputs a fuzzer found (or that pin a fixed bug), kept in
 * fuzz/regressions/<target>.json as `[{ "hex": "...", "note": "..." }]` and replayed by
 * fuzz.test.ts and before every `npm run fuzz` run. A case must pass: it is a bug that stays fixed.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** RegressionCase is one kept input. */
export interface RegressionCase {
  readonly hex: string;
  readonly note: string;
}

/** regressionDir finds fuzz/regressions from the source tree or from dist/fuzz. */
export function regressionDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const d of [path.join(here, 'regressions'), path.join(here, '..', '..', 'fuzz', 'regressions')]) {
    if (existsSync(d)) return d;
  }
  return path.join(here, 'regressions');
}

/** loadRegressions returns the kept inputs of one target (none when it has no file). */
export function loadRegressions(target: string): Uint8Array[] {
  const file = path.join(regressionDir(), `${target}.json`);
  if (!existsSync(file)) return [];
  const cases = JSON.parse(readFileSync(file, 'utf8')) as RegressionCase[];
  return cases.map((c) => Uint8Array.from(Buffer.from(c.hex, 'hex')));
}
