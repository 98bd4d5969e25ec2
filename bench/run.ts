/**
 * `npm run bench`: every benchmark in one run, side by side, written to bench/RESULTS.md.
 *
 *   1. the hot path in one process (bench/hotpath.ts): ≥ 1M packets, packets/s, heap growth, GCs;
 *   2. two hosts from network namespaces (root): raw veth, kernel vxlan, socat, wireguard-go
 *      (bookworm's and trixie's), nebula and Weft (sleeve, VXLAN; container to container, and
 *      host to host) for a 1500-byte underlay at 0, 0.2 % and 1 % frame loss and a lossless
 *      9000-byte underlay, as ratios to raw veth; then the same across a mid-path MTU of 1400
 *      (bench/tunnel-suite.ts).
 *
 *   node dist/bench/run.js [--packets 1000000] [--seconds 5] [--mtu 1500,9000] [--loss 0,2,10]
 *       [--lossy-mtu 1500] [--mid-path 1400|off] [--no-soak] [--no-write]
 */
import { writeFileSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { requireRoot } from '../lab/netns.js';
import { aeadBenchTable, runAeadBench } from './aead.js';
import { renderAttachTable, runAttach } from './attach.js';
import { renderConvergenceTable, runConvergence } from './convergence.js';
import { renderDnsTable, runDnsBench } from './dns.js';
import { type HotpathResult, runHotpath } from './hotpath.js';
import { renderIdleTable, runIdle } from './idle.js';
import { renderIpamTable, runIpamBench } from './ipam.js';
import { runRelay } from './relay.js';
import { renderSoakTable, runSoak } from './soak.js';
import { runStatusStall } from './status-stall.js';
import { runTunnelSuite } from './tunnel-suite.js';

const { values } = parseArgs({
  options: {
    packets: { type: 'string', default: '1000000' },
    seconds: { type: 'string', default: '5' },
    'udp-seconds': { type: 'string', default: '3' },
    mtu: { type: 'string', default: '1500,9000' },
    loss: { type: 'string', default: '0,2,10' },
    'lossy-mtu': { type: 'string', default: '1500' },
    'mid-path': { type: 'string', default: '1400' },
    'no-write': { type: 'boolean', default: false },
    'hotpath-only': { type: 'boolean', default: false },
    'no-soak': { type: 'boolean', default: false },
  },
});
const packets = Number(values.packets);
const seconds = Number(values.seconds);
const udpSeconds = Number(values['udp-seconds']);
const numbers = (text: string): number[] => (text.trim() === '' ? [] : text.split(',').map(Number));
const mtus = numbers(values.mtu);
const losses = numbers(values.loss);
const lossyMtus = numbers(values['lossy-mtu']);
const midPathMtu = values['mid-path'] === 'off' ? undefined : Number(values['mid-path']);

const cpu = cpus();
const machine = `${cpu.length}× ${cpu[0]?.model.trim() ?? 'unknown cpu'}, Linux ${release()}, Node ${process.version}`;
const date = new Date().toISOString();
const sections: string[] = [
  '# Benchmark results',
  '',
  `Latest run: ${date} on ${machine} (load average before the run ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}). Produced by \`npm run bench\` (bench/run.ts); every row of a table is measured in the same run.`,
  '',
];

function hotpathTable(rows: HotpathResult[]): string {
  const lines = [
    '| encap | packet bytes | packets | delivered | Mpps | Gbit/s (inner) | heap growth | GCs during run | drops |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.encap}${r.encrypted ? ' encrypted' : ''} | ${r.packetBytes} | ${r.sent} | ${r.delivered} | ${(r.packetsPerSecond / 1e6).toFixed(3)} | ${r.gbitPerSecond.toFixed(2)} | ${(r.heapGrowthBytes / 1024).toFixed(0)} KiB | ${r.gcCount} | ${r.drops} |`,
    );
  }
  return lines.join('\n');
}

console.error(`hot path: ${packets} packets per row`);
const hot: HotpathResult[] = [];
for (const [encap, encrypted] of [
  ['sleeve', false],
  ['sleeve', true],
  ['vxlan', false],
] as const) {
  for (const size of [64, 1400]) {
    const r = await runHotpath(encap, size, packets, encrypted);
    console.error(
      `  ${encap}${encrypted ? ' encrypted' : ''} ${size} B: ${(r.packetsPerSecond / 1e6).toFixed(3)} Mpps, heap +${r.heapGrowthBytes} B, ${r.gcCount} GCs`,
    );
    hot.push(r);
  }
}
sections.push(
  '## Hot path in one process (bench/hotpath.ts)',
  '',
  'Generator TUN → forwarder A (look up, encapsulate in place) → native batched UDP on loopback → forwarder B',
  '(validate, decapsulate) → counting TUN; both directions on one core. "heap growth" is what the run retained',
  '(measured after a forced GC); "GCs during run" counts young-generation collections, the allocation signal: the',
  'per-packet path allocates nothing; what the harness itself allocates (a setImmediate per 64-packet batch) is',
  'the only garbage, a few GCs per million packets.',
  '',
  hotpathTable(hot),
  '',
);

console.error('aead');
sections.push(
  '## AEAD for encryption (bench/aead.ts)',
  '',
  "The addon's batched AEAD on Node's own OpenSSL (EVP) against node:crypto per packet, one core, batches of 64;",
  'data-crypto is the sleeve wrapper (counter, key phase, replay window). Gbit/s counts payload. Best of 5 slices.',
  '',
  aeadBenchTable(await runAeadBench({ seconds: 3 })),
  '',
);

console.error('mesh convergence (the real mesh core, simulated links)');
sections.push(
  '## Mesh convergence: the real mesh core on simulated links (bench/convergence.ts)',
  '',
  "N instances of the router's own MeshCore (topology, gossip, discovery by pairHash with degree 16, routes) on one",
  'virtual clock, over modelled links (1 ms ± jitter per hop, 0.2 ms per message, FIFO per direction) and the',
  "connection maker's real backoff. Each router joins knowing one other. Times are virtual: from the event to every",
  'live router holding the same topology with routes to every other. Wall = real time the size took to simulate.',
  '',
  renderConvergenceTable(await runConvergence({ sizes: [10, 50, 100, 200], trials: 1 })),
  '',
);

console.error('ipam allocator');
sections.push(
  '## IPAM allocator in isolation (bench/ipam.ts)',
  '',
  'One peer owning the default 10.32.0.0/12 alone, in one process: what `weft attach` costs in address',
  'bookkeeping before any plumbing, and what a persisted write of the state costs.',
  '',
  renderIpamTable(await runIpamBench()),
  '',
);

if (!values['hotpath-only']) {
  const reason = requireRoot();
  if (reason) {
    sections.push(`## Two hosts\n\nnot run: ${reason}\n`);
  } else {
    const started = Date.now();
    const tables = await runTunnelSuite({
      mtus,
      lossPermille: losses,
      lossyMtus,
      midPathMtu,
      seconds,
      udpSeconds,
      date,
      machine,
      log: (line) => console.error(`[${((Date.now() - started) / 1000).toFixed(0)} s] ${line}`),
    });
    for (const t of tables) {
      console.log(`${t.table}\n`);
      sections.push(`## ${t.heading}`, '', t.intro, '', t.table, '');
    }
    console.error('relayed vs direct RTT');
    const relay = await runRelay();
    sections.push(
      '## Relayed vs direct RTT (bench/relay.ts)',
      '',
      'Three Weft hosts (sleeve); median of 100 pings 20 ms apart from host 1 to host 3, first directly, then with',
      'the direct link cut by nftables inside host 1 so that traffic is relayed by host 2. Target: relayed ≤ 1.6× direct.',
      '',
      '| direct median ms | relayed median ms | relayed / direct |',
      '|---:|---:|---:|',
      `| ${relay.directMedianMs.toFixed(3)} | ${relay.relayedMedianMs.toFixed(3)} | ${relay.ratio.toFixed(2)} |`,
      '',
    );
    console.error('status polling vs datapath');
    const stall = await runStatusStall();
    sections.push(
      '## Status polling vs the datapath (bench/status-stall.ts)',
      '',
      'Two Weft hosts (sleeve), a container on each; median of 200 pings 20 ms apart container to container, idle,',
      'then while a poller on host 1 fetches `/status?format=json` and `/metrics` 20 times a second each (the',
      'router answers HTTP on the same thread as its datapath). Target: polled ≤ 1.2× idle.',
      '',
      '| idle median ms | polled median ms | polled / idle | requests answered |',
      '|---:|---:|---:|---:|',
      `| ${stall.idleMedianMs.toFixed(3)} | ${stall.polledMedianMs.toFixed(3)} | ${stall.ratio.toFixed(2)} | ${stall.requests} |`,
      '',
    );
    console.error('attach latency');
    sections.push(
      '## Attach latency (bench/attach.ts)',
      '',
      'One Weft host; 100 network namespaces attached one after another through the HTTP API (veth pair made in the',
      'container under its final name, address from IPAM persisted with fsync, routes, sysctls, claim gossiped), then',
      'detached; then whole `weft attach` CLI runs.',
      '',
      renderAttachTable(await runAttach()),
      '',
    );
    console.error('dns');
    sections.push(
      '## DNS: Weft vs dnsmasq (bench/dns.ts)',
      '',
      '1,000 names `cN.weft.local` (every 10th with 3 A records), every query a hit, dnsperf 2.10 on 127.0.0.1;',
      'each server pinned to CPU 0, dnsperf to CPU 1. Max qps with 100 queries outstanding for 10 s; then a fixed',
      "5,000 qps for 10 s: latency percentiles from dnsperf's per-query output, and the server's CPU from /proc.",
      "Weft's server is the router's own DnsServer + DnsRecords run alone (bench/dns-server.ts).",
      'Targets: ≥ 0.6× dnsmasq qps; p99 ≤ 0.5 ms at 5k qps using ≤ 35% of a core.',
      '',
      renderDnsTable(await runDnsBench()),
      '',
    );
    console.error('idle cost');
    sections.push(
      '## Idle cost of real routers (bench/idle.ts)',
      '',
      'N real routers (one per network namespace, `weft launch` as a chain with `--discovery-degree N-1`: a full mesh),',
      'idle: after the mesh is complete and 10 s of settling, 60 s measured. Per router: CPU (utime+stime from /proc) as %',
      'of one core, VmRSS, RssAnon (private), V8 heap and external memory from /metrics, and what its host sends on the',
      'underlay. Target: ≤ 0.2 % of a core and ≤ 60 MB RSS at 20 peers.',
      '',
      renderIdleTable(await runIdle({ hosts: [5, 10, 20], seconds: 60 })),
      '',
    );
    if (!values['no-soak']) {
      console.error('memory soak (10 min)');
      sections.push(
        '## Memory soak (bench/soak.ts)',
        '',
        renderSoakTable(await runSoak({ minutes: 10, cycles: 1000 })),
        '',
      );
    }
  }
}

const text = `${sections.join('\n')}\n`;
console.log(text);
if (!values['no-write']) {
  const out = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bench/RESULTS.md');
  writeFileSync(out, text);
  console.error(`written to ${out}`);
}
