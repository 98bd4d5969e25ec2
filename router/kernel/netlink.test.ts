import { describe, expect, it } from 'vitest';
import {
  clearRpfAnchor,
  fastdpMac,
  KernelFastPath,
  linkIndex,
  linkLocal6Text,
  RPF_ANCHOR,
  setRpfAnchor,
} from './fastdp.js';
import {
  AF_BRIDGE,
  AF_INET,
  attrBe16,
  attrBytes,
  attrNested,
  attrStr,
  attrU32,
  decodeAttrs,
  decodeLink,
  decodeMessages,
  decodeNeigh,
  decodeRoute,
  encodeMessage,
  IFA_ADDRESS,
  IFA_LOCAL,
  IFLA_IFNAME,
  IFLA_INFO_DATA,
  IFLA_INFO_KIND,
  IFLA_LINKINFO,
  IFLA_MTU,
  IFLA_VXLAN_ID,
  IFLA_VXLAN_PORT,
  ifinfomsg,
  ipv4Bytes,
  NDA_DST,
  NDA_LLADDR,
  NDTA_NAME,
  NDTA_PARMS,
  NDTPA_IFINDEX,
  NDTPA_PROXY_DELAY,
  Netlink,
  type NetlinkError,
  NetlinkFormatError,
  type NetlinkTransport,
  NLM_F_ACK,
  NLM_F_APPEND,
  NLM_F_CREATE,
  NLM_F_REPLACE,
  NLM_F_REQUEST,
  NLMSG_DONE,
  NLMSG_ERROR,
  NTF_SELF,
  NUD_PERMANENT,
  ndmsg,
  RT_SCOPE_HOST,
  RTA_DST,
  RTA_GATEWAY,
  RTA_OIF,
  RTM_DELADDR,
  RTM_DELROUTE,
  RTM_GETNEIGH,
  RTM_GETROUTE,
  RTM_NEWADDR,
  RTM_NEWLINK,
  RTM_NEWNEIGH,
  RTM_NEWROUTE,
  RTM_SETNEIGHTBL,
  RTPROT_WEFT,
  rtmsg,
} from './netlink.js';

/** FakeKernel answers each request with canned datagrams (built by `answer`) and records requests. */
class FakeKernel implements NetlinkTransport {
  readonly sent: Buffer[] = [];
  queue: Buffer[] = [];
  constructor(private readonly answer: (req: Buffer, seq: number) => Buffer[]) {}
  send(buf: Buffer): void {
    this.sent.push(buf);
    this.queue.push(...this.answer(buf, buf.readUInt32LE(8)));
  }
  recv(): Buffer | undefined {
    return this.queue.shift();
  }
  close(): void {}
}

function ack(seq: number, errno = 0): Buffer {
  const p = Buffer.alloc(20);
  p.writeInt32LE(-errno, 0);
  return encodeMessage(NLMSG_ERROR, 0, seq, p, []);
}

const done = (seq: number): Buffer => encodeMessage(NLMSG_DONE, 2, seq, Buffer.alloc(4), []);

/** openFastPath opens a KernelFastPath for peer 02:00:00:00:00:01 over the fake kernel `k` (through `nl` if given). */
function openFastPath(k: FakeKernel, log: object, nl = new Netlink(k)): KernelFastPath {
  const fp = new KernelFastPath({
    nl,
    log: log as never,
    self: '02:00:00:00:00:01' as never,
    vni: 1,
    port: 6784,
    local: 1,
    mtu: 1450,
  });
  fp.open();
  return fp;
}

/** vxlanLink is the kernel's answer to RTM_GETLINK (18) for an existing weft-vx at index 5. */
const vxlanLink = (seq: number): Buffer[] => [
  encodeMessage(RTM_NEWLINK, 0, seq, ifinfomsg(5), [
    attrStr(IFLA_IFNAME, 'weft-vx'),
    attrNested(IFLA_LINKINFO, [attrStr(IFLA_INFO_KIND, 'vxlan')]),
  ]),
];

describe('encodeMessage / decodeMessages', () => {
  it('round-trips a link message with nested, padded attributes', () => {
    const m = encodeMessage(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, 7, ifinfomsg(3), [
      attrStr(IFLA_IFNAME, 'weft-vx'),
      attrU32(IFLA_MTU, 1450),
      attrNested(IFLA_LINKINFO, [
        attrStr(IFLA_INFO_KIND, 'vxlan'),
        attrNested(IFLA_INFO_DATA, [attrU32(IFLA_VXLAN_ID, 42), attrBe16(IFLA_VXLAN_PORT, 6784)]),
      ]),
    ]);
    expect(m.length % 4).toBe(0);
    expect(m.readUInt32LE(0)).toBe(m.length);
    const [msg] = decodeMessages(m);
    expect(msg?.type).toBe(RTM_NEWLINK);
    expect(msg?.seq).toBe(7);
    const l = decodeLink(msg?.payload as Buffer);
    expect(l).toMatchObject({ index: 3, name: 'weft-vx', mtu: 1450, kind: 'vxlan', vni: 42, port: 6784 });
  });

  it('decodes a route and a neighbour', () => {
    const r = encodeMessage(RTM_NEWROUTE, 0, 1, rtmsg(18, RTPROT_WEFT, 0, 4), [
      attrBytes(RTA_DST, ipv4Bytes(0x0a204000)),
      attrBytes(RTA_GATEWAY, ipv4Bytes(0x0a000002)),
      attrU32(RTA_OIF, 9),
    ]);
    expect(decodeRoute(decodeMessages(r)[0]?.payload as Buffer)).toEqual({
      dst: 0x0a204000,
      dstLen: 18,
      table: 254,
      protocol: RTPROT_WEFT,
      oif: 9,
      gateway: 0x0a000002,
    });
    const n = encodeMessage(RTM_NEWNEIGH, 0, 1, ndmsg(AF_BRIDGE, 9, NUD_PERMANENT, NTF_SELF), [
      attrBytes(NDA_LLADDR, Buffer.from([2, 0, 0, 0, 0, 2])),
      attrBytes(NDA_DST, ipv4Bytes(0x0a000002)),
    ]);
    const d = decodeNeigh(decodeMessages(n)[0]?.payload as Buffer);
    expect(d).toMatchObject({
      family: AF_BRIDGE,
      index: 9,
      state: NUD_PERMANENT,
      flags: NTF_SELF,
      mac: '02:00:00:00:00:02',
    });
    expect(d.dst?.readUInt32BE(0)).toBe(0x0a000002);
  });

  it('refuses a message length past the datagram, a short header and an attribute past its message', () => {
    const m = encodeMessage(RTM_NEWLINK, 0, 1, ifinfomsg(1), [attrStr(IFLA_IFNAME, 'x')]);
    const long = Buffer.from(m);
    long.writeUInt32LE(m.length + 4, 0);
    expect(() => decodeMessages(long)).toThrow(NetlinkFormatError);
    expect(() => decodeMessages(m.subarray(0, 10))).toThrow(NetlinkFormatError);
    const zero = Buffer.from(m);
    zero.writeUInt32LE(0, 0);
    expect(() => decodeMessages(zero)).toThrow(NetlinkFormatError);
    const badAttr = Buffer.from(m);
    badAttr.writeUInt16LE(200, 16 + 16);
    expect(() => decodeLink(decodeMessages(badAttr)[0]?.payload as Buffer)).toThrow(NetlinkFormatError);
    expect(() => decodeAttrs(Buffer.from([3, 0, 1, 0]))).toThrow(NetlinkFormatError);
    expect(() => decodeRoute(Buffer.alloc(5))).toThrow(NetlinkFormatError);
  });
});

describe('Netlink', () => {
  it('returns on the ack of its own sequence number, skipping stale answers', () => {
    const k = new FakeKernel((_req, seq) => [ack(seq + 100, 17), ack(seq)]);
    new Netlink(k).request(RTM_NEWLINK, 0, ifinfomsg(0), [], 'x');
    expect(k.sent).toHaveLength(1);
  });

  it('throws NetlinkError with the errno of a refusal, and on silence', () => {
    const nl = new Netlink(new FakeKernel((_r, seq) => [ack(seq, 17)]));
    expect(() => nl.request(RTM_NEWLINK, 0, ifinfomsg(0), [], 'create')).toThrow(/exists/);
    try {
      nl.request(RTM_NEWLINK, 0, ifinfomsg(0), [], 'create');
    } catch (err) {
      expect((err as NetlinkError).errno).toBe(17);
    }
    expect(() => new Netlink(new FakeKernel(() => [])).request(RTM_NEWLINK, 0, ifinfomsg(0), [], 'x')).toThrow(
      /no answer/,
    );
  });

  it('collects a dump over several datagrams until NLMSG_DONE and refuses a malformed one', () => {
    const route = (seq: number, dst: number) =>
      encodeMessage(RTM_NEWROUTE, 2, seq, rtmsg(24, RTPROT_WEFT, 0, 0), [attrBytes(RTA_DST, ipv4Bytes(dst))]);
    const nl = new Netlink(
      new FakeKernel((_r, seq) => [route(seq, 1 << 24), Buffer.concat([route(seq, 2 << 24), done(seq)])]),
    );
    const got = nl.dump(26, rtmsg(0, 0, 0, 0), [], RTM_NEWROUTE, 'dump').map((p) => decodeRoute(p)?.dst);
    expect(got).toEqual([1 << 24, 2 << 24]);
    const bad = new Netlink(
      new FakeKernel((_r, seq) => {
        const b = route(seq, 1);
        b.writeUInt32LE(b.length + 100, 0);
        return [b];
      }),
    );
    expect(() => bad.dump(26, rtmsg(0, 0, 0, 0), [], RTM_NEWROUTE, 'dump')).toThrow(NetlinkFormatError);
  });
});

describe('KernelFastPath', () => {
  it('derives a unicast, locally administered MAC and its EUI-64 link-local address from a peer name', () => {
    expect(fastdpMac('03:11:22:33:44:55' as never)).toBe('02:11:22:33:44:55');
    expect(linkLocal6Text('02:11:22:33:44:55')).toBe('fe80::11:22ff:fe33:4455');
  });

  it('counts a sync the kernel answers with garbage as an error and retries it next time', () => {
    const k = new FakeKernel((req, seq) => {
      const type = req.readUInt16LE(4);
      if (type === 18) return vxlanLink(seq);
      if (type === 26) return [Buffer.from([1, 2, 3])];
      return [ack(seq)];
    });
    const log = { isDebug: false, debug() {}, info() {}, warn() {}, error() {} };
    const fp = openFastPath(k, log);
    expect(fp.ifindex).toBe(5);
    const peers = [{ name: '02:00:00:00:00:02' as never, underlay: 2, routes: [] }];
    fp.sync(peers);
    expect(fp.stats.errors).toBe(1);
    const before = k.sent.length;
    fp.sync(peers);
    expect(k.sent.length).toBeGreaterThan(before);
  });

  it('sets proxy_delay 0 on open (a refusal only logs), and programs a bare host with an appended flood entry', () => {
    const warnings: string[] = [];
    const k = new FakeKernel((req, seq) => {
      const type = req.readUInt16LE(4);
      if (type === 18) return vxlanLink(seq);
      if (type === RTM_GETROUTE || type === RTM_GETNEIGH) return [done(seq)];
      if (type === RTM_SETNEIGHTBL) return [ack(seq, 1)];
      return [ack(seq)];
    });
    const log = { isDebug: false, debug() {}, info() {}, warn: (m: string) => warnings.push(m), error() {} };
    const fp = openFastPath(k, log);
    const tbl = k.sent.find((m) => m.readUInt16LE(4) === RTM_SETNEIGHTBL) as Buffer;
    const attrs = decodeAttrs(tbl, 16 + 4);
    expect(attrs.get(NDTA_NAME)?.toString()).toBe('arp_cache\0');
    const parms = decodeAttrs(attrs.get(NDTA_PARMS) as Buffer);
    expect(parms.get(NDTPA_IFINDEX)?.readUInt32LE(0)).toBe(5);
    expect(parms.get(NDTPA_PROXY_DELAY)?.readBigUInt64LE(0)).toBe(0n);
    expect(warnings).toEqual(['fastdp proxy_delay not set']);
    k.sent.length = 0;
    fp.sync([], false, 0, { flood: [0xc0a80003], proxies: [0x0a200005], routes: [{ addr: 0x0a200000, prefix: 13 }] });
    const changes = k.sent.filter((m) => ![RTM_GETROUTE, RTM_GETNEIGH].includes(m.readUInt16LE(4)));
    expect(changes.map((m) => [m.readUInt16LE(4), m.readUInt16LE(6) & NLM_F_APPEND])).toEqual([
      [RTM_NEWNEIGH, NLM_F_APPEND], // flood
      [RTM_NEWNEIGH, 0], // proxy
      [RTM_NEWROUTE, 0], // on-link route
    ]);
    expect(fp.stats).toMatchObject({ added: 3, errors: 0 });
  });

  it('gives a device 192.0.0.8/32 scope host (weft-vx on open), and takes it away again', () => {
    const k = new FakeKernel((req, seq) => {
      const type = req.readUInt16LE(4);
      if (type === 18) return vxlanLink(seq);
      if (type === RTM_DELADDR && req.readInt32LE(16 + 4) === 9) return [ack(seq, 99)]; // EADDRNOTAVAIL
      if (type === RTM_DELADDR && req.readInt32LE(16 + 4) === 10) return [ack(seq, 1)]; // EPERM
      return [ack(seq)];
    });
    const log = { isDebug: false, debug() {}, info() {}, warn() {}, error() {} };
    const nl = new Netlink(k);
    openFastPath(k, log, nl);
    const v4 = (m: Buffer): boolean => m.readUInt16LE(4) === RTM_NEWADDR && m.readUInt8(16) === AF_INET;
    const adds = k.sent.filter(v4);
    expect(adds).toHaveLength(1);
    const add = adds[0] as Buffer;
    expect(add.readUInt16LE(6) & (NLM_F_CREATE | NLM_F_REPLACE)).toBe(NLM_F_CREATE | NLM_F_REPLACE);
    // family, prefix 32, scope host, weft-vx's index; local and address both 192.0.0.8
    expect([add.readUInt8(17), add.readUInt8(19), add.readInt32LE(20)]).toEqual([32, RT_SCOPE_HOST, 5]);
    const attrs = decodeAttrs(add, 16 + 8);
    expect(attrs.get(IFA_LOCAL)).toEqual(ipv4Bytes(RPF_ANCHOR));
    expect(attrs.get(IFA_ADDRESS)).toEqual(Buffer.from([192, 0, 0, 8]));
    // ... and the local route the kernel adds for it is deleted: table local, type local, weft-vx.
    const drop = k.sent[k.sent.indexOf(add) + 1] as Buffer;
    expect(drop.readUInt16LE(4)).toBe(RTM_DELROUTE);
    expect([drop.readUInt8(17), drop.readUInt8(20), drop.readUInt8(23)]).toEqual([32, 255, 2]);
    expect(decodeAttrs(drop, 16 + 12).get(RTA_DST)).toEqual(ipv4Bytes(RPF_ANCHOR));
    expect(
      decodeAttrs(drop, 16 + 12)
        .get(RTA_OIF)
        ?.readUInt32LE(0),
    ).toBe(5);
    k.sent.length = 0;
    setRpfAnchor(nl, 7, 'weft');
    expect(k.sent.filter(v4).map((m) => m.readInt32LE(20))).toEqual([7]);
    expect(clearRpfAnchor(nl, 7, 'weft')).toBe(true);
    const del = k.sent.at(-1) as Buffer;
    expect([del.readUInt16LE(4), del.readUInt8(17), del.readInt32LE(20)]).toEqual([RTM_DELADDR, 32, 7]);
    expect(decodeAttrs(del, 16 + 8).get(IFA_LOCAL)).toEqual(ipv4Bytes(RPF_ANCHOR));
    expect(clearRpfAnchor(nl, 9, 'weft')).toBe(false); // already gone: no error
    expect(() => clearRpfAnchor(nl, 10, 'weft')).toThrow(/192\.0\.0\.8/);
    expect(linkIndex(nl, 'weft-vx')).toBe(5);
  });
});
