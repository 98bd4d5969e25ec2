import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { hostname } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { ConfigError, errorMessage, WeftError } from '../common/errors.js';
import { createLogger, type Logger } from '../common/log.js';
import type { Cidr, PeerName, PeerUid } from '../common/types.js';
import { cidrsOverlap, formatCidr, parseCidr, parseOwnPeerName, randomPeerName } from '../common/types.js';
import { EXPOSE_OWNER, FASTDP_DEVICE, Router } from '../router/index.js';
import { alignedClock } from './aligned-clock.js';
import { Attacher, isContainerIfname } from './attach.js';
import { type LaunchConfig, RUN_ROOT, TARGETS_MAX } from './config.js';
import { DnsService } from './dns.js';
import { DockerClient, DockerIntegration } from './docker.js';
import { DockerPlugin, routerBackend } from './docker-plugin.js';
import { Egress } from './egress.js';
import { API_SOCKET_GROUP, type ApiOptions, createApi, ensureApiToken, listenApiSocket } from './http.js';
import { createMetrics } from './metrics.js';
import { loadIpam, StateFile, saveIpam } from './state.js';
import { netnsIdentity } from './state-dir.js';
import { VERSION } from './version.js';

/**
 * DAEMON_V8_FLAGS are set when a router starts in this process. `--semi-space-growth-factor=1`
 * keeps V8's young generation at its initial size (1 MiB per semi-space) instead of letting it
 * double up to 16 MiB per semi-space: the datapath allocates nothing per packet, and the control
 * plane's short-lived garbage fits a small young generation, while a grown one stays resident
 * (a 20-peer router's heap went from 36 to 20 MB; bench/idle.ts). V8 reads this flag each time it
 * would grow the space, so setting it at run time takes effect (the space the module loading grew
 * before is not given back: `--max-semi-space-size=1` on the daemon's command line would be).
 */
export const DAEMON_V8_FLAGS = ['--semi-space-growth-factor=1'] as const;

/**
 * runForeground runs a router in this process until SIGTERM/SIGINT or POST /stop: it loads the
 * persisted state (peer name, targets, exposed addresses), serves the HTTP API (503 until
 * ready), starts the router, then re-applies targets and exposed addresses. Resolves when stopped.
 */
export async function runForeground(cfg: LaunchConfig, log: Logger = createLogger(cfg.logLevel)): Promise<void> {
  for (const flag of DAEMON_V8_FLAGS) setFlagsFromString(flag);
  const stateFile = new StateFile(cfg.stateDir);
  const state = stateFile.load();
  let name: PeerName;
  if (cfg.name !== undefined) name = cfg.name;
  else if (state.peerName !== undefined) name = persistedName(state.peerName, stateFile.file);
  else name = randomPeerName((n) => randomBytes(n));
  const targets = [...new Set([...state.targets, ...cfg.peers])];
  if (targets.length > TARGETS_MAX) {
    throw new ConfigError(
      `${stateFile.file} keeps ${state.targets.length} connection targets and launch adds ${targets.length - state.targets.length}: more than the limit of ${TARGETS_MAX}; launch without peers, then \`weft forget\` some`,
    );
  }
  const ns = netnsIdentity();
  const nickname = cfg.nickname ?? ns.name ?? hostname();
  // A restarted router must supersede its old self everywhere even if the clock stepped back.
  const incarnation = Math.max(Date.now(), (state.incarnation ?? 0) + 1);
  let uid = 0n;
  while (uid === 0n) uid = randomBytes(8).readBigUInt64BE();
  let resetting = false;

  const router = new Router({
    name,
    nickname,
    uid: uid as PeerUid,
    // Intervals on wall-clock multiples: an idle router wakes once per period, not once per timer.
    clock: alignedClock(),
    port: cfg.port,
    vxlanPort: cfg.vxlanPort,
    vni: cfg.vni,
    vxlanPeers: [...cfg.vxlanPeers],
    encap: cfg.encap,
    mtu: cfg.mtu,
    device: cfg.device,
    ipallocRange: cfg.ipallocRange,
    password: cfg.password,
    trustedSubnets: cfg.trustedSubnets,
    connLimit: cfg.connLimit,
    datapath: cfg.datapath,
    offload: cfg.offload,
    discovery: !cfg.noDiscovery,
    discoveryDegree: cfg.discoveryDegree,
    peerTimeoutMs: cfg.peerTimeoutMs,
    ...(cfg.rekeyAfterTimeMs === undefined ? {} : { rekeyAfterTimeMs: cfg.rekeyAfterTimeMs }),
    ipam: {
      init: cfg.ipallocInit,
      persisted: loadIpam(cfg.stateDir),
      // IPAM recovery (router/ipam): with ipam.json lost, a router that had targets rejoins its cluster's ring.
      expectCluster: state.targets.length > 0,
      persist: (st) => {
        if (!resetting) saveIpam(cfg.stateDir, st);
      },
    },
    log,
    version: VERSION,
    incarnation,
  });
  /** save writes state.json durably; throws "cannot save state in DIR: REASON" when it cannot. */
  const save = (): void => {
    if (resetting) return;
    stateFile.save({
      peerName: name,
      targets: router.targetList(),
      exposed: router.exposedCidrs().map(formatCidr),
      incarnation,
      attached: attacher.list(),
    });
  };
  /** persist saves where a failure is only logged (targets, exposed addresses); attaches use save. */
  const persist = (): void => {
    try {
      save();
    } catch (err) {
      log.error('cannot save state', { err: errorMessage(err) });
    }
  };

  // The attacher's journal must be on disk before it touches the kernel: it gets the throwing save.
  const attacher = new Attacher(router, cfg.ipallocRange, log, save, cfg.containerGraceMs);
  // Docker containers by name or id, kept attached across restarts by the engine's events.
  const docker =
    cfg.dockerSocket === undefined ? undefined : new DockerIntegration({ socketPath: cfg.dockerSocket, log });
  if (docker !== undefined) {
    attacher.containers = docker;
    docker.bind({
      attachedKeys: () => attacher.list().map((a) => a.target),
      reattach: (t) => attacher.reattach(t),
      detach: (t) => attacher.detach(t),
    });
  }
  // The Docker network plugin (`docker network create -d weft`): its endpoints are attaches.
  const plugin =
    cfg.dockerPlugin === undefined || docker === undefined || cfg.dockerSocket === undefined
      ? undefined
      : new DockerPlugin({
          socketPath: cfg.dockerPlugin,
          backend: routerBackend(router, attacher, cfg.ipallocRange),
          log,
          docker: new DockerClient(cfg.dockerSocket),
        });
  if (plugin !== undefined) docker?.watch((e) => plugin.onEngineEvent(e));
  // The DNS rides the router's gossip; its channel must exist before the router connects.
  const dns = cfg.noDns
    ? undefined
    : new DnsService({
        router,
        range: cfg.ipallocRange,
        domain: cfg.dnsDomain,
        ttl: cfg.dnsTtl,
        port: cfg.dnsPort,
        upstreams: cfg.dnsUpstream,
        incarnation,
        log,
      });
  if (dns !== undefined) {
    attacher.hooks = {
      attached: (a) =>
        dns.attached(a, async () => {
          await router.expose();
          await attacher.refreshRoutes();
          persist();
        }),
      detached: (a) => dns.detached(a),
    };
  }
  // Egress masquerading (control/egress.ts): installed once the router is up, removed when it goes.
  const egress = cfg.masquerade ? new Egress(cfg.ipallocRange, cfg.device, log) : undefined;
  let stopping: Promise<void> | undefined;
  let resolveDone: () => void = () => {};
  const done = new Promise<void>((r) => {
    resolveDone = r;
  });
  // The API's credentials: its bearer token (TCP) and its socket (whoever may open it).
  const token = ensureApiToken(cfg.apiTokenFile);
  const apiOpts: ApiOptions = {
    router,
    token,
    socketPath: cfg.apiSocket,
    tokenFile: cfg.apiTokenFile,
    attacher,
    metrics: createMetrics(router, dns),
    log,
    dns,
    stateStatus: () => ({ ...stateFile.status(), attach: attacher.status() }),
    docker:
      docker === undefined
        ? undefined
        : () => ({ ...docker.status(), ...(plugin === undefined ? {} : { plugin: plugin.status() }) }),
    egress: egress === undefined ? undefined : () => egress.status(),
    api: { http: `${cfg.httpAddr.host}:${cfg.httpAddr.port}`, loopback: cfg.httpLoopback },
    onStop: () => void shutdown('stop requested'),
    onChange: () => {
      persist();
      void dns?.sync();
    },
    onReset: async () => {
      // Leave for good: containers off, space handed to a live peer, then no state left behind.
      await attacher.detachAll();
      await router.hide().catch(() => undefined);
      const left = router.leave();
      resetting = true;
      stateFile.remove();
      rmSync(cfg.apiTokenFile, { force: true });
      log.info('leaving the network', { heir: left.heir, addresses: left.addresses });
      // Give the gossip of the handed-over ring a moment to leave before the connections close.
      setTimeout(() => void shutdown('reset'), RESET_LINGER_MS).unref();
      return left;
    },
  };
  const server: Server = createApi(apiOpts, { transport: 'tcp', loopback: cfg.httpLoopback });
  const socketServer: Server = createApi(apiOpts, { transport: 'unix' });
  let closeSocket: () => Promise<void> = async () => {};
  // Close both servers and drop their connections: a keep-alive client (the CLI's launch poll asks
  // for /status every 100 ms) would otherwise hold server.close() open for as long as it polls.
  const closeServers = async (): Promise<void> => {
    const closed = Promise.all([new Promise<void>((r) => server.close(() => r())), closeSocket()]);
    server.closeAllConnections();
    socketServer.closeAllConnections();
    await closed;
  };
  const shutdown = (reason: string): Promise<void> => {
    stopping ??= (async () => {
      log.info('router stopping', { reason });
      attacher.stop();
      docker?.stop();
      await plugin?.stop();
      await dns?.stop();
      await egress?.remove();
      await router.stop();
      await closeServers();
      resolveDone();
    })();
    return stopping;
  };

  // The socket first (the CLI's way in), then TCP; both before the router can report ready.
  const socketDir = path.dirname(cfg.apiSocket);
  closeSocket = await listenApiSocket(
    socketServer,
    cfg.apiSocket,
    await groupId(API_SOCKET_GROUP),
    socketDir !== RUN_ROOT && socketDir.startsWith(`${RUN_ROOT}/`),
  );
  try {
    await listen(server, cfg.httpAddr.host, cfg.httpAddr.port);
  } catch (err) {
    await closeSocket();
    throw err;
  }
  // After listen: a second router in this namespace is told so, not that its range overlaps the first's device.
  try {
    await checkRangeRoutes(cfg, log);
  } catch (err) {
    await closeServers();
    throw err;
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('uncaughtException', (err) =>
    log.error('uncaught exception', { err: errorMessage(err), stack: err.stack }),
  );
  process.on('unhandledRejection', (err) => log.error('unhandled rejection', { err: errorMessage(err) }));

  try {
    await router.start();
  } catch (err) {
    await closeServers();
    throw err;
  }
  if (egress !== undefined) {
    try {
      await egress.install();
    } catch (err) {
      await router.stop();
      await closeServers();
      throw new WeftError('EWEFT_SYSTEM', `--masquerade: ${errorMessage(err)}`, { cause: err });
    }
  }
  // ---- IPAM recovery (router/ipam owner): connect first, then take back from the ring the
  // addresses still in use here before anything is seeded or handed out; a conflict (or no ring
  // within the deadline when ipam.json was lost) refuses the launch with the way out.
  router.connect(targets);
  try {
    await router.ipam.reclaim([
      { owner: EXPOSE_OWNER, addrs: state.exposed.map((c) => parseCidr(c).addr) },
      ...state.attached.map((a) => ({ owner: a.target, addrs: a.cidrs.map((c) => parseCidr(c).addr) })),
    ]);
  } catch (err) {
    log.error('ipam: cannot take back the addresses in use here', { err: errorMessage(err) });
    resetting = true; // save nothing: the next launch must find the state as it is
    await router.stop();
    await closeServers();
    throw err;
  }
  // ---- end IPAM recovery
  // Restore what the previous run had, then what this launch asks for.
  for (const c of state.exposed) {
    try {
      await router.expose(parseCidr(c));
    } catch (err) {
      log.warn('cannot restore exposed address', { cidr: c, err: errorMessage(err) });
    }
  }
  await dns?.start();
  await attacher.restore(state.attached);
  attacher.start();
  docker?.start();
  // After restore: a Leave of an endpoint joined before a restart finds its record.
  await plugin?.start().catch((err) => log.error('docker plugin: not started', { err: errorMessage(err) }));
  persist();
  log.info('router ready', {
    peer: name,
    nickname,
    addr: `${cfg.httpAddr.host}:${cfg.httpAddr.port}`,
    socket: cfg.apiSocket,
  });
  if (!cfg.httpLoopback) {
    log.warn('http api listens beyond loopback: every request needs the bearer token', {
      addr: `${cfg.httpAddr.host}:${cfg.httpAddr.port}`,
      file: cfg.apiTokenFile,
    });
  }
  await done;
}

/** persistedName validates the peer name kept in the state file as one a router may take. */
function persistedName(text: string, file: string): PeerName {
  try {
    return parseOwnPeerName(text);
  } catch (err) {
    throw new ConfigError(`${file}: ${errorMessage(err)}; launch with --name NAME to choose another`, { cause: err });
  }
}

/** RESET_LINGER_MS: after `weft reset` hands its space over, the router stays up this long for the gossip to go out. */
const RESET_LINGER_MS = 1_000;

/**
 * checkRangeRoutes refuses a launch whose IPAM range overlaps a route of this host (it would
 * hijack or be hijacked by that network), unless the user chose the range: then it only warns.
 * Routes on the router's own device, on its fast-path device weft-vx (a crashed router's; the
 * router reconciles them) and to its attached containers (kept across a restart) do not count.
 */
async function checkRangeRoutes(cfg: LaunchConfig, log: Logger): Promise<void> {
  const clash = (await hostRoutes()).find(
    (r) =>
      r.dev !== cfg.device &&
      r.dev !== FASTDP_DEVICE &&
      !isContainerIfname(r.dev) &&
      r.cidr.prefix > 0 &&
      cidrsOverlap(r.cidr, cfg.ipallocRange),
  );
  if (clash === undefined) return;
  const range = formatCidr(cfg.ipallocRange);
  const text = `the address range ${range} overlaps the host route ${formatCidr(clash.cidr)} dev ${clash.dev}`;
  if (cfg.ipallocRangeGiven) {
    log.warn(`${text}; using it as asked`);
    return;
  }
  throw new ConfigError(`${text}: choose another range with --ipalloc-range`);
}

async function hostRoutes(): Promise<{ cidr: Cidr; dev: string }[]> {
  try {
    const { stdout } = await promisify(execFile)('ip', ['-j', '-4', 'route', 'show', 'table', 'all']);
    const out: { cidr: Cidr; dev: string }[] = [];
    for (const r of JSON.parse(stdout) as { dst?: string; dev?: string; type?: string }[]) {
      if (r.dst === undefined || r.dst === 'default' || (r.type !== undefined && r.type !== 'unicast')) continue;
      try {
        out.push({ cidr: parseCidr(r.dst, { bareAs32: true }), dev: r.dev ?? '' });
      } catch {
        // not an IPv4 prefix: not ours to judge
      }
    }
    return out;
  } catch {
    return [];
  }
}

/**
 * groupId returns the id of the local group `name` (from `getent group`, else /etc/group), or
 * undefined when there is none: the API socket then belongs to root's group.
 */
async function groupId(name: string): Promise<number | undefined> {
  let line: string | undefined;
  try {
    line = (await promisify(execFile)('getent', ['group', name])).stdout;
  } catch {
    try {
      line = readFileSync('/etc/group', 'utf8')
        .split('\n')
        .find((l) => l.startsWith(`${name}:`));
    } catch {
      line = undefined;
    }
  }
  const gid = Number(line?.split(':')[2]);
  return line !== undefined && Number.isInteger(gid) && gid >= 0 ? gid : undefined;
}

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') {
        reject(
          new WeftError(
            'EWEFT_CONFLICT',
            `HTTP API address ${host}:${port} is in use: is a weft router already running in this network namespace?`,
          ),
        );
      } else {
        reject(new WeftError('EWEFT_SYSTEM', `cannot listen on ${host}:${port}: ${err.message}`, { cause: err }));
      }
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
}
