import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import { hostname } from 'node:os';
import { errorMessage, WeftError } from '../common/errors.js';
import { createLogger, type Logger } from '../common/log.js';
import type { PeerName, PeerUid } from '../common/types.js';
import { formatCidr, parseCidr, parsePeerName, randomPeerName } from '../common/types.js';
import { Router } from '../router/index.js';
import { Attacher } from './attach.js';
import type { LaunchConfig } from './config.js';
import { createApi } from './http.js';
import { createMetrics } from './metrics.js';
import { StateFile } from './state.js';
import { netnsIdentity } from './state-dir.js';
import { VERSION } from './version.js';

/**
 * runForeground runs a router in this process until SIGTERM/SIGINT or POST /stop: it loads the
 * persisted state (peer name, targets, exposed addresses), serves the HTTP API (503 until
 * ready), starts the router, then re-applies targets and exposed addresses. Resolves when stopped.
 */
export async function runForeground(cfg: LaunchConfig, log: Logger = createLogger(cfg.logLevel)): Promise<void> {
  const stateFile = new StateFile(cfg.stateDir);
  const state = stateFile.load();
  let name: PeerName;
  if (cfg.name !== undefined) name = cfg.name;
  else if (state.peerName !== undefined) name = parsePeerName(state.peerName);
  else name = randomPeerName((n) => randomBytes(n));
  const ns = netnsIdentity();
  const nickname = cfg.nickname ?? ns.name ?? hostname();
  // A restarted router must supersede its old self everywhere even if the clock stepped back.
  const incarnation = Math.max(Date.now(), (state.incarnation ?? 0) + 1);
  let uid = 0n;
  while (uid === 0n) uid = randomBytes(8).readBigUInt64BE();

  const router = new Router({
    name,
    nickname,
    uid: uid as PeerUid,
    port: cfg.port,
    vxlanPort: cfg.vxlanPort,
    vni: cfg.vni,
    encap: cfg.encap,
    mtu: cfg.mtu,
    device: cfg.device,
    ipallocRange: cfg.ipallocRange,
    password: cfg.password,
    connLimit: cfg.connLimit,
    datapath: cfg.datapath,
    offload: cfg.offload,
    discovery: !cfg.noDiscovery,
    discoveryDegree: cfg.discoveryDegree,
    peerTimeoutMs: cfg.peerTimeoutMs,
    log,
    version: VERSION,
    incarnation,
  });
  const persist = () => {
    try {
      stateFile.save({
        peerName: name,
        targets: router.targetList(),
        exposed: router.exposedCidrs().map(formatCidr),
        incarnation,
        attached: attacher.list(),
      });
    } catch (err) {
      log.error('cannot save state', { err: errorMessage(err) });
    }
  };

  const attacher = new Attacher(router, cfg.ipallocRange, log, () => persist());
  let stopping: Promise<void> | undefined;
  let resolveDone: () => void = () => {};
  const done = new Promise<void>((r) => {
    resolveDone = r;
  });
  const server: Server = createApi({
    router,
    attacher,
    metrics: createMetrics(router),
    log,
    onStop: () => void shutdown('stop requested'),
    onChange: persist,
  });
  const shutdown = (reason: string): Promise<void> => {
    stopping ??= (async () => {
      log.info('router stopping', { reason });
      await router.stop();
      await new Promise<void>((r) => server.close(() => r()));
      server.closeAllConnections();
      resolveDone();
    })();
    return stopping;
  };

  await listen(server, cfg.httpAddr.host, cfg.httpAddr.port);
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('uncaughtException', (err) =>
    log.error('uncaught exception', { err: errorMessage(err), stack: err.stack }),
  );
  process.on('unhandledRejection', (err) => log.error('unhandled rejection', { err: errorMessage(err) }));

  try {
    await router.start();
  } catch (err) {
    await new Promise<void>((r) => server.close(() => r()));
    throw err;
  }
  // Restore what the previous run had, then what this launch asks for.
  for (const c of state.exposed) {
    try {
      await router.expose(parseCidr(c));
    } catch (err) {
      log.warn('cannot restore exposed address', { cidr: c, err: errorMessage(err) });
    }
  }
  await attacher.restore(state.attached);
  router.connect([...new Set([...state.targets, ...cfg.peers])]);
  persist();
  log.info('router ready', { peer: name, nickname, addr: `${cfg.httpAddr.host}:${cfg.httpAddr.port}` });
  await done;
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
