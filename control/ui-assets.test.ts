import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { type IncomingHttpHeaders, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { noopLogger } from '../common/log.js';
import { MemoryMesh } from '../router/testing/memory-router.js';
import { type ApiListener, createApi } from './http.js';
import { createMetrics } from './metrics.js';
import { findUiDir, loadUiAssets, UI_CSP } from './ui-assets.js';

const TOKEN = 'c'.repeat(64);
const FILES = ['index.html', 'app.js', 'model.js', 'ui.css', 'icon.svg'];

interface Answer {
  status: number;
  body: string;
  headers: IncomingHttpHeaders;
}

/** get sends one GET with exactly the headers given (Host included). */
function get(port: number, p: string, headers: Record<string, string>, method = 'GET'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: p, method, agent: false, setHost: false, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), headers: res.headers }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

function makeUiDir(root: string): string {
  const d = path.join(root, 'ui');
  mkdirSync(d, { recursive: true });
  for (const f of FILES) writeFileSync(path.join(d, f), `/* ${f} */`);
  return d;
}

describe('the web page (GET /ui)', () => {
  let dir: string;
  let mesh: MemoryMesh;
  let server: Server | undefined;

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'weft-ui-'));
    mesh = new MemoryMesh();
  });
  afterEach(async () => {
    if (server !== undefined) {
      server.closeAllConnections();
      await new Promise((r) => server?.close(r));
      server = undefined;
    }
    await mesh.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function start(listener: ApiListener, uiDir: string | undefined): Promise<number> {
    const { router } = await mesh.add();
    server = createApi(
      {
        router,
        metrics: createMetrics(router),
        log: noopLogger,
        onStop: () => {},
        token: TOKEN,
        uiDir,
        api: { http: '127.0.0.1:6784', loopback: true },
      },
      listener,
    );
    await new Promise<void>((r) => server?.listen(0, '127.0.0.1', r));
    return (server.address() as AddressInfo).port;
  }

  it('serves its fixed files with a strict CSP, and nothing else under /ui', async () => {
    const port = await start({ transport: 'tcp', loopback: true }, makeUiDir(dir));
    const host = { host: `127.0.0.1:${port}` };
    const page = await get(port, '/ui', host);
    expect(page.status).toBe(200);
    expect(page.body).toBe('/* index.html */');
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(page.headers['content-security-policy']).toBe(UI_CSP);
    expect(UI_CSP).toMatch(/default-src 'none'/);
    expect(UI_CSP).not.toMatch(/unsafe|https?:|\*/);
    expect(page.headers['x-content-type-options']).toBe('nosniff');
    expect(page.headers['referrer-policy']).toBe('no-referrer');
    expect((await get(port, '/ui/', host)).body).toBe('/* index.html */');
    const js = await get(port, '/ui/app.js', host);
    expect(js.headers['content-type']).toBe('text/javascript; charset=utf-8');
    expect(js.body).toBe('/* app.js */');
    expect((await get(port, '/ui/ui.css', host)).headers['content-type']).toBe('text/css; charset=utf-8');
    expect((await get(port, '/ui/secret.txt', host)).status).toBe(404);
    expect((await get(port, '/ui/..%2f..%2fetc%2fpasswd', host)).status).toBe(404);
    expect((await get(port, '/ui', host, 'DELETE')).status).toBe(405);
    // A page of another site cannot load it (nor read it).
    expect((await get(port, '/ui', { ...host, 'sec-fetch-site': 'cross-site' })).status).toBe(403);
    expect((await get(port, '/ui', { host: `evil.example:${port}` })).status).toBe(403);
  });

  it('beyond loopback: the page loads without a token, the status it reads still needs one', async () => {
    const port = await start({ transport: 'tcp', loopback: false }, makeUiDir(dir));
    const host = { host: `127.0.0.1:${port}` };
    expect((await get(port, '/ui', host)).status).toBe(200);
    expect((await get(port, '/ui/app.js', host)).status).toBe(200);
    const st = await get(port, '/status', { ...host, accept: 'application/json' });
    expect(st.status).toBe(401);
    const ok = await get(port, '/status', { ...host, accept: 'application/json', authorization: `Bearer ${TOKEN}` });
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body).api).toEqual({ http: '127.0.0.1:6784', loopback: true });
  });

  it('says the page is not built when its files are missing', async () => {
    const port = await start({ transport: 'tcp', loopback: true }, path.join(dir, 'nowhere'));
    const r = await get(port, '/ui', { host: `127.0.0.1:${port}` });
    expect(r.status).toBe(404);
    expect(JSON.parse(r.body).error).toMatch(/cannot be read|not built/);
  });
});

describe('findUiDir and loadUiAssets', () => {
  it('finds the files beside the one-file build, beside tsc output, or in ../dist from the source', () => {
    const root = mkdtempSync(path.join(tmpdir(), 'weft-ui-find-'));
    try {
      expect(findUiDir(path.join(root, 'dist'))).toBeUndefined();
      const d = makeUiDir(path.join(root, 'dist', 'control'));
      expect(findUiDir(path.join(root, 'dist'))).toBe(d);
      expect(findUiDir(path.join(root, 'dist', 'control'))).toBe(d);
      expect(findUiDir(path.join(root, 'control'))).toBe(d);
      rmSync(path.join(d, 'app.js'));
      expect(findUiDir(path.join(root, 'dist'))).toBeUndefined();
      expect(loadUiAssets(undefined).missing).toMatch(/not built/);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
