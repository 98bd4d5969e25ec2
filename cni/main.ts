#!/usr/bin/env node
/**
 * The `weft` CNI plugin executable (spec 1.0/1.1): reads the CNI_* environment and the network
 * configuration on stdin, prints the result or error on stdout, exits 0 or 1. Install it in the
 * runtime's CNI bin directory under the name `weft` (cni/install.sh, or a link to `weft-cni`).
 *
 * Kept small on purpose: it loads node:http, node:fs and the files of cni/ only (no router, no
 * CLI), because a runtime starts it for every pod operation.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { netnsIdentity } from '../control/state-dir.js';
import { CniCode, CniError } from './errors.js';
import { LATEST_VERSION } from './netconf.js';
import { nsenterInspector } from './netns-inspector.js';
import { runPlugin } from './plugin.js';
import { SocketRouterApi } from './router-api.js';

/** RUN_ROOT and API_SOCKET_NAME lay out the routers' sockets as control/config.ts does (one per network namespace). */
const RUN_ROOT = '/run/weft';
const API_SOCKET_NAME = 'weft.sock';

/** defaultSocket is the API socket of the router of this network namespace (see control/config.ts defaultApiSocket). */
function defaultSocket(): string {
  const id = netnsIdentity();
  if (id.root) return path.join(RUN_ROOT, API_SOCKET_NAME);
  if (id.name !== undefined) return path.join(RUN_ROOT, 'netns', id.name, API_SOCKET_NAME);
  return path.join(RUN_ROOT, 'netns-ino', String(id.inode), API_SOCKET_NAME);
}

let stdin = '';
try {
  stdin = readFileSync(0, 'utf8');
} catch (err) {
  const code = (err as NodeJS.ErrnoException).code;
  // No stdin at all (closed, a terminal) is an empty configuration; anything else is an I/O failure.
  if (code !== 'EAGAIN' && code !== 'EOF' && code !== 'ENXIO') {
    const e = new CniError(CniCode.Io, 'cannot read the network configuration from stdin', String(err));
    process.stdout.write(`${JSON.stringify(e.toJson(LATEST_VERSION))}\n`);
    process.exit(1);
  }
}
const out = await runPlugin({
  env: process.env,
  stdin,
  api: (socket) => new SocketRouterApi(socket),
  inspector: nsenterInspector,
  exists: existsSync,
  defaultSocket,
});
process.stdout.write(out.stdout);
process.exitCode = out.exitCode;
