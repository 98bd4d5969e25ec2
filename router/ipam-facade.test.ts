import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../common/clock.js';
import { type PeerName, parseCidr } from '../common/types.js';
import { IpamService } from './ipam/service.js';
import { IpamFacade } from './ipam-facade.js';
import { EXPOSE_OWNER } from './local-addresses.js';
import { emptyRoutes, type Routes } from './routes.js';
import type { PeerEntry } from './topology.js';

const SELF = '02:00:00:00:00:01' as PeerName;
const B = '02:00:00:00:00:02' as PeerName;

function entry(name: PeerName, nickname: string): PeerEntry {
  return {
    name,
    nickname,
    uid: '1',
    incarnation: 1,
    version: 1,
    connections: [],
    cidrs: [],
    sleevePort: 6783,
    vxlanPort: 6784,
    encap: 'sleeve',
  };
}

function setup(routes: Routes = emptyRoutes(SELF), connected = false, forgottenEntries: PeerEntry[] = []) {
  const ipam = new IpamService(
    { self: SELF, range: parseCidr('10.40.0.0/16'), init: { mode: 'auto', alone: true }, clock: new VirtualClock() },
    { broadcast: () => {}, unicast: () => false },
  );
  ipam.start();
  const forgotten: PeerName[] = [];
  const facade = new IpamFacade({
    self: SELF,
    ipam,
    entries: () => [entry(SELF, 'me'), entry(B, 'b'), entry('02:00:00:00:00:03' as PeerName, 'b')],
    forgottenEntries: () => forgottenEntries,
    routes: () => routes,
    connected: () => connected,
    forgotten: (p) => forgotten.push(...p),
  });
  return { ipam, facade, forgotten };
}

describe('IpamFacade', () => {
  it('allocates for containers and keeps the host owner for itself', async () => {
    const { facade } = setup();
    const a = await facade.allocate('c1');
    expect(await facade.allocate('c1')).toBe(a);
    await expect(facade.allocate(EXPOSE_OWNER)).rejects.toThrow(/reserved/);
  });

  it('refuses rmpeer of itself, of a reachable peer, of an ambiguous nickname and of an unknown peer', async () => {
    const reach: Routes = { ...emptyRoutes(SELF), unicast: new Map([[B, B]]) };
    const { facade } = setup(reach);
    await facade.allocate('c1');
    expect(() => facade.rmpeer(SELF)).toThrow(/itself/);
    expect(() => facade.rmpeer(B)).toThrow(/is reachable/);
    expect(() => facade.rmpeer('b')).toThrow(/ambiguous/);
    expect(() => facade.rmpeer('nobody')).toThrow(/no peer "nobody"/);
  });

  it('finds a forgotten peer by its nickname (live entries first), and still refuses one owning no space', () => {
    const gone = '02:00:00:00:00:09' as PeerName;
    const { facade } = setup(emptyRoutes(SELF), false, [entry(gone, 'node-c'), entry(B, 'b')]);
    expect(() => facade.rmpeer('node-c')).toThrow(`peer ${gone} owns no address space`);
    expect(() => facade.rmpeer('b')).toThrow(/ambiguous/); // two live entries say b: the forgotten one is not asked
    expect(() => facade.rmpeer('node-d')).toThrow(/no peer "node-d"/);
  });

  it('refuses rmpeer of a peer owning no space', () => {
    const { facade, forgotten } = setup();
    expect(() => facade.rmpeer(B)).toThrow(/owns no address space/);
    expect(forgotten).toEqual([]);
  });

  it('leave without a reachable peer keeps the space and says how much', async () => {
    const { facade } = setup();
    await facade.allocate('c1');
    expect(facade.leave()).toEqual({ heir: undefined, addresses: 2 ** 16 });
  });
});
