import { closeSync, fsyncSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { ConfigError, WeftError } from '../common/errors.js';
import type { AttachedContainer } from './attach.js';
import { TARGETS_MAX } from './config.js';
import { mkdirParents } from './state-dir.js';

/** PersistedState is what a router keeps across restarts in `<stateDir>/state.json`. */
export interface PersistedState {
  /** peerName is this router's name, made once. */
  peerName?: string;
  /** targets are the peers given to launch/connect, minus those forgotten. */
  targets: string[];
  /** exposed lists the CIDRs `weft expose` gave this host. */
  exposed: string[];
  /** incarnation is the topology incarnation of the last start; each start uses a larger one. */
  incarnation?: number;
  /** attached lists the containers `weft attach` plugged in. */
  attached: AttachedContainer[];
}

const StateSchema = z.object({
  peerName: z.string().max(64).optional(),
  targets: z.array(z.string().max(300)).max(TARGETS_MAX).default([]),
  exposed: z.array(z.string().max(64)).max(1_000).default([]),
  incarnation: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER).optional(),
  attached: z
    .array(
      z.object({
        // 256: an owner key of an attach by path (CNI: CONTAINERID:IFNAME) is longer than a name or pid.
        target: z.string().max(256),
        ifname: z.string().max(15),
        cidrs: z.array(z.string().max(18)).max(64),
        name: z.string().max(63).optional(),
        names: z.array(z.string().max(63)).max(64).optional(),
        mac: z.string().max(17).optional(),
        netns: z.string().max(4096).optional(),
        containerIfname: z.string().max(15).optional(),
        peerIfname: z.string().max(15).optional(),
        endpoint: z.string().max(128).optional(),
        state: z.enum(['pending', 'attached']).optional(),
      }),
    )
    .max(10_000)
    .default([]),
});

/** StateDirStatus says whether the state directory takes our writes (for status). */
export interface StateDirStatus {
  dir: string;
  /** failing is true while the last write of state.json failed. */
  failing: boolean;
  /** errors counts the writes of state.json that failed since start. */
  errors: number;
  /** lastError is the last failure's message, e.g. "cannot save state in /x: no space left on device". */
  lastError?: string;
}

/**
 * StateFile reads and atomically, durably rewrites a router's persisted state. A write that
 * fails throws a {@link WeftError} (EWEFT_SYSTEM) with a one-line message naming the directory
 * and the reason, leaves no temporary file behind, and is counted in {@link StateFile.status}.
 */
export class StateFile {
  readonly file: string;
  private errors = 0;
  private lastError: string | undefined;
  private failing = false;

  constructor(readonly dir: string) {
    this.file = path.join(dir, 'state.json');
  }

  /**
   * load returns the persisted state, or an empty one when there is none yet. It first removes
   * temporary files a write cut short (a crash, a full disk) left in the directory.
   */
  load(): PersistedState {
    removeStaleTemporaries(this.dir);
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { targets: [], exposed: [], attached: [] };
      throw new ConfigError(`cannot read ${this.file}: ${(err as Error).message}`, { cause: err });
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new ConfigError(`${this.file} is not valid JSON; move it away to start afresh`, { cause: err });
    }
    const r = StateSchema.safeParse(json);
    if (!r.success) throw new ConfigError(`${this.file} is not a weft state file: ${r.error.issues[0]?.message}`);
    return r.data;
  }

  /**
   * save writes the state atomically: a temporary file, fsynced, renamed over state.json. From the
   * rename on, `kill -9` keeps it, and a power cut never leaves a torn file. The directory is not
   * fsynced: what a power cut could then lose is the last rename, i.e. attach records, whose
   * containers' interfaces do not survive a power cut either (restore frees both the same way),
   * and not syncing keeps the moment between saving an attach and answering its caller as short
   * as it can be (a `kill -9` there is the one case where a caller told "failed" finds it
   * attached). Throws a {@link StateSaveError} ("cannot save state in DIR: REASON") when it cannot.
   */
  save(state: PersistedState): void {
    try {
      writeJsonAtomic(this.dir, this.file, state, { syncFile: true, syncDir: false });
    } catch (err) {
      const e = new StateSaveError(this.dir, err);
      this.errors++;
      this.failing = true;
      this.lastError = e.message;
      throw e;
    }
    this.failing = false;
  }

  /** status says whether the directory takes our writes, and how many failed. */
  status(): StateDirStatus {
    return {
      dir: this.dir,
      failing: this.failing,
      errors: this.errors,
      ...(this.lastError === undefined ? {} : { lastError: this.lastError }),
    };
  }

  /** remove deletes the state and the IPAM file (for `weft reset`). */
  remove(): void {
    rmSync(this.file, { force: true });
    rmSync(ipamFile(this.dir), { force: true });
  }
}

/**
 * StateSaveError says the state directory did not take a write: "cannot save state in DIR:
 * REASON" (e.g. "no space left on device"). Callers that must not go on without the write (an
 * attach, a name) fail with it; it may arrive as the `cause` of another component's error.
 */
export class StateSaveError extends WeftError {
  constructor(dir: string, cause: unknown) {
    super('EWEFT_SYSTEM', `cannot save state in ${dir}: ${reasonOf(cause)}`, { cause });
    this.name = 'StateSaveError';
  }
}

/**
 * reasonOf renders a system error as the bare reason ("no space left on device"), not Node's
 * "ENOSPC: no space left on device, write".
 */
export function reasonOf(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const m = /^E[A-Z0-9]+: ([^,]+)/.exec(message);
  return (m?.[1] ?? message).trim();
}

/** TEMPORARY_RE matches the temporary files {@link writeJsonAtomic} makes (`state.json.PID.tmp`). */
const TEMPORARY_RE = /^(state|ipam)\.json\.[0-9]+\.tmp$/;

/** removeStaleTemporaries deletes temporary files left by writes cut short; best effort. */
export function removeStaleTemporaries(dir: string): number {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  let n = 0;
  for (const name of names) {
    if (!TEMPORARY_RE.test(name)) continue;
    try {
      rmSync(path.join(dir, name), { force: true });
      n++;
    } catch {
      // not ours to fight over
    }
  }
  return n;
}

/** ipamFile is where the IPAM ring and allocations are kept. */
export function ipamFile(dir: string): string {
  return path.join(dir, 'ipam.json');
}

/** loadIpam returns the persisted IPAM JSON (validated by the allocator), or undefined when there is none. */
export function loadIpam(dir: string): unknown {
  const file = ipamFile(dir);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ConfigError(`cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${file} is not valid JSON; restore it, or remove it to give up this peer's addresses`, {
      cause: err,
    });
  }
}

/**
 * saveIpam writes the IPAM state atomically and durably: it must survive `kill -9` and power loss
 * before it is gossiped. Throws a {@link StateSaveError} when it cannot.
 */
export function saveIpam(dir: string, state: unknown): void {
  try {
    writeJsonAtomic(dir, ipamFile(dir), state, { syncFile: true, syncDir: true });
  } catch (err) {
    throw new StateSaveError(dir, err);
  }
}

/**
 * writeJsonAtomic writes JSON to a temporary file, optionally fsyncs it, renames it over `file`,
 * and optionally fsyncs the directory (making the rename itself durable). On failure the
 * temporary file is removed and `file` is left as it was.
 */
function writeJsonAtomic(
  dir: string,
  file: string,
  value: unknown,
  sync: { syncFile: boolean; syncDir: boolean },
): void {
  mkdirParents(dir, 0o700);
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    const fd = openSync(tmp, 'w', 0o600);
    try {
      // A short write (a disk filling up) must not leave a truncated file to be renamed over the good one.
      const bytes = Buffer.from(`${JSON.stringify(value, null, 2)}\n`);
      for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off);
      if (sync.syncFile) fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  if (sync.syncDir) {
    const dfd = openSync(dir, 'r');
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  }
}
