import { describe, expect, it } from 'vitest';
import type { PeerName } from '../common/types.js';
import { Encap, Hop, peerNameHi, peerNameLo } from './datapath/fib.js';
import { PeerCrypto } from './datapath/peer-crypto.js';
import { FibCompiler, type FibInput } from './fib-compiler.js';
import { emptyRoutes, type Routes } from './routes.js';
import type { PeerEntry } from './topology.js';

const SELF = '02:00:00:00:00:01' as PeerName;
const B = '02:00:00:00:00:02' as PeerName;
const C = '02:00:00:00:00:03' as PeerName;

function entry(name: PeerName, cidrs: string[]): PeerEntry {
  return {
    name,
    nickname: name.slice(-2),
    uid: '1',
    incarnation: 1,
    version: 1,
    connections: [],
    cidrs,
    sleevePort: 6783,
    vxlanPort: 6784,
    encap: 'sleeve',
  };
}

function directHop(name: PeerName, addr: number, encap: Encap = Encap.Sleeve): Hop {
  const hi = peerNameHi(name);
  const lo = peerNameLo(name);
  return new Hop(name, hi, lo, hi, lo, addr, encap === Encap.Vxlan ? 4789 : 6783, encap, 6783, 1500);
}

function input(over: Partial<FibInput> = {}): FibInput {
  const hopB = directHop(B, 0xc0a80002);
  const routes: Routes = {
    ...emptyRoutes(SELF),
    unicast: new Map([
      [B, B],
      [C, B],
    ]),
  };
  return {
    self: SELF,
    entries: [entry(SELF, ['10.32.0.1/32']), entry(B, ['10.32.0.2/32']), entry(C, ['10.32.0.3/32', 'bogus'])],
    routes,
    directHop: (p) => (p === B ? hopB : undefined),
    endpoints: [hopB],
    spans: [
      { start: 0x0a400000, end: 0x0a400100, owner: SELF },
      { start: 0x0a400100, end: 0x0a400200, owner: C },
    ],
    localAddrs: [0x0a200001],
    kernelVxlanPeers: [],
    ...over,
  };
}

describe('FibCompiler', () => {
  it('routes a direct peer to its hop and a relayed one through its next hop, in sleeve', () => {
    const c = new FibCompiler();
    const fib = c.compile(input());
    const toB = fib.lookup(0x0a200002);
    expect(toB?.peer).toBe(B);
    expect(toB?.addr).toBe(0xc0a80002);
    const toC = fib.lookup(0x0a200003);
    expect(toC?.peer).toBe(C);
    expect(toC?.addr).toBe(0xc0a80002);
    expect(toC?.encap).toBe(Encap.Sleeve);
    expect(c.relayHop(C, B)).toBe(toC);
    // The ring: our span is local (no hop), C's span goes through B.
    expect(fib.lookup(0x0a400150)).toBe(toC);
    expect(fib.lookup(0x0a400050)).toBeUndefined();
    expect(fib.isLocal(0x0a200001)).toBe(true);
    expect(fib.sender(0xc0a80002, 6783)).toBeDefined();
  });

  it('with a password gives a relay hop the PeerCrypto the switch holds for its peer (connection or end-to-end keys), else NO_KEYS', () => {
    const c = new FibCompiler();
    expect(c.compile(input()).lookup(0x0a200003)?.crypto).toBeUndefined();
    const toC = c.compile(input({ encrypted: true })).lookup(0x0a200003);
    expect(toC?.crypto).toBe(PeerCrypto.NO_KEYS);
    expect(toC?.crypto?.sender).toBeUndefined();
    expect(toC?.crypto?.receiver).toBeUndefined();
    const keys = PeerCrypto.NO_KEYS; // any PeerCrypto stands in for one the switch holds
    const withKeys = Object.create(keys) as PeerCrypto;
    const again = c.compile(input({ encrypted: true, dataKeys: (p) => (p === C ? withKeys : undefined) }));
    expect(again.lookup(0x0a200003)?.crypto).toBe(withKeys);
    // The direct hop is the switch's: the compiler leaves its keys alone.
    expect(again.lookup(0x0a200002)?.crypto).toBeUndefined();
    // Without a password again: cleartext relay hops.
    expect(c.compile(input()).lookup(0x0a200003)?.crypto).toBeUndefined();
  });

  it('keeps a relay hop (and its counters) across compilations, and drops it when the route goes', () => {
    const c = new FibCompiler();
    const first = c.compile(input()).lookup(0x0a200003)!;
    first.txPackets = 7;
    expect(c.compile(input()).lookup(0x0a200003)).toBe(first);
    const gone: Routes = { ...emptyRoutes(SELF), unicast: new Map([[B, B]]) };
    expect(c.compile(input({ routes: gone })).lookup(0x0a200003)).toBeUndefined();
    expect(c.relayHop(C, B)).toBeUndefined();
  });

  it('skips a peer whose next hop is not connected', () => {
    const c = new FibCompiler();
    const fib = c.compile(input({ directHop: () => undefined }));
    expect(fib.lookup(0x0a200002)).toBeUndefined();
    expect(fib.lookup(0x0a200003)).toBeUndefined();
  });

  it('gives relay hops through a peer that peer’s new path MTU', () => {
    const c = new FibCompiler();
    const inp = input();
    c.compile(inp);
    const via = inp.directHop(B)!;
    c.onPmtu(via, 1280);
    expect(c.relayHop(C, B)?.pmtu).toBe(1280);
    c.clear();
    expect(c.relayHop(C, B)).toBeUndefined();
  });
});
