import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';

/**
 * setup builds dist/ before the e2e tests, which run the real `weft` CLI from it: the compiled
 * TypeScript and the one-file build background routers run from (`npm run build`). The native
 * addon is built by `scripts/setup.sh` (`npm run build:native`).
 */
export default function setup(): void {
  execFileSync('npm', ['run', '-s', 'build'], { stdio: 'inherit' });
  if (!existsSync('router/tun/native/build/Release/weft_native.node')) {
    console.warn('e2e: native addon not built (run `npm run build:native`); routers will fail to open TUN devices');
  }
}
