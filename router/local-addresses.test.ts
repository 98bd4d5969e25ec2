import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../common/clock.js';
import { noopLogger } from '../common/log.js';
import { type PeerName, parseCidr } from '../common/types.js';
import { IpamService } from './ipam/service.js';
import { LocalAddresses } from './local-addresses.js';
import type { PeerEntry } from './topology.js';

const SELF = '02:00:00:00:00:01' as PeerName;
const OTHER = '02:00:00:00:00:02' as PeerName;
const RANGE = parseCidr('10.40.0.0/16');

function setup() {
  const ipam = new IpamService(
    { self: SELF, range: RANGE, init: { mode: 'auto', alone: true }, clock: new VirtualClock() },
    { broadcast: () => {}, unicast: () => false },
  );
  ipam.start();
  const others: PeerEntry[] = [
    {
      name: OTHER,
      nickname: 'r2',
      uid: '2',
      incarnation: 1,
      version: 1,
      connections: [],
      cidrs: ['10.32.0.9/32'],
      sleevePort: 6783,
      vxlanPort: 6784,
      encap: 'sleeve',
    },
  ];
  let changes = 0;
  const addrs = new LocalAddresses({
    self: SELF,
    range: RANGE,
    ipam,
    log: noopLogger,
    tun: () => undefined,
    entries: () => others,
    onChange: () => changes++,
  });
  return { ipam, addrs, changes: () => changes };
}

describe('LocalAddresses', () => {
  it('exposes an address outside the range and announces it as a /32', async () => {
    const { addrs, changes } = setup();
    expect(await addrs.expose(parseCidr('10.32.0.1/12'))).toEqual([parseCidr('10.32.0.1/12')]);
    expect(addrs.announced()).toEqual(['10.32.0.1/32']);
    expect(addrs.addrs()).toEqual([0x0a200001]);
    expect(changes()).toBe(1);
    // Again: nothing changes.
    await addrs.expose(parseCidr('10.32.0.1/12'));
    expect(changes()).toBe(1);
    await expect(addrs.expose(parseCidr('10.32.0.1/16'))).rejects.toThrow(/already exposed/);
  });

  it('takes an exposed address from IPAM when given none, and does not announce it (the ring routes it)', async () => {
    const { addrs } = setup();
    const [c] = await addrs.expose();
    expect(c?.prefix).toBe(16);
    expect(addrs.announced()).toEqual([]);
    expect(await addrs.expose()).toEqual([c]);
  });

  it('refuses addresses in use here or by another peer, and a /32', async () => {
    const { addrs } = setup();
    await expect(addrs.expose(parseCidr('10.32.0.9/12'))).rejects.toThrow(/already in use by peer/);
    await expect(addrs.expose(parseCidr('10.32.0.7/32'))).rejects.toThrow(/want a prefix/);
    await addrs.expose(parseCidr('10.32.0.1/12'));
    addrs.claim('c1', [parseCidr('10.32.1.1/12')]);
    expect(() => addrs.claim('c2', [parseCidr('10.32.1.1/12')])).toThrow(/already used by c1/);
    expect(() => addrs.claim('c2', [parseCidr('10.32.0.1/12')])).toThrow(/exposed address/);
    expect(() => addrs.checkFree(0x0a200009)).toThrow(/peer 02:00:00:00:00:02/);
    expect(() => addrs.checkFree(0x0a200101, 'c1')).not.toThrow();
  });

  it('claims and releases container addresses', () => {
    const { addrs, ipam, changes } = setup();
    addrs.claim('c1', [parseCidr('10.32.1.1/12')]);
    expect(addrs.announced()).toEqual(['10.32.1.1/32']);
    expect(addrs.release('c1')).toEqual([parseCidr('10.32.1.1/12')]);
    expect(addrs.release('c1')).toEqual([]);
    expect(ipam.lookup('c1')).toEqual([]);
    expect(addrs.announced()).toEqual([]);
    expect(changes()).toBe(2);
  });

  it('hides one exposed address or all of them', async () => {
    const { addrs } = setup();
    await addrs.expose(parseCidr('10.32.0.1/12'));
    await addrs.expose(parseCidr('10.32.0.2/12'));
    await expect(addrs.hide(parseCidr('10.32.0.5/32'))).rejects.toThrow(/not exposed/);
    expect(await addrs.hide(parseCidr('10.32.0.1/32'))).toEqual([parseCidr('10.32.0.2/12')]);
    expect(await addrs.hide()).toEqual([]);
    expect(addrs.exposedCidrs()).toEqual([]);
  });
});
