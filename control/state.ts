import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { ConfigError } from '../common/errors.js';
import type { AttachedContainer } from './attach.js';

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
  targets: z.array(z.string().max(300)).max(10_000).default([]),
  exposed: z.array(z.string().max(64)).max(1_000).default([]),
  incarnation: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER).optional(),
  attached: z
    .array(
      z.object({
        target: z.string().max(64),
        ifname: z.string().max(15),
        cidrs: z.array(z.string().max(18)).max(64),
        name: z.string().max(63).optional(),
        mac: z.string().max(17).optional(),
      }),
    )
    .max(10_000)
    .default([]),
});

/** StateFile reads and atomically rewrites a router's persisted state. */
export class StateFile {
  readonly file: string;

  constructor(readonly dir: string) {
    this.file = path.join(dir, 'state.json');
  }

  /** load returns the persisted state, or an empty one when there is none yet. */
  load(): PersistedState {
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

  /** save writes the state atomically (temporary file + rename). */
  save(state: PersistedState): void {
    writeJsonAtomic(this.dir, this.file, state);
  }

  /** remove deletes the state and the IPAM file (for `weft reset`). */
  remove(): void {
    rmSync(this.file, { force: true });
    rmSync(ipamFile(this.dir), { force: true });
  }
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

/** saveIpam writes the IPAM state atomically and durably: it must survive `kill -9` and power loss before it is gossiped. */
export function saveIpam(dir: string, state: unknown): void {
  writeJsonAtomic(dir, ipamFile(dir), state, true);
}

/** writeJsonAtomic writes JSON to a temporary file, optionally fsyncs it, and renames it over `file`. */
function writeJsonAtomic(dir: string, file: string, value: unknown, sync = false): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, `${JSON.stringify(value, null, 2)}\n`);
    if (sync) fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  if (sync) {
    const dfd = openSync(dir, 'r');
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  }
}
