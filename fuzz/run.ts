/**
 * `npm run fuzz`: every target, up to --inputs inputs each or --budget-s seconds each, whichever
 * comes first, after replaying its regression cases; with V8 coverage of the parser files.
 *
 *   node dist/fuzz/run.js [--inputs 1000000] [--budget-s 600] [--seed 1] [--targets a,b] [--jobs 1] [--no-coverage]
 *
 * Each target runs in a child process of its own (`--child NAME`) with NODE_V8_COVERAGE pointing
 * at a directory of its own, so its coverage is its alone; `--jobs` runs that many at once. Prints
 * the children's progress, then a Markdown summary (the table FUZZ.md keeps). Findings are written
 * to dist/fuzz/findings/<target>.json; move real bugs to fuzz/regressions/. Exits 1 when any target
 * crashed, broke a property or hung.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type FileCoverage, mergeCoverage, pct, readCoverage } from './coverage.js';
import type { Finding } from './engine.js';

interface Args {
  inputs: number;
  budgetS: number;
  seed: number;
  targets: string[] | undefined;
  jobs: number;
  coverage: boolean;
  child: string | undefined;
  stats: string | undefined;
}

/** ChildStats is what a child reports for its target (FuzzStats with the outcome map reduced to its size). */
interface ChildStats {
  target: string;
  inputs: number;
  ms: number;
  crashes: number;
  violations: number;
  hangs: number;
  outcomes: number;
  topOutcomes: [string, number][];
  corpus: number;
  slowestMs: number;
  peakHeapBytes: number;
  regressions: number;
  findings: Finding[];
}

function parseArgs(argv: string[]): Args {
  const a: Args = {
    inputs: 1_000_000,
    budgetS: 600,
    seed: 1,
    targets: undefined,
    jobs: 1,
    coverage: true,
    child: undefined,
    stats: undefined,
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[i + 1];
    if (k === '--no-coverage') {
      a.coverage = false;
      continue;
    }
    if (k === '--inputs') a.inputs = Number(v);
    else if (k === '--budget-s') a.budgetS = Number(v);
    else if (k === '--seed') a.seed = Number(v);
    else if (k === '--targets') a.targets = (v ?? '').split(',');
    else if (k === '--jobs') a.jobs = Number(v);
    else if (k === '--child') a.child = v;
    else if (k === '--stats') a.stats = v;
    else throw new Error(`unknown argument ${k}`);
    i++;
  }
  if (!Number.isInteger(a.inputs) || a.inputs < 1) throw new Error('--inputs wants a positive integer');
  if (!(a.budgetS > 0)) throw new Error('--budget-s wants a positive number of seconds');
  if (!Number.isInteger(a.jobs) || a.jobs < 1) throw new Error('--jobs wants a positive integer');
  return a;
}

/** child runs one target and writes its ChildStats to `args.stats`. */
async function child(args: Args, name: string): Promise<number> {
  const { TARGETS } = await import('./targets/index.js');
  const { fuzz, replay } = await import('./engine.js');
  const { loadRegressions } = await import('./regressions.js');
  const t = TARGETS.find((x) => x.name === name);
  if (t === undefined) throw new Error(`no target named ${name}`);
  await t.setup?.();
  const cases = loadRegressions(t.name);
  const regressionFindings = await replay(t, cases);
  const s = await fuzz(t, {
    inputs: args.inputs,
    budgetMs: args.budgetS * 1000,
    seed: args.seed,
    onProgress: (p) =>
      console.log(
        `  ${t.name}: ${p.inputs} inputs, ${(p.ms / 1000).toFixed(0)} s, ${Math.round(p.inputs / (p.ms / 1000))}/s, ` +
          `corpus ${p.corpus}, outcomes ${p.outcomes.size}, crashes ${p.crashes}, violations ${p.violations}`,
      ),
  });
  await t.teardown?.();
  const stats: ChildStats = {
    target: t.name,
    inputs: s.inputs,
    ms: s.ms,
    crashes: s.crashes + regressionFindings.filter((f) => f.kind === 'crash').length,
    violations: s.violations + regressionFindings.filter((f) => f.kind === 'violation').length,
    hangs: s.hangs + regressionFindings.filter((f) => f.kind === 'hang').length,
    outcomes: s.outcomes.size,
    topOutcomes: [...s.outcomes].sort((a, b) => b[1] - a[1]).slice(0, 40),
    corpus: s.corpus,
    slowestMs: s.slowestMs,
    peakHeapBytes: s.peakHeapBytes,
    regressions: cases.length,
    findings: [...regressionFindings, ...s.findings],
  };
  if (args.stats !== undefined) writeFileSync(args.stats, JSON.stringify(stats));
  return 0;
}

/** runChild spawns one child for `name` and resolves with its stats. */
function runChild(args: Args, name: string, work: string): Promise<ChildStats> {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const statsFile = path.join(work, `${name}.stats.json`);
  const argv = [
    '--expose-gc',
    path.join(here, 'run.js'),
    '--child',
    name,
    '--stats',
    statsFile,
    '--inputs',
    String(args.inputs),
    '--budget-s',
    String(args.budgetS),
    '--seed',
    String(args.seed),
  ];
  const env = { ...process.env };
  if (args.coverage) env.NODE_V8_COVERAGE = path.join(work, name);
  else delete env.NODE_V8_COVERAGE;
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, argv, { env, stdio: ['ignore', 'inherit', 'inherit'] });
    p.on('error', reject);
    p.on('exit', (code) => {
      try {
        const s = JSON.parse(readFileSync(statsFile, 'utf8')) as ChildStats;
        resolve(s);
      } catch (err) {
        reject(new Error(`fuzz target ${name} exited ${code} without stats`, { cause: err }));
      }
    });
  });
}

async function parent(args: Args): Promise<number> {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const root = path.resolve(here, '..', '..');
  const { TARGETS } = await import('./targets/index.js');
  // In the order given (put the slowest first when running several jobs), else in TARGETS order.
  const targets =
    args.targets === undefined
      ? [...TARGETS]
      : args.targets.map((n) => {
          const t = TARGETS.find((x) => x.name === n);
          if (t === undefined) throw new Error(`no target named ${n}`);
          return t;
        });
  const started = new Date();
  const work = mkdtempSync(path.join(tmpdir(), 'weft-fuzz-run-'));
  const results = new Map<string, { stats: ChildStats; files: Map<string, FileCoverage> }>();
  const union = new Map<string, FileCoverage>();
  const queue = targets.map((t) => t.name);
  const worker = async (): Promise<void> => {
    for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
      const stats = await runChild(args, name, work);
      const files = args.coverage ? readCoverage(path.join(work, name), root) : new Map<string, FileCoverage>();
      results.set(name, { stats, files });
      console.log(summaryLine(stats));
      if (stats.findings.length > 0) {
        const dir = path.join(here, 'findings');
        mkdirSync(dir, { recursive: true });
        writeFileSync(path.join(dir, `${name}.json`), `${JSON.stringify(stats.findings, null, 2)}\n`);
        for (const f of stats.findings.slice(0, 5)) {
          console.log(`  ${f.kind}: ${f.message.split('\n')[0]}\n    input ${f.inputHex.slice(0, 160)}`);
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(args.jobs, targets.length) }, worker));
  const ordered = targets.map((t) => ({ target: t, ...results.get(t.name)! }));
  for (const r of ordered) mergeCoverage(union, r.files);
  console.log(report(args, started, ordered, union));
  writeFileSync(
    path.join(here, 'last-run.json'),
    `${JSON.stringify(
      ordered.map((r) => r.stats),
      null,
      2,
    )}\n`,
  );
  rmSync(work, { recursive: true, force: true });
  return ordered.some((r) => r.stats.crashes + r.stats.violations + r.stats.hangs > 0) ? 1 : 0;
}

function summaryLine(s: ChildStats): string {
  return (
    `${s.target}: ${s.inputs} inputs in ${(s.ms / 1000).toFixed(1)} s (${Math.round(s.inputs / (s.ms / 1000))}/s), ` +
    `${s.regressions} regression cases, crashes ${s.crashes}, violations ${s.violations}, hangs ${s.hangs}, ` +
    `outcomes ${s.outcomes}, corpus ${s.corpus}, slowest ${s.slowestMs.toFixed(1)} ms, peak heap ${(s.peakHeapBytes / 2 ** 20).toFixed(0)} MiB`
  );
}

function report(
  args: Args,
  started: Date,
  results: {
    target: { name: string; parsers: readonly string[] };
    stats: ChildStats;
    files: Map<string, FileCoverage>;
  }[],
  union: Map<string, FileCoverage>,
): string {
  const cpu = cpus()[0]?.model ?? 'unknown cpu';
  const lines = [
    `## Run of ${started.toISOString()}`,
    '',
    `Machine: ${cpus().length} × ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}. ` +
      `Command: \`node dist/fuzz/run.js --inputs ${args.inputs} --budget-s ${args.budgetS} --seed ${args.seed} --jobs ${args.jobs}\`.`,
    '',
    '| target | inputs | time | inputs/s | outcomes | corpus | regressions | crashes | violations | hangs | slowest | peak heap | lines of its parser files |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of results) {
    const s = r.stats;
    let code = 0;
    let cov = 0;
    for (const f of parserFiles(r.target.parsers)) {
      const c = r.files.get(f);
      if (c !== undefined) {
        code += c.lines;
        cov += c.linesCovered;
      }
    }
    lines.push(
      `| ${s.target} | ${s.inputs.toLocaleString('en-US')} | ${(s.ms / 1000).toFixed(0)} s | ${Math.round(s.inputs / (s.ms / 1000)).toLocaleString('en-US')} | ${s.outcomes} | ${s.corpus} | ${s.regressions} | ${s.crashes} | ${s.violations} | ${s.hangs} | ${s.slowestMs.toFixed(1)} ms | ${(s.peakHeapBytes / 2 ** 20).toFixed(0)} MiB | ${pct(cov, code)} |`,
    );
  }
  lines.push('', '### Coverage of the parser files (all targets together)', '');
  lines.push('| file | lines | functions | blocks (V8) |', '|---|---:|---:|---:|');
  const wanted = new Set(results.flatMap((r) => parserFiles(r.target.parsers)));
  for (const f of [...wanted].sort()) {
    const c = union.get(f);
    if (c === undefined) {
      lines.push(`| ${f} | not loaded | | |`);
      continue;
    }
    lines.push(
      `| ${f} | ${pct(c.linesCovered, c.lines)} (${c.linesCovered}/${c.lines}) | ${pct(c.functionsCovered, c.functions)} (${c.functionsCovered}/${c.functions}) | ${pct(c.blocksCovered, c.blocks)} (${c.blocksCovered}/${c.blocks}) |`,
    );
  }
  return lines.join('\n');
}

/** parserFiles pulls the `dir/file.ts` names out of a target's parser list. */
function parserFiles(parsers: readonly string[]): string[] {
  const out = new Set<string>();
  for (const p of parsers) for (const m of p.matchAll(/([a-z-]+\/)+[a-z-]+\.ts/g)) out.add(m[0]);
  return [...out];
}

const args = parseArgs(process.argv.slice(2));
(args.child === undefined ? parent(args) : child(args, args.child)).then(
  // process.exit still writes NODE_V8_COVERAGE (Node writes it on every exit but a signal).
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(2);
  },
);
