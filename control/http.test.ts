import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { type IncomingHttpHeaders, request, type Server } from 'node:http';
import { type AddressInfo, connect, createServer as createNetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isWeftError } from '../common/errors.js';
import { noopLogger } from '../common/log.js';
import type { Router } from '../router/index.js';
import { MemoryMesh } from '../router/testing/memory-router.js';
import { ApiClient } from './client.js';
import { TARGETS_MAX } from './config.js';
import {
  type ApiListener,
  createApi,
  ensureApiToken,
  HTTP_HEADERS_TIMEOUT_MS,
  HTTP_KEEPALIVE_TIMEOUT_MS,
  HTTP_MAX_CONNECTIONS,
  HTTP_REQUEST_TIMEOUT_MS,
  HTTP_TIMEOUT_CHECK_INTERVAL_MS,
  listenApiSocket,
  REFUSED_LINGER_MS,
} from './http.js';
import { createMetrics } from './metrics.js';

/** TOKEN is the bearer token the API under test expects over TCP. */
const TOKEN = 'a'.repeat(64);

describe('HTTP API', () => {
  let mesh: MemoryMesh;
  let server: Server;
  let api: ApiClient;
  let stopped = 0;

  beforeEach(async () => {
    mesh = new MemoryMesh();
    const { router } = await mesh.add();
    stopped = 0;
    server = createApi({
      router,
      metrics: createMetrics(router),
      log: noopLogger,
      onStop: () => stopped++,
      token: TOKEN,
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    api = new ApiClient({ host: '127.0.0.1', port: (server.address() as AddressInfo).port }, undefined, {
      token: TOKEN,
    });
  });

  afterEach(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await mesh.stop();
  });

  it('serves status as text by default and as JSON on request', async () => {
    const text = await api.call('GET', '/status');
    expect(text.status).toBe(200);
    expect(text.body).toMatch(/Name: 02:00:00:00:00:01 \(r1\)/);
    const json = await api.call('GET', '/status?format=json');
    expect((json.json as { name: string }).name).toBe('02:00:00:00:00:01');
    const viaAccept = await api.call('GET', '/status/peers', { json: true });
    expect(viaAccept.json).toEqual([]);
  });

  it('serves Prometheus metrics with datapath counters', async () => {
    const r = await api.call('GET', '/metrics');
    expect(r.status).toBe(200);
    expect(r.body).toMatch(/# TYPE weft_drops_total counter/);
    expect(r.body).toMatch(/weft_drops_total\{reason="no_route"\} 0/);
    expect(r.body).toMatch(/weft_packets_total\{direction="tun_rx"\} 0/);
    expect(r.body).toMatch(/weft_connections\{state="established"\} 0/);
  });

  it('adds and forgets targets', async () => {
    const r = await api.call('POST', '/connect', { body: { peers: ['127.0.0.1:1'] } });
    expect(r.status).toBe(200);
    expect((r.json as { targets: string[] }).targets).toEqual(['127.0.0.1:1']);
    const f = await api.call('POST', '/forget', { body: { peers: ['127.0.0.1:1'] } });
    expect((f.json as { targets: string[] }).targets).toEqual([]);
  });

  it('exposes and hides an address', async () => {
    const e = await api.call('POST', '/expose', { body: { cidr: '10.32.0.1/12' } });
    expect(e.json).toEqual({ exposed: ['10.32.0.1/12'] });
    const conflict = await api.call('POST', '/expose', { body: { cidr: '10.32.0.1/16' } });
    expect(conflict.status).toBe(409);
    const h = await api.call('POST', '/hide', { body: { cidr: '10.32.0.1' } });
    expect(h.json).toEqual({ exposed: [] });
    expect((await api.call('POST', '/hide', { body: { cidr: '10.32.0.1' } })).status).toBe(404);
  });

  it('exposes an address from IPAM when none is given, and reports the ring', async () => {
    const e = await api.call('POST', '/expose', { body: {} });
    expect(e.json).toEqual({ exposed: ['10.96.0.1/12'] });
    const again = await api.call('POST', '/expose', { body: {} });
    expect(again.json).toEqual({ exposed: ['10.96.0.1/12'] });
    const ipam = (await api.call('GET', '/status/ipam', { json: true })).json as {
      state: string;
      owned: number;
      used: number;
      allocations: unknown[];
    };
    expect(ipam).toMatchObject({ state: 'ready', owned: 2 ** 20, used: 1 });
    expect(ipam.allocations).toEqual([{ addr: '10.96.0.1', owner: 'weft:expose' }]);
    expect((await api.call('GET', '/status/ipam')).body).toMatch(/ready: 1048576 IPs owned here, 1 in use/);
    await api.call('POST', '/hide', { body: {} });
    expect(((await api.call('GET', '/status/ipam', { json: true })).json as { used: number }).used).toBe(0);
  });

  it.each([
    ['POST', '/connect', '{not json', 400, /not valid JSON/],
    ['POST', '/connect', '[]', 400, /JSON object/],
    ['POST', '/connect', '{"peers":[]}', 400, /1-1000 peers/],
    ['POST', '/connect', '{"peers":[42]}', 400, /must be a string/],
    ['POST', '/connect', '{"peers":["a b"]}', 400, /invalid peer/],
    ['POST', '/rmpeer', '{}', 400, /missing \\"peer\\"/],
    ['POST', '/rmpeer', '{"peer":"nobody"}', 404, /no peer \\"nobody\\"/],
    ['POST', '/rmpeer', '{"peer":"02:00:00:00:00:01"}', 400, /cannot rmpeer this router itself/],
    ['POST', '/reset', '', 404, /cannot be reset/],
    ['GET', '/status/dns', '', 404, /DNS server is off/],
    ['POST', '/name/add', '{"name":"db","ips":["10.96.0.1"]}', 404, /DNS server is off/],
    ['POST', '/expose', '{"cidr":"10.32.0.300/12"}', 400, /invalid IPv4/],
    ['POST', '/expose', '{"cidr":{"x":1}}', 400, /must be a string/],
    ['GET', '/nope', '', 404, /no such endpoint/],
    ['POST', '/attach', '{"cidrs":["10.32.1.1/12"]}', 404, /does not attach containers/],
    ['POST', '/detach', '{}', 400, /missing \\"target\\"/],
    ['GET', '/connect', '', 405, /not allowed/],
  ])('%s %s %s → %i', async (method, path, body, status, msg) => {
    const r = await rawCall(api, method, path, body);
    expect(r.status).toBe(status);
    expect(r.body).toMatch(msg);
  });

  it('refuses a body over 64 KiB with 413 and keeps serving', async () => {
    const r = await rawCall(api, 'POST', '/connect', 'x'.repeat(70 * 1024));
    expect(r.status).toBe(413);
    expect((await api.call('GET', '/status')).status).toBe(200);
  });

  it('answers POST /stop and calls onStop', async () => {
    expect((await api.call('POST', '/stop')).status).toBe(200);
    await new Promise((r) => setImmediate(r));
    expect(stopped).toBe(1);
  });
});

async function rawCall(api: ApiClient, method: string, path: string, body: string) {
  const res = await fetch(`http://${api.addr.host}:${api.addr.port}${path}`, {
    method,
    body: method === 'GET' ? undefined : body,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
  }).catch((err: Error) => ({ status: 0, text: async () => err.message }));
  return { status: res.status, body: await res.text() };
}

interface RawAnswer {
  status: number;
  body: string;
  headers: IncomingHttpHeaders;
}

/** raw sends one request with exactly the headers given (Host included), on a connection of its own. */
function raw(
  target: { port: number } | { socketPath: string },
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body = '',
): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        ...('port' in target ? { host: '127.0.0.1', port: target.port } : { socketPath: target.socketPath }),
        method,
        path,
        agent: false,
        setHost: false,
        headers: { 'content-length': String(Buffer.byteLength(body)), ...headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), headers: res.headers }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** Harness: one router behind one API server (a listener of the given kind), closed after each test. */
async function startApi(listener: ApiListener, token: string | null = TOKEN, socketPath?: string) {
  const mesh = new MemoryMesh();
  const { router } = await mesh.add();
  const server = createApi(
    {
      router,
      metrics: createMetrics(router),
      log: noopLogger,
      onStop: () => {},
      token: token ?? undefined,
      socketPath: '/run/weft/test.sock',
      tokenFile: '/var/lib/weft/api-token',
    },
    listener,
  );
  let close: () => Promise<void>;
  let port = 0;
  if (socketPath !== undefined) {
    close = await listenApiSocket(server, socketPath, undefined);
  } else {
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
    close = () => new Promise<void>((r) => server.close(() => r()));
  }
  return {
    router: router as Router,
    server,
    port,
    stop: async () => {
      server.closeAllConnections();
      await close();
      await mesh.stop();
    },
  };
}

describe('HTTP API: who may do what', () => {
  let h: Awaited<ReturnType<typeof startApi>>;
  const local = () => ({ host: `127.0.0.1:${h.port}` });

  beforeEach(async () => {
    h = await startApi({ transport: 'tcp', loopback: true });
  });
  afterEach(async () => {
    await h.stop();
  });

  const connect = (headers: Record<string, string>) =>
    raw({ port: h.port }, 'POST', '/connect', headers, JSON.stringify({ peers: ['192.0.2.1'] }));
  const json = { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` };

  it.each([
    ['a foreign Host (DNS rebinding)', { host: 'attacker.example:6784' }, 403, /foreign host "attacker\.example:6784"/],
    ['a Host on another port', { host: 'localhost:1' }, 403, /foreign host "localhost:1"/],
    ['no Host (node:http answers 400 itself)', { host: '' }, 400, /^$/],
    ['a foreign Origin', { origin: 'http://evil.example' }, 403, /cross-origin request from "http:\/\/evil\.example"/],
    ['Origin null', { origin: 'null' }, 403, /cross-origin/],
    ['a cross-site fetch', { 'sec-fetch-site': 'cross-site' }, 403, /cross-site request/],
    ['a same-site fetch from another port', { 'sec-fetch-site': 'same-site' }, 403, /cross-site request/],
    [
      'text/plain (a simple cross-site POST)',
      { 'content-type': 'text/plain' },
      415,
      /needs content-type application\/json, not "text\/plain"/,
    ],
    ['a form', { 'content-type': 'application/x-www-form-urlencoded' }, 415, /needs content-type application\/json/],
    ['no Content-Type', { 'content-type': '' }, 415, /./],
  ])('refuses a change with %s and changes nothing', async (_what, extra, status, msg) => {
    const headers: Record<string, string> = { ...local(), ...json, ...extra };
    for (const [k, v] of Object.entries(headers)) if (v === '') delete headers[k];
    const r = await connect(headers);
    expect(r.status).toBe(status);
    expect(r.body === '' ? '' : (JSON.parse(r.body) as { error: string }).error).toMatch(msg);
    expect(h.router.targetList()).toEqual([]);
  });

  it('refuses the attack of the issue: foreign Origin and Host with text/plain', async () => {
    const r = await connect({ host: 'attacker.example', origin: 'http://evil.example', 'content-type': 'text/plain' });
    expect(r.status).toBe(403);
    expect(h.router.targetList()).toEqual([]);
  });

  it('refuses a read with a foreign Host or Origin too', async () => {
    expect((await raw({ port: h.port }, 'GET', '/status', { host: 'attacker.example:80' })).status).toBe(403);
    expect((await raw({ port: h.port }, 'GET', '/report', { ...local(), origin: 'http://evil.example' })).status).toBe(
      403,
    );
  });

  it('serves reads on loopback to anyone: localhost, 127.0.0.1 (with or without the port), same origin', async () => {
    for (const host of [`localhost:${h.port}`, `127.0.0.1:${h.port}`, '127.0.0.1', `LOCALHOST:${h.port}`]) {
      expect((await raw({ port: h.port }, 'GET', '/status', { host })).status).toBe(200);
    }
    const same = { ...local(), origin: `http://127.0.0.1:${h.port}`, 'sec-fetch-site': 'same-origin' };
    expect((await raw({ port: h.port }, 'GET', '/metrics', same)).status).toBe(200);
  });

  it('needs the bearer token for a change over TCP, and names where the credentials are', async () => {
    const none = await connect({ ...local(), 'content-type': 'application/json' });
    expect(none.status).toBe(401);
    expect(none.headers['www-authenticate']).toBe('Bearer');
    expect(JSON.parse(none.body)).toEqual({
      error:
        'permission denied: POST /connect changes the router and needs the unix socket /run/weft/test.sock (root or group weft) or the bearer token in /var/lib/weft/api-token',
      code: 'EWEFT_AUTH',
    });
    const wrong = await connect({
      ...local(),
      'content-type': 'application/json',
      authorization: `Bearer ${'b'.repeat(64)}`,
    });
    expect(wrong.status).toBe(401);
    expect(wrong.body).toMatch(/wrong bearer token/);
    const short = await connect({ ...local(), 'content-type': 'application/json', authorization: 'Bearer a' });
    expect(short.status).toBe(401);
    expect(h.router.targetList()).toEqual([]);
    const right = await connect({
      ...local(),
      'content-type': 'application/json; charset=utf-8',
      authorization: `bearer ${TOKEN}`,
    });
    expect(right.status).toBe(200);
    expect(h.router.targetList()).toEqual(['192.0.2.1:6783']);
  });

  it('lets no GET change anything: every GET endpoint leaves the router as it was, changes answer 405 to GET', async () => {
    const before = JSON.stringify({ targets: h.router.targetList(), exposed: h.router.exposedCidrs() });
    for (const p of [
      '/status',
      '/status/peers',
      '/status/connections',
      '/status/targets',
      '/status/ipam',
      '/report',
      '/metrics',
      '/ps',
    ]) {
      expect((await raw({ port: h.port }, 'GET', `${p}?peers=192.0.2.1&cidr=10.32.0.1/12`, local())).status).toBe(200);
    }
    for (const p of [
      '/connect',
      '/forget',
      '/expose',
      '/hide',
      '/attach',
      '/detach',
      '/stop',
      '/reset',
      '/rmpeer',
      '/name/add',
    ]) {
      expect((await raw({ port: h.port }, 'GET', `${p}?peer=192.0.2.1`, local())).status).toBe(405);
    }
    expect(
      (await raw({ port: h.port }, 'OPTIONS', '/connect', { ...local(), origin: 'http://evil.example' })).status,
    ).toBe(403);
    expect(JSON.stringify({ targets: h.router.targetList(), exposed: h.router.exposedCidrs() })).toBe(before);
  });
});

describe('HTTP API beyond loopback', () => {
  it('needs the token for every request, reads too', async () => {
    const h = await startApi({ transport: 'tcp', loopback: false });
    try {
      const host = { host: `127.0.0.1:${h.port}` };
      const r = await raw({ port: h.port }, 'GET', '/status', host);
      expect(r.status).toBe(401);
      expect(r.body).toMatch(
        /listens beyond loopback, so every request needs the bearer token in \/var\/lib\/weft\/api-token/,
      );
      expect(
        (await raw({ port: h.port }, 'GET', '/status', { ...host, authorization: `Bearer ${TOKEN}` })).status,
      ).toBe(200);
    } finally {
      await h.stop();
    }
  });

  it('serves nothing there without a token configured', async () => {
    const h = await startApi({ transport: 'tcp', loopback: false }, null);
    try {
      const r = await raw({ port: h.port }, 'GET', '/status', { host: `127.0.0.1:${h.port}` });
      expect(r.status).toBe(401);
      expect(r.body).toMatch(/no token/);
    } finally {
      await h.stop();
    }
  });
});

describe('HTTP API over the unix socket', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'weft-sock-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves changes without a token, with mode 0660, and removes the socket and its directory on close', async () => {
    const sock = path.join(dir, 'ns', 'weft.sock');
    const h = await startApi({ transport: 'unix' }, TOKEN, sock);
    let stopped = false;
    try {
      expect(statSync(sock).mode & 0o777).toBe(0o660);
      const api = new ApiClient({ host: '127.0.0.1', port: 1 }, 5_000, { socketPath: sock });
      await api.ok('POST', '/connect', { body: { peers: ['192.0.2.7'] } });
      expect(h.router.targetList()).toEqual(['192.0.2.7:6783']);
      // Still no text/plain and no foreign Origin, even there.
      const plain = await raw(
        { socketPath: sock },
        'POST',
        '/forget',
        { host: 'localhost', 'content-type': 'text/plain' },
        '{"peers":["192.0.2.7"]}',
      );
      expect(plain.status).toBe(415);
      await h.stop();
      stopped = true;
      expect(() => statSync(sock)).toThrow(/ENOENT/);
      expect(() => statSync(path.dirname(sock))).toThrow(/ENOENT/);
    } finally {
      if (!stopped) await h.stop();
    }
  });

  it.runIf(process.getuid?.() === 0)('gives the socket to the weft group when there is one', async () => {
    const sock = path.join(dir, 'weft.sock');
    const server = createNetServer();
    const close = await listenApiSocket(server, sock, 65534);
    try {
      expect(statSync(sock).gid).toBe(65534);
      expect(statSync(sock).mode & 0o777).toBe(0o660);
    } finally {
      await close();
    }
  });

  it('replaces a stale socket left by a router that died', async () => {
    const sock = path.join(dir, 'weft.sock');
    // A process that binds the socket and dies at once leaves the file behind with nobody listening.
    const die = `require('net').createServer().listen(${JSON.stringify(sock)}, () => process.kill(process.pid, 'SIGKILL'))`;
    try {
      execFileSync(process.execPath, ['-e', die], { stdio: 'ignore' });
    } catch {
      // killed by its own SIGKILL, as meant
    }
    expect(statSync(sock).isSocket()).toBe(true);
    const h = await startApi({ transport: 'unix' }, TOKEN, sock);
    try {
      expect((await raw({ socketPath: sock }, 'GET', '/status', { host: 'localhost' })).status).toBe(200);
    } finally {
      await h.stop();
    }
  });

  it('refuses a socket another router answers on, and a path that is not a socket', async () => {
    const sock = path.join(dir, 'weft.sock');
    const live = createNetServer();
    await new Promise<void>((r) => live.listen(sock, r));
    try {
      await expect(startApi({ transport: 'unix' }, TOKEN, sock)).rejects.toThrow(
        `the API socket ${sock} is already in use: is a weft router already running in this network namespace?`,
      );
    } finally {
      await new Promise((r) => live.close(r));
    }
    const file = path.join(dir, 'file');
    writeFileSync(file, 'x');
    await expect(startApi({ transport: 'unix' }, TOKEN, file)).rejects.toThrow(/exists and is not a socket/);
    await expect(startApi({ transport: 'unix' }, TOKEN, 'relative.sock')).rejects.toThrow(/absolute path/);
    await expect(startApi({ transport: 'unix' }, TOKEN, `/${'x'.repeat(120)}`)).rejects.toThrow(
      /longer than 107 bytes/,
    );
  });
});

describe('ApiClient', () => {
  it('falls back to TCP with the token from its file when there is no socket', async () => {
    const h = await startApi({ transport: 'tcp', loopback: true });
    const dir = mkdtempSync(path.join(tmpdir(), 'weft-tok-'));
    try {
      writeFileSync(path.join(dir, 'api-token'), `${TOKEN}\n`, { mode: 0o600 });
      const api = new ApiClient({ host: '127.0.0.1', port: h.port }, 5_000, {
        socketPath: path.join(dir, 'none.sock'),
        tokenFile: path.join(dir, 'api-token'),
      });
      await api.ok('POST', '/connect', { body: { peers: ['192.0.2.9'] } });
      expect(h.router.targetList()).toEqual(['192.0.2.9:6783']);
      const noToken = new ApiClient({ host: '127.0.0.1', port: h.port }, 5_000, { tokenFile: path.join(dir, 'nope') });
      expect((await noToken.ok('GET', '/status')).status).toBe(200);
      const err = await noToken.ok('POST', '/stop').catch((e: unknown) => e);
      expect(isWeftError(err) && err.code).toBe('EWEFT_AUTH');
      expect((err as Error).message).toMatch(/^permission denied: POST \/stop changes the router/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await h.stop();
    }
  });

  it('says no router is running, naming the socket and the address it tried', async () => {
    const api = new ApiClient({ host: '127.0.0.1', port: 1 }, 2_000, { socketPath: '/nonexistent/weft.sock' });
    const err = await api.call('GET', '/status').catch((e: unknown) => e);
    expect(isWeftError(err) && err.code).toBe('EWEFT_NOT_RUNNING');
    expect((err as Error).message).toMatch(/nothing answers on \/nonexistent\/weft\.sock or 127\.0\.0\.1:1/);
  });

  it('says a change may have been made when the router resets the connection before answering it', async () => {
    // A router killed while working on a request: it read the request, then its socket closes unanswered.
    const dir = mkdtempSync(path.join(tmpdir(), 'weft-reset-'));
    const sock = path.join(dir, 'weft.sock');
    const server = createNetServer((s) => s.once('data', () => s.destroy()));
    await new Promise<void>((r) => server.listen(sock, r));
    try {
      const api = new ApiClient({ host: '127.0.0.1', port: 1 }, 2_000, { socketPath: sock });
      const change = await api.call('POST', '/attach', { body: { target: 'c1' } }).catch((e: unknown) => e);
      expect(isWeftError(change) && change.code).toBe('EWEFT_INTERRUPTED');
      expect((change as Error).message).toMatch(/may or may not have been made/);
      // A read that was cut short changed nothing: the router is just not there any more.
      const read = await api.call('GET', '/status').catch((e: unknown) => e);
      expect(isWeftError(read) && read.code).toBe('EWEFT_NOT_RUNNING');
    } finally {
      await new Promise((r) => server.close(r));
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('HTTP API limits', () => {
  it(`holds at most HTTP_MAX_CONNECTIONS (${HTTP_MAX_CONNECTIONS}) connections, answers 503 beyond, and recovers`, async () => {
    const h = await startApi({ transport: 'tcp', loopback: true });
    const held: Socket[] = [];
    try {
      for (let i = 0; i < HTTP_MAX_CONNECTIONS; i++) {
        const s = connect(h.port, '127.0.0.1');
        await new Promise<void>((r, j) => s.once('connect', r).once('error', j));
        s.write('GET /status HTTP/1.1\r\nhost: 127.0.0.1\r\n'); // headers never finished: held
        held.push(s);
      }
      // Let the server accept them all before the next one arrives.
      await new Promise((r) => setTimeout(r, 100));
      const r = await raw({ port: h.port }, 'GET', '/status', { host: `127.0.0.1:${h.port}` });
      expect(r.status).toBe(503);
      expect(JSON.parse(r.body)).toEqual({
        error: `too many API connections (more than ${HTTP_MAX_CONNECTIONS}): try again later`,
        code: 'EWEFT_UNAVAILABLE',
      });
      for (const s of held) s.destroy();
      await new Promise((r) => setTimeout(r, 100));
      expect((await raw({ port: h.port }, 'GET', '/status', { host: `127.0.0.1:${h.port}` })).status).toBe(200);
    } finally {
      for (const s of held) s.destroy();
      await h.stop();
    }
  });

  it('frees a refused connection within REFUSED_LINGER_MS even when its peer keeps it open', async () => {
    const h = await startApi({ transport: 'tcp', loopback: true, maxConnections: 1 });
    const count = () => new Promise<number>((r, j) => h.server.getConnections((e, n) => (e ? j(e) : r(n))));
    const first = connect(h.port, '127.0.0.1');
    let late: Socket | undefined;
    try {
      await new Promise<void>((r) => first.once('connect', r));
      await new Promise((r) => setTimeout(r, 50));
      late = connect({ port: h.port, host: '127.0.0.1', allowHalfOpen: true }); // never ends its side
      const t0 = Date.now();
      let text = '';
      late.on('data', (b: Buffer) => {
        text += b.toString();
      });
      await new Promise<void>((r) => late?.once('end', () => r()));
      expect(text).toMatch(/^HTTP\/1\.1 503 /);
      expect(await count()).toBe(2);
      while ((await count()) > 1 && Date.now() - t0 < REFUSED_LINGER_MS + 2_000)
        await new Promise((r) => setTimeout(r, 50));
      expect(await count()).toBe(1);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(REFUSED_LINGER_MS - 100);
    } finally {
      first.destroy();
      late?.destroy();
      await h.stop();
    }
  });

  it('sets the header and request timeouts, and cuts a connection whose headers never end', async () => {
    const d = await startApi({ transport: 'tcp', loopback: true });
    expect(d.server.headersTimeout).toBe(HTTP_HEADERS_TIMEOUT_MS);
    expect(d.server.requestTimeout).toBe(HTTP_REQUEST_TIMEOUT_MS);
    expect(d.server.keepAliveTimeout).toBe(HTTP_KEEPALIVE_TIMEOUT_MS);
    await d.stop();
    const h = await startApi({ transport: 'tcp', loopback: true, headersTimeoutMs: 200, requestTimeoutMs: 200 });
    try {
      const s = connect(h.port, '127.0.0.1');
      await new Promise<void>((r) => s.once('connect', r));
      s.write('GET /status HTTP/1.1\r\nhost: 127.0.0.1\r\n');
      const t0 = Date.now();
      const answer = await new Promise<string>((r) => {
        let text = '';
        s.on('data', (b: Buffer) => {
          text += b.toString();
        });
        s.on('close', () => r(text));
      });
      expect(answer).toMatch(/^HTTP\/1\.1 408/);
      // Checked every HTTP_TIMEOUT_CHECK_INTERVAL_MS, not Node's default 30 s.
      expect(Date.now() - t0).toBeLessThan(200 + HTTP_TIMEOUT_CHECK_INTERVAL_MS + 1_000);
    } finally {
      await h.stop();
    }
  });
});

describe('ensureApiToken', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'weft-token-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('makes a 256-bit hex token, mode 0600, once, and keeps it', () => {
    const file = path.join(dir, 'state', 'api-token');
    const t = ensureApiToken(file);
    expect(t).toMatch(/^[0-9a-f]{64}$/);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(ensureApiToken(file)).toBe(t);
  });

  it('narrows a token file others may read to 0600, and refuses one that holds no token', () => {
    const file = path.join(dir, 'api-token');
    writeFileSync(file, `${'z'.repeat(40)}\n`, { mode: 0o644 });
    expect(ensureApiToken(file)).toBe('z'.repeat(40));
    expect(statSync(file).mode & 0o777).toBe(0o600);
    writeFileSync(file, 'short');
    expect(() => ensureApiToken(file)).toThrow(`the API token file ${file} holds no token`);
  });
});

describe('HTTP API: targets bounded', () => {
  /** fakeRouter keeps a persistent target list the way Router does, without dialling anyone. */
  function fakeRouter(): { router: Router; list: Set<string>; connects: number } {
    const state = { list: new Set<string>(), connects: 0 };
    const router = {
      isReady: true,
      targetList: () => [...state.list],
      connect: (t: readonly string[]) => {
        state.connects++;
        for (const x of t) state.list.add(x);
        return [...state.list];
      },
      forget: (t: readonly string[]) => {
        for (const x of t) state.list.delete(x);
        return [...state.list];
      },
    } as unknown as Router;
    return Object.assign(state, { router });
  }

  const peers = (batch: number) =>
    Array.from({ length: 1000 }, (_, i) => `10.${batch}.${Math.floor(i / 250)}.${(i % 250) + 1}:6783`);

  let server: Server;
  afterEach(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  it(`refuses with 409 a connect that would pass TARGETS_MAX (${TARGETS_MAX}), keeping the list as it was`, async () => {
    const f = fakeRouter();
    let changes = 0;
    server = createApi({
      router: f.router,
      metrics: {} as never,
      log: noopLogger,
      onStop: () => {},
      onChange: () => changes++,
      token: TOKEN,
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const api = new ApiClient({ host: '127.0.0.1', port: (server.address() as AddressInfo).port }, undefined, {
      token: TOKEN,
    });
    for (let b = 0; b < TARGETS_MAX / 1000; b++) {
      expect((await api.call('POST', '/connect', { body: { peers: peers(b) } })).status).toBe(200);
    }
    expect(f.list.size).toBe(TARGETS_MAX);
    const r = await api.call('POST', '/connect', { body: { peers: peers(10) } });
    expect(r.status).toBe(409);
    expect(r.json).toEqual({
      code: 'EWEFT_CONFLICT',
      error: `too many connection targets: ${TARGETS_MAX} kept and 1000 new would make ${TARGETS_MAX + 1000}, more than the limit of ${TARGETS_MAX}; forget some first (\`weft forget\`), or replace the list (\`weft connect --replace\`)`,
    });
    expect(f.list.size).toBe(TARGETS_MAX);
    expect(f.connects).toBe(TARGETS_MAX / 1000);
    expect(changes).toBe(TARGETS_MAX / 1000);
    // The CLI shows the router's reason.
    await expect(api.ok('POST', '/connect', { body: { peers: ['192.0.2.1'] } })).rejects.toThrow(
      /too many connection targets: 10000 kept and 1 new/,
    );
    // Addresses already kept are not new; a replacement list stands on its own.
    expect((await api.call('POST', '/connect', { body: { peers: peers(3).slice(0, 5) } })).status).toBe(200);
    const replaced = await api.call('POST', '/connect', { body: { peers: peers(10), replace: true } });
    expect(replaced.status).toBe(200);
    expect(f.list.size).toBe(1000);
  });
});
