/**
 * Egress: containers (pods) reach addresses outside the overlay through their host, masqueraded
 * behind the host's own address — only traffic leaving the overlay range, so container to
 * container is never NATed (the receiver sees the sender's overlay address), as Weave did for its
 * Kubernetes pods.
 *
 * The router owns one nftables table, `ip weft`, and nothing else of the firewall:
 *
 * ```
 *   table ip weft {
 *     chain postrouting {
 *       type nat hook postrouting priority srcnat; policy accept;
 *       ip saddr 10.32.0.0/12 ip daddr != 10.32.0.0/12 oifname != "weft" masquerade
 *     }
 *   }
 * ```
 *
 * `install` replaces the whole table in one nft transaction (declare, delete, define: idempotent,
 * and a table left by a crashed router is reconciled to what this one wants); `remove` deletes it
 * on stop and reset. Other tables (Docker's, the host's) are never read or written.
 */
import { execFile } from 'node:child_process';
import { WeftError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { type Cidr, formatCidr } from '../common/types.js';

/** EGRESS_TABLE is the nftables table (family ip) the router owns for egress masquerading. */
export const EGRESS_TABLE = 'weft';

/** EgressStatus is what `weft status` shows of egress (absent when masquerading is off). */
export interface EgressStatus {
  /** masquerade is the overlay range whose traffic leaving the overlay is masqueraded. */
  readonly masquerade: string;
  /** table is the nftables table holding the rule. */
  readonly table: string;
  /** installed: the table is in place (false after a failure; the error is logged). */
  readonly installed: boolean;
}

/**
 * egressRuleset is the nft script that makes the table exactly what `range` and `device` ask
 * for, whatever was there before. The device name is checked again here (RangeError) since it is
 * written into the script.
 */
export function egressRuleset(range: Cidr, device: string): string {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(device)) throw new RangeError(`unsafe device name "${device}"`);
  const net = formatCidr(range);
  return [
    `table ip ${EGRESS_TABLE} {}`,
    `delete table ip ${EGRESS_TABLE}`,
    `table ip ${EGRESS_TABLE} {`,
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    `    ip saddr ${net} ip daddr != ${net} oifname != "${device}" masquerade`,
    '  }',
    '}',
    '',
  ].join('\n');
}

/** removeRuleset deletes the table if it exists (declaring it first makes the delete never fail). */
export function removeRuleset(): string {
  return `table ip ${EGRESS_TABLE} {}\ndelete table ip ${EGRESS_TABLE}\n`;
}

/** nft runs `nft -f -` with `script`; failures become EWEFT_SYSTEM with nft's first error line. */
function nft(script: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile('nft', ['-f', '-'], { timeout: 10_000 }, (err, _stdout, stderr) => {
      if (err === null) {
        resolve();
        return;
      }
      const why = (stderr || err.message).trim().split('\n')[0];
      reject(new WeftError('EWEFT_SYSTEM', `nft failed: ${why}`));
    });
    child.stdin?.end(script);
  });
}

/** Egress installs and removes the masquerade table for one overlay range and TUN device. */
export class Egress {
  private installed = false;

  constructor(
    private readonly range: Cidr,
    private readonly device: string,
    private readonly log: Logger,
  ) {}

  /** install puts the table in place (replacing any earlier one). Throws EWEFT_SYSTEM when nft fails. */
  async install(): Promise<void> {
    await nft(egressRuleset(this.range, this.device));
    this.installed = true;
    this.log.info('egress masquerading on', { range: formatCidr(this.range), table: `ip ${EGRESS_TABLE}` });
  }

  /** remove deletes the table; a failure is logged, never thrown (the router is going anyway). */
  async remove(): Promise<void> {
    try {
      await nft(removeRuleset());
      this.installed = false;
    } catch (err) {
      this.log.warn('cannot remove the egress table', { err: (err as Error).message });
    }
  }

  status(): EgressStatus {
    return { masquerade: formatCidr(this.range), table: `ip ${EGRESS_TABLE}`, installed: this.installed };
  }
}
