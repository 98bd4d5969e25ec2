/**
 * tunnels.bench-main runs only the tunnel part of `npm run bench` and prints its tables: for each
 * underlay MTU a 2-host netns topology with every {@link tunnelScenarios} row (baselines and Weft,
 * container to container and host to host), at each frame-loss level for the lossy MTUs, then the
 * mid-path MTU table. Needs root; run from compiled JS:
 *
 * ```
 * node dist/bench/tunnels.bench-main.js [--seconds 5] [--udp-seconds 3] [--mtu 1500,9000]
 *     [--loss 0,2,10] [--lossy-mtu 1500] [--mid-path 1400|off] [--rows raw,vxlan,weft-sleeve,...]
 * ```
 *
 * `--loss` is in frames per 1000 (2 = 0.2 %). `--rows` takes scenario ids (`--rows list` prints them);
 * raw veth is always measured, as the ratio reference. Progress goes to stderr, the tables to stdout.
 * About 7 minutes for MTU 1500 with every row and level, plus 2½ for 9000 and 1 for the mid-path table.
 */
import { cpus, release } from 'node:os';
import { parseArgs } from 'node:util';
import { requireRoot } from '../lab/netns.js';
import { runTunnelSuite, scenarioIds } from './tunnel-suite.js';

const USAGE =
  'usage: tunnels.bench-main [--seconds N] [--udp-seconds N] [--mtu 1500,9000] [--loss 0,2,10] [--lossy-mtu 1500]' +
  ' [--mid-path 1400|off] [--rows ID,...|list]';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    'udp-seconds': { type: 'string', default: '3' },
    mtu: { type: 'string', default: '1500,9000' },
    loss: { type: 'string', default: '0,2,10' },
    'lossy-mtu': { type: 'string', default: '1500' },
    'mid-path': { type: 'string', default: '1400' },
    rows: { type: 'string' },
  },
});
const ids = scenarioIds();
if (values.rows === 'list') {
  console.log(ids.join('\n'));
  process.exit(0);
}
const numbers = (text: string): number[] => (text.trim() === '' ? [] : text.split(',').map(Number));
const seconds = Number(values.seconds);
const udpSeconds = Number(values['udp-seconds']);
const mtus = numbers(values.mtu);
const losses = numbers(values.loss);
const lossyMtus = numbers(values['lossy-mtu']);
const midPath = values['mid-path'] === 'off' ? undefined : Number(values['mid-path']);
const rows = values.rows === undefined ? undefined : new Set(values.rows.split(','));
const unknown = rows ? [...rows].filter((r) => !ids.includes(r)) : [];
if (
  !(seconds > 0) ||
  !(udpSeconds > 0) ||
  mtus.some((m) => !Number.isInteger(m) || m < 1280) ||
  losses.some((l) => !Number.isInteger(l) || l < 0 || l > 1000) ||
  (midPath !== undefined && !(Number.isInteger(midPath) && midPath >= 576 && midPath <= 1500)) ||
  unknown.length > 0
) {
  if (unknown.length > 0) console.error(`unknown rows: ${unknown.join(', ')}; known: ${ids.join(', ')}`);
  console.error(USAGE);
  process.exit(2);
}

const reason = requireRoot();
if (reason) {
  console.error(`tunnels bench: cannot run: ${reason}`);
  process.exit(1);
}

const cpu = cpus();
const machine = `${cpu.length}× ${cpu[0]?.model.trim() ?? 'unknown cpu'}, Linux ${release()}, Node ${process.version}`;
const started = Date.now();
const tables = await runTunnelSuite({
  mtus,
  lossPermille: losses,
  lossyMtus,
  midPathMtu: midPath,
  rows,
  seconds,
  udpSeconds,
  date: new Date().toISOString(),
  machine,
  log: (line) => console.error(`[${((Date.now() - started) / 1000).toFixed(0)} s] ${line}`),
});
for (const t of tables) console.log(`## ${t.heading}\n\n${t.intro}\n\n${t.table}\n`);
console.error(`tunnels bench: done in ${((Date.now() - started) / 1000).toFixed(0)} s`);
