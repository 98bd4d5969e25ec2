/**
 * attach plugs containers into the overlay and keeps them plugged: {@link Attacher} (the attach
 * journal, the veth pair, addresses and routes, restore after a restart, freeing the addresses of
 * containers that went away) and the small pieces it is built from: resolving a target (a network
 * namespace name, a pid, a namespace path from the CNI plugin, or an engine's container), the host
 * interface name and MAC derived from it, and the `ip` arguments of the veth pair.
 *
 * Over 400 lines because an attach is one transaction across crashes: the journal states, the
 * kernel steps, the rollback of each and what {@link Attacher.restore} does with a half-done one
 * have to be read together to see that nothing is left behind, and they share the Attacher's maps
 * of attached, pending and busy targets.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { errorMessage, InputError, WeftError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { Cidr, IPv4 } from '../common/types.js';
import { cidrContains, formatCidr, formatIPv4, parseCidr, prefixMask } from '../common/types.js';
import { CONTAINER_CHECK_MS, CONTAINER_GRACE_MS, EXPOSE_OWNER, GSO_MAX_BYTES, type Router } from '../router/index.js';
import { StateSaveError } from './state.js';

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
  /** name is the first DNS name given with --name (registered with the DNS, #5). */
  name?: string;
  /** names are all its DNS names (`attach --name` on an attached container adds one); absent with at most one. */
  names?: string[];
  /** mac is the MAC address of the container's interface. */
  mac?: string;
  /**
   * netns is the path of the container's network namespace when it was attached by path (the CNI
   * plugin's CNI_NETNS, see {@link AttachAt}); `target` is then only the owner key of the record.
   */
  netns?: string;
  /** containerIfname is the interface's name inside the container when it is not `ethwe` (CNI_IFNAME). */
  containerIfname?: string;
  /**
   * peerIfname is the container end's name in this namespace when the pair was made for an engine
   * that moves it into the container and configures it itself (Docker's network plugin, see
   * {@link AttachAt.peer}); the engine may rename it.
   */
  peerIfname?: string;
  /** endpoint is the engine's endpoint id of a record made by its network plugin (Docker's libnetwork). */
  endpoint?: string;
  /**
   * state is the attach journal (absent means attached): `pending` is written (with fsync) before
   * any kernel object is made and `attached` only once everything is in place, before the caller
   * is answered. See {@link Attacher.restore} for what a restart does with each.
   */
  state?: 'pending' | 'attached';
}

/** copyOf returns a copy of a record that shares no arrays with it. */
function copyOf(a: AttachedContainer): AttachedContainer {
  return { ...a, cidrs: [...a.cidrs], ...(a.names === undefined ? {} : { names: [...a.names] }) };
}

/** saveErrorIn finds a {@link StateSaveError} in an error or its chain of causes. */
function saveErrorIn(err: unknown): StateSaveError | undefined {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (e instanceof StateSaveError) return e;
  }
  return undefined;
}

/** namesOf returns every DNS name of a container record. */
function namesOf(a: AttachedContainer): string[] {
  return a.names ?? (a.name === undefined ? [] : [a.name]);
}

/** withNames sets a record's names: `name` is the first, `names` all of them when there are several. */
function withNames(a: AttachedContainer, names: readonly string[]): AttachedContainer {
  const { name: _n, names: _ns, ...rest } = a;
  return {
    ...rest,
    ...(names.length > 0 ? { name: names[0] } : {}),
    ...(names.length > 1 ? { names: [...names] } : {}),
  };
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

/**
 * removeLink deletes a host interface (and with a veth its peer inside the container). Resolves
 * true when it is gone (deleted, or there was none), false when it is still there.
 */
async function removeLink(ifname: string): Promise<boolean> {
  try {
    await run('ip', ['link', 'del', ifname]);
    return true;
  } catch (err) {
    const stderr = String((err as { stderr?: unknown }).stderr ?? '');
    return /Cannot find device|does not exist/i.test(stderr);
  }
}

/** linkExists says whether this namespace has an interface of that name. */
async function linkExists(ifname: string): Promise<boolean> {
  try {
    await run('ip', ['link', 'show', 'dev', ifname]);
    return true;
  } catch {
    return false;
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
 * AttachAt places an attach by network namespace path instead of by TARGET (the CNI plugin, #16):
 * the namespace is entered by path, the interface inside gets the name given, and the record's
 * target is only the key that owns the address (e.g. `CONTAINERID:IFNAME`).
 */
export interface AttachAt {
  /** netns is the namespace's path, e.g. /run/netns/cni-1234 or /proc/PID/ns/net. */
  netns: string;
  /** ifname is the interface's name inside the namespace (Linux rules: 1-15 bytes, no `/`, `:` or space). */
  ifname: string;
  /**
   * defaultRoute adds a default route inside via the host's overlay address (the host is exposed
   * first when it has none, as Weave exposed its bridge for pods), see {@link Attacher.gateway}.
   */
  defaultRoute?: boolean;
  /**
   * peer makes both ends of the pair in this namespace, the container's end named `peer` (with the
   * MAC and MTU), and configures nothing inside: the engine moves it into `netns` and gives it its
   * address itself (Docker's libnetwork after a network plugin's Join). `ifname` is then only the
   * record's note of the name the engine gives it.
   */
  peer?: string;
  /** endpoint is recorded with the attach (the engine's endpoint id, see {@link AttachedContainer.endpoint}). */
  endpoint?: string;
}

/** IFNAME is what Linux takes as an interface name (and CNI as CNI_IFNAME). */
const IFNAME = /^(?!\.{1,2}$)[^\s/:]{1,15}$/;
/** OWNER_KEY is what a record attached by path may be keyed by (a CNI container id, `:` and the ifname). */
const OWNER_KEY = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,255}$/;

/** pathTarget enters a network namespace by its path (nsenter), for {@link AttachAt}. */
function pathTarget(netns: string): Target {
  return { ref: netns, ipArgs: (args) => ['nsenter', [`--net=${netns}`, 'ip', ...args]] };
}

/** checkAttachAt validates an attach by path: the owner key, the namespace's path and the interface name. */
function checkAttachAt(target: string, at: AttachAt): void {
  if (!OWNER_KEY.test(target)) throw new InputError(`invalid owner key "${target}" for an attach by namespace path`);
  if (!IFNAME.test(at.ifname)) throw new InputError(`invalid interface name "${at.ifname}"`);
  if (at.peer !== undefined) {
    if (!IFNAME.test(at.peer)) throw new InputError(`invalid interface name "${at.peer}"`);
    return; // the engine's namespace need not be visible here: the engine moves the interface
  }
  if (!at.netns.startsWith('/') || at.netns.length > 4096 || /[\0\n]/.test(at.netns)) {
    throw new InputError(`invalid network namespace path "${at.netns}": want an absolute path`);
  }
  if (!existsSync(at.netns)) throw new WeftError('EWEFT_NOT_FOUND', `no network namespace at ${at.netns}`);
}

/** insideIfname is the name of a record's interface inside its container. */
function insideIfname(a: AttachedContainer): string {
  return a.containerIfname ?? CONTAINER_IFNAME;
}

/** FoundContainer is a container an engine knows by the name or id attach was given. */
export interface FoundContainer {
  /** key is the container's stable id: the attach record's target. */
  key: string;
  /** name is the engine's name for it (the default DNS name). */
  name: string;
  /** pid is its init process while it runs: its network namespace is /proc/PID/ns/net. */
  pid: number | undefined;
}

/** ContainerEngine finds containers of a container engine (Docker: control/docker.ts) for attach. */
export interface ContainerEngine {
  /** find resolves a name or id; undefined when there is no engine or no such container. Never throws. */
  find(target: string): Promise<FoundContainer | undefined>;
}

/** isLocalTarget: a pid or a named network namespace, which no engine is asked about. */
function isLocalTarget(target: string): boolean {
  return /^[1-9][0-9]{0,9}$/.test(target) || (target.length <= 64 && existsSync(`/run/netns/${target}`));
}

/**
 * resolveTarget turns a user's TARGET into a namespace reference: a named network namespace
 * (`ip netns`), a process id, or a running container of `engine` (a Docker container by name or
 * id: its pid's namespace).
 */
export async function resolveTarget(target: string, engine?: ContainerEngine): Promise<Target> {
  if (/^[1-9][0-9]{0,9}$/.test(target)) return pidTarget(target);
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(target)) {
    throw new InputError(`invalid target "${target}": want a network namespace name, a pid or a Docker container`);
  }
  if (target.length <= 64 && existsSync(`/run/netns/${target}`)) {
    return { ref: target, ipArgs: (args) => ['ip', ['-n', target, ...args]] };
  }
  const found = await engine?.find(target);
  if (found !== undefined) {
    if (found.pid === undefined) throw new WeftError('EWEFT_CONFLICT', `container ${target} is not running`);
    return pidTarget(String(found.pid));
  }
  throw new WeftError(
    'EWEFT_NOT_FOUND',
    `no network namespace "${target}" (see \`ip netns list\`), no such pid, and no running Docker container of that name`,
  );
}

function pidTarget(pid: string): Target {
  if (!existsSync(`/proc/${pid}/ns/net`)) throw new WeftError('EWEFT_NOT_FOUND', `no process ${pid}`);
  return { ref: pid, ipArgs: (args) => ['nsenter', ['-t', pid, '-n', 'ip', ...args]] };
}

/** DNS_LABEL is what a container's DNS name must be: letters, digits and inner hyphens, at most 63. */
const DNS_LABEL = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

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
export function vethAddArgs(
  ifname: string,
  mtu: number,
  mac: string,
  ref: string | undefined,
  inside = CONTAINER_IFNAME,
): string[] {
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
    inside,
    'address',
    mac,
    'mtu',
    m,
    'gso_max_size',
    gso,
    ...(ref === undefined ? [] : ['netns', ref]),
  ];
}

/** AttacherStatus is what status shows about attaching. */
export interface AttacherStatus {
  attached: number;
  /** pending counts attaches in progress (journaled, not done). */
  pending: number;
  /** persistErrors counts attaches and name changes refused because the journal could not be saved. */
  persistErrors: number;
}

/**
 * Attacher plugs containers into the overlay: a veth pair with `ethwe` inside the container,
 * the container's address (from IPAM, or given) with the overlay prefix (so the whole range is
 * on-link), proxy ARP and a /32 route on the host side, the overlay MTU, and the address claimed
 * by the router so every peer routes it here. Containers that go away without detach are noticed
 * and their addresses freed after a grace period (they may come back meanwhile, e.g. a restart).
 *
 * An attach is a transaction across crashes, journaled in the persisted list ({@link list},
 * saved by `onChange`, which must write it durably and throw when it cannot):
 *
 * ```
 *   allocate/reserve ──► record `pending` (target, ifname, cidrs) saved ──► ip link add, addresses,
 *   routes, claim, DNS ──► record `attached` saved ──► answer the caller
 *          any failure on the way: interface removed, address freed, record dropped, error answered
 * ```
 *
 * So the caller's answer is the truth: an attach answered with an error leaves nothing behind,
 * one answered done survives `kill -9`. What a restart does is {@link restore}'s rules. An attach
 * or a name change that cannot be saved fails ("cannot save state in DIR: REASON"), is rolled
 * back and counted ({@link status}).
 */
export class Attacher {
  /** attached holds containers whose attach is done (and saved). */
  private readonly attached = new Map<string, AttachedContainer>();
  /** pending holds the journal of attaches in progress (saved before any kernel object is made). */
  private readonly pending = new Map<string, AttachedContainer>();
  /** unreconciled holds saved records restore has not decided yet (persisted as they were meanwhile). */
  private readonly unreconciled = new Map<string, AttachedContainer>();
  /** busy holds targets with an attach, name change or detach in progress. */
  private readonly busy = new Set<string>();
  /** goneSince records when an attached container's interface was first seen missing. */
  private readonly goneSince = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private monitor: ChildProcess | undefined;
  private checking = false;
  private persistErrors = 0;
  /** restored resolves once {@link restore} has reconciled the kernel and the journal; attach and detach wait for it. */
  private readonly restored: Promise<void>;
  private markRestored: () => void = () => {};
  /** hooks tell the DNS about containers coming and going (names, resolver configuration). */
  hooks: { attached(a: AttachedContainer): Promise<void>; detached(a: AttachedContainer): Promise<void> } | undefined;
  /** containers finds engine containers (Docker) by name or id; their records are keyed by the engine's id. */
  containers: ContainerEngine | undefined;

  constructor(
    private readonly router: Router,
    private readonly range: Cidr,
    private readonly log: Logger,
    /** onChange persists {@link list} durably; it throws when it cannot (the change is then rolled back). */
    private readonly onChange: () => void = () => {},
    /** graceMs: how long a vanished container keeps its address. */
    private readonly graceMs = CONTAINER_GRACE_MS,
  ) {
    this.restored = new Promise<void>((r) => {
      this.markRestored = r;
    });
  }

  /**
   * list returns the containers to persist and show: the attached ones, then attaches in progress
   * (`state: 'pending'`).
   */
  list(): AttachedContainer[] {
    return [...this.attached.values(), ...this.pending.values(), ...this.unreconciled.values()].map(copyOf);
  }

  /** status counts attached containers, attaches in progress and refusals for want of persistence. */
  status(): AttacherStatus {
    return { attached: this.attached.size, pending: this.pending.size, persistErrors: this.persistErrors };
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
   * are given); with a `name` it does not have yet, the name is added (saved, then registered in
   * the DNS). Waits until {@link restore} has run.
   */
  async attach(target: string, cidrs: readonly Cidr[], name?: string, at?: AttachAt): Promise<AttachedContainer> {
    if (name !== undefined && !DNS_LABEL.test(name)) {
      throw new InputError(`invalid --name "${name}": a DNS label (letters, digits, -)`);
    }
    for (const c of cidrs) this.checkAddress(c);
    if (at !== undefined) checkAttachAt(target, at);
    await this.restored;
    // A record of this key in another namespace is stale (its DEL was lost): unplug it first.
    const stale = at === undefined ? undefined : this.attached.get(target);
    if (stale !== undefined && stale.netns !== at?.netns) await this.detach(target);
    const found = at === undefined ? await this.findContainer(target) : undefined;
    if (found !== undefined) {
      target = found.key;
      // A container comes with a name: by default it is its DNS name too (when it is a DNS label).
      if (name === undefined && !this.attached.has(target) && DNS_LABEL.test(found.name)) name = found.name;
    }
    const wanted = cidrs.map(formatCidr).sort();
    const existing = this.attached.get(target);
    if (existing !== undefined && wanted.length > 0 && existing.cidrs.join() !== wanted.join()) {
      throw new WeftError(
        'EWEFT_CONFLICT',
        `${target} is already attached with ${existing.cidrs.join(', ')}; detach it first`,
      );
    }
    if (existing !== undefined && (name === undefined || namesOf(existing).includes(name))) return copyOf(existing);
    if (this.busy.has(target)) throw new WeftError('EWEFT_CONFLICT', `${target} is being attached or detached`);
    this.busy.add(target);
    try {
      if (existing !== undefined && name !== undefined) return await this.addName(existing, name);
      const gateway = at?.defaultRoute === true ? await this.gateway() : undefined;
      return await this.plug(target, cidrs, name, at, gateway);
    } catch (err) {
      // Refused for want of persistence (ours, or IPAM's): say so plainly, and count it.
      const saveErr = saveErrorIn(err);
      if (saveErr === undefined) throw err;
      this.persistErrors++;
      throw saveErr;
    } finally {
      this.busy.delete(target);
    }
  }

  /** addName gives an attached container one more DNS name: saved first (rolled back if that fails), then registered. */
  private async addName(a: AttachedContainer, name: string): Promise<AttachedContainer> {
    const next = withNames(a, [...namesOf(a), name]);
    this.attached.set(a.target, next);
    try {
      this.save();
    } catch (err) {
      this.attached.set(a.target, a);
      throw err;
    }
    await this.notify('attached', { ...next, name, names: [name] });
    this.log.info('container name added', { container: a.target, name });
    return copyOf(next);
  }

  /** findContainer asks the engine about a target that is not a pid, a named namespace or an attached record. */
  private async findContainer(target: string): Promise<FoundContainer | undefined> {
    if (this.containers === undefined || this.attached.has(target) || isLocalTarget(target)) return undefined;
    return this.containers.find(target);
  }

  /**
   * reattach plugs an attached container in again after its network namespace was replaced (an
   * engine restarted it): same addresses, same names, new veth pair. Does nothing when its
   * `ethwe` is still in place, when it is not attached, or while it is busy. Resolves with the
   * record, or undefined when nothing was done; a failure detaches it (address and names freed).
   */
  async reattach(target: string): Promise<AttachedContainer | undefined> {
    await this.restored;
    const a = this.attached.get(target);
    if (a === undefined || a.netns !== undefined || this.busy.has(target)) return undefined;
    const t = await resolveTarget(target, this.containers);
    const [cmd, argv] = t.ipArgs(['link', 'show', 'dev', CONTAINER_IFNAME]);
    if (
      await sh(cmd, argv).then(
        () => true,
        () => false,
      )
    )
      return undefined;
    this.busy.add(target);
    try {
      const names = namesOf(a);
      // The old pair went (or goes) with the old namespace; plug() replaces a leftover host end.
      this.attached.delete(target);
      this.goneSince.delete(target);
      let next = await this.plug(
        target,
        a.cidrs.map((c) => parseCidr(c)),
        names[0],
      );
      for (const n of names.slice(1)) next = await this.addName(next, n);
      this.log.info('container re-attached', { container: target, cidr: next.cidrs.join(' ') });
      return next;
    } catch (err) {
      // plug() rolled back (interface removed, address freed); the names go too.
      await this.notify('detached', a);
      this.saveQuietly();
      this.log.warn('cannot re-attach a restarted container; detached', { container: target, err: errorMessage(err) });
      throw err;
    } finally {
      this.busy.delete(target);
    }
  }

  private async plug(
    target: string,
    given: readonly Cidr[],
    name: string | undefined,
    at?: AttachAt,
    gateway?: Cidr,
  ): Promise<AttachedContainer> {
    const t = at === undefined ? await resolveTarget(target, this.containers) : pathTarget(at.netns);
    const inside = at?.peer ?? at?.ifname ?? CONTAINER_IFNAME;
    const ifname = hostIfname(target);
    const mac = containerMac(target);
    /** made: a kernel object may exist (from the first `ip link add` on). */
    let made = false;
    let journaled = false;
    let announced: AttachedContainer | undefined;
    try {
      let cidrs = given;
      if (cidrs.length === 0) {
        const addr = await this.router.allocate(target);
        cidrs = [{ addr, prefix: this.range.prefix }];
      } else {
        this.router.reserve(target, cidrs);
      }
      const record = withNames(
        {
          target,
          ifname,
          cidrs: cidrs.map(formatCidr).sort(),
          mac,
          ...(at === undefined ? {} : { netns: at.netns, containerIfname: at.ifname }),
          ...(at?.peer === undefined ? {} : { peerIfname: at.peer }),
          ...(at?.endpoint === undefined ? {} : { endpoint: at.endpoint }),
          state: 'pending',
        },
        name === undefined ? [] : [name],
      );
      // The intent is on disk before any kernel object exists (restore undoes it after a crash).
      this.pending.set(target, record);
      journaled = true;
      this.save();
      made = true;
      // The peer end is made inside the container under its final name: one `ip` for the pair,
      // one `ip -batch` inside, sysctls written directly, one `ip -batch` on the host.
      await this.addVeth(target, ifname, mac, at?.peer === undefined ? t.ref : undefined, inside);
      if (at?.peer === undefined) {
        const [cmd, argv] = t.ipArgs(['-batch', '-']);
        await sh(
          cmd,
          argv,
          [
            ...cidrs.map((c) => `addr add ${formatCidr(c)} dev ${inside}`),
            `link set ${inside} up`,
            'link set lo up',
            ...(gateway === undefined ? [] : [`route replace default via ${formatIPv4(gateway.addr)} dev ${inside}`]),
          ].join('\n'),
        );
      }
      // Host side: proxy ARP answers the container for every overlay address, /32 routes bring
      // replies back, and forwarding moves packets between the veth and the router's device.
      // proxy_delay 0: answer at once (the default delays proxy replies up to 0.8 s).
      // Written at once; a failure is reported in this order whichever finishes first, so a host
      // where /proc/sys is read-only always names the same file.
      const written = await Promise.allSettled([
        writeFile(`/proc/sys/net/ipv4/conf/${ifname}/proxy_arp`, '1'),
        writeFile(`/proc/sys/net/ipv4/neigh/${ifname}/proxy_delay`, '0'),
        writeFile('/proc/sys/net/ipv4/ip_forward', '1'),
      ]);
      const failed = written.find((r) => r.status === 'rejected');
      if (failed !== undefined) {
        const reason: unknown = failed.reason;
        const msg = reason instanceof Error ? reason.message : String(reason);
        throw new WeftError('EWEFT_SYSTEM', `cannot set up forwarding for ${ifname}: ${msg}`);
      }
      await sh('ip', ['-batch', '-'], [`link set ${ifname} up`, ...this.routeLines(ifname, cidrs)].join('\n'));
      this.router.claim(target, cidrs);
      const { state: _s, ...a } = record;
      // Names before the record: once the caller hears "done", the name answers too.
      announced = a;
      await this.notify('attached', a);
      this.pending.delete(target);
      this.attached.set(target, a);
      try {
        this.save();
      } catch (err) {
        this.attached.delete(target);
        this.pending.set(target, record);
        throw err;
      }
      this.log.info('container attached', { container: target, device: ifname, cidr: a.cidrs.join(' ') });
      return copyOf(a);
    } catch (err) {
      await this.rollback(target, ifname, made, journaled, announced);
      throw err;
    }
  }

  /**
   * addVeth makes the pair. A host interface of this target's name left by an attach that had no
   * record (an older version, or a failed removal) is ours: it is removed and the pair made again.
   */
  private async addVeth(
    target: string,
    ifname: string,
    mac: string,
    ref: string | undefined,
    inside: string,
  ): Promise<void> {
    const args = vethAddArgs(ifname, this.router.mtu, mac, ref, inside);
    try {
      await sh('ip', args);
    } catch (err) {
      if (!/File exists/.test((err as Error).message)) throw err;
      // Both ends here (a network plugin's pair): a leftover of either end is ours.
      if (ref === undefined && !(await linkExists(ifname)) && (await linkExists(inside))) {
        this.log.warn('removing a leftover interface of an earlier attach', { container: target, device: inside });
        await removeLink(inside);
        await sh('ip', args);
        return;
      }
      if (!(await linkExists(ifname))) {
        throw new WeftError(
          'EWEFT_CONFLICT',
          `${target} already has an interface named ${inside}: is it attached by another router?`,
          { cause: err },
        );
      }
      this.log.warn('removing a leftover interface of an earlier attach', { container: target, device: ifname });
      await removeLink(ifname);
      await sh('ip', args);
    }
  }

  /**
   * rollback undoes a failed attach: the interface goes, then the address, then the record. When
   * the interface cannot be removed the address stays reserved and the record pending (restore or
   * the next attach of the target cleans up), so IPAM never hands out an address still in use.
   */
  private async rollback(
    target: string,
    ifname: string,
    made: boolean,
    journaled: boolean,
    announced: AttachedContainer | undefined,
  ): Promise<void> {
    if (announced !== undefined) await this.notify('detached', announced);
    if (made && !(await removeLink(ifname))) {
      this.log.error('cannot remove the interface of a failed attach; its address stays reserved', {
        container: target,
        device: ifname,
      });
      return;
    }
    this.router.release(target);
    if (journaled) {
      this.pending.delete(target);
      this.saveQuietly();
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

  /**
   * gateway returns the host's overlay address in the range, exposing the host first (from IPAM,
   * saved) when it has none: the default gateway and DNS server of containers attached by path.
   */
  async gateway(): Promise<Cidr> {
    const inRange = () => this.router.exposedCidrs().find((c) => cidrContains(this.range, c.addr));
    const have = inRange();
    if (have !== undefined) return have;
    await this.router.expose();
    await this.refreshRoutes();
    this.saveQuietly();
    const got = inRange();
    if (got === undefined) throw new WeftError('EWEFT_SYSTEM', 'the host has no overlay address after expose');
    return got;
  }

  /** refreshRoutes rewrites every attached container's host routes (after expose/hide, and after a restart). */
  async refreshRoutes(): Promise<void> {
    const lines = [...this.attached.values()].flatMap((a) =>
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

  /**
   * detach unplugs a container: removes the veth pair and frees its addresses, or with
   * `keepAddress` leaves them reserved in IPAM for the owner (a network plugin's endpoint, whose
   * address its IPAM driver frees when the engine says so).
   */
  async detach(target: string, keepAddress = false): Promise<AttachedContainer> {
    await this.restored;
    target = (await this.findContainer(target))?.key ?? target;
    const a = this.attached.get(target);
    if (a === undefined) throw new WeftError('EWEFT_NOT_FOUND', `${target} is not attached`);
    if (this.busy.has(target)) throw new WeftError('EWEFT_CONFLICT', `${target} is being attached or detached`);
    this.busy.add(target);
    try {
      if (!(await removeLink(a.ifname))) {
        throw new WeftError('EWEFT_SYSTEM', `cannot remove ${a.ifname} of ${target}; it stays attached`);
      }
      this.forget(a, keepAddress);
    } finally {
      this.busy.delete(target);
    }
    this.log.info('container detached', { container: target, device: a.ifname });
    return copyOf(a);
  }

  /** detachAll unplugs every container (for `weft reset`). */
  async detachAll(): Promise<number> {
    let n = 0;
    for (const a of [...this.attached.values()]) {
      await this.detach(a.target).catch(() => undefined);
      n++;
    }
    return n;
  }

  /**
   * forget drops an attached container whose interface is gone: the record first (a crash then
   * leaves an address held by no record, which restore frees), then the address.
   */
  private forget(a: AttachedContainer, keepAddress = false): void {
    this.attached.delete(a.target);
    this.goneSince.delete(a.target);
    this.saveQuietly();
    const had = this.router.release(a.target);
    // Reserved again in the same turn: no allocation can take it in between.
    try {
      if (keepAddress) for (const c of had) this.router.ipam.claim(a.target, c.addr as IPv4);
    } catch (err) {
      this.log.warn('cannot keep the address of a detached container reserved', {
        container: a.target,
        err: errorMessage(err),
      });
    }
    void this.notify('detached', a);
  }

  /** save persists the journal; a failure is thrown as a {@link StateSaveError} (the caller rolls back). */
  private save(): void {
    try {
      this.onChange();
    } catch (err) {
      throw saveErrorIn(err) ?? new StateSaveError('the state directory', err);
    }
  }

  /** saveQuietly persists where a failure changes nothing the caller could act on (it is logged). */
  private saveQuietly(): void {
    try {
      this.save();
    } catch (err) {
      this.log.error('cannot save the attached containers', { err: errorMessage(err) });
    }
  }

  /**
   * notify runs a hook, once per DNS name of the container (once without a name when it has
   * none); its failure is logged, never fails the attach or detach.
   */
  private async notify(what: 'attached' | 'detached', a: AttachedContainer): Promise<void> {
    const names = what === 'attached' ? namesOf(a) : [];
    const each = names.length === 0 ? [a] : names.map((n) => ({ ...a, name: n }));
    for (const one of each) {
      try {
        await this.hooks?.[what](one);
      } catch (err) {
        this.log.warn(`dns: container ${what}, but`, { container: a.target, err: (err as Error).message });
      }
    }
  }

  /**
   * restore reconciles the kernel with the saved journal after a (re)start; attach and detach
   * wait until it is done. Rules, in this order:
   *
   * 1. A `pending` record (an attach cut short: its caller was never told "done") is undone: its
   *    host interface (and with it `ethwe` in the container) is removed, then its address freed.
   * 2. An attached record whose interface exists is claimed again. One whose interface is gone
   *    (the container went away while the router was down) is freed, unless the engine runs that
   *    container (it restarted meanwhile): then it is claimed and re-attached by the engine's events.
   * 3. A `vw*` interface in this namespace with no record at all is removed.
   * 4. Addresses IPAM holds for no record (and not for the host) are freed, after 1 and 3, so no
   *    address is free while an interface still holds it. When an interface could not be removed
   *    or the interfaces could not be listed, those addresses are kept (whoever holds one is unknown).
   */
  async restore(saved: readonly AttachedContainer[]): Promise<void> {
    try {
      await this.reconcile(saved);
    } finally {
      this.markRestored();
    }
  }

  private async reconcile(saved: readonly AttachedContainer[]): Promise<void> {
    const present = await vethNames();
    /** unsure: some interface may hold an address we cannot attribute; then no unattributed address is freed. */
    let unsure = present === undefined;
    /** keep: owners whose addresses must stay (an interface we could not remove or claim). */
    const keep = new Set<string>();
    const recorded = new Set(saved.map((a) => a.ifname));
    // A save while this runs (a DNS hook exposing the host) must not drop records not decided yet.
    for (const a of saved) this.unreconciled.set(a.target, copyOf(a));
    for (const a of saved) {
      if (a.state === 'pending') {
        const gone = present?.has(a.ifname) === false || (await removeLink(a.ifname));
        this.unreconciled.delete(a.target);
        if (!gone) {
          this.log.error('cannot undo an attach cut short by a restart; its address stays reserved', {
            container: a.target,
            device: a.ifname,
          });
          this.pending.set(a.target, copyOf(a));
          keep.add(a.target);
          continue;
        }
        this.log.warn('attach cut short by a restart undone: interface removed, address freed', {
          container: a.target,
          cidr: a.cidrs.join(' '),
        });
        this.router.release(a.target);
        continue;
      }
      this.unreconciled.delete(a.target);
      // An engine's container restarted while the router was down has a new namespace: it keeps
      // its addresses and is plugged in again once the engine's events are followed (reattach).
      const restarted = present !== undefined && !present.has(a.ifname) && (await this.runsAgain(a.target));
      if (present !== undefined && !present.has(a.ifname) && !restarted) {
        this.log.warn('attached container went away while the router was down; address freed', {
          container: a.target,
          cidr: a.cidrs.join(' '),
        });
        this.router.release(a.target);
        continue;
      }
      const { state: _s, ...record } = a;
      try {
        this.router.claim(
          a.target,
          a.cidrs.map((c) => parseCidr(c)),
        );
        this.attached.set(a.target, record);
        if (restarted) {
          this.log.info('attached container restarted while the router was down; it will be re-attached', {
            container: a.target,
          });
          continue;
        }
        await this.capGso(record);
        await this.notify('attached', record);
      } catch (err) {
        keep.add(a.target);
        this.log.error('cannot restore attached container', { container: a.target, err: (err as Error).message });
      }
    }
    for (const ifname of present ?? []) {
      if (!isContainerIfname(ifname) || recorded.has(ifname)) continue;
      if (await removeLink(ifname)) {
        this.log.warn('removed a container interface no attach record speaks for', { device: ifname });
      } else {
        unsure = true;
        this.log.error('cannot remove a container interface no attach record speaks for', { device: ifname });
      }
    }
    await this.refreshRoutes();
    for (const owner of this.router.ipam.owners()) {
      if (owner === EXPOSE_OWNER || this.attached.has(owner) || keep.has(owner)) continue;
      if (unsure) {
        this.log.warn('keeping addresses held by no attached container: an unknown interface may use them', {
          owner,
        });
        continue;
      }
      this.log.warn('freeing addresses held by no attached container', { owner });
      this.router.ipam.free(owner);
    }
    this.saveQuietly();
  }

  /** runsAgain says whether the engine runs the container whose id is `target` (so it is not gone). */
  private async runsAgain(target: string): Promise<boolean> {
    const found = await this.containers?.find(target);
    return found !== undefined && found.key === target && found.pid !== undefined;
  }

  /**
   * capGso gives a restored container's veth pair the gso_max_size attach gives new ones (see
   * {@link vethAddArgs}): pairs made by an older version have the kernel's 65536. Best effort.
   */
  private async capGso(a: AttachedContainer): Promise<void> {
    if (a.peerIfname !== undefined) return; // made by this version, gso_max_size set at birth
    const gso = String(GSO_MAX_BYTES);
    try {
      const t = a.netns === undefined ? await resolveTarget(a.target, this.containers) : pathTarget(a.netns);
      const [cmd, argv] = t.ipArgs(['link', 'set', insideIfname(a), 'gso_max_size', gso]);
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
      for (const a of [...this.attached.values()]) {
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
        if (now - (since ?? now) >= this.graceMs && this.attached.get(a.target) === a) {
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
