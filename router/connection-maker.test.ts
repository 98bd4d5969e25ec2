import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { InputError } from '../common/errors.js';
import { noopLogger } from '../common/log.js';
import type { PeerName } from '../common/types.js';
import { HANDSHAKES_MAX, HANDSHAKES_PER_ADDR_MAX } from './conn-limits.js';
import type { Connection } from './connection.js';
import {
  backoffMs,
  CLOSE_DUPLICATE,
  ConnectionMaker,
  type ConnectionMakerOptions,
  parseTarget,
  TARGETS_MAX_DEFAULT,
} from './connection-maker.js';
import {
  CONTROL_PORT,
  HEARTBEAT_INTERVAL_MS,
  RECONNECT_FACTOR,
  RECONNECT_INITIAL_MS,
  RECONNECT_MAX_MS,
} from './constants.js';
import { decodeBody, FrameDecoder } from './protocol.js';
import { expectNoLeaks, NET_HANDLES, type ResourceSnapshot, snapshotResources } from './testing/leaks.js';

// ---- helpers ----

function name(n: number): PeerName {
  return `02:00:00:00:00:${n.toString(16).padStart(2, '0')}` as PeerName;
}

const makers: ConnectionMaker[] = [];
const servers: Server[] = [];
const strangers: Socket[] = [];
let before: ResourceSnapshot;

function maker(n: number, extra: Partial<ConnectionMakerOptions> = {}): ConnectionMaker {
  const m = new ConnectionMaker({
    local: {
      name: name(n),
      nickname: `host-${n}`,
      uid: BigInt(1000 + n),
      sleevePort: 6783,
      vxlanPort: 6784,
      vni: 1,
      encap: 'sleeve',
      mtu: 1400,
    },
    host: '127.0.0.1',
    port: 0,
    log: noopLogger,
    random: () => 0.5, // no jitter: exact delays
    ...extra,
  });
  makers.push(m);
  return m;
}

/** Events records what a maker announced. */
interface Events {
  established: Connection[];
  closed: [Connection, string][];
}

function record(m: ConnectionMaker): Events {
  const e: Events = { established: [], closed: [] };
  m.on('connection-established', (c) => e.established.push(c));
  m.on('connection-closed', (c, reason) => e.closed.push([c, reason]));
  return e;
}

function addr(m: ConnectionMaker): string {
  return `127.0.0.1:${m.address().port}`;
}

/**
 * stranger opens a raw TCP connection to a maker from `from` (any 127.0.0.0/8 address is local),
 * sending nothing: junk that holds a handshake slot until the deadline.
 */
async function stranger(m: ConnectionMaker, from: string): Promise<Socket> {
  const s = connect({ host: '127.0.0.1', port: m.address().port, localAddress: from });
  strangers.push(s);
  s.on('error', () => {});
  await once(s, 'connect');
  return s;
}

/** strangers opens n of them from one address; resolves once the maker has answered each (Hello or Close). */
async function strangersFrom(m: ConnectionMaker, from: string, n: number): Promise<Record<string, unknown>[]> {
  return Promise.all(Array.from({ length: n }, async () => firstFrame(await stranger(m, from))));
}

/** firstFrame resolves to the first frame a maker sends on a raw socket: its Hello when admitted, a Close when refused. */
function firstFrame(s: Socket): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const d = new FrameDecoder();
    const onData = (chunk: Buffer) => {
      d.push(chunk);
      const body = d.next();
      if (body === undefined) return;
      s.off('data', onData);
      s.resume();
      resolve(decodeBody(body));
    };
    s.on('data', onData);
    s.once('close', () => reject(new Error('socket closed before a frame')));
  });
}

/** freePort finds a port nothing listens on (bound, then released). */
async function freePort(): Promise<number> {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const a = s.address();
  await new Promise<void>((r) => s.close(() => r()));
  if (typeof a !== 'object' || a === null) throw new Error('no address');
  return a.port;
}

/** until polls with real (unfaked) setImmediate until cond holds or 5 s of real time pass. */
async function until(cond: () => boolean, what = 'condition'): Promise<void> {
  const deadline = performance.now() + 5_000;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise<void>((r) => setImmediate(r));
  }
}

/** settled waits until neither maker has a pending connection and each has the expected established count. */
async function settled(ms: ConnectionMaker[], established: number): Promise<void> {
  await until(
    () =>
      ms.every((m) => {
        const cs = m.connections();
        return cs.every((c) => c.state === 'established') && cs.length === established;
      }),
    `${established} established connection(s) on every maker`,
  );
}

beforeEach(() => {
  before = snapshotResources(NET_HANDLES);
});

afterEach(async () => {
  for (const s of strangers) s.destroy();
  strangers.length = 0;
  await Promise.all(makers.map((m) => m.stop()));
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  makers.length = 0;
  servers.length = 0;
  vi.useRealTimers();
  await expectNoLeaks(before);
});

// ---- tests ----

describe('parseTarget and backoffMs', () => {
  it('normalises targets and applies the default port', () => {
    expect(parseTarget('10.0.0.1')).toEqual({ host: '10.0.0.1', port: CONTROL_PORT, address: '10.0.0.1:6783' });
    expect(parseTarget(' Host-1.Example:7000 ')).toEqual({
      host: 'host-1.example',
      port: 7000,
      address: 'host-1.example:7000',
    });
    for (const bad of [
      '',
      ':6783',
      '10.0.0.256',
      '10.0.0.1:0',
      '10.0.0.1:65536',
      'a b',
      '::1',
      '[::1]:6783',
      'h:x',
      '1.2.3',
    ]) {
      expect(() => parseTarget(bad)).toThrow(InputError);
    }
  });

  it('grows by the factor from the initial delay, with ±10% jitter, up to the maximum', () => {
    expect(backoffMs(0, () => 0.5)).toBe(RECONNECT_INITIAL_MS);
    expect(backoffMs(1, () => 0.5)).toBe(RECONNECT_INITIAL_MS * RECONNECT_FACTOR);
    expect(backoffMs(0, () => 0)).toBeCloseTo(RECONNECT_INITIAL_MS * 0.9);
    expect(backoffMs(0, () => 0.999999)).toBeCloseTo(RECONNECT_INITIAL_MS * 1.1, 0);
    expect(backoffMs(50, () => 0.999999)).toBe(RECONNECT_MAX_MS);
  });
});

describe('ConnectionMaker targets bound', () => {
  it(`holds at most targetsMax targets (default TARGETS_MAX_DEFAULT, ${TARGETS_MAX_DEFAULT}): beyond, addTargets refuses and adds none`, () => {
    const m = maker(1, { targetsMax: 3 }); // not started: nothing is dialled
    m.addTargets(['10.0.0.1', '10.0.0.2']);
    m.addTargets(['10.0.0.1', '10.0.0.2', '10.0.0.3']); // one new: fits
    expect(() => m.addTargets(['10.0.0.3', '10.0.0.4', '10.0.0.5'])).toThrow(InputError);
    expect(() => m.addTargets(['10.0.0.4'])).toThrow(
      'too many connection targets: 3 held and 1 new would pass the limit of 3',
    );
    expect(m.targets().map((t) => t.address)).toEqual(['10.0.0.1:6783', '10.0.0.2:6783', '10.0.0.3:6783']);
    m.addTargets(['10.0.0.3:6783', '10.0.0.1']); // known ones are never refused
    m.removeTargets(['10.0.0.1']);
    m.addTargets(['10.0.0.4']);
    expect(m.targets()).toHaveLength(3);
    expect(TARGETS_MAX_DEFAULT).toBeGreaterThanOrEqual(20_000);
  });
});

describe('ConnectionMaker', () => {
  it('connects two makers and reports the connection on both sides', async () => {
    const a = maker(1);
    const b = maker(2);
    const ea = record(a);
    const eb = record(b);
    await a.start();
    await b.start();
    b.addTargets([addr(a)]);
    await settled([a, b], 1);
    expect(ea.established).toHaveLength(1);
    expect(eb.established).toHaveLength(1);
    expect(eb.established[0]!.remote.name).toBe(name(1));
    expect(b.targets()).toEqual([{ address: addr(a), state: 'established', attempts: 0, peer: name(1) }]);
    const [ca] = a.connections();
    expect(ca).toMatchObject({ peer: name(2), nickname: 'host-2', outbound: false, state: 'established' });
    expect(ca!.remoteAddr).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(b.connections()[0]).toMatchObject({ peer: name(1), outbound: true, remoteAddr: addr(a) });
    expect(eb.established[0]!.remote.tcpPort).toBe(a.address().port);
    expect(a.peerConnection(name(2))).toBe(ea.established[0]);
    // Adding the same target again (as discovery will) changes nothing.
    b.addTargets([addr(a), `127.0.0.1:${a.address().port}`]);
    expect(b.connections()).toHaveLength(1);
  });

  it('encrypts connections between makers sharing a password, and counts a wrong one', async () => {
    const a = maker(1, { password: Buffer.from('pw') });
    const b = maker(2, { password: Buffer.from('pw') });
    await a.start();
    await b.start();
    b.addTargets([addr(a)]);
    await settled([a, b], 1);
    expect(a.connections()[0]).toMatchObject({ state: 'established', encrypted: true, cipher: 'aes-256-gcm' });
    expect(b.connections()[0]).toMatchObject({ state: 'established', encrypted: true, cipher: 'aes-256-gcm' });
    const c = maker(3, { password: Buffer.from('other') });
    await c.start();
    c.addTargets([addr(a)]);
    await until(() => (a.terminations.get('EWEFT_AUTH') ?? 0) > 0, 'auth termination');
    await until(() => c.targets()[0]?.lastError !== undefined, 'refusal on the dialler');
    expect(c.targets()[0]?.lastError).toMatch(/passwords differ/);
  });

  for (const [low, high] of [
    [1, 2],
    [4, 3],
  ] as const) {
    it(`keeps exactly one connection when both dial each other (names ${low} and ${high})`, async () => {
      for (let round = 0; round < 5; round++) {
        const a = maker(low);
        const b = maker(high);
        const ea = record(a);
        const eb = record(b);
        await Promise.all([a.start(), b.start()]);
        a.addTargets([addr(b)]);
        b.addTargets([addr(a)]);
        await settled([a, b], 1);
        const ka = a.peerConnection(name(high))!;
        const kb = b.peerConnection(name(low))!;
        expect(ka.connectionId).toBe(kb.connectionId);
        // The survivor was dialled by the smaller name.
        const dialler = low < high ? a : b;
        expect(dialler.connections()[0]!.outbound).toBe(true);
        expect(a.targets()[0]).toMatchObject({ state: 'established', peer: name(high) });
        expect(b.targets()[0]).toMatchObject({ state: 'established', peer: name(low) });
        // Whatever was announced and then dropped was a duplicate; one announcement is left.
        for (const e of [ea, eb]) {
          expect(e.established.length - e.closed.length).toBe(1);
          for (const [, reason] of e.closed) expect(reason).toMatch(/duplicate connection/);
        }
        await Promise.all([a.stop(), b.stop()]);
      }
    });
  }

  it('closes a duplicate that loses with the duplicate reason', async () => {
    const a = maker(1);
    const b = maker(2);
    await Promise.all([a.start(), b.start()]);
    b.addTargets([addr(a)]); // b (larger name) dials first and gets established
    await settled([a, b], 1);
    const first = b.peerConnection(name(1))!;
    const firstClosed = new Promise<string>((r) => first.once('closed', (i) => r(i.reason)));
    a.addTargets([addr(b)]); // a (smaller name) dials: its connection must win on both sides
    expect(await firstClosed).toMatch(new RegExp(CLOSE_DUPLICATE));
    await settled([a, b], 1);
    expect(a.connections()[0]!.outbound).toBe(true);
    expect(b.targets()[0]).toMatchObject({ state: 'established', peer: name(1) });
  });

  it('refuses itself and gives up on that target', async () => {
    const a = maker(1);
    await a.start();
    a.addTargets([addr(a)]);
    await until(() => a.targets()[0]?.state === 'failed');
    expect(a.targets()[0]).toEqual({
      address: addr(a),
      state: 'failed',
      attempts: 1,
      lastError: 'connection to self',
      peer: name(1),
    });
    await settled([a], 0);
  });

  it('refuses inbound connections beyond the limit with a reason', async () => {
    const a = maker(1, { connLimit: 1 });
    const b = maker(2);
    const c = maker(3);
    await Promise.all([a.start(), b.start(), c.start()]);
    b.addTargets([addr(a)]);
    await settled([a, b], 1);
    c.addTargets([addr(a)]);
    await until(() => c.targets()[0]?.state === 'failed');
    expect(c.targets()[0]!.lastError).toBe('peer closed connection: too many connections (limit 1)');
    expect(a.connections()).toHaveLength(1);
    expect(a.connections()[0]!.peer).toBe(name(2));
    expect(a.terminations.get('conn_limit')).toBe(1);
  });

  it('closes a handshake that completes beyond the limit when several were in progress together', async () => {
    const a = maker(1, { connLimit: 1 });
    const b = maker(2);
    const c = maker(3);
    await Promise.all([a.start(), b.start(), c.start()]);
    b.addTargets([addr(a)]);
    c.addTargets([addr(a)]);
    const refused = (m: ConnectionMaker) =>
      m.targets()[0]?.lastError === 'peer closed connection: too many connections (limit 1)';
    await until(() => refused(b) || refused(c), 'one of two simultaneous peers to be refused');
    await until(() => a.connections().length === 1 && a.connections()[0]!.state === 'established');
    expect(a.terminations.get('conn_limit')).toBe(1);
  });

  it('lets forget keep an established connection', async () => {
    const a = maker(1);
    const b = maker(2);
    await Promise.all([a.start(), b.start()]);
    b.addTargets([addr(a)]);
    await settled([a, b], 1);
    b.removeTargets([addr(a)]);
    expect(b.targets()).toEqual([]);
    expect(b.connections()).toHaveLength(1);
    expect(() => b.removeTargets(['not a target'])).toThrow(InputError);
  });

  it('stops idempotently, closing every connection and releasing every handle', async () => {
    const a = maker(1);
    const b = maker(2);
    const ea = record(a);
    await Promise.all([a.start(), b.start()]);
    b.addTargets([addr(a), `127.0.0.1:${await freePort()}`, `localhost:${await freePort()}`]);
    await settled([a, b], 1);
    await b.stop();
    await b.stop();
    await until(() => ea.closed.length === 1);
    expect(ea.closed[0]![1]).toBe('peer closed connection: router shutting down');
    await expect(b.start()).rejects.toThrow(/stopped/);
    await a.stop();
    await expectNoLeaks(before);
  });

  it('fails to start with a clear error when the port is taken', async () => {
    const a = maker(1);
    await a.start();
    const b = maker(2, { port: a.address().port });
    await expect(b.start()).rejects.toMatchObject({ code: 'EWEFT_SYSTEM', message: /cannot listen/ });
  });
});

describe('ConnectionMaker handshake limits', () => {
  it(`refuses the ${HANDSHAKES_PER_ADDR_MAX + 1}th handshake from one address and the ${HANDSHAKES_MAX + 1}rd over all`, async () => {
    const a = maker(1);
    await a.start();
    for (const f of await strangersFrom(a, '127.0.0.2', HANDSHAKES_PER_ADDR_MAX)) expect(f.proto).toBe('weft');
    expect(a.handshakesInProgress).toBe(HANDSHAKES_PER_ADDR_MAX);
    expect(await strangersFrom(a, '127.0.0.2', 1)).toEqual([
      { t: 'close', reason: `too many handshakes in progress from 127.0.0.2 (limit ${HANDSHAKES_PER_ADDR_MAX})` },
    ]);
    expect(a.terminations.get('handshake_limit')).toBe(1);

    // Fill the pool from other addresses, 4 each: 2 + 7 addresses × 4 = 32.
    for (let i = 3; a.handshakesInProgress < HANDSHAKES_MAX; i++) {
      const n = Math.min(HANDSHAKES_PER_ADDR_MAX, HANDSHAKES_MAX - a.handshakesInProgress);
      for (const f of await strangersFrom(a, `127.0.0.${i}`, n)) expect(f.proto).toBe('weft');
    }
    expect(a.handshakesInProgress).toBe(HANDSHAKES_MAX);
    expect(await strangersFrom(a, '127.0.0.99', 1)).toEqual([
      { t: 'close', reason: `too many handshakes in progress (limit ${HANDSHAKES_MAX})` },
    ]);
    expect(a.terminations.get('handshake_limit')).toBe(2);
    expect(a.connections()).toHaveLength(HANDSHAKES_MAX);
    expect(a.connections().every((c) => c.state === 'pending')).toBe(true);
  });

  it('frees a slot when a handshake fails or times out', async () => {
    const a = maker(1, { connection: { handshakeTimeoutMs: 300 } });
    await a.start();
    const held = await Promise.all(Array.from({ length: HANDSHAKES_PER_ADDR_MAX }, () => stranger(a, '127.0.0.2')));
    await Promise.all(held.map(firstFrame));
    expect((await strangersFrom(a, '127.0.0.2', 1))[0]?.t).toBe('close');
    held[0]!.write('GET / HTTP/1.1\r\n\r\n'); // fails its handshake at once
    await until(() => a.handshakesInProgress === HANDSHAKES_PER_ADDR_MAX - 1, 'the failed handshake to free its slot');
    expect((await strangersFrom(a, '127.0.0.2', 1))[0]?.proto).toBe('weft');
    await until(() => a.handshakesInProgress === 0, 'the handshake deadline to free every slot');
    expect(a.terminations.get('EWEFT_PROTOCOL')).toBe(HANDSHAKES_PER_ADDR_MAX + 1);
  });

  it('counts only established connections against the connection limit', async () => {
    const a = maker(1, { connLimit: 2 });
    const b = maker(2);
    const c = maker(3);
    const d = maker(4);
    await Promise.all([a.start(), b.start(), c.start(), d.start()]);
    await strangersFrom(a, '127.0.0.2', HANDSHAKES_PER_ADDR_MAX);
    b.addTargets([addr(a)]);
    c.addTargets([addr(a)]);
    await settled([b, c], 1);
    expect(a.connections().filter((x) => x.state === 'established')).toHaveLength(2);
    d.addTargets([addr(a)]);
    await until(() => d.targets()[0]?.state === 'failed');
    expect(d.targets()[0]!.lastError).toBe('peer closed connection: too many connections (limit 2)');
  });

  it('admits a peer it has known while strangers fill the handshake pool', async () => {
    const a = maker(1);
    const b = maker(2);
    const ea = record(a);
    await Promise.all([a.start(), b.start()]);
    b.addTargets([addr(a)]);
    await settled([a, b], 1);
    await b.stop(); // b restarts ...
    await until(() => ea.closed.length === 1);
    for (let i = 2; a.handshakesInProgress < HANDSHAKES_MAX; i++) await strangersFrom(a, `127.0.0.${i}`, 4);
    expect((await strangersFrom(a, '127.0.0.99', 1))[0]?.t).toBe('close');
    const b2 = maker(2); // ... and dials again from its known address
    await b2.start();
    b2.addTargets([addr(a)]);
    await settled([b2], 1);
    await until(() => ea.established.length === 2, 'a to establish the restarted peer');
    expect(a.peerConnection(name(2))?.state).toBe('established');
    expect(a.handshakesInProgress).toBe(HANDSHAKES_MAX);
  });

  it('dials its own targets while strangers fill its handshake pool', async () => {
    const a = maker(1);
    const b = maker(2);
    await Promise.all([a.start(), b.start()]);
    for (let i = 2; a.handshakesInProgress < HANDSHAKES_MAX; i++) await strangersFrom(a, `127.0.0.${i}`, 4);
    a.addTargets([addr(b)]);
    await until(() => a.targets()[0]?.state === 'established', 'the outbound connection');
    expect(a.peerConnection(name(2))?.outbound).toBe(true);
    await settled([b], 1);
  });

  it('keeps one connection when a peer already connected authenticates again', async () => {
    const a = maker(1);
    const b = maker(2);
    const ea = record(a);
    await Promise.all([a.start(), b.start()]);
    b.addTargets([addr(a)]);
    await settled([a, b], 1);
    a.addTargets([addr(b)]); // a second connection between the same pair: one of the two goes
    await until(() => a.targets()[0]?.state === 'established');
    await settled([a, b], 1);
    expect(ea.established.length - ea.closed.length).toBe(1);
    expect(a.handshakesInProgress).toBe(0);
  });
});

describe('ConnectionMaker backoff', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
  });

  it('retries a refused target with growing delays and connects once the listener appears', async () => {
    const port = await freePort();
    const b = maker(2);
    await b.start();
    b.addTargets([`127.0.0.1:${port}`]);
    const t = () => b.targets()[0]!;
    expect(t().state).toBe('connecting');
    await until(() => t().state === 'failed', 'first refusal');
    expect(t().attempts).toBe(1);
    expect(t().lastError).toMatch(/ECONNREFUSED/);
    expect(t().nextRetryAt! - Date.now()).toBe(RECONNECT_INITIAL_MS);

    vi.advanceTimersByTime(RECONNECT_INITIAL_MS - 1);
    expect(t().state).toBe('failed');
    vi.advanceTimersByTime(1);
    expect(t().state).toBe('retrying');
    await until(() => t().state === 'failed', 'second refusal');
    expect(t().attempts).toBe(2);
    expect(t().nextRetryAt! - Date.now()).toBe(RECONNECT_INITIAL_MS * RECONNECT_FACTOR);

    const a = maker(1, { port });
    await a.start();
    vi.advanceTimersByTime(RECONNECT_INITIAL_MS * RECONNECT_FACTOR);
    await settled([a, b], 1);
    expect(t()).toEqual({ address: `127.0.0.1:${port}`, state: 'established', attempts: 0, peer: name(1) });
  });

  it('reconnects a dropped target starting again from the initial delay', async () => {
    const port = await freePort();
    const a = maker(1, { port });
    const b = maker(2);
    const eb = record(b);
    await Promise.all([a.start(), b.start()]);
    b.addTargets([`127.0.0.1:${port}`]);
    await settled([a, b], 1);
    await a.stop();
    await until(() => b.targets()[0]?.state === 'failed', 'drop noticed');
    expect(eb.closed).toHaveLength(1);
    const t = b.targets()[0]!;
    expect(t.lastError).toBe('peer closed connection: router shutting down');
    expect(t.nextRetryAt! - Date.now()).toBe(RECONNECT_INITIAL_MS);

    const a2 = maker(1, { port, local: { ...baseLocal(1), uid: 5000n } }); // restarted: new uid
    await a2.start();
    vi.advanceTimersByTime(RECONNECT_INITIAL_MS);
    await settled([a2, b], 1);
    expect(eb.established).toHaveLength(2);
    expect(eb.established[1]!.remote.uid).toBe(5000n);
  });

  it('stops retrying a forgotten target', async () => {
    const port = await freePort();
    const b = maker(2);
    await b.start();
    b.addTargets([`127.0.0.1:${port}`]);
    await until(() => b.targets()[0]?.state === 'failed');
    b.removeTargets([`127.0.0.1:${port}`]);
    let dialled = 0;
    const server = createServer((s) => {
      dialled++;
      s.destroy();
    });
    servers.push(server);
    server.listen(port, '127.0.0.1');
    await once(server, 'listening');
    vi.advanceTimersByTime(RECONNECT_MAX_MS * 2);
    for (let i = 0; i < 20; i++) await new Promise<void>((r) => setImmediate(r));
    expect(dialled).toBe(0);
    expect(b.targets()).toEqual([]);
  });

  it('keeps heartbeats flowing between makers', async () => {
    const a = maker(1);
    const b = maker(2);
    await Promise.all([a.start(), b.start()]);
    b.addTargets([addr(a)]);
    await settled([a, b], 1);
    const conn = b.peerConnection(name(1))!;
    for (let i = 0; i < 12; i++) {
      const n = conn.stats.framesIn;
      vi.advanceTimersByTime(HEARTBEAT_INTERVAL_MS);
      await until(() => conn.stats.framesIn > n, `heartbeat ${i}`);
    }
    expect(conn.state).toBe('established');
  });
});

function baseLocal(n: number): ConnectionMakerOptions['local'] {
  return {
    name: name(n),
    nickname: `host-${n}`,
    uid: BigInt(1000 + n),
    sleevePort: 6783,
    vxlanPort: 6784,
    vni: 1,
    encap: 'sleeve',
    mtu: 1400,
  };
}
