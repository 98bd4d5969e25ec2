import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, Lab, type Netns, requireRoot, waitUntil } from '../lab/netns.js';
import { launch, removeStateDirs, status, waitPeers, weft } from './weft.js';

const reason = requireRoot();

interface DnsJson {
  domain: string;
  listening?: string;
  entries: { name: string; addr: string }[];
}

async function dnsStatus(h: Host): Promise<DnsJson> {
  return JSON.parse((await weft(h, ['status', 'dns', '--json'])).stdout) as DnsJson;
}

/** dig runs `dig +short` inside a namespace against its resolver (or `server`) and returns the lines, sorted. */
async function dig(ns: Netns, args: string[]): Promise<string[]> {
  const r = await ns.exec('dig', ['+short', '+time=2', '+tries=1', ...args], { allowFail: true });
  return r.stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0 && !l.startsWith(';'))
    .sort();
}

/**
 * The embedded DNS on three hosts with containers: names registered on attach are answered on
 * every host (all addresses of a shared name), PTR for container addresses, other names
 * forwarded to an upstream (dnsmasq in its own namespace standing in for the internet), TCP,
 * containers use it with no configuration, a detached container's name disappears everywhere,
 * and garbage does not disturb the next query.
 */
describe.skipIf(reason)('weft DNS', () => {
  let topo: Lab;
  let hosts: [Host, Host, Host, Host];
  const c: Record<string, { ns: Netns; addr: string }> = {};

  beforeAll(async () => {
    topo = await Lab.create({ hosts: 4 });
    hosts = topo.hosts as [Host, Host, Host, Host];
    const [h1, h2, h3, net] = hosts;
    // The "internet": a resolver on host 4's underlay address that knows one outside name.
    net.spawn('dnsmasq', [
      '--no-daemon',
      '--no-resolv',
      '--no-hosts',
      '--bind-interfaces',
      `--listen-address=${net.underlayIp}`,
      '--address=/outside.example/192.0.2.7',
      '--pid-file=',
    ]);
    const flags = ['--dns-upstream', net.underlayIp];
    await launch(h1, [], flags);
    await launch(h2, [h1.underlayIp], flags);
    await launch(h3, [h1.underlayIp], flags);
    for (const h of [h1, h2, h3]) await waitPeers(h, 2, 30_000);
    const attach = async (h: Host, tag: string, name?: string) => {
      const ns = await topo.addNamespace(tag);
      const addr = (await weft(h, ['attach', ns.name, ...(name ? ['--name', name] : [])])).stdout.trim();
      c[tag] = { ns, addr };
    };
    await attach(h1, 'a1', 'web');
    await attach(h1, 'a2');
    await attach(h2, 'b1', 'db');
    await attach(h3, 'c1', 'db');
    await attach(h3, 'c2', 'cache');
  }, 120_000);

  afterAll(async () => {
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
  });

  it('gives containers a resolver that needs no configuration, and resolves names across hosts', async () => {
    const h1Dns = await dnsStatus(hosts[0]);
    expect(h1Dns.listening).toMatch(/^10\.\d+\.\d+\.\d+:53$/);
    const inside = await c.a1!.ns.exec('cat', ['/etc/resolv.conf']);
    expect(inside.stdout).toMatch(new RegExp(`nameserver ${h1Dns.listening!.split(':')[0]!.replaceAll('.', '\\.')}`));
    expect(inside.stdout).toMatch(/search weft\.local/);
    await waitUntil(async () => (await dig(c.a1!.ns, ['cache.weft.local'])).length === 1, {
      timeoutMs: 10_000,
      what: 'a1 to resolve c2 (host 3) by name',
    });
    expect(await dig(c.a1!.ns, ['cache.weft.local'])).toEqual([c.c2!.addr]);
    const getent = await c.a1!.ns.exec('getent', ['hosts', 'cache']);
    expect(getent.stdout).toMatch(new RegExp(`^${c.c2!.addr.replaceAll('.', '\\.')}\\s+cache\\.weft\\.local`));
    expect((await c.a1!.ns.exec('ping', ['-c', '1', '-W', '2', 'cache'], { allowFail: true })).code).toBe(0);
  });

  it('answers every address of a name registered on several hosts', async () => {
    await waitUntil(async () => (await dig(c.c2!.ns, ['db.weft.local'])).length === 2, {
      timeoutMs: 10_000,
      what: 'both db containers in the answer',
    });
    expect(await dig(c.a2!.ns, ['db.weft.local'])).toEqual([c.b1!.addr, c.c1!.addr].sort());
  });

  it('answers PTR for container addresses, NXDOMAIN for unknown names, and over TCP', async () => {
    await waitUntil(async () => (await dig(c.a1!.ns, ['-x', c.b1!.addr])).length > 0, {
      timeoutMs: 10_000,
      what: 'PTR of b1',
    });
    expect(await dig(c.a1!.ns, ['-x', c.b1!.addr])).toEqual(['db.weft.local.']);
    const nx = await c.a1!.ns.exec('dig', ['+time=2', '+tries=1', 'nosuch.weft.local'], { allowFail: true });
    expect(nx.stdout).toMatch(/status: NXDOMAIN/);
    expect(nx.stdout).toMatch(/flags: qr aa rd ra/);
    expect(await dig(c.a1!.ns, ['+tcp', 'web.weft.local'])).toEqual([c.a1!.addr]);
  });

  it('forwards other names to the upstream resolver', async () => {
    // dnsmasq was started in beforeAll without waiting for it: wait for its first answer here.
    await waitUntil(async () => (await dig(c.b1!.ns, ['outside.example'])).length === 1, {
      timeoutMs: 15_000,
      what: 'the upstream answer for outside.example',
    });
    expect(await dig(c.b1!.ns, ['outside.example'])).toEqual(['192.0.2.7']);
    expect((await c.b1!.ns.exec('getent', ['hosts', 'outside.example'])).stdout).toMatch(/^192\.0\.2\.7\s/);
  });

  it('is not disturbed by a garbage datagram', async () => {
    const server = (await dnsStatus(hosts[0])).listening!.split(':')[0]!;
    await c.a1!.ns.exec('socat', ['-u', 'STDIN', `UDP4-SENDTO:${server}:53`], {
      input: 'garbage that is no DNS query\n',
    });
    await c.a1!.ns.exec('socat', ['-u', 'STDIN', `UDP4-SENDTO:${server}:53`], { input: '\0\0' });
    expect(await dig(c.a1!.ns, ['web.weft.local'])).toEqual([c.a1!.addr]);
    const st = JSON.parse((await weft(hosts[0], ['status', 'dns', '--json'])).stdout) as {
      server: { results: Record<string, number> };
    };
    const refused = ['dropped', 'formerr', 'notimp'].reduce((n, k) => n + (st.server.results[k] ?? 0), 0);
    expect(refused).toBeGreaterThanOrEqual(2);
    const metrics = await hosts[0].exec(process.execPath, [
      '-e',
      "fetch('http://127.0.0.1:6784/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))",
    ]);
    expect(metrics.stdout).toMatch(/weft_dns_results_total\{result="answer"\} [1-9]/);
    expect(metrics.stdout).toMatch(/weft_dns_queries_total\{type="A"\} [1-9]/);
  });

  it('manages records with dns-add, dns-remove and dns-lookup', async () => {
    await weft(hosts[1], ['dns-add', '10.32.9.9', '10.32.9.10', 'extra']);
    await waitUntil(async () => (await dig(c.c1!.ns, ['extra.weft.local'])).length === 2, {
      timeoutMs: 10_000,
      what: 'the added record on host 3',
    });
    expect((await weft(hosts[2], ['dns-lookup', 'extra'])).stdout.trim().split('\n').sort()).toEqual([
      '10.32.9.10',
      '10.32.9.9',
    ]);
    await weft(hosts[1], ['dns-remove', 'extra']);
    await waitUntil(async () => (await dig(c.c1!.ns, ['extra.weft.local'])).length === 0, {
      timeoutMs: 10_000,
      what: 'the removed record gone on host 3',
    });
    const r = await weft(hosts[1], ['dns-remove', 'extra'], { allowFail: true });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/no such record/);
  });

  it('forgets a container that went away without detach on every host', async () => {
    const t0 = Date.now();
    await hosts[2].exec('ip', ['netns', 'del', c.c2!.ns.name]);
    for (const from of [c.a1!, c.b1!]) {
      await waitUntil(async () => (await dig(from.ns, ['cache.weft.local'])).length === 0, {
        timeoutMs: 10_000,
        what: `${from.ns.name} to stop answering the vanished container`,
      });
    }
    console.info(`e2e dns: a vanished container's name was gone everywhere after ${Date.now() - t0} ms`);
    const nx = await c.a1!.ns.exec('dig', ['+time=2', '+tries=1', 'cache.weft.local'], { allowFail: true });
    expect(nx.stdout).toMatch(/status: NXDOMAIN/);
  });

  it('forgets a detached container on every host', async () => {
    const t0 = Date.now();
    await weft(hosts[2], ['detach', c.c1!.ns.name]);
    for (const from of [c.a1!, c.b1!]) {
      await waitUntil(async () => (await dig(from.ns, ['db.weft.local'])).length === 1, {
        timeoutMs: 10_000,
        what: `${from.ns.name} to stop answering the detached db`,
      });
    }
    console.info(`e2e dns: a detached container's name was gone everywhere after ${Date.now() - t0} ms`);
    expect(await dig(c.a1!.ns, ['db.weft.local'])).toEqual([c.b1!.addr]);
    expect((await status(hosts[0])).name).toMatch(/^[0-9a-f:]{17}$/);
  });
});
