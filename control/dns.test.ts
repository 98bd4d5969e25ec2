import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { noopLogger } from '../common/log.js';
import { parseCidr } from '../common/types.js';
import { MemoryMesh } from '../router/testing/memory-router.js';
import { ApiClient } from './client.js';
import { DnsService } from './dns.js';
import { createApi } from './http.js';
import { createMetrics } from './metrics.js';

/** The DNS records API through HTTP, on a router in one process (the server itself is tested in dns/). */
describe('HTTP API: DNS records', () => {
  let mesh: MemoryMesh;
  let server: Server;
  let api: ApiClient;
  let dns: DnsService;

  beforeEach(async () => {
    mesh = new MemoryMesh();
    const { router } = await mesh.add();
    dns = new DnsService({
      router,
      range: parseCidr('10.96.0.0/12'),
      domain: 'weft.local',
      ttl: 1,
      port: 53,
      upstreams: [],
      incarnation: 1,
      log: noopLogger,
    });
    await dns.start();
    server = createApi({ router, dns, metrics: createMetrics(router, dns), log: noopLogger, onStop: () => {} });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    api = new ApiClient({ host: '127.0.0.1', port: (server.address() as AddressInfo).port });
  });

  afterEach(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await dns.stop();
    await mesh.stop();
  });

  it('adds, looks up and removes names; status and metrics show them', async () => {
    expect(
      (await api.call('POST', '/name/add', { body: { name: 'db', ips: ['10.96.0.9', '10.96.0.10'] } })).status,
    ).toBe(200);
    expect((await api.call('GET', '/name?name=DB.weft.local', { json: true })).json).toEqual({
      name: 'DB.weft.local',
      ips: ['10.96.0.9', '10.96.0.10'],
    });
    const st = (await api.call('GET', '/status/dns', { json: true })).json as {
      entries: unknown[];
      listening?: string;
    };
    expect(st.entries).toHaveLength(2);
    expect(st.listening).toBeUndefined(); // no overlay address yet: not listening
    expect((await api.call('GET', '/status/dns')).body).toMatch(/^db\.weft\.local {2}10\.96\.0\.9 {2}weft:extern/m);
    expect((await api.call('GET', '/metrics')).body).toMatch(/weft_dns_records 2/);
    const rm = await api.call('POST', '/name/remove', { body: { name: 'db', ips: ['10.96.0.9'] } });
    expect(rm.json).toEqual({ removed: 1 });
    expect((await api.call('GET', '/name?name=db', { json: true })).json).toEqual({ name: 'db', ips: ['10.96.0.10'] });
    expect((await api.call('GET', '/report', { json: true })).json).toMatchObject({ dns: { domain: 'weft.local' } });
  });

  it.each([
    ['POST', '/name/add', '{"ips":["10.96.0.1"]}', 400, /missing \\"name\\"/],
    ['POST', '/name/add', '{"name":"db"}', 400, /at least one address/],
    ['POST', '/name/add', '{"name":"db","ips":["10.96.0.300"]}', 400, /invalid IPv4/],
    ['POST', '/name/add', '{"name":"bad name!","ips":["10.96.0.1"]}', 400, /./],
    ['POST', '/name/add', '{"name":42,"ips":["10.96.0.1"]}', 400, /DNS name/],
    ['POST', '/name/add', `{"name":"db","ips":${JSON.stringify(Array(65).fill('10.96.0.1'))}}`, 400, /up to 64/],
    ['POST', '/name/remove', '{}', 400, /give \\"name\\"/],
    ['POST', '/name/remove', '{"name":"nosuch"}', 404, /no such record/],
    ['GET', '/name', '', 400, /missing \?name=/],
  ])('%s %s %s → %i', async (method, path, body, status, msg) => {
    const res = await fetch(`http://${api.addr.host}:${api.addr.port}${path}`, {
      method,
      body: method === 'GET' ? undefined : body,
      headers: { 'content-type': 'application/json' },
    });
    expect(res.status).toBe(status);
    expect(await res.text()).toMatch(msg);
  });
});
