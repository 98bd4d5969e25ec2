import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';

/**
 * setup compiles the TypeScript before the e2e tests, which run the real `weft` CLI from dist/.
 * The native addon is built by `scripts/setup.sh` (`npm run build:native`).
 */
export default function setup(): void {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
  if (!existsSync('router/tun/native/build/Release/weft_native.node')) {
    console.warn('e2e: native addon not built (run `npm run build:native`); routers will fail to open TUN devices');
  }
}
