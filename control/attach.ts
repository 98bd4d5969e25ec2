import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { InputError, WeftError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { Cidr } from '../common/types.js';
import { cidrContains, formatCidr, formatIPv4, parseCidr, prefixMask } from '../common/types.js';
import { CONTAINER_CHECK_MS, CONTAINER_GRACE_MS, EXPOSE_OWNER, GSO_MAX_BYTES, type Router } from '../router/index.js';

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

/** vethNames lists the veth interfaces of this namespace, or undefined when `ip` fails. */
async function vethNames(): Promise<Set<string> | undefined> {
  try {
    const links = JSON.parse((await run('ip', ['-j', 'link', 'show', 'type', 'veth'])).stdout) as { ifname?: string }[];
    return new Set(links.map((l) => l.ifname ?? ''));
  } catch {
    return undefined;
  }
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
 * (`ip netns`), a process id, or a running Docker container (by name or id, through `docker
 * inspect`, when a Docker engine answers).
 */
export async function resolveTarget(target: string): Promise<Target> {
  if (/^[1-9][0-9]{0,9}$/.test(target)) return pidTarget(target);
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(target)) {
    throw new InputError(`invalid target "${target}": want a network namespace name, a pid or a Docker container`);
  }
  if (target.length <= 64 && existsSync(`/run/netns/${target}`)) {
    return { ref: target, ipArgs: (args) => ['ip', ['-n', target, ...args]] };
  }
  const pid = await dockerPid(target);
  if (pid !== undefined) return pidTarget(pid);
  throw new WeftError(
    'EWEFT_NOT_FOUND',
    `no network namespace "${target}" (see \`ip netns list\`), no such pid, and no running Docker container of that name`,
  );
}

function pidTarget(pid: string): Target {
  if (!existsSync(`/proc/${pid}/ns/net`)) throw new WeftError('EWEFT_NOT_FOUND', `no process ${pid}`);
  return { ref: pid, ipArgs: (args) => ['nsenter', ['-t', pid, '-n', 'ip', ...args]] };
}

/** dockerPid asks a Docker engine for a running container's pid; undefined without docker, engine or container. */
async function dockerPid(target: string): Promise<string | undefined> {
  try {
    const { stdout } = await run('docker', ['inspect', '--format', '{{.State.Running}} {{.State.Pid}}', target], {
      timeout: 5_000,
    });
    const m = /^true ([1-9][0-9]*)\s*$/.exec(stdout);
    return m?.[1];
  } catch {
    return undefined;
  }
}

/** isContainerIfname says whether a host interface name is one of ours (see {@link hostIfname}). */
export function isContainerIfname(name: string): boolean {
  return /^vw[0-9a-f]{8}$/.test(name);
}

/** hostIfname derives the host side's interface name from the target: `vw` + 8 hex digits. */
export function hostIfname(target: string): string {
  return `vw${createHash('sha256').update(target).digest('hex').slice(0, 8)}`;
}

/** sh runs a command (with `input` on its stdin) and returns its stdout; failures become EWEFT_SYSTEM with the first line of stderr. */
function sh(cmd: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err === null) {
        resolve(stdout);
        return;
      }
      const why = (stderr || err.message).trim().split('\n')[0];
      reject(new WeftError('EWEFT_SYSTEM', `${cmd} ${args.join(' ')} failed: ${why}`));
    });
    if (input !== undefined) child.stdin?.end(`${input}\n`);
  });
}

/** containerMac derives a stable, locally administered unicast MAC for a container's interface. */
export function containerMac(target: string): string {
  const h = createHash('sha256').update(`mac:${target}`).digest();
  h[0] = ((h[0] as number) & 0xfe) | 0x02;
  return [...h.subarray(0, 6)].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/**
 * vethAddArgs are the `ip` arguments that make a container's veth pair: `ifname` on the host,
 * `ethwe` (with `mac`) in the namespace `ref`, both with the overlay MTU and the TUN device's
 * gso_max_size. The latter matters: a container's TCP sizes its super-packets by its own
 * interface's limit (65536 by default), and the host's kernel, forwarding one to the TUN device,
 * segments in software every super-packet at or above the TUN's limit (GSO_MAX_BYTES, see the
 * kernel's gso_features_check), so the router would read the container's traffic one MTU at a
 * time. Packets the router writes to the TUN are within that limit and reach the container whole.
 */
export function vethAddArgs(ifname: string, mtu: number, mac: string, ref: string): string[] {
  const m = String(mtu);
  const gso = String(GSO_MAX_BYTES);
  return [
    'link',
    'add',
    ifname,
    'mtu',
    m,
    'gso_max_size',
    gso,
    'type',
    'veth',
    'peer',
    'name',
    CONTAINER_IFNAME,
    'address',
    mac,
    'mtu',
    m,
    'gso_max_size',
    gso,
    'netns',
    ref,
  ];
}

/**
 * Attacher plugs containers into the overlay: a veth pair with `ethwe` inside the container,
 * the container's address (from IPAM, or given) with the overlay prefix (so the whole range is
 * on-link), proxy ARP and a /32 route on the host side, the overlay MTU, and the address claimed
 * by the router so every peer routes it here. Nothing is left half-done: a failed attach removes
 * what it made and frees the address. Containers that go away without detach are noticed and
 * their addresses freed after a grace period (they may come back meanwhile, e.g. a restart).
 */
export class Attacher {
  private readonly attached = new Map<string, AttachedContainer>();
  /** busy holds targets with an attach or detach in progress. */
  private readonly busy = new Set<string>();
  /** goneSince records when an attached container's interface was first seen missing. */
  private readonly goneSince = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private monitor: ChildProcess | undefined;
  private checking = false;
  /** hooks tell the DNS about containers coming and going (names, resolver configuration). */
  hooks: { attached(a: AttachedContainer): Promise<void>; detached(a: AttachedContainer): Promise<void> } | undefined;

  constructor(
    private readonly router: Router,
    private readonly range: Cidr,
    private readonly log: Logger,
    /** onChange persists the attached list. */
    private readonly onChange: () => void = () => {},
    /** graceMs: how long a vanished container keeps its address. */
    private readonly graceMs = CONTAINER_GRACE_MS,
  ) {}

  /** list returns the attached containers. */
  list(): AttachedContainer[] {
    return [...this.attached.values()].map((a) => ({ ...a, cidrs: [...a.cidrs] }));
  }

  /** start looks for vanished containers every CONTAINER_CHECK_MS. */
  start(): void {
    this.timer ??= setInterval(() => void this.reap(), CONTAINER_CHECK_MS);
    this.timer.unref();
    this.watchLinks();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    this.monitor?.stdin?.end();
    this.monitor = undefined;
  }

  /**
   * watchLinks follows `ip monitor link`: a deleted interface (a container's namespace went away
   * with our veth) is looked at at once, not at the next poll, so its DNS names go within
   * moments. Polling stays as the backstop should the monitor die.
   */
  private watchLinks(): void {
    if (this.monitor !== undefined) return;
    try {
      // The shell ends the monitor when its stdin closes, i.e. when this router exits, even by kill -9.
      const child = spawn('sh', ['-c', 'ip -o monitor link & m=$!; read _; kill $m'], {
        stdio: ['pipe', 'pipe', 'ignore'],
      });
      child.on('error', () => undefined);
      child.on('exit', () => {
        if (this.monitor === child) this.monitor = undefined;
      });
      let rest = '';
      child.stdout?.on('data', (d: Buffer) => {
        const lines = (rest + d.toString('utf8')).split('\n');
        rest = lines.pop() ?? '';
        if (lines.some((l) => l.startsWith('Deleted') && /\bvw[0-9a-f]{8}\b/.test(l))) void this.reap();
      });
      child.unref();
      for (const stream of [child.stdin, child.stdout]) (stream as { unref?: () => void } | null)?.unref?.();
      this.monitor = child;
    } catch {
      // no monitor: polling alone
    }
  }

  /**
   * attach plugs `target` in with the given addresses, or one from IPAM when none is given.
   * Idempotent: attaching an attached container again returns it (when no or the same addresses
   * are given).
   */
  async attach(target: string, cidrs: readonly Cidr[], name?: string): Promise<AttachedContainer> {
    if (name !== undefined && !/^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(name)) {
      throw new InputError(`invalid --name "${name}": a DNS label (letters, digits, -)`);
    }
    for (const c of cidrs) this.checkAddress(c);
    const wanted = cidrs.map(formatCidr).sort();
    const existing = this.attached.get(target);
    if (existing !== undefined) {
      if (wanted.length === 0 || existing.cidrs.join() === wanted.join()) return { ...existing };
      throw new WeftError(
        'EWEFT_CONFLICT',
        `${target} is already attached with ${existing.cidrs.join(', ')}; detach it first`,
      );
    }
    if (this.busy.has(target)) throw new WeftError('EWEFT_CONFLICT', `${target} is being attached or detached`);
    this.busy.add(target);
    try {
      return await this.plug(target, cidrs, name);
    } finally {
      this.busy.delete(target);
    }
  }

  private async plug(target: string, given: readonly Cidr[], name: string | undefined): Promise<AttachedContainer> {
    const t = await resolveTarget(target);
    const ifname = hostIfname(target);
    let made = false;
    try {
      let cidrs = given;
      if (cidrs.length === 0) {
        const addr = await this.router.allocate(target);
        cidrs = [{ addr, prefix: this.range.prefix }];
      } else {
        this.router.reserve(target, cidrs);
      }
      const mac = containerMac(target);
      // The peer end is made inside the container under its final name: one `ip` for the pair,
      // one `ip -batch` inside, sysctls written directly, one `ip -batch` on the host.
      await sh('ip', vethAddArgs(ifname, this.router.mtu, mac, t.ref));
      made = true;
      const [cmd, argv] = t.ipArgs(['-batch', '-']);
      await sh(
        cmd,
        argv,
        [
          ...cidrs.map((c) => `addr add ${formatCidr(c)} dev ${CONTAINER_IFNAME}`),
          `link set ${CONTAINER_IFNAME} up`,
          'link set lo up',
        ].join('\n'),
      );
      // Host side: proxy ARP answers the container for every overlay address, /32 routes bring
      // replies back, and forwarding moves packets between the veth and the router's device.
      // proxy_delay 0: answer at once (the default delays proxy replies up to 0.8 s).
      await Promise.all([
        writeFile(`/proc/sys/net/ipv4/conf/${ifname}/proxy_arp`, '1'),
        writeFile(`/proc/sys/net/ipv4/neigh/${ifname}/proxy_delay`, '0'),
        writeFile('/proc/sys/net/ipv4/ip_forward', '1'),
      ]).catch((err: Error) => {
        throw new WeftError('EWEFT_SYSTEM', `cannot set up forwarding for ${ifname}: ${err.message}`);
      });
      await sh('ip', ['-batch', '-'], [`link set ${ifname} up`, ...this.routeLines(ifname, cidrs)].join('\n'));
      this.router.claim(target, cidrs);
      const a: AttachedContainer = {
        target,
        ifname,
        cidrs: cidrs.map(formatCidr).sort(),
        ...(name ? { name } : {}),
        mac,
      };
      this.attached.set(target, a);
      this.onChange();
      await this.notify('attached', a);
      this.log.info('container attached', { container: target, device: ifname, cidr: a.cidrs.join(' ') });
      return { ...a };
    } catch (err) {
      if (made) await run('ip', ['link', 'del', ifname]).catch(() => undefined);
      this.router.release(target);
      throw err;
    }
  }

  /**
   * routeLines are the host's /32 routes to a container. With the host exposed on the overlay, its
   * overlay address is their preferred source, so the host reaches containers from an address
   * they can answer (they have no route to the underlay).
   */
  private routeLines(ifname: string, cidrs: readonly Cidr[]): string[] {
    const src = this.router.exposedCidrs().find((c) => cidrContains(this.range, c.addr));
    const via = src === undefined ? '' : ` src ${formatIPv4(src.addr)}`;
    return cidrs.map((c) => `route replace ${formatIPv4(c.addr)}/32 dev ${ifname}${via}`);
  }

  /** refreshRoutes rewrites every container's host routes (after expose/hide, and after a restart). */
  async refreshRoutes(): Promise<void> {
    const lines = this.list().flatMap((a) =>
      this.routeLines(
        a.ifname,
        a.cidrs.map((c) => parseCidr(c)),
      ),
    );
    if (lines.length === 0) return;
    await sh('ip', ['-force', '-batch', '-'], lines.join('\n')).catch((err: Error) =>
      this.log.warn('cannot refresh container routes', { err: err.message }),
    );
  }

  /** detach unplugs a container: removes the veth pair and frees its addresses. */
  async detach(target: string): Promise<AttachedContainer> {
    const a = this.attached.get(target);
    if (a === undefined) throw new WeftError('EWEFT_NOT_FOUND', `${target} is not attached`);
    if (this.busy.has(target)) throw new WeftError('EWEFT_CONFLICT', `${target} is being attached or detached`);
    await run('ip', ['link', 'del', a.ifname]).catch(() => undefined);
    this.forget(a);
    this.log.info('container detached', { container: target, device: a.ifname });
    return a;
  }

  /** detachAll unplugs every container (for `weft reset`). */
  async detachAll(): Promise<number> {
    let n = 0;
    for (const a of this.list()) {
      await this.detach(a.target).catch(() => undefined);
      n++;
    }
    return n;
  }

  private forget(a: AttachedContainer): void {
    this.router.release(a.target);
    this.attached.delete(a.target);
    this.goneSince.delete(a.target);
    this.onChange();
    void this.notify('detached', a);
  }

  /** notify runs a hook; its failure is logged, never fails the attach or detach. */
  private async notify(what: 'attached' | 'detached', a: AttachedContainer): Promise<void> {
    try {
      await this.hooks?.[what](a);
    } catch (err) {
      this.log.warn(`dns: container ${what}, but`, { container: a.target, err: (err as Error).message });
    }
  }

  /**
   * restore re-claims containers attached before a restart whose veth still exists; the others
   * went away while the router was down, so their addresses are freed. Addresses held in IPAM by
   * no attached container and not by the host (an attach cut short by a crash) are freed too.
   */
  async restore(saved: readonly AttachedContainer[]): Promise<void> {
    const present = await vethNames();
    for (const a of saved) {
      if (present !== undefined && !present.has(a.ifname)) {
        this.log.warn('attached container went away while the router was down; address freed', {
          container: a.target,
          cidr: a.cidrs.join(' '),
        });
        this.router.release(a.target);
        continue;
      }
      try {
        this.router.claim(
          a.target,
          a.cidrs.map((c) => parseCidr(c)),
        );
        this.attached.set(a.target, { ...a });
        await this.capGso(a);
        await this.notify('attached', a);
      } catch (err) {
        this.log.error('cannot restore attached container', { container: a.target, err: (err as Error).message });
      }
    }
    await this.refreshRoutes();
    for (const owner of this.router.ipam.owners()) {
      if (owner !== EXPOSE_OWNER && !this.attached.has(owner)) {
        this.log.warn('freeing addresses held by no attached container', { owner });
        this.router.ipam.free(owner);
      }
    }
    this.onChange();
  }

  /**
   * capGso gives a restored container's veth pair the gso_max_size attach gives new ones (see
   * {@link vethAddArgs}): pairs made by an older version have the kernel's 65536. Best effort.
   */
  private async capGso(a: AttachedContainer): Promise<void> {
    const gso = String(GSO_MAX_BYTES);
    try {
      const t = await resolveTarget(a.target);
      const [cmd, argv] = t.ipArgs(['link', 'set', CONTAINER_IFNAME, 'gso_max_size', gso]);
      await Promise.all([sh('ip', ['link', 'set', a.ifname, 'gso_max_size', gso]), sh(cmd, argv)]);
    } catch (err) {
      this.log.warn('cannot set gso_max_size of a restored container', {
        container: a.target,
        err: (err as Error).message,
      });
    }
  }

  /** reap frees the addresses of containers whose interface has been gone for the grace period. */
  private async reap(): Promise<void> {
    if (this.checking || this.attached.size === 0) return;
    this.checking = true;
    try {
      const present = await vethNames();
      if (present === undefined) return;
      const now = Date.now();
      for (const a of this.list()) {
        if (this.busy.has(a.target)) continue;
        if (present.has(a.ifname)) {
          this.goneSince.delete(a.target);
          continue;
        }
        const since = this.goneSince.get(a.target);
        if (since === undefined) {
          // Gone: its names go now (the DNS must not answer for it), its address after the grace period.
          this.goneSince.set(a.target, now);
          await this.notify('detached', a);
          this.log.info('container gone; its names removed, its address kept for the grace period', {
            container: a.target,
            graceMs: this.graceMs,
          });
        }
        if (now - (since ?? now) >= this.graceMs && this.attached.get(a.target) !== undefined) {
          this.forget(a);
          this.log.info('container gone; address freed', { container: a.target, cidr: a.cidrs.join(' ') });
        }
      }
    } finally {
      this.checking = false;
    }
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
