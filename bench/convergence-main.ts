/**
 * convergence-main prints the convergence table (bench/convergence.ts) as markdown on stdout,
 * progress on stderr. Run from compiled JS:
 *
 * ```
 * node dist/bench/convergence-main.js [--sizes 10,50,100,200] [--seed 1] [--degree 8] [--window-s 120]
 * ```
 */
import { parseArgs } from 'node:util';
import { renderConvergenceTable, runConvergence } from './convergence.js';

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '10,50,100,200' },
    seed: { type: 'string', default: '1' },
    degree: { type: 'string' },
    'window-s': { type: 'string', default: '120' },
  },
});
const sizes = values.sizes.split(',').map(Number);
const seed = Number(values.seed);
const degree = values.degree === undefined ? undefined : Number(values.degree);
const windowS = Number(values['window-s']);
if (
  sizes.some((n) => !Number.isInteger(n) || n < 2 || n > 2_000) ||
  !Number.isInteger(seed) ||
  (degree !== undefined && (!Number.isInteger(degree) || degree < 1)) ||
  !(windowS > 0)
) {
  console.error('usage: convergence-main [--sizes 10,50,100,200] [--seed N] [--degree N] [--window-s S]');
  process.exit(2);
}

const started = performance.now();
const rows = runConvergence({
  sizes,
  seed,
  ...(degree === undefined ? {} : { degree }),
  steadyWindowMs: windowS * 1000,
  progress: (n) => console.error(`convergence: simulating ${n} routers`),
});
console.log(
  `Topology gossip convergence (simulated: 1 ms ± 0.2 one-way per hop, 0.2 ms per message, anti-entropy every 30 s, seed ${seed}).\n`,
);
console.log(renderConvergenceTable(rows));
console.error(`convergence: done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
