/**
 * attach-client runs inside a host's network namespace (started by bench/attach.ts): it attaches
 * the given containers one after another through the router's HTTP API, as `weft attach` does,
 * timing each call, then detaches them, and prints the timings as JSON on stdout.
 *
 *   node dist/bench/attach-client.js NS...
 */
import { ApiClient } from '../control/client.js';
import { HTTP_ADDR } from '../router/index.js';

const [host, port] = HTTP_ADDR.split(':') as [string, string];
const api = new ApiClient({ host, port: Number(port) }, 30_000);
const targets = process.argv.slice(2);
const attachMs: number[] = [];
const detachMs: number[] = [];
for (const target of targets) {
  const t0 = performance.now();
  await api.ok('POST', '/attach', { body: { target }, json: true });
  attachMs.push(performance.now() - t0);
}
for (const target of targets) {
  const t0 = performance.now();
  await api.ok('POST', '/detach', { body: { target }, json: true });
  detachMs.push(performance.now() - t0);
}
process.stdout.write(`${JSON.stringify({ attachMs, detachMs })}\n`);
