import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, Lab, type Netns, requireRoot, waitUntil } from '../lab/netns.js';
import { launch, removeStateDirs, status, waitPeers, weft } from './weft.js';

const reason = requireRoot();

/** VNI is Weft's default VXLAN network identifier. */
const VNI = 22342;
/** SINK_PORT is where the victim container counts the UDP datagrams that reach it. */
const SINK_PORT = 9999;

/**
 * ATTACK is the attack tool, run with `node -e` in the attacker's namespace (a host with no
 * router). argv: mode, target underlay IP, count, then mode-specific fields. It forges:
 *   sleeve-data  sleeve DATA datagrams claiming an established peer as source, carrying a UDP
 *                packet for a container of the target (as if relayed or sent by that peer);
 *   sleeve-hb    sleeve heartbeats claiming that peer, and counts the acks that come back;
 *   vxlan        VXLAN frames with the default VNI to the target's MAC, inner source given or random.
 * It prints one JSON line: { sent, replies }.
 */
const ATTACK = String.raw`
const dgram = require('node:dgram');
const [mode, target, countText, a, b, c, d] = process.argv.slice(1);
const count = Number(countText);
const mac = (s) => Buffer.from(s.split(':').map((x) => parseInt(x, 16)));
const ip = (s) => Buffer.from(s.split('.').map(Number));
function csum(buf) { let s = 0; for (let i = 0; i < buf.length; i += 2) s += (buf[i] << 8) + (buf[i + 1] ?? 0); while (s > 0xffff) s = (s & 0xffff) + (s >>> 16); return ~s & 0xffff; }
function udp4(src, dst, dport, payload) {
  const p = Buffer.alloc(28 + payload.length);
  p[0] = 0x45; p.writeUInt16BE(p.length, 2); p[8] = 64; p[9] = 17;
  src.copy(p, 12); dst.copy(p, 16); p.writeUInt16BE(p.readUInt16BE(10), 10);
  p.writeUInt16BE(csum(p.subarray(0, 20)), 10);
  p.writeUInt16BE(40000, 20); p.writeUInt16BE(dport, 22); p.writeUInt16BE(8 + payload.length, 24);
  payload.copy(p, 28);
  return p;
}
const sock = dgram.createSocket('udp4');
let replies = 0;
sock.on('message', () => { replies++; });
sock.on('error', () => {});
sock.bind(0, () => {
  const out = [];
  for (let i = 0; i < count; i++) {
    if (mode === 'sleeve-data' || mode === 'sleeve-hb') {
      const hb = mode === 'sleeve-hb';
      const h = Buffer.alloc(16);
      h[0] = 0x57; h[1] = 1; h[2] = hb ? 1 : 0; h[3] = 8; mac(a).copy(h, 4); mac(b).copy(h, 10);
      if (hb) { const t = Buffer.alloc(8); t.writeDoubleBE(Date.now()); out.push(Buffer.concat([h, t])); continue; }
      const inner = udp4(ip('10.99.0.1'), ip(c), ${SINK_PORT}, Buffer.from('spoofed ' + i));
      const len = Buffer.alloc(2); len.writeUInt16BE(10 + inner.length);
      out.push(Buffer.concat([h, len, Buffer.alloc(10), inner]));
    } else {
      const v = Buffer.alloc(8); v[0] = 0x08; v.writeUInt32BE(${VNI} << 8, 4);
      const src = c === 'random' ? Buffer.from([10, 32 + (i % 16), (i >> 8) & 255, i & 255]) : ip(c);
      const eth = Buffer.concat([mac(a), Buffer.from([2, 0, 0, (i >> 16) & 255, (i >> 8) & 255, i & 255]), Buffer.from([8, 0])]);
      out.push(Buffer.concat([v, eth, udp4(src, ip(b), ${SINK_PORT}, Buffer.from('vx ' + i))]));
    }
  }
  const port = mode === 'vxlan' ? 6784 : 6783;
  let i = 0;
  const next = () => {
    for (let k = 0; k < 100 && i < out.length; k++, i++) sock.send(out[i], port, target);
    if (i < out.length) setImmediate(next);
    else setTimeout(() => { console.log(JSON.stringify({ sent: out.length, replies })); sock.close(); }, 1000);
  };
  next();
});
`;

/** SINK counts the UDP datagrams reaching a container for `seconds` (run with `node -e`). */
const SINK = String.raw`
const s = require('node:dgram').createSocket('udp4');
let n = 0;
s.on('message', () => n++);
s.bind(${SINK_PORT}, () => console.log('listening'));
setTimeout(() => { console.log(JSON.stringify({ received: n })); s.close(); }, Number(process.argv[1]) * 1000);
`;

async function attack(attacker: Netns, args: string[]): Promise<{ sent: number; replies: number }> {
  const r = await attacker.exec('node', ['-e', ATTACK, ...args], { timeoutMs: 60_000 });
  return JSON.parse(r.stdout.trim().split('\n').pop() as string) as { sent: number; replies: number };
}

/** sinkDuring counts what reaches `ns` on SINK_PORT while `work` runs. */
async function sinkDuring(ns: Netns, seconds: number, work: () => Promise<unknown>): Promise<number> {
  const child = ns.spawn('node', ['-e', SINK, String(seconds)]);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  await waitUntil(() => out.includes('listening'), { timeoutMs: 10_000 });
  await work();
  await new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const m = /\{"received":(\d+)\}/.exec(out);
  if (m === null) throw new Error(`sink printed no count: ${out}`);
  return Number(m[1]);
}

interface AttackStatus {
  name: string;
  learnedCount: number;
  counters: { heartbeats: number; drops: Record<string, number> };
}

async function st(h: Host): Promise<AttackStatus> {
  return (await status(h)) as unknown as AttackStatus;
}

/**
 * An attacker on the underlay (a host that runs no router) cannot get into the overlay without
 * a password: forged sleeve data claiming an established peer never reaches a container, forged
 * heartbeats are never answered, and forged VXLAN frames neither reach a container nor move or
 * fill the learned endpoint table. Every forged datagram is a counted drop.
 */
describe.skipIf(reason)('an attacker on the underlay', () => {
  let topo: Lab;
  let h1: Host;
  let h2: Host;
  let attacker: Host;
  let c1: Netns;
  let c2: Netns;
  let a1 = '';
  let a2 = '';
  let name1 = '';
  let name2 = '';

  beforeAll(async () => {
    topo = await Lab.create({ hosts: 3 });
    [h1, h2, attacker] = topo.hosts as [Host, Host, Host];
    c1 = await topo.addNamespace('ca');
    c2 = await topo.addNamespace('cb');
    await launch(h1, [], ['--encap', 'vxlan', '--no-dns']);
    await launch(h2, [h1.underlayIp], ['--encap', 'vxlan', '--no-dns']);
    await waitPeers(h1, 1);
    await waitPeers(h2, 1);
    a1 = (await weft(h1, ['attach', c1.name])).stdout.trim();
    a2 = (await weft(h2, ['attach', c2.name])).stdout.trim();
    name1 = (await st(h1)).name;
    name2 = (await st(h2)).name;
  });

  afterAll(async () => {
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
  });

  it('forged sleeve data claiming an established peer never reaches the container, and is counted', async () => {
    const before = (await st(h1)).counters.drops.not_from_peer ?? 0;
    const received = await sinkDuring(c1, 4, () =>
      attack(attacker, ['sleeve-data', h1.underlayIp, '1000', name2, name1, a1]),
    );
    expect(received).toBe(0);
    const after = (await st(h1)).counters.drops.not_from_peer ?? 0;
    expect(after - before).toBeGreaterThanOrEqual(1000);
    // The real peer still gets through.
    expect((await c2.ping(a1, { count: 2, intervalS: 0.2 })).received).toBe(2);
  });

  it('forged heartbeats are not answered', async () => {
    const r = await attack(attacker, ['sleeve-hb', h1.underlayIp, '100', name2, name1]);
    expect(r.sent).toBe(100);
    expect(r.replies).toBe(0);
  });

  it('forged VXLAN frames neither reach a container nor move or fill the learned table', async () => {
    const received = await sinkDuring(c1, 4, async () => {
      await attack(attacker, ['vxlan', h1.underlayIp, '1000', name1, a1, a2]); // inner source = c2's address
      await attack(attacker, ['vxlan', h1.underlayIp, '5000', name1, a1, 'random']);
    });
    expect(received).toBe(0);
    const s = await st(h1);
    expect(s.learnedCount).toBe(0);
    expect(s.counters.drops.not_from_peer).toBeGreaterThanOrEqual(6000);
    // c1 → c2 still goes to host 2, not to the attacker.
    expect((await c1.ping(a2, { count: 2, intervalS: 0.2 })).received).toBe(2);
  });
});
