import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WeftError } from '../common/errors.js';
import { noopLogger } from '../common/log.js';
import type { Cidr, IPv4 } from '../common/types.js';
import { formatCidr, formatIPv4, parseCidr, parseIPv4 } from '../common/types.js';
import type { AttachAt, AttachedContainer } from './attach.js';
import { buildLaunchConfig, DOCKER_PLUGIN_SOCKET, parseDockerPlugin } from './config.js';
import { DockerClient } from './docker.js';
import { DockerPlugin, PLUGIN_BODY_MAX_BYTES, type PluginBackend, parseNetworks, peerIfname } from './docker-plugin.js';
import { dockerLine } from './format.js';

const RANGE = '10.32.0.0/12';
const GATEWAY = '10.32.0.1';
const NET = 'n'.repeat(64);
const EP = 'e'.repeat(64);
const EP2 = 'f'.repeat(64);
const CID = 'c'.repeat(64);

/**
 * Backend is an in-memory IPAM (address → owner) and attach record list: what the plugin asks of
 * the router, so each protocol call can be checked against what it did (the real Attacher and
 * IPAM meet a real dockerd in e2e/docker-plugin.e2e.ts).
 */
class Backend implements PluginBackend {
  readonly range = parseCidr(RANGE);
  readonly holders = new Map<number, string>();
  readonly recs = new Map<string, AttachedContainer>();
  attachFails: Error | undefined;

  async allocate(owner: string, subnet?: Cidr): Promise<IPv4> {
    const base = (subnet ?? this.range).addr;
    for (let a = base + 2; ; a++) {
      if (!this.holders.has(a)) {
        this.holders.set(a, owner);
        return a as IPv4;
      }
    }
  }
  claim(owner: string, addr: IPv4): void {
    const h = this.holders.get(addr);
    if (h !== undefined && h !== owner) throw new WeftError('EWEFT_CONFLICT', `${formatIPv4(addr)} is in use by ${h}`);
    this.holders.set(addr, owner);
  }
  free(owner: string): void {
    for (const [a, o] of this.holders) if (o === owner) this.holders.delete(a);
  }
  lookup(owner: string): IPv4[] {
    return [...this.holders].filter(([, o]) => o === owner).map(([a]) => a as IPv4);
  }
  async gateway(): Promise<Cidr> {
    return parseCidr(`${GATEWAY}/12`);
  }
  async attach(key: string, cidr: Cidr, at: AttachAt): Promise<AttachedContainer> {
    if (this.attachFails !== undefined) throw this.attachFails;
    const a: AttachedContainer = {
      target: key,
      ifname: `vw${at.peer?.slice(2)}`,
      cidrs: [formatCidr(cidr)],
      netns: at.netns,
      ...(at.peer === undefined ? {} : { peerIfname: at.peer }),
      ...(at.endpoint === undefined ? {} : { endpoint: at.endpoint }),
    };
    this.recs.set(key, a);
    return a;
  }
  async addName(key: string, name: string): Promise<void> {
    const a = this.recs.get(key);
    if (a !== undefined) a.name = name;
  }
  async detach(key: string, keep: boolean): Promise<void> {
    this.recs.delete(key);
    if (!keep) this.free(key);
  }
  records(): AttachedContainer[] {
    return [...this.recs.values()];
  }
  ownerOf(ip: string): string | undefined {
    return this.holders.get(parseIPv4(ip));
  }
}

interface Answer {
  status: number;
  json: Record<string, unknown>;
  type: string | undefined;
}

/** call POSTs a raw body to the plugin's socket, as dockerd does (empty Host header included). */
function call(socketPath: string, method: string, body: string | object = '', verb = 'POST'): Promise<Answer> {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        socketPath,
        agent: false,
        path: `/${method}`,
        method: verb,
        headers: { host: '', 'content-length': Buffer.byteLength(text) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            json: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>,
            type: res.headers['content-type'],
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(text);
  });
}

describe('DockerPlugin', () => {
  let dir: string;
  let sock: string;
  let backend: Backend;
  let plugin: DockerPlugin;
  const post = (method: string, body: string | object = '') => call(sock, method, body);

  beforeEach(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'weft-plugin-'));
    sock = path.join(dir, 'plugins', 'weft.sock');
    backend = new Backend();
    plugin = new DockerPlugin({ socketPath: sock, backend, log: noopLogger });
    await plugin.start();
  });

  afterEach(async () => {
    await plugin.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** endpoint runs what libnetwork does for `docker run --network`: address, endpoint, join. */
  async function joined(id = EP): Promise<{ addr: string; join: Answer }> {
    const a = await post('IpamDriver.RequestAddress', { PoolID: RANGE, Address: '', Options: {} });
    const addr = String(a.json.Address);
    expect(
      (await post('NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: id, Interface: { Address: addr } }))
        .status,
    ).toBe(200);
    const join = await post('NetworkDriver.Join', {
      NetworkID: NET,
      EndpointID: id,
      SandboxKey: '/var/run/docker/netns/abc',
      Options: {},
    });
    return { addr, join };
  }

  it('activates as a network and an IPAM driver, local scope, with the plugin media type', async () => {
    const a = await post('Plugin.Activate');
    expect(a).toMatchObject({ status: 200, json: { Implements: ['NetworkDriver', 'IpamDriver'] } });
    expect(a.type).toBe('application/vnd.docker.plugins.v1.2+json');
    expect(statSync(sock).mode & 0o777).toBe(0o600);
    expect((await post('NetworkDriver.GetCapabilities', 'null')).json).toEqual({ Scope: 'local' });
    expect((await post('IpamDriver.GetCapabilities')).json).toMatchObject({ RequiresMACAddress: false });
    expect((await post('IpamDriver.GetDefaultAddressSpaces')).json).toMatchObject({ LocalDefaultAddressSpace: 'weft' });
  });

  it('RequestPool gives the --subnet in the range as the pool, refuses none, outside, IPv6 and --ip-range', async () => {
    const ok = await post('IpamDriver.RequestPool', {
      AddressSpace: 'weft',
      Pool: RANGE,
      SubPool: '',
      Options: {},
      V6: false,
    });
    expect(ok).toMatchObject({ status: 200, json: { PoolID: RANGE, Pool: RANGE } });
    expect((await post('IpamDriver.RequestPool', { Pool: '10.33.0.0/16' })).json.PoolID).toBe('10.33.0.0/16');
    const none = await post('IpamDriver.RequestPool', { AddressSpace: 'weft', Pool: '', V6: false });
    expect(none.status).toBe(400);
    expect(none.json.Err).toMatch(/--subnet 10\.32\.0\.0\/12/);
    for (const body of [
      { Pool: '192.168.1.0/24' },
      { Pool: '10.0.0.0/8' },
      { Pool: RANGE, V6: true },
      { Pool: RANGE, SubPool: '10.32.1.0/24' },
    ]) {
      const r = await post('IpamDriver.RequestPool', body);
      expect(r.status).toBe(400);
      expect(r.json.Err).toMatch(/^weft: RequestPool: /);
    }
    expect((await post('IpamDriver.ReleasePool', { PoolID: RANGE })).json).toEqual({});
  });

  it("RequestAddress: the host's overlay address for the gateway, IPAM's under docker:IP otherwise, a given one claimed unless an endpoint has it", async () => {
    const gw = await post('IpamDriver.RequestAddress', {
      PoolID: RANGE,
      Options: { RequestAddressType: 'com.docker.network.gateway' },
    });
    expect(gw.json).toEqual({ Address: `${GATEWAY}/12`, Data: {} });
    const a = await post('IpamDriver.RequestAddress', { PoolID: RANGE, Address: '', Options: {} });
    expect(a.json.Address).toBe('10.32.0.2/12');
    expect(backend.ownerOf('10.32.0.2')).toBe('docker:10.32.0.2');
    expect([...backend.holders.values()]).toEqual(['docker:10.32.0.2']); // the placeholder owner is gone
    expect((await post('IpamDriver.RequestAddress', { PoolID: RANGE, Address: '10.32.9.9' })).json.Address).toBe(
      '10.32.9.9/12',
    );
    expect(backend.ownerOf('10.32.9.9')).toBe('docker:10.32.9.9');
    // Asked for again (docker run --ip of an address another endpoint has): refused, still held once.
    const again = await post('IpamDriver.RequestAddress', { PoolID: RANGE, Address: '10.32.9.9' });
    expect(again).toMatchObject({
      status: 409,
      json: { Err: 'weft: RequestAddress: 10.32.9.9 is in use by another endpoint' },
    });
    expect(backend.ownerOf('10.32.9.9')).toBe('docker:10.32.9.9');
    backend.claim('someone', parseIPv4('10.32.7.7'));
    const taken = await post('IpamDriver.RequestAddress', { PoolID: RANGE, Address: '10.32.7.7' });
    expect(taken).toMatchObject({ status: 409, json: { Err: expect.stringMatching(/in use by someone/) } });
    expect((await post('IpamDriver.RequestAddress', { PoolID: '10.33.0.0/16', Address: '10.32.0.9' })).status).toBe(
      400,
    );
    expect((await post('IpamDriver.RequestAddress', { PoolID: 'nonsense' })).json.Err).toMatch(/unknown pool/);
    expect((await post('IpamDriver.ReleaseAddress', { PoolID: RANGE, Address: '10.32.9.9' })).json).toEqual({});
    expect(backend.ownerOf('10.32.9.9')).toBeUndefined();
    // A subnet pool allocates in it.
    expect((await post('IpamDriver.RequestAddress', { PoolID: '10.33.0.0/16' })).json.Address).toBe('10.33.0.2/16');
  });

  it('CreateNetwork takes pools in the range only', async () => {
    const body = (Pool: string) => ({
      NetworkID: NET,
      Options: {},
      IPv4Data: [{ AddressSpace: 'weft', Pool, Gateway: `${GATEWAY}/12` }],
    });
    expect((await post('NetworkDriver.CreateNetwork', body(RANGE))).json).toEqual({});
    expect(plugin.status().networks).toBe(1);
    const outside = await post('NetworkDriver.CreateNetwork', body('172.18.0.0/16'));
    expect(outside.status).toBe(400);
    expect(outside.json.Err).toMatch(/--ipam-driver weft/);
    expect((await post('NetworkDriver.CreateNetwork', { NetworkID: NET, IPv4Data: [] })).status).toBe(400);
    const v6 = { ...body(RANGE), IPv6Data: [{ Pool: 'fd00::/64' }] };
    expect((await post('NetworkDriver.CreateNetwork', v6)).json.Err).toMatch(/IPv6/);
    expect((await post('NetworkDriver.DeleteNetwork', { NetworkID: NET })).json).toEqual({});
    expect(plugin.status().networks).toBe(0);
  });

  it('CreateEndpoint answers a MAC only when none was asked for; refuses no address, IPv6 and addresses outside', async () => {
    const ep = (Interface: object) =>
      post('NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP, Interface, Options: {} });
    const mine = await ep({ Address: '10.32.0.2/12' });
    expect(mine.json).toEqual({ Interface: { MacAddress: expect.stringMatching(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/) } });
    expect((await ep({ Address: '10.32.0.2/12', MacAddress: '02:42:0a:20:00:02' })).json).toEqual({});
    for (const bad of [
      {},
      { Address: '' },
      { Address: '10.32.0.2/12', AddressIPv6: 'fd00::2/64' },
      { Address: '192.168.0.2/24' },
      { Address: 'x' },
      { Address: '10.32.0.2/12', MacAddress: 'zz' },
    ]) {
      const r = await ep(bad);
      expect(r.status).toBe(400);
      expect(typeof r.json.Err).toBe('string');
    }
  });

  it('Join plugs the endpoint in and names the interface for libnetwork to move; Leave unplugs keeping the address; ReleaseAddress frees it', async () => {
    const { addr, join } = await joined();
    const key = `docker:${addr.split('/')[0]}`;
    expect(join).toMatchObject({
      status: 200,
      json: { InterfaceName: { SrcName: peerIfname(key), DstPrefix: 'ethwe' }, Gateway: GATEWAY, StaticRoutes: [] },
    });
    expect(backend.recs.get(key)).toMatchObject({ endpoint: EP, peerIfname: peerIfname(key), cidrs: [addr] });
    expect(plugin.status().endpoints).toBe(1);
    const info = await post('NetworkDriver.EndpointOperInfo', { NetworkID: NET, EndpointID: EP });
    expect(info.json).toMatchObject({ Value: { address: addr } });
    expect(
      (await post('NetworkDriver.ProgramExternalConnectivity', { NetworkID: NET, EndpointID: EP, Options: {} })).status,
    ).toBe(200);
    expect((await post('NetworkDriver.Leave', { NetworkID: NET, EndpointID: EP })).json).toEqual({});
    expect(backend.recs.has(key)).toBe(false);
    expect(backend.ownerOf(addr.split('/')[0] as string)).toBe(key); // reserved until ReleaseAddress
    expect((await post('NetworkDriver.DeleteEndpoint', { NetworkID: NET, EndpointID: EP })).json).toEqual({});
    expect((await post('IpamDriver.ReleaseAddress', { PoolID: RANGE, Address: addr.split('/')[0] })).json).toEqual({});
    expect(backend.holders.size).toBe(0);
    expect(plugin.status().endpoints).toBe(0);
  });

  it('DeleteEndpoint or ReleaseAddress of a still-joined endpoint (a lost Leave) unplugs it', async () => {
    const { addr } = await joined();
    await post('NetworkDriver.DeleteEndpoint', { NetworkID: NET, EndpointID: EP });
    expect(backend.recs.size).toBe(0);
    const second = await joined(EP2);
    expect(second.addr).not.toBe(addr);
    await post('IpamDriver.ReleaseAddress', { PoolID: RANGE, Address: second.addr });
    expect(backend.recs.size).toBe(0);
    expect(backend.ownerOf(second.addr.split('/')[0] as string)).toBeUndefined();
  });

  it('finds an endpoint joined before a restart by its record', async () => {
    const { addr } = await joined();
    await plugin.stop();
    plugin = new DockerPlugin({ socketPath: sock, backend, log: noopLogger });
    await plugin.start();
    expect((await post('NetworkDriver.EndpointOperInfo', { NetworkID: NET, EndpointID: EP })).json).toMatchObject({
      Value: { address: addr },
    });
    expect((await post('NetworkDriver.Leave', { NetworkID: NET, EndpointID: EP })).status).toBe(200);
    expect(backend.recs.size).toBe(0);
  });

  it('Join of an unknown endpoint, or one the attacher refuses, answers the reason', async () => {
    const unknown = await post('NetworkDriver.Join', { NetworkID: NET, EndpointID: EP, SandboxKey: '/x' });
    expect(unknown).toMatchObject({ status: 404, json: { Err: expect.stringMatching(/unknown endpoint/) } });
    await post('NetworkDriver.CreateEndpoint', {
      NetworkID: NET,
      EndpointID: EP,
      Interface: { Address: '10.32.0.5/12' },
    });
    backend.attachFails = new WeftError('EWEFT_SYSTEM', 'ip link add failed: File exists');
    const refused = await post('NetworkDriver.Join', { NetworkID: NET, EndpointID: EP, SandboxKey: '/x' });
    expect(refused).toMatchObject({ status: 500, json: { Err: 'weft: ip link add failed: File exists' } });
  });

  it('answers malformed requests with {Err} and keeps serving', async () => {
    const cases: [string, string, number, RegExp][] = [
      ['NetworkDriver.CreateEndpoint', '{"NetworkID":', 400, /malformed JSON/],
      ['IpamDriver.RequestAddress', 'not json', 400, /malformed JSON/],
      ['NetworkDriver.Join', '[1,2]', 400, /Join: body|Join: NetworkID/],
      ['NetworkDriver.Join', JSON.stringify({ NetworkID: 5, EndpointID: EP, SandboxKey: '/x' }), 400, /NetworkID/],
      ['NetworkDriver.Leave', JSON.stringify({ NetworkID: NET, EndpointID: '../../etc' }), 400, /EndpointID/],
      ['NetworkDriver.CreateNetwork', JSON.stringify({ NetworkID: NET, IPv4Data: 'x' }), 400, /IPv4Data/],
      ['IpamDriver.ReleaseAddress', JSON.stringify({ PoolID: RANGE, Address: 'nope' }), 400, /not an IPv4 address/],
      ['NetworkDriver.Nonsense', '{}', 404, /unknown plugin call/],
      ['NetworkDriver.Join', 'x'.repeat(PLUGIN_BODY_MAX_BYTES + 1), 400, /larger than/],
    ];
    for (const [method, body, status, err] of cases) {
      const r = await post(method, body);
      expect(r.status, `${method} ${body.slice(0, 40)}`).toBe(status);
      expect(r.json.Err).toMatch(err);
      expect(r.json.Err).toMatch(/^weft: /);
    }
    expect((await call(sock, 'Plugin.Activate', '', 'GET')).status).toBe(404);
    expect(plugin.status()).toMatchObject({ listening: true, errors: cases.length + 1 });
    expect((await post('Plugin.Activate')).status).toBe(200);
  });

  it('replaces a stale socket file, and removes its own on stop', async () => {
    await plugin.stop();
    writeFileSync(sock, ''); // left by a router killed with -9
    plugin = new DockerPlugin({ socketPath: sock, backend, log: noopLogger });
    await plugin.start();
    expect((await post('Plugin.Activate')).status).toBe(200);
    await plugin.stop();
    expect(existsSync(sock)).toBe(false);
    expect(plugin.status().listening).toBe(false);
  });
});

describe('DockerPlugin names containers from the engine', () => {
  let dir: string;
  let engine: Server;
  let inspect: string;

  beforeEach(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'weft-plugin-engine-'));
    engine = createServer((req, res) => {
      if (req.url === `/containers/${CID}/json`) res.end(inspect);
      else {
        res.statusCode = 404;
        res.end('{}');
      }
    });
    await new Promise<void>((r) => engine.listen(path.join(dir, 'docker.sock'), () => r()));
  });

  afterEach(async () => {
    await new Promise<void>((r) => engine.close(() => r()));
    rmSync(dir, { recursive: true, force: true });
  });

  it("gives a joined endpoint its container's name on start or connect, only once, and ignores what it cannot use", async () => {
    const backend = new Backend();
    const docker = new DockerClient(path.join(dir, 'docker.sock'));
    const plugin = new DockerPlugin({ socketPath: path.join(dir, 'p.sock'), backend, log: noopLogger, docker });
    await backend.attach('docker:10.32.0.2', parseCidr('10.32.0.2/12'), {
      netns: '/x',
      ifname: 'ethwe',
      peer: 'vp1',
      endpoint: EP,
    });
    inspect = JSON.stringify({
      Name: '/db',
      NetworkSettings: { Networks: { weftnet: { EndpointID: EP }, other: { EndpointID: EP2 } } },
    });
    await plugin.onEngineEvent({ action: 'destroy', id: CID });
    expect(backend.recs.get('docker:10.32.0.2')?.name).toBeUndefined();
    await plugin.onEngineEvent({ action: 'connect', id: CID });
    expect(backend.recs.get('docker:10.32.0.2')?.name).toBe('db');
    // Not a DNS label, malformed, or unknown: nothing changes, nothing throws.
    inspect = JSON.stringify({ Name: '/my_db', NetworkSettings: { Networks: { weftnet: { EndpointID: EP } } } });
    await plugin.onEngineEvent({ action: 'start', id: CID });
    inspect = '{not json';
    await plugin.onEngineEvent({ action: 'start', id: CID });
    await plugin.onEngineEvent({ action: 'start', id: 'd'.repeat(64) });
    expect(backend.recs.get('docker:10.32.0.2')?.name).toBe('db');
  });
});

describe('parseNetworks', () => {
  it("reads a container's name and endpoint ids", () => {
    const body = JSON.stringify({
      Name: '/web',
      NetworkSettings: { Networks: { a: { EndpointID: EP }, b: { EndpointID: '' } } },
    });
    expect(parseNetworks(body)).toEqual({ name: 'web', endpoints: [EP] });
    expect(parseNetworks(JSON.stringify({ Name: '/x', NetworkSettings: { Networks: null } }))).toEqual({
      name: 'x',
      endpoints: [],
    });
  });

  it.each([
    ['garbage', '}{'],
    ['no settings', JSON.stringify({ Name: '/x' })],
    ['a bad name', JSON.stringify({ Name: 5, NetworkSettings: {} })],
  ])('refuses %s', (_what, body) => {
    expect(parseNetworks(body)).toBeUndefined();
  });
});

describe('--docker-plugin', () => {
  it('is off by default; on, it listens on /run/docker/plugins/weft.sock unless told otherwise', () => {
    expect(parseDockerPlugin(false, undefined, '/var/run/docker.sock')).toBeUndefined();
    expect(parseDockerPlugin(true, undefined, '/var/run/docker.sock')).toBe(DOCKER_PLUGIN_SOCKET);
    expect(parseDockerPlugin(true, '/run/p/weft-b.sock', '/var/run/docker.sock')).toBe('/run/p/weft-b.sock');
    expect(buildLaunchConfig([], { stateDir: '/tmp/x', dockerPlugin: true }, {}).dockerPlugin).toBe(
      DOCKER_PLUGIN_SOCKET,
    );
    expect(buildLaunchConfig([], { stateDir: '/tmp/x' }, {}).dockerPlugin).toBeUndefined();
  });

  it('refuses a socket without the flag, a relative or non-.sock path, and the plugin without the engine', () => {
    expect(() => parseDockerPlugin(false, '/run/p/weft.sock', '/d.sock')).toThrow(/needs --docker-plugin/);
    expect(() => parseDockerPlugin(true, 'weft.sock', '/d.sock')).toThrow(/absolute path/);
    expect(() => parseDockerPlugin(true, '/run/p/weft', '/d.sock')).toThrow(/ending in \.sock/);
    expect(() => parseDockerPlugin(true, undefined, undefined)).toThrow(/--docker-socket none/);
  });

  it('shows in the Docker line of weft status', () => {
    const engine = { socket: '/var/run/docker.sock', state: 'connected' as const, events: true, badEvents: 0 };
    expect(dockerLine(engine)).toBe('connected to /var/run/docker.sock (events)');
    const plugin = { socket: DOCKER_PLUGIN_SOCKET, listening: true, networks: 1, endpoints: 2, errors: 0 };
    expect(dockerLine({ ...engine, plugin })).toBe(
      `connected to /var/run/docker.sock (events); network plugin on ${DOCKER_PLUGIN_SOCKET} (2 endpoints)`,
    );
    expect(dockerLine({ ...engine, plugin: { ...plugin, listening: false, lastError: 'EACCES' } })).toMatch(
      /network plugin not listening on \S+: EACCES$/,
    );
  });
});
