import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { noopLogger } from '../common/log.js';
import { type Cidr, type PeerName, parseCidr } from '../common/types.js';
import { DNS_CHANNEL, DnsRecords } from '../dns/index.js';
import type { Gossip, Gossiper } from '../router/index.js';
import { MemoryMesh } from '../router/testing/memory-router.js';
import { ApiClient } from './client.js';
import { type DnsRouter, DnsService } from './dns.js';
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

/** FakeRouter is a DnsRouter without a mesh: it records what the service gossips and opens. */
class FakeRouter implements DnsRouter {
  readonly name = '02:00:00:00:00:0a' as PeerName;
  onPeersForgotten: ((peers: PeerName[], forGood: boolean) => void) | undefined;
  exposed: Cidr[] = [];
  channel = '';
  gossiper: Gossiper | undefined;
  readonly sent: Uint8Array[] = [];

  addGossiper(channel: string, gossiper: Gossiper): Gossip {
    this.channel = channel;
    this.gossiper = gossiper;
    return {
      broadcast: (payload) => {
        this.sent.push(payload);
      },
      unicast: () => false,
    };
  }

  exposedCidrs(): readonly Cidr[] {
    return this.exposed;
  }
}

/** DnsService needs only the four members of DnsRouter, not a Router. */
describe('DnsService on a DnsRouter', () => {
  let router: FakeRouter;
  let dns: DnsService;

  beforeEach(async () => {
    router = new FakeRouter();
    dns = new DnsService({
      router,
      range: parseCidr('127.77.0.0/16'),
      domain: 'weft.local',
      ttl: 1,
      port: 0,
      upstreams: [],
      incarnation: 1,
      log: noopLogger,
    });
    await dns.start();
  });

  afterEach(async () => {
    await dns.stop();
  });

  it('gossips on the dns channel the names it registers, with our peer name as origin', () => {
    expect(router.channel).toBe(DNS_CHANNEL);
    dns.add('db', ['127.77.0.9']);
    expect(router.sent).toHaveLength(1);
    const other = new DnsRecords({ self: '02:00:00:00:00:0b' as PeerName, incarnation: 1 });
    other.merge(router.sent[0] as Uint8Array);
    expect(other.lookupName('db.weft.local')).toEqual([parseCidr('127.77.0.9/32').addr]);
    expect(dns.status().entries).toMatchObject([{ name: 'db.weft.local', origin: router.name }]);
  });

  it("drops a forgotten peer's records", () => {
    const peer = '02:00:00:00:00:0c' as PeerName;
    const remote = new DnsRecords({ self: peer, incarnation: 1 });
    const delta = remote.add('c1', 'web.weft.local', parseCidr('127.77.0.7/32').addr);
    router.gossiper?.onGossip(peer, delta as Uint8Array);
    expect(dns.lookup('web')).toEqual(['127.77.0.7']);
    router.onPeersForgotten?.([peer], true);
    expect(dns.lookup('web')).toEqual([]);
    // Gone for good (rmpeer'd): the same incarnation is refused from then on.
    router.gossiper?.onGossip(peer, remote.fullState());
    expect(dns.lookup('web')).toEqual([]);
  });

  it("takes a peer's records again when it comes back after a partition (forgotten as unreachable)", () => {
    const peer = '02:00:00:00:00:0d' as PeerName;
    const remote = new DnsRecords({ self: peer, incarnation: 1 });
    router.gossiper?.onGossip(peer, remote.add('c1', 'api.weft.local', parseCidr('127.77.0.8/32').addr) as Uint8Array);
    expect(dns.lookup('api')).toEqual(['127.77.0.8']);
    router.onPeersForgotten?.([peer], false);
    expect(dns.lookup('api')).toEqual([]);
    // The partition heals: the peer, never restarted, sends its full state in the same incarnation.
    router.gossiper?.onGossip(peer, remote.fullState());
    expect(dns.lookup('api')).toEqual(['127.77.0.8']);
  });

  it('listens on the exposed address in its range, and stops when there is none', async () => {
    expect(dns.address).toBeUndefined();
    router.exposed = [parseCidr('10.0.0.1/24'), parseCidr('127.77.0.1/16')];
    await dns.sync();
    expect(dns.address).toBe('127.77.0.1');
    router.exposed = [];
    await dns.sync();
    expect(dns.address).toBeUndefined();
  });
});
