// The one-file build of the CLI and the router: dist/weft.mjs, from tsc's output in dist/.
// A router started from it loads one module instead of ~200, which is ~15 MB less resident
// memory per host (bench/idle.ts); the CLI starts faster too. The native addon stays a file
// (router/tun/native.ts finds it from the package root), and Node's own modules stay imports.
//
// V8 keeps a module's whole source text on the heap for as long as the process runs, as a
// two-byte string when a single character of it is not ASCII: so the bundle is written ASCII
// only (non-ASCII escaped), without comments and whitespace (1.0 MB one-byte instead of 2.9 MB
// two-byte), but not mangled or compressed, so stack traces keep every function's name.
import { defineConfig } from 'rolldown';

export default defineConfig({
  input: 'dist/control/cli.js',
  platform: 'node',
  output: {
    file: 'dist/weft.mjs',
    format: 'esm',
    codeSplitting: false,
    charset: 'ascii',
    comments: false,
    minify: { compress: false, mangle: false, codegen: { removeWhitespace: true } },
  },
});
