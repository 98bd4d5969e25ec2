import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ALLOCATE_TIMEOUT_MS } from '../router/ipam/service.js';
import {
  ensureLoopbackUp,
  LAUNCH_LOCK_FILE,
  LAUNCH_LOCK_STALE_MS,
  type LaunchLock,
  main,
  takeLaunchLock,
} from './cli.js';
import { ALLOCATING_TIMEOUT_MS, REQUEST_TIMEOUT_MS } from './client.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** CLI is the compiled entry point (`npm run build`): a child process runs JavaScript only. */
const CLI = path.resolve(here, '../dist/control/cli.js');

/** deadPid returns the pid of a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
  return Number(r.stdout.toString());
}

describe('takeLaunchLock', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'weft-lock-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const file = () => path.join(dir, LAUNCH_LOCK_FILE);

  it('takes the lock with our pid, tells the next caller who holds it, and releases it', () => {
    const lock = takeLaunchLock(dir) as LaunchLock;
    expect(typeof lock).toBe('object');
    expect(readFileSync(file(), 'utf8')).toBe(`${process.pid}\n`);
    expect(statSync(file()).mode & 0o777).toBe(0o600);
    expect(takeLaunchLock(dir, process.ppid)).toBe(process.pid);
    lock.release();
    expect(existsSync(file())).toBe(false);
    const next = takeLaunchLock(dir, process.ppid) as LaunchLock;
    expect(readFileSync(file(), 'utf8')).toBe(`${process.ppid}\n`);
    next.release();
    // Only the lock itself is left while held: the pid file it was linked from is gone.
    expect(existsSync(`${file()}.${process.ppid}`)).toBe(false);
  });

  it('takes over a stale lock: its pid is gone, it holds no pid, or it is too old', () => {
    writeFileSync(file(), `${deadPid()}\n`);
    (takeLaunchLock(dir) as LaunchLock).release();
    writeFileSync(file(), 'garbage');
    (takeLaunchLock(dir) as LaunchLock).release();
    writeFileSync(file(), `${process.ppid}\n`);
    expect(takeLaunchLock(dir)).toBe(process.ppid);
    const old = (Date.now() - LAUNCH_LOCK_STALE_MS - 1_000) / 1000;
    utimesSync(file(), old, old);
    const lock = takeLaunchLock(dir) as LaunchLock;
    expect(readFileSync(file(), 'utf8')).toBe(`${process.pid}\n`);
    lock.release();
  });

  it('does not remove a lock that another launch took over', () => {
    const lock = takeLaunchLock(dir) as LaunchLock;
    writeFileSync(file(), `${process.ppid}\n`); // judged stale and taken by another
    lock.release();
    expect(readFileSync(file(), 'utf8')).toBe(`${process.ppid}\n`);
  });

  it('gives the lock to exactly one of many processes racing for it', async () => {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
    // Each holds what it got until every one has answered (its stdin closes): no timing involved.
    const script = `
      const { takeLaunchLock } = await import(${JSON.stringify(CLI)});
      const r = takeLaunchLock(${JSON.stringify(dir)});
      process.stdout.write(typeof r === 'number' ? 'held' : 'took');
      process.stdin.resume();
      process.stdin.on('end', () => process.exit(0));
    `;
    const children = Array.from({ length: 6 }, () => spawn(process.execPath, ['--input-type=module', '-e', script]));
    const closed = children.map((c) => new Promise((r) => c.on('close', r)));
    const runs = children.map(
      (c) =>
        new Promise<string>((resolve) => {
          let out = '';
          c.stdout.on('data', (d: Buffer) => {
            out += d.toString();
            if (out === 'held' || out === 'took') resolve(out);
          });
          c.on('close', () => resolve(out));
        }),
    );
    const results = await Promise.all(runs);
    for (const c of children) c.stdin.end();
    await Promise.all(closed);
    expect(results.filter((r) => r === 'took')).toHaveLength(1);
    expect(results.filter((r) => r === 'held')).toHaveLength(5);
  });
});

describe('ensureLoopbackUp', () => {
  it('does nothing when lo is up', async () => {
    const setUp = vi.fn(async () => {});
    await ensureLoopbackUp(() => true, setUp);
    expect(setUp).not.toHaveBeenCalled();
  });

  it('brings lo up when it is down, and says so on stderr', async () => {
    const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const setUp = vi.fn(async () => {});
    await ensureLoopbackUp(() => false, setUp);
    expect(setUp).toHaveBeenCalledOnce();
    expect(err).toHaveBeenCalledWith(
      expect.stringMatching(/^weft: the loopback interface lo was down .*brought it up\n$/),
    );
    err.mockRestore();
  });

  it('says in one line what to do when it cannot', async () => {
    await expect(
      ensureLoopbackUp(
        () => false,
        async () => {
          throw new Error('RTNETLINK answers: Operation not permitted');
        },
      ),
    ).rejects.toThrow(
      /^the loopback interface lo is down in this network namespace and cannot be brought up \(RTNETLINK answers: Operation not permitted\): run `ip link set lo up` as root$/,
    );
  });
});

describe('weft output to a closed pipe', () => {
  it.each([['--help'], ['--version'], ['status', '--help']])(
    '`weft %s | head` exits 0 quietly when the reader has gone',
    async (...args) => {
      if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
      const c = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      c.stdout.destroy(); // the reader is gone before the CLI writes
      let stderr = '';
      c.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      const code = await new Promise<number | null>((resolve) => c.on('close', (n) => resolve(n)));
      expect(stderr).toBe('');
      expect(code).toBe(0);
    },
  );
});

describe('weft output to a pipe', () => {
  let server: Server;
  let dir: string;
  afterEach(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  it('comes out whole however large it is (nothing is cut at exit)', async () => {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
    dir = mkdtempSync(path.join(tmpdir(), 'weft-cli-'));
    const body = `${'10.0.0.1:6783  failed  1 attempt  last error: connect ENETUNREACH\n'.repeat(40_000)}`;
    server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(body);
    });
    const socket = path.join(dir, 'weft.sock');
    await new Promise<void>((r) => server.listen(socket, r));
    const c = spawn(process.execPath, [CLI, '--api-socket', socket, 'status', 'targets'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    c.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const code = await new Promise<number | null>((resolve) => c.on('close', (n) => resolve(n)));
    expect(code).toBe(0);
    expect(out.length).toBe(body.length);
  });
});

describe('allocating requests', () => {
  it('wait longer than the router does for an address', () => {
    expect(ALLOCATING_TIMEOUT_MS).toBeGreaterThan(ALLOCATE_TIMEOUT_MS);
    expect(ALLOCATING_TIMEOUT_MS).toBeGreaterThan(REQUEST_TIMEOUT_MS);
  });

  describe('show the router reason', () => {
    let server: Server;
    let dir: string;
    beforeEach(() => {
      dir = mkdtempSync(path.join(tmpdir(), 'weft-cli-'));
    });
    afterEach(async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      rmSync(dir, { recursive: true, force: true });
    });

    it.each([[['attach', 'web']], [['expose']]])('weft %s', async (args) => {
      const reason = 'no address for web: no peer has announced a seeded ring';
      server = createServer((_req, res) => {
        res.writeHead(503, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: reason, code: 'EWEFT_UNAVAILABLE' }));
      });
      const socket = path.join(dir, 'weft.sock');
      await new Promise<void>((r) => server.listen(socket, r));
      const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
      const code = await main(['node', 'weft', '--api-socket', socket, ...args]);
      const written = err.mock.calls.map((c) => String(c[0])).join('');
      err.mockRestore();
      expect(written).toBe(`weft: ${reason}\n`);
      expect(code).toBe(1);
    });
  });
});
