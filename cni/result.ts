/**
 * The CNI ADD result (spec 1.1 section 5 "ADD Success") built from the router's answer, shaped for
 * the protocol version in use, and merged into a `prevResult` when weft is not the first plugin.
 */
import { versionAtLeast } from './netconf.js';
import type { AttachReply } from './router-api.js';

/** CniInterface is one entry of a result's `interfaces`. */
export interface CniInterface {
  name: string;
  mac?: string;
  /** mtu is a 1.1.0 field. */
  mtu?: number;
  /** sandbox is the namespace path for an interface inside the container; absent on the host. */
  sandbox?: string;
}

/** CniIp is one entry of `ips`; `version` exists only before 1.0.0. */
export interface CniIp {
  version?: '4' | '6';
  address: string;
  gateway?: string;
  interface?: number;
}

/** CniRoute is one entry of `routes`. */
export interface CniRoute {
  dst: string;
  gw?: string;
}

/** CniDns is a result's `dns`. */
export interface CniDns {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

/** CniResult is an ADD result. */
export interface CniResult {
  cniVersion: string;
  interfaces?: CniInterface[];
  ips?: CniIp[];
  routes?: CniRoute[];
  dns?: CniDns;
}

/** DEFAULT_ROUTE is the destination of a default route. */
export const DEFAULT_ROUTE = '0.0.0.0/0';

/**
 * buildResult turns the router's attach answer into a result: the host end of the veth pair
 * (index 0, for plugins such as bandwidth that look for it) and the pod's interface (index 1, in
 * its sandbox), the pod's addresses on it with the host's overlay address as gateway, the default
 * route when one was made, and Weft's DNS server and domain.
 */
export function buildResult(
  cniVersion: string,
  reply: AttachReply,
  where: { netns: string; ifname: string; defaultRoute: boolean },
): CniResult {
  const v1_1 = versionAtLeast(cniVersion, '1.1.0');
  const legacy = !versionAtLeast(cniVersion, '1.0.0');
  const mtu = v1_1 && reply.mtu !== undefined ? { mtu: reply.mtu } : {};
  const interfaces: CniInterface[] = [
    { name: reply.ifname, ...mtu },
    { name: where.ifname, ...(reply.mac === undefined ? {} : { mac: reply.mac }), ...mtu, sandbox: where.netns },
  ];
  const ips: CniIp[] = reply.cidrs.map((address) => ({
    ...(legacy ? { version: '4' as const } : {}),
    address,
    ...(reply.gateway === undefined ? {} : { gateway: reply.gateway }),
    interface: 1,
  }));
  const routes: CniRoute[] =
    where.defaultRoute && reply.gateway !== undefined ? [{ dst: DEFAULT_ROUTE, gw: reply.gateway }] : [];
  const dns: CniDns = reply.dns === undefined ? {} : { nameservers: reply.dns.nameservers, search: reply.dns.search };
  return { cniVersion, interfaces, ips, routes, dns };
}

/**
 * mergeResult appends `ours` to a previous plugin's result (weft chained after another interface
 * plugin): its interfaces follow the previous ones (our `interface` indexes shift accordingly), its
 * routes follow theirs, and its DNS is used only where the previous result has none.
 */
export function mergeResult(prev: Record<string, unknown>, ours: CniResult): CniResult {
  const p = prev as unknown as CniResult;
  const before = Array.isArray(p.interfaces) ? p.interfaces : [];
  const shift = before.length;
  const prevDns = p.dns !== undefined && Object.keys(p.dns).length > 0 ? p.dns : undefined;
  return {
    ...p,
    cniVersion: ours.cniVersion,
    interfaces: [...before, ...(ours.interfaces ?? [])],
    ips: [
      ...(Array.isArray(p.ips) ? p.ips : []),
      ...(ours.ips ?? []).map((ip) => ({ ...ip, interface: (ip.interface ?? 0) + shift })),
    ],
    routes: [...(Array.isArray(p.routes) ? p.routes : []), ...(ours.routes ?? [])],
    dns: prevDns ?? ours.dns ?? {},
  };
}
