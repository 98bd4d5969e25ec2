import { readFileSync } from 'node:fs';
import { type RequestOptions, request } from 'node:http';
import { WeftError, type WeftErrorCode } from '../common/errors.js';
import type { HostPort } from './config.js';

/** ApiResponse is a decoded HTTP API answer. */
export interface ApiResponse {
  status: number;
  body: string;
  json: unknown;
}

/** ApiClientOptions say how an ApiClient proves it may change the router. */
export interface ApiClientOptions {
  /**
   * socketPath is the router's unix socket, tried first: being able to connect to it (root, or the
   * `weft` group) is the credential. When it is absent, stale, or not ours to open, the client
   * falls back to TCP at `addr`.
   */
  socketPath?: string;
  /** token is sent over TCP as `Authorization: Bearer TOKEN`. */
  token?: string;
  /** tokenFile is read for the token when none is given; a file this user cannot read means no token. */
  tokenFile?: string;
}

/** REQUEST_TIMEOUT_MS is how long a request waits for the router's answer by default. */
export const REQUEST_TIMEOUT_MS = 10_000;
/**
 * ALLOCATING_TIMEOUT_MS is how long a request that takes an address (attach, expose) waits: longer
 * than the router's allocation deadline (ALLOCATE_TIMEOUT_MS, 20 s, router/ipam/service.ts), so
 * that the router's own answer, which says why no address came, reaches the user instead of a
 * timeout of ours.
 */
export const ALLOCATING_TIMEOUT_MS = 25_000;

/** FALLBACK_CODES are the socket errors that mean "not this way" (before anything was sent): try TCP. */
const FALLBACK_CODES = new Set(['ENOENT', 'ECONNREFUSED', 'EACCES', 'EPERM', 'ENOTDIR']);

/**
 * ApiClient is the small HTTP client the CLI uses to reach the router of its network namespace:
 * over its unix socket when it can, else over TCP with the bearer token when it has one.
 * Nothing answering either way becomes a WeftError with code EWEFT_NOT_RUNNING.
 */
export class ApiClient {
  /** socketDenied records that the socket exists but this user may not open it (for the error message). */
  private socketDenied = false;
  private tokenRead = false;
  private token: string | undefined;

  constructor(
    readonly addr: HostPort,
    private readonly timeoutMs = REQUEST_TIMEOUT_MS,
    private readonly opts: ApiClientOptions = {},
  ) {
    this.token = opts.token;
    this.tokenRead = opts.token !== undefined;
  }

  /**
   * call performs one request; `body` is sent as JSON, and every request but GET carries
   * `Content-Type: application/json` (the API refuses changes without it). Never throws for an
   * HTTP error status.
   */
  async call(method: string, path: string, opts: { body?: unknown; json?: boolean } = {}): Promise<ApiResponse> {
    const socketPath = this.opts.socketPath;
    let socketError: string | undefined;
    if (socketPath !== undefined) {
      try {
        const r = await this.send({ socketPath }, method, path, opts);
        this.socketDenied = false;
        return r;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? '';
        if (!FALLBACK_CODES.has(code)) throw this.failure(err as NodeJS.ErrnoException, method);
        this.socketDenied = code === 'EACCES' || code === 'EPERM';
        socketError = code;
      }
    }
    const token = this.readToken();
    try {
      return await this.send(
        {
          host: this.addr.host,
          port: this.addr.port,
          ...(token ? { headers: { authorization: `Bearer ${token}` } } : {}),
        },
        method,
        path,
        opts,
      );
    } catch (err) {
      throw this.failure(err as NodeJS.ErrnoException, method, socketError);
    }
  }

  /** ok performs a request and throws the router's error message for a non-2xx answer. */
  async ok(method: string, path: string, opts: { body?: unknown; json?: boolean } = {}): Promise<ApiResponse> {
    const r = await this.call(method, path, opts);
    if (r.status >= 200 && r.status < 300) return r;
    const j = r.json as { error?: string; code?: string } | undefined;
    const code =
      (j?.code as WeftErrorCode | undefined) ??
      (r.status === 503 ? 'EWEFT_NOT_READY' : r.status === 401 || r.status === 403 ? 'EWEFT_AUTH' : 'EWEFT_SYSTEM');
    let message = j?.error ?? `router answered HTTP ${r.status}: ${r.body.trim().slice(0, 200)}`;
    if (r.status === 401 && this.socketDenied && this.opts.socketPath !== undefined) {
      message += ` (${this.opts.socketPath}: permission denied for this user)`;
    }
    throw new WeftError(code, message);
  }

  private readToken(): string | undefined {
    if (!this.tokenRead && this.opts.tokenFile !== undefined) {
      this.tokenRead = true;
      try {
        this.token = readFileSync(this.opts.tokenFile, 'utf8').trim() || undefined;
      } catch {
        // not readable by this user (the file is root's, mode 0600): no token, reads only
      }
    }
    return this.token;
  }

  private send(
    target: RequestOptions,
    method: string,
    path: string,
    opts: { body?: unknown; json?: boolean },
  ): Promise<ApiResponse> {
    const changes = method !== 'GET' && method !== 'HEAD';
    const payload = opts.body === undefined ? undefined : Buffer.from(JSON.stringify(opts.body));
    return new Promise((resolve, reject) => {
      const req = request(
        {
          ...target,
          method,
          path,
          timeout: this.timeoutMs,
          headers: {
            ...target.headers,
            accept: opts.json ? 'application/json' : 'text/plain',
            ...(changes || payload
              ? { 'content-type': 'application/json', 'content-length': payload?.length ?? 0 }
              : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const body = Buffer.concat(chunks).toString('utf8');
            let json: unknown;
            if ((res.headers['content-type'] ?? '').includes('application/json')) {
              try {
                json = JSON.parse(body);
              } catch {
                json = undefined;
              }
            }
            resolve({ status: res.statusCode ?? 0, body, json });
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => {
        const where = target.socketPath ?? `${this.addr.host}:${this.addr.port}`;
        req.destroy(new WeftError('EWEFT_SYSTEM', `no answer from the router at ${where} within ${this.timeoutMs} ms`));
      });
      req.on('error', reject);
      req.end(payload);
    });
  }

  /**
   * failure turns "nothing answers" into EWEFT_NOT_RUNNING naming where we looked; other errors
   * pass. A connection the router reset after a change was sent (it was stopped or killed while
   * working on it) is EWEFT_INTERRUPTED instead: the change may have been made, and saying "no
   * router is running" would tell the user it was not.
   */
  private failure(err: NodeJS.ErrnoException, method: string, socketError?: string): Error {
    if (err.code === 'ECONNRESET' && method !== 'GET' && method !== 'HEAD') {
      return new WeftError(
        'EWEFT_INTERRUPTED',
        'the router went away before it answered (it was stopped or crashed while working on this); the change may or may not have been made: check with `weft ps` or `weft status` once it is back, or run the command again (attach, expose and names are idempotent)',
        { cause: err },
      );
    }
    if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT' || err.code === 'ECONNRESET') {
      const tried = [
        ...(this.opts.socketPath !== undefined && socketError !== 'EACCES' && socketError !== 'EPERM'
          ? [this.opts.socketPath]
          : []),
        `${this.addr.host}:${this.addr.port}`,
      ];
      return new WeftError(
        'EWEFT_NOT_RUNNING',
        `no weft router is running in this network namespace (nothing answers on ${tried.join(' or ')}); start one with \`weft launch\``,
        { cause: err },
      );
    }
    return err;
  }
}
