/**
 * attach measures how long plugging a container in takes on one host: 100 sequential attaches
 * (veth pair, address from IPAM, routes, sysctls, the claim gossiped) through the router's HTTP
 * API, as `weft attach` and an orchestrator's plugin call it, then the detaches; and a few whole
 * `weft attach` CLI runs for the cost a user sees (Node start-up included).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch, removeStateDirs, weft } from '../e2e/weft.js';
import { type Host, Lab } from '../lab/netns.js';

const here = path.dirname(fileURLToPath(import.meta.url));

/** AttachResult holds the latency figures in milliseconds. */
export interface AttachResult {
  containers: number;
  attachMedianMs: number;
  attachP99Ms: number;
  attachMaxMs: number;
  detachMedianMs: number;
  cliRuns: number;
  cliMedianMs: number;
}

/** quantile returns the q-quantile (nearest rank) of xs. */
export function quantile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] ?? Number.NaN;
}

/** runAttach builds one host and `containers` + `cliRuns` namespaces and times attaching them. */
export async function runAttach(containers = 100, cliRuns = 10): Promise<AttachResult> {
  const topo = await Lab.create({ hosts: 1 });
  try {
    const h = topo.hosts[0] as Host;
    await launch(h, []);
    // The first allocation seeds the ring: done once, before timing.
    await weft(h, ['expose']);
    const names: string[] = [];
    for (let i = 0; i < containers; i++) names.push((await topo.addNamespace(`a${i}`)).name);
    const r = await h.exec(process.execPath, [path.join(here, 'attach-client.js'), ...names], { timeoutMs: 600_000 });
    const { attachMs, detachMs } = JSON.parse(r.stdout) as { attachMs: number[]; detachMs: number[] };
    const cli: number[] = [];
    for (let i = 0; i < cliRuns; i++) {
      const ns = await topo.addNamespace(`b${i}`);
      const t0 = performance.now();
      await weft(h, ['attach', ns.name]);
      cli.push(performance.now() - t0);
    }
    return {
      containers,
      attachMedianMs: quantile(attachMs, 0.5),
      attachP99Ms: quantile(attachMs, 0.99),
      attachMaxMs: Math.max(...attachMs),
      detachMedianMs: quantile(detachMs, 0.5),
      cliRuns,
      cliMedianMs: quantile(cli, 0.5),
    };
  } finally {
    await topo.destroy();
    removeStateDirs(topo);
  }
}

/** renderAttachTable renders the result as a markdown table. */
export function renderAttachTable(r: AttachResult): string {
  return [
    '| what | median | p99 | max |',
    '|---|---:|---:|---:|',
    `| attach via HTTP API, ${r.containers} sequential containers (target median ≤ 150 ms) | ${r.attachMedianMs.toFixed(1)} ms | ${r.attachP99Ms.toFixed(1)} ms | ${r.attachMaxMs.toFixed(1)} ms |`,
    `| detach via HTTP API | ${r.detachMedianMs.toFixed(1)} ms | | |`,
    `| \`weft attach\` CLI, ${r.cliRuns} runs (Node start-up included) | ${r.cliMedianMs.toFixed(1)} ms | | |`,
  ].join('\n');
}
