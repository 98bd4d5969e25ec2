import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { mkdirParents } from './state-dir.js';

describe('mkdirParents', () => {
  const made: string[] = [];
  const scratch = () => {
    const d = mkdtempSync(path.join(tmpdir(), 'weft-mkdir-'));
    made.push(d);
    return d;
  };
  afterEach(() => {
    for (const d of made.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('makes every missing parent with the mode and says which was first', () => {
    const root = scratch();
    const dir = path.join(root, 'a', 'b', 'c');
    expect(mkdirParents(dir, 0o700)).toBe(path.join(root, 'a'));
    for (const p of ['a', 'a/b', 'a/b/c']) {
      const st = statSync(path.join(root, p));
      expect(st.isDirectory()).toBe(true);
      expect(st.mode & 0o777).toBe(0o700);
    }
    expect(mkdirParents(dir, 0o700)).toBeUndefined();
  });

  it('fails with ENOTDIR when a component is a file', () => {
    const root = scratch();
    writeFileSync(path.join(root, 'f'), '');
    expect(() => mkdirParents(path.join(root, 'f', 'x'), 0o700)).toThrow(expect.objectContaining({ code: 'ENOTDIR' }));
  });

  it('fails at once below /proc, where recursive mkdirSync spins forever', () => {
    // /proc/1 exists, mkdir of /proc/1/x answers ENOENT: the recursive form retries that forever in Node 20.
    expect(() => mkdirParents('/proc/1/weft-x/y', 0o700)).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  });
});
