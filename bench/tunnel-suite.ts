/**
 * tunnel-suite runs the whole tunnel bench that `npm run bench` (bench/run.ts) and
 * bench/tunnels.bench-main.ts print: for each underlay MTU a 2-host topology measured at every loss
 * level (lossy levels only for the MTUs in `lossyMtus`), then a small table across a routed path
 * whose middle link has a smaller MTU. Rows are {@link tunnelScenarios}, or the subset `rows` names.
 */
import { Lab } from '../lab/netns.js';
import {
  baselineScenarios,
  kernelVxlan,
  measureLossLevels,
  RAW_ID,
  rawVeth,
  renderTable,
  type TunnelScenario,
} from './tunnels.js';
import { weftContainerScenario, weftEncryptedScenario, weftScenario } from './weft-scenarios.js';

/** OVERLAY_OVERHEAD_BYTES sets each table's overlay MTU: the underlay minus a VXLAN encapsulation. */
export const OVERLAY_OVERHEAD_BYTES = 50;
/** DEFAULT_LOSS_PERMILLE are the loss levels of the lossy tables: none, 0.2 % and 1 % of frames. */
export const DEFAULT_LOSS_PERMILLE: readonly number[] = [0, 2, 10];

/**
 * tunnelScenarios are the rows of the two-host tables, in order: the baselines, then Weft
 * container to container (sleeve, sleeve with a password, VXLAN, the kernel fast path), then Weft
 * host to host (lossless only).
 */
export function tunnelScenarios(): TunnelScenario[] {
  return [
    ...baselineScenarios,
    weftContainerScenario('sleeve'),
    weftEncryptedScenario(),
    weftContainerScenario('vxlan'),
    weftContainerScenario('auto'),
    weftScenario('sleeve'),
    weftScenario('vxlan'),
    weftScenario('auto'),
  ];
}

/** midPathScenarios are the rows of the mid-path table: the raw routed path, kernel vxlan, and Weft containers. */
export function midPathScenarios(): TunnelScenario[] {
  return [
    { ...rawVeth, name: 'raw routed path' },
    kernelVxlan,
    weftContainerScenario('sleeve'),
    weftContainerScenario('vxlan'),
  ];
}

/** TunnelSuiteOptions tune {@link runTunnelSuite}. */
export interface TunnelSuiteOptions {
  /** Underlay MTUs, one two-host table each, e.g. `[1500, 9000]`. */
  mtus: readonly number[];
  /** Loss levels (per mille) for the MTUs in `lossyMtus`; the others are measured lossless. */
  lossPermille: readonly number[];
  /** MTUs measured at every level of `lossPermille`. Default `[1500]`. */
  lossyMtus?: readonly number[];
  /** MTU of the middle link of the mid-path table (hosts on 1500-byte links); undefined: no such table. */
  midPathMtu?: number;
  /** Scenario ids to measure (`raw`, `vxlan`, `weft-sleeve`, …); undefined: all. Raw is always measured. */
  rows?: ReadonlySet<string>;
  seconds: number;
  udpSeconds: number;
  date: string;
  machine: string;
  log: (line: string) => void;
}

/** TunnelTable is one rendered table with its section heading. */
export interface TunnelTable {
  heading: string;
  /** A paragraph saying how the table was measured. */
  intro: string;
  table: string;
}

/** scenarioIds lists every id {@link TunnelSuiteOptions.rows} accepts. */
export function scenarioIds(): string[] {
  return [...new Set([...tunnelScenarios(), ...midPathScenarios()].map((s) => s.id))];
}

function pick(all: TunnelScenario[], rows: ReadonlySet<string> | undefined): TunnelScenario[] {
  return rows ? all.filter((s) => s.id === RAW_ID || rows.has(s.id)) : all;
}

const COLUMNS =
  '"loss": frames the underlay switch drops (nftables `numgen random` in the bridge namespace); lossy levels run with' +
  ' TSO/GSO/GRO off on every underlay veth so that a drop is one wire-sized packet, and "× raw veth" is to raw veth' +
  ' at the same loss. "IP frags made/reasm": IpFragCreates / IpReasmReqds summed over the host (and router)' +
  ' namespaces during the row; 0/0 means nothing was fragmented on the underlay. "CPU % A / B": the tunnel' +
  " processes (Weft's routers; wireguard-go, nebula, socat) on each host during the TCP test, % of one core, from" +
  ' /proc/<pid>/stat; "Gbit/s per core" = TCP Gbit/s ÷ the cores both used together. Weft rows are container to' +
  ' container across the hosts (`weft attach`) unless labelled host to host, at the MTU the router picks by' +
  " default; wireguard-go and nebula get the overlay MTU or what fits the hosts' links, as their users size them.";

/**
 * runTunnelSuite builds each topology, measures its rows and returns the rendered tables (each
 * topology is destroyed before the next is built, also on failure).
 */
export async function runTunnelSuite(opts: TunnelSuiteOptions): Promise<TunnelTable[]> {
  const tables: TunnelTable[] = [];
  const lossyMtus = opts.lossyMtus ?? [1500];
  const measure = { seconds: opts.seconds, udpSeconds: opts.udpSeconds };
  for (const underlayMtu of opts.mtus) {
    const overlayMtu = underlayMtu - OVERLAY_OVERHEAD_BYTES;
    const losses = lossyMtus.includes(underlayMtu) ? opts.lossPermille : [0];
    const topo = await Lab.create({ hosts: 2, underlayMtu });
    try {
      const results = await measureLossLevels(topo, pick(tunnelScenarios(), opts.rows), {
        ...measure,
        overlayMtu,
        underlayMtu,
        lossPermille: losses,
        log: (line) => opts.log(`mtu ${underlayMtu}: ${line}`),
      });
      tables.push({
        heading: `Two hosts, underlay MTU ${underlayMtu}, overlay MTU ${overlayMtu}`,
        intro: COLUMNS,
        table: renderTable(results, { date: opts.date, machine: opts.machine, underlayMtu, overlayMtu }),
      });
    } finally {
      await topo.destroy();
    }
  }
  if (opts.midPathMtu !== undefined) {
    const underlayMtu = 1500;
    const overlayMtu = underlayMtu - OVERLAY_OVERHEAD_BYTES;
    const topo = await Lab.create({ hosts: 2, underlayMtu, midPathMtu: opts.midPathMtu });
    try {
      const results = await measureLossLevels(topo, pick(midPathScenarios(), opts.rows), {
        ...measure,
        overlayMtu,
        underlayMtu,
        pathMtu: opts.midPathMtu,
        lossPermille: [0],
        log: (line) => opts.log(`mid-path ${opts.midPathMtu}: ${line}`),
      });
      tables.push({
        heading: `Mid-path MTU ${opts.midPathMtu}: two hosts on ${underlayMtu}-byte links, routed through a ${opts.midPathMtu}-byte link`,
        intro:
          `Host 1 on the switch, host 2 behind two router namespaces joined by a link of MTU ${opts.midPathMtu} (the routers` +
          ' send ICMP "fragmentation needed"); the hosts only know their own 1500-byte links. Fragments are counted in' +
          ' both hosts and both routers. Lossless, offloads as they are.',
        table: renderTable(results, {
          date: opts.date,
          machine: opts.machine,
          underlayMtu,
          overlayMtu,
          title: `Tunnels across a mid-path MTU ${opts.midPathMtu}, host links ${underlayMtu}, overlay MTU ${overlayMtu}`,
        }),
      });
    } finally {
      await topo.destroy();
    }
  }
  return tables;
}
