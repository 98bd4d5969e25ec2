import { execFile } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { promisify } from 'node:util';
import { WeftError } from '../common/errors.js';
import { Lab, MAX_PREFIX_LEN as MAX_LAB_PREFIX_LEN, type Netns, removeLab } from '../lab/netns.js';

const run = promisify(execFile);

/** DEFAULT_PREFIX names everything the demo creates, so `weft demo --down` finds it again. */
export const DEFAULT_PREFIX = 'weftdemo';
/** DEMO_DEFAULT_HOSTS is how many hosts `weft demo` builds unless told otherwise. */
export const DEMO_DEFAULT_HOSTS = 3;
/** DEMO_CONTAINERS_PER_HOST is how many containers (network namespaces) the demo attaches on each host. */
export const DEMO_CONTAINERS_PER_HOST = 2;
const UNDERLAY_NET = '192.168.211';
/** DEMO_PING_COUNT is how many packets each ping of the demo's table sends. */
const DEMO_PING_COUNT = 3;
/** CONNECT_TIMEOUT_MS bounds the wait for discovery to connect every host to every other. */
const CONNECT_TIMEOUT_MS = 30_000;
/** REACH_TIMEOUT_MS bounds the wait for a container's address to be routed (ring gossip) from another host. */
const REACH_TIMEOUT_MS = 20_000;
/** STOP_GRACE_MS is how long the routers get between SIGTERM and SIGKILL on teardown. */
const STOP_GRACE_MS = 3_000;

/** DemoOptions configures `weft demo`. */
export interface DemoOptions {
  /** hosts is how many hosts to build (default DEMO_DEFAULT_HOSTS). */
  hosts?: number;
  encap: 'sleeve' | 'vxlan';
  keep: boolean;
  down: boolean;
  /** cli is the path of the weft CLI script to run inside each host. */
  cli: string;
  /** prefix names the namespaces (`<prefix>-h1`, `<prefix>-h1c1`...); default DEFAULT_PREFIX. */
  prefix?: string;
  /** print receives the demo's narration (default: stdout). */
  print?: (line: string) => void;
}

/** DemoContainer is one container of the demo: a network namespace attached to a host's router. */
interface DemoContainer {
  /** label is the short name used in the ping table, e.g. `h1c2`. */
  label: string;
  /** ns is the network namespace, `<prefix>-h1c2`. */
  ns: string;
  /** netns runs commands in it. */
  netns: Netns;
  /** host is the namespace of the host whose router attached it. */
  host: string;
  /** hostIndex is the index of that host in the demo's host list. */
  hostIndex: number;
  /** index counts the containers of one host from 1. */
  index: number;
  /** addr is the address IPAM gave it. */
  addr: string;
}

/**
 * runDemo builds `hosts` hosts from network namespaces joined by a bridge (the "underlay"),
 * launches a router in each (each told only about the one before), gives each host an overlay
 * address from IPAM (the first host seeds the ring), attaches DEMO_CONTAINERS_PER_HOST containers
 * (network namespaces) to each host with addresses from IPAM, and shows a table of pings from every
 * container to the first container of each other host, then the routers' status and IPAM ring.
 * Everything it creates is named `<prefix>-*` and removed at the end (or by `--down` after `--keep`).
 * Throws EWEFT_SYSTEM when a step fails or a ping of the table lost packets (after removing the hosts).
 */
export async function runDemo(o: DemoOptions): Promise<void> {
  const print = o.print ?? ((l: string) => process.stdout.write(`${l}\n`));
  const prefix = o.prefix ?? DEFAULT_PREFIX;
  const hostCount = o.hosts ?? DEMO_DEFAULT_HOSTS;
  const stateRoot = `/run/weft-demo/${prefix}`;
  const teardown = () => removeDemo(prefix, stateRoot);
  if (`${prefix}-`.length > MAX_LAB_PREFIX_LEN || !/^[a-z][a-z0-9-]*$/.test(prefix)) {
    throw new WeftError(
      'EWEFT_CONFIG',
      `invalid demo prefix "${prefix}": lower-case letters, digits and dashes, at most ${MAX_LAB_PREFIX_LEN - 1} characters`,
    );
  }
  if (o.down) {
    await teardown();
    print('demo hosts removed');
    return;
  }
  if (process.getuid?.() !== 0)
    throw new WeftError('EWEFT_SYSTEM', 'weft demo creates network namespaces: run it as root');
  if (!existsSync('/dev/net/tun'))
    throw new WeftError('EWEFT_TUN_OPEN', '/dev/net/tun is missing: the demo needs TUN devices');
  await teardown();
  const underlay = `${UNDERLAY_NET}.0/24`;
  const hosts = Array.from({ length: hostCount }, (_, i) => `${prefix}-h${i + 1}`);
  print(`building ${hostCount} hosts (network namespaces ${hosts.join(', ')}) on a bridged underlay ${underlay}`);
  // The same lab the e2e tests and benches build (lab/netns.ts), kept past this process for --keep.
  const lab = await Lab.create({ hosts: hostCount, prefix: `${prefix}-`, persistent: true, underlayNet: underlay });
  try {
    for (const [i, h] of hosts.entries()) {
      // Each host is told only about the one before it: discovery turns the chain into a mesh.
      const peers = i === 0 ? [] : [`${UNDERLAY_NET}.${i}`];
      const name = await weft(o.cli, h, 'launch', ...peers, '--encap', o.encap, '--state-dir', `${stateRoot}/${h}`);
      // The first host's expose seeds the IPAM ring with the whole range; the others ask a peer for space.
      const addr = (await weft(o.cli, h, 'expose')).trim();
      const told = peers.length === 0 ? 'the first host, seeds the address ring' : `told only about ${peers[0]}`;
      print(`  ${h}: router ${name.trim()} launched (${told}), host address ${addr}`);
    }
    print('waiting for discovery to connect every host to every other...');
    await waitConnected(o.cli, hosts);

    print(`attaching ${DEMO_CONTAINERS_PER_HOST} containers (network namespaces) to each host with \`weft attach\`:`);
    const containers: DemoContainer[] = [];
    for (const [i, h] of hosts.entries()) {
      for (let k = 1; k <= DEMO_CONTAINERS_PER_HOST; k++) {
        const label = `h${i + 1}c${k}`;
        const netns = await lab.addNamespace(label);
        const ns = netns.name;
        const addr = (await weft(o.cli, h, 'attach', ns, '--name', label)).trim();
        containers.push({ label, ns, netns, host: h, hostIndex: i, index: k, addr });
        print(`  container ${ns} on ${h}: ${addr}, named ${label}.weft.local`);
      }
    }

    const failed = (await pingTable(containers, print)) + (await nameTable(containers, print));

    print(`\n$ ip netns exec ${hosts[0]} weft status`);
    print((await weft(o.cli, hosts[0] as string, 'status')).trimEnd());
    print(`\n$ ip netns exec ${hosts[0]} weft ps`);
    print((await weft(o.cli, hosts[0] as string, 'ps')).trimEnd());
    print(`\n$ ip netns exec ${hosts[0]} weft status ipam`);
    print((await weft(o.cli, hosts[0] as string, 'status', 'ipam')).trimEnd());
    if (failed > 0) throw new WeftError('EWEFT_SYSTEM', `${failed} ping(s) or name lookup(s) of the tables failed`);
    if (o.keep) {
      print(`\n$ ip netns exec ${hosts[0]} weft ui    # the web page of ${hosts[0]}'s router: the mesh, live`);
      print((await weft(o.cli, hosts[0] as string, 'ui')).trimEnd());
      print(
        `\nhosts left running: try \`ip netns exec ${hosts[0]} weft status peers\` or ` +
          `\`ip netns exec ${containers[0]?.ns} ping ${containers[containers.length - 1]?.addr}\`; ` +
          'remove them with `weft demo --down`',
      );
      return;
    }
  } catch (err) {
    await teardown();
    throw err;
  }
  await teardown();
  print('\ndemo hosts removed');
}

/**
 * pingTable pings, from every container, the first container of each other host: first until one
 * reply comes back (a host hears another's share of the ring by gossip, a moment after it joins),
 * then DEMO_PING_COUNT packets, shown as a table. Returns how many pings lost packets.
 */
async function pingTable(containers: DemoContainer[], print: (line: string) => void): Promise<number> {
  const targets = containers.filter((c) => c.index === 1);
  const rows: string[][] = [['from \\ to', ...targets.map((t) => `${t.label} ${t.addr}`)]];
  let total = 0;
  let full = 0;
  for (const c of containers) {
    const row = [`${c.label} ${c.addr}`];
    for (const t of targets) {
      if (t.hostIndex === c.hostIndex) {
        row.push('-');
        continue;
      }
      await waitReach(c, t);
      const p = await c.netns.ping(t.addr, { count: DEMO_PING_COUNT });
      total++;
      if (p.received === p.transmitted) full++;
      row.push(`${p.received}/${p.transmitted}${Number.isNaN(p.rttAvgMs) ? '' : ` ${p.rttAvgMs.toFixed(2)} ms`}`);
    }
    rows.push(row);
  }
  print(
    `\nping from every container to the first container of each other host (${DEMO_PING_COUNT} packets: received/sent, avg rtt):`,
  );
  const widths = (rows[0] as string[]).map((_, col) => Math.max(...rows.map((r) => (r[col] ?? '').length)));
  for (const r of rows) print(`  ${r.map((cell, col) => cell.padEnd(widths[col] ?? 0)).join('  ')}`.trimEnd());
  print(`${full}/${total} pings answered in full`);
  return total - full;
}

/** waitReach waits until `from` gets one reply from `to`, or REACH_TIMEOUT_MS passes (the table then shows the loss). */
async function waitReach(from: DemoContainer, to: DemoContainer): Promise<void> {
  const deadline = Date.now() + REACH_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if ((await from.netns.ping(to.addr, { count: 1 })).received > 0) return;
  }
}

/**
 * nameTable looks up, from the first container, the name of the first container of every other
 * host with `getent hosts` (the container's resolver is its router's DNS, set up by attach).
 * Returns how many lookups failed or gave a wrong address.
 */
async function nameTable(containers: DemoContainer[], print: (line: string) => void): Promise<number> {
  const from = containers[0];
  if (from === undefined) return 0;
  const targets = containers.filter((c) => c.index === 1 && c.hostIndex !== from.hostIndex);
  print(`\nname lookups from ${from.label} (\`getent hosts NAME\` inside the container):`);
  let failed = 0;
  for (const t of targets) {
    let got = '';
    for (let i = 0; i < 50 && got === ''; i++) {
      got = await from.netns.exec('getent', ['hosts', t.label], { allowFail: true, timeoutMs: 5_000 }).then(
        (r) => (r.code === 0 ? (r.stdout.trim().split(/\s+/)[0] ?? '') : ''),
        () => '',
      );
      if (got === '') await new Promise((r) => setTimeout(r, 200));
    }
    const ok = got === t.addr;
    if (!ok) failed++;
    print(`  ${t.label.padEnd(6)} → ${got || 'not found'}${ok ? '' : `  (expected ${t.addr})`}`);
  }
  return failed;
}

async function waitConnected(cli: string, hosts: string[]): Promise<void> {
  const deadline = Date.now() + CONNECT_TIMEOUT_MS;
  for (const h of hosts) {
    for (;;) {
      const s = JSON.parse(await weft(cli, h, 'status', '--json')) as { peers: { state: string }[] };
      const ready = s.peers.filter((p) => p.state === 'established');
      if (ready.length >= hosts.length - 1) break;
      if (Date.now() > deadline)
        throw new WeftError(
          'EWEFT_SYSTEM',
          `${h} did not connect to every other host within ${CONNECT_TIMEOUT_MS / 1000} s`,
        );
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/**
 * removeDemo stops the routers of every `<prefix>-*` namespace (SIGTERM, SIGKILL after
 * STOP_GRACE_MS), then deletes the namespaces (hosts, containers and switch) and the state.
 */
async function removeDemo(prefix: string, stateRoot: string): Promise<void> {
  await removeLab(`${prefix}-`, STOP_GRACE_MS);
  rmSync(stateRoot, { recursive: true, force: true });
}

async function weft(cli: string, host: string, ...args: string[]): Promise<string> {
  try {
    const { stdout } = await run('ip', ['netns', 'exec', host, process.execPath, cli, ...args], { timeout: 60_000 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string };
    throw new WeftError('EWEFT_SYSTEM', `weft ${args.join(' ')} in ${host} failed: ${(e.stderr ?? '').trim()}`);
  }
}
