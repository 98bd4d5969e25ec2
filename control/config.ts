/**
 * config turns what the user gave (flags, WEFT_* environment, defaults) into checked values:
 * {@link buildLaunchConfig} the router's {@link LaunchConfig}, {@link clientTarget} where the CLI
 * finds a router, and the paths both agree on (the API socket under {@link RUN_ROOT}, the token
 * file, the state directory). It imports leaf modules of router/ and dns/ only, never
 * router/index.js, so the CLI starts without loading the router.
 *
 * Over 400 lines because it is the one place that checks flags and environment: the LaunchConfig
 * and LaunchFlags interfaces, the parsers of ports, addresses and lists and the message for each
 * bad value belong with buildLaunchConfig, which uses them all, so every option is defined,
 * defaulted and checked in one file.
 */
import { closeSync, constants as fsConstants, openSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import path from 'node:path';
import { ConfigError } from '../common/errors.js';
import type { LogLevel } from '../common/log.js';
import type { Cidr, PeerName } from '../common/types.js';
import { cidrNetwork, formatCidr, isIPv4, parseCidr, parseOwnPeerName } from '../common/types.js';
// Direct import (not dns/index.js): defaults.ts imports nothing, so the CLI starts without the DNS server.
import { DNS_PORT, DNS_TTL_S } from '../dns/defaults.js';
import {
  CONN_LIMIT_DEFAULT,
  CONTAINER_GRACE_MS,
  CONTROL_PORT,
  DISCOVERY_DEGREE,
  DNS_DOMAIN,
  HTTP_ADDR,
  IPALLOC_RANGE,
  MTU_MAX,
  MTU_MIN,
  PEER_DOWN_TIMEOUT_MS,
  TUN_DEVICE_NAME,
  VXLAN_PORT,
  VXLAN_VNI_DEFAULT,
  VXLAN_VNI_MAX,
} from '../router/constants.js';
import { REKEY_AFTER_TIME_MS } from '../router/crypto/data-crypto.js';
// Direct imports (not router/index.js): the CLI must start without loading the router.
import { type IpamInit, parseIpamInit } from '../router/ipam/init.js';
import { defaultStateDir, mkdirParents, type NetnsIdentity, netnsIdentity } from './state-dir.js';

/** RUN_ROOT holds the routers' API sockets (runtime state, gone at reboot), per network namespace below it. */
export const RUN_ROOT = '/run/weft';
/** API_SOCKET_NAME is the file name of a router's API socket. */
export const API_SOCKET_NAME = 'weft.sock';
/** API_TOKEN_FILE_NAME is the file in the state directory that holds the API's bearer token (mode 0600). */
export const API_TOKEN_FILE_NAME = 'api-token';

/**
 * defaultApiSocket returns the API socket of the router of the current network namespace, laid out
 * like the state directory so that several routers on one machine never collide:
 * - the host namespace: /run/weft/weft.sock
 * - a named namespace (`ip netns`): /run/weft/netns/NAME/weft.sock
 * - an anonymous namespace: /run/weft/netns-ino/INODE/weft.sock
 * It does not follow `--state-dir`: every CLI command finds it from the namespace alone.
 */
export function defaultApiSocket(id: NetnsIdentity = netnsIdentity()): string {
  if (id.root) return path.join(RUN_ROOT, API_SOCKET_NAME);
  if (id.name !== undefined) return path.join(RUN_ROOT, 'netns', id.name, API_SOCKET_NAME);
  return path.join(RUN_ROOT, 'netns-ino', String(id.inode), API_SOCKET_NAME);
}

/** isLoopbackHost: `host` (an address or name) stays on this host: 127.0.0.0/8, ::1 or localhost. */
export function isLoopbackHost(host: string): boolean {
  const h = host
    .replace(/^\[(.*)\]$/, '$1')
    .replace(/^::ffff:/i, '')
    .toLowerCase();
  return h === 'localhost' || h === '::1' || (isIPv4(h) && h.startsWith('127.'));
}

/**
 * TARGETS_MAX is the most connection targets (from launch and connect) a router keeps: exactly what
 * its state file may hold (control/state.ts), so that a state file the router writes can always be
 * read back. POST /connect refuses (409) a request that would take the list beyond it.
 */
export const TARGETS_MAX = 10_000;

/**
 * STATE_DIR_FORBIDDEN are the kernel's virtual file systems: a state directory there can never hold
 * files (and Node's recursive mkdir spins forever on a missing path below /proc).
 */
export const STATE_DIR_FORBIDDEN: readonly string[] = ['/proc', '/sys', '/dev'];

/**
 * checkStateDir validates a state directory as given (`--state-dir`, WEFT_STATE_DIR) without
 * touching the disk beyond reading: it must be a path with no NUL byte, and neither it nor what its
 * deepest existing ancestor resolves to (symbolic links followed) may lie in /proc, /sys or /dev.
 * Returns the absolute path (relative paths are taken from the current directory). Throws
 * ConfigError with one line saying why. {@link prepareStateDir} then makes it and proves it writable.
 */
export function checkStateDir(dir: string, what = '--state-dir'): string {
  if (dir === '' || dir.includes('\0')) throw new ConfigError(`invalid ${what} "${dir}": want a directory path`);
  const abs = path.resolve(dir);
  const inForbidden = (p: string) => STATE_DIR_FORBIDDEN.find((f) => p === f || p.startsWith(`${f}/`));
  let real = abs;
  for (let p = abs; ; p = path.dirname(p)) {
    try {
      real = path.join(realpathSync(p), path.relative(p, abs));
      break;
    } catch {
      if (p === path.dirname(p)) break;
    }
  }
  const bad = inForbidden(abs) ?? inForbidden(real);
  if (bad !== undefined) {
    const via = real === abs ? '' : ` (it resolves to ${real})`;
    throw new ConfigError(
      `invalid ${what} "${dir}"${via}: ${bad} is a kernel file system, it cannot hold state; choose a directory such as /var/lib/weft`,
    );
  }
  return abs;
}

/**
 * prepareStateDir makes the state directory (mode 0700, parents as needed) and proves it can hold
 * files by creating and removing a probe file (mkdirParents: `mkdirSync(dir, { recursive: true })`
 * spins on a path below /proc). Throws ConfigError with one line saying why.
 */
export function prepareStateDir(dir: string): void {
  const abs = checkStateDir(dir);
  const fail = (what: string, err?: unknown): never => {
    const e = err as NodeJS.ErrnoException | undefined;
    // "EACCES: permission denied, mkdir '/x'" → "EACCES: permission denied": the path is said already.
    const why = e === undefined ? '' : `: ${e.message.replace(/, \w+ '.*'$/, '')}`;
    throw new ConfigError(`cannot use the state directory ${abs}: ${what}${why}`, { cause: err });
  };
  try {
    mkdirParents(abs, 0o700);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const at = e.path ?? abs;
    if (e.code === 'ENOTDIR') fail(`${at} is not a directory`);
    fail(e.syscall === 'stat' ? `cannot look at ${at}` : `cannot create ${at}`, err);
  }
  const probe = path.join(abs, `.weft-probe-${process.pid}`);
  try {
    closeSync(openSync(probe, fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_WRONLY, 0o600));
  } catch (err) {
    fail('cannot write there', err);
  }
  rmSync(probe, { force: true });
}

/** HostPort is a listen or dial address. */
export interface HostPort {
  host: string;
  port: number;
}

/**
 * ENCAP_DEFAULT is the data path a router prefers unless told: `auto`, the kernel fast path per
 * peer whose heartbeats through weft-vx are answered, else sleeve (as Weave's fastdp did; #14).
 */
export const ENCAP_DEFAULT = 'auto';

/** LaunchConfig is the router's whole configuration, built once from defaults, environment and flags. */
export interface LaunchConfig {
  /** peers are the targets given on the command line (host[:port]). */
  readonly peers: readonly string[];
  readonly name: PeerName | undefined;
  readonly nickname: string | undefined;
  /** port is the TCP control port and the sleeve UDP port. */
  readonly port: number;
  /** encap: auto (kernel fast path per peer, else sleeve), fastdp, sleeve or vxlan (userspace). */
  readonly encap: 'auto' | 'fastdp' | 'sleeve' | 'vxlan';
  readonly vxlanPort: number;
  readonly vni: number;
  readonly ipallocRange: Cidr;
  /** ipallocRangeGiven: the range was chosen by the user (an overlap with a host route is then only a warning). */
  readonly ipallocRangeGiven: boolean;
  /** ipallocInit says how IPAM's ring starts (`--ipalloc-init auto|observer|seed=NAME,...`). */
  readonly ipallocInit: IpamInit;
  /** containerGraceMs: a container gone without detach has its address freed after this long. */
  readonly containerGraceMs: number;
  readonly dnsDomain: string;
  readonly noDns: boolean;
  /** dnsUpstream overrides the host's resolv.conf nameservers for names outside the domain. */
  readonly dnsUpstream: readonly string[] | undefined;
  /** vxlanPeers are kernel vxlan devices (by underlay IPv4 address) allowed to send VXLAN to this router. */
  readonly vxlanPeers: readonly string[];
  /** dnsTtl is the TTL of the DNS answers for the domain, in seconds. */
  readonly dnsTtl: number;
  /** dnsPort is the DNS server's port on the host's overlay address. */
  readonly dnsPort: number;
  readonly httpAddr: HostPort;
  /** httpLoopback: httpAddr is a loopback address; otherwise every request there needs the bearer token. */
  readonly httpLoopback: boolean;
  /** apiSocket is the unix socket the API is also served on (mode 0660, root or group weft); the CLI prefers it. */
  readonly apiSocket: string;
  /** dockerSocket is the Docker engine's API socket (`weft attach` of Docker containers, its events); undefined: none. */
  readonly dockerSocket: string | undefined;
  /** dockerPlugin is the socket the Docker network plugin (`weft` driver and IPAM) listens on; undefined: off. */
  readonly dockerPlugin: string | undefined;
  /** apiTokenFile holds the bearer token TCP callers need to change the router: `<stateDir>/api-token`. */
  readonly apiTokenFile: string;
  readonly stateDir: string;
  /** mtu is the overlay MTU; undefined means the underlay MTU minus the encapsulation overhead. */
  readonly mtu: number | undefined;
  /** password authenticates peers when set (from --password-file or WEFT_PASSWORD). */
  readonly password: Buffer | undefined;
  /** masquerade (--masquerade, WEFT_MASQUERADE=1): containers reach beyond the overlay behind the host's address. */
  readonly masquerade: boolean;
  /** trustedSubnets (--trusted-subnets, with a password): data to peers there, who trust us too, stays unencrypted. */
  readonly trustedSubnets: readonly Cidr[];
  readonly noDiscovery: boolean;
  readonly foreground: boolean;
  readonly logLevel: LogLevel;
  readonly device: string;
  /** datapath picks the socket layer: the native batched addon, or Node's dgram (portable, slower). */
  readonly datapath: 'native' | 'dgram';
  readonly connLimit: number;
  /** offload lets the kernel hand the router TCP super-packets (TSO); `--no-offload` turns it off. */
  readonly offload: boolean;
  /** discoveryDegree: discovery stops dialling once the router has this many connections. */
  readonly discoveryDegree: number;
  /** peerTimeoutMs: a data path silent this long either way is failed and routed around. */
  readonly peerTimeoutMs: number;
  /** rekeyAfterTimeMs (WEFT_REKEY_AFTER_MS, with a password): data keys ratchet at least this often; undefined: 120 s. */
  readonly rekeyAfterTimeMs: number | undefined;
}

/** LaunchFlags are the raw values from the command line (strings as typed). */
export interface LaunchFlags {
  name?: string;
  nickname?: string;
  port?: string;
  encap?: string;
  vxlanPort?: string;
  vni?: string;
  ipallocRange?: string;
  dnsDomain?: string;
  dns?: boolean; // commander's --no-dns sets dns=false
  httpAddr?: string;
  apiSocket?: string;
  stateDir?: string;
  mtu?: string;
  passwordFile?: string;
  trustedSubnets?: string;
  masquerade?: boolean;
  discovery?: boolean; // --no-discovery
  foreground?: boolean;
  logLevel?: string;
  device?: string;
  datapath?: string;
  connLimit?: string;
  offload?: boolean; // --no-offload
  discoveryDegree?: string;
  peerTimeout?: string;
  ipallocInit?: string;
  containerGrace?: string;
  dockerSocket?: string;
  dockerPlugin?: boolean;
  dockerPluginSocket?: string;
  dnsUpstream?: string;
  vxlanPeer?: string;
  dnsTtl?: string;
  dnsPort?: string;
}

/** parsePort validates a TCP/UDP port number given as text. */
export function parsePort(s: string, what: string): number {
  if (!/^\d{1,5}$/.test(s) || Number(s) < 1 || Number(s) > 65535) {
    throw new ConfigError(`invalid ${what} "${s}": want a port number 1-65535`);
  }
  return Number(s);
}

function parseIntIn(s: string, what: string, min: number, max: number): number {
  if (!/^\d+$/.test(s) || Number(s) < min || Number(s) > max) {
    throw new ConfigError(`invalid ${what} "${s}": want a whole number ${min}-${max}`);
  }
  return Number(s);
}

/** parseHostPort parses `host:port` (IPv4 or a name); `defaultPort` fills a missing port. */
export function parseHostPort(s: string, what: string, defaultPort?: number): HostPort {
  const m = /^([^:\s]+)(?::(\d+))?$/.exec(s.trim());
  if (m === null || (m[2] === undefined && defaultPort === undefined)) {
    throw new ConfigError(`invalid ${what} "${s}": want host:port`);
  }
  const host = m[1] as string;
  const port = m[2] === undefined ? (defaultPort as number) : parsePort(m[2], `${what} port`);
  return { host, port };
}

/** parsePeerAddress validates a peer given as `host[:port]`. */
export function parsePeerAddress(s: string): string {
  const hp = parseHostPort(s, 'peer', CONTROL_PORT);
  if (!/^[A-Za-z0-9.-]{1,253}$/.test(hp.host)) throw new ConfigError(`invalid peer "${s}": want host[:port]`);
  return `${hp.host}:${hp.port}`;
}

const DOMAIN_RE = /^(?=.{1,200}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.?$/i;

/**
 * buildLaunchConfig merges defaults, environment (WEFT_*) and flags (flags win) into one frozen,
 * validated LaunchConfig. It is the only place that reads the environment.
 */
export function buildLaunchConfig(
  peers: readonly string[],
  flags: LaunchFlags,
  env: NodeJS.ProcessEnv = process.env,
): LaunchConfig {
  const encap = flags.encap ?? env.WEFT_ENCAP ?? ENCAP_DEFAULT;
  if (encap !== 'auto' && encap !== 'fastdp' && encap !== 'sleeve' && encap !== 'vxlan')
    throw new ConfigError(`invalid --encap "${encap}": want auto, fastdp, sleeve or vxlan`);
  const datapath = flags.datapath ?? env.WEFT_DATAPATH ?? 'native';
  if (datapath !== 'native' && datapath !== 'dgram') {
    throw new ConfigError(`invalid --datapath "${datapath}": want native or dgram`);
  }
  const logLevel = flags.logLevel ?? env.WEFT_LOG_LEVEL ?? 'info';
  if (!['debug', 'info', 'warn', 'error'].includes(logLevel)) {
    throw new ConfigError(`invalid --log-level "${logLevel}": want debug, info, warn or error`);
  }
  const mtuText = flags.mtu ?? env.WEFT_MTU;
  const mtu = mtuText === undefined ? undefined : parseIntIn(mtuText, '--mtu', MTU_MIN, MTU_MAX);
  let ipallocRange: Cidr;
  try {
    ipallocRange = parseCidr(flags.ipallocRange ?? IPALLOC_RANGE);
  } catch (err) {
    throw new ConfigError(`invalid --ipalloc-range: ${(err as Error).message}`, { cause: err });
  }
  const ipallocInit = parseIpamInit(flags.ipallocInit ?? env.WEFT_IPALLOC_INIT ?? 'auto', peers.length === 0);
  const dnsDomain = flags.dnsDomain ?? DNS_DOMAIN;
  if (!DOMAIN_RE.test(dnsDomain)) throw new ConfigError(`invalid --dns-domain "${dnsDomain}"`);
  const device = flags.device ?? TUN_DEVICE_NAME;
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(device))
    throw new ConfigError(`invalid --device "${device}": 1-15 letters, digits, _ . -`);
  const nickname = flags.nickname;
  if (nickname !== undefined && !/^[\w.-]{1,64}$/.test(nickname)) {
    throw new ConfigError(`invalid --nickname "${nickname}": 1-64 letters, digits, _ . -`);
  }
  let name: PeerName | undefined;
  if (flags.name !== undefined) {
    try {
      name = parseOwnPeerName(flags.name);
    } catch (err) {
      throw new ConfigError(`invalid --name: ${(err as Error).message}`, { cause: err });
    }
  }
  let password: Buffer | undefined;
  if (flags.passwordFile !== undefined) {
    try {
      password = Buffer.from(readFileSync(flags.passwordFile, 'utf8').trim());
    } catch (err) {
      throw new ConfigError(`cannot read --password-file ${flags.passwordFile}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (password.length === 0) throw new ConfigError(`--password-file ${flags.passwordFile} is empty`);
  } else if (env.WEFT_PASSWORD !== undefined && env.WEFT_PASSWORD !== '') {
    password = Buffer.from(env.WEFT_PASSWORD);
  }
  const httpAddr = parseHostPort(flags.httpAddr ?? env.WEFT_HTTP_ADDR ?? HTTP_ADDR, '--http-addr');
  const stateDir = checkStateDir(
    flags.stateDir ?? env.WEFT_STATE_DIR ?? defaultStateDir(),
    flags.stateDir === undefined && env.WEFT_STATE_DIR !== undefined ? 'WEFT_STATE_DIR' : '--state-dir',
  );
  const apiSocket = flags.apiSocket ?? env.WEFT_API_SOCKET ?? defaultApiSocket();
  if (!path.isAbsolute(apiSocket) || Buffer.byteLength(apiSocket) > 107) {
    throw new ConfigError(`invalid --api-socket "${apiSocket}": want an absolute path of at most 107 bytes`);
  }
  const dockerSocket = parseDockerSocket(flags.dockerSocket ?? env.WEFT_DOCKER_SOCKET, env.DOCKER_HOST);
  const dockerPlugin = parseDockerPlugin(flags.dockerPlugin === true, flags.dockerPluginSocket, dockerSocket);
  const cfg: LaunchConfig = {
    peers: peers.map(parsePeerAddress),
    name,
    nickname,
    port: flags.port === undefined ? CONTROL_PORT : parsePort(flags.port, '--port'),
    encap,
    vxlanPort: flags.vxlanPort === undefined ? VXLAN_PORT : parsePort(flags.vxlanPort, '--vxlan-port'),
    vni: flags.vni === undefined ? VXLAN_VNI_DEFAULT : parseIntIn(flags.vni, '--vni', 1, VXLAN_VNI_MAX),
    ipallocRange,
    ipallocRangeGiven: flags.ipallocRange !== undefined,
    ipallocInit,
    containerGraceMs:
      flags.containerGrace === undefined
        ? CONTAINER_GRACE_MS
        : parseIntIn(flags.containerGrace, '--container-grace', 0, 86_400_000),
    dnsDomain,
    noDns: flags.dns === false,
    dnsUpstream: parseUpstreams(flags.dnsUpstream ?? env.WEFT_DNS_UPSTREAM),
    vxlanPeers: parseVxlanPeers(flags.vxlanPeer),
    dnsTtl: flags.dnsTtl === undefined ? DNS_TTL_S : parseIntIn(flags.dnsTtl, '--dns-ttl', 0, 86_400),
    dnsPort: flags.dnsPort === undefined ? DNS_PORT : parsePort(flags.dnsPort, '--dns-port'),
    httpAddr,
    httpLoopback: isLoopbackHost(httpAddr.host),
    apiSocket,
    dockerSocket,
    dockerPlugin,
    apiTokenFile: path.join(stateDir, API_TOKEN_FILE_NAME),
    stateDir,
    mtu,
    password,
    trustedSubnets: parseTrustedSubnets(flags.trustedSubnets ?? env.WEFT_TRUSTED_SUBNETS, password !== undefined),
    masquerade: flags.masquerade === true || env.WEFT_MASQUERADE === '1',
    noDiscovery: flags.discovery === false,
    foreground: flags.foreground === true,
    logLevel: logLevel as LogLevel,
    device,
    datapath,
    connLimit:
      flags.connLimit === undefined ? CONN_LIMIT_DEFAULT : parseIntIn(flags.connLimit, '--conn-limit', 1, 10_000),
    offload: flags.offload !== false && env.WEFT_NO_OFFLOAD !== '1',
    discoveryDegree:
      flags.discoveryDegree === undefined
        ? DISCOVERY_DEGREE
        : parseIntIn(flags.discoveryDegree, '--discovery-degree', 1, 10_000),
    peerTimeoutMs:
      flags.peerTimeout === undefined
        ? PEER_DOWN_TIMEOUT_MS
        : parseIntIn(flags.peerTimeout, '--peer-timeout', 1_000, 600_000),
    rekeyAfterTimeMs:
      env.WEFT_REKEY_AFTER_MS === undefined
        ? undefined
        : parseIntIn(env.WEFT_REKEY_AFTER_MS, 'WEFT_REKEY_AFTER_MS', 1_000, REKEY_AFTER_TIME_MS),
  };
  if (cfg.encap === 'auto' && cfg.password !== undefined && cfg.vxlanPeers.length > 0) {
    // Under auto the kernel's weft-vx meets bare vxlan hosts; with a password there is no weft-vx.
    throw new ConfigError(
      '--vxlan-peer with a password needs --encap vxlan: with --encap auto and a password the kernel fast path is off (encrypted sleeve), and a bare vxlan host can only be met unencrypted',
    );
  }
  if (cfg.encap === 'fastdp' && cfg.password !== undefined) {
    throw new ConfigError(
      '--encap fastdp cannot encrypt: with a password use --encap auto or sleeve (encrypted sleeve)',
    );
  }
  if (cfg.port === cfg.vxlanPort && cfg.encap !== 'sleeve') {
    throw new ConfigError(`--vxlan-port ${cfg.vxlanPort} must differ from --port (sleeve uses UDP ${cfg.port})`);
  }
  return Object.freeze(cfg);
}

/** DOCKER_SOCKET_DEFAULT is where the Docker engine listens unless DOCKER_HOST or --docker-socket say otherwise. */
export const DOCKER_SOCKET_DEFAULT = '/var/run/docker.sock';

/**
 * parseDockerSocket picks the Docker engine's socket: `--docker-socket` (or WEFT_DOCKER_SOCKET; `none`
 * turns the integration off), else a `unix://` DOCKER_HOST, else /var/run/docker.sock. A TCP
 * DOCKER_HOST is not followed (the engine's pids mean nothing on another host).
 */
export function parseDockerSocket(given: string | undefined, dockerHost: string | undefined): string | undefined {
  if (given === 'none') return undefined;
  const socket = given ?? (dockerHost?.startsWith('unix://') ? dockerHost.slice('unix://'.length) : undefined);
  if (socket === undefined) return DOCKER_SOCKET_DEFAULT;
  if (!path.isAbsolute(socket) || Buffer.byteLength(socket) > 107) {
    throw new ConfigError(`invalid --docker-socket "${socket}": want an absolute path of at most 107 bytes, or none`);
  }
  return socket;
}

/**
 * parseTrustedSubnets validates `--trusted-subnets CIDR,...` (canonical prefixes: no host bits).
 * Only a password gives it a meaning, so without one it is refused rather than ignored.
 */
function parseTrustedSubnets(text: string | undefined, password: boolean): Cidr[] {
  if (text === undefined || text.trim() === '') return [];
  if (!password)
    throw new ConfigError(
      '--trusted-subnets needs a password (--password-file or WEFT_PASSWORD): without one nothing is encrypted',
    );
  return text.split(',').map((part) => {
    const t = part.trim();
    let c: Cidr;
    try {
      c = parseCidr(t);
    } catch (err) {
      throw new ConfigError(`invalid --trusted-subnets "${t}": ${(err as Error).message}`, { cause: err });
    }
    const network = cidrNetwork(c);
    if (network !== c.addr)
      throw new ConfigError(
        `invalid --trusted-subnets "${t}": host bits set (want ${formatCidr({ addr: network, prefix: c.prefix })})`,
      );
    return c;
  });
}

/**
 * parseDockerPlugin gives the network plugin's socket: off unless `--docker-plugin`; then
 * `--docker-plugin-socket` or /run/docker/plugins/weft.sock. It needs the engine's API (container
 * names for the DNS), so not with `--docker-socket none`.
 */
export function parseDockerPlugin(
  on: boolean,
  socket: string | undefined,
  dockerSocket: string | undefined,
): string | undefined {
  if (!on) {
    if (socket !== undefined) throw new ConfigError('--docker-plugin-socket needs --docker-plugin');
    return undefined;
  }
  if (dockerSocket === undefined) {
    throw new ConfigError('--docker-plugin needs the Docker engine (it was turned off with --docker-socket none)');
  }
  const file = socket ?? DOCKER_PLUGIN_SOCKET;
  if (!path.isAbsolute(file) || Buffer.byteLength(file) > 107 || !file.endsWith('.sock')) {
    throw new ConfigError(
      `invalid --docker-plugin-socket "${file}": want an absolute path of at most 107 bytes ending in .sock (the plugin is named after the file)`,
    );
  }
  return file;
}

/** DOCKER_PLUGIN_SOCKET is where dockerd discovers the plugin `weft` (its name is the file's). */
export const DOCKER_PLUGIN_SOCKET = '/run/docker/plugins/weft.sock';

/**
 * parseVxlanPeers validates `--vxlan-peer IP,...`: unicast IPv4 underlay addresses of bare kernel
 * vxlan devices (not 0.0.0.0/8, loopback, multicast or reserved), each once.
 */
function parseVxlanPeers(text: string | undefined): string[] {
  if (text === undefined || text.trim() === '') return [];
  const out: string[] = [];
  for (const s of text.split(',')) {
    const t = s.trim();
    if (!isIPv4(t)) {
      throw new ConfigError(`invalid --vxlan-peer "${t}": want IPv4 addresses, comma-separated`);
    }
    const first = Number(t.split('.')[0]);
    if (first === 0 || first === 127 || first >= 224) {
      throw new ConfigError(`invalid --vxlan-peer "${t}": want a unicast underlay address of a vxlan host`);
    }
    if (!out.includes(t)) out.push(t);
  }
  return out;
}

/** parseUpstreams validates `--dns-upstream ip[:port],...`. */
function parseUpstreams(text: string | undefined): string[] | undefined {
  if (text === undefined) return undefined;
  const list = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  for (const s of list) {
    const hp = parseHostPort(s, '--dns-upstream', DNS_PORT);
    if (!isIPv4(hp.host)) {
      throw new ConfigError(`invalid --dns-upstream "${s}": want IPv4 addresses with optional :port, comma-separated`);
    }
  }
  return list;
}

/** ClientTarget says how the CLI reaches a router: its socket first (when set), else TCP with the token. */
export interface ClientTarget {
  addr: HostPort;
  /** socketPath is tried first; absent when the user named a TCP address only. */
  socketPath?: string;
  /** tokenFile is read (when readable) for the bearer token sent over TCP. */
  tokenFile: string;
}

/** ClientFlags are the CLI's global flags that say where the router is. */
export interface ClientFlags {
  httpAddr?: string;
  apiSocket?: string;
  apiTokenFile?: string;
}

/**
 * clientTarget returns where the CLI finds the router of this namespace (flags, environment,
 * defaults): by default its unix socket, then 127.0.0.1:6784 with the token from the state
 * directory. A TCP address given (`--http-addr`, WEFT_HTTP_ADDR) is used alone, unless a socket is
 * given too.
 */
export function clientTarget(flags: ClientFlags, env: NodeJS.ProcessEnv = process.env): ClientTarget {
  const given = flags.httpAddr ?? env.WEFT_HTTP_ADDR;
  const addr = loopbackFor(parseHostPort(given ?? HTTP_ADDR, '--http-addr'));
  const socket = flags.apiSocket ?? env.WEFT_API_SOCKET ?? (given === undefined ? defaultApiSocket() : undefined);
  const tokenFile =
    flags.apiTokenFile ??
    env.WEFT_API_TOKEN_FILE ??
    path.join(env.WEFT_STATE_DIR ?? defaultStateDir(), API_TOKEN_FILE_NAME);
  return socket === undefined ? { addr, tokenFile } : { addr, socketPath: socket, tokenFile };
}

/** loopbackFor turns a wildcard listen address (0.0.0.0) into one a client on this host can dial. */
export function loopbackFor(addr: HostPort): HostPort {
  return addr.host === '0.0.0.0' ? { host: '127.0.0.1', port: addr.port } : addr;
}
