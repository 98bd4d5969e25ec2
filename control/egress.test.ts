import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { parseCidr } from '../common/types.js';
import { EGRESS_TABLE, egressRuleset, removeRuleset } from './egress.js';

/** nftChecks says whether `nft -c` (parse and check against the kernel, apply nothing) works here. */
function nftChecks(): boolean {
  try {
    execFileSync('nft', ['-c', '-f', '-'], { input: 'table ip weftcheck {}\n', stdio: ['pipe', 'ignore', 'ignore'] });
    return true;
  } catch {
    return false;
  }
}

describe('egress ruleset', () => {
  const range = parseCidr('10.32.0.0/12');

  it('masquerades only what leaves the overlay range, not through the router device, in its own table', () => {
    const script = egressRuleset(range, 'weft');
    expect(script).toContain(`table ip ${EGRESS_TABLE} {`);
    expect(script).toContain('type nat hook postrouting priority srcnat; policy accept;');
    expect(script).toContain('ip saddr 10.32.0.0/12 ip daddr != 10.32.0.0/12 oifname != "weft" masquerade');
    // Replaced whole: declared, deleted, defined again, in one transaction.
    expect(script.indexOf('delete table ip weft')).toBeGreaterThan(script.indexOf('table ip weft {}'));
    expect(script.lastIndexOf('table ip weft {')).toBeGreaterThan(script.indexOf('delete table ip weft'));
    expect(removeRuleset()).toBe('table ip weft {}\ndelete table ip weft\n');
  });

  it('refuses a device name that could change the script', () => {
    for (const bad of ['we"ft', 'a b', '', 'x'.repeat(16), 'weft;flush']) {
      expect(() => egressRuleset(range, bad)).toThrow(/unsafe device name/);
    }
  });

  it.skipIf(!nftChecks())('is accepted by nft (checked, not applied)', () => {
    for (const script of [egressRuleset(range, 'weft'), removeRuleset()]) {
      expect(() =>
        execFileSync('nft', ['-c', '-f', '-'], { input: script, stdio: ['pipe', 'ignore', 'pipe'] }),
      ).not.toThrow();
    }
  });
});
