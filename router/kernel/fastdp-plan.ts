/**
 * The fast path's reconcile plan: what weft-vx should hold (`FastdpWant`) against what the kernel
 * says it holds (`FastdpHave`, the dumps), as the list of changes that makes them equal — pure,
 * so every case (stale entries of a crashed router, entries of other devices, malformed dumps) is
 * tested without a kernel. KernelFastPath (fastdp.ts) reads the dumps, plans and sends the
 * changes (`changeRequest`), removals first.
 *
 * Entries on weft-vx, by kind:
 *
 * | kind  | for | kernel object |
 * |---|---|---|
 * | fdb   | a Weft peer | `<mac> dst <underlay> self permanent` |
 * | flood | a bare kernel vxlan host (`--vxlan-peer`) | `00:00:00:00:00:00 dst <underlay> self permanent` (appended: one per host) |
 * | neigh | a Weft peer | `<underlay> lladdr <mac> permanent` (the routes' onlink gateway), `fe80::… lladdr <mac> permanent` (heartbeats) |
 * | proxy | our own overlay addresses | `proxy <addr> dev weft-vx`: the kernel answers a bare host's ARP for them |
 * | route | a peer's share / addresses, or our share for bare hosts | `proto 87` via the peer's underlay onlink, or on-link dev weft-vx |
 *
 * Entries the kernel makes itself (neighbours learned by ARP: a bare host's addresses) are not
 * permanent and never touched.
 */
import {
  AF_BRIDGE,
  AF_INET,
  AF_INET6,
  type Attr,
  attrBytes,
  attrU32,
  ipv4Bytes,
  macBytes,
  NDA_DST,
  NDA_LLADDR,
  type Neigh,
  NLM_F_APPEND,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REPLACE,
  NTF_PROXY,
  NTF_SELF,
  NUD_PERMANENT,
  ndmsg,
  type Route,
  RT_SCOPE_LINK,
  RT_SCOPE_NOWHERE,
  RT_SCOPE_UNIVERSE,
  RT_TABLE_MAIN,
  RTA_DST,
  RTA_GATEWAY,
  RTA_OIF,
  RTA_PREFSRC,
  RTM_DELNEIGH,
  RTM_DELROUTE,
  RTM_NEWNEIGH,
  RTM_NEWROUTE,
  RTNH_F_ONLINK,
  RTPROT_WEFT,
  rtmsg,
} from './netlink.js';

/** FLOOD_MAC is the all-zeros fdb address: where a vxlan device sends what no other entry claims. */
export const FLOOD_MAC = '00:00:00:00:00:00';

/** RouteWant is one route on weft-vx: via `gw` onlink, or (gw 0) on-link through the device itself. */
export interface RouteWant {
  readonly addr: number;
  readonly prefix: number;
  readonly gw: number;
  readonly src: number;
}

/** FastdpWant is what weft-vx should hold (see the module comment). */
export interface FastdpWant {
  /** fdb: unicast MAC → underlay (Weft peers). */
  readonly fdb: Map<string, number>;
  /** flood: underlay addresses of bare kernel vxlan hosts (all-zeros entries). */
  readonly flood: Set<number>;
  /** neigh4: underlay → MAC; neigh6: link-local (hex) → MAC. */
  readonly neigh4: Map<number, string>;
  readonly neigh6: Map<string, string>;
  /** proxies: overlay addresses whose ARP requests the kernel answers on weft-vx. */
  readonly proxies: Set<number>;
  /** routes by "addr/prefix". */
  readonly routes: Map<string, RouteWant>;
}

/** emptyWant is a FastdpWant with nothing in it. */
export function emptyWant(): FastdpWant {
  return {
    fdb: new Map(),
    flood: new Set(),
    neigh4: new Map(),
    neigh6: new Map(),
    proxies: new Set(),
    routes: new Map(),
  };
}

/** wantKey is a FastdpWant as one string (sync skips the kernel when it did not change). */
export function wantKey(w: FastdpWant): string {
  const routes = [...w.routes].map(([k, r]) => `${k}>${r.gw}>${r.src}`);
  return JSON.stringify([[...w.fdb], [...w.flood], [...w.neigh4], [...w.neigh6], [...w.proxies], routes]);
}

/** FastdpHave is what the kernel's dumps said (decoded; undefined: a route of another family). */
export interface FastdpHave {
  readonly routes: readonly (Route | undefined)[];
  readonly neigh4: readonly Neigh[];
  readonly neigh6: readonly Neigh[];
  readonly fdb: readonly Neigh[];
  readonly proxies: readonly Neigh[];
}

/** FastdpChange is one change the plan asks for. */
export type FastdpChange =
  | {
      readonly op: 'add' | 'del';
      readonly kind: 'route';
      readonly addr: number;
      readonly prefix: number;
      /** gw: the onlink gateway, undefined for an on-link route through the device. */
      readonly gw: number | undefined;
      readonly oif: number | undefined;
      readonly src: number;
    }
  | { readonly op: 'add' | 'del'; readonly kind: 'fdb' | 'flood'; readonly mac: string; readonly dst: number }
  | { readonly op: 'add' | 'del'; readonly kind: 'neigh4'; readonly dst: number; readonly mac: string }
  | { readonly op: 'add' | 'del'; readonly kind: 'neigh6'; readonly dst: string; readonly mac: string }
  | { readonly op: 'add' | 'del'; readonly kind: 'proxy'; readonly dst: number };

/**
 * planFastdp lists the changes that make `have` what `want` says on device `ix`: removals first
 * (routes before the entries they use), then additions (fdb and neighbours before routes). Only
 * Weft's own kinds of entry on `ix` are compared: permanent neighbours, unicast and all-zeros fdb
 * entries, proxy entries, proto-87 routes of the main table; anything else (other devices,
 * multicast fdb entries, neighbours the kernel learned, entries with a malformed address) is left.
 */
export function planFastdp(want: FastdpWant, have: FastdpHave, ix: number): FastdpChange[] {
  const del: FastdpChange[] = [];
  const add: FastdpChange[] = [];

  const haveRoutes = new Set<string>();
  for (const r of have.routes) {
    if (r === undefined || r.protocol !== RTPROT_WEFT || r.table !== RT_TABLE_MAIN) continue;
    const k = `${r.dst}/${r.dstLen}`;
    const w = want.routes.get(k);
    if (w !== undefined && r.oif === ix && (r.gateway ?? 0) === w.gw && (r.prefsrc ?? 0) === w.src) {
      haveRoutes.add(k);
      continue;
    }
    del.push({ op: 'del', kind: 'route', addr: r.dst, prefix: r.dstLen, gw: r.gateway, oif: r.oif, src: 0 });
  }

  const have4 = new Set<number>();
  for (const n of have.neigh4) {
    if (n.index !== ix || n.dst?.length !== 4 || (n.state & NUD_PERMANENT) === 0 || (n.flags & NTF_PROXY) !== 0)
      continue;
    const a = n.dst.readUInt32BE(0);
    if (want.neigh4.get(a) === n.mac) have4.add(a);
    else del.push({ op: 'del', kind: 'neigh4', dst: a, mac: n.mac ?? '' });
  }
  const have6 = new Set<string>();
  for (const n of have.neigh6) {
    if (n.index !== ix || n.dst?.length !== 16 || (n.state & NUD_PERMANENT) === 0 || (n.flags & NTF_PROXY) !== 0)
      continue;
    const a = n.dst.toString('hex');
    if (want.neigh6.get(a) === n.mac) have6.add(a);
    else del.push({ op: 'del', kind: 'neigh6', dst: a, mac: n.mac ?? '' });
  }
  const haveProxies = new Set<number>();
  for (const n of have.proxies) {
    if (n.index !== ix || n.dst?.length !== 4 || (n.flags & NTF_PROXY) === 0) continue;
    const a = n.dst.readUInt32BE(0);
    if (want.proxies.has(a)) haveProxies.add(a);
    else del.push({ op: 'del', kind: 'proxy', dst: a });
  }
  const haveFdb = new Set<string>();
  const haveFlood = new Set<number>();
  for (const f of have.fdb) {
    if (f.index !== ix || f.mac === undefined || f.dst?.length !== 4) continue;
    const dst = f.dst.readUInt32BE(0);
    if (f.mac === FLOOD_MAC) {
      if (want.flood.has(dst)) haveFlood.add(dst);
      else del.push({ op: 'del', kind: 'flood', mac: FLOOD_MAC, dst });
      continue;
    }
    if ((Number.parseInt(f.mac.slice(0, 2), 16) & 1) === 1) continue; // multicast: not ours
    if (want.fdb.get(f.mac) === dst) haveFdb.add(f.mac);
    else del.push({ op: 'del', kind: 'fdb', mac: f.mac, dst });
  }

  for (const [mac, dst] of want.fdb) if (!haveFdb.has(mac)) add.push({ op: 'add', kind: 'fdb', mac, dst });
  for (const dst of want.flood) if (!haveFlood.has(dst)) add.push({ op: 'add', kind: 'flood', mac: FLOOD_MAC, dst });
  for (const [a, mac] of want.neigh4) if (!have4.has(a)) add.push({ op: 'add', kind: 'neigh4', dst: a, mac });
  for (const [a, mac] of want.neigh6) if (!have6.has(a)) add.push({ op: 'add', kind: 'neigh6', dst: a, mac });
  for (const a of want.proxies) if (!haveProxies.has(a)) add.push({ op: 'add', kind: 'proxy', dst: a });
  for (const [k, r] of want.routes) {
    if (haveRoutes.has(k)) continue;
    add.push({
      op: 'add',
      kind: 'route',
      addr: r.addr,
      prefix: r.prefix,
      gw: r.gw === 0 ? undefined : r.gw,
      oif: ix,
      src: r.src,
    });
  }
  // Routes go before the entries they use when removing.
  del.sort((a, b) => Number(b.kind === 'route') - Number(a.kind === 'route'));
  return [...del, ...add];
}

/** ChangeRequest is one netlink request (Netlink.request's arguments). */
export interface ChangeRequest {
  readonly type: number;
  readonly flags: number;
  readonly fixed: Buffer;
  readonly attrs: Attr[];
  readonly what: string;
}

/** changeRequest is the netlink request that makes one change on device `ix`. */
export function changeRequest(c: FastdpChange, ix: number): ChangeRequest {
  const add = c.op === 'add';
  switch (c.kind) {
    case 'route': {
      const attrs = [
        ...(c.src === 0 ? [] : [attrBytes(RTA_PREFSRC, ipv4Bytes(c.src))]),
        ...(c.prefix > 0 ? [attrBytes(RTA_DST, ipv4Bytes(c.addr))] : []),
        ...(c.gw === undefined ? [] : [attrBytes(RTA_GATEWAY, ipv4Bytes(c.gw))]),
        ...(c.oif === undefined ? [] : [attrU32(RTA_OIF, c.oif)]),
      ];
      if (!add)
        // Scope "nowhere" matches a route of any scope (onlink universe, or on-link through the device).
        return {
          type: RTM_DELROUTE,
          flags: 0,
          fixed: rtmsg(c.prefix, RTPROT_WEFT, RT_SCOPE_NOWHERE, 0),
          attrs,
          what: 'delete route',
        };
      const fixed =
        c.gw === undefined
          ? rtmsg(c.prefix, RTPROT_WEFT, RT_SCOPE_LINK, 0)
          : rtmsg(c.prefix, RTPROT_WEFT, RT_SCOPE_UNIVERSE, RTNH_F_ONLINK);
      return { type: RTM_NEWROUTE, flags: NLM_F_CREATE | NLM_F_EXCL, fixed, attrs, what: 'add route' };
    }
    case 'fdb':
    case 'flood': {
      const attrs = [attrBytes(NDA_LLADDR, macBytes(c.mac)), attrBytes(NDA_DST, ipv4Bytes(c.dst))];
      if (!add)
        return {
          type: RTM_DELNEIGH,
          flags: 0,
          fixed: ndmsg(AF_BRIDGE, ix, 0, NTF_SELF),
          attrs,
          what: `delete ${c.kind} entry`,
        };
      // All-zeros entries are a list of destinations: append, never replace another bare host's.
      return {
        type: RTM_NEWNEIGH,
        flags: NLM_F_CREATE | (c.kind === 'flood' ? NLM_F_APPEND : NLM_F_REPLACE),
        fixed: ndmsg(AF_BRIDGE, ix, NUD_PERMANENT, NTF_SELF),
        attrs,
        what: `add ${c.kind} entry`,
      };
    }
    case 'neigh4':
    case 'neigh6': {
      const family = c.kind === 'neigh4' ? AF_INET : AF_INET6;
      const dst = c.kind === 'neigh4' ? ipv4Bytes(c.dst) : Buffer.from(c.dst, 'hex');
      if (!add)
        return {
          type: RTM_DELNEIGH,
          flags: 0,
          fixed: ndmsg(family, ix),
          attrs: [attrBytes(NDA_DST, dst)],
          what: 'delete neighbour',
        };
      return {
        type: RTM_NEWNEIGH,
        flags: NLM_F_CREATE | NLM_F_REPLACE,
        fixed: ndmsg(family, ix, NUD_PERMANENT),
        attrs: [attrBytes(NDA_DST, dst), attrBytes(NDA_LLADDR, macBytes(c.mac))],
        what: 'add neighbour',
      };
    }
    case 'proxy':
      return {
        type: add ? RTM_NEWNEIGH : RTM_DELNEIGH,
        flags: add ? NLM_F_CREATE | NLM_F_REPLACE : 0,
        fixed: ndmsg(AF_INET, ix, 0, NTF_PROXY),
        attrs: [attrBytes(NDA_DST, ipv4Bytes(c.dst))],
        what: `${add ? 'add' : 'delete'} proxy entry`,
      };
  }
}

/** changeText names a change for the log (`add route 10.32.0.0/13`, `delete flood 192.168.1.12`). */
export function changeText(c: FastdpChange): string {
  const ip = (a: number) => `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
  const op = c.op === 'add' ? 'add' : 'delete';
  switch (c.kind) {
    case 'route':
      return `${op} route ${ip(c.addr)}/${c.prefix}${c.gw === undefined ? '' : ` via ${ip(c.gw)}`}`;
    case 'fdb':
    case 'flood':
      return `${op} ${c.kind} ${c.mac} dst ${ip(c.dst)}`;
    case 'neigh4':
      return `${op} neigh ${ip(c.dst)}`;
    case 'neigh6':
      return `${op} neigh6 ${c.dst}`;
    case 'proxy':
      return `${op} proxy ${ip(c.dst)}`;
  }
}
