import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { noopLogger } from '../common/log.js';
import { MemoryMesh } from '../router/testing/memory-router.js';
import { ApiClient } from './client.js';
import { createApi } from './http.js';
import { createMetrics } from './metrics.js';

describe('HTTP API', () => {
  let mesh: MemoryMesh;
  let server: Server;
  let api: ApiClient;
  let stopped = 0;

  beforeEach(async () => {
    mesh = new MemoryMesh();
    const { router } = await mesh.add();
    stopped = 0;
    server = createApi({ router, metrics: createMetrics(router), log: noopLogger, onStop: () => stopped++ });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    api = new ApiClient({ host: '127.0.0.1', port: (server.address() as AddressInfo).port });
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
    headers: { 'content-type': 'application/json' },
  }).catch((err: Error) => ({ status: 0, text: async () => err.message }));
  return { status: res.status, body: await res.text() };
}
