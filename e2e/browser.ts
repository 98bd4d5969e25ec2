/**
 * browser drives Debian's Chromium (/usr/bin/chromium, headless) with playwright-core for the
 * tests of the web page `GET /ui`. The browser runs inside a host's network namespace (through a
 * wrapper script that `ip netns exec`s it), so it reaches that host's router on 127.0.0.1 as an
 * operator on the host would, and nothing is exposed outside the lab.
 */
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { type Browser, chromium } from 'playwright-core';
import type { Netns } from '../lab/netns.js';

/** CHROMIUM is the browser the tests drive (env WEFT_CHROMIUM to use another). */
export const CHROMIUM = process.env.WEFT_CHROMIUM ?? '/usr/bin/chromium';

/** chromiumMissing says why the browser tests cannot run here, or undefined when they can. */
export function chromiumMissing(): string | undefined {
  if (existsSync(CHROMIUM)) return undefined;
  return `${CHROMIUM} not found: install Debian's chromium (scripts/setup.sh does)`;
}

/**
 * launchBrowserIn starts headless Chromium inside `ns`; `dir` holds the wrapper script. Close it
 * (browser.close()) before the namespace goes.
 */
export function launchBrowserIn(ns: Netns, dir: string): Promise<Browser> {
  const wrapper = path.join(dir, 'chromium-in-netns');
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns.name} ${CHROMIUM} "$@"\n`, { mode: 0o755 });
  return chromium.launch({
    executablePath: wrapper,
    headless: true,
    // Root in a namespace: no sandbox (chromium refuses one as root); a small /dev/shm is fine.
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
    timeout: 60_000,
  });
}
