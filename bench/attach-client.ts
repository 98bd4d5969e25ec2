/**
 * attach-client runs inside a host's network namespace (started by bench/attach.ts): it attaches
 * the given containers one after another through the router's HTTP API, as `weft attach` does
 * (over the namespace's API socket, else TCP with the token from the state directory), timing
 * each call, then detaches them, and prints the timings as JSON on stdout.
 *
 *   node dist/bench/attach-client.js NS...
 */
import { ApiClient } from '../control/client.js';
import { clientTarget } from '../control/config.js';

const where = clientTarget({});
const api = new ApiClient(where.addr, 30_000, where);
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
