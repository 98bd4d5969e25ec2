/**
 * runPlugin is the `weft` CNI plugin (spec 1.0/1.1): one invocation in, one result or error out.
 * Every operation is a request to the node's router over its API socket; the router makes the
 * veth pair, gives the address from Weft's IPAM (owned by `NETWORK:CONTAINERID:IFNAME`), adds the
 * routes and registers the DNS name. The plugin keeps no state of its own.
 *
 * ```
 *   runtime ──env+stdin──► runPlugin ──POST /attach {target, netns, ifname}──► router (control/http.ts)
 *           ◄──result────            ◄──record + mtu, gateway, dns──────────
 * ```
 *
 * Errors are CNI error objects (errors.ts). Rules that matter to runtimes:
 * - DEL is idempotent: an attachment the router does not hold, a DEL with an empty or vanished
 *   netns, and a DEL while the router is down with the netns gone all succeed (a router that comes
 *   back frees the addresses of interfaces that vanished meanwhile, control/attach.ts restore).
 * - ADD of an attachment that already exists in the same netns answers the same result (a retried
 *   ADD must not leak a second address); an interface of that name that is not Weft's is an error.
 * - GC detaches this network's attachments that are not in `cni.dev/valid-attachments`, continuing
 *   past failures and reporting them all.
 */
import { CniCode, CniError } from './errors.js';
import {
  type CniCommand,
  type Invocation,
  LATEST_VERSION,
  type NetConf,
  ownerKey,
  parseInvocation,
  parseNetConf,
  SUPPORTED_VERSIONS,
} from './netconf.js';
import type { NetnsInspector } from './netns-inspector.js';
import { buildResult, type CniInterface, type CniIp, type CniResult, DEFAULT_ROUTE, mergeResult } from './result.js';
import { type RouterApi, RouterDown, RouterRefused } from './router-api.js';

/** PluginDeps are the plugin's connections to the world, injected so tests can replace each. */
export interface PluginDeps {
  env: Readonly<Record<string, string | undefined>>;
  /** stdin is the whole configuration the runtime wrote. */
  stdin: string;
  /** api opens the router's API at a socket path. */
  api: (socket: string) => RouterApi;
  inspector: NetnsInspector;
  /** exists says whether a path (a netns) exists. */
  exists: (path: string) => boolean;
  /** defaultSocket is the API socket of the router of the plugin's network namespace. */
  defaultSocket: () => string;
}

/** PluginOutput is what the process prints and how it exits. */
export interface PluginOutput {
  stdout: string;
  exitCode: 0 | 1;
}

/** OWNER_KEY_MAX is the longest owner key the router keeps (control/state.ts). */
const OWNER_KEY_MAX = 256;
/** DNS_LABEL: a K8S_POD_NAME that is one is registered as the pod's DNS name. */
const DNS_LABEL = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/** runPlugin runs one invocation; it never throws. */
export async function runPlugin(deps: PluginDeps): Promise<PluginOutput> {
  let version = versionHint(deps.stdin);
  try {
    const inv = parseInvocation(deps.env);
    if (inv.command === 'VERSION') return ok({ cniVersion: version, supportedVersions: [...SUPPORTED_VERSIONS] });
    const conf = parseNetConf(deps.stdin, inv.command);
    version = conf.cniVersion;
    const api = deps.api(conf.socket ?? deps.defaultSocket());
    const run: Record<Exclude<CniCommand, 'VERSION'>, () => Promise<unknown>> = {
      ADD: () => add(inv, conf, api, deps),
      DEL: () => del(inv, conf, api, deps),
      CHECK: () => check(inv, conf, api, deps),
      STATUS: () => status(api),
      GC: () => gc(conf, api),
    };
    const out = await run[inv.command]();
    return out === undefined ? { stdout: '', exitCode: 0 } : ok(out);
  } catch (err) {
    const e = err instanceof CniError ? err : new CniError(CniCode.RouterError, 'unexpected failure', String(err));
    return { stdout: `${JSON.stringify(e.toJson(version))}\n`, exitCode: 1 };
  }
}

function ok(json: unknown): PluginOutput {
  return { stdout: `${JSON.stringify(json)}\n`, exitCode: 0 };
}

/** versionHint is the cniVersion an answer carries before (or without) a valid configuration. */
function versionHint(stdin: string): string {
  try {
    const v = (JSON.parse(stdin) as { cniVersion?: unknown }).cniVersion;
    return typeof v === 'string' && v.length <= 16 ? v : LATEST_VERSION;
  } catch {
    return LATEST_VERSION;
  }
}

function keyOf(inv: Invocation, conf: NetConf): string {
  const key = ownerKey(conf.name, inv.containerId, inv.ifname);
  if (key.length > OWNER_KEY_MAX) {
    throw new CniError(
      CniCode.InvalidEnvironment,
      `CNI_CONTAINERID is too long (${inv.containerId.length} characters)`,
    );
  }
  return key;
}

async function add(inv: Invocation, conf: NetConf, api: RouterApi, deps: PluginDeps): Promise<CniResult> {
  const target = keyOf(inv, conf);
  if (!deps.exists(inv.netns)) throw new CniError(CniCode.UnknownContainer, `no network namespace at ${inv.netns}`);
  const pod = inv.args.get('K8S_POD_NAME');
  const name = conf.dnsNames && pod !== undefined && DNS_LABEL.test(pod) ? pod : undefined;
  let reply: Awaited<ReturnType<RouterApi['attach']>>;
  try {
    reply = await api.attach({
      target,
      netns: inv.netns,
      ifname: inv.ifname,
      defaultRoute: conf.defaultRoute,
      ...(name === undefined ? {} : { name }),
    });
  } catch (err) {
    throw fromRouter(err, 'ADD');
  }
  const ours = buildResult(conf.cniVersion, reply, {
    netns: inv.netns,
    ifname: inv.ifname,
    defaultRoute: conf.defaultRoute,
  });
  return conf.prevResult === undefined ? ours : mergeResult(conf.prevResult, ours);
}

async function del(inv: Invocation, conf: NetConf, api: RouterApi, deps: PluginDeps): Promise<undefined> {
  const target = keyOf(inv, conf);
  try {
    await api.detach(target);
  } catch (err) {
    // Router down and the namespace gone: its veth went with it, and a router that comes back
    // frees the address of an interface that vanished. Nothing is left for us to undo.
    if (err instanceof RouterDown && (inv.netns === '' || !deps.exists(inv.netns))) return undefined;
    throw fromRouter(err, 'DEL');
  }
  return undefined;
}

async function check(inv: Invocation, conf: NetConf, api: RouterApi, deps: PluginDeps): Promise<undefined> {
  const target = keyOf(inv, conf);
  const prev = conf.prevResult as CniResult | undefined;
  if (prev === undefined) throw new CniError(CniCode.InvalidConfig, 'CHECK needs "prevResult" (the ADD result)');
  const ifaces: CniInterface[] = Array.isArray(prev.interfaces) ? prev.interfaces : [];
  const index = ifaces.findIndex((i) => i.name === inv.ifname && i.sandbox === inv.netns);
  if (index < 0) {
    throw new CniError(CniCode.CheckFailed, `prevResult has no interface ${inv.ifname} in ${inv.netns}`);
  }
  const ips: CniIp[] = (Array.isArray(prev.ips) ? prev.ips : []).filter((ip) => ip.interface === index);
  let records: Awaited<ReturnType<RouterApi['list']>>;
  try {
    records = await api.list();
  } catch (err) {
    throw fromRouter(err, 'CHECK');
  }
  const rec = records.find((r) => r.target === target);
  if (rec === undefined) throw new CniError(CniCode.CheckFailed, `the router holds no attachment ${target}`);
  if (rec.netns !== inv.netns) {
    throw new CniError(
      CniCode.CheckFailed,
      `attachment ${target} is in ${rec.netns ?? 'no namespace'}, not ${inv.netns}`,
    );
  }
  for (const ip of ips) {
    if (!rec.cidrs.includes(ip.address)) {
      throw new CniError(
        CniCode.CheckFailed,
        `the router holds ${rec.cidrs.join(', ')} for ${target}, not ${ip.address}`,
      );
    }
  }
  if (!deps.exists(inv.netns)) throw new CniError(CniCode.CheckFailed, `no network namespace at ${inv.netns}`);
  let view: Awaited<ReturnType<NetnsInspector['inspect']>>;
  try {
    view = await deps.inspector.inspect(inv.netns, inv.ifname);
  } catch (err) {
    throw new CniError(CniCode.CheckFailed, (err as Error).message);
  }
  const link = view.link;
  if (link === undefined) throw new CniError(CniCode.CheckFailed, `no interface ${inv.ifname} in ${inv.netns}`);
  if (!link.up) throw new CniError(CniCode.CheckFailed, `interface ${inv.ifname} in ${inv.netns} is down`);
  const want = ifaces[index]?.mac;
  if (want !== undefined && link.mac?.toLowerCase() !== want.toLowerCase()) {
    throw new CniError(CniCode.CheckFailed, `interface ${inv.ifname} has mac ${link.mac}, not ${want}`);
  }
  for (const ip of ips) {
    if (!link.addrs.includes(ip.address)) {
      throw new CniError(CniCode.CheckFailed, `interface ${inv.ifname} lacks address ${ip.address}`);
    }
  }
  // Only the routes weft made (the default route via its gateway); later plugins may change others.
  const gateways = new Set(ips.map((ip) => ip.gateway).filter((g) => g !== undefined));
  for (const r of Array.isArray(prev.routes) ? prev.routes : []) {
    if (r.dst !== DEFAULT_ROUTE || r.gw === undefined || !gateways.has(r.gw)) continue;
    if (!view.routes.some((x) => x.dst === r.dst && x.gateway === r.gw)) {
      throw new CniError(CniCode.CheckFailed, `no route ${r.dst} via ${r.gw} on ${inv.ifname}`);
    }
  }
  return undefined;
}

async function status(api: RouterApi): Promise<undefined> {
  let ipam: Awaited<ReturnType<RouterApi['ipam']>>;
  try {
    ipam = await api.ipam();
  } catch (err) {
    if (err instanceof RouterDown) throw new CniError(CniCode.NotAvailable, 'no weft router is running', err.message);
    if (err instanceof RouterRefused && err.status === 503) {
      throw new CniError(CniCode.NotAvailable, 'the weft router is starting', err.message);
    }
    throw fromRouter(err, 'STATUS');
  }
  if (ipam.persistFailing === true) {
    throw new CniError(CniCode.NotAvailable, 'the router cannot save address allocations (its state directory fails)');
  }
  const othersFree = (ipam.peers ?? []).some((p) => !p.self && p.reachable && p.free > 0);
  if (ipam.seeded && ipam.owned - ipam.used <= 0 && !othersFree) {
    throw new CniError(
      CniCode.NotAvailable,
      "no free address: this router's share is used up and no reachable peer has space",
    );
  }
  return undefined;
}

async function gc(conf: NetConf, api: RouterApi): Promise<undefined> {
  const valid = new Set(conf.validAttachments.map((a) => ownerKey(conf.name, a.containerID, a.ifname)));
  let records: Awaited<ReturnType<RouterApi['list']>>;
  try {
    records = await api.list();
  } catch (err) {
    throw fromRouter(err, 'GC');
  }
  const prefix = `${conf.name}:`;
  const failed: string[] = [];
  for (const r of records) {
    if (r.netns === undefined || !r.target.startsWith(prefix) || valid.has(r.target)) continue;
    try {
      await api.detach(r.target);
    } catch (err) {
      failed.push(`${r.target}: ${(err as Error).message}`);
    }
  }
  if (failed.length > 0) {
    throw new CniError(
      CniCode.RouterError,
      `gc could not detach ${failed.length} stale attachment(s)`,
      failed.join('; '),
    );
  }
  return undefined;
}

/** fromRouter maps a router failure to a CNI error: down or starting or busy is "try again later". */
export function fromRouter(err: unknown, op: string): CniError {
  if (err instanceof CniError) return err;
  if (err instanceof RouterDown)
    return new CniError(CniCode.TryAgainLater, `${op}: no weft router is running`, err.message);
  if (err instanceof RouterRefused) {
    switch (err.code) {
      case 'EWEFT_NOT_READY':
        return new CniError(CniCode.TryAgainLater, `${op}: the weft router is starting`, err.message);
      case 'EWEFT_UNAVAILABLE':
        return new CniError(CniCode.NoAddress, `${op}: no address available`, err.message);
      case 'EWEFT_NOT_FOUND':
        return new CniError(CniCode.UnknownContainer, `${op}: ${err.message}`);
      case 'EWEFT_CONFLICT':
        if (/being attached or detached/.test(err.message)) {
          return new CniError(CniCode.TryAgainLater, `${op}: the router is busy with this attachment`, err.message);
        }
        return new CniError(CniCode.RouterError, `${op}: ${err.message}`);
      default:
        return new CniError(CniCode.RouterError, `${op}: the weft router refused (HTTP ${err.status})`, err.message);
    }
  }
  return new CniError(CniCode.RouterError, `${op}: ${(err as Error).message ?? String(err)}`);
}
