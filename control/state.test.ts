import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isWeftError } from '../common/errors.js';
import { type PersistedState, reasonOf, removeStaleTemporaries, StateFile, StateSaveError, saveIpam } from './state.js';

const STATE: PersistedState = {
  peerName: '02:00:00:00:00:01',
  targets: ['192.0.2.1'],
  exposed: [],
  attached: [
    { target: 'web', ifname: 'vw01234567', cidrs: ['10.32.0.1/12'], name: 'web', names: ['web', 'db'] },
    { target: 'cut', ifname: 'vw89abcdef', cidrs: ['10.32.0.2/12'], state: 'pending' },
  ],
};

describe('StateFile', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'weft-state-test-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('keeps the attach journal (pending records, every name) across a save and a load', () => {
    const f = new StateFile(dir);
    f.save(STATE);
    expect(new StateFile(dir).load()).toEqual(STATE);
    expect(f.status()).toEqual({ dir, failing: false, errors: 0 });
  });

  it('fails a save with one line naming the directory and the reason, counts it, and leaves no temporary file', () => {
    const f = new StateFile(dir);
    f.save(STATE);
    // A directory that cannot be made (a file is in its way): the write fails like a full disk would.
    const blocker = path.join(dir, 'blocked');
    writeFileSync(blocker, '');
    const g = new StateFile(path.join(blocker, 'sub'));
    let err: unknown;
    try {
      g.save(STATE);
    } catch (e) {
      err = e;
    }
    expect(isWeftError(err) && err.code).toBe('EWEFT_SYSTEM');
    expect((err as Error).message).toBe(`cannot save state in ${path.join(blocker, 'sub')}: not a directory`);
    expect(g.status()).toEqual(expect.objectContaining({ failing: true, errors: 1 }));
    expect(g.status().lastError).toMatch(/^cannot save state in .*: not a directory$/);
    // The other state file is untouched.
    expect(JSON.parse(readFileSync(f.file, 'utf8'))).toEqual(STATE);
  });

  it('removes the temporary file when the rename fails, and recovers', () => {
    const f = new StateFile(dir);
    mkdirSync(f.file); // rename of a file over a directory fails
    expect(() => f.save(STATE)).toThrow(/^cannot save state in /);
    expect(readdirSync(dir)).toEqual(['state.json']);
    expect(f.status().failing).toBe(true);
    rmSync(f.file, { recursive: true });
    f.save(STATE);
    expect(f.status()).toEqual(expect.objectContaining({ failing: false, errors: 1 }));
  });

  it('removes temporary files a cut-short write left, at load', () => {
    for (const n of ['state.json.123.tmp', 'ipam.json.9.tmp', 'other.tmp', 'state.json']) {
      writeFileSync(path.join(dir, n), n === 'state.json' ? JSON.stringify(STATE) : '');
    }
    expect(new StateFile(dir).load()).toEqual(STATE);
    expect(readdirSync(dir).sort()).toEqual(['other.tmp', 'state.json']);
    expect(removeStaleTemporaries(path.join(dir, 'missing'))).toBe(0);
  });

  it('writes IPAM state the same way, and fails it with the same message', () => {
    saveIpam(dir, { a: 1 });
    expect(readdirSync(dir)).toEqual(['ipam.json']);
    mkdirSync(path.join(dir, `ipam.json.${process.pid}.tmp`));
    expect(() => saveIpam(dir, { a: 2 })).toThrow(StateSaveError);
    expect(() => saveIpam(dir, { a: 2 })).toThrow(new RegExp(`^cannot save state in ${dir}: `));
    expect(JSON.parse(readFileSync(path.join(dir, 'ipam.json'), 'utf8'))).toEqual({ a: 1 });
  });
});

describe('reasonOf', () => {
  it("gives the bare reason of a system error, not Node's code and syscall", () => {
    expect(reasonOf(new Error('ENOSPC: no space left on device, write'))).toBe('no space left on device');
    expect(reasonOf(new Error("EACCES: permission denied, open '/x'"))).toBe('permission denied');
    expect(reasonOf(new Error('something else'))).toBe('something else');
  });
});
