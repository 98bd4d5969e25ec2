/**
 * attach-cycles runs inside a host's network namespace (started by bench/soak.ts and
 * e2e/faults.e2e.ts): it attaches and detaches the given containers in turn through the router's
 * HTTP API, as `weft attach` / `weft detach` do, `--cycles` times in all. Cycle i plugs in
 * container NS[i mod n] with the DNS name `<--name-prefix><i mod n>`, then unplugs it. With
 * `--pace-ms M`, cycle i starts no earlier than i × M ms after the first (spreading the cycles over
 * a soak); without it they run back to back.
 *
 *   node dist/bench/attach-cycles.js --cycles N [--pace-ms M] [--name-prefix soak] NS...
 *
 * stdout gets one JSON line per {@link PROGRESS_EVERY} cycles (`{"done":K}`) and a last line with
 * the totals ({@link CyclesReport}); the first failed call ends the run with `{"error":...}` as the
 * last line and exit status 1.
 */
import { parseArgs } from 'node:util';
import { ApiClient } from '../control/client.js';
import { clientTarget } from '../control/config.js';

/** PROGRESS_EVERY is how many cycles go by between two progress lines. */
const PROGRESS_EVERY = 10;

/** CyclesReport is the last stdout line of a run that completed. */
export interface CyclesReport {
  cycles: number;
  /** Distinct addresses the attaches were given (lowest free first: about one per container). */
  addresses: number;
  /** Wall time of the whole run, for the report only. */
  elapsedMs: number;
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    cycles: { type: 'string', default: '100' },
    'pace-ms': { type: 'string', default: '0' },
    'name-prefix': { type: 'string', default: 'cycle' },
  },
});
const cycles = Number(values.cycles);
const paceMs = Number(values['pace-ms']);
const prefix = values['name-prefix'];
if (!Number.isInteger(cycles) || cycles < 1 || !(paceMs >= 0) || positionals.length === 0) {
  console.error('usage: attach-cycles --cycles N [--pace-ms M] [--name-prefix P] NS...');
  process.exit(2);
}

const where = clientTarget({});
const api = new ApiClient(where.addr, 30_000, where);
const addresses = new Set<string>();
const started = performance.now();
const line = (o: object): void => {
  process.stdout.write(`${JSON.stringify(o)}\n`);
};
try {
  for (let i = 0; i < cycles; i++) {
    const wait = started + i * paceMs - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const k = i % positionals.length;
    const target = positionals[k] as string;
    const r = await api.ok('POST', '/attach', { body: { target, name: `${prefix}${k}` }, json: true });
    for (const c of (r.json as { cidrs?: string[] }).cidrs ?? []) addresses.add(c);
    await api.ok('POST', '/detach', { body: { target }, json: true });
    if ((i + 1) % PROGRESS_EVERY === 0) line({ done: i + 1 });
  }
} catch (err) {
  line({ error: err instanceof Error ? err.message : String(err) });
  process.exit(1);
}
const report: CyclesReport = { cycles, addresses: addresses.size, elapsedMs: Math.round(performance.now() - started) };
line(report);
