import { describe, expect, it } from 'vitest';
import { NO_BARE } from './fastdp.js';
import {
  changeRequest,
  changeText,
  emptyWant,
  type FastdpHave,
  FLOOD_MAC,
  planFastdp,
  wantKey,
} from './fastdp-plan.js';
import {
  AF_BRIDGE,
  AF_INET,
  ipv4Bytes,
  type Neigh,
  NLM_F_APPEND,
  NLM_F_CREATE,
  NTF_PROXY,
  NTF_SELF,
  NUD_PERMANENT,
  type Route,
  RT_SCOPE_LINK,
  RT_SCOPE_NOWHERE,
  RT_TABLE_MAIN,
  RTA_DST,
  RTA_GATEWAY,
  RTM_DELROUTE,
  RTM_NEWNEIGH,
  RTM_NEWROUTE,
  RTPROT_WEFT,
} from './netlink.js';

const IX = 7;
const U_B = 0xc0a80002; // a Weft peer's underlay
const U_C = 0xc0a80003; // a bare kernel vxlan host
const MAC_B = '02:00:00:00:00:02';

const none: FastdpHave = { routes: [], neigh4: [], neigh6: [], fdb: [], proxies: [] };

function neigh(p: Partial<Neigh> & { dst?: Buffer }): Neigh {
  return { family: AF_INET, index: IX, state: NUD_PERMANENT, flags: 0, dst: undefined, mac: undefined, ...p };
}

function route(p: Partial<Route>): Route {
  return {
    dst: 0,
    dstLen: 24,
    table: RT_TABLE_MAIN,
    protocol: RTPROT_WEFT,
    oif: IX,
    gateway: undefined,
    prefsrc: undefined,
    ...p,
  };
}

/** bareWant is what the router asks for with one bare host: flood, a proxy, our share on-link. */
function bareWant() {
  const w = emptyWant();
  w.flood.add(U_C);
  w.proxies.add(0x0a200005);
  w.routes.set(`${0x0a200000}/13`, { addr: 0x0a200000, prefix: 13, gw: 0, src: 0 });
  return w;
}

describe('planFastdp', () => {
  it('adds a bare host: its flood entry, the proxy entries and the on-link routes, in that order', () => {
    const plan = planFastdp(bareWant(), none, IX);
    expect(plan.map(changeText)).toEqual([
      `add flood ${FLOOD_MAC} dst 192.168.0.3`,
      'add proxy 10.32.0.5',
      'add route 10.32.0.0/13',
    ]);
  });

  it('wants nothing more once the kernel holds it (the same entries, read back)', () => {
    const have: FastdpHave = {
      ...none,
      fdb: [neigh({ family: AF_BRIDGE, flags: NTF_SELF, mac: FLOOD_MAC, dst: ipv4Bytes(U_C) })],
      proxies: [neigh({ state: 0, flags: NTF_PROXY, dst: ipv4Bytes(0x0a200005) })],
      routes: [route({ dst: 0x0a200000, dstLen: 13 })],
    };
    expect(planFastdp(bareWant(), have, IX)).toEqual([]);
  });

  it("removes a crashed router's leftovers: another flood destination, a proxy, routes and peer entries, routes first", () => {
    const have: FastdpHave = {
      routes: [
        route({ dst: 0x0a2f0000, dstLen: 24 }), // on-link, no longer ours
        route({ dst: 0x0a200000, dstLen: 13, gateway: U_B }), // was a peer's, now ours on-link
        route({ dst: 0x0a300000, dstLen: 16, protocol: 4 }), // not Weft's: kept
        route({ dst: 0x0a310000, dstLen: 16, table: 100 }), // another table: kept
        undefined, // another family
      ],
      neigh4: [
        neigh({ dst: ipv4Bytes(0xc0a800fe), mac: '02:99:99:99:99:99' }),
        neigh({ dst: ipv4Bytes(0x0a200009), mac: '52:54:00:00:00:09', state: 0x04 }), // learned by ARP: kept
      ],
      neigh6: [],
      fdb: [
        neigh({ family: AF_BRIDGE, mac: FLOOD_MAC, dst: ipv4Bytes(0xc0a800fe) }),
        neigh({ family: AF_BRIDGE, mac: FLOOD_MAC, dst: ipv4Bytes(U_C) }),
        neigh({ family: AF_BRIDGE, mac: '02:99:99:99:99:99', dst: ipv4Bytes(0xc0a800fe) }),
        neigh({ family: AF_BRIDGE, mac: '33:33:00:00:00:01', dst: ipv4Bytes(0xc0a800fe) }), // multicast: kept
      ],
      proxies: [
        neigh({ state: 0, flags: NTF_PROXY, dst: ipv4Bytes(0x0a2f0101) }),
        neigh({ state: 0, flags: NTF_PROXY, dst: ipv4Bytes(0x0a200005) }),
        neigh({ state: 0, flags: NTF_PROXY, dst: ipv4Bytes(0x0a2f0102), index: IX + 1 }), // another device: kept
      ],
    };
    const plan = planFastdp(bareWant(), have, IX).map(changeText);
    expect(plan).toEqual([
      'delete route 10.47.0.0/24',
      'delete route 10.32.0.0/13 via 192.168.0.2',
      'delete neigh 192.168.0.254',
      'delete proxy 10.47.1.1',
      `delete flood ${FLOOD_MAC} dst 192.168.0.254`,
      'delete fdb 02:99:99:99:99:99 dst 192.168.0.254',
      'add route 10.32.0.0/13',
    ]);
  });

  it('keeps Weft peers and bare hosts apart: a peer entry and a flood entry to the same MAC table', () => {
    const w = bareWant();
    w.fdb.set(MAC_B, U_B);
    w.neigh4.set(U_B, MAC_B);
    w.routes.set(`${0x0a280000}/13`, { addr: 0x0a280000, prefix: 13, gw: U_B, src: 0 });
    const have: FastdpHave = { ...none, fdb: [neigh({ family: AF_BRIDGE, mac: FLOOD_MAC, dst: ipv4Bytes(U_C) })] };
    expect(planFastdp(w, have, IX).map(changeText)).toEqual([
      'add fdb 02:00:00:00:00:02 dst 192.168.0.2',
      'add neigh 192.168.0.2',
      'add proxy 10.32.0.5',
      'add route 10.32.0.0/13',
      'add route 10.40.0.0/13 via 192.168.0.2',
    ]);
  });

  it('ignores malformed dump entries (no address, wrong lengths, no MAC) instead of acting on them', () => {
    const have: FastdpHave = {
      routes: [],
      neigh4: [neigh({ dst: Buffer.alloc(16), mac: MAC_B }), neigh({ dst: undefined })],
      neigh6: [neigh({ dst: Buffer.alloc(4), mac: MAC_B })],
      fdb: [
        neigh({ family: AF_BRIDGE, mac: undefined, dst: ipv4Bytes(U_C) }),
        neigh({ family: AF_BRIDGE, mac: FLOOD_MAC, dst: Buffer.alloc(16) }),
      ],
      proxies: [
        neigh({ state: 0, flags: NTF_PROXY, dst: Buffer.alloc(3) }),
        neigh({ state: 0, flags: 0, dst: ipv4Bytes(0x0a2f0101) }), // not a proxy entry
      ],
    };
    expect(planFastdp(emptyWant(), have, IX)).toEqual([]);
  });

  it('a route whose gateway or source changed is replaced', () => {
    const w = emptyWant();
    w.routes.set(`${0x0a200000}/13`, { addr: 0x0a200000, prefix: 13, gw: 0, src: 0x0a200001 });
    const have: FastdpHave = { ...none, routes: [route({ dst: 0x0a200000, dstLen: 13 })] };
    expect(planFastdp(w, have, IX).map((c) => `${c.op} ${c.kind}`)).toEqual(['del route', 'add route']);
  });
});

describe('changeRequest', () => {
  it('appends flood destinations (never replaces another host) and deletes routes of any scope', () => {
    const flood = changeRequest({ op: 'add', kind: 'flood', mac: FLOOD_MAC, dst: U_C }, IX);
    expect(flood.type).toBe(RTM_NEWNEIGH);
    expect(flood.flags).toBe(NLM_F_CREATE | NLM_F_APPEND);
    expect(flood.fixed[0]).toBe(AF_BRIDGE);
    const proxy = changeRequest({ op: 'add', kind: 'proxy', dst: 0x0a200005 }, IX);
    expect(proxy.fixed[10]).toBe(NTF_PROXY);
    expect(proxy.fixed.readInt32LE(4)).toBe(IX);
    const onLink = changeRequest(
      { op: 'add', kind: 'route', addr: 0x0a200000, prefix: 13, gw: undefined, oif: IX, src: 0 },
      IX,
    );
    expect(onLink.type).toBe(RTM_NEWROUTE);
    expect(onLink.fixed[6]).toBe(RT_SCOPE_LINK);
    expect(onLink.attrs.some((a) => a.type === RTA_GATEWAY)).toBe(false);
    const del = changeRequest({ op: 'del', kind: 'route', addr: 0x0a200000, prefix: 13, gw: U_B, oif: IX, src: 0 }, IX);
    expect(del.type).toBe(RTM_DELROUTE);
    expect(del.fixed[6]).toBe(RT_SCOPE_NOWHERE);
    const gw = del.attrs.find((a) => a.type === RTA_GATEWAY);
    expect(gw !== undefined && 'value' in gw && gw.value.readUInt32BE(0)).toBe(U_B);
    expect(del.attrs.some((a) => a.type === RTA_DST)).toBe(true);
  });
});

describe('wantKey', () => {
  it('changes with every part of the want (so a sync is not skipped), and not otherwise', () => {
    expect(wantKey(bareWant())).toBe(wantKey(bareWant()));
    const w = bareWant();
    w.proxies.add(0x0a200006);
    expect(wantKey(w)).not.toBe(wantKey(bareWant()));
    const f = bareWant();
    f.flood.add(0xc0a80004);
    expect(wantKey(f)).not.toBe(wantKey(bareWant()));
    expect(NO_BARE.flood).toEqual([]);
  });
});
