import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fuzz, replay } from './engine.js';
import { loadRegressions } from './regressions.js';
import { TARGETS } from './targets/index.js';

/** CI_INPUTS is the short pass per target (the full run, `npm run fuzz`, does 1,000,000 each). */
const CI_INPUTS = 20_000;
/** CI_BUDGET_MS stops a target early on a slow machine rather than fail the suite on time. */
const CI_BUDGET_MS = 15_000;

for (const target of TARGETS) {
  describe(`fuzz target ${target.name}`, () => {
    beforeAll(async () => {
      await target.setup?.();
    });
    afterAll(async () => {
      await target.teardown?.();
    });

    it('replays every regression case without a finding', async () => {
      const findings = await replay(target, loadRegressions(target.name));
      expect(findings).toEqual([]);
    });

    it(`survives ${CI_INPUTS} inputs: seeds, mutations, structured and random bytes`, { timeout: 60_000 }, async () => {
      const stats = await fuzz(target, { inputs: CI_INPUTS, budgetMs: CI_BUDGET_MS, seed: 20_000 });
      expect(stats.findings).toEqual([]);
      expect(stats.crashes + stats.violations + stats.hangs).toBe(0);
      // Seeds must all run, and the parser must answer in more than one way (the fuzzer got past the first check).
      expect(stats.inputs).toBeGreaterThan(Math.min(CI_INPUTS, 1_000));
      expect(stats.outcomes.size).toBeGreaterThan(1);
    });
  });
}
