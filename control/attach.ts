import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { InputError, WeftError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { Cidr } from '../common/types.js';
import { cidrContains, formatCidr, formatIPv4, parseCidr, prefixMask } from '../common/types.js';
import type { Router } from '../router/index.js';

const run = promisify(execFile);

/** CONTAINER_IFNAME is the overlay interface inside an attached container. */
export const CONTAINER_IFNAME = 'ethwe';

/** AttachedContainer is one container plugged into the overlay by this router. */
export interface AttachedContainer {
  /** target is how the user named it: a network namespace name or a pid. */
  target: string;
  /** ifname is the host side of the veth pair. */
  ifname: string;
  /** cidrs are the container's addresses with the overlay prefix, e.g. 10.32.1.5/12. */
  cidrs: string[];
  /** name is the DNS name given with --name (registered with the DNS, #5). */
  name?: string;
  /** mac is the MAC address of the container's interface. */
  mac?: string;
}

/** Target says where a container's network namespace is and how to run `ip` inside it. */
interface Target {
  /** ref is what `ip link ... netns REF` takes: a namespace name or a pid. */
  ref: string;
  /** ip runs `ip ARGS` inside the container's namespace. */
  ipArgs: (args: string[]) => [string, string[]];
}

/**
 * resolveTarget turns a user's TARGET into a namespace reference: a named network namespace
 * (`ip netns`) or a process id. A Docker container name comes with Docker support (#4).
 */
export function resolveTarget(target: string): Target {
  if (/^[1-9][0-9]{0,9}$/.test(target)) {
    if (!existsSync(`/proc/${target}/ns/net`)) throw new WeftError('EWEFT_NOT_FOUND', `no process ${target}`);
    return { ref: target, ipArgs: (args) => ['nsenter', ['-t', target, '-n', 'ip', ...args]] };
  }
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(target)) {
    throw new InputError(`invalid target "${target}": want a network namespace name or a pid`);
  }
  if (!existsSync(`/run/netns/${target}`)) {
    throw new WeftError('EWEFT_NOT_FOUND', `no network namespace "${target}" (see \`ip netns list\`) and no such pid`);
  }
  return { ref: target, ipArgs: (args) => ['ip', ['-n', target, ...args]] };
}

/** hostIfname derives the host side's interface name from the target: `vw` + 8 hex digits. */
export function hostIfname(target: string): string {
  return `vw${createHash('sha256').update(target).digest('hex').slice(0, 8)}`;
}

async function sh(cmd: string, args: string[]): Promise<string> {
  try {
    return (await run(cmd, args)).stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new WeftError(
      'EWEFT_SYSTEM',
      `${cmd} ${args.join(' ')} failed: ${(e.stderr ?? e.message).trim().split('\n')[0]}`,
    );
  }
}

/**
 * Attacher plugs containers into the overlay: a veth pair with `ethwe` inside the container,
 * the container's address with the overlay prefix (so the whole range is on-link), proxy ARP
 * and a /32 route on the host side, the overlay MTU, and the address claimed by the router so
 * every peer routes it here. Nothing is left half-done: a failed attach removes what it made.
 */
export class Attacher {
  private readonly attached = new Map<string, AttachedContainer>();

  constructor(
    private readonly router: Router,
    private readonly range: Cidr,
    private readonly log: Logger,
    /** onChange persists the attached list. */
    private readonly onChange: () => void = () => {},
  ) {}

  /** list returns the attached containers. */
  list(): AttachedContainer[] {
    return [...this.attached.values()].map((a) => ({ ...a, cidrs: [...a.cidrs] }));
  }

  /**
   * attach plugs `target` in with the given addresses (IPAM allocation arrives with #4: until
   * then at least one CIDR is required). Idempotent for the same addresses.
   */
  async attach(target: string, cidrs: readonly Cidr[], name?: string): Promise<AttachedContainer> {
    if (name !== undefined && !/^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(name)) {
      throw new InputError(`invalid --name "${name}": a DNS label (letters, digits, -)`);
    }
    if (cidrs.length === 0) {
      throw new InputError(
        'give the container an address, e.g. `weft attach 10.32.1.5/12 TARGET` (automatic allocation comes with IPAM)',
      );
    }
    for (const c of cidrs) this.checkAddress(c);
    const t = resolveTarget(target);
    const wanted = cidrs.map(formatCidr).sort();
    const existing = this.attached.get(target);
    if (existing !== undefined) {
      if (existing.cidrs.join() === wanted.join()) return { ...existing };
      throw new WeftError(
        'EWEFT_CONFLICT',
        `${target} is already attached with ${existing.cidrs.join(', ')}; detach it first`,
      );
    }
    for (const c of cidrs) this.router.checkFree(c.addr);
    const ifname = hostIfname(target);
    const peerTmp = `vp${ifname.slice(2)}`;
    const mtu = String(this.router.mtu);
    await sh('ip', [
      'link',
      'add',
      ifname,
      'mtu',
      mtu,
      'type',
      'veth',
      'peer',
      'name',
      peerTmp,
      'mtu',
      mtu,
      'netns',
      t.ref,
    ]);
    try {
      const inside = async (args: string[]) => {
        const [cmd, argv] = t.ipArgs(args);
        return sh(cmd, argv);
      };
      await inside(['link', 'set', peerTmp, 'name', CONTAINER_IFNAME]);
      for (const c of cidrs) await inside(['addr', 'add', formatCidr(c), 'dev', CONTAINER_IFNAME]);
      await inside(['link', 'set', CONTAINER_IFNAME, 'up']);
      await inside(['link', 'set', 'lo', 'up']);
      const mac = JSON.parse(await inside(['-j', 'link', 'show', CONTAINER_IFNAME]))[0]?.address as string | undefined;
      // Host side: proxy ARP answers the container for every overlay address, /32 routes bring
      // replies back, and forwarding moves packets between the veth and the router's device.
      // proxy_delay 0: answer at once (the default delays proxy replies up to 0.8 s).
      await sh('sysctl', [
        '-qw',
        `net.ipv4.conf.${ifname}.proxy_arp=1`,
        `net.ipv4.neigh.${ifname}.proxy_delay=0`,
        'net.ipv4.ip_forward=1',
      ]);
      await sh('ip', ['link', 'set', ifname, 'up']);
      for (const c of cidrs) await sh('ip', ['route', 'replace', `${formatIPv4(c.addr)}/32`, 'dev', ifname]);
      this.router.claim(target, cidrs);
      const a: AttachedContainer = {
        target,
        ifname,
        cidrs: wanted,
        ...(name ? { name } : {}),
        ...(mac ? { mac } : {}),
      };
      this.attached.set(target, a);
      this.onChange();
      this.log.info('container attached', { container: target, device: ifname, cidr: wanted.join(' ') });
      return { ...a };
    } catch (err) {
      await run('ip', ['link', 'del', ifname]).catch(() => undefined);
      this.router.release(target);
      throw err;
    }
  }

  /** detach unplugs a container: removes the veth pair and stops serving its addresses. */
  async detach(target: string): Promise<AttachedContainer> {
    const a = this.attached.get(target);
    if (a === undefined) throw new WeftError('EWEFT_NOT_FOUND', `${target} is not attached`);
    await run('ip', ['link', 'del', a.ifname]).catch(() => undefined);
    this.router.release(target);
    this.attached.delete(target);
    this.onChange();
    this.log.info('container detached', { container: target, device: a.ifname });
    return a;
  }

  /**
   * restore re-claims containers attached before a restart whose veth still exists, and forgets
   * the others (the container went away meanwhile).
   */
  async restore(saved: readonly AttachedContainer[]): Promise<void> {
    for (const a of saved) {
      try {
        await sh('ip', ['link', 'show', a.ifname]);
        const cidrs = a.cidrs.map((c) => parseCidr(c));
        this.router.claim(a.target, cidrs);
        this.attached.set(a.target, { ...a });
      } catch (err) {
        this.log.warn('attached container gone', { container: a.target, err: (err as Error).message });
      }
    }
    this.onChange();
  }

  /** checkAddress validates one container address against the overlay range. */
  private checkAddress(c: Cidr): void {
    const text = formatCidr(c);
    if (!cidrContains(this.range, c.addr))
      throw new InputError(`${text} is outside the overlay range ${formatCidr(this.range)}`);
    if (c.prefix < this.range.prefix)
      throw new InputError(`${text} is wider than the overlay range ${formatCidr(this.range)}`);
    const m = prefixMask(c.prefix);
    const host = (c.addr & ~m) >>> 0;
    if (c.prefix < 31 && (host === 0 || host === ~m >>> 0)) {
      throw new InputError(`${text} is the network or broadcast address of its subnet`);
    }
  }
}
