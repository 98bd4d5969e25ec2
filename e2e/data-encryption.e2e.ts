import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, Lab, type Netns, requireRoot, waitUntil } from '../lab/netns.js';
import { CLI, cutUnderlay, expose, launch, removeStateDirs, stateDir, status, waitPeers, weft } from './weft.js';

const reason = requireRoot();

/** MARKER is sent in UDP payloads container to container; with a password it must never cross the underlay readable. */
const MARKER = 'weft-e2e-marker-7f3a9c';

/**
 * CAPTURE reads every frame on an interface (AF_PACKET, as tcpdump would) until SIGTERM, then
 * prints one JSON line: frames seen, UDP datagrams to the sleeve port, frames containing the marker.
 */
const CAPTURE = `
import json, signal, socket, sys
dev, marker = sys.argv[1], sys.argv[2].encode()
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
s.bind((dev, 0))
s.settimeout(0.2)
stop = [False]
signal.signal(signal.SIGTERM, lambda *a: stop.__setitem__(0, True))
n = sleeve = hits = 0
print('ready', flush=True)
while not stop[0]:
    try:
        p = s.recv(262144)
    except (socket.timeout, InterruptedError):
        continue
    n += 1
    if len(p) >= 42 and p[12:14] == b'\\x08\\x00' and p[23] == 17:
        ihl = (p[14] & 15) * 4
        if int.from_bytes(p[14 + ihl + 2:14 + ihl + 4], 'big') == 6783:
            sleeve += 1
    if marker in p:
        hits += 1
print(json.dumps({'frames': n, 'sleeve': sleeve, 'hits': hits}), flush=True)
`;

/** RECEIVE waits (up to 10 s) for a UDP datagram on port 9999 holding the marker and prints "got". */
const RECEIVE = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', 9999))
s.settimeout(10)
print('ready', flush=True)
while True:
    d, _ = s.recvfrom(65535)
    if sys.argv[1].encode() in d:
        print('got', flush=True)
        break
`;

/** SEND sends 50 UDP datagrams of the marker repeated to argv[1]:9999. */
const SEND = `
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(50):
    s.sendto(sys.argv[2].encode() * 20, (sys.argv[1], 9999))
    time.sleep(0.01)
`;

/**
 * REPLAY runs on the sending host: it records the first argv[3] sleeve datagrams (whole frames of
 * at most 1514 bytes) its underlay device sends to argv[2], prints "captured", waits for SIGUSR1
 * (`ip netns exec` execs it: the child's pid is python's), then sends each again with the UDP
 * checksum cleared (a replay: an egress capture holds only the partial checksum the NIC would
 * complete, and IPv4 allows none) and once more with the last byte of the sealed datagram flipped
 * (a forgery), and prints "sent N".
 */
const REPLAY = `
import signal, socket, sys, time
go = [False]
signal.signal(signal.SIGUSR1, lambda *a: go.__setitem__(0, True))
dev, dst, want = sys.argv[1], socket.inet_aton(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
s.bind((dev, 0))
got = []
while len(got) < want:
    p, addr = s.recvfrom(65535)
    if addr[2] != socket.PACKET_OUTGOING or len(p) > 1514 or p[12:14] != b'\\x08\\x00' or p[23] != 17 or p[30:34] != dst:
        continue
    ihl = (p[14] & 15) * 4
    if int.from_bytes(p[14 + ihl + 2:14 + ihl + 4], 'big') == 6783 and len(p) > 14 + ihl + 8 + 200:
        got.append(bytearray(p))
print('captured', flush=True)
while not go[0]:
    time.sleep(0.05)
for p in got:
    ihl = (p[14] & 15) * 4
    p[14 + ihl + 6:14 + ihl + 8] = b'\\x00\\x00'
    s.send(bytes(p))
for p in got:
    end = 14 + int.from_bytes(p[16:18], 'big')
    p[end - 1] ^= 1
    s.send(bytes(p))
print('sent', len(got), flush=True)
`;

/** RECEIVE_COUNT counts UDP datagrams holding the marker on port 9999 for argv[2] seconds and prints the count. */
const RECEIVE_COUNT = `
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', 9999))
s.settimeout(0.2)
print('ready', flush=True)
n, end = 0, time.time() + float(sys.argv[2])
while time.time() < end:
    try:
        d, _ = s.recvfrom(65535)
    except socket.timeout:
        continue
    if sys.argv[1].encode() in d:
        n += 1
print('count', n, flush=True)
`;

/** dropsOf reads the host's weft_drops_total for one reason from the metrics endpoint. */
async function dropsOf(h: Host, reason: string): Promise<number> {
  const r = await h.exec(process.execPath, [
    '-e',
    'fetch("http://127.0.0.1:6784/metrics").then((r) => r.text()).then((t) => process.stdout.write(t))',
  ]);
  const m = new RegExp(`weft_drops_total\\{reason="${reason}"\\} (\\d+)`).exec(r.stdout);
  return m === null ? 0 : Number(m[1]);
}

interface Capture {
  frames: number;
  sleeve: number;
  hits: number;
}

/** lineFrom resolves with the first stdout line of `child` that matches `re`. */
function lineFrom(child: ChildProcess, re: RegExp, timeoutMs = 15_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`no line matching ${re} (output: ${text})`)), timeoutMs);
    child.stdout?.on('data', (b: Buffer) => {
      text += b.toString('utf8');
      // Complete lines only: a print of several values may reach us in several writes.
      const line = text
        .split('\n')
        .slice(0, -1)
        .find((l) => re.test(l));
      if (line !== undefined) {
        clearTimeout(timer);
        resolve(line);
      }
    });
  });
}

/** startCapture starts CAPTURE on the host's underlay device; `stop` ends it and returns its counts. */
async function startCapture(h: Host): Promise<{ stop: () => Promise<Capture> }> {
  const child = h.spawn('python3', ['-c', CAPTURE, h.underlayDev, MARKER]);
  await lineFrom(child, /^ready$/);
  return {
    stop: async () => {
      const done = lineFrom(child, /^\{/);
      child.kill('SIGTERM');
      return JSON.parse(await done) as Capture;
    },
  };
}

/** markerThrough sends the marker from c2 to c1 (address a1) over the overlay and says whether it arrived. */
async function markerThrough(c1: Netns, c2: Netns, a1: string): Promise<boolean> {
  const rx = c1.spawn('python3', ['-c', RECEIVE, MARKER]);
  await lineFrom(rx, /^ready$/);
  const got = lineFrom(rx, /^got$/, 12_000).then(
    () => true,
    () => false,
  );
  await c2.exec('python3', ['-c', SEND, a1, MARKER]);
  return got;
}

interface DataLab {
  topo: Lab;
  h1: Host;
  h2: Host;
  c1: Netns;
  c2: Netns;
  a1: string;
}

/** lab launches two hosts with a container each; `extra` adds launch flags per host. */
async function lab(password: string | undefined, extra: (topo: Lab) => string[] = () => []): Promise<DataLab> {
  const topo = await Lab.create({ hosts: 2 });
  try {
    const [h1, h2] = topo.hosts as [Host, Host];
    const flags = (h: Host): string[] => {
      if (password === undefined) return ['--no-dns', ...extra(topo)];
      const f = `${stateDir(h)}/password`;
      writeFileSync(f, `${password}\n`, { mode: 0o600 });
      return ['--no-dns', '--password-file', f, ...extra(topo)];
    };
    const c1 = await topo.addNamespace('ca');
    const c2 = await topo.addNamespace('cb');
    await launch(h1, [], flags(h1));
    await launch(h2, [h1.underlayIp], flags(h2));
    await waitPeers(h1, 1);
    await waitPeers(h2, 1);
    const a1 = (await weft(h1, ['attach', c1.name])).stdout.trim();
    await weft(h2, ['attach', c2.name]);
    return { topo, h1, h2, c1, c2, a1 };
  } catch (err) {
    await topo.destroy();
    removeStateDirs(topo);
    throw err;
  }
}

describe.skipIf(reason)('container data is sealed on the underlay with a password', () => {
  let l: DataLab;

  beforeAll(async () => {
    l = await lab('correct horse');
  });

  afterAll(async () => {
    await l?.topo.destroy();
    if (l) removeStateDirs(l.topo);
  });

  it('says the data path to the peer is encrypted (sleeve)', async () => {
    const peers = (await status(l.h1)).peers as unknown as { encap: string; dataEncrypted?: boolean }[];
    expect(peers).toEqual([expect.objectContaining({ encap: 'sleeve', dataEncrypted: true })]);
    expect((await weft(l.h1, ['status', 'peers'])).stdout).toMatch(/sleeve encrypted/);
  });

  it('carries a DF ping that fills the overlay MTU: the sealed datagram fits the underlay', async () => {
    const mtu = (await status(l.h1)).mtu;
    expect(mtu).toBe(l.topo.underlayMtu - 80);
    const r = await l.c2.ping(l.a1, { count: 2, intervalS: 0.1, size: mtu - 28, dontFragment: true });
    expect(r.received).toBe(2);
  });

  it('carries ping, TCP (iperf3) and UDP through, and the marker never appears on the underlay', async () => {
    const cap = await startCapture(l.h1);
    let counts: Capture | undefined;
    try {
      expect((await l.c2.ping(l.a1, { count: 3, intervalS: 0.1 })).received).toBe(3);
      const server = await l.c1.iperf3Server(5201);
      try {
        const r = await l.c2.iperf3Client(l.a1, { seconds: 2 });
        expect(r.bitsPerSecond).toBeGreaterThan(1_000_000);
      } finally {
        await server.stop();
      }
      expect(await markerThrough(l.c1, l.c2, l.a1)).toBe(true);
    } finally {
      counts = await cap.stop();
    }
    expect(counts.sleeve).toBeGreaterThan(100);
    expect(counts.hits).toBe(0);
    const metrics = await l.h1.exec(process.execPath, [
      '-e',
      'fetch("http://127.0.0.1:6784/metrics").then((r) => r.text()).then((t) => process.stdout.write(t))',
    ]);
    expect(metrics.stdout).toMatch(/weft_drops_total\{reason="auth"\} 0/);
  });

  it('drops sealed datagrams replayed on the underlay (replay) and forged ones (auth), delivering neither', async () => {
    const replayer = l.h2.spawn('python3', ['-c', REPLAY, l.h2.underlayDev, l.h1.underlayIp, '10']);
    try {
      const captured = lineFrom(replayer, /^captured$/, 20_000);
      expect(await markerThrough(l.c1, l.c2, l.a1)).toBe(true);
      await captured;
      const replays = await dropsOf(l.h1, 'replay');
      const auths = await dropsOf(l.h1, 'auth');
      const rx = l.c1.spawn('python3', ['-c', RECEIVE_COUNT, MARKER, '3']);
      await lineFrom(rx, /^ready$/);
      const count = lineFrom(rx, /^count /, 10_000);
      const sent = lineFrom(replayer, /^sent /);
      replayer.kill('SIGUSR1');
      expect(await sent).toBe('sent 10');
      expect(await count).toBe('count 0'); // nothing replayed or forged reached the container
      await waitUntil(async () => (await dropsOf(l.h1, 'replay')) >= replays + 10, {
        timeoutMs: 5_000,
        what: 'ten replay drops',
      });
      expect(await dropsOf(l.h1, 'auth')).toBeGreaterThanOrEqual(auths + 10);
    } finally {
      replayer.kill('SIGKILL');
    }
  });

  it('keeps the data path sealed across a restart of the peer (new connection, new keys)', async () => {
    await weft(l.h2, ['stop']);
    await launch(l.h2, [l.h1.underlayIp], ['--no-dns', '--password-file', `${stateDir(l.h2)}/password`]);
    await waitPeers(l.h1, 1);
    await waitPeers(l.h2, 1);
    await expose(l.h2);
    await waitUntil(async () => (await l.h2.ping(l.a1, { count: 1 })).received === 1, {
      timeoutMs: 15_000,
      what: 'a ping from the restarted host to the container',
    });
    const peers = (await status(l.h1)).peers as unknown as { dataEncrypted?: boolean }[];
    expect(peers[0]?.dataEncrypted).toBe(true);
  });

  it('ratchets the data keys every second under a long iperf3 stream without losing the connection or a datagram to auth', async () => {
    await weft(l.h2, ['stop']);
    const flags = ['--no-dns', '--password-file', `${stateDir(l.h2)}/password`];
    await l.h2.exec(
      process.execPath,
      [CLI, 'launch', l.h1.underlayIp, '--device', l.h2.ifname('t'), '--state-dir', stateDir(l.h2), ...flags],
      {
        env: { ...process.env, WEFT_REKEY_AFTER_MS: '1000' } as Record<string, string>,
        timeoutMs: 60_000,
      },
    );
    await waitPeers(l.h1, 1);
    await waitPeers(l.h2, 1);
    await expose(l.h2);
    await weft(l.h2, ['attach', l.c2.name]);
    await waitUntil(async () => (await l.c2.ping(l.a1, { count: 1 })).received === 1, {
      timeoutMs: 15_000,
      what: 'a ping across the restarted host',
    });
    const rekeysOf = async () =>
      ((await status(l.h2)).peers as unknown as { dataRekeys?: number }[])[0]?.dataRekeys ?? -1;
    const before = {
      rekeys: await rekeysOf(),
      auth: await dropsOf(l.h1, 'auth'),
      replay: await dropsOf(l.h1, 'replay'),
    };
    const server = await l.c1.iperf3Server(5202);
    try {
      const r = await l.c2.iperf3Client(l.a1, { seconds: 6, port: 5202 });
      expect(r.bitsPerSecond).toBeGreaterThan(1_000_000);
      console.log(
        `rekey e2e: iperf3 6 s at ${(r.bitsPerSecond / 1e6).toFixed(0)} Mbit/s, rekeys ${(await rekeysOf()) - before.rekeys}`,
      );
    } finally {
      await server.stop();
    }
    // h2 sealed with a new generation at least once a second (the time bound is checked per
    // batch of datagrams); h1 followed each one: nothing refused as forged or replayed.
    expect((await rekeysOf()) - before.rekeys).toBeGreaterThanOrEqual(4);
    expect(await dropsOf(l.h1, 'auth')).toBe(before.auth);
    expect(await dropsOf(l.h1, 'replay')).toBe(before.replay);
  });
});

describe.skipIf(reason)('without a password the same capture sees the marker (the check above can fail)', () => {
  let l: DataLab;

  beforeAll(async () => {
    l = await lab(undefined);
  });

  afterAll(async () => {
    await l?.topo.destroy();
    if (l) removeStateDirs(l.topo);
  });

  it('finds the marker on the underlay', async () => {
    const cap = await startCapture(l.h1);
    let delivered = false;
    try {
      delivered = await markerThrough(l.c1, l.c2, l.a1);
    } finally {
      const counts = await cap.stop();
      expect(counts.hits).toBeGreaterThan(0);
    }
    expect(delivered).toBe(true);
    const peers = (await status(l.h1)).peers as unknown as { dataEncrypted?: boolean }[];
    expect(peers[0]?.dataEncrypted).toBeUndefined();
  });
});

/**
 * With --trusted-subnets holding the underlay on both ends, data crosses in the clear (the capture
 * finds the marker) while the control connection stays sealed; once one end stops trusting, the
 * data is sealed again (the marker is gone), whatever the other end says.
 */
describe.skipIf(reason)('with a password and trusted subnets on both ends, data stays unencrypted', () => {
  let l: DataLab;

  beforeAll(async () => {
    l = await lab('correct horse', (topo) => ['--trusted-subnets', topo.underlayNet]);
  });

  afterAll(async () => {
    await l?.topo.destroy();
    if (l) removeStateDirs(l.topo);
  });

  it('says so in status, keeps the control connection encrypted, and the marker crosses readable', async () => {
    const s = await status(l.h1);
    expect(s).toMatchObject({ encryption: true, trustedSubnets: [l.topo.underlayNet] });
    expect(s.peers).toEqual([expect.objectContaining({ dataTrusted: true })]);
    expect(s.peers[0]).not.toHaveProperty('dataEncrypted');
    expect(s.connections).toEqual([expect.objectContaining({ encrypted: true })]);
    expect((await weft(l.h1, ['status', 'peers'])).stdout).toMatch(/unencrypted \(trusted subnet\)/);
    expect((await weft(l.h1, ['status'])).stdout).toMatch(/data unencrypted with trusted subnets/);
    const cap = await startCapture(l.h1);
    let delivered = false;
    try {
      delivered = await markerThrough(l.c1, l.c2, l.a1);
    } finally {
      expect((await cap.stop()).hits).toBeGreaterThan(0);
    }
    expect(delivered).toBe(true);
  });

  it('seals the data again when one end no longer trusts the other', async () => {
    await weft(l.h2, ['stop']);
    await launch(l.h2, [l.h1.underlayIp], ['--no-dns', '--password-file', `${stateDir(l.h2)}/password`]);
    await waitPeers(l.h1, 1);
    await waitPeers(l.h2, 1);
    await weft(l.h2, ['attach', l.c2.name]); // idempotent: the same address if the router kept it
    const peer = async () => (await status(l.h1)).peers[0] as unknown as Record<string, unknown> | undefined;
    await waitUntil(async () => (await peer())?.dataEncrypted === true, {
      timeoutMs: 15_000,
      what: 'the data path to the restarted peer sealed',
    });
    expect(await peer()).not.toHaveProperty('dataTrusted');
    const cap = await startCapture(l.h1);
    let delivered = false;
    try {
      delivered = await markerThrough(l.c1, l.c2, l.a1);
    } finally {
      expect((await cap.stop()).hits).toBe(0);
    }
    expect(delivered).toBe(true);
  });
});

/**
 * Three hosts with a password, h1 and h2 cut from each other on the underlay (nft in h1's
 * namespace): once h1's own connection to h2 is gone, h2 is reached only through h3, with data
 * keys the two make end to end through the mesh (router/overlay/e2e-keys.ts): h3 relays what it
 * cannot read, and the marker never crosses any underlay link in the clear.
 */
describe.skipIf(reason)('with a password, a peer reached only through a relay is sealed end to end', () => {
  let topo: Lab;
  let h1: Host;
  let h2: Host;
  let h3: Host;
  let a2 = '';
  let cap: { stop: () => Promise<Capture> } | undefined;
  const flags = (h: Host): string[] => ['--no-dns', '--password-file', `${stateDir(h)}/password`];

  beforeAll(async () => {
    topo = await Lab.create({ hosts: 3 });
    const hs = topo.hosts as [Host, Host, Host];
    [h1, h2, h3] = hs;
    for (const h of hs) writeFileSync(`${stateDir(h)}/password`, 'correct horse\n', { mode: 0o600 });
    await launch(h1, [], flags(h1));
    await launch(h2, [h1.underlayIp], flags(h2));
    await launch(h3, [h1.underlayIp, h2.underlayIp], flags(h3));
    for (const h of hs) await waitPeers(h, 2);
    await expose(h1);
    a2 = await expose(h2);
  });

  afterAll(async () => {
    await cap?.stop().catch(() => undefined);
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
  });

  /** reachesH2 pings h2 from h1 until one answer comes (the first packets wait for the exchange). */
  const reachesH2 = () =>
    waitUntil(async () => (await h1.ping(a2, { count: 1, timeoutMs: 1_000 })).received === 1, {
      timeoutMs: 30_000,
      what: 'h1 to reach h2 through h3',
    });

  it("carries ping and TCP h1 ↔ h2 through h3, sealed end to end: the marker never on the relay's underlay", async () => {
    const a3 = await expose(h3);
    await cutUnderlay(h1, h2.underlayIp);
    const name2 = (await status(h2)).name;
    await waitUntil(
      async () => {
        const s = await status(h1);
        return s.peers.some((p) => p.state === 'relayed') && !s.connections.some((c) => c.peer === name2);
      },
      { timeoutMs: 60_000, what: 'h1 to reach h2 only through h3, with no connection of its own' },
    );
    cap = await startCapture(h3);
    let delivered = false;
    try {
      await reachesH2();
      expect((await h1.ping(a2, { count: 3, intervalS: 0.1 })).received).toBe(3);
      delivered = await markerThrough(h2, h1, a2);
    } finally {
      const counts = await cap.stop();
      cap = undefined;
      expect(counts.hits).toBe(0);
      expect(counts.sleeve).toBeGreaterThan(0);
    }
    expect(delivered).toBe(true);
    const text = (await weft(h1, ['status', 'peers'])).stdout;
    expect(text).toMatch(/relayed via .* encrypted end to end/);
    const s1 = (await status(h1)) as unknown as { endToEnd?: { completed: number; answered: number } };
    const s2 = (await status(h2)) as unknown as { endToEnd?: { completed: number; answered: number } };
    expect((s1.endToEnd?.completed ?? 0) + (s2.endToEnd?.completed ?? 0)).toBeGreaterThanOrEqual(1);
    expect((s1.endToEnd?.answered ?? 0) + (s2.endToEnd?.answered ?? 0)).toBeGreaterThanOrEqual(1);
    const metrics = await h1.exec(process.execPath, [
      '-e',
      'fetch("http://127.0.0.1:6784/metrics").then((r) => r.text()).then((t) => process.stdout.write(t))',
    ]);
    expect(metrics.stdout).toMatch(/weft_e2e_key_exchanges_total\{result="(completed|answered)"\} [1-9]/);
    // The direct peer is unaffected: sealed and answering.
    expect((await h1.ping(a3, { count: 2, intervalS: 0.1 })).received).toBe(2);
  });

  it('makes new keys when the far end restarts (its old keys are gone) and carries traffic again', async () => {
    const before = (await status(h1)) as unknown as { endToEnd?: { completed: number; answered: number } };
    await weft(h2, ['stop']);
    await launch(h2, [h3.underlayIp], flags(h2));
    // h2 ↔ h3 direct, h2 ↔ h1 through h3 (waitPeers wants every peer direct)
    await waitUntil(async () => (await status(h2)).peers.some((p) => p.state === 'established'), {
      timeoutMs: 30_000,
      what: 'the relaunched h2 to reach h3',
    });
    a2 = await expose(h2);
    await reachesH2();
    expect((await h1.ping(a2, { count: 3, intervalS: 0.1 })).received).toBe(3);
    const after = (await status(h1)) as unknown as { endToEnd?: { completed: number; answered: number } };
    const n = (x: typeof after) => (x.endToEnd?.completed ?? 0) + (x.endToEnd?.answered ?? 0);
    expect(n(after)).toBeGreaterThan(n(before));
  });
});
