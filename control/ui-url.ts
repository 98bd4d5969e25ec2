/**
 * ui-url is what `weft ui` prints: the URL of the router's web page (`GET /ui`) from where its
 * TCP API listens (`api` in status), and how to reach it from elsewhere: an SSH tunnel from
 * another machine, a socat forward from outside a named network namespace, or the bearer token
 * the page needs when the API listens beyond loopback.
 */
import { HTTP_ADDR } from '../router/constants.js';
import type { ApiStatus } from './format.js';
import { UI_PATH } from './ui-assets.js';

/** UiWhere is what the lines depend on besides the router's answer. */
export interface UiWhere {
  /** hostname is this machine's name, for the SSH line. */
  hostname: string;
  /** netns is the `ip netns` name of the namespace the router runs in, unless it is the machine's own. */
  netns: string | undefined;
  /** tokenFile holds the bearer token (named when the API listens beyond loopback). */
  tokenFile: string;
}

/**
 * uiLines returns what `weft ui` prints for a router whose status has `api` (undefined: an older
 * router, assumed on the default address): the URL first, alone on its line, then how to reach it.
 */
export function uiLines(api: ApiStatus | undefined, where: UiWhere): string[] {
  const http = api?.http ?? HTTP_ADDR;
  const i = http.lastIndexOf(':');
  const host = http.slice(0, i);
  const port = http.slice(i + 1);
  const wildcard = host === '0.0.0.0';
  const local = wildcard ? '127.0.0.1' : host;
  const url = `http://${local}:${port}${UI_PATH}`;
  if (api?.loopback === false) {
    return [
      url,
      `the API listens on ${http}, beyond loopback: the page asks for the bearer token in ${where.tokenFile}`,
      `(or give it in the URL's fragment, which the browser never sends: ${url}#token=TOKEN)`,
      ...(wildcard ? [`from another machine: http://ADDRESS-OF-THIS-HOST:${port}${UI_PATH}`] : []),
    ];
  }
  const lines = [url];
  if (where.netns !== undefined) {
    // The browser must reach the namespace's loopback: a forward on this machine's loopback, same port
    // (the API checks that the Host header names the port it listens on).
    lines.push(
      `the router runs in network namespace ${where.netns}; to open it from a browser outside, as root: ` +
        `socat TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork EXEC:'ip netns exec ${where.netns} socat STDIO TCP\\:${local}\\:${port}'`,
    );
  }
  lines.push(
    `from another machine: ssh -N -L ${port}:127.0.0.1:${port} ${where.hostname}, then open http://127.0.0.1:${port}${UI_PATH} there (keep the same port: the API checks the Host header)`,
  );
  return lines;
}
