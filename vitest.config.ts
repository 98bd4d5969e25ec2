import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // The JSON report gives .ci/run its totals line.
    reporters: ['default', ['json', { outputFile: '.vitest-report.json' }]],
    projects: [
      {
        test: {
          name: 'unit',
          include: ['{common,router,dns,control,cni,k8s,bench,fuzz}/**/*.test.ts'],
          environment: 'node',
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['e2e/**/*.e2e.ts'],
          globalSetup: ['e2e/global-setup.ts'],
          environment: 'node',
          // e2e tests build network namespaces and run real routers: one file at a time.
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
