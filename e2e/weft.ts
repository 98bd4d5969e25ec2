import { execFile } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { ExecResult, Host, Lab, Netns } from '../lab/netns.js';
import { waitUntil } from '../lab/netns.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** ROOT is the repository root, whether this file runs from source (e2e/) or compiled (dist/e2e/). */
const ROOT = path.basename(path.dirname(here)) === 'dist' ? path.resolve(here, '../..') : path.resolve(here, '..');
/** CLI is the compiled `weft` entry point the e2e tests run inside namespaces. */
export const CLI = path.join(ROOT, 'dist/control/cli.js');
/** DAEMON_SCRIPT is the one-file build (`npm run build`) that `weft launch` runs the background router from. */
export const DAEMON_SCRIPT = path.join(ROOT, 'dist/weft.mjs');

/** stateDir returns a per-run, per-namespace state directory under the system temp dir. */
export function stateDir(ns: Netns): string {
  const d = path.join(tmpdir(), 'weft-e2e', ns.name);
  mkdirSync(d, { recursive: true });
  return d;
}

/**
 * removeStateDirs deletes the state directories of a topology's namespaces, and the API socket
 * directories (/run/weft/netns/NAME) a router that was killed leaves behind.
 */
export function removeStateDirs(topo: Lab): void {
  for (const name of topo.namespaces) {
    // WEFT_E2E_KEEP_STATE=1 keeps the state directories (weft.log, state.json) for a post-mortem.
    if (process.env.WEFT_E2E_KEEP_STATE !== '1')
      rmSync(path.join(tmpdir(), 'weft-e2e', name), { recursive: true, force: true });
    rmSync(path.join('/run/weft/netns', name), { recursive: true, force: true });
  }
}

/** weft runs the CLI in a namespace and rejects with its stderr when it fails (unless allowFail). */
export function weft(
  ns: Netns,
  args: string[],
  opts: { allowFail?: boolean; timeoutMs?: number } = {},
): Promise<ExecResult> {
  return ns.exec(process.execPath, [CLI, ...args], { allowFail: opts.allowFail, timeoutMs: opts.timeoutMs ?? 60_000 });
}

/** launch starts a router in `ns` with a run-id device name and its own state dir; returns the peer name. */
export async function launch(ns: Netns, peers: string[], flags: string[] = []): Promise<string> {
  const r = await weft(ns, ['launch', ...peers, '--device', ns.ifname('t'), '--state-dir', stateDir(ns), ...flags]);
  return r.stdout.trim();
}

/** status reads `weft status --json` from a namespace. */
export async function status(ns: Netns): Promise<StatusJson> {
  return JSON.parse((await weft(ns, ['status', '--json'])).stdout) as StatusJson;
}

/** StatusJson is the part of the router's status the tests read. */
export interface StatusJson {
  name: string;
  ready: boolean;
  nickname: string;
  mtu: number;
  encap: string;
  exposed: string[];
  peers: {
    name: string;
    nickname: string;
    encap: string;
    cidrs: string[];
    txPackets: number;
    rxPackets: number;
    state: string;
    rttMs?: number;
  }[];
  connections: { state: string; peer?: string }[];
  counters: {
    drops: Record<string, number>;
    udpRxPackets: number;
    tunTxPackets: number;
    arpReplies: number;
    learned: number;
  };
  learned: { ip: string; endpoint: string }[];
}

/**
 * waitPeers waits until the router in `ns` has `n` peers with a proven, routed data path. (Their
 * IPAM addresses are routed by the ring, so peers need not announce any address.)
 */
export async function waitPeers(ns: Netns, n: number, timeoutMs = 20_000): Promise<StatusJson> {
  let last: StatusJson | undefined;
  await waitUntil(
    async () => {
      last = await status(ns);
      return last.peers.length >= n && last.peers.every((p) => p.state === 'established');
    },
    { timeoutMs, what: `${ns.name} to connect to ${n} peer(s)` },
  );
  return last as StatusJson;
}

/**
 * expose runs `weft expose` with no CIDR in `ns`: the router takes an address from its IPAM share
 * (or returns the one it already has). Resolves to the printed address, e.g. `10.32.0.1`.
 */
export async function expose(ns: Netns): Promise<string> {
  const addr = (await weft(ns, ['expose'])).stdout.trim();
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(addr)) throw new Error(`weft expose in ${ns.name} printed "${addr}"`);
  return addr;
}

/**
 * routerPids lists the routers running in `ns`: the `weft launch --foreground` processes (run
 * from either entry point) found by `ip netns pids` and their command lines.
 */
export async function routerPids(ns: { readonly name: string }): Promise<number[]> {
  const { stdout } = await promisify(execFile)('ip', ['netns', 'pids', ns.name]);
  const found: number[] = [];
  for (const pid of stdout.split(/\s+/).filter((p) => /^\d+$/.test(p))) {
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
    const entry = argv.includes(CLI) || argv.includes(DAEMON_SCRIPT);
    if (entry && argv.includes('launch') && argv.includes('--foreground')) found.push(Number(pid));
  }
  return found;
}

/** routerPid returns the pid of the one router running in `ns`; rejects when there is none or more than one. */
export async function routerPid(ns: { readonly name: string }): Promise<number> {
  const found = await routerPids(ns);
  if (found.length !== 1) throw new Error(`expected one router in ${ns.name}, found pids [${found.join(', ')}]`);
  return found[0] as number;
}

/**
 * cutUnderlay drops everything between `host` and the underlay address(es) `peerIps`, both ways, in an
 * nftables table of `host`'s own namespace (named `table`); the returned function heals the cut.
 */
export async function cutUnderlay(
  host: Netns,
  peerIps: string | readonly string[],
  table = 'weftcut',
): Promise<() => Promise<void>> {
  const set = typeof peerIps === 'string' ? peerIps : `{ ${peerIps.join(', ')} }`;
  await host.exec('nft', ['-f', '-'], {
    input: `table inet ${table} {
  chain out { type filter hook output priority 0; ip daddr ${set} drop; }
  chain in { type filter hook input priority 0; ip saddr ${set} drop; }
}
`,
  });
  return async () => {
    await host.exec('nft', ['delete', 'table', 'inet', table]);
  };
}

/**
 * addBareVxlan makes `host` a bare kernel vxlan host (no router): a vxlan device on VNI `vni`,
 * Weft's port 6784, flooding to `peers`' underlay addresses, with address `cidr`, MTU 1450 and
 * software checksums (over veth nobody completes an offloaded inner checksum, as a NIC would).
 * Returns the device's name.
 */
export async function addBareVxlan(host: Host, vni: number, cidr: string, peers: readonly string[]): Promise<string> {
  const vx = host.ifname('vx');
  await host.ip(
    'link',
    'add',
    vx,
    'type',
    'vxlan',
    'id',
    String(vni),
    'dstport',
    '6784',
    'local',
    host.underlayIp,
    'dev',
    host.underlayDev,
  );
  for (const dst of peers) await host.exec('bridge', ['fdb', 'append', '00:00:00:00:00:00', 'dev', vx, 'dst', dst]);
  await host.ip('addr', 'add', cidr, 'dev', vx);
  await host.ip('link', 'set', vx, 'mtu', '1450', 'up');
  await host.exec('ethtool', ['-K', vx, 'tx', 'off']);
  return vx;
}
