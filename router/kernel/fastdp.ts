/**
 * KernelFastPath owns the kernel vxlan device `weft-vx` (the "fastdp" data path) and keeps its
 * forwarding state equal to what the router wants, over netlink (netlink.ts), never `ip`.
 *
 * ```
 *  container ─veth─ host stack ── route 10.32.64.0/18 via U2 dev weft-vx onlink proto weft
 *                                   neigh U2 lladdr M2 dev weft-vx permanent
 *                                   fdb   M2 dst U2 dev weft-vx self permanent
 *                    weft-vx (VNI, dstport, nolearning, df set, local U1)  ── UDP U1 → U2:port ──▶ host 2
 *  heartbeats:       fe80::eui64(M1)%weft-vx ⇄ fe80::eui64(M2)%weft-vx (neigh fe80::… lladdr M2)
 * ```
 *
 * Every peer whose fast path may work gets an fdb entry towards its underlay address and
 * neighbour entries for its underlay address (the IPv4 routes' onlink gateway) and for its
 * link-local IPv6 address (the heartbeats); only peers whose heartbeats are answered also get
 * routes for their addresses. A peer's MAC on weft-vx is derived from its peer name
 * (`fastdpMac`), so nothing extra is gossiped. Routes carry rtm_protocol RTPROT_WEFT: `sync`
 * removes any such route, and any permanent entry on weft-vx, that it did not ask for (the
 * leftovers of a crashed router). `sync` only talks to the kernel when the wanted state changed
 * (or `force`); a failed entry is logged and retried at the next sync, never thrown.
 */
import type { Logger } from '../../common/log.js';
import type { PeerName } from '../../common/types.js';
import {
  AF_BRIDGE,
  AF_INET,
  AF_INET6,
  attrBe16,
  attrBytes,
  attrNested,
  attrStr,
  attrU8,
  attrU32,
  decodeLink,
  decodeNeigh,
  decodeRoute,
  IFA_ADDRESS,
  IFA_F_NODAD,
  IFA_F_PERMANENT,
  IFA_FLAGS,
  IFA_LOCAL,
  IFF_UP,
  IFLA_ADDRESS,
  IFLA_AF_SPEC,
  IFLA_IFNAME,
  IFLA_INET6_ADDR_GEN_MODE,
  IFLA_INFO_DATA,
  IFLA_INFO_KIND,
  IFLA_LINKINFO,
  IFLA_MTU,
  IFLA_VXLAN_DF,
  IFLA_VXLAN_ID,
  IFLA_VXLAN_LEARNING,
  IFLA_VXLAN_LOCAL,
  IFLA_VXLAN_PORT,
  IN6_ADDR_GEN_MODE_NONE,
  ifaddrmsg,
  ifinfomsg,
  ipv4Bytes,
  type Link,
  macBytes,
  NDA_DST,
  NDA_LLADDR,
  type Netlink,
  NetlinkError,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REPLACE,
  NTF_SELF,
  NUD_PERMANENT,
  ndmsg,
  RT_SCOPE_LINK,
  RT_SCOPE_UNIVERSE,
  RT_TABLE_MAIN,
  RTA_DST,
  RTA_GATEWAY,
  RTA_OIF,
  RTA_PREFSRC,
  RTM_DELLINK,
  RTM_DELNEIGH,
  RTM_DELROUTE,
  RTM_GETLINK,
  RTM_GETNEIGH,
  RTM_GETROUTE,
  RTM_NEWADDR,
  RTM_NEWLINK,
  RTM_NEWNEIGH,
  RTM_NEWROUTE,
  RTNH_F_ONLINK,
  RTPROT_WEFT,
  rtmsg,
  VXLAN_DF_SET,
} from './netlink.js';

/** FASTDP_DEVICE is the kernel vxlan device's name. */
export const FASTDP_DEVICE = 'weft-vx';
/** VXLAN_IPV4_OVERHEAD_BYTES: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14). */
export const VXLAN_IPV4_OVERHEAD_BYTES = 50;

/** fastdpMac is a peer's MAC on weft-vx: its name with the locally administered bit set, unicast. */
export function fastdpMac(name: PeerName): string {
  const b = macBytes(name);
  b[0] = ((b[0] ?? 0) | 0x02) & 0xfe;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** linkLocal6 is the EUI-64 IPv6 link-local address of a MAC, as 16 bytes. */
export function linkLocal6(mac: string): Buffer {
  const m = macBytes(mac);
  return Buffer.from([
    0xfe,
    0x80,
    0,
    0,
    0,
    0,
    0,
    0,
    (m[0] ?? 0) ^ 0x02,
    m[1] ?? 0,
    m[2] ?? 0,
    0xff,
    0xfe,
    m[3] ?? 0,
    m[4] ?? 0,
    m[5] ?? 0,
  ]);
}

/** linkLocal6Text formats linkLocal6 the way Node's dgram reports it (without the scope). */
export function linkLocal6Text(mac: string): string {
  const b = linkLocal6(mac);
  const words: string[] = [];
  for (let i = 8; i < 16; i += 2) words.push(((b[i] ?? 0) * 256 + (b[i + 1] ?? 0)).toString(16));
  return `fe80::${words.join(':')}`;
}

/** FastPeer is what the fast path needs about one peer. */
export interface FastPeer {
  readonly name: PeerName;
  /** underlay is the peer's underlay IPv4 address (host order). */
  readonly underlay: number;
  /** routes are the peer's addresses to route through weft-vx: empty while its heartbeats fail. */
  readonly routes: readonly { readonly addr: number; readonly prefix: number }[];
}

/** FastPathOptions configure a KernelFastPath. */
export interface FastPathOptions {
  readonly nl: Netlink;
  readonly log: Logger;
  readonly self: PeerName;
  readonly vni: number;
  readonly port: number;
  /** local is our underlay address (host order), the device's `local`. */
  readonly local: number;
  readonly mtu: number;
  readonly device?: string;
}

/** FastPathStats counts what sync did (status and tests). */
export interface FastPathStats {
  syncs: number;
  added: number;
  removed: number;
  errors: number;
}

interface Want {
  fdb: Map<string, number>; // mac → underlay
  neigh4: Map<number, string>; // underlay → mac
  neigh6: Map<string, string>; // ll6 hex → mac
  routes: Map<string, { addr: number; prefix: number; gw: number; src: number }>; // "addr/prefix" → route
}

/** KernelFastPath: see the module comment. */
export class KernelFastPath {
  readonly device: string;
  readonly mac: string;
  readonly stats: FastPathStats = { syncs: 0, added: 0, removed: 0, errors: 0 };
  private index = 0;
  private lastKey = '';
  private readonly o: FastPathOptions;

  constructor(o: FastPathOptions) {
    this.o = o;
    this.device = o.device ?? FASTDP_DEVICE;
    this.mac = fastdpMac(o.self);
  }

  /** ifindex is the device's index (0 before open). */
  get ifindex(): number {
    return this.index;
  }

  /**
   * open makes sure weft-vx exists with our VNI, port, local address, MTU and MAC (an existing
   * device that differs is replaced; a device of that name that is not vxlan is an error), brings
   * it up and gives it its link-local address. Throws NetlinkError.
   */
  open(): void {
    const nl = this.o.nl;
    const old = this.link();
    if (old !== undefined) {
      if (old.kind !== 'vxlan')
        throw new NetlinkError(`${this.device} exists and is not a vxlan device (${old.kind ?? 'unknown'})`, 17);
      if (!this.matches(old)) {
        this.o.log.info('fastdp device replaced', { device: this.device, vni: old.vni, port: old.port });
        nl.request(RTM_DELLINK, 0, ifinfomsg(old.index), [], `delete ${this.device}`);
      }
    }
    let link = this.link();
    if (link === undefined) {
      nl.request(
        RTM_NEWLINK,
        NLM_F_CREATE | NLM_F_EXCL,
        ifinfomsg(0),
        [
          attrStr(IFLA_IFNAME, this.device),
          attrU32(IFLA_MTU, this.o.mtu),
          attrBytes(IFLA_ADDRESS, macBytes(this.mac)),
          attrNested(IFLA_LINKINFO, [
            attrStr(IFLA_INFO_KIND, 'vxlan'),
            attrNested(IFLA_INFO_DATA, [
              attrU32(IFLA_VXLAN_ID, this.o.vni),
              ...(this.o.local === 0 ? [] : [attrBytes(IFLA_VXLAN_LOCAL, ipv4Bytes(this.o.local))]),
              attrBe16(IFLA_VXLAN_PORT, this.o.port),
              attrU8(IFLA_VXLAN_LEARNING, 0),
              attrU8(IFLA_VXLAN_DF, VXLAN_DF_SET),
            ]),
          ]),
        ],
        `create ${this.device}`,
      );
      link = this.link();
      if (link === undefined) throw new NetlinkError(`${this.device} vanished after creation`, 19);
    } else if (link.mtu !== this.o.mtu) {
      nl.request(RTM_NEWLINK, 0, ifinfomsg(link.index), [attrU32(IFLA_MTU, this.o.mtu)], `set ${this.device} mtu`);
    }
    this.index = link.index;
    // No address of the kernel's making (its DAD would hold it tentative): ours below, without DAD.
    // Set once the device exists: the kernel refuses IPv6 settings in the creating message.
    nl.request(
      RTM_NEWLINK,
      0,
      ifinfomsg(link.index),
      [attrNested(IFLA_AF_SPEC, [attrNested(AF_INET6, [attrU8(IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE)])])],
      `set ${this.device} addrgenmode`,
    );
    nl.request(RTM_NEWLINK, 0, ifinfomsg(link.index, IFF_UP, IFF_UP), [], `set ${this.device} up`);
    const ll = linkLocal6(this.mac);
    nl.request(
      RTM_NEWADDR,
      NLM_F_CREATE | NLM_F_REPLACE,
      ifaddrmsg(AF_INET6, 64, IFA_F_NODAD | IFA_F_PERMANENT, RT_SCOPE_LINK, link.index),
      [attrBytes(IFA_LOCAL, ll), attrBytes(IFA_ADDRESS, ll), attrU32(IFA_FLAGS, IFA_F_NODAD | IFA_F_PERMANENT)],
      `address ${this.device}`,
    );
    this.lastKey = '';
  }

  private matches(l: Link): boolean {
    return (
      l.vni === this.o.vni &&
      l.port === this.o.port &&
      (this.o.local === 0 ? (l.local ?? 0) === 0 : l.local === this.o.local) &&
      l.learning === 0 &&
      l.df === VXLAN_DF_SET &&
      l.mac === this.mac
    );
  }

  /** link reads the device (undefined when absent). */
  link(): Link | undefined {
    const p = this.o.nl.get(
      RTM_GETLINK,
      ifinfomsg(0),
      [attrStr(IFLA_IFNAME, this.device)],
      RTM_NEWLINK,
      `get ${this.device}`,
    );
    return p === undefined ? undefined : decodeLink(p);
  }

  /**
   * sync makes the kernel's fdb, neighbour and route entries on weft-vx what `peers` ask for and
   * removes the rest of ours. Skipped when nothing changed since the last sync unless `force`.
   */
  sync(peers: readonly FastPeer[], force = false, src = 0): void {
    if (this.index === 0) return;
    const want = this.want(peers, src);
    const key = JSON.stringify([[...want.fdb], [...want.neigh4], [...want.neigh6], [...want.routes.keys()], src]);
    if (!force && key === this.lastKey) return;
    this.stats.syncs++;
    let ok = true;
    try {
      ok = this.apply(want);
    } catch (err) {
      ok = false;
      this.stats.errors++;
      this.o.log.warn('fastdp sync failed', { device: this.device, err: (err as Error).message });
    }
    this.lastKey = ok ? key : '';
  }

  private want(peers: readonly FastPeer[], src: number): Want {
    const w: Want = { fdb: new Map(), neigh4: new Map(), neigh6: new Map(), routes: new Map() };
    for (const p of peers) {
      const mac = fastdpMac(p.name);
      w.fdb.set(mac, p.underlay);
      w.neigh4.set(p.underlay, mac);
      w.neigh6.set(linkLocal6(mac).toString('hex'), mac);
      for (const r of p.routes) {
        const addr = r.prefix === 0 ? 0 : (r.addr & (~0 << (32 - r.prefix))) >>> 0;
        w.routes.set(`${addr}/${r.prefix}`, { addr, prefix: r.prefix, gw: p.underlay, src });
      }
    }
    return w;
  }

  /** apply diffs `want` against the kernel's tables; returns false when any change failed. */
  private apply(want: Want): boolean {
    const nl = this.o.nl;
    const ix = this.index;
    let ok = true;
    const change = (what: string, fn: () => void, add: boolean): void => {
      try {
        fn();
        if (add) this.stats.added++;
        else this.stats.removed++;
      } catch (err) {
        ok = false;
        this.stats.errors++;
        this.o.log.warn('fastdp entry failed', { device: this.device, entry: what, err: (err as Error).message });
      }
    };
    // What is there now.
    const routes = nl
      .dump(RTM_GETROUTE, rtmsg(0, 0, 0, 0), [], RTM_NEWROUTE, 'dump routes')
      .map(decodeRoute)
      .filter((r) => r !== undefined && r.protocol === RTPROT_WEFT && r.table === RT_TABLE_MAIN);
    const neighs = nl.dump(RTM_GETNEIGH, ndmsg(AF_INET, 0), [], RTM_NEWNEIGH, 'dump neighbours').map(decodeNeigh);
    const neighs6 = nl.dump(RTM_GETNEIGH, ndmsg(AF_INET6, 0), [], RTM_NEWNEIGH, 'dump neighbours').map(decodeNeigh);
    const fdb = nl.dump(RTM_GETNEIGH, ndmsg(AF_BRIDGE, ix), [], RTM_NEWNEIGH, 'dump fdb').map(decodeNeigh);

    // Removals first, routes before the entries they use.
    const haveRoutes = new Set<string>();
    for (const r of routes) {
      if (r === undefined) continue;
      const k = `${r.dst}/${r.dstLen}`;
      const w = want.routes.get(k);
      if (w !== undefined && r.oif === ix && r.gateway === w.gw && (r.prefsrc ?? 0) === w.src) {
        haveRoutes.add(k);
        continue;
      }
      change(
        `route ${k}`,
        () =>
          nl.request(
            RTM_DELROUTE,
            0,
            rtmsg(r.dstLen, RTPROT_WEFT, RT_SCOPE_UNIVERSE, 0),
            this.routeAttrs(r.dst, r.dstLen, r.gateway, r.oif),
            'delete route',
          ),
        false,
      );
    }
    const have4 = new Set<number>();
    for (const n of neighs) {
      if (n.index !== ix || n.dst?.length !== 4 || (n.state & NUD_PERMANENT) === 0) continue;
      const a = n.dst.readUInt32BE(0);
      if (want.neigh4.get(a) === n.mac) {
        have4.add(a);
        continue;
      }
      change(
        `neigh ${a}`,
        () =>
          nl.request(RTM_DELNEIGH, 0, ndmsg(AF_INET, ix), [attrBytes(NDA_DST, n.dst as Buffer)], 'delete neighbour'),
        false,
      );
    }
    const have6 = new Set<string>();
    for (const n of neighs6) {
      if (n.index !== ix || n.dst?.length !== 16 || (n.state & NUD_PERMANENT) === 0) continue;
      const a = n.dst.toString('hex');
      if (want.neigh6.get(a) === n.mac) {
        have6.add(a);
        continue;
      }
      change(
        `neigh6 ${a}`,
        () =>
          nl.request(RTM_DELNEIGH, 0, ndmsg(AF_INET6, ix), [attrBytes(NDA_DST, n.dst as Buffer)], 'delete neighbour'),
        false,
      );
    }
    const haveFdb = new Set<string>();
    for (const f of fdb) {
      if (f.index !== ix || f.mac === undefined || f.dst?.length !== 4) continue;
      if ((Number.parseInt(f.mac.slice(0, 2), 16) & 1) === 1) continue; // multicast: not ours
      const dst = f.dst.readUInt32BE(0);
      if (want.fdb.get(f.mac) === dst) {
        haveFdb.add(f.mac);
        continue;
      }
      const mac = f.mac;
      const fdst = f.dst;
      change(
        `fdb ${mac}`,
        () =>
          nl.request(
            RTM_DELNEIGH,
            0,
            ndmsg(AF_BRIDGE, ix, 0, NTF_SELF),
            [attrBytes(NDA_LLADDR, macBytes(mac)), attrBytes(NDA_DST, fdst)],
            'delete fdb entry',
          ),
        false,
      );
    }

    // Additions: fdb and neighbours before the routes that need them.
    for (const [mac, dst] of want.fdb) {
      if (haveFdb.has(mac)) continue;
      change(
        `fdb ${mac}`,
        () =>
          nl.request(
            RTM_NEWNEIGH,
            NLM_F_CREATE | NLM_F_REPLACE,
            ndmsg(AF_BRIDGE, ix, NUD_PERMANENT, NTF_SELF),
            [attrBytes(NDA_LLADDR, macBytes(mac)), attrBytes(NDA_DST, ipv4Bytes(dst))],
            'add fdb entry',
          ),
        true,
      );
    }
    for (const [a, mac] of want.neigh4) {
      if (have4.has(a)) continue;
      change(
        `neigh ${a}`,
        () =>
          nl.request(
            RTM_NEWNEIGH,
            NLM_F_CREATE | NLM_F_REPLACE,
            ndmsg(AF_INET, ix, NUD_PERMANENT),
            [attrBytes(NDA_DST, ipv4Bytes(a)), attrBytes(NDA_LLADDR, macBytes(mac))],
            'add neighbour',
          ),
        true,
      );
    }
    for (const [a, mac] of want.neigh6) {
      if (have6.has(a)) continue;
      change(
        `neigh6 ${a}`,
        () =>
          nl.request(
            RTM_NEWNEIGH,
            NLM_F_CREATE | NLM_F_REPLACE,
            ndmsg(AF_INET6, ix, NUD_PERMANENT),
            [attrBytes(NDA_DST, Buffer.from(a, 'hex')), attrBytes(NDA_LLADDR, macBytes(mac))],
            'add neighbour',
          ),
        true,
      );
    }
    for (const [k, r] of want.routes) {
      if (haveRoutes.has(k)) continue;
      change(
        `route ${k}`,
        () =>
          nl.request(
            RTM_NEWROUTE,
            NLM_F_CREATE | NLM_F_EXCL,
            rtmsg(r.prefix, RTPROT_WEFT, RT_SCOPE_UNIVERSE, RTNH_F_ONLINK),
            this.routeAttrs(r.addr, r.prefix, r.gw, ix, r.src),
            'add route',
          ),
        true,
      );
    }
    return ok;
  }

  private routeAttrs(dst: number, prefix: number, gw: number | undefined, oif: number | undefined, src = 0) {
    return [
      ...(src === 0 ? [] : [attrBytes(RTA_PREFSRC, ipv4Bytes(src))]),
      ...(prefix > 0 ? [attrBytes(RTA_DST, ipv4Bytes(dst))] : []),
      ...(gw === undefined ? [] : [attrBytes(RTA_GATEWAY, ipv4Bytes(gw))]),
      ...(oif === undefined ? [] : [attrU32(RTA_OIF, oif)]),
    ];
  }

  /** close deletes the device (its fdb, neighbours and routes go with it); idempotent, never throws. */
  close(): void {
    if (this.index === 0) return;
    const ix = this.index;
    this.index = 0;
    try {
      this.o.nl.request(RTM_DELLINK, 0, ifinfomsg(ix), [], `delete ${this.device}`);
    } catch (err) {
      if (!(err instanceof NetlinkError && err.errno === 19))
        this.o.log.warn('fastdp device not removed', { device: this.device, err: (err as Error).message });
    }
  }
}

/** removeFastPathDevice deletes weft-vx if it exists (weft reset); returns whether it did. */
export function removeFastPathDevice(nl: Netlink, device = FASTDP_DEVICE): boolean {
  const p = nl.get(RTM_GETLINK, ifinfomsg(0), [attrStr(IFLA_IFNAME, device)], RTM_NEWLINK, `get ${device}`);
  if (p === undefined) return false;
  const l = decodeLink(p);
  if (l.kind !== 'vxlan') return false;
  nl.request(RTM_DELLINK, 0, ifinfomsg(l.index), [], `delete ${device}`);
  return true;
}
