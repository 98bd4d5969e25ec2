import { execFileSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HTTP_MAX_CONNECTIONS } from '../control/http.js';
import { type Host, Lab, outputTail, requireRoot, stopProcess, waitUntil } from '../lab/netns.js';
import { CLI, launch, removeStateDirs, stateDir, status, weft } from './weft.js';

const reason = requireRoot();

/** API is the router's TCP API inside each host namespace. */
const API = 'http://127.0.0.1:6784';
/** NOBODY runs a command as the unprivileged user `nobody`, with no supplementary groups. */
const NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups'];

/**
 * The HTTP API is not a web target and not for everyone: requests with a foreign Host or Origin
 * or a text/plain body are refused and change nothing; an unprivileged local user can read the
 * status but not change the router; the CLI reaches the router over its unix socket; held TCP
 * connections beyond the cap get 503 while the CLI still works; a stale socket does not stop the
 * next launch.
 */
describe.skipIf(reason)('HTTP API security', () => {
  let topo: Lab;
  let h: Host;
  let socket: string;
  let token: string;

  /** curl runs curl in the host namespace (as `user` root or nobody); resolves to the status and body. */
  async function curl(args: string[], asNobody = false): Promise<{ status: number; body: string }> {
    const cmd = ['curl', '-sS', '--max-time', '10', '-w', '\n%{http_code}', ...args];
    const r = asNobody ? await h.exec('setpriv', [...NOBODY, ...cmd]) : await h.exec(cmd[0] as string, cmd.slice(1));
    const at = r.stdout.lastIndexOf('\n');
    return { status: Number(r.stdout.slice(at + 1)), body: r.stdout.slice(0, at) };
  }

  async function targets(): Promise<string[]> {
    const list = JSON.parse((await weft(h, ['status', 'targets', '--json'])).stdout) as { address: string }[];
    return list.map((x) => x.address);
  }

  beforeAll(async () => {
    topo = await Lab.create({ hosts: 1 });
    h = topo.hosts[0] as Host;
    await launch(h, []);
    socket = `/run/weft/netns/${h.name}/weft.sock`;
    token = readFileSync(path.join(stateDir(h), 'api-token'), 'utf8').trim();
  });

  afterAll(async () => {
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
  });

  it('serves the CLI over the unix socket of the namespace (mode 0660) and keeps the token root-only', async () => {
    const st = statSync(socket);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o660);
    expect(statSync(path.join(stateDir(h), 'api-token')).mode & 0o777).toBe(0o600);
    expect(token).toMatch(/^[0-9a-f]{64}$/);
    // With no token to hand and no TCP to fall back on, a change can only have gone over the socket.
    const viaSocket = ['--http-addr', '127.0.0.1:1', '--api-socket', socket, '--api-token-file', '/nonexistent'];
    await weft(h, [...viaSocket, 'connect', '192.0.2.10']);
    expect(await targets()).toContain('192.0.2.10:6783');
    await weft(h, ['forget', '192.0.2.10']);
    expect(await targets()).not.toContain('192.0.2.10:6783');
  });

  it.each([
    ['a foreign Host (DNS rebinding)', ['-H', 'Host: attacker.example', '-H', 'Content-Type: application/json'], 403],
    ['a foreign Origin', ['-H', 'Origin: http://evil.example', '-H', 'Content-Type: application/json'], 403],
    ['text/plain (a simple cross-site POST)', ['-H', 'Content-Type: text/plain'], 415],
    [
      'all three, as in the issue',
      ['-H', 'Host: attacker.example', '-H', 'Origin: http://evil.example', '-H', 'Content-Type: text/plain'],
      403,
    ],
  ])('refuses a change with %s, even with the token, and changes nothing', async (_what, headers, want) => {
    const r = await curl([
      '-X',
      'POST',
      '-H',
      `Authorization: Bearer ${token}`,
      ...headers,
      '--data',
      '{"peers":["192.0.2.66"]}',
      `${API}/connect`,
    ]);
    expect(r.status).toBe(want);
    expect((JSON.parse(r.body) as { error: string }).error).toMatch(/foreign host|cross-origin|content-type/);
    expect(await targets()).not.toContain('192.0.2.66:6783');
  });

  it('lets an unprivileged user read the status but not change the router', async () => {
    const run = (args: string[]) => h.exec('setpriv', [...NOBODY, process.execPath, CLI, ...args], { allowFail: true });
    const st = await run(['status']);
    expect(st.code).toBe(0);
    expect(st.stdout).toMatch(/Name: /);
    const c = await run(['connect', '192.0.2.77']);
    expect(c.code).toBe(1);
    const lines = c.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /^weft: permission denied: POST \/connect changes the router and needs the unix socket .*weft\.sock \(root or group weft\) or the bearer token in .*api-token/,
    );
    expect((await run(['attach', 'c1'])).code).toBe(1);
    expect((await run(['stop'])).code).toBe(1);
    // Over TCP by hand: no token, no change; and the token file is not nobody's to read.
    const post = await curl(
      ['-X', 'POST', '-H', 'Content-Type: application/json', '--data', '{"peers":["192.0.2.78"]}', `${API}/connect`],
      true,
    );
    expect(post.status).toBe(401);
    expect(
      (await h.exec('setpriv', [...NOBODY, 'cat', path.join(stateDir(h), 'api-token')], { allowFail: true })).code,
    ).not.toBe(0);
    expect(
      (
        await h.exec('setpriv', [...NOBODY, 'curl', '-sS', '--unix-socket', socket, 'http://localhost/status'], {
          allowFail: true,
        })
      ).code,
    ).not.toBe(0);
    expect(await targets()).not.toContain('192.0.2.77:6783');
    expect(await targets()).not.toContain('192.0.2.78:6783');
    expect((await status(h)).ready).toBe(true);
  });

  it('lets root change the router over TCP with the bearer token', async () => {
    const r = await curl([
      '-X',
      'POST',
      '-H',
      'Content-Type: application/json',
      '-H',
      `Authorization: Bearer ${token}`,
      '--data',
      '{"peers":["192.0.2.79"]}',
      `${API}/connect`,
    ]);
    expect(r.status).toBe(200);
    expect(await targets()).toContain('192.0.2.79:6783');
    await weft(h, ['forget', '192.0.2.79']);
  });

  it(`answers 503 beyond ${HTTP_MAX_CONNECTIONS} held TCP connections while the CLI works over the socket`, async () => {
    const extra = 40;
    // Holds HTTP_MAX_CONNECTIONS + extra connections with unfinished headers; prints how many got 503.
    const script = `
      const net = require('node:net');
      let refused = 0, open = 0;
      const all = [];
      for (let i = 0; i < ${HTTP_MAX_CONNECTIONS + extra}; i++) {
        const s = net.connect(6784, '127.0.0.1', () => { open++; s.write('GET /status HTTP/1.1\\r\\nhost: 127.0.0.1\\r\\n'); });
        s.on('data', (b) => { if (b.toString().startsWith('HTTP/1.1 503')) refused++; });
        s.on('error', () => {});
        all.push(s);
      }
      setTimeout(() => console.log(JSON.stringify({ open, refused })), 1500);
      setTimeout(() => { for (const s of all) s.destroy(); }, 6000);
    `;
    const child = h.spawn(process.execPath, ['-e', script]);
    let out = '';
    child.stdout?.on('data', (b: Buffer) => {
      out += b.toString();
    });
    try {
      await waitUntil(() => out.includes('}'), {
        timeoutMs: 5_000,
        what: `the held connections (${outputTail(child)})`,
      });
      const held = JSON.parse(out) as { open: number; refused: number };
      expect(held.refused).toBeGreaterThanOrEqual(extra);
      const tcp = await curl([`${API}/status`]);
      expect(tcp.status).toBe(503);
      expect(tcp.body).toMatch(/too many API connections/);
      // The socket has its own budget: the CLI still answers.
      expect((await status(h)).ready).toBe(true);
    } finally {
      await stopProcess(child);
    }
    await waitUntil(async () => (await curl([`${API}/status`])).status === 200, {
      timeoutMs: 5_000,
      what: 'TCP to answer again once the held connections are gone',
    });
  });

  it('says at launch that a non-loopback --http-addr needs the token, and serves nothing there without it', async () => {
    await weft(h, ['stop']);
    const l = await weft(h, [
      'launch',
      '--device',
      h.ifname('t'),
      '--state-dir',
      stateDir(h),
      '--http-addr',
      '0.0.0.0:6784',
    ]);
    expect(l.stderr.trim()).toBe(
      `warning: the HTTP API listens on 0.0.0.0:6784, not a loopback address: every request there, reads too, needs "Authorization: Bearer TOKEN" with the token in ${path.join(stateDir(h), 'api-token')}; the CLI on this host uses ${socket}`,
    );
    const url = `http://${h.underlayIp}:6784/status`;
    const open = await curl([url]);
    expect(open.status).toBe(401);
    expect(open.body).toMatch(/every request needs the bearer token/);
    expect((await curl(['-H', `Authorization: Bearer ${token}`, url])).status).toBe(200);
    expect((await curl([`${API}/status`])).status).toBe(401); // reads need it on loopback too: one rule per listener
    expect((await status(h)).ready).toBe(true); // the CLI: over the socket
  });

  it('launches again over the stale socket a killed router left, and removes the socket on stop', async () => {
    // Only our namespace's processes: the router this test launched.
    const pidsIn = () =>
      execFileSync('ip', ['netns', 'pids', h.name], { encoding: 'utf8' }).trim().split(/\s+/).filter(Boolean);
    const pids = pidsIn();
    expect(pids.length).toBeGreaterThan(0);
    for (const pid of pids) process.kill(Number(pid), 'SIGKILL');
    await waitUntil(() => pidsIn().length === 0, { what: 'the router to die' });
    expect(statSync(socket).isSocket()).toBe(true); // left behind
    await launch(h, []);
    expect((await status(h)).ready).toBe(true);
    await weft(h, ['stop']);
    expect(() => statSync(socket)).toThrow(/ENOENT/);
  });
});
