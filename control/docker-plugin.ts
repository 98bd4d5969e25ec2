/**
 * The Docker network plugin: a libnetwork remote network driver (`weft`) and its remote IPAM
 * driver, served by the router over a unix socket in Docker's plugin directory
 * (`/run/docker/plugins/weft.sock`: the file's name is the plugin's name), so that
 *
 * ```
 *   docker network create -d weft --ipam-driver weft --subnet 10.32.0.0/12 weftnet
 *   docker run --network weftnet --name db ...
 * ```
 *
 * gives the container an address from Weft's IPAM and its name in Weft's DNS. The protocol is
 * JSON over HTTP POST, one path per call (moby/libnetwork docs/remote.md and docs/ipam.md);
 * an error is any answer with `{"Err": "..."}`. What libnetwork does, and what we do for it:
 *
 * ```
 *   network create ─► IpamDriver.RequestPool           the --subnet: the overlay range (or a subnet of it)
 *                     IpamDriver.RequestAddress (gw)   this host's overlay address (exposed if need be)
 *                     NetworkDriver.CreateNetwork      refused unless its pool is in the range
 *   docker run     ─► IpamDriver.RequestAddress        an address from IPAM, owner `docker:IP`
 *                     NetworkDriver.CreateEndpoint     remembered (address, MAC)
 *                     NetworkDriver.Join               Attacher: veth pair with both ends here, proxy ARP,
 *                                                      /32 route, claim; answers the container end's name,
 *                                                      which libnetwork moves into the sandbox as ethwe0,
 *                                                      addresses, and routes via the gateway
 *                     (network connect event)          the container's name registered in the DNS
 *   docker rm -f   ─► NetworkDriver.Leave              veth removed, names gone; the address stays reserved
 *                     NetworkDriver.DeleteEndpoint     forgotten
 *                     IpamDriver.ReleaseAddress        the address freed
 * ```
 *
 * The address is owned in IPAM by `docker:IP` from RequestAddress to ReleaseAddress, and the
 * attach record has the same key: between Leave and ReleaseAddress it is reserved for nobody
 * else, so a late ReleaseAddress never frees an address handed out again meanwhile. A malformed
 * request is answered with an error for that request; nothing a client sends stops the router.
 */
import { chmodSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import path from 'node:path';
import { z } from 'zod';
import { errorMessage, InputError, isWeftError, WeftError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { Cidr, IPv4 } from '../common/types.js';
import { cidrContains, formatCidr, formatIPv4, isIPv4, parseCidr, parseIPv4 } from '../common/types.js';
import type { Router } from '../router/index.js';
import {
  type AttachAt,
  type AttachedContainer,
  type Attacher,
  CONTAINER_IFNAME,
  containerMac,
  hostIfname,
} from './attach.js';
import type { ContainerEvent, DockerClient } from './docker.js';
import { statusForCode } from './http.js';

/** PLUGIN_CONTENT_TYPE is the media type of the plugin protocol's answers. */
export const PLUGIN_CONTENT_TYPE = 'application/vnd.docker.plugins.v1.2+json';
/** PLUGIN_BODY_MAX_BYTES bounds one request body (libnetwork's are well under 4 KiB). */
export const PLUGIN_BODY_MAX_BYTES = 64 << 10;
/** OWNER_PREFIX starts the IPAM owner (and attach record key) of an address the IPAM driver handed out. */
export const OWNER_PREFIX = 'docker:';
/** GATEWAY_REQUEST is the RequestAddressType libnetwork asks a network's gateway with. */
const GATEWAY_REQUEST = 'com.docker.network.gateway';
/** PEER_PREFIX names the container end of a pair until libnetwork renames it (`vp` + the host end's hash). */
const PEER_PREFIX = 'vp';

/** ownerOf is the IPAM owner and attach key of an address handed out by the IPAM driver. */
export function ownerOf(addr: number): string {
  return `${OWNER_PREFIX}${formatIPv4(addr)}`;
}

/**
 * PluginBackend is what the plugin needs of the router: IPAM, the host's overlay address, and
 * the attacher's veth machinery. {@link routerBackend} implements it on a Router and Attacher.
 */
export interface PluginBackend {
  /** range is the overlay range: every pool is in it. */
  readonly range: Cidr;
  /** allocate gives `owner` an address (in `subnet` when given). */
  allocate(owner: string, subnet?: Cidr): Promise<IPv4>;
  /** claim reserves a given address for `owner`; throws EWEFT_CONFLICT when someone has it. */
  claim(owner: string, addr: IPv4): void;
  /** free releases every address of `owner`. */
  free(owner: string): void;
  /** lookup lists the addresses `owner` holds. */
  lookup(owner: string): IPv4[];
  /** gateway is the host's overlay address (exposing the host when it has none). */
  gateway(): Promise<Cidr>;
  /** attach plugs an endpoint in (see {@link AttachAt.peer}) under `key`, with `cidr`. */
  attach(key: string, cidr: Cidr, at: AttachAt): Promise<AttachedContainer>;
  /** addName gives an attached record one more DNS name. */
  addName(key: string, name: string): Promise<void>;
  /** detach unplugs a record; `keepAddress` leaves its address reserved in IPAM. */
  detach(key: string, keepAddress: boolean): Promise<void>;
  /** records lists the attach records (to find endpoints again after a restart). */
  records(): AttachedContainer[];
}

/** routerBackend is the {@link PluginBackend} of a running router. */
export function routerBackend(router: Router, attacher: Attacher, range: Cidr): PluginBackend {
  return {
    range,
    allocate: (owner, subnet) => router.allocate(owner, subnet),
    claim: (owner, addr) => router.ipam.claim(owner, addr),
    free: (owner) => void router.ipam.free(owner),
    lookup: (owner) => router.ipam.lookup(owner),
    gateway: () => attacher.gateway(),
    attach: (key, cidr, at) => attacher.attach(key, [cidr], undefined, at),
    addName: async (key, name) => void (await attacher.attach(key, [], name)),
    detach: async (key, keep) => void (await attacher.detach(key, keep)),
    records: () => attacher.list(),
  };
}

/** DockerPluginStatus is what `weft status` shows about the network plugin. */
export interface DockerPluginStatus {
  socket: string;
  /** listening is true while the plugin's socket is served. */
  listening: boolean;
  /** networks counts the weft networks created since the router started. */
  networks: number;
  /** endpoints counts containers joined to weft networks on this host. */
  endpoints: number;
  /** errors counts requests answered with an error. */
  errors: number;
  lastError?: string;
}

/** Endpoint is one libnetwork endpoint between CreateEndpoint and DeleteEndpoint. */
interface Endpoint {
  network: string;
  /** key is the IPAM owner and attach key (`docker:IP`). */
  key: string;
  cidr: Cidr;
  mac: string;
}

const Id = z.string().regex(/^[A-Za-z0-9_.-]{1,128}$/, 'want an id of letters, digits, _ . -');
const StringMap = z.record(z.string(), z.unknown()).nullish();
const IpData = z
  .array(
    z.object({
      AddressSpace: z.string().max(256).optional(),
      Pool: z.string().max(64),
      Gateway: z.string().max(64).optional(),
    }),
  )
  .max(16)
  .nullish();

const CreateNetwork = z.object({ NetworkID: Id, Options: StringMap, IPv4Data: IpData, IPv6Data: IpData });
const NetworkOnly = z.object({ NetworkID: Id });
const EndpointRef = z.object({ NetworkID: Id, EndpointID: Id });
const CreateEndpoint = z.object({
  NetworkID: Id,
  EndpointID: Id,
  Options: StringMap,
  Interface: z
    .object({
      Address: z.string().max(64).optional(),
      AddressIPv6: z.string().max(64).optional(),
      MacAddress: z.string().max(64).optional(),
    })
    .nullish(),
});
const Join = z.object({
  NetworkID: Id,
  EndpointID: Id,
  SandboxKey: z.string().min(1).max(4096),
  Options: StringMap,
});
const RequestPool = z.object({
  AddressSpace: z.string().max(256).optional(),
  Pool: z.string().max(64).optional(),
  SubPool: z.string().max(64).optional(),
  Options: StringMap,
  V6: z.boolean().optional(),
});
const PoolRef = z.object({ PoolID: z.string().min(1).max(128) });
const RequestAddress = z.object({
  PoolID: z.string().min(1).max(128),
  Address: z.string().max(64).optional(),
  Options: StringMap,
});
const ReleaseAddress = z.object({ PoolID: z.string().min(1).max(128), Address: z.string().min(1).max(64) });

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

type Handler = (body: unknown) => Promise<Record<string, unknown>> | Record<string, unknown>;

/** parse validates a request body against its schema; InputError naming the method and field otherwise. */
function parse<T>(schema: z.ZodType<T>, body: unknown, method: string): T {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  throw new InputError(`${method}: ${issue?.path.join('.') || 'body'}: ${issue?.message ?? 'invalid'}`);
}

/** checked validates a request that needs no answer but `{}`. */
function checked<T>(schema: z.ZodType<T>, body: unknown, method: string): Record<string, unknown> {
  parse(schema, body, method);
  return {};
}

/** parseAddress reads an address libnetwork sends bare (`10.32.0.5`) or as a CIDR. */
function parseAddress(s: string, what: string): IPv4 {
  const bare = s.includes('/') ? s.slice(0, s.indexOf('/')) : s;
  if (!isIPv4(bare)) throw new InputError(`${what}: "${s}" is not an IPv4 address`);
  return parseIPv4(bare);
}

/**
 * DockerPlugin serves the network and IPAM drivers on a unix socket. Startable: `start()`
 * listens (replacing a stale socket file), `stop()` closes and removes it. Endpoints live in
 * memory from CreateEndpoint on; joined ones are found again after a restart from the attach
 * records, which carry the endpoint's id.
 */
export class DockerPlugin {
  private server: Server | undefined;
  private readonly endpoints = new Map<string, Endpoint>();
  private readonly networks = new Set<string>();
  private errors = 0;
  private lastError: string | undefined;
  private readonly handlers: Record<string, Handler>;

  constructor(
    private readonly opts: {
      socketPath: string;
      backend: PluginBackend;
      log: Logger;
      /** docker looks containers up for their names (the DNS); without it endpoints get no name. */
      docker?: DockerClient;
    },
  ) {
    this.handlers = {
      'Plugin.Activate': () => ({ Implements: ['NetworkDriver', 'IpamDriver'] }),
      'NetworkDriver.GetCapabilities': () => ({ Scope: 'local' }),
      'NetworkDriver.CreateNetwork': (b) => this.createNetwork(b),
      'NetworkDriver.DeleteNetwork': (b) => {
        this.networks.delete(parse(NetworkOnly, b, 'DeleteNetwork').NetworkID);
        return {};
      },
      'NetworkDriver.CreateEndpoint': (b) => this.createEndpoint(b),
      'NetworkDriver.EndpointOperInfo': (b) => this.operInfo(b),
      'NetworkDriver.DeleteEndpoint': (b) => this.deleteEndpoint(b),
      'NetworkDriver.Join': (b) => this.join(b),
      'NetworkDriver.Leave': (b) => this.leave(b),
      'NetworkDriver.AllocateNetwork': () => ({}),
      'NetworkDriver.FreeNetwork': () => ({}),
      'NetworkDriver.DiscoverNew': () => ({}),
      'NetworkDriver.DiscoverDelete': () => ({}),
      'NetworkDriver.ProgramExternalConnectivity': (b) => checked(EndpointRef, b, 'ProgramExternalConnectivity'),
      'NetworkDriver.RevokeExternalConnectivity': (b) => checked(EndpointRef, b, 'RevokeExternalConnectivity'),
      'IpamDriver.GetCapabilities': () => ({ RequiresMACAddress: false, RequiresRequestReplay: false }),
      'IpamDriver.GetDefaultAddressSpaces': () => ({
        LocalDefaultAddressSpace: 'weft',
        GlobalDefaultAddressSpace: 'weft',
      }),
      'IpamDriver.RequestPool': (b) => this.requestPool(b),
      'IpamDriver.ReleasePool': (b) => checked(PoolRef, b, 'ReleasePool'),
      'IpamDriver.RequestAddress': (b) => this.requestAddress(b),
      'IpamDriver.ReleaseAddress': (b) => this.releaseAddress(b),
    };
  }

  /** start serves the socket; rejects when it cannot be made (its directory, a path in use). */
  async start(): Promise<void> {
    if (this.server !== undefined) return;
    const file = this.opts.socketPath;
    try {
      mkdirSync(path.dirname(file), { recursive: true });
      // One router per namespace (its API port says so before this runs): a file left here is stale.
      if (existsSync(file)) rmSync(file, { force: true });
    } catch (err) {
      this.lastError = `docker plugin: cannot make ${file}: ${errorMessage(err)}`;
      throw new WeftError('EWEFT_SYSTEM', this.lastError, { cause: err });
    }
    // dockerd's plugin client sends an empty Host header, which node refuses by default.
    const server = createServer({ requireHostHeader: false }, (req, res) => void this.serve(req, res));
    server.on('clientError', (err, sock) => {
      this.errors++;
      this.lastError = `docker plugin: unreadable request: ${err.message}`;
      sock.destroy();
    });
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', (err) =>
          reject(new WeftError('EWEFT_SYSTEM', `docker plugin: cannot listen on ${file}: ${err.message}`)),
        );
        server.listen(file, () => resolve());
      });
    } catch (err) {
      this.lastError = errorMessage(err);
      throw err;
    }
    server.on('error', (err) => this.opts.log.warn('docker plugin: socket error', { err: err.message }));
    // Whoever can connect makes the router plumb interfaces: root's only, whatever the umask.
    chmodSync(file, 0o600);
    this.server = server;
    this.opts.log.info('docker plugin: listening', { socket: file });
  }

  /** stop closes the socket and removes its file. Idempotent. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server === undefined) return;
    const closed = new Promise<void>((r) => server.close(() => r()));
    server.closeAllConnections();
    await closed;
    rmSync(this.opts.socketPath, { force: true });
  }

  status(): DockerPluginStatus {
    return {
      socket: this.opts.socketPath,
      listening: this.server !== undefined,
      networks: this.networks.size,
      endpoints: this.opts.backend.records().filter((r) => r.endpoint !== undefined).length,
      errors: this.errors,
      ...(this.lastError === undefined ? {} : { lastError: this.lastError }),
    };
  }

  /**
   * onEngineEvent names the containers of weft endpoints in the DNS: on a container's start and a
   * network connect (`docker network connect` to a running one) it looks the container up and
   * gives each of its endpoints here the container's name. Never throws.
   */
  async onEngineEvent(e: ContainerEvent): Promise<void> {
    if (e.action !== 'start' && e.action !== 'connect') return;
    const docker = this.opts.docker;
    if (docker === undefined || e.id === '') return;
    try {
      const r = await docker.get(`/containers/${encodeURIComponent(e.id)}/json`);
      if (r.status !== 200) return;
      const c = parseNetworks(r.body);
      if (c === undefined) return;
      const keys = new Map(
        this.opts.backend
          .records()
          .filter((a) => a.endpoint !== undefined && a.state === undefined)
          .map((a) => [a.endpoint as string, a]),
      );
      for (const endpoint of c.endpoints) {
        const a = keys.get(endpoint);
        if (a === undefined || a.name === c.name || (a.names ?? []).includes(c.name)) continue;
        if (!/^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(c.name)) {
          this.opts.log.info('docker plugin: container name is not a DNS label; not registered', { name: c.name });
          return;
        }
        await this.opts.backend.addName(a.target, c.name);
        this.opts.log.info('docker plugin: container named', { container: c.name, endpoint: endpoint.slice(0, 12) });
      }
    } catch (err) {
      this.opts.log.warn('docker plugin: cannot name a container', {
        container: e.id.slice(0, 12),
        err: errorMessage(err),
      });
    }
  }

  /** serve reads one request and answers it: 200 with the method's result, or an error status with {Err}. */
  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = (req.url ?? '').replace(/^\//, '').split('?')[0] ?? '';
    let status = 200;
    let json: Record<string, unknown>;
    try {
      const handler = req.method === 'POST' ? this.handlers[method] : undefined;
      if (handler === undefined) {
        req.resume();
        throw new WeftError('EWEFT_NOT_FOUND', `unknown plugin call ${req.method ?? ''} /${method}`);
      }
      json = await handler(await readJson(req, method));
    } catch (err) {
      status = isWeftError(err) ? statusForCode(err.code) : 500;
      const msg = `weft: ${errorMessage(err)}`;
      this.errors++;
      this.lastError = msg;
      this.opts.log.warn('docker plugin: request refused', { call: method.slice(0, 64), err: msg });
      json = { Err: msg };
    }
    this.opts.log.debug('docker plugin: call', { call: method.slice(0, 64), status });
    if (res.destroyed) return;
    const text = JSON.stringify(json);
    res.writeHead(status, { 'content-type': PLUGIN_CONTENT_TYPE, 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  /** poolOf reads a PoolID (the pool's CIDR) and checks it is in the range. */
  private poolOf(text: string, what: string): Cidr {
    let c: Cidr;
    try {
      c = parseCidr(text);
    } catch {
      throw new InputError(`${what}: unknown pool "${text}"`);
    }
    this.checkInRange(c, what);
    return c;
  }

  private checkInRange(c: Cidr, what: string): void {
    const range = this.opts.backend.range;
    if (!cidrContains(range, c.addr) || c.prefix < range.prefix) {
      throw new InputError(
        `${what}: ${formatCidr(c)} is not in the overlay range ${formatCidr(range)} (use --ipam-driver weft, and a --subnet inside the range or none)`,
      );
    }
  }

  private requestPool(b: unknown): Record<string, unknown> {
    const r = parse(RequestPool, b, 'RequestPool');
    if (r.V6 === true) throw new InputError('RequestPool: the weft IPAM driver has no IPv6 pools');
    if (r.SubPool !== undefined && r.SubPool !== '') {
      throw new InputError('RequestPool: --ip-range is not supported; IPAM shares the range out among hosts');
    }
    const range = formatCidr(this.opts.backend.range);
    if (r.Pool === undefined || r.Pool === '') {
      // Without --subnet, libnetwork refuses any pool that overlaps a route of this host and asks
      // again, forever (moby/libnetwork#1386): the overlay range always has one (the router's device).
      throw new InputError(
        `RequestPool: give the network a subnet in the overlay range, e.g. docker network create -d weft --ipam-driver weft --subnet ${range} NAME (without one, Docker refuses every pool on a route of this host, and the overlay range is routed here)`,
      );
    }
    const pool = this.poolOf(r.Pool, 'RequestPool');
    const text = formatCidr({ addr: pool.addr, prefix: pool.prefix });
    return { PoolID: text, Pool: text, Data: {} };
  }

  private async requestAddress(b: unknown): Promise<Record<string, unknown>> {
    const r = parse(RequestAddress, b, 'RequestAddress');
    const pool = this.poolOf(r.PoolID, 'RequestAddress');
    const withPrefix = (a: number) => `${formatIPv4(a)}/${pool.prefix}`;
    if (r.Options?.RequestAddressType === GATEWAY_REQUEST) {
      const gw = await this.opts.backend.gateway();
      if (!cidrContains(pool, gw.addr)) {
        throw new InputError(
          `RequestAddress: this host's overlay address ${formatIPv4(gw.addr)} is not in ${r.PoolID}`,
        );
      }
      return { Address: withPrefix(gw.addr), Data: {} };
    }
    if (r.Address !== undefined && r.Address !== '') {
      const addr = parseAddress(r.Address, 'RequestAddress');
      if (!cidrContains(pool, addr)) throw new InputError(`RequestAddress: ${r.Address} is not in ${r.PoolID}`);
      // Held under its own key, the address is another endpoint's (`docker run --ip` of one in use,
      // or a stopped --ip container's, taken meanwhile): libnetwork never asks again for an address
      // it holds (no request replay), so claiming it would give two containers one address.
      if (this.opts.backend.lookup(ownerOf(addr)).includes(addr)) {
        throw new WeftError('EWEFT_CONFLICT', `RequestAddress: ${formatIPv4(addr)} is in use by another endpoint`);
      }
      this.opts.backend.claim(ownerOf(addr), addr);
      return { Address: withPrefix(addr), Data: {} };
    }
    // IPAM hands out under an owner: a placeholder, re-keyed by the address in the same turn.
    const placeholder = `${OWNER_PREFIX}request-${process.hrtime.bigint()}`;
    const range = this.opts.backend.range;
    const subnet = pool.prefix === range.prefix ? undefined : pool;
    const addr = await this.opts.backend.allocate(placeholder, subnet);
    this.opts.backend.free(placeholder);
    this.opts.backend.claim(ownerOf(addr), addr);
    return { Address: withPrefix(addr), Data: {} };
  }

  private async releaseAddress(b: unknown): Promise<Record<string, unknown>> {
    const r = parse(ReleaseAddress, b, 'ReleaseAddress');
    const addr = parseAddress(r.Address, 'ReleaseAddress');
    const key = ownerOf(addr);
    // A record still attached (its Leave was lost) goes with its address.
    if (this.opts.backend.records().some((a) => a.target === key)) await this.opts.backend.detach(key, false);
    this.opts.backend.free(key);
    return {};
  }

  private createNetwork(b: unknown): Record<string, unknown> {
    const r = parse(CreateNetwork, b, 'CreateNetwork');
    if ((r.IPv6Data ?? []).length > 0) throw new InputError('CreateNetwork: the weft driver has no IPv6');
    const pools = r.IPv4Data ?? [];
    if (pools.length === 0) throw new InputError('CreateNetwork: no IPv4 pool (create it with --ipam-driver weft)');
    for (const p of pools) this.poolOf(p.Pool, 'CreateNetwork');
    this.networks.add(r.NetworkID);
    this.opts.log.info('docker plugin: network created', { network: r.NetworkID.slice(0, 12) });
    return {};
  }

  private createEndpoint(b: unknown): Record<string, unknown> {
    const r = parse(CreateEndpoint, b, 'CreateEndpoint');
    const iface = r.Interface ?? {};
    if (iface.AddressIPv6 !== undefined && iface.AddressIPv6 !== '') {
      throw new InputError('CreateEndpoint: the weft driver has no IPv6');
    }
    if (iface.Address === undefined || iface.Address === '') {
      throw new InputError('CreateEndpoint: no address (create the network with --ipam-driver weft)');
    }
    let cidr: Cidr;
    try {
      cidr = parseCidr(iface.Address);
    } catch {
      throw new InputError(`CreateEndpoint: Interface.Address "${iface.Address}" is not an IPv4 CIDR`);
    }
    this.checkInRange(cidr, 'CreateEndpoint');
    const given = iface.MacAddress ?? '';
    if (given !== '' && !MAC.test(given)) throw new InputError(`CreateEndpoint: bad MacAddress "${given}"`);
    const key = ownerOf(cidr.addr);
    const mac = given === '' ? containerMac(key) : given.toLowerCase();
    this.endpoints.set(r.EndpointID, { network: r.NetworkID, key, cidr, mac });
    // The MAC is ours to choose only when none was asked for (libnetwork refuses a changed one).
    return given === '' ? { Interface: { MacAddress: mac } } : {};
  }

  /** endpoint finds an endpoint by id: created since the start, or joined before a restart (its record). */
  private endpoint(id: string, what: string): Endpoint | undefined {
    const known = this.endpoints.get(id);
    if (known !== undefined) return known;
    const a = this.opts.backend.records().find((x) => x.endpoint === id);
    const c = a?.cidrs[0];
    if (a === undefined || c === undefined) return undefined;
    const ep = { network: '', key: a.target, cidr: parseCidr(c), mac: a.mac ?? containerMac(a.target) };
    this.endpoints.set(id, ep);
    this.opts.log.debug(`docker plugin: ${what} of an endpoint joined before a restart`, { endpoint: id });
    return ep;
  }

  private operInfo(b: unknown): Record<string, unknown> {
    const r = parse(EndpointRef, b, 'EndpointOperInfo');
    const ep = this.endpoint(r.EndpointID, 'EndpointOperInfo');
    return { Value: ep === undefined ? {} : { address: formatCidr(ep.cidr), mac: ep.mac } };
  }

  private async join(b: unknown): Promise<Record<string, unknown>> {
    const r = parse(Join, b, 'Join');
    const ep = this.endpoint(r.EndpointID, 'Join');
    if (ep === undefined) throw new WeftError('EWEFT_NOT_FOUND', `Join: unknown endpoint ${r.EndpointID}`);
    const gateway = await this.opts.backend.gateway();
    const peer = peerIfname(ep.key);
    const at: AttachAt = { netns: r.SandboxKey, ifname: CONTAINER_IFNAME, peer, endpoint: r.EndpointID };
    const a = await this.opts.backend.attach(ep.key, ep.cidr, at);
    this.opts.log.info('docker plugin: endpoint joined', { endpoint: r.EndpointID.slice(0, 12), cidr: a.cidrs[0] });
    return {
      InterfaceName: { SrcName: peer, DstPrefix: CONTAINER_IFNAME },
      Gateway: formatIPv4(gateway.addr),
      StaticRoutes: [],
    };
  }

  private async leave(b: unknown): Promise<Record<string, unknown>> {
    const r = parse(EndpointRef, b, 'Leave');
    const ep = this.endpoint(r.EndpointID, 'Leave');
    if (ep !== undefined && this.opts.backend.records().some((a) => a.target === ep.key)) {
      await this.opts.backend.detach(ep.key, true);
    }
    return {};
  }

  private async deleteEndpoint(b: unknown): Promise<Record<string, unknown>> {
    const r = parse(EndpointRef, b, 'DeleteEndpoint');
    const ep = this.endpoint(r.EndpointID, 'DeleteEndpoint');
    if (ep !== undefined && this.opts.backend.records().some((a) => a.target === ep.key)) {
      await this.opts.backend.detach(ep.key, true);
    }
    this.endpoints.delete(r.EndpointID);
    return {};
  }
}

/** peerIfname names the container end of an endpoint's pair in the host namespace: `vp` + the host end's 8 hex. */
export function peerIfname(key: string): string {
  return `${PEER_PREFIX}${hostIfname(key).slice(2)}`;
}

/** readJson reads a request body of at most PLUGIN_BODY_MAX_BYTES as JSON; empty and `null` read as {}. */
function readJson(req: IncomingMessage, method: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (c: Buffer) => {
      if (failed) return;
      size += c.length;
      if (size > PLUGIN_BODY_MAX_BYTES) {
        failed = true;
        reject(new InputError(`${method}: request body larger than ${PLUGIN_BODY_MAX_BYTES} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on('error', (err) => {
      failed = true;
      reject(new InputError(`${method}: ${err.message}`));
    });
    req.on('end', () => {
      if (failed) return;
      const text = Buffer.concat(chunks).toString('utf8').trim();
      if (text === '' || text === 'null') {
        resolve({});
        return;
      }
      try {
        resolve(JSON.parse(text));
      } catch (err) {
        reject(new InputError(`${method}: malformed JSON body: ${errorMessage(err)}`));
      }
    });
  });
}

const NetworksSchema = z.object({
  Name: z.string().max(256),
  NetworkSettings: z.object({
    Networks: z.record(z.string(), z.object({ EndpointID: z.string().max(128).nullish() }).passthrough()).nullish(),
  }),
});

/** parseNetworks reads a container inspect's name and the ids of its endpoints; undefined when malformed. */
export function parseNetworks(body: string): { name: string; endpoints: string[] } | undefined {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    return undefined;
  }
  const r = NetworksSchema.safeParse(json);
  if (!r.success) return undefined;
  const endpoints = Object.values(r.data.NetworkSettings.Networks ?? {})
    .map((n) => n.EndpointID ?? '')
    .filter((id) => id !== '');
  return { name: r.data.Name.replace(/^\//, ''), endpoints };
}
