/**
 * http is the router's HTTP API ({@link createApi}): the endpoints the CLI, the CNI plugin and a
 * metrics scraper use (status, names, connect/forget, expose/hide, attach/detach, rmpeer, reset,
 * stop, metrics), who may call each over TCP and over the unix socket, and the bounds on bodies,
 * connections and timeouts. The token file and the socket itself are made by api-credentials.ts,
 * re-exported here.
 *
 * Over 400 lines because it is one request path: the route table, the checks every request passes
 * before its handler runs (Host, Origin, content type, token), the connection cap and the small
 * parsers of request bodies are read together when asking "what can this caller do"; split, the
 * refusal rules would sit apart from the endpoints they guard.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { hostname, networkInterfaces } from 'node:os';
import { errorMessage, InputError, isWeftError, WeftError, type WeftErrorCode } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { formatCidr, formatIPv4, parseCidr, parseIPv4 } from '../common/types.js';
import type { Router } from '../router/index.js';
import { API_SOCKET_GROUP } from './api-credentials.js';
import type { AttachAt, Attacher } from './attach.js';
import { isLoopbackHost, parsePeerAddress, TARGETS_MAX } from './config.js';
import type { DnsService } from './dns.js';
import type { DockerStatus } from './docker.js';
import type { EgressStatus } from './egress.js';
import {
  type ApiStatus,
  formatConnections,
  formatDns,
  formatIpam,
  formatPeers,
  formatStatus,
  formatTargets,
  type StateStatus,
  type StatusView,
} from './format.js';
import type { Metrics } from './metrics.js';
import { findUiDir, isUiPath, loadUiAssets, UI_HEADERS, uiPaths } from './ui-assets.js';

export {
  API_SOCKET_GROUP,
  API_SOCKET_MODE,
  API_TOKEN_BYTES,
  ensureApiToken,
  listenApiSocket,
  UNIX_PATH_MAX_BYTES,
} from './api-credentials.js';

/** BODY_MAX_BYTES bounds a request body; larger ones get 413. */
const BODY_MAX_BYTES = 64 * 1024;

/**
 * HTTP_MAX_CONNECTIONS bounds the connections one API listener (TCP, or the unix socket) holds at
 * once; the next gets 503 and is closed. The CLI uses one connection per command and a metrics
 * scraper one or two, so 64 is far above honest use and far below the file descriptors the router
 * needs for its peers, devices and containers: held connections cannot exhaust them. TCP and the
 * socket count apart, so a flood on TCP never locks the CLI out of the socket.
 */
export const HTTP_MAX_CONNECTIONS = 64;
/** HTTP_HEADERS_TIMEOUT_MS: a request's headers must arrive within this long (slowloris). */
export const HTTP_HEADERS_TIMEOUT_MS = 10_000;
/** HTTP_REQUEST_TIMEOUT_MS: the whole request (headers and a body of at most 64 KiB) must arrive within this long. */
export const HTTP_REQUEST_TIMEOUT_MS = 30_000;
/** HTTP_KEEPALIVE_TIMEOUT_MS: an idle kept-alive connection is closed after this long. */
export const HTTP_KEEPALIVE_TIMEOUT_MS = 5_000;
/**
 * HTTP_TIMEOUT_CHECK_INTERVAL_MS: how often Node checks the two timeouts above; its default (30 s)
 * would let a connection that never finishes its headers live 40 s.
 */
export const HTTP_TIMEOUT_CHECK_INTERVAL_MS = 1_000;
/** REFUSED_LINGER_MS: a connection refused by the cap is destroyed this long after its 503, read or not. */
export const REFUSED_LINGER_MS = 1_000;
/** REFUSAL_LOG_EVERY: refused requests and connections are logged once per this many, so a flood cannot fill the log. */
const REFUSAL_LOG_EVERY = 1000;
/** LOCAL_HOST_NAMES: Host header names that always mean this machine. */
const LOCAL_HOST_NAMES = new Set(['localhost', '127.0.0.1', '[::1]']);

/** ApiOptions configures the HTTP API. */
export interface ApiOptions {
  router: Router;
  /** attacher plugs containers in; without one the container endpoints answer 404. */
  attacher?: Attacher;
  /** metrics renders GET /metrics (the registry is built at the first scrape). */
  metrics: Metrics;
  log: Logger;
  /** onStop is called after a POST /stop has been answered. */
  onStop: () => void;
  /** onChange is called after connect/forget/expose/hide so the owner can persist state. */
  onChange?: () => void;
  /** dns serves `/status/dns` and the `/name/...` records; absent with --no-dns. */
  dns?: DnsService;
  /** stateStatus says whether the state directory takes writes (shown in status as `state`). */
  stateStatus?: () => StateStatus;
  /** docker says which Docker integration is active (shown in status as `docker`); absent without one. */
  docker?: () => DockerStatus;
  /** egress says whether egress masquerading is on (control/egress.ts), absent when it is off. */
  egress?: () => EgressStatus;
  /** onReset leaves the network for good (detach all, hand over address space, remove state, stop). */
  onReset?: () => Promise<{ heir: string | undefined; addresses: number }>;
  /**
   * token is the bearer token a TCP caller must send (`Authorization: Bearer TOKEN`) to change the
   * router, and on a non-loopback listener to read it too. The daemon always sets one; without it
   * (in-process tests only) loopback TCP callers may change the router and a non-loopback listener
   * refuses everything.
   */
  token?: string;
  /** api says where the TCP API listens (shown in status as `api`, for `weft ui`). */
  api?: ApiStatus;
  /** uiDir holds the web page's files (default: found beside this module, see ui-assets.ts). */
  uiDir?: string;
  /** socketPath and tokenFile are named in refusals, so a refused caller knows where the credentials are. */
  socketPath?: string;
  tokenFile?: string;
}

/**
 * ApiListener says where one API server listens: the unix socket (whose file mode is the
 * credential: every caller that can connect is trusted) or TCP (`loopback` false: the listen
 * address reaches beyond this host, so every request needs the token).
 */
export type ApiListener =
  | { transport: 'unix'; maxConnections?: number; headersTimeoutMs?: number; requestTimeoutMs?: number }
  | {
      transport: 'tcp';
      loopback: boolean;
      maxConnections?: number;
      headersTimeoutMs?: number;
      requestTimeoutMs?: number;
    };

/** statusForCode maps a WeftError code to an HTTP status. */
export function statusForCode(code: WeftErrorCode): number {
  switch (code) {
    case 'EWEFT_INPUT':
    case 'EWEFT_CONFIG':
      return 400;
    case 'EWEFT_NOT_FOUND':
      return 404;
    case 'EWEFT_CONFLICT':
      return 409;
    case 'EWEFT_NOT_READY':
    case 'EWEFT_UNAVAILABLE':
      return 503;
    default:
      return 500;
  }
}

type Handler = (req: IncomingMessage, url: URL, body: Buffer) => Promise<Reply> | Reply;
interface Reply {
  status?: number;
  json?: unknown;
  text?: string;
  contentType?: string;
  /** headers are added to the answer (e.g. `connection: close` on a refusal whose body was not read). */
  headers?: Record<string, string>;
}

/**
 * createApi builds one HTTP API server (not yet listening) for `listener`. Every request is
 * answered; bad input gets a 4xx with a one-line message, never a crash. Until the router is
 * ready every endpoint answers 503.
 *
 * Who may do what (checked in this order, before the body is read):
 * - TCP: the `Host` must name this host as the caller reached it (localhost, 127.0.0.1, [::1] or
 *   the address the connection arrived on, with the listen port), else 403: a web page cannot reach
 *   the API by DNS rebinding.
 * - an `Origin` other than the API's own (`http://` + that Host), or a browser's
 *   `Sec-Fetch-Site` other than same-origin/none, is refused with 403 (cross-site requests).
 * - every method but GET/HEAD changes the router: it needs `Content-Type: application/json` (415
 *   otherwise, so no HTML form or `text/plain` "simple request" gets in) and, over TCP, the bearer
 *   token (401 otherwise). Over the unix socket the socket's file mode is the credential.
 * - GET endpoints only read; over loopback TCP they need no token, beyond loopback they do —
 *   except the web page's fixed files (`GET /ui`, `/ui/*`), which hold nothing of the router: the
 *   page reads the status with the token the operator gives it (control/ui/README.md).
 * - at most `maxConnections` (HTTP_MAX_CONNECTIONS) connections at once; beyond, 503 and close.
 */
export function createApi(opts: ApiOptions, listener: ApiListener = { transport: 'tcp', loopback: true }): Server {
  const { router, metrics, log } = opts;
  const statusView =
    (part: string | undefined) =>
    (req: IncomingMessage, url: URL): Reply => {
      const s: StatusView = {
        ...router.status(),
        state: opts.stateStatus?.(),
        docker: opts.docker?.(),
        egress: opts.egress?.(),
        api: opts.api,
      };
      if (wantsJson(req, url)) return { json: part === undefined ? s : pick(s, part) };
      return { text: render(s, part) };
    };
  const ui = loadUiAssets(opts.uiDir ?? findUiDir());
  const uiRoutes = Object.fromEntries(
    uiPaths().map((p): [string, Handler] => [
      `GET ${p}`,
      () => {
        const f = ui.files.get(p);
        if (f === undefined) return { status: 404, json: { error: ui.missing, code: 'EWEFT_NOT_FOUND' } };
        return { text: f.body, contentType: f.contentType, headers: { ...UI_HEADERS } };
      },
    ]),
  );
  const routes: Record<string, Handler> = {
    ...uiRoutes,
    'GET /status': statusView(undefined),
    'GET /status/peers': statusView('peers'),
    'GET /status/connections': statusView('connections'),
    'GET /status/targets': statusView('targets'),
    'GET /status/ipam': statusView('ipam'),
    'GET /status/dns': (req, url) => {
      const st = requireDns(opts.dns).status();
      return wantsJson(req, url) ? { json: st } : { text: formatDns(st) };
    },
    'POST /name/add': (req, _url, body) => {
      const b = parseBody(req, body);
      const { name, ips } = nameAndIps(b);
      if (name === undefined) throw new InputError('missing "name"');
      requireDns(opts.dns).add(name, ips);
      return { json: { name, ips } };
    },
    'POST /name/remove': (req, _url, body) => {
      const { name, ips } = nameAndIps(parseBody(req, body));
      if (name === undefined && ips.length === 0) throw new InputError('give "name" and/or "ips"');
      return { json: { removed: requireDns(opts.dns).remove(name, ips) } };
    },
    'GET /name': (_req, url) => {
      const name = url.searchParams.get('name');
      if (name === null || name === '') throw new InputError('missing ?name=');
      return { json: { name, ips: requireDns(opts.dns).lookup(name) } };
    },
    'GET /report': () => ({ json: { ...router.status(), dns: opts.dns?.status() } }),
    'GET /metrics': async () => ({ text: await metrics.metrics(), contentType: metrics.contentType }),
    'POST /connect': (req, url, body) => {
      const { peers, replace } = peerList(req, url, body);
      checkTargetsBound(replace ? [] : router.targetList(), peers);
      if (replace) router.forget(router.targetList());
      const targets = router.connect(peers);
      opts.onChange?.();
      return { json: { targets } };
    },
    'POST /forget': (req, url, body) => {
      const targets = router.forget(peerList(req, url, body).peers);
      opts.onChange?.();
      return { json: { targets } };
    },
    'POST /expose': async (req, url, body) => {
      const cidr = field(req, url, body, 'cidr');
      const exposed = await router.expose(cidr === undefined ? undefined : parseCidr(cidr));
      await opts.attacher?.refreshRoutes();
      opts.onChange?.();
      return { json: { exposed: exposed.map(formatCidr) } };
    },
    'POST /hide': async (req, url, body) => {
      const cidr = field(req, url, body, 'cidr');
      const exposed = await router.hide(cidr === undefined ? undefined : parseCidr(cidr, { bareAs32: true }));
      await opts.attacher?.refreshRoutes();
      opts.onChange?.();
      return { json: { exposed: exposed.map(formatCidr) } };
    },
    'GET /ps': () => ({ json: opts.attacher?.list() ?? [] }),
    'POST /attach': async (req, _url, body) => {
      const b = parseBody(req, body);
      const attacher = requireAttacher(opts.attacher);
      if (typeof b.target !== 'string') throw new InputError('missing "target": a network namespace name or a pid');
      const cidrs = b.cidrs === undefined ? [] : b.cidrs;
      if (!Array.isArray(cidrs) || cidrs.length > 64 || cidrs.some((c) => typeof c !== 'string')) {
        throw new InputError('"cidrs" must be a list of up to 64 strings like 10.32.1.5/12');
      }
      if (b.name !== undefined && typeof b.name !== 'string') throw new InputError('"name" must be a string');
      const at = attachAt(b);
      const a = await attacher.attach(
        b.target,
        (cidrs as string[]).map((c) => parseCidr(c)),
        b.name as string | undefined,
        at,
      );
      if (at === undefined) return { json: a };
      // By path (the CNI plugin): what its result needs besides the record, in this one answer.
      const gateway = formatIPv4((await attacher.gateway()).addr);
      const dns =
        opts.dns?.address === undefined ? undefined : { nameservers: [opts.dns.address], search: [opts.dns.domain] };
      return { json: { ...a, mtu: router.mtu, gateway, ...(dns === undefined ? {} : { dns }) } };
    },
    'POST /detach': async (req, url, body) => {
      const target = field(req, url, body, 'target');
      if (target === undefined) throw new InputError('missing "target"');
      return { json: await requireAttacher(opts.attacher).detach(target) };
    },
    'POST /rmpeer': (req, url, body) => {
      const peer = field(req, url, body, 'peer');
      if (peer === undefined) throw new InputError('missing "peer": a peer name or nickname');
      return { json: router.rmpeer(peer) };
    },
    'POST /reset': async () => {
      if (opts.onReset === undefined) throw new WeftError('EWEFT_NOT_FOUND', 'this router cannot be reset');
      return { json: await opts.onReset() };
    },
    'POST /stop': () => {
      setImmediate(opts.onStop);
      return { json: { stopping: true } };
    },
  };

  const server = createServer(
    {
      headersTimeout: listener.headersTimeoutMs ?? HTTP_HEADERS_TIMEOUT_MS,
      requestTimeout: listener.requestTimeoutMs ?? HTTP_REQUEST_TIMEOUT_MS,
      keepAliveTimeout: HTTP_KEEPALIVE_TIMEOUT_MS,
      connectionsCheckingInterval: HTTP_TIMEOUT_CHECK_INTERVAL_MS,
    },
    (req, res) => {
      handle(req, res).catch((err) => {
        log.error('http handler failed', { err: errorMessage(err) });
        if (!res.headersSent) send(res, { status: 500, json: { error: 'internal error' } });
      });
    },
  );
  capConnections(server, listener.maxConnections ?? HTTP_MAX_CONNECTIONS, log);
  const tokenDigest = opts.token === undefined ? undefined : digest(opts.token);
  let refusals = 0;
  /** noteRefusal logs the first refused request and then every REFUSAL_LOG_EVERY-th: a page spamming us cannot fill the disk. */
  const noteRefusal = (req: IncomingMessage, path: string, reason: string): void => {
    if (refusals++ % REFUSAL_LOG_EVERY === 0) {
      log.warn('http request refused', { method: req.method, path, reason, count: refusals });
    }
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://localhost');
    } catch {
      send(res, { status: 400, json: { error: 'bad request URL', code: 'EWEFT_INPUT' } });
      return;
    }
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const beyondLoopback = listener.transport === 'tcp' && (!listener.loopback || !isLoopbackHost(localAddr(req)));
    const foreign = refuseForeign(req, listener.transport === 'tcp', beyondLoopback);
    if (foreign !== undefined) {
      noteRefusal(req, path, foreign);
      send(res, refusal(403, foreign));
      return;
    }
    const route = routes[`${req.method} ${path}`];
    if (route === undefined) {
      const known = Object.keys(routes).some((k) => k.endsWith(` ${path}`));
      send(res, {
        status: known ? 405 : 404,
        json: { error: known ? `method ${req.method} not allowed on ${path}` : `no such endpoint ${path}` },
        headers: { connection: 'close' },
      });
      return;
    }
    const changes = req.method !== 'GET' && req.method !== 'HEAD';
    // The page's files are fixed and hold nothing of the router (its data comes from /status with
    // the caller's token), so they are served without a token and before the router is ready.
    const page = !changes && isUiPath(path);
    if (changes && !isJson(req.headers['content-type'])) {
      const given = req.headers['content-type'] === undefined ? 'none' : `"${req.headers['content-type']}"`;
      const error = `${req.method} ${path} needs content-type application/json, not ${given}`;
      noteRefusal(req, path, error);
      send(res, { status: 415, json: { error, code: 'EWEFT_INPUT' }, headers: { connection: 'close' } });
      return;
    }
    if (listener.transport === 'tcp' && (changes || (beyondLoopback && !page))) {
      const denied = checkToken(req, tokenDigest, changes, beyondLoopback, `${req.method} ${path}`);
      if (denied !== undefined) {
        noteRefusal(req, path, denied);
        send(res, { ...refusal(401, denied), headers: { connection: 'close', 'www-authenticate': 'Bearer' } });
        return;
      }
    }
    let body: Buffer;
    try {
      body = await readBody(req);
    } catch (err) {
      res.setHeader('connection', 'close');
      send(res, { status: 413, json: { error: errorMessage(err), code: 'EWEFT_INPUT' } });
      return;
    }
    if (!router.isReady && path !== '/stop' && path !== '/reset' && !page) {
      send(res, { status: 503, json: { error: 'router is starting', code: 'EWEFT_NOT_READY' } });
      return;
    }
    try {
      send(res, await route(req, url, body));
    } catch (err) {
      if (isWeftError(err)) {
        send(res, { status: statusForCode(err.code), json: { error: err.message, code: err.code } });
      } else {
        throw err;
      }
    }
  }

  /** checkToken returns why a TCP request without (the right) bearer token is refused, or undefined. */
  function checkToken(
    req: IncomingMessage,
    want: Buffer | undefined,
    changes: boolean,
    beyondLoopback: boolean,
    what: string,
  ): string | undefined {
    const where = opts.tokenFile === undefined ? 'the bearer token' : `the bearer token in ${opts.tokenFile}`;
    if (want === undefined) {
      // No token configured (tests): loopback callers are trusted, nothing beyond loopback is.
      return beyondLoopback ? 'this API has no token: it serves nothing beyond loopback' : undefined;
    }
    const m = /^Bearer[ \t]+([\x21-\x7e]+)[ \t]*$/i.exec(req.headers.authorization ?? '');
    if (m === null) {
      if (changes) {
        const sock =
          opts.socketPath === undefined
            ? ''
            : `the unix socket ${opts.socketPath} (root or group ${API_SOCKET_GROUP}) or `;
        return `permission denied: ${what} changes the router and needs ${sock}${where}`;
      }
      return `permission denied: this API listens beyond loopback, so every request needs ${where}`;
    }
    // Both sides hashed to one length, then compared in constant time: the answer's timing says nothing of the token.
    if (!timingSafeEqual(digest(m[1] as string), want)) return `permission denied: wrong bearer token (see ${where})`;
    return undefined;
  }

  return server;
}

/**
 * refuseForeign returns why a request is refused as coming from elsewhere (a foreign Host, a
 * cross-origin browser request), or undefined. `tcp`: the Host is checked (over the unix socket no
 * web page can reach us, and clients send `localhost`).
 */
function refuseForeign(req: IncomingMessage, tcp: boolean, beyondLoopback: boolean): string | undefined {
  const host = req.headers.host;
  if (tcp) {
    if (host === undefined || host === '') return 'missing host header';
    const m = /^(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::(\d{1,5}))?$/i.exec(host);
    const name = m?.[1]?.toLowerCase();
    const port = m?.[2];
    if (name === undefined || !isLocalName(name, req, beyondLoopback)) return `foreign host "${host}"`;
    // Beyond loopback a port forward may rename the port; the token guards that listener anyway.
    if (!beyondLoopback && port !== undefined && Number(port) !== req.socket.localPort)
      return `foreign host "${host}": this API listens on port ${req.socket.localPort}`;
  }
  const origin = req.headers.origin;
  if (origin !== undefined && (host === undefined || origin.toLowerCase() !== `http://${host}`.toLowerCase())) {
    return `cross-origin request from "${origin}"`;
  }
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin' && site !== 'none')
    return `cross-site request (sec-fetch-site ${site})`;
  return undefined;
}

/** isLocalName: `name` (from a Host header, lower-case) names this host as the caller reached it. */
function isLocalName(name: string, req: IncomingMessage, beyondLoopback: boolean): boolean {
  if (LOCAL_HOST_NAMES.has(name)) return true;
  const local = localAddr(req);
  if (name === local || name === `[${local}]`) return true;
  if (!beyondLoopback) return false;
  // Beyond loopback: any address of this host, or its host name.
  if (name === hostname().toLowerCase()) return true;
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (name === a.address || name === `[${a.address}]`) return true;
  }
  return false;
}

/** localAddr is the address a TCP request arrived on, without an IPv4-mapped prefix ('' over a unix socket). */
function localAddr(req: IncomingMessage): string {
  return (req.socket.localAddress ?? '').replace(/^::ffff:/, '');
}

function isJson(type: string | undefined): boolean {
  return (type ?? '').split(';')[0]?.trim().toLowerCase() === 'application/json';
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

function refusal(status: number, error: string): Reply {
  return { status, json: { error, code: 'EWEFT_AUTH' }, headers: { connection: 'close' } };
}

/**
 * capConnections lets `server` hold at most `max` connections: the next is answered 503 and
 * closed without reaching the HTTP parser (and with `max` refused ones still closing, cut at once,
 * so a flood of new connections cannot hold file descriptors either). It takes the place of node:http's own 'connection'
 * listener and hands it the sockets it admits.
 */
function capConnections(server: Server, max: number, log: Logger): void {
  const http = server.listeners('connection') as ((socket: Socket) => void)[];
  server.removeAllListeners('connection');
  const body = `${JSON.stringify({ error: `too many API connections (more than ${max}): try again later`, code: 'EWEFT_UNAVAILABLE' })}\n`;
  const answer =
    'HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\nretry-after: 1\r\n' +
    `content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  let open = 0;
  let refused = 0;
  let lingering = 0;
  server.on('connection', (socket: Socket) => {
    if (open >= max) {
      if (refused++ % REFUSAL_LOG_EVERY === 0) log.warn('http connection refused: too many', { max, count: refused });
      socket.on('error', () => {});
      // A flood of new connections: past `max` refused ones still lingering, cut at once, without a 503.
      if (lingering >= max) {
        socket.destroy();
        return;
      }
      lingering++;
      socket.once('close', () => {
        lingering--;
      });
      socket.resume(); // read and drop the request, so closing sends FIN after the 503, not RST
      socket.end(answer);
      setTimeout(() => socket.destroy(), REFUSED_LINGER_MS).unref();
      return;
    }
    open++;
    socket.once('close', () => {
      open--;
    });
    for (const l of http) l.call(server, socket);
  });
}

function requireDns(d: DnsService | undefined): DnsService {
  if (d === undefined) throw new WeftError('EWEFT_NOT_FOUND', 'the DNS server is off (--no-dns)');
  return d;
}

/** nameAndIps reads `name` (a DNS name) and `ips` (IPv4 addresses) from a body. */
function nameAndIps(b: Record<string, unknown>): { name: string | undefined; ips: string[] } {
  const name = b.name;
  if (name !== undefined && (typeof name !== 'string' || name.length === 0 || name.length > 253)) {
    throw new InputError('"name" must be a DNS name');
  }
  const raw = b.ips ?? [];
  const ips = Array.isArray(raw) ? raw : [raw];
  if (ips.length > 64 || ips.some((ip) => typeof ip !== 'string'))
    throw new InputError('"ips" must be up to 64 IPv4 addresses');
  for (const ip of ips as string[]) parseIPv4(ip);
  return { name: name as string | undefined, ips: ips as string[] };
}

/**
 * attachAt reads an attach by network namespace path from a body: `netns` (absolute path),
 * `ifname` (inside) and `defaultRoute` (boolean); undefined when there is no `netns`.
 */
function attachAt(b: Record<string, unknown>): AttachAt | undefined {
  if (b.netns === undefined) return undefined;
  if (typeof b.netns !== 'string') throw new InputError('"netns" must be the path of a network namespace');
  if (typeof b.ifname !== 'string') throw new InputError('"ifname" (the interface name inside) must go with "netns"');
  if (b.defaultRoute !== undefined && typeof b.defaultRoute !== 'boolean') {
    throw new InputError('"defaultRoute" must be true or false');
  }
  return { netns: b.netns, ifname: b.ifname, ...(b.defaultRoute === true ? { defaultRoute: true } : {}) };
}

function requireAttacher(a: Attacher | undefined): Attacher {
  if (a === undefined) throw new WeftError('EWEFT_NOT_FOUND', 'this router does not attach containers');
  return a;
}

function send(res: ServerResponse, r: Reply): void {
  if (r.json !== undefined) {
    const body = `${JSON.stringify(r.json, null, 2)}\n`;
    res.writeHead(r.status ?? 200, {
      ...r.headers,
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
    });
    res.end(body);
  } else {
    const body = r.text ?? '';
    res.writeHead(r.status ?? 200, {
      ...r.headers,
      'content-type': r.contentType ?? 'text/plain; charset=utf-8',
      'content-length': Buffer.byteLength(body),
    });
    res.end(body);
  }
}

/** DISCARD_MAX_BYTES: past this much of an oversized body the connection is cut. */
const DISCARD_MAX_BYTES = 1024 * 1024;

/**
 * readBody collects the request body. An oversized one is refused (the caller answers 413 and
 * closes the connection) while the rest is read and discarded, up to DISCARD_MAX_BYTES.
 */
function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (refused) {
        if (size > DISCARD_MAX_BYTES) req.destroy();
        return;
      }
      if (size > BODY_MAX_BYTES) {
        refused = true;
        chunks.length = 0;
        reject(new InputError(`request body larger than ${BODY_MAX_BYTES} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function wantsJson(req: IncomingMessage, url: URL): boolean {
  return url.searchParams.get('format') === 'json' || (req.headers.accept ?? '').includes('application/json');
}

function pick(s: StatusView, part: string): unknown {
  return s[part as keyof StatusView];
}

function render(s: StatusView, part: string | undefined): string {
  switch (part) {
    case 'peers':
      return formatPeers(s);
    case 'connections':
      return formatConnections(s);
    case 'targets':
      return formatTargets(s);
    case 'ipam':
      return formatIpam(s);
    default:
      return formatStatus(s);
  }
}

/** parseBody reads a JSON object (every changing request is application/json); anything else is a 400. */
function parseBody(_req: IncomingMessage, body: Buffer): Record<string, unknown> {
  if (body.length === 0) return {};
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch {
    throw new InputError('request body is not valid JSON');
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json))
    throw new InputError('request body must be a JSON object');
  return json as Record<string, unknown>;
}

function field(req: IncomingMessage, url: URL, body: Buffer, name: string): string | undefined {
  const v = parseBody(req, body)[name] ?? url.searchParams.get(name) ?? undefined;
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new InputError(`"${name}" must be a string`);
  return v;
}

/**
 * checkTargetsBound refuses (EWEFT_CONFLICT, 409) a connect that would take the router's targets
 * beyond TARGETS_MAX: that many is all its state file holds, and a list it could not read back
 * would stop the next launch. Addresses already kept do not count twice.
 */
function checkTargetsBound(kept: readonly string[], adding: readonly string[]): void {
  const all = new Set(kept.map((t) => t.toLowerCase()));
  const before = all.size;
  for (const p of adding) all.add(p.toLowerCase());
  if (all.size <= TARGETS_MAX) return;
  throw new WeftError(
    'EWEFT_CONFLICT',
    `too many connection targets: ${before} kept and ${all.size - before} new would make ${all.size}, more than the limit of ${TARGETS_MAX}; forget some first (\`weft forget\`), or replace the list (\`weft connect --replace\`)`,
  );
}

function peerList(req: IncomingMessage, url: URL, body: Buffer): { peers: string[]; replace: boolean } {
  const b = parseBody(req, body);
  const raw = b.peers ?? b.peer ?? url.searchParams.getAll('peer');
  const list = Array.isArray(raw) ? raw : [raw];
  if (list.length === 0 || list.length > 1000) throw new InputError('want 1-1000 peers as host[:port]');
  const peers = list.map((p) => {
    if (typeof p !== 'string') throw new InputError('each peer must be a string host[:port]');
    try {
      return parsePeerAddress(p);
    } catch (err) {
      throw new InputError(errorMessage(err));
    }
  });
  const replace = b.replace === true || b.replace === 'true' || url.searchParams.get('replace') === 'true';
  return { peers, replace };
}
