import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { UNDERLAY_MTU_DEFAULT } from './constants.js';

const run = promisify(execFile);

/**
 * underlayMtu returns the largest MTU among this namespace's up, non-loopback interfaces other
 * than `exclude` (our own TUN device): the MTU packets to other hosts can use. Falls back to
 * UNDERLAY_MTU_DEFAULT when `ip` is missing or no interface qualifies.
 */
export async function underlayMtu(exclude: string): Promise<number> {
  try {
    const { stdout } = await run('ip', ['-j', 'link', 'show', 'up']);
    const links = JSON.parse(stdout) as { ifname?: string; mtu?: number; flags?: string[] }[];
    let best = 0;
    for (const l of links) {
      if (l.ifname === exclude || l.flags?.includes('LOOPBACK')) continue;
      if (typeof l.mtu === 'number' && l.mtu > best) best = l.mtu;
    }
    return best > 0 ? best : UNDERLAY_MTU_DEFAULT;
  } catch {
    return UNDERLAY_MTU_DEFAULT;
  }
}
