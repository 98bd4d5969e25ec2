import { execFile } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { promisify } from 'node:util';
import { WeftError } from '../common/errors.js';

const run = promisify(execFile);

/** DEFAULT_PREFIX names everything the demo creates, so `weft demo --down` finds it again. */
export const DEFAULT_PREFIX = 'weftdemo';
const UNDERLAY_NET = '192.168.211';

/** DemoOptions configures `weft demo`. */
export interface DemoOptions {
  hosts: number;
  encap: 'sleeve' | 'vxlan';
  keep: boolean;
  down: boolean;
  /** cli is the path of the weft CLI script to run inside each host. */
  cli: string;
  /** prefix names the namespaces (`<prefix>-h1`...); default DEFAULT_PREFIX. */
  prefix?: string;
  /** print receives the demo's narration (default: stdout). */
  print?: (line: string) => void;
}

/**
 * runDemo builds `hosts` hosts from network namespaces joined by a bridge (the "underlay"),
 * launches a router in each, gives each host an overlay address, and shows ping across the
 * overlay and the routers' status. Everything it creates is named `weftdemo-*` and removed at
 * the end (or by `--down` after `--keep`).
 */
export async function runDemo(o: DemoOptions): Promise<void> {
  const print = o.print ?? ((l: string) => process.stdout.write(`${l}\n`));
  const prefix = o.prefix ?? DEFAULT_PREFIX;
  const stateRoot = `/run/weft-demo/${prefix}`;
  const teardown = () => removeDemo(prefix, stateRoot);
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
  const hosts = Array.from({ length: o.hosts }, (_, i) => `${prefix}-h${i + 1}`);
  try {
    print(
      `building ${o.hosts} hosts (network namespaces ${hosts.join(', ')}) on a bridged underlay ${UNDERLAY_NET}.0/24`,
    );
    await ip('netns', 'add', `${prefix}-sw`);
    await ip('-n', `${prefix}-sw`, 'link', 'add', 'br0', 'type', 'bridge');
    await ip('-n', `${prefix}-sw`, 'link', 'set', 'br0', 'up');
    for (const [i, h] of hosts.entries()) {
      await ip('netns', 'add', h);
      await ip('-n', h, 'link', 'set', 'lo', 'up');
      await ip('-n', h, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `p${i + 1}`, 'netns', `${prefix}-sw`);
      await ip('-n', h, 'addr', 'add', `${UNDERLAY_NET}.${i + 1}/24`, 'dev', 'eth0');
      await ip('-n', h, 'link', 'set', 'eth0', 'up');
      await ip('-n', `${prefix}-sw`, 'link', 'set', `p${i + 1}`, 'master', 'br0', 'up');
    }
    for (const [i, h] of hosts.entries()) {
      // Each host is told only about the one before it: discovery turns the chain into a mesh.
      const peers = i === 0 ? [] : [`${UNDERLAY_NET}.${i}`];
      const name = await weft(o.cli, h, 'launch', ...peers, '--encap', o.encap, '--state-dir', `${stateRoot}/${h}`);
      await weft(o.cli, h, 'expose', `10.32.0.${i + 1}/12`);
      const told = peers.length === 0 ? 'the first host' : `told only about ${peers[0]}`;
      print(`  ${h}: router ${name.trim()} launched (${told}), overlay address 10.32.0.${i + 1}`);
    }
    print('waiting for discovery to connect every host to every other...');
    await waitConnected(o.cli, hosts);
    for (const [i, h] of hosts.entries()) {
      for (const [j] of hosts.entries()) {
        if (i === j) continue;
        const { stdout } = await run('ip', [
          'netns',
          'exec',
          h,
          'ping',
          '-c',
          '3',
          '-i',
          '0.2',
          '-W',
          '2',
          `10.32.0.${j + 1}`,
        ]);
        const summary = stdout.split('\n').filter((l) => /packets transmitted|rtt/.test(l));
        print(`  ${h} -> 10.32.0.${j + 1}: ${summary.join('; ')}`);
      }
    }
    print(`\n$ ip netns exec ${hosts[0]} weft status`);
    print((await weft(o.cli, hosts[0] as string, 'status')).trimEnd());
    print(`\n$ ip netns exec ${hosts[0]} weft status connections`);
    print((await weft(o.cli, hosts[0] as string, 'status', 'connections')).trimEnd());
    print(`\n$ ip netns exec ${hosts[0]} weft status peers`);
    print((await weft(o.cli, hosts[0] as string, 'status', 'peers')).trimEnd());
    if (o.keep) {
      print(
        `\nhosts left running: try \`ip netns exec ${hosts[0]} weft status peers\`; remove them with \`weft demo --down\``,
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

async function waitConnected(cli: string, hosts: string[]): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (const h of hosts) {
    for (;;) {
      const s = JSON.parse(await weft(cli, h, 'status', '--json')) as { peers: { state: string; cidrs: string[] }[] };
      const ready = s.peers.filter((p) => p.state === 'established' && p.cidrs.length > 0);
      if (ready.length >= hosts.length - 1) break;
      if (Date.now() > deadline)
        throw new WeftError('EWEFT_SYSTEM', `${h} did not connect to every other host within 30 s`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

async function removeDemo(prefix: string, stateRoot: string): Promise<void> {
  let names: string[] = [];
  try {
    const { stdout } = await run('ip', ['netns', 'list']);
    names = stdout
      .split('\n')
      .map((l) => l.split(' ')[0] ?? '')
      .filter((n) => n.startsWith(`${prefix}-`));
  } catch {
    return;
  }
  for (const n of names) {
    try {
      const { stdout } = await run('ip', ['netns', 'pids', n]);
      for (const pid of stdout.split('\n').filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGTERM');
        } catch {
          // already gone
        }
      }
    } catch {
      // namespace vanished meanwhile
    }
  }
  if (names.length > 0) await new Promise((r) => setTimeout(r, 300));
  for (const n of names) await run('ip', ['netns', 'del', n]).catch(() => undefined);
  rmSync(stateRoot, { recursive: true, force: true });
}

async function ip(...args: string[]): Promise<void> {
  try {
    await run('ip', args);
  } catch (err) {
    const e = err as { stderr?: string };
    throw new WeftError('EWEFT_SYSTEM', `ip ${args.join(' ')} failed: ${(e.stderr ?? '').trim().split('\n')[0]}`);
  }
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
