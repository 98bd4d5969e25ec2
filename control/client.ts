import { request } from 'node:http';
import { WeftError } from '../common/errors.js';
import type { HostPort } from './config.js';

/** ApiResponse is a decoded HTTP API answer. */
export interface ApiResponse {
  status: number;
  body: string;
  json: unknown;
}

/**
 * ApiClient is the small HTTP client the CLI uses to reach the router of its network namespace.
 * Connection refused becomes a WeftError with code EWEFT_NOT_RUNNING.
 */
export class ApiClient {
  constructor(
    readonly addr: HostPort,
    private readonly timeoutMs = 10_000,
  ) {}

  /** call performs one request; `body` is sent as JSON. Never throws for an HTTP error status. */
  call(method: string, path: string, opts: { body?: unknown; json?: boolean } = {}): Promise<ApiResponse> {
    const payload = opts.body === undefined ? undefined : Buffer.from(JSON.stringify(opts.body));
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: this.addr.host,
          port: this.addr.port,
          method,
          path,
          timeout: this.timeoutMs,
          headers: {
            accept: opts.json ? 'application/json' : 'text/plain',
            ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
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
      req.on('timeout', () =>
        req.destroy(
          new WeftError('EWEFT_SYSTEM', `no answer from the router at ${this.where()} within ${this.timeoutMs} ms`),
        ),
      );
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT' || err.code === 'ECONNRESET') {
          reject(
            new WeftError(
              'EWEFT_NOT_RUNNING',
              `no weft router is running in this network namespace (nothing answers on ${this.where()}); start one with \`weft launch\``,
              { cause: err },
            ),
          );
        } else {
          reject(err);
        }
      });
      req.end(payload);
    });
  }

  /** ok performs a request and throws the router's error message for a non-2xx answer. */
  async ok(method: string, path: string, opts: { body?: unknown; json?: boolean } = {}): Promise<ApiResponse> {
    const r = await this.call(method, path, opts);
    if (r.status >= 200 && r.status < 300) return r;
    const j = r.json as { error?: string; code?: string } | undefined;
    const code = (j?.code as WeftError['code'] | undefined) ?? (r.status === 503 ? 'EWEFT_NOT_READY' : 'EWEFT_SYSTEM');
    throw new WeftError(code, j?.error ?? `router answered HTTP ${r.status}: ${r.body.trim().slice(0, 200)}`);
  }

  private where(): string {
    return `${this.addr.host}:${this.addr.port}`;
  }
}
