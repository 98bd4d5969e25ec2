import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';
import { errorMessage, InputError, isWeftError, WeftError, type WeftErrorCode } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { formatCidr, parseCidr, parseIPv4 } from '../common/types.js';
import type { Router, RouterStatus } from '../router/index.js';
import type { Attacher } from './attach.js';
import { parsePeerAddress } from './config.js';
import type { DnsService } from './dns.js';
import { formatConnections, formatDns, formatIpam, formatPeers, formatStatus, formatTargets } from './format.js';

/** BODY_MAX_BYTES bounds a request body; larger ones get 413. */
const BODY_MAX_BYTES = 64 * 1024;

/** ApiOptions configures the HTTP API. */
export interface ApiOptions {
  router: Router;
  /** attacher plugs containers in; without one the container endpoints answer 404. */
  attacher?: Attacher;
  metrics: Registry;
  log: Logger;
  /** onStop is called after a POST /stop has been answered. */
  onStop: () => void;
  /** onChange is called after connect/forget/expose/hide so the owner can persist state. */
  onChange?: () => void;
  /** dns serves `/status/dns` and the `/name/...` records; absent with --no-dns. */
  dns?: DnsService;
  /** onReset leaves the network for good (detach all, hand over address space, remove state, stop). */
  onReset?: () => Promise<{ heir: string | undefined; addresses: number }>;
}

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
}

/**
 * createApi builds the HTTP API server (not yet listening). Every request is answered; bad
 * input gets a 4xx with a one-line message, never a crash. Until the router is ready every
 * endpoint answers 503.
 */
export function createApi(opts: ApiOptions): Server {
  const { router, metrics, log } = opts;
  const statusView =
    (part: string | undefined) =>
    (req: IncomingMessage, url: URL): Reply => {
      const s = router.status();
      if (wantsJson(req, url)) return { json: part === undefined ? s : pick(s, part) };
      return { text: render(s, part) };
    };
  const routes: Record<string, Handler> = {
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
      const a = await attacher.attach(
        b.target,
        (cidrs as string[]).map((c) => parseCidr(c)),
        b.name as string | undefined,
      );
      return { json: a };
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

  return createServer((req, res) => {
    handle(req, res).catch((err) => {
      log.error('http handler failed', { err: errorMessage(err) });
      if (!res.headersSent) send(res, { status: 500, json: { error: 'internal error' } });
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://localhost');
    } catch {
      send(res, { status: 400, json: { error: 'bad request URL', code: 'EWEFT_INPUT' } });
      return;
    }
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const route = routes[`${req.method} ${path}`];
    if (route === undefined) {
      const known = Object.keys(routes).some((k) => k.endsWith(` ${path}`));
      send(res, {
        status: known ? 405 : 404,
        json: { error: known ? `method ${req.method} not allowed on ${path}` : `no such endpoint ${path}` },
      });
      return;
    }
    let body: Buffer;
    try {
      body = await readBody(req);
    } catch (err) {
      res.setHeader('connection', 'close');
      send(res, { status: 413, json: { error: errorMessage(err), code: 'EWEFT_INPUT' } });
      return;
    }
    if (!router.isReady && path !== '/stop' && path !== '/reset') {
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

function requireAttacher(a: Attacher | undefined): Attacher {
  if (a === undefined) throw new WeftError('EWEFT_NOT_FOUND', 'this router does not attach containers');
  return a;
}

function send(res: ServerResponse, r: Reply): void {
  if (r.json !== undefined) {
    const body = `${JSON.stringify(r.json, null, 2)}\n`;
    res.writeHead(r.status ?? 200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  } else {
    const body = r.text ?? '';
    res.writeHead(r.status ?? 200, {
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

function pick(s: RouterStatus, part: string): unknown {
  return s[part as keyof RouterStatus];
}

function render(s: RouterStatus, part: string | undefined): string {
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

/** parseBody reads a JSON object or an urlencoded form; anything else is a 400. */
function parseBody(req: IncomingMessage, body: Buffer): Record<string, unknown> {
  if (body.length === 0) return {};
  const type = req.headers['content-type'] ?? '';
  const text = body.toString('utf8');
  if (type.includes('application/x-www-form-urlencoded')) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of new URLSearchParams(text)) {
      const prev = out[k];
      out[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
    }
    return out;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
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
