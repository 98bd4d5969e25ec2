#!/usr/bin/env node
/**
 * cli is the `weft` command: every subcommand's flags, help text and examples (commander), how
 * each reaches its router over the API (socket or loopback TCP), the exit codes, and `launch`
 * running the router in the background or in the foreground.
 *
 * Over 400 lines because it is the whole user interface in one table: the help text of every
 * command shows the defaults it imports, and the commands share one client, one error-to-exit-code
 * mapping and one output style, which a reader checks together.
 */
import { execFile, spawn } from 'node:child_process';
import { closeSync, linkSync, openSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname, networkInterfaces } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Argument, Command, CommanderError, Option } from 'commander';
import { errorMessage, InputError, isWeftError, WeftError, type WeftErrorCode } from '../common/errors.js';
import { parseCidr } from '../common/types.js';
// Direct import (not dns/index.js): defaults.ts imports nothing, so the CLI starts without the DNS server.
import { DNS_PORT, DNS_TTL_S } from '../dns/defaults.js';
import {
  CONN_LIMIT_DEFAULT,
  CONTAINER_GRACE_MS,
  CONTROL_PORT,
  DISCOVERY_DEGREE,
  DNS_DOMAIN,
  ENCAP_OVERHEAD_MAX,
  HTTP_ADDR,
  IPALLOC_RANGE,
  PEER_DOWN_TIMEOUT_MS,
  TUN_DEVICE_NAME,
  UNDERLAY_MTU_DEFAULT,
  VXLAN_PORT,
  VXLAN_VNI_DEFAULT,
} from '../router/constants.js';
import { ALLOCATING_TIMEOUT_MS, ApiClient } from './client.js';
import {
  buildLaunchConfig,
  type ClientFlags,
  clientTarget,
  DOCKER_PLUGIN_SOCKET,
  DOCKER_SOCKET_DEFAULT,
  type LaunchConfig,
  type LaunchFlags,
  loopbackFor,
  parsePeerAddress,
  prepareStateDir,
} from './config.js';
import type { ApiStatus } from './format.js';
import { netnsIdentity, STATE_ROOT } from './state-dir.js';
import { uiLines } from './ui-url.js';
import { VERSION } from './version.js';

/**
 * EXIT maps failures to exit statuses: 1 error, 2 usage, 3 no router running, 4 the router went
 * away while working on a change (outcome unknown).
 */
const EXIT = { error: 1, usage: 2, notRunning: 3, interrupted: 4 } as const;

/** waitStopped waits until the router no longer answers (up to 15 s). */
async function waitStopped(api: ApiClient): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if ((await statusIfRunning(api).catch(() => undefined)) === undefined) return;
    await sleep(100);
  }
  throw new WeftError('EWEFT_SYSTEM', 'router did not stop within 15 s');
}

function exitCodeFor(code: WeftErrorCode): number {
  if (code === 'EWEFT_NOT_RUNNING') return EXIT.notRunning;
  if (code === 'EWEFT_INTERRUPTED') return EXIT.interrupted;
  if (code === 'EWEFT_INPUT' || code === 'EWEFT_CONFIG') return EXIT.usage;
  return EXIT.error;
}

const LAUNCH_READY_TIMEOUT_MS = 30_000;
/**
 * LAUNCH_WAIT_MS bounds how long a launch waits for a concurrent one (the holder of the launch
 * lock) to bring the router up: the holder's own wait, plus a margin for its start.
 */
const LAUNCH_WAIT_MS = LAUNCH_READY_TIMEOUT_MS + 10_000;
/** LAUNCH_LOCK_FILE is the file in the state directory a launch holds while it starts the router. */
export const LAUNCH_LOCK_FILE = 'launch.lock';
/** LAUNCH_LOCK_STALE_MS: a lock older than this is stale even if its pid lives (the pid was reused). */
export const LAUNCH_LOCK_STALE_MS = LAUNCH_WAIT_MS + 10_000;

/** client is the API client of a command; `timeoutMs` for requests that may wait on the router (allocations). */
function client(cmd: Command, timeoutMs?: number): ApiClient {
  const t = clientTarget(cmd.optsWithGlobals() as ClientFlags);
  return new ApiClient(t.addr, timeoutMs, t);
}

function out(text: string): void {
  process.stdout.write(text.endsWith('\n') || text === '' ? text : `${text}\n`);
}

/** buildProgram defines every subcommand; exported for tests of argument handling. */
export function buildProgram(): Command {
  const program = new Command('weft')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
    .description('Weft: a mesh overlay network for containers (a Weave Net-style router).')
    .version(VERSION, '-v, --version')
    .option(
      '--http-addr <host:port>',
      `HTTP API over TCP: for launch where it listens (default ${HTTP_ADDR}), for other commands the router to talk to instead of the socket (env WEFT_HTTP_ADDR)`,
      undefined,
    )
    .option(
      '--api-socket <path>',
      'unix socket of the API (default per network namespace: /run/weft/weft.sock, /run/weft/netns/NAME/weft.sock; env WEFT_API_SOCKET)',
    )
    .option(
      '--api-token-file <file>',
      'bearer token for the API over TCP (default <state-dir>/api-token; env WEFT_API_TOKEN_FILE)',
    )
    .showHelpAfterError('(run `weft --help` for usage)')
    .addHelpText(
      'after',
      `
Every command talks to the router of the network namespace it runs in, over its API's unix socket
(/run/weft/weft.sock, in a named namespace /run/weft/netns/NAME/weft.sock; root or group weft), so
\`ip netns exec h1 weft status\` addresses the router of h1. Without access to the socket it uses
TCP 127.0.0.1:6784: reads work for anyone on the host, changes need the bearer token in
<state-dir>/api-token (root only).

Examples:
  weft launch 192.168.1.2            start this host's router and connect it to a peer
  weft attach c1 --name db           plug network namespace c1 in as db.weft.local; prints its address
  ip netns exec c1 getent hosts web  containers resolve each other through their router's DNS
  weft expose                        give this host an address on the overlay
  weft status ipam                   who owns which share of the address range
  weft status                        what the router knows now (--json for machines)
  weft ui                            the URL of the router's web page of the mesh
  weft demo                          build hosts from network namespaces and show the mesh`,
    );

  program
    .command('launch')
    .description("start this host's router in the background, wait until it is ready, print its peer name (idempotent)")
    .argument('[peers...]', 'peers to connect to, as host[:port]')
    .option('--name <mac>', 'peer name (default: persisted, else random)')
    .option('--nickname <name>', 'human name shown in status (default: netns name or hostname)')
    .option('--port <port>', `TCP control port and UDP sleeve port (default ${CONTROL_PORT})`)
    .addOption(
      new Option(
        '--encap <encap>',
        'data path: auto (default: kernel fast path per peer, else sleeve), fastdp, sleeve, vxlan (userspace, when both prefer it)',
      ).choices(['auto', 'fastdp', 'sleeve', 'vxlan']),
    )
    .option('--vxlan-port <port>', `UDP port for VXLAN (default ${VXLAN_PORT}; must match a kernel vxlan dstport)`)
    .option('--vni <n>', `VXLAN network identifier (default ${VXLAN_VNI_DEFAULT})`)
    .option(
      '--ipalloc-range <cidr>',
      `overlay address range, shared out among peers by IPAM (default ${IPALLOC_RANGE}; refused if it overlaps a host route, unless given)`,
    )
    .option(
      '--ipalloc-init <how>',
      'how the address ring starts: auto (a router launched without peers seeds it alone on first use; with peers it waits for theirs), observer, or seed=NAME,... (every router given the same list)',
    )
    .option(
      '--container-grace <ms>',
      `a container gone without \`weft detach\` keeps its address this long before it is freed (default ${CONTAINER_GRACE_MS})`,
    )
    .option(
      '--docker-socket <path>',
      `Docker engine API socket for \`weft attach CONTAINER\` and its events, or none (default: DOCKER_HOST if unix://, else ${DOCKER_SOCKET_DEFAULT}; env WEFT_DOCKER_SOCKET)`,
    )
    .option(
      '--docker-plugin',
      'serve the Docker network plugin (driver and IPAM `weft`): `docker network create -d weft --ipam-driver weft --subnet RANGE NET`, then `docker run --network NET`; needs the engine (--docker-socket). Off by default',
    )
    .option(
      '--docker-plugin-socket <path>',
      `the plugin's socket, which dockerd finds by its name (default ${DOCKER_PLUGIN_SOCKET}: the plugin \`weft\`)`,
    )
    .option('--dns-domain <domain>', `DNS domain the embedded DNS answers for (default ${DNS_DOMAIN})`)
    .option('--no-dns', 'do not run the embedded DNS server')
    .option(
      '--dns-upstream <ip[:port],...>',
      "resolvers for names outside the domain (default: the host's /etc/resolv.conf; env WEFT_DNS_UPSTREAM)",
    )
    .option(
      '--vxlan-peer <ip,...>',
      'underlay addresses of kernel vxlan devices (hosts without Weft, Weft VNI and port): with auto/fastdp the kernel weft-vx floods to them and routes our share to them, with vxlan/sleeve the router accepts their VXLAN (any other non-peer is dropped); not with a password under auto',
    )
    .option('--dns-ttl <seconds>', `TTL of answers for the domain (default ${DNS_TTL_S})`)
    .option('--dns-port <port>', `DNS port on the host's overlay address (default ${DNS_PORT})`)
    .option(
      '--state-dir <dir>',
      `state directory (default per network namespace under ${STATE_ROOT}; env WEFT_STATE_DIR)`,
    )
    .option(
      '--mtu <bytes>',
      `overlay MTU given to containers (default: underlay MTU minus ${ENCAP_OVERHEAD_MAX}, which fits sleeve, VXLAN and encryption: ${UNDERLAY_MTU_DEFAULT - ENCAP_OVERHEAD_MAX} on ${UNDERLAY_MTU_DEFAULT}; env WEFT_MTU). Packets too big for the path to a peer get ICMP "fragmentation needed"`,
    )
    .option('--password-file <file>', 'peers must share this password (env WEFT_PASSWORD)')
    .option(
      '--trusted-subnets <cidrs>',
      'with a password: data to peers whose underlay address is in these prefixes, and who trust ours, stays unencrypted; control is always encrypted (env WEFT_TRUSTED_SUBNETS)',
    )
    .option(
      '--masquerade',
      "containers reach addresses outside the overlay range behind this host's address (nftables table ip weft; container to container is never NATed; env WEFT_MASQUERADE=1)",
    )
    .option('--no-discovery', 'only connect to the peers given, not to peers they know')
    .option(
      '--discovery-degree <n>',
      `discovery dials peers until this many connections; beyond, relays (default ${DISCOVERY_DEGREE})`,
    )
    .option(
      '--peer-timeout <ms>',
      `a data path silent this long either way is declared down and routed around (default ${PEER_DOWN_TIMEOUT_MS})`,
    )
    .option('--device <name>', `TUN device name (default ${TUN_DEVICE_NAME})`)
    .addOption(
      new Option('--datapath <kind>', 'socket layer: native batched I/O or portable Node dgram').choices([
        'native',
        'dgram',
      ]),
    )
    .option('--conn-limit <n>', `maximum control connections (default ${CONN_LIMIT_DEFAULT})`)
    .option('--no-offload', 'do not take TCP super-packets from the kernel (TSO); slower, for debugging')
    .addOption(new Option('--log-level <level>', 'log level').choices(['debug', 'info', 'warn', 'error']))
    .option('--foreground', 'run the router in this process (for containers and supervisors)')
    .action(async (peers: string[], flags: LaunchFlags & { httpAddr?: string }, cmd: Command) => {
      const globals = cmd.optsWithGlobals() as ClientFlags;
      const cfg = buildLaunchConfig(peers, { ...flags, httpAddr: globals.httpAddr, apiSocket: globals.apiSocket });
      if (!cfg.httpLoopback) process.stderr.write(`${beyondLoopbackNote(cfg)}\n`);
      // The router's API and the CLI meet on 127.0.0.1: this namespace is the router's own, so lo must be up.
      await ensureLoopbackUp();
      if (cfg.foreground) {
        prepareStateDir(cfg.stateDir);
        // Loaded only here: the router and its native addon would slow every other command's start.
        const { runForeground } = await import('./daemon.js');
        await runForeground(cfg);
        return;
      }
      const api = new ApiClient(loopbackFor(cfg.httpAddr), 3_000, {
        socketPath: cfg.apiSocket,
        tokenFile: cfg.apiTokenFile,
      });
      out(await launchOnce(cfg, api));
    });

  program
    .command('stop')
    .description('stop the router (exposed addresses and targets are kept for the next launch)')
    .action(async (_opts: unknown, cmd: Command) => {
      const api = client(cmd);
      try {
        await api.ok('POST', '/stop');
      } catch (err) {
        if (isWeftError(err) && err.code === 'EWEFT_NOT_RUNNING') {
          process.stderr.write('weft: no router is running in this network namespace\n');
          return;
        }
        // a router that exits before its answer is written has done what was asked
        if (!(isWeftError(err) && err.code === 'EWEFT_INTERRUPTED')) throw err;
      }
      await waitStopped(api);
    });

  program
    .command('status')
    .description('what the router knows now')
    .addArgument(
      new Argument('[what]', 'one part of the status').choices(['peers', 'connections', 'targets', 'ipam', 'dns']),
    )
    .option('--json', 'JSON output')
    .action(async (what: string | undefined, opts: { json?: boolean }, cmd: Command) => {
      const r = await client(cmd).ok('GET', what === undefined ? '/status' : `/status/${what}`, { json: opts.json });
      out(r.body);
    });

  program
    .command('ui')
    .description("print the URL of the router's web page: the mesh, the address range, containers and names, live")
    .addHelpText(
      'after',
      `
The router serves one page at GET /ui on its HTTP API (127.0.0.1:6784 unless launched with
--http-addr): the peers and their connections as a graph (state, data path, RTT, relays), each
peer's share of the address range, counters with the last minute as sparklines, and this host's
containers and the cluster's DNS names, searchable. It reads the same status API as \`weft status\`
once a second and reconnects by itself when the router restarts. It loads nothing from elsewhere.
On loopback it needs no token (as \`weft status\` over TCP); beyond loopback the page asks for the
bearer token and sends it with every read. Prints the URL, then how to reach it from another
machine (an SSH tunnel) or from outside the router's network namespace.`,
    )
    .action(async (_opts: unknown, cmd: Command) => {
      const t = clientTarget(cmd.optsWithGlobals() as ClientFlags);
      const r = await client(cmd).ok('GET', '/status', { json: true });
      const id = netnsIdentity();
      const api = (r.json as { api?: ApiStatus }).api;
      out(
        uiLines(api, { hostname: hostname(), netns: id.root ? undefined : id.name, tokenFile: t.tokenFile }).join('\n'),
      );
    });

  program
    .command('report')
    .description("the router's whole state as JSON")
    .action(async (_opts: unknown, cmd: Command) => {
      out((await client(cmd).ok('GET', '/report', { json: true })).body);
    });

  program
    .command('connect')
    .description('add connection targets (persisted)')
    .argument('<peers...>', 'host[:port]')
    .option('--replace', 'forget all existing targets first')
    .action(async (peers: string[], opts: { replace?: boolean }, cmd: Command) => {
      const list = peers.map(parsePeerAddress);
      await client(cmd).ok('POST', '/connect', { body: { peers: list, replace: opts.replace === true } });
    });

  program
    .command('forget')
    .description('remove connection targets (an established connection stays until it drops)')
    .argument('<peers...>', 'host[:port]')
    .action(async (peers: string[], _opts: unknown, cmd: Command) => {
      await client(cmd).ok('POST', '/forget', { body: { peers: peers.map(parsePeerAddress) } });
    });

  program
    .command('expose')
    .description('give this host an address on the overlay, from IPAM or the CIDR given (persisted); prints it')
    .argument('[cidr]', 'address/prefix inside the overlay range, e.g. 10.32.0.1/12')
    .action(async (cidr: string | undefined, _opts: unknown, cmd: Command) => {
      if (cidr !== undefined) parseCidr(cidr);
      const r = await client(cmd, ALLOCATING_TIMEOUT_MS).ok('POST', '/expose', {
        body: cidr === undefined ? {} : { cidr },
        json: true,
      });
      const exposed = (r.json as { exposed: string[] }).exposed;
      const shown = cidr === undefined ? exposed.find((c) => c.includes('/')) : cidr;
      out((shown ?? '').split('/')[0] ?? '');
    });

  program
    .command('hide')
    .description('remove an exposed address (all of them without an argument)')
    .argument('[cidr]', 'address or address/prefix')
    .action(async (cidr: string | undefined, _opts: unknown, cmd: Command) => {
      if (cidr !== undefined) parseCidr(cidr, { bareAs32: true });
      await client(cmd).ok('POST', '/hide', { body: cidr === undefined ? {} : { cidr } });
    });

  program
    .command('attach')
    .description(
      'plug a container (a network namespace name, a pid, or a Docker container) into the overlay; prints its address',
    )
    .argument(
      '<args...>',
      '[CIDR...] TARGET: optional addresses with the overlay prefix (e.g. 10.32.1.5/12; default: one from IPAM), then the container',
    )
    .option('--name <name>', 'DNS name of the container')
    .action(async (args: string[], opts: { name?: string }, cmd: Command) => {
      const target = args[args.length - 1] as string;
      const cidrs = args.slice(0, -1);
      for (const c of cidrs) parseCidr(c);
      const r = await client(cmd, ALLOCATING_TIMEOUT_MS).ok('POST', '/attach', {
        body: { target, cidrs, name: opts.name },
        json: true,
      });
      out(((r.json as { cidrs: string[] }).cidrs ?? []).map((c) => c.split('/')[0]).join(' '));
    });

  program
    .command('detach')
    .description('unplug a container: removes its interface and frees its addresses')
    .argument('<target>', 'network namespace name or pid')
    .action(async (target: string, _opts: unknown, cmd: Command) => {
      await client(cmd).ok('POST', '/detach', { body: { target } });
    });

  program
    .command('ps')
    .description('attached containers with their interface, MAC and addresses')
    .option('--json', 'JSON output')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const r = await client(cmd).ok('GET', '/ps', { json: true });
      if (opts.json) {
        out(r.body);
        return;
      }
      const list = r.json as { target: string; ifname: string; mac?: string; cidrs: string[]; name?: string }[];
      out(list.map((a) => `${a.target} ${a.mac ?? '-'} ${a.cidrs.join(' ')}${a.name ? ` ${a.name}` : ''}`).join('\n'));
    });

  program
    .command('dns-add')
    .description('register a name for addresses in the DNS (not tied to a container), gossiped to every host')
    .argument('<args...>', 'IP... NAME')
    .action(async (args: string[], _opts: unknown, cmd: Command) => {
      if (args.length < 2) throw new InputError('usage: weft dns-add IP... NAME');
      const name = args[args.length - 1] as string;
      await client(cmd).ok('POST', '/name/add', { body: { name, ips: args.slice(0, -1) }, json: true });
    });

  program
    .command('dns-remove')
    .description('remove names added with dns-add: all addresses of NAME, or only those given')
    .argument('<args...>', '[IP...] NAME')
    .action(async (args: string[], _opts: unknown, cmd: Command) => {
      const name = args[args.length - 1] as string;
      await client(cmd).ok('POST', '/name/remove', { body: { name, ips: args.slice(0, -1) }, json: true });
    });

  program
    .command('dns-lookup')
    .description("ask this host's Weft DNS server for a name's addresses (a real DNS query)")
    .argument('<name>', 'a name, e.g. db (the domain is added) or db.weft.local')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      const st = (await client(cmd).ok('GET', '/status/dns', { json: true })).json as {
        domain: string;
        listening?: string;
      };
      if (st.listening === undefined) {
        throw new WeftError('EWEFT_NOT_READY', 'the DNS server is not listening: this host has no overlay address yet');
      }
      const fq = name.includes('.') ? name : `${name}.${st.domain}`;
      const { lookupA } = await import('./dns-client.js');
      const addrs = await lookupA(st.listening, fq);
      if (addrs.length === 0) throw new WeftError('EWEFT_NOT_FOUND', `${fq}: no such name`);
      out(addrs.join('\n'));
    });

  program
    .command('rmpeer')
    .description('take over the address space of a peer that is gone for good (run on one host only)')
    .argument('<peer>', 'peer name or nickname')
    .action(async (peer: string, _opts: unknown, cmd: Command) => {
      const r = await client(cmd).ok('POST', '/rmpeer', { body: { peer }, json: true });
      const j = r.json as { peer: string; addresses: number };
      out(`${j.addresses} IPs taken over from ${j.peer}`);
    });

  program
    .command('reset')
    .description(
      'leave the network for good: detach containers, hand address space to a reachable peer, remove state, stop',
    )
    .action(async (_opts: unknown, cmd: Command) => {
      const r = await client(cmd).ok('POST', '/reset', { json: true });
      const j = r.json as { heir?: string; addresses: number };
      if (j.heir !== undefined) out(`${j.addresses} IPs handed to ${j.heir}`);
      else if (j.addresses > 0) {
        process.stderr.write(
          `no reachable peer to hand ${j.addresses} IPs to: run \`weft rmpeer\` for this peer on another host\n`,
        );
      }
      await waitStopped(client(cmd));
    });

  program
    .command('demo')
    .description('build hosts from network namespaces on this machine, launch a router in each, show the mesh working')
    .option('--hosts <n>', 'how many hosts (2-9), each with 2 containers', '3')
    .addOption(new Option('--encap <encap>', 'encapsulation').choices(['sleeve', 'vxlan']).default('sleeve'))
    .option('--keep', 'leave the hosts running; remove them later with `weft demo --down`')
    .option('--down', 'remove the hosts a previous `weft demo --keep` left running')
    .addOption(new Option('--prefix <name>', 'name prefix of the namespaces').default('weftdemo').hideHelp())
    .action(
      async (opts: { hosts: string; encap: 'sleeve' | 'vxlan'; keep?: boolean; down?: boolean; prefix: string }) => {
        if (!/^[a-z][a-z0-9]{0,11}$/.test(opts.prefix)) throw new InputError(`invalid --prefix "${opts.prefix}"`);
        const hosts = Number(opts.hosts);
        if (!Number.isInteger(hosts) || hosts < 2 || hosts > 9)
          throw new InputError(`invalid --hosts "${opts.hosts}": want 2-9`);
        const { runDemo } = await import('./demo.js');
        await runDemo({
          hosts,
          encap: opts.encap,
          keep: opts.keep === true,
          down: opts.down === true,
          cli: cliPath(),
          prefix: opts.prefix,
        });
      },
    );

  return program;
}

/** beyondLoopbackNote is the line launch prints when the HTTP API listens beyond loopback. */
function beyondLoopbackNote(cfg: LaunchConfig): string {
  return (
    `warning: the HTTP API listens on ${cfg.httpAddr.host}:${cfg.httpAddr.port}, not a loopback address: ` +
    `every request there, reads too, needs "Authorization: Bearer TOKEN" with the token in ${cfg.apiTokenFile}; ` +
    `the CLI on this host uses ${cfg.apiSocket}`
  );
}

/** cliPath is the path of this script, so the launcher can re-run it in the foreground. */
function cliPath(): string {
  return fileURLToPath(import.meta.url);
}

/**
 * BUNDLE_FILE is the one-file build of this CLI with the router (dist/weft.mjs, made by `npm run
 * build`). A background router runs from it: one module to load instead of ~200 is ~15 MB less
 * resident memory on every host (bench/idle.ts).
 */
export const BUNDLE_FILE = 'weft.mjs';

/**
 * daemonScript is what a background router runs: this script when it is the bundle, else the
 * bundle beside dist/ when it is at least as new as this script (a `tsc` alone since the last
 * full build would leave it stale), else this script.
 */
function daemonScript(): string {
  const self = cliPath();
  if (path.basename(self) === BUNDLE_FILE) return self;
  const bundle = path.join(path.dirname(self), '..', BUNDLE_FILE);
  try {
    return statSync(bundle).mtimeMs >= statSync(self).mtimeMs ? bundle : self;
  } catch {
    return self;
  }
}

async function statusIfRunning(api: ApiClient): Promise<{ name: string } | undefined> {
  try {
    const r = await api.call('GET', '/status', { json: true });
    if (r.status === 200) return r.json as { name: string };
    return r.status === 503 ? { name: '' } : undefined;
  } catch (err) {
    if (isWeftError(err) && err.code === 'EWEFT_NOT_RUNNING') return undefined;
    throw err;
  }
}

/**
 * ensureLoopbackUp brings the loopback interface of this network namespace up when it is down:
 * the CLI reaches the router's API on 127.0.0.1 and the router listens there, and a namespace
 * made with `ip netns add` starts with lo down. (libuv lists only interfaces that are up and
 * running, so `lo` missing from networkInterfaces() means it is down.) Throws a one-line
 * WeftError when it cannot.
 */
export async function ensureLoopbackUp(
  isUp: () => boolean = () => networkInterfaces().lo !== undefined,
  setUp: () => Promise<void> = () =>
    new Promise((resolve, reject) =>
      execFile('ip', ['link', 'set', 'lo', 'up'], (err, _stdout, stderr) =>
        err === null ? resolve() : reject(new Error(stderr.trim() || err.message)),
      ),
    ),
): Promise<void> {
  if (isUp()) return;
  try {
    await setUp();
  } catch (err) {
    throw new WeftError(
      'EWEFT_SYSTEM',
      `the loopback interface lo is down in this network namespace and cannot be brought up (${errorMessage(err)}): run \`ip link set lo up\` as root`,
      { cause: err },
    );
  }
  process.stderr.write('weft: the loopback interface lo was down in this network namespace: brought it up\n');
}

/**
 * launchOnce starts this namespace's router unless one runs, and returns its peer name; concurrent
 * launches agree on one router. Whoever holds `<stateDir>/launch.lock` starts it; the others wait
 * until it answers ready (or the lock goes away, and then try again themselves). A launch that
 * finds the router running, or waited for it, asks it to connect to the peers given.
 */
async function launchOnce(cfg: LaunchConfig, api: ApiClient): Promise<string> {
  const running = await readyName(api);
  if (running !== undefined) return connected(api, cfg, running);
  prepareStateDir(cfg.stateDir);
  const deadline = Date.now() + LAUNCH_WAIT_MS;
  for (;;) {
    const lock = takeLaunchLock(cfg.stateDir);
    if (typeof lock !== 'number') {
      try {
        // The holder before us may have just finished, or a router started by other means.
        if ((await statusIfRunning(api)) !== undefined) return connected(api, cfg, await waitReady(api, deadline));
        return await launchBackground(cfg.stateDir, api);
      } finally {
        lock.release();
      }
    }
    const name = await readyName(api).catch(() => undefined); // it may be busy starting: ask again
    if (name !== undefined) return connected(api, cfg, name);
    if (Date.now() > deadline) {
      throw new WeftError(
        'EWEFT_SYSTEM',
        `another weft launch (pid ${lock}) has been starting the router for over ${LAUNCH_WAIT_MS / 1000} s; if it is stuck, stop it or remove ${path.join(cfg.stateDir, LAUNCH_LOCK_FILE)}`,
      );
    }
    await sleep(100);
  }
}

/** connected asks a router already running to connect to the peers this launch names, and returns its name. */
async function connected(api: ApiClient, cfg: LaunchConfig, name: string): Promise<string> {
  if (cfg.peers.length > 0) await api.ok('POST', '/connect', { body: { peers: cfg.peers } });
  return name;
}

/** readyName is the peer name of the router when it answers ready, else undefined (none, or starting). */
async function readyName(api: ApiClient): Promise<string | undefined> {
  const s = await statusIfRunning(api);
  return s === undefined || s.name === '' ? undefined : s.name;
}

/** waitReady waits until a router that answers (maybe still starting) is ready; returns its name. */
async function waitReady(api: ApiClient, deadline: number): Promise<string> {
  for (;;) {
    const s = await statusIfRunning(api).catch(() => undefined);
    if (s !== undefined && s.name !== '') return s.name;
    if (Date.now() > deadline) throw new WeftError('EWEFT_SYSTEM', 'the router did not become ready');
    await sleep(100);
  }
}

/** LaunchLock is a held launch lock; `release` removes it if it is still ours. */
export interface LaunchLock {
  readonly file: string;
  release(): void;
}

/**
 * takeLaunchLock takes `<dir>/launch.lock` for this process, or returns the pid of the live
 * process that holds it. The lock is made whole or not at all: the pid is written to a file of
 * our own, which is then hard-linked to the lock's name (link fails if the name exists). A lock
 * whose pid is gone, that holds no pid, or that is older than LAUNCH_LOCK_STALE_MS (the pid was
 * reused) is stale: it is removed, checking first that it is still the file we judged, and taken.
 */
export function takeLaunchLock(
  dir: string,
  pid: number = process.pid,
  now: () => number = Date.now,
): LaunchLock | number {
  const file = path.join(dir, LAUNCH_LOCK_FILE);
  const mine = `${file}.${pid}`;
  writeFileSync(mine, `${pid}\n`, { mode: 0o600 });
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        linkSync(mine, file);
        return { file, release: () => releaseLaunchLock(file, pid) };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      let ino: number;
      let age: number;
      let holder: number;
      try {
        const st = statSync(file);
        ino = st.ino;
        age = now() - st.mtimeMs;
        holder = Number(readFileSync(file, 'utf8').trim());
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // released meanwhile: try again
        throw err;
      }
      if (
        Number.isInteger(holder) &&
        holder > 0 &&
        holder !== pid &&
        processAlive(holder) &&
        age < LAUNCH_LOCK_STALE_MS
      ) {
        return holder;
      }
      try {
        if (statSync(file).ino === ino) rmSync(file, { force: true });
      } catch {
        // gone already: try again
      }
    }
    throw new WeftError('EWEFT_SYSTEM', `cannot take the launch lock ${file}: it keeps changing`);
  } finally {
    rmSync(mine, { force: true });
  }
}

/** releaseLaunchLock removes the lock if it still names `pid` (a waiter may have judged it stale and taken it). */
function releaseLaunchLock(file: string, pid: number): void {
  try {
    if (Number(readFileSync(file, 'utf8').trim()) === pid) rmSync(file, { force: true });
  } catch {
    // gone already
  }
}

/** processAlive says whether a process with this pid exists (EPERM: it exists, owned by another user). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * DAEMON_NODE_ARGS are the Node options of a router launched in the background: V8's young
 * generation capped at 1 MiB per semi-space from the start, so module loading cannot grow it (the
 * daemon's run-time `--semi-space-growth-factor=1`, DAEMON_V8_FLAGS in daemon.ts, stops later
 * growth but cannot shrink what loading grew). The datapath allocates nothing per packet; the
 * control plane's garbage is small and short-lived. A 20-peer idle router: 88 → 77 MB RSS (bench/idle.ts).
 */
export const DAEMON_NODE_ARGS = ['--max-semi-space-size=1', '--v8-pool-size=1'] as const;
// `--v8-pool-size=1`: one V8 platform worker thread instead of one per core (4 here): fewer thread
// stacks, thread-local allocation buffers and malloc arenas. GC and optimising compilation still run
// off the main thread, on that one. A 20-peer idle router: 78.0 → 73.3 MB RSS, private 32.1 → 27.4 MB
// (bench/idle.ts, #12); the hot path measured the same (bench/hotpath.ts, sleeve 64 B: 1.22 / 1.31
// Mpps without, 1.45 / 1.18 with, interleaved, load 4–6). The container image (Dockerfile) and the
// DaemonSet (k8s/weft.yaml) run their router with the same options and environment.

/**
 * DAEMON_MALLOC_ARENA_MAX is glibc's MALLOC_ARENA_MAX for a background router unless the user set
 * one: two malloc arenas instead of up to 8 per core (V8's helper threads and libuv's pool each
 * grow their own otherwise). The hot path allocates nothing; a 20-peer idle router measured 81.3 →
 * 76.9 MB RSS (1 arena: 75.2; bench/idle.ts).
 */
export const DAEMON_MALLOC_ARENA_MAX = '2';

/**
 * DAEMON_MALLOC_MMAP_THRESHOLD is glibc's MALLOC_MMAP_THRESHOLD_ for a background router unless
 * the user set one: allocations of 64 KiB and more get their own mapping, given back when freed,
 * instead of glibc raising the threshold after the first such free and serving later large blocks
 * from the brk heap, whose holes stay resident. Buffers of the hot path are allocated once. A
 * 20-peer idle router: 78.0 → 75.4 MB RSS, private 32.1 → 29.5 MB (bench/idle.ts, #12).
 */
export const DAEMON_MALLOC_MMAP_THRESHOLD = '65536';

/**
 * launchBackground re-runs this CLI as `launch --foreground` in a detached process logging to
 * `<stateDir>/weft.log`, then waits until the router answers ready. If the process exits
 * first, its last error line becomes ours.
 */
async function launchBackground(stateDir: string, api: ApiClient): Promise<string> {
  // The state directory exists: prepareStateDir made it (never `mkdirSync(..., { recursive })`, see there).
  const logFile = path.join(stateDir, 'weft.log');
  const fd = openSync(logFile, 'a');
  const argv = process.argv.slice(2);
  const child = spawn(process.execPath, [...DAEMON_NODE_ARGS, daemonScript(), ...argv, '--foreground'], {
    detached: true,
    stdio: ['ignore', fd, fd],
    env: {
      MALLOC_ARENA_MAX: DAEMON_MALLOC_ARENA_MAX,
      MALLOC_MMAP_THRESHOLD_: DAEMON_MALLOC_MMAP_THRESHOLD,
      ...process.env,
    },
  });
  closeSync(fd);
  let exited: number | null = null;
  child.on('exit', (code) => {
    exited = code ?? 1;
  });
  child.unref();
  const deadline = Date.now() + LAUNCH_READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (exited !== null)
      throw new WeftError('EWEFT_SYSTEM', lastError(logFile) ?? `router exited with status ${exited}; see ${logFile}`);
    const s = await statusIfRunning(api).catch(() => undefined);
    if (s !== undefined && s.name !== '') return s.name;
    await sleep(100);
  }
  throw new WeftError(
    'EWEFT_SYSTEM',
    `router did not become ready within ${LAUNCH_READY_TIMEOUT_MS / 1000} s; see ${logFile}`,
  );
}

/** lastError finds the last "weft: ..." line the foreground router printed before exiting. */
function lastError(logFile: string): string | undefined {
  try {
    const lines = readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-50).reverse();
    const line = lines.find((l) => l.startsWith('weft: '));
    return line?.slice('weft: '.length);
  } catch {
    return undefined;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** main runs the CLI and maps failures to one line on stderr and an exit status. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help')
        return 0;
      return EXIT.usage;
    }
    if (isWeftError(err)) {
      process.stderr.write(`weft: ${err.message}\n`);
      return exitCodeFor(err.code);
    }
    process.stderr.write(`weft: ${systemErrorText(err)}\n`);
    return EXIT.error;
  }
}

/** UNREACHABLE_CODES are the socket errors that mean the router's address cannot be reached from here at all. */
const UNREACHABLE_CODES = new Set(['ENETUNREACH', 'EHOSTUNREACH', 'EADDRNOTAVAIL']);

/** systemErrorText renders an unexpected error as one line, explaining the ones a user can fix. */
function systemErrorText(err: unknown): string {
  const e = err as NodeJS.ErrnoException & { address?: string; port?: number };
  if (e !== null && typeof e === 'object' && typeof e.code === 'string' && UNREACHABLE_CODES.has(e.code)) {
    const where = e.address === undefined ? 'the router' : `the router at ${e.address}:${e.port ?? ''}`;
    return `cannot reach ${where} (${e.code}): is the loopback interface lo up in this network namespace? (\`ip link set lo up\`)`;
  }
  return errorMessage(err);
}

/**
 * quietOnEpipe makes a closed pipe on stdout end the command quietly (`weft --help | head -1`):
 * the reader has all it wanted, so exit 0 instead of dying with a stack trace. A foreground router
 * (`launch --foreground`) must not stop because a log reader went away: there errors on stdout
 * are ignored. Another write error on stdout is one line on stderr and exit 1; errors on stderr
 * are dropped (there is nowhere left to report them).
 */
export function quietOnEpipe(foreground: boolean, exit: (code: number) => void = (c) => process.exit(c)): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (foreground) return;
    if (err.code === 'EPIPE') exit(0);
    else {
      process.stderr.write(`weft: cannot write the output: ${err.code ?? err.message}\n`);
      exit(EXIT.error);
    }
  });
  process.stderr.on('error', () => {});
}

function isMain(): boolean {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(cliPath());
  } catch {
    return false;
  }
}

const invokedDirectly = isMain();
if (invokedDirectly) {
  quietOnEpipe(process.argv.includes('--foreground'));
  main(process.argv).then((code) => {
    // A foreground router returns only when it has stopped; exit explicitly in every case.
    process.exitCode = code;
    if (code !== 0 || !process.argv.includes('--foreground')) void flushed().then(() => process.exit(code));
  });
}

/**
 * flushed resolves once everything written to stdout and stderr has left the process: a pipe
 * takes 64 KiB at once and Node queues the rest, which `process.exit` would drop (a large
 * `weft status --json | jq` came out cut). A write error (EPIPE) counts as done.
 */
function flushed(): Promise<void> {
  const drained = (s: NodeJS.WriteStream) => new Promise<void>((resolve) => s.write('', () => resolve()));
  return Promise.all([drained(process.stdout), drained(process.stderr)]).then(() => undefined);
}
