import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { isWeftError, WeftError } from '../common/errors.js';
import { noopLogger } from '../common/log.js';
import { resolveTarget } from './attach.js';
import { DOCKER_SOCKET_DEFAULT, parseDockerSocket } from './config.js';
import {
  DOCKER_BODY_MAX_BYTES,
  DOCKER_RETRY_ABSENT_FACTOR,
  DockerClient,
  DockerIntegration,
  isContainerKey,
  LineSplitter,
  parseEvent,
  parseInspect,
} from './docker.js';

const ID = 'a'.repeat(64);
const ID2 = 'b'.repeat(64);

function inspectBody(over: { Id?: unknown; Name?: unknown; Running?: unknown; Pid?: unknown } = {}): string {
  return JSON.stringify({
    Id: over.Id ?? ID,
    Name: over.Name ?? '/web',
    State: { Running: over.Running ?? true, Pid: over.Pid ?? 4242, Status: 'running' },
    Config: { Hostname: 'web' },
  });
}

function event(action: string, id = ID): string {
  return JSON.stringify({
    status: action,
    id,
    Type: 'container',
    Action: action,
    Actor: { ID: id, Attributes: { name: 'web' } },
    time: 1,
  });
}

describe('parseInspect', () => {
  it('reads the id, the name without its slash, and the pid of a running container', () => {
    expect(parseInspect(inspectBody())).toEqual({ key: ID, name: 'web', pid: 4242 });
  });

  it('gives a stopped container no pid', () => {
    expect(parseInspect(inspectBody({ Running: false, Pid: 0 })).pid).toBeUndefined();
    expect(parseInspect(inspectBody({ Running: true, Pid: 0 })).pid).toBeUndefined();
  });

  it.each([
    ['not JSON', '{"Id":'],
    ['an array', '[]'],
    ['a short id', inspectBody({ Id: 'abc' })],
    ['an id with capitals', inspectBody({ Id: 'A'.repeat(64) })],
    ['a string pid', inspectBody({ Pid: '4242' })],
    ['a negative pid', inspectBody({ Pid: -1 })],
    ['a fractional pid', inspectBody({ Pid: 1.5 })],
    ['a running flag that is not a boolean', inspectBody({ Running: 'yes' })],
    ['no State', JSON.stringify({ Id: ID, Name: '/web' })],
  ])('refuses %s with EWEFT_UNAVAILABLE', (_what, body) => {
    try {
      parseInspect(body);
      expect.unreachable();
    } catch (err) {
      expect(isWeftError(err) && err.code).toBe('EWEFT_UNAVAILABLE');
    }
  });
});

describe('parseEvent', () => {
  it('reads container start and destroy events', () => {
    expect(parseEvent(event('start'))).toEqual({ action: 'start', id: ID });
    expect(parseEvent(event('destroy', ID2))).toEqual({ action: 'destroy', id: ID2 });
    expect(parseEvent(event('die'))).toEqual({ action: 'die', id: ID });
  });

  it("reads a network's connect of a container; other network events carry no container", () => {
    const net = (Action: string, Attributes: object) =>
      JSON.stringify({ Type: 'network', Action, Actor: { ID: 'n1', Attributes } });
    expect(parseEvent(net('connect', { container: ID, name: 'weftnet', type: 'weft' }))).toEqual({
      action: 'connect',
      id: ID,
    });
    expect(parseEvent(net('connect', { container: 'xyz' }))).toEqual({ action: 'network-connect', id: '' });
    expect(parseEvent(net('destroy', { name: 'weftnet' }))).toEqual({ action: 'network-destroy', id: '' });
  });

  it.each([
    ['other types', JSON.stringify({ Type: 'image', Action: 'pull', Actor: { ID } })],
    ['a network event without an actor', JSON.stringify({ Type: 'network', Action: 'connect' })],
    ['garbage', '}{'],
    ['a bad id', event('start', 'xyz')],
    ['no actor', JSON.stringify({ Type: 'container', Action: 'start' })],
    ['null', 'null'],
  ])('refuses %s', (_what, line) => {
    expect(parseEvent(line)).toBeUndefined();
  });
});

describe('LineSplitter', () => {
  it('joins lines cut across chunks and skips empty ones', () => {
    const s = new LineSplitter(100);
    expect(s.push(Buffer.from('{"a":'))).toEqual([]);
    expect(s.push(Buffer.from('1}\n\n{"b":2}\n{"c"'))).toEqual(['{"a":1}', '{"b":2}']);
    expect(s.push(Buffer.from(':3}\n'))).toEqual(['{"c":3}']);
  });

  it('drops an overlong line as undefined without buffering it, then carries on', () => {
    const s = new LineSplitter(8);
    expect(s.push(Buffer.from('0123456789'))).toEqual([]);
    expect(s.push(Buffer.from('abcdef\nok\n'))).toEqual([undefined, 'ok']);
  });
});

describe('isContainerKey', () => {
  it('takes only full container ids', () => {
    expect(isContainerKey(ID)).toBe(true);
    expect(isContainerKey(ID.slice(0, 12))).toBe(false);
    expect(isContainerKey('web')).toBe(false);
  });
});

describe('parseDockerSocket', () => {
  it('prefers the flag, then a unix DOCKER_HOST, then the default; none turns it off', () => {
    expect(parseDockerSocket('/tmp/d.sock', 'unix:///other.sock')).toBe('/tmp/d.sock');
    expect(parseDockerSocket(undefined, 'unix:///run/user/docker.sock')).toBe('/run/user/docker.sock');
    expect(parseDockerSocket(undefined, 'tcp://10.0.0.1:2375')).toBe(DOCKER_SOCKET_DEFAULT);
    expect(parseDockerSocket(undefined, undefined)).toBe(DOCKER_SOCKET_DEFAULT);
    expect(parseDockerSocket('none', undefined)).toBeUndefined();
  });

  it('refuses a relative or too long path', () => {
    expect(() => parseDockerSocket('docker.sock', undefined)).toThrow(/--docker-socket/);
    expect(() => parseDockerSocket(`/${'x'.repeat(200)}`, undefined)).toThrow(/107 bytes/);
  });
});

/**
 * FakeEngine is a Docker engine's API on a unix socket: `/_ping`, container inspect from
 * `containers`, and an `/events` stream the test writes lines to.
 */
class FakeEngine {
  readonly socketPath: string;
  readonly containers = new Map<string, string>();
  /** raw replaces the answer to an inspect (status, body). */
  raw: { status: number; body: string } | undefined;
  pingBody = 'OK';
  readonly streams: ServerResponse[] = [];
  readonly requests: string[] = [];
  private readonly server: Server;

  constructor(dir: string) {
    this.socketPath = path.join(dir, 'docker.sock');
    this.server = createServer((req, res) => this.handle(req, res));
  }

  listen(): Promise<void> {
    return new Promise((r) => this.server.listen(this.socketPath, () => r()));
  }

  close(): Promise<void> {
    for (const s of this.streams) s.destroy();
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }

  /** emit writes one line to every open event stream. */
  emit(line: string): void {
    for (const s of this.streams) s.write(`${line}\n`);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? '';
    this.requests.push(url);
    if (url === '/_ping') {
      res.end(this.pingBody);
      return;
    }
    if (url.startsWith('/events?')) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.flushHeaders();
      this.streams.push(res);
      return;
    }
    const m = /^\/containers\/([^/]+)\/json$/.exec(url);
    if (m) {
      if (this.raw !== undefined) {
        res.writeHead(this.raw.status).end(this.raw.body);
        return;
      }
      const body = this.containers.get(decodeURIComponent(m[1] as string));
      if (body === undefined) res.writeHead(404).end('{"message":"No such container"}');
      else res.writeHead(200, { 'content-type': 'application/json' }).end(body);
      return;
    }
    res.writeHead(404).end();
  }
}

async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('DockerClient and DockerIntegration against a fake engine', () => {
  let dir: string;
  let engine: FakeEngine;

  beforeEach(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'weft-docker-test-'));
    engine = new FakeEngine(dir);
    await engine.listen();
    engine.containers.set('web', inspectBody());
    engine.containers.set(ID, inspectBody());
  });

  afterEach(async () => {
    await engine.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('inspects by name: the container, undefined for none, an error for a bad answer', async () => {
    const c = new DockerClient(engine.socketPath);
    await c.ping();
    expect(await c.inspect('web')).toEqual({ key: ID, name: 'web', pid: 4242 });
    expect(await c.inspect('nope')).toBeUndefined();
    expect(await c.inspect('../../etc')).toBeUndefined(); // never sent
    expect(engine.requests.some((r) => r.includes('etc'))).toBe(false);
    engine.raw = { status: 500, body: 'oops' };
    await expect(c.inspect('web')).rejects.toThrow(/answered 500/);
    engine.raw = { status: 200, body: 'x'.repeat(DOCKER_BODY_MAX_BYTES + 10) };
    await expect(c.inspect('web')).rejects.toThrow(/larger than/);
    engine.raw = { status: 200, body: '{"Id": 1}' };
    await expect(c.inspect('web')).rejects.toThrow(/malformed/);
  });

  it('says EWEFT_UNAVAILABLE when nothing, or no engine, answers on the socket', async () => {
    const none = new DockerClient(path.join(dir, 'missing.sock'));
    await expect(none.ping()).rejects.toMatchObject({ code: 'EWEFT_UNAVAILABLE' });
    engine.pingBody = 'hello';
    await expect(new DockerClient(engine.socketPath).ping()).rejects.toThrow(/not a docker engine/);
  });

  it('find never throws: a malformed answer or no engine is "not a container"', async () => {
    engine.raw = { status: 200, body: '[1,2' };
    const d = new DockerIntegration({ socketPath: engine.socketPath, log: noopLogger });
    expect(await d.find('web')).toBeUndefined();
    const gone = new DockerIntegration({ socketPath: path.join(dir, 'missing.sock'), log: noopLogger });
    expect(await gone.find('web')).toBeUndefined();
    expect(gone.status()).toMatchObject({ state: 'not found', events: false });
  });

  it('follows events: start re-attaches, destroy detaches, others and garbage are ignored', async () => {
    const calls: string[] = [];
    const attached = new Set([ID, 'netns-web']);
    const d = new DockerIntegration({ socketPath: engine.socketPath, log: noopLogger });
    d.bind({
      attachedKeys: () => [...attached],
      reattach: async (t) => {
        calls.push(`reattach ${t}`);
      },
      detach: async (t) => {
        calls.push(`detach ${t}`);
        attached.delete(t);
      },
    });
    d.start();
    try {
      await until(() => d.status().events, 'the event stream');
      expect(d.status()).toMatchObject({ socket: engine.socketPath, state: 'connected', events: true });
      await d.drained();
      // The resync on connect found the attached container running.
      expect(calls).toEqual([`reattach ${ID}`]);
      calls.length = 0;
      engine.emit(event('start', ID2)); // not attached here
      engine.emit('not json at all');
      engine.emit(event('die'));
      engine.emit(event('start'));
      engine.emit(event('destroy'));
      await until(() => calls.length === 2, 'two actions');
      await d.drained();
      expect(calls).toEqual([`reattach ${ID}`, `detach ${ID}`]);
      expect(d.status().badEvents).toBe(1);
    } finally {
      d.stop();
    }
    expect(d.status()).toMatchObject({ state: 'not found', events: false });
  });

  it('on connect, detaches attached containers the engine no longer has', async () => {
    const calls: string[] = [];
    const d = new DockerIntegration({ socketPath: engine.socketPath, log: noopLogger });
    d.bind({
      attachedKeys: () => [ID2],
      reattach: async (t) => {
        calls.push(`reattach ${t}`);
      },
      detach: async (t) => {
        calls.push(`detach ${t}`);
      },
    });
    d.start();
    try {
      await until(() => calls.length > 0, 'the resync');
      expect(calls).toEqual([`detach ${ID2}`]);
    } finally {
      d.stop();
    }
  });

  it('reconnects when the event stream ends', async () => {
    const d = new DockerIntegration({ socketPath: engine.socketPath, log: noopLogger, retryMinMs: 10 });
    d.bind({ attachedKeys: () => [], reattach: async () => undefined, detach: async () => undefined });
    d.start();
    try {
      await until(() => engine.streams.length === 1 && d.status().events, 'the first stream');
      engine.streams[0]?.destroy();
      await until(() => engine.streams.length === 2 && d.status().events, 'the second stream');
    } finally {
      d.stop();
    }
  });

  it('retries while no engine answers, and connects once one does', async () => {
    const late = new FakeEngine(mkdtempSync(path.join(dir, 'late-')));
    const d = new DockerIntegration({ socketPath: late.socketPath, log: noopLogger, retryMinMs: 10, retryMaxMs: 20 });
    d.bind({ attachedKeys: () => [], reattach: async () => undefined, detach: async () => undefined });
    d.start();
    try {
      await new Promise((r) => setTimeout(r, 50));
      expect(d.status().state).toBe('not found');
      expect(d.status().lastError).toMatch(/ENOENT|ECONNREFUSED/);
      await late.listen();
      await until(() => d.status().state === 'connected', 'the late engine');
    } finally {
      d.stop();
      await late.close();
    }
  });

  it('resolveTarget enters a running container by its pid and refuses a stopped one', async () => {
    const d = new DockerIntegration({ socketPath: engine.socketPath, log: noopLogger });
    engine.containers.set('self', inspectBody({ Pid: process.pid }));
    const t = await resolveTarget('self', d);
    expect(t.ref).toBe(String(process.pid));
    expect(t.ipArgs(['link'])).toEqual(['nsenter', ['-t', String(process.pid), '-n', 'ip', 'link']]);
    engine.containers.set('stopped', inspectBody({ Running: false, Pid: 0 }));
    await expect(resolveTarget('stopped', d)).rejects.toThrow(/not running/);
    await expect(resolveTarget('nothing-here', d)).rejects.toMatchObject({ code: 'EWEFT_NOT_FOUND' });
  });
});

describe('DockerIntegration reconnect pacing', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  /** attemptsIn counts the engine pings of a DockerIntegration whose pings fail with `code`, over `ms` of fake time. */
  async function attemptsIn(code: string, ms: number): Promise<number> {
    vi.useFakeTimers();
    let pings = 0;
    const client = {
      ping: async (): Promise<void> => {
        pings++;
        const cause = Object.assign(new Error(`connect ${code} /nowhere.sock`), { code });
        throw new WeftError('EWEFT_UNAVAILABLE', `docker engine at /nowhere.sock: ${cause.message}`, { cause });
      },
    } as unknown as DockerClient;
    const d = new DockerIntegration({
      socketPath: '/nowhere.sock',
      log: noopLogger,
      client,
      retryMinMs: 10,
      retryMaxMs: 20,
    });
    d.start();
    try {
      await vi.advanceTimersByTimeAsync(ms);
      return pings;
    } finally {
      d.stop();
    }
  }

  it('backs off DOCKER_RETRY_ABSENT_FACTOR times further while the socket does not exist than while it refuses', async () => {
    // Absent: waits 10, 20, 40, 60, 60 → pings at 0, 10, 30, 70, 130, 190. Refused: waits 10, 20, 20… → 11 pings.
    expect(DOCKER_RETRY_ABSENT_FACTOR).toBe(3);
    expect(await attemptsIn('ENOENT', 200)).toBe(6);
    expect(await attemptsIn('ECONNREFUSED', 200)).toBe(11);
  });
});
