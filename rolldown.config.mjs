// The one-file build of the CLI and the router: dist/weft.mjs, from tsc's output in dist/.
// A router started from it loads one module instead of ~200, which is ~15 MB less resident
// memory per host (bench/idle.ts); the CLI starts faster too. The native addon stays a file
// (router/tun/native.ts finds it from the package root), and Node's own modules stay imports.
import { defineConfig } from 'rolldown';

export default defineConfig({
  input: 'dist/control/cli.js',
  platform: 'node',
  output: { file: 'dist/weft.mjs', format: 'esm', codeSplitting: false },
});
