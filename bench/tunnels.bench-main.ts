/**
 * tunnels.bench-main prints the baseline tunnel tables: for underlay MTU 1500 (overlay 1450) and 9000
 * (overlay 8950) it builds a 2-host netns topology, measures every {@link baselineScenarios} row and
 * prints a markdown table. Needs root; run from compiled JS:
 *
 * ```
 * node dist/bench/tunnels.bench-main.js [--seconds 5] [--udp-seconds 3] [--mtu 1500,9000]
 * ```
 *
 * Progress goes to stderr, the tables to stdout. About 2½ minutes with the defaults.
 */
import { cpus, release } from 'node:os';
import { parseArgs } from 'node:util';
import { requireRoot, Topology } from '../e2e/netns.js';
import { baselineScenarios, measureScenarios, renderTable } from './tunnels.js';

/** VXLAN_OVERHEAD_BYTES sets each table's overlay MTU: the underlay minus a VXLAN encapsulation. */
const VXLAN_OVERHEAD_BYTES = 50;

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    'udp-seconds': { type: 'string', default: '3' },
    mtu: { type: 'string', default: '1500,9000' },
  },
});
const seconds = Number(values.seconds);
const udpSeconds = Number(values['udp-seconds']);
const mtus = values.mtu.split(',').map(Number);
if (!(seconds > 0) || !(udpSeconds > 0) || mtus.some((m) => !Number.isInteger(m) || m < 1280)) {
  console.error('usage: tunnels.bench-main [--seconds N] [--udp-seconds N] [--mtu 1500,9000]');
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
for (const underlayMtu of mtus) {
  const overlayMtu = underlayMtu - VXLAN_OVERHEAD_BYTES;
  const topo = await Topology.create({ hosts: 2, underlayMtu });
  try {
    const results = await measureScenarios(topo, baselineScenarios, {
      seconds,
      udpSeconds,
      overlayMtu,
      underlayMtu,
      log: (line) => console.error(`[${((Date.now() - started) / 1000).toFixed(0)} s] mtu ${underlayMtu}: ${line}`),
    });
    console.log(`${renderTable(results, { date: new Date().toISOString(), machine, underlayMtu, overlayMtu })}\n`);
  } finally {
    await topo.destroy();
  }
}
console.error(`tunnels bench: done in ${((Date.now() - started) / 1000).toFixed(0)} s`);
