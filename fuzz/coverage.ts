/**
 * Coverage of a fuzz run from V8's own block coverage (what NODE_V8_COVERAGE writes at exit, the data
 * c8 reads), mapped back to TypeScript lines through the build's source maps. Each target runs in its
 * own process with its own NODE_V8_COVERAGE directory, so each gets its own figures.
 *
 * A TypeScript line counts as code when some compiled JavaScript statement maps to it, and as
 * covered when one of those statements ran. "Blocks" are the ranges V8 reports inside functions
 * (branches, loop bodies, short-circuits); uncovered blocks are those that never ran.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { SourceMap } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

interface Range {
  startOffset: number;
  endOffset: number;
  count: number;
}
interface FunctionCoverage {
  functionName: string;
  ranges: Range[];
}
interface ScriptCoverage {
  url: string;
  functions: FunctionCoverage[];
}

/** FileCoverage is one TypeScript source file's coverage. */
export interface FileCoverage {
  lines: number;
  linesCovered: number;
  functions: number;
  functionsCovered: number;
  blocks: number;
  blocksCovered: number;
  /** coveredLines holds the covered TS line numbers (1-based), for merging runs. */
  coveredLines: Set<number>;
  codeLines: Set<number>;
}

/**
 * readCoverage summarizes the V8 coverage a process wrote to `dir` at exit (NODE_V8_COVERAGE=dir),
 * for the project's compiled files under `root`/dist (the fuzz harness itself left out), by TS path.
 */
export function readCoverage(dir: string, root: string): Map<string, FileCoverage> {
  const out = new Map<string, FileCoverage>();
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    if (!name.endsWith('.json')) continue;
    const { result } = JSON.parse(readFileSync(path.join(dir, name), 'utf8')) as { result: ScriptCoverage[] };
    for (const script of result) {
      if (!script.url.startsWith('file://')) continue;
      const file = fileURLToPath(script.url);
      if (!file.startsWith(`${root}/dist/`) || file.includes('/dist/fuzz/') || !file.endsWith('.js')) continue;
      const fc = fileCoverage(file, script.functions);
      if (fc !== undefined) mergeCoverage(out, new Map([fc]));
    }
  }
  return out;
}

function fileCoverage(file: string, functions: FunctionCoverage[]): [string, FileCoverage] | undefined {
  const mapFile = `${file}.map`;
  if (!existsSync(mapFile)) return undefined;
  const js = readFileSync(file, 'utf8');
  const payload = JSON.parse(readFileSync(mapFile, 'utf8')) as { sources: string[] };
  const map = new SourceMap(payload as never);
  const ts = payload.sources[0] ?? file;
  // Count per character: the innermost range wins, so apply ranges from the largest down.
  const counts = new Int32Array(js.length).fill(1);
  const ranges: Range[] = [];
  let blocks = 0;
  let blocksCovered = 0;
  let fns = 0;
  let fnsCovered = 0;
  for (const f of functions) {
    f.ranges.forEach((r, i) => {
      ranges.push(r);
      if (i === 0) {
        if (f.functionName !== '' || r.startOffset !== 0) {
          fns++;
          if (r.count > 0) fnsCovered++;
        }
      } else {
        blocks++;
        if (r.count > 0) blocksCovered++;
      }
    });
  }
  ranges.sort((a, b) => b.endOffset - b.startOffset - (a.endOffset - a.startOffset));
  for (const r of ranges) counts.fill(r.count > 0 ? 1 : 0, r.startOffset, Math.min(r.endOffset, js.length));
  const codeLines = new Set<number>();
  const coveredLines = new Set<number>();
  let lineStart = 0;
  let line = 0;
  while (lineStart <= js.length) {
    let end = js.indexOf('\n', lineStart);
    if (end < 0) end = js.length;
    let c = lineStart;
    while (c < end && (js[c] === ' ' || js[c] === '\t')) c++;
    const rest = js.slice(c, c + 2);
    if (
      c < end &&
      rest !== '//' &&
      rest !== '/*' &&
      js[c] !== '*' &&
      !js.startsWith('import ', c) &&
      !js.startsWith('export {', c)
    ) {
      const e = map.findEntry(line, c - lineStart) as { originalLine?: number };
      if (e.originalLine !== undefined) {
        const tsLine = e.originalLine + 1;
        codeLines.add(tsLine);
        if ((counts[c] as number) > 0) coveredLines.add(tsLine);
      }
    }
    lineStart = end + 1;
    line++;
  }
  const rel = ts.replace(/^(\.\.\/)+/, '');
  return [
    rel,
    {
      lines: codeLines.size,
      linesCovered: coveredLines.size,
      functions: fns,
      functionsCovered: fnsCovered,
      blocks,
      blocksCovered,
      coveredLines,
      codeLines,
    },
  ];
}

/** mergeCoverage folds `b` into `a` (line sets united; function and block counts as the larger). */
export function mergeCoverage(a: Map<string, FileCoverage>, b: Map<string, FileCoverage>): void {
  for (const [file, fb] of b) {
    const fa = a.get(file);
    if (fa === undefined) {
      a.set(file, { ...fb, coveredLines: new Set(fb.coveredLines), codeLines: new Set(fb.codeLines) });
      continue;
    }
    for (const l of fb.codeLines) fa.codeLines.add(l);
    for (const l of fb.coveredLines) fa.coveredLines.add(l);
    fa.lines = fa.codeLines.size;
    fa.linesCovered = fa.coveredLines.size;
    fa.functions = Math.max(fa.functions, fb.functions);
    fa.functionsCovered = Math.max(fa.functionsCovered, fb.functionsCovered);
    fa.blocks = Math.max(fa.blocks, fb.blocks);
    fa.blocksCovered = Math.max(fa.blocksCovered, fb.blocksCovered);
  }
}

/** pct renders a fraction as a percentage with one decimal. */
export function pct(n: number, d: number): string {
  return d === 0 ? '-' : `${((100 * n) / d).toFixed(1)} %`;
}
