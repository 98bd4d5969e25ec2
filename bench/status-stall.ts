/**
 * status-stall measures whether answering status and metrics delays packets (the router serves
 * HTTP on the same thread as its datapath): overlay ping RTT between containers on two Weft hosts,
 * idle, then while a poller in host 1 fetches `/status?format=json` and `/metrics` 20 times a
 * second each. Target: the polled median within 1.2× the idle one.
 */

import { launch, removeStateDirs, waitPeers, weft } from '../e2e/weft.js';
import { type Host, Lab, type Netns, waitUntil } from '../lab/netns.js';
import { median } from './relay.js';

/** StatusStallResult is the median RTTs and their ratio. */
export interface StatusStallResult {
  idleMedianMs: number;
  polledMedianMs: number;
  ratio: number;
  /** requests is how many status and metrics requests the poller completed while pinging. */
  requests: number;
  pings: number;
}

/** POLLER fetches both endpoints every 50 ms until killed, counting answers (run with `node -e`). */
const POLLER = String.raw`
const http = require('node:http');
let n = 0;
const get = (path) => http.get({ host: '127.0.0.1', port: 6784, path, agent: false }, (r) => { r.resume(); r.on('end', () => n++); }).on('error', () => {});
setInterval(() => { get('/status?format=json'); get('/metrics'); }, 50);
process.on('SIGTERM', () => { console.log(JSON.stringify({ requests: n })); process.exit(0); });
`;

/** runStatusStall builds two hosts with a container each and measures `pings` pings both ways. */
export async function runStatusStall(pings = 200): Promise<StatusStallResult> {
  const topo = await Lab.create({ hosts: 2 });
  try {
    const [h1, h2] = topo.hosts as [Host, Host];
    const c1: Netns = await topo.addNamespace('ca');
    const c2: Netns = await topo.addNamespace('cb');
    await launch(h1, [], ['--no-dns']);
    await launch(h2, [h1.underlayIp], ['--no-dns']);
    await waitPeers(h1, 1);
    await waitPeers(h2, 1);
    await weft(h1, ['attach', c1.name]);
    const a2 = (await weft(h2, ['attach', c2.name])).stdout.trim();
    await waitUntil(async () => (await c1.ping(a2, { count: 1, timeoutMs: 1_000 })).received === 1, {
      timeoutMs: 20_000,
      what: 'container ping',
    });
    const idle = await c1.ping(a2, { count: pings, intervalS: 0.02 });
    const poller = h1.spawn('node', ['-e', POLLER]);
    let out = '';
    poller.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    await new Promise((r) => setTimeout(r, 500));
    const polled = await c1.ping(a2, { count: pings, intervalS: 0.02 });
    const exited = new Promise<void>((resolve) => poller.once('exit', () => resolve()));
    poller.kill('SIGTERM');
    await exited;
    const requests = Number(/"requests":(\d+)/.exec(out)?.[1] ?? 0);
    const i = median(idle.rttsMs);
    const p = median(polled.rttsMs);
    return { idleMedianMs: i, polledMedianMs: p, ratio: p / i, requests, pings };
  } finally {
    await topo.destroy();
    removeStateDirs(topo);
  }
}
