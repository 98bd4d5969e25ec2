/**
 * convergence-main prints the convergence table (bench/convergence.ts) as markdown on stdout,
 * progress on stderr. Run from compiled JS:
 *
 * ```
 * node dist/bench/convergence-main.js [--sizes 10,50,100,200] [--seed 1] [--degree 16] [--window-s 60] [--trials N]
 * ```
 */
import { parseArgs } from 'node:util';
import { renderConvergenceTable, runConvergence } from './convergence.js';

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '10,50,100,200' },
    seed: { type: 'string', default: '1' },
    degree: { type: 'string' },
    'window-s': { type: 'string', default: '60' },
    trials: { type: 'string' },
  },
});
const sizes = values.sizes.split(',').map(Number);
const seed = Number(values.seed);
const degree = values.degree === undefined ? undefined : Number(values.degree);
const windowS = Number(values['window-s']);
const trials = values.trials === undefined ? undefined : Number(values.trials);
if (
  sizes.some((n) => !Number.isInteger(n) || n < 2 || n > 2_000) ||
  !Number.isInteger(seed) ||
  (degree !== undefined && (!Number.isInteger(degree) || degree < 1)) ||
  !(windowS > 0) ||
  (trials !== undefined && (!Number.isInteger(trials) || trials < 1))
) {
  console.error(
    'usage: convergence-main [--sizes 10,50,100,200,500] [--seed N] [--degree N] [--window-s S] [--trials N]',
  );
  process.exit(2);
}

const started = performance.now();
const rows = runConvergence({
  sizes,
  seed,
  ...(degree === undefined ? {} : { degree }),
  steadyWindowMs: windowS * 1000,
  ...(trials === undefined ? {} : { trials }),
  progress: (line) => console.error(`convergence: ${line}`),
});
console.log(
  `Weft mesh core convergence (N real MeshCores on simulated links: 1 ms ± 0.2 one-way per hop, 0.2 ms per message, anti-entropy every 30 s, seed ${seed}).\n`,
);
console.log(renderConvergenceTable(rows));
console.error(`convergence: done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
