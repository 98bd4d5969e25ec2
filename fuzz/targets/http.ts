/**
 * HTTP bodies: the real API server (control/http.ts createApi) over TCP on 127.0.0.1 port 0, in
 * front of a real Router from MemoryMesh, with its DNS service, asked through one keep-alive
 * connection the way the CLI asks (bearer token, application/json), with fuzzed bodies.
 *
 * Input: | ctl (1) | body ... |
 *   ctl bits 0-3: the endpoint (POST /connect, /forget, /expose, /hide, /rmpeer, /name/add,
 *                 /name/remove, /attach, /detach, /reset, and GET /name?name=BODY)
 *   ctl bits 4-5: 0 as the CLI sends it; 1 no token; 2 content-type text/plain; 3 a foreign Host
 *
 * Properties: every request is answered with a 2xx or a 4xx/503 JSON body that parses, never a
 * 500 (an exception the handler did not expect) and never silence; the server keeps serving.
 *
 * `router.connect` is replaced by a validating stand-in (the same parseTarget, through `forget`)
 * that never dials: fuzzed bodies name arbitrary hosts, and a fuzzer must send nothing to them.
 */

import type { Server } from 'node:http';
import { Agent, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as fc from 'fast-check';
import { noopLogger } from '../../common/log.js';
import { parseCidr } from '../../common/types.js';
import { DnsService } from '../../control/dns.js';
import { createApi } from '../../control/http.js';
import { createMetrics } from '../../control/metrics.js';
import { MemoryMesh } from '../../router/testing/memory-router.js';
import { concat } from '../mutator.js';
import { cidrText, dnsName, oddValue, Pool } from '../structured.js';
import { check, type FuzzTarget } from '../target.js';

const TOKEN = 'f'.repeat(64);
const ENDPOINTS = [
  '/connect',
  '/forget',
  '/expose',
  '/hide',
  '/rmpeer',
  '/name/add',
  '/name/remove',
  '/attach',
  '/detach',
  '/reset',
  'GET /name',
] as const;
/** ALLOWED are the statuses the API may answer with; 500 means an exception it did not expect. */
const ALLOWED = new Set([200, 400, 401, 403, 404, 405, 409, 413, 415, 503]);

const bodies = [
  { peers: ['192.168.1.10'] },
  { peers: ['10.0.0.1:6783', 'host-b'], replace: true },
  { cidr: '10.96.0.9/12' },
  {},
  { peer: '02:00:00:00:00:02' },
  { name: 'db', ips: ['10.96.0.5'] },
  { name: 'db' },
  { target: 'web', cidrs: ['10.96.1.5/12'], name: 'db' },
  { target: 'web' },
];

function seeds(): Uint8Array[] {
  const enc = new TextEncoder();
  const out: Uint8Array[] = [];
  for (let e = 0; e < ENDPOINTS.length; e++) {
    for (const b of bodies) out.push(concat(Uint8Array.of(e), enc.encode(JSON.stringify(b))));
  }
  out.push(concat(Uint8Array.of(10), enc.encode('db')));
  out.push(concat(Uint8Array.of(0x10), enc.encode(JSON.stringify(bodies[0]))));
  out.push(concat(Uint8Array.of(0x20), enc.encode(JSON.stringify(bodies[0]))));
  out.push(concat(Uint8Array.of(0x30), enc.encode(JSON.stringify(bodies[0]))));
  return out;
}

const jsonBodies = new Pool(
  fc.tuple(
    fc.nat(10),
    fc.oneof(
      fc.record(
        {
          peers: fc.oneof(
            fc.array(
              fc.oneof(fc.constantFrom('10.0.0.1', 'a:1', '[::1]:6783', 'x'.repeat(300)), fc.string(), oddValue),
              { maxLength: 3 },
            ),
            oddValue,
          ),
          replace: fc.oneof(fc.boolean(), oddValue),
          cidr: fc.oneof(cidrText, oddValue),
          cidrs: fc.oneof(fc.array(cidrText, { maxLength: 3 }), oddValue),
          peer: fc.oneof(fc.constantFrom('02:00:00:00:00:01', '02:00:00:00:00:02', 'r1', ''), fc.string()),
          name: fc.oneof(dnsName, oddValue),
          ips: fc.oneof(
            fc.array(fc.oneof(fc.constantFrom('10.96.0.5', '10.96.0.300', '::1'), fc.string()), { maxLength: 3 }),
            oddValue,
          ),
          target: fc.oneof(fc.constantFrom('web', '1', '../x', ''), fc.string(), oddValue),
        },
        { requiredKeys: [] },
      ),
      fc.jsonValue(),
    ),
  ),
  (v) => {
    const [e, body] = v as [number, unknown];
    try {
      return concat(Uint8Array.of(e), new TextEncoder().encode(JSON.stringify(body) ?? ''));
    } catch {
      return undefined;
    }
  },
  61,
);

let mesh: MemoryMesh | undefined;
let server: Server | undefined;
let port = 0;
let agent: Agent | undefined;
let stops = 0;

/** httpBodies fuzzes the HTTP API's request handling with fuzzed JSON bodies. */
export const httpBodies: FuzzTarget = {
  name: 'http-bodies',
  parsers: [
    'control/http.ts: createApi request handler (refuseForeign, checkToken, readBody, parseBody, peerList, field, nameAndIps, every POST route)',
    'router/router.ts: connect/forget (parseTarget), expose/hide (parseCidr), rmpeer; control/dns.ts: DnsService.add/remove',
  ],
  maxLen: 2048,
  seeds,
  generate: (rand) => jsonBodies.next(rand),
  async setup(): Promise<void> {
    mesh = new MemoryMesh();
    const { router } = await mesh.add({ ipallocRange: parseCidr('10.96.0.0/12') });
    // Never dial what a fuzzed body names: validate as connect does (parseTarget), then keep nothing.
    router.connect = (targets: readonly string[]) => router.forget(targets);
    const dns = new DnsService({
      router,
      range: parseCidr('10.96.0.0/12'),
      domain: 'weft.local',
      ttl: 1,
      port: 53,
      upstreams: [],
      incarnation: 1,
      log: noopLogger,
    });
    server = createApi({
      router,
      metrics: createMetrics(router, dns),
      log: noopLogger,
      onStop: () => stops++,
      dns,
      token: TOKEN,
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
    agent = new Agent({ keepAlive: true, maxSockets: 1 });
  },
  async teardown(): Promise<void> {
    agent?.destroy();
    server?.closeAllConnections();
    await new Promise((r) => (server === undefined ? r(undefined) : server.close(r)));
    await mesh?.stop();
    server = undefined;
    mesh = undefined;
  },
  run(input: Uint8Array): Promise<string> {
    if (input.length === 0 || agent === undefined) return Promise.resolve('empty');
    const ctl = input[0] as number;
    const ep = ENDPOINTS[(ctl & 15) % ENDPOINTS.length] as string;
    const variant = (ctl >>> 4) & 3;
    const body = Buffer.from(input.buffer, input.byteOffset + 1, input.length - 1);
    const get = ep.startsWith('GET ');
    const path = get ? `/name?name=${encodeURIComponent(body.toString('latin1'))}` : ep;
    const headers: Record<string, string> = { host: variant === 3 ? 'evil.example' : `127.0.0.1:${port}` };
    if (!get) {
      headers['content-type'] = variant === 2 ? 'text/plain' : 'application/json';
      headers['content-length'] = String(body.length);
      if (variant !== 1) headers.authorization = `Bearer ${TOKEN}`;
    }
    return new Promise<string>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, method: get ? 'GET' : 'POST', path, headers, agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          try {
            const status = res.statusCode ?? 0;
            check(ALLOWED.has(status), `${ep} answered ${status}: ${Buffer.concat(chunks).toString().slice(0, 200)}`);
            const text = Buffer.concat(chunks).toString('utf8');
            let json: unknown;
            try {
              json = JSON.parse(text);
            } catch {
              check(false, `${ep} answered ${status} with a body that is not JSON: ${text.slice(0, 100)}`);
            }
            check(typeof json === 'object' && json !== null, `${ep} answered ${status} with ${text.slice(0, 100)}`);
            const code = (json as { code?: string }).code;
            resolve(`${ep}:${status}:${code ?? ''}`);
          } catch (err) {
            reject(err);
          }
        });
        res.on('error', reject);
      });
      req.on('error', (err) => reject(new Error(`${ep}: no answer: ${err.message}`)));
      req.end(get ? undefined : body);
    });
  },
};
