/**
 * NetnsInspector reads one interface and its routes inside a network namespace given by path, for
 * CHECK: `nsenter --net=PATH ip -j -force -batch -` (one process; `-force` goes on past a missing
 * device, so a missing interface reads as absent rather than as a failure to look).
 */

/** NetnsLink is an interface as `ip -j addr` shows it. */
export interface NetnsLink {
  ifname: string;
  mac: string | undefined;
  up: boolean;
  /** addrs are its IPv4 addresses with prefix, e.g. 10.32.0.5/12. */
  addrs: string[];
}

/** NetnsRoute is a route through the interface; `dst` is a CIDR (`default` becomes 0.0.0.0/0). */
export interface NetnsRoute {
  dst: string;
  gateway: string | undefined;
}

/** NetnsView is what CHECK compares with prevResult. */
export interface NetnsView {
  /** link is undefined when the namespace has no interface of that name. */
  link: NetnsLink | undefined;
  routes: NetnsRoute[];
}

/** NetnsInspector: see the module comment. Rejects when the namespace cannot be entered. */
export interface NetnsInspector {
  inspect(netns: string, ifname: string): Promise<NetnsView>;
}

/** parseIpBatch decodes the two JSON lines `addr show dev X` and `route show dev X` print. */
export function parseIpBatch(stdout: string, ifname: string): NetnsView {
  const lines = stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith('['));
  let link: NetnsLink | undefined;
  const routes: NetnsRoute[] = [];
  for (const line of lines) {
    const arr = JSON.parse(line) as Record<string, unknown>[];
    for (const o of arr) {
      if (typeof o.ifname === 'string' && o.ifname === ifname && Array.isArray(o.addr_info)) {
        const flags = Array.isArray(o.flags) ? (o.flags as string[]) : [];
        link = {
          ifname,
          mac: typeof o.address === 'string' ? o.address : undefined,
          up: flags.includes('UP'),
          addrs: (o.addr_info as { family?: string; local?: string; prefixlen?: number }[])
            .filter((a) => a.family === 'inet' && a.local !== undefined)
            .map((a) => `${a.local}/${a.prefixlen}`),
        };
      } else if (typeof o.dst === 'string') {
        routes.push({
          dst: o.dst === 'default' ? '0.0.0.0/0' : o.dst.includes('/') ? o.dst : `${o.dst}/32`,
          gateway: typeof o.gateway === 'string' ? o.gateway : undefined,
        });
      }
    }
  }
  return { link, routes };
}

/** nsenterInspector is the {@link NetnsInspector} of the real kernel. */
export const nsenterInspector: NetnsInspector = {
  async inspect(netns, ifname) {
    const { execFile } = await import('node:child_process');
    const stdout = await new Promise<string>((resolve, reject) => {
      const child = execFile(
        'nsenter',
        [`--net=${netns}`, 'ip', '-j', '-force', '-batch', '-'],
        { timeout: 5_000 },
        (err, out, stderr) => {
          // With -force, ip exits 1 when a line failed (a missing device); only no output at all is a failure to look.
          if (err !== null && out.trim() === '' && !/does not exist|Cannot find device/.test(stderr)) {
            reject(new Error(`cannot look inside ${netns}: ${(stderr || err.message).trim().split('\n')[0]}`));
            return;
          }
          resolve(out);
        },
      );
      child.stdin?.end(`addr show dev ${ifname}\nroute show dev ${ifname}\n`);
    });
    return parseIpBatch(stdout, ifname);
  },
};
