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
 * (`fastdpMac`), so nothing extra is gossiped. Bare kernel vxlan hosts (`--vxlan-peer`) get an
 * all-zeros fdb entry each, proxy entries for our own addresses and our share on-link
 * (`BareWant`, kernel/bare-peers.ts). Routes carry rtm_protocol RTPROT_WEFT: `sync` removes any
 * such route, and any permanent, all-zeros or proxy entry on weft-vx, that it did not ask for (the
 * leftovers of a crashed router; the plan is fastdp-plan.ts). `sync` only talks to the kernel when
 * the wanted state changed (or `force`); a failed entry is logged and retried at the next sync,
 * never thrown.
 */
import type { Logger } from '../../common/log.js';
import type { PeerName } from '../../common/types.js';
import {
  changeRequest,
  changeText,
  emptyWant,
  type FastdpHave,
  type FastdpWant,
  planFastdp,
  wantKey,
} from './fastdp-plan.js';
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
  attrU64,
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
  NDTA_NAME,
  NDTA_PARMS,
  NDTPA_IFINDEX,
  NDTPA_PROXY_DELAY,
  type Netlink,
  NetlinkError,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REPLACE,
  NTF_PROXY,
  NUD_FAILED,
  NUD_INCOMPLETE,
  NUD_NOARP,
  NUD_PERMANENT,
  ndmsg,
  ndtmsg,
  RT_SCOPE_HOST,
  RT_SCOPE_LINK,
  RT_SCOPE_NOWHERE,
  RT_TABLE_LOCAL,
  RTA_DST,
  RTA_OIF,
  RTM_DELADDR,
  RTM_DELLINK,
  RTM_DELROUTE,
  RTM_GETLINK,
  RTM_GETNEIGH,
  RTM_GETROUTE,
  RTM_NEWADDR,
  RTM_NEWLINK,
  RTM_NEWNEIGH,
  RTM_NEWROUTE,
  RTM_SETNEIGHTBL,
  RTN_LOCAL,
  rtmsg,
  VXLAN_DF_SET,
} from './netlink.js';

/** FASTDP_DEVICE is the kernel vxlan device's name. */
export const FASTDP_DEVICE = 'weft-vx';
/**
 * RPF_ANCHOR (192.0.0.8, RFC 7600's "IPv4 dummy address", never a destination on any network; the
 * kernel's own ICMP source when a device has none) is the IPv4 address weft-vx and the TUN device
 * carry, /32 with scope host, only so that they have one. With reverse-path filtering on (rp_filter
 * 1 or 2 on `all` or the device) the kernel drops a packet that arrives on a device the route back
 * does not use when that device has no IPv4 address at all, loose mode included
 * (fib_frontend.c, __fib_validate_source: `no_addr` → last_resort → -EXDEV); with one, loose mode
 * only asks that a route back exists. That happens at every switch of a peer between sleeve and
 * the fast path, when one end has moved and the other not yet. A /32 adds no prefix or broadcast
 * route, only the local route for itself, which setRpfAnchor deletes again: the host then neither
 * answers ARP for 192.0.0.8 nor takes packets to it (the filter only asks whether the device has
 * an address). Scope host keeps it out of source address selection, so no packet leaves with it.
 */
export const RPF_ANCHOR = 0xc0000008;
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

/**
 * BareWant is what bare kernel vxlan hosts (`--vxlan-peer`, no Weft router there) need on
 * weft-vx: an all-zeros fdb entry towards each (`flood`: their ARP answers and whatever weft-vx
 * has no fdb entry for go there), proxy entries so the kernel answers their ARP for our own
 * overlay addresses (`proxies`), and on-link routes through weft-vx for our IPAM share that no
 * other peer announces (`routes`: a bare host's addresses live there, found by ARP).
 */
export interface BareWant {
  readonly flood: readonly number[];
  readonly proxies: readonly number[];
  readonly routes: readonly { readonly addr: number; readonly prefix: number }[];
}

/** NO_BARE: no bare kernel vxlan hosts. */
export const NO_BARE: BareWant = { flood: [], proxies: [], routes: [] };

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
    setRpfAnchor(nl, link.index, this.device);
    this.answerArpAtOnce(link.index);
    this.lastKey = '';
  }

  /**
   * answerArpAtOnce sets weft-vx's proxy_delay to 0: the kernel answers a bare host's ARP for our
   * addresses (proxy entries) at once instead of after up to 0.8 s. A refusal only slows ARP down.
   */
  private answerArpAtOnce(index: number): void {
    try {
      this.o.nl.request(
        RTM_SETNEIGHTBL,
        0,
        ndtmsg(AF_INET),
        [
          attrStr(NDTA_NAME, 'arp_cache'),
          attrNested(NDTA_PARMS, [attrU32(NDTPA_IFINDEX, index), attrU64(NDTPA_PROXY_DELAY, 0)]),
        ],
        `set ${this.device} proxy_delay`,
      );
    } catch (err) {
      this.o.log.warn('fastdp proxy_delay not set', { device: this.device, err: (err as Error).message });
    }
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
   * sync makes the kernel's fdb, neighbour, proxy and route entries on weft-vx what `peers` and
   * `bare` ask for and removes the rest of ours. Skipped when nothing changed since the last sync
   * unless `force`.
   */
  sync(peers: readonly FastPeer[], force = false, src = 0, bare: BareWant = NO_BARE): void {
    if (this.index === 0) return;
    const want = this.want(peers, src, bare);
    const key = wantKey(want);
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

  private want(peers: readonly FastPeer[], src: number, bare: BareWant): FastdpWant {
    const w = emptyWant();
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
    for (const a of bare.flood) w.flood.add(a >>> 0);
    for (const a of bare.proxies) w.proxies.add(a >>> 0);
    for (const r of bare.routes) {
      const k = `${r.addr >>> 0}/${r.prefix}`;
      if (!w.routes.has(k)) w.routes.set(k, { addr: r.addr >>> 0, prefix: r.prefix, gw: 0, src });
    }
    return w;
  }

  /** have reads what the kernel holds (the tables planFastdp compares). */
  private have(): FastdpHave {
    const nl = this.o.nl;
    return {
      routes: nl.dump(RTM_GETROUTE, rtmsg(0, 0, 0, 0), [], RTM_NEWROUTE, 'dump routes').map(decodeRoute),
      neigh4: nl.dump(RTM_GETNEIGH, ndmsg(AF_INET, 0), [], RTM_NEWNEIGH, 'dump neighbours').map(decodeNeigh),
      neigh6: nl.dump(RTM_GETNEIGH, ndmsg(AF_INET6, 0), [], RTM_NEWNEIGH, 'dump neighbours').map(decodeNeigh),
      fdb: nl.dump(RTM_GETNEIGH, ndmsg(AF_BRIDGE, this.index), [], RTM_NEWNEIGH, 'dump fdb').map(decodeNeigh),
      proxies: nl
        .dump(RTM_GETNEIGH, ndmsg(AF_INET, 0, 0, NTF_PROXY), [], RTM_NEWNEIGH, 'dump proxy entries')
        .map(decodeNeigh),
    };
  }

  /** apply makes the changes planFastdp lists; returns false when any failed. */
  private apply(want: FastdpWant): boolean {
    let ok = true;
    for (const c of planFastdp(want, this.have(), this.index)) {
      const r = changeRequest(c, this.index);
      try {
        this.o.nl.request(r.type, r.flags, r.fixed, r.attrs, r.what);
        if (c.op === 'add') this.stats.added++;
        else this.stats.removed++;
      } catch (err) {
        ok = false;
        this.stats.errors++;
        this.o.log.warn('fastdp entry failed', {
          device: this.device,
          entry: changeText(c),
          err: (err as Error).message,
        });
      }
    }
    return ok;
  }

  /**
   * neighbours lists the IPv4 neighbours the kernel learned on weft-vx (not Weft's permanent
   * ones): the addresses bare kernel vxlan hosts use, seen by ARP. Empty when closed or on error.
   */
  neighbours(): { ip: number; mac: string; state: number }[] {
    if (this.index === 0) return [];
    try {
      return this.o.nl
        .dump(RTM_GETNEIGH, ndmsg(AF_INET, 0), [], RTM_NEWNEIGH, 'dump neighbours')
        .map(decodeNeigh)
        .filter(
          (n) =>
            n.index === this.index &&
            n.dst?.length === 4 &&
            n.mac !== undefined &&
            (n.state & (NUD_PERMANENT | NUD_NOARP | NUD_INCOMPLETE | NUD_FAILED)) === 0 &&
            n.state !== 0,
        )
        .map((n) => ({ ip: (n.dst as Buffer).readUInt32BE(0), mac: n.mac as string, state: n.state }));
    } catch (err) {
      this.o.log.warn('fastdp neighbours not read', { device: this.device, err: (err as Error).message });
      return [];
    }
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

/**
 * setRpfAnchor gives a device RPF_ANCHOR/32 scope host and deletes the local route the kernel
 * adds for it (idempotent). Throws NetlinkError.
 */
export function setRpfAnchor(nl: Netlink, index: number, device: string): void {
  const a = ipv4Bytes(RPF_ANCHOR);
  nl.request(
    RTM_NEWADDR,
    NLM_F_CREATE | NLM_F_REPLACE,
    ifaddrmsg(AF_INET, 32, IFA_F_PERMANENT, RT_SCOPE_HOST, index),
    [attrBytes(IFA_LOCAL, a), attrBytes(IFA_ADDRESS, a)],
    `address ${device} ${RPF_ANCHOR_TEXT}`,
  );
  try {
    nl.request(
      RTM_DELROUTE,
      0,
      rtmsg(32, 0, RT_SCOPE_NOWHERE, 0, RT_TABLE_LOCAL, RTN_LOCAL),
      [attrBytes(RTA_DST, a), attrU32(RTA_OIF, index)],
      `delete the local route of ${RPF_ANCHOR_TEXT} on ${device}`,
    );
  } catch (err) {
    if (!(err instanceof NetlinkError && err.errno === 3)) throw err; // ESRCH: already gone
  }
}

/**
 * clearRpfAnchor removes RPF_ANCHOR from a device; returns whether it was there (a device or
 * address already gone is no error). Throws NetlinkError otherwise.
 */
export function clearRpfAnchor(nl: Netlink, index: number, device: string): boolean {
  const a = ipv4Bytes(RPF_ANCHOR);
  try {
    nl.request(
      RTM_DELADDR,
      0,
      ifaddrmsg(AF_INET, 32, 0, RT_SCOPE_HOST, index),
      [attrBytes(IFA_LOCAL, a), attrBytes(IFA_ADDRESS, a)],
      `remove ${RPF_ANCHOR_TEXT} from ${device}`,
    );
    return true;
  } catch (err) {
    if (err instanceof NetlinkError && (err.errno === 99 || err.errno === 19)) return false; // EADDRNOTAVAIL, ENODEV
    throw err;
  }
}

/** linkIndex is a device's ifindex by name (0 when absent). */
export function linkIndex(nl: Netlink, device: string): number {
  const p = nl.get(RTM_GETLINK, ifinfomsg(0), [attrStr(IFLA_IFNAME, device)], RTM_NEWLINK, `get ${device}`);
  return p === undefined ? 0 : decodeLink(p).index;
}

const RPF_ANCHOR_TEXT = '192.0.0.8/32';

/** removeFastPathDevice deletes weft-vx if it exists (weft reset); returns whether it did. */
export function removeFastPathDevice(nl: Netlink, device = FASTDP_DEVICE): boolean {
  const p = nl.get(RTM_GETLINK, ifinfomsg(0), [attrStr(IFLA_IFNAME, device)], RTM_NEWLINK, `get ${device}`);
  if (p === undefined) return false;
  const l = decodeLink(p);
  if (l.kind !== 'vxlan') return false;
  nl.request(RTM_DELLINK, 0, ifinfomsg(l.index), [], `delete ${device}`);
  return true;
}
