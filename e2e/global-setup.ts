import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';

/** BUILD_INPUTS are the folders and files `npm run build` compiles from (tsconfig.build.json, control/ui). */
const BUILD_INPUTS = ['common', 'router', 'dns', 'control', 'lab', 'cni', 'k8s', 'bench', 'e2e', 'fuzz'];
const BUILD_FILES = [
  'package.json',
  'package-lock.json',
  'tsconfig.json',
  'tsconfig.build.json',
  'rolldown.config.mjs',
];
const BUNDLE = 'dist/weft.mjs';

/** newestInput is the latest mtime (ms) of the build's inputs: files and folders (a deletion touches its folder). */
function newestInput(): number {
  let newest = 0;
  const walk = (dir: string): void => {
    newest = Math.max(newest, statSync(dir).mtimeMs);
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.name === 'node_modules' || e.name === 'build') continue;
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else newest = Math.max(newest, statSync(p).mtimeMs);
    }
  };
  for (const d of BUILD_INPUTS) if (existsSync(d)) walk(d);
  for (const f of BUILD_FILES) if (existsSync(f)) newest = Math.max(newest, statSync(f).mtimeMs);
  return newest;
}

/**
 * setup builds dist/ before the e2e tests, which run the real `weft` CLI from it: the compiled
 * TypeScript and the one-file build background routers run from (`npm run build`), unless dist/
 * is newer than every input (scripts/setup.sh, which CI runs first, has just built it). The
 * native addon is built by `scripts/setup.sh` (`npm run build:native`).
 */
export default function setup(): void {
  if (existsSync(BUNDLE) && statSync(BUNDLE).mtimeMs > newestInput()) {
    console.log(`e2e: ${BUNDLE} is newer than its sources: not rebuilt`);
  } else {
    execFileSync('npm', ['run', '-s', 'build'], { stdio: 'inherit' });
  }
  if (!existsSync('router/tun/native/build/Release/weft_native.node')) {
    console.warn('e2e: native addon not built (run `npm run build:native`); routers will fail to open TUN devices');
  }
}
