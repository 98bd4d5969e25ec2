import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, Lab, requireRoot } from '../lab/netns.js';
import { expose, launch, removeStateDirs, status, waitPeers, weft } from './weft.js';

const reason = requireRoot();

/**
 * A script run with node inside a namespace that throws random and mutated datagrams at a
 * router's data ports and random bytes at its control port.
 */
const FLOOD = `
const dgram = require('node:dgram');
const net = require('node:net');
const crypto = require('node:crypto');
const [host, count] = [process.argv[1], Number(process.argv[2])];
const s = dgram.createSocket('udp4');
let sent = 0;
const valid = Buffer.alloc(60); valid[0] = 0x57; valid[1] = 1; // sleeve-looking
function next() {
  if (sent >= count) { s.close(); return; }
  for (let i = 0; i < 50 && sent < count; i++, sent++) {
    const b = sent % 2 ? crypto.randomBytes(sent % 300) : Buffer.from(valid);
    if (sent % 2 === 0) b[(sent * 7) % b.length] ^= 0xff;
    s.send(b, sent % 3 ? 6783 : 6784, host);
  }
  setImmediate(next);
}
next();
const c = net.connect(6783, host, () => { c.end(crypto.randomBytes(4096)); });
c.on('error', () => {});
`;

describe.skipIf(reason)('bad input does not disturb a router', () => {
  let topo: Lab;
  let h1: Host;
  let h2: Host;
  /** a1 and a2 are the addresses IPAM gave hosts 1 and 2. */
  let a1: string;
  let a2: string;

  beforeAll(async () => {
    topo = await Lab.create({ hosts: 2 });
    [h1, h2] = topo.hosts as [Host, Host];
    // --encap vxlan: the router's own VXLAN socket parses (and counts) what arrives on 6784; with
    // the default (auto) the kernel's weft-vx owns that port and drops garbage uncounted by us.
    await launch(h1, [], ['--encap', 'vxlan']);
    await launch(h2, [h1.underlayIp], ['--encap', 'vxlan']);
    a1 = await expose(h1);
    a2 = await expose(h2);
    await waitPeers(h1, 1);
  });

  afterAll(async () => {
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
  });

  it('counts garbage datagrams and garbage control bytes as drops, and keeps forwarding', async () => {
    await h2.exec(process.execPath, ['-e', FLOOD, h1.underlayIp, '5000']);
    const s = await status(h1);
    const dropped = Object.values(s.counters.drops).reduce((a, b) => a + b, 0);
    expect(dropped).toBeGreaterThanOrEqual(4000);
    expect(s.connections.filter((c) => c.state === 'established')).toHaveLength(1);
    expect((await h2.ping(a1, { count: 3, intervalS: 0.1 })).received).toBe(3);
  });

  it('answers CLI mistakes with one line and a usage exit status', async () => {
    const r = await weft(h1, ['expose', '10.32.0.400/12'], { allowFail: true });
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe('weft: invalid IPv4 address "10.32.0.400"');
    const c = await weft(h1, ['connect', 'bad host'], { allowFail: true });
    expect(c.code).toBe(2);
    expect(c.stderr.trim().split('\n')).toHaveLength(1);
    const l = await weft(h1, ['launch', '--encap', 'gre'], { allowFail: true });
    expect(l.code).toBe(2);
    expect(l.stderr).toMatch(/Allowed choices are auto, fastdp, sleeve, vxlan/);
  });

  it('refuses a second router in the same namespace with a clear error', async () => {
    // A range of its own, so the first router's route to 10.32.0.0/12 does not refuse it earlier.
    const args = ['--device', h1.ifname('u'), '--http-addr', '127.0.0.1:6799', '--ipalloc-range', '10.128.0.0/12'];
    const r = await weft(h1, ['launch', '--foreground', ...args], { allowFail: true, timeoutMs: 20_000 });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/cannot listen for control connections on 0\.0\.0\.0:6783|already in use/);
    expect((await status(h1)).ready).toBe(true);
  });

  it('answers an address conflict (HTTP 409) with exit status 1 and says whose address it is', async () => {
    const h2name = (await status(h2)).name;
    const other = await weft(h1, ['expose', `${a2}/12`], { allowFail: true });
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(new RegExp(`${a2.replaceAll('.', '\\.')} is in the address space of peer ${h2name}`));
    const twice = await weft(h1, ['expose', `${a1}/16`], { allowFail: true });
    expect(twice.code).toBe(1);
    expect(twice.stderr).toMatch(/is already exposed as/);
    expect((await status(h1)).exposed).toEqual([`${a1}/12`]);
  });
});
