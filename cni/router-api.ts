/**
 * RouterApi is what the CNI plugin asks of its node's router, over the router's HTTP API on its
 * unix socket (control/http.ts): attach by namespace path, detach, list, IPAM status. A small
 * client of its own rather than control/client.ts: the plugin must never fall back to TCP (whose
 * changes need a token it does not have) and must load nothing but node:http.
 */
import { request } from 'node:http';

/** AttachRequest is `POST /attach` by namespace path (see control/attach.ts AttachAt). */
export interface AttachRequest {
  /** target is the owner key (`NETWORK:CONTAINERID:IFNAME`). */
  target: string;
  netns: string;
  ifname: string;
  defaultRoute: boolean;
  /** name is a DNS name to register for the pod (a DNS label). */
  name?: string;
}

/** AttachRecord is one entry of `GET /ps` (control/attach.ts AttachedContainer). */
export interface AttachRecord {
  target: string;
  /** ifname is the host side of the veth pair. */
  ifname: string;
  cidrs: string[];
  mac?: string;
  name?: string;
  netns?: string;
  containerIfname?: string;
  state?: string;
}

/** AttachReply is the answer to an attach by path: the record plus what a CNI result needs. */
export interface AttachReply extends AttachRecord {
  mtu?: number;
  /** gateway is the host's overlay address: the pod's default gateway and DNS server. */
  gateway?: string;
  dns?: { nameservers: string[]; search: string[] };
}

/** IpamSummary is the part of `GET /status/ipam` STATUS reads. */
export interface IpamSummary {
  state: string;
  message?: string;
  seeded: boolean;
  owned: number;
  used: number;
  peers?: { self: boolean; free: number; reachable: boolean }[];
  conflicts?: string[];
  persistFailing?: boolean;
}

/** RouterApi: see the module comment. Every method rejects with {@link RouterDown} or {@link RouterRefused}. */
export interface RouterApi {
  attach(req: AttachRequest): Promise<AttachReply>;
  /** detach resolves false when the router holds no such attachment (already gone). */
  detach(target: string): Promise<boolean>;
  list(): Promise<AttachRecord[]>;
  ipam(): Promise<IpamSummary>;
}

/** RouterDown: nothing answers on the socket (no router, or it is restarting). */
export class RouterDown extends Error {
  constructor(
    readonly socket: string,
    readonly errno: string,
  ) {
    super(`no weft router answers on ${socket} (${errno})`);
    this.name = 'RouterDown';
  }
}

/** RouterRefused: the router answered with an error status; `code` is its EWEFT_* code when it gave one. */
export class RouterRefused extends Error {
  constructor(
    readonly status: number,
    readonly code: string | undefined,
    message: string,
  ) {
    super(message);
    this.name = 'RouterRefused';
  }
}

/** ATTACH_TIMEOUT_MS: an attach may wait for an address (the router gives up after 20 s and says why). */
export const ATTACH_TIMEOUT_MS = 25_000;
/** REQUEST_TIMEOUT_MS bounds every other request. */
export const REQUEST_TIMEOUT_MS = 10_000;

/** SocketRouterApi is the {@link RouterApi} over the router's unix socket. */
export class SocketRouterApi implements RouterApi {
  constructor(readonly socket: string) {}

  async attach(req: AttachRequest): Promise<AttachReply> {
    return (await this.call('POST', '/attach', req, ATTACH_TIMEOUT_MS)) as AttachReply;
  }

  async detach(target: string): Promise<boolean> {
    try {
      await this.call('POST', '/detach', { target }, REQUEST_TIMEOUT_MS);
      return true;
    } catch (err) {
      if (err instanceof RouterRefused && err.status === 404 && err.code === 'EWEFT_NOT_FOUND') return false;
      throw err;
    }
  }

  async list(): Promise<AttachRecord[]> {
    return (await this.call('GET', '/ps', undefined, REQUEST_TIMEOUT_MS)) as AttachRecord[];
  }

  async ipam(): Promise<IpamSummary> {
    return (await this.call('GET', '/status/ipam?format=json', undefined, REQUEST_TIMEOUT_MS)) as IpamSummary;
  }

  /** call sends one request and resolves the decoded JSON of a 2xx answer. */
  private call(method: string, path: string, body: unknown, timeoutMs: number): Promise<unknown> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socket,
          method,
          path,
          timeout: timeoutMs,
          headers: {
            host: 'localhost',
            accept: 'application/json',
            ...(method === 'GET' ? {} : { 'content-type': 'application/json', 'content-length': payload?.length ?? 0 }),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let json: unknown;
            try {
              json = JSON.parse(text);
            } catch {
              json = undefined;
            }
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300) {
              resolve(json);
              return;
            }
            const e = json as { error?: unknown; code?: unknown } | undefined;
            reject(
              new RouterRefused(
                status,
                typeof e?.code === 'string' ? e.code : undefined,
                typeof e?.error === 'string' ? e.error : `router answered HTTP ${status}: ${text.trim().slice(0, 200)}`,
              ),
            );
          });
        },
      );
      req.on('timeout', () =>
        req.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })),
      );
      req.on('error', (err: NodeJS.ErrnoException) => {
        const code = err.code ?? 'EIO';
        // Nothing listening (no socket, stale socket, cut while restarting): the router is down.
        if (['ENOENT', 'ECONNREFUSED', 'ECONNRESET', 'ENOTDIR', 'ETIMEDOUT', 'EPIPE'].includes(code)) {
          reject(new RouterDown(this.socket, code));
        } else reject(err);
      });
      req.end(payload);
    });
  }
}
