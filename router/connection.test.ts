import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { Packr } from 'msgpackr';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ProtocolError } from '../common/errors.js';
import { noopLogger } from '../common/log.js';
import type { PeerName } from '../common/types.js';
import { HELLO_MAX_BYTES } from './conn-limits.js';
import {
  CLOSE_HEARTBEAT_TIMEOUT,
  CLOSE_REMOTE_PREFIX,
  CLOSE_SELF,
  Connection,
  type ConnectionClosed,
  type ConnectionOptions,
  type LocalPeerInfo,
} from './connection.js';
import {
  CLOSE_LINGER_MS,
  CONTROL_MESSAGE_MAX_BYTES,
  HANDSHAKE_TIMEOUT_MS,
  HEARTBEAT_INTERVAL_MS,
  HEARTBEAT_RELAXED_INTERVAL_MS,
  HEARTBEAT_RELAXED_TIMEOUT_MS,
  HEARTBEAT_TIMEOUT_MS,
} from './constants.js';
import { AEAD_CIPHERS, derivePasswordKey, KeyExchange } from './crypto/index.js';
import { decodeBody, encodeFrame, FRAME_HEADER_LEN, FrameDecoder, type Hello, type PeerMessage } from './protocol.js';
import { expectNoLeaks, NET_HANDLES, type ResourceSnapshot, snapshotResources } from './testing/leaks.js';

// ---- helpers ----

const NAME_A = '02:00:00:00:00:0a' as PeerName;
const NAME_B = '02:00:00:00:00:0b' as PeerName;

function local(name: PeerName, uid: bigint, extra: Partial<LocalPeerInfo> = {}): LocalPeerInfo {
  return {
    name,
    nickname: `nick-${name.slice(-2)}`,
    uid,
    sleevePort: 7000,
    vxlanPort: 7001,
    vni: 42,
    encap: 'sleeve',
    mtu: 1400,
    tcpPort: 7002,
    ...extra,
  };
}

/** helloFrom builds a valid Hello, as a raw (non-Connection) peer would send. */
function helloFrom(name: PeerName, patch: Partial<Hello> = {}): Buffer {
  return encodeFrame({
    proto: 'weft',
    versionMin: 1,
    versionMax: 1,
    name,
    nickname: 'raw',
    uid: '99',
    tcpPort: 6783,
    sleevePort: 6783,
    vxlanPort: 6784,
    vni: 1,
    encap: 'sleeve',
    mtu: 1400,
    nonce: new Uint8Array(16),
    auth: false,
    ...patch,
  });
}

/** flipByte returns a copy of f with one bit of byte i flipped. */
function flipByte(f: Buffer, i: number): Buffer {
  const g = Buffer.from(f);
  g[i] = (g[i] ?? 0) ^ 1;
  return g;
}

const rawPackr = new Packr({ useRecords: false });

/** rawFrame frames any value without validation, as a broken or hostile peer could. */
function rawFrame(value: unknown): Buffer {
  const body = rawPackr.pack(value);
  const f = Buffer.alloc(FRAME_HEADER_LEN + body.length);
  f.writeUInt32BE(body.length, 0);
  f.set(body, FRAME_HEADER_LEN);
  return f;
}

/** until polls with real (unfaked) setImmediate until cond holds or 5 s of real time pass. */
async function until(cond: () => boolean, what = 'condition'): Promise<void> {
  const deadline = performance.now() + 5_000;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise<void>((r) => setImmediate(r));
  }
}

const conns: Connection[] = [];
const sockets: Socket[] = [];
const servers: Server[] = [];
let before: ResourceSnapshot;

/** listen starts a server on 127.0.0.1:0 whose sockets are handed to onSocket. */
async function listen(onSocket: (s: Socket) => void): Promise<number> {
  const server = createServer(onSocket);
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const a = server.address();
  if (typeof a !== 'object' || a === null) throw new Error('no address');
  return a.port;
}

function wrap(opts: Partial<ConnectionOptions> & Pick<ConnectionOptions, 'socket' | 'outbound' | 'local'>): Connection {
  const c = new Connection({ log: noopLogger, ...opts });
  conns.push(c);
  return c;
}

function closedOf(c: Connection): Promise<ConnectionClosed> {
  return new Promise((resolve) => {
    if (c.closedInfo) resolve(c.closedInfo);
    else c.once('closed', resolve);
  });
}

/** pair connects an outbound Connection (a) to an inbound one (b) over loopback. */
async function pair(
  a: Partial<ConnectionOptions> & Pick<ConnectionOptions, 'local'>,
  b: Partial<ConnectionOptions> & Pick<ConnectionOptions, 'local'>,
): Promise<{ a: Connection; b: Connection }> {
  let inbound: Connection | undefined;
  const port = await listen((socket) => {
    inbound = wrap({ ...b, socket, outbound: false });
  });
  const out = wrap({ ...a, socket: connect(port, '127.0.0.1'), outbound: true });
  await until(() => inbound !== undefined, 'inbound connection');
  return { a: out, b: inbound! };
}

beforeEach(() => {
  before = snapshotResources(NET_HANDLES);
});

afterEach(async () => {
  for (const c of conns) c.close('test over');
  for (const s of sockets) s.destroy();
  await Promise.all(conns.map((c) => c.done));
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  conns.length = 0;
  sockets.length = 0;
  servers.length = 0;
  vi.useRealTimers();
  await expectNoLeaks(before);
});

// ---- tests ----

describe('Connection', () => {
  it('completes the handshake and exchanges messages', async () => {
    const { a, b } = await pair({ local: local(NAME_A, 1n) }, { local: local(NAME_B, 2n, { encap: 'vxlan' }) });
    const [ra] = (await once(a, 'established')) as [Connection['remote']];
    if (b.state !== 'established') await once(b, 'established');
    expect(ra).toEqual({
      name: NAME_B,
      nickname: 'nick-0b',
      uid: 2n,
      version: 1,
      sleevePort: 7000,
      vxlanPort: 7001,
      vni: 42,
      encap: 'vxlan',
      fastdp: false,
      mtu: 1400,
      addr: '127.0.0.1',
      tcpPort: 7002,
    });
    expect(b.remote.name).toBe(NAME_A);
    expect(b.remote.addr).toBe('127.0.0.1');
    expect(a.connectionId).toMatch(/^[0-9a-f]{64}$/);
    expect(a.connectionId).toBe(b.connectionId);
    expect(a.outbound).toBe(true);
    expect(b.outbound).toBe(false);

    const got: PeerMessage[] = [];
    b.on('message', (m) => got.push(m));
    expect(a.send({ t: 'addrs', cidrs: ['10.32.0.1/32'] })).toBe(true);
    expect(a.send({ t: 'gossip', channel: 'topology', payload: Buffer.from('hi') })).toBe(true);
    await until(() => got.length === 2, 'messages');
    expect(got[0]).toEqual({ t: 'addrs', cidrs: ['10.32.0.1/32'] });
    expect(got[1]?.t).toBe('gossip');

    const bClosed = closedOf(b);
    a.close('bye');
    expect(a.state).toBe('closed');
    expect(a.closedInfo).toEqual({ reason: 'bye', initiator: 'local' });
    expect(await bClosed).toEqual({ reason: `${CLOSE_REMOTE_PREFIX}bye`, initiator: 'remote' });
    await Promise.all([a.done, b.done]);
    expect(a.send({ t: 'hb' })).toBe(false);
  });

  it('closes both sides with the version error when ranges do not overlap', async () => {
    const { a, b } = await pair(
      { local: local(NAME_A, 1n), versionMin: 2, versionMax: 3 },
      { local: local(NAME_B, 2n), versionMin: 1, versionMax: 1 },
    );
    const [ca, cb] = await Promise.all([closedOf(a), closedOf(b)]);
    expect(ca.error?.code).toBe('EWEFT_PROTOCOL_VERSION');
    expect(cb.error?.code).toBe('EWEFT_PROTOCOL_VERSION');
    expect(cb.reason).toBe('remote version range [2,3] is incompatible with ours [1,1]');
    expect(ca.reason).toBe('remote version range [1,1] is incompatible with ours [2,3]');
    expect(a.wasEstablished || b.wasEstablished).toBe(false);
  });

  it('authenticates peers that share a password', async () => {
    const password = Buffer.from('s3cret');
    const { a, b } = await pair({ local: local(NAME_A, 1n), password }, { local: local(NAME_B, 2n), password });
    await Promise.all([
      a.state === 'established' ? undefined : once(a, 'established'),
      b.state === 'established' ? undefined : once(b, 'established'),
    ]);
    expect(a.remote.name).toBe(NAME_B);
    expect(a.encrypted && b.encrypted).toBe(true);
    expect(a.cipher).toBe('aes-256-gcm');
    expect(b.cipher).toBe('aes-256-gcm');
    // The two ends agree on the data secrets, each direction its own.
    expect(a.dataKeys?.send.equals(b.dataKeys!.recv)).toBe(true);
    expect(a.dataKeys?.recv.equals(b.dataKeys!.send)).toBe(true);
    expect(a.dataKeys?.send.equals(a.dataKeys.recv)).toBe(false);
    // Sealed frames carry messages both ways.
    const gotB = once(b, 'message');
    const gotA = once(a, 'message');
    expect(a.send({ t: 'addrs', cidrs: ['10.1.0.0/16'] })).toBe(true);
    expect(b.send({ t: 'addrs', cidrs: ['10.2.0.0/16'] })).toBe(true);
    expect((await gotB)[0]).toEqual({ t: 'addrs', cidrs: ['10.1.0.0/16'] });
    expect((await gotA)[0]).toEqual({ t: 'addrs', cidrs: ['10.2.0.0/16'] });
    // The Close frame is sealed too: the peer opens it and reports our reason.
    a.close('bye');
    expect((await closedOf(b)).reason).toBe(`${CLOSE_REMOTE_PREFIX}bye`);
    expect(a.dataKeys).toBeUndefined(); // wiped on close
  });

  it('leaves data unencrypted only when both ends trust the other (trusted subnets), control sealed always', async () => {
    const password = Buffer.from('s3cret');
    const loopback = (ip: string) => ip === '127.0.0.1';
    const nobody = () => false;
    for (const [ta, tb, want] of [
      [loopback, loopback, true],
      [loopback, nobody, false],
      [nobody, loopback, false],
      [undefined, undefined, false],
    ] as const) {
      const { a, b } = await pair(
        { local: local(NAME_A, 1n), password, label: '127.0.0.1:6783', ...(ta && { trusts: ta }) },
        { local: local(NAME_B, 2n), password, ...(tb && { trusts: tb }) },
      );
      await Promise.all([
        a.state === 'established' ? undefined : once(a, 'established'),
        b.state === 'established' ? undefined : once(b, 'established'),
      ]);
      expect(a.encrypted && b.encrypted).toBe(true);
      expect([a.dataTrusted, b.dataTrusted]).toEqual([want, want]);
      a.close('next');
      await closedOf(b);
    }
    // Without a password trust means nothing: nothing is encrypted, nothing is "trusted".
    const { a } = await pair(
      { local: local(NAME_A, 1n), label: '127.0.0.1:6783', trusts: loopback },
      { local: local(NAME_B, 2n), trusts: loopback },
    );
    if (a.state !== 'established') await once(a, 'established');
    expect([a.encrypted, a.dataTrusted]).toEqual([false, false]);
  });

  it('is not encrypted without a password', async () => {
    const { a, b } = await pair({ local: local(NAME_A, 1n) }, { local: local(NAME_B, 2n) });
    if (a.state !== 'established') await once(a, 'established');
    expect(a.encrypted).toBe(false);
    expect(a.cipher).toBeUndefined();
    expect(a.dataKeys).toBeUndefined();
    expect(b.state).not.toBe('closed');
  });

  it('uses a password key derived once by the owner', async () => {
    const passwordKey = derivePasswordKey(Buffer.from('s3cret'));
    const { a, b } = await pair(
      { local: local(NAME_A, 1n), passwordKey },
      { local: local(NAME_B, 2n), password: Buffer.from('s3cret') },
    );
    await Promise.all([
      a.state === 'established' ? undefined : once(a, 'established'),
      b.state === 'established' ? undefined : once(b, 'established'),
    ]);
    expect(a.encrypted && b.encrypted).toBe(true);
  });

  for (const [what, mangle, reason] of [
    ['a tampered', (f: Buffer) => [flipByte(f, FRAME_HEADER_LEN)], /\(tamper\)/],
    ['a replayed', (f: Buffer) => [f, f], /\(replay\)/],
    ['a reordered', (f: Buffer, prev: Buffer) => [f, prev], /\(reorder\)/],
  ] as const) {
    it(`closes on ${what} sealed frame with the reason`, async () => {
      const password = Buffer.from('s3cret');
      let inbound: Connection | undefined;
      const port = await listen((socket) => {
        inbound = wrap({ socket, outbound: false, local: local(NAME_B, 2n), password });
      });
      // A proxy that forwards a→b frame by frame and mangles the 4th (the 2nd sealed one).
      const proxyPort = await listen((client) => {
        const up = connect(port, '127.0.0.1');
        sockets.push(client, up);
        up.on('data', (d) => client.write(d));
        const dec = new FrameDecoder(1 << 20);
        let n = 0;
        let prev: Buffer | undefined;
        client.on('data', (d) => {
          dec.push(d);
          for (let body = dec.next(); body !== undefined; body = dec.next()) {
            const f = Buffer.alloc(FRAME_HEADER_LEN + body.length);
            f.writeUInt32BE(body.length, 0);
            f.set(body, FRAME_HEADER_LEN);
            n++;
            if (n === 4) {
              for (const g of (mangle as (f: Buffer, prev: Buffer) => Buffer[])(f, prev!)) up.write(g);
            } else if (n !== 3 || what !== 'a reordered') up.write(f);
            prev = f;
          }
        });
        client.on('error', () => {});
        up.on('error', () => {});
      });
      const a = wrap({ socket: connect(proxyPort, '127.0.0.1'), outbound: true, local: local(NAME_A, 1n), password });
      await once(a, 'established');
      await until(() => inbound?.state === 'established', 'inbound established');
      a.send({ t: 'addrs', cidrs: ['10.1.0.0/16'] });
      a.send({ t: 'addrs', cidrs: ['10.3.0.0/16'] });
      const c = await closedOf(inbound!);
      expect(c.error?.code).toBe('EWEFT_PROTOCOL');
      expect(c.reason).toMatch(reason);
    });
  }

  for (const password of [Buffer.from('s3cret'), undefined]) {
    it(`${password ? 'hides' : 'shows'} message contents on the wire ${password ? 'with' : 'without'} a password`, async () => {
      let inbound: Connection | undefined;
      const port = await listen((socket) => {
        inbound = wrap({ socket, outbound: false, local: local(NAME_B, 2n), ...(password && { password }) });
      });
      const seen: Buffer[] = [];
      const proxyPort = await listen((client) => {
        const up = connect(port, '127.0.0.1');
        sockets.push(client, up);
        up.on('data', (d: Buffer) => {
          seen.push(d);
          client.write(d);
        });
        client.on('data', (d: Buffer) => {
          seen.push(d);
          up.write(d);
        });
        client.on('error', () => {});
        up.on('error', () => {});
      });
      const a = wrap({
        socket: connect(proxyPort, '127.0.0.1'),
        outbound: true,
        local: local(NAME_A, 1n),
        ...(password && { password }),
      });
      await once(a, 'established');
      await until(() => inbound?.state === 'established', 'inbound established');
      const marker = Buffer.from('MARKER-7f3a9c');
      const got = once(inbound!, 'message');
      a.send({ t: 'gossip', channel: 'test', payload: marker });
      const [msg] = (await got) as [PeerMessage];
      expect(msg.t === 'gossip' && Buffer.from(msg.payload).equals(marker)).toBe(true);
      expect(Buffer.concat(seen).includes(marker)).toBe(password === undefined);
    });
  }

  it('refuses peers whose passwords differ, on both sides', async () => {
    const { a, b } = await pair(
      { local: local(NAME_A, 1n), password: Buffer.from('one') },
      { local: local(NAME_B, 2n), password: Buffer.from('two') },
    );
    const [ca, cb] = await Promise.all([closedOf(a), closedOf(b)]);
    expect(ca.error?.code).toBe('EWEFT_AUTH');
    expect(ca.reason).toBe(`peer ${NAME_B} failed authentication: passwords differ`);
    expect(cb.error?.code).toBe('EWEFT_AUTH');
    expect(cb.reason).toBe(`peer ${NAME_A} failed authentication: passwords differ`);
  });

  it('refuses a peer without a password when we have one, and the other way round', async () => {
    const { a, b } = await pair(
      { local: local(NAME_A, 1n), password: Buffer.from('pw') },
      { local: local(NAME_B, 2n) },
    );
    const [ca, cb] = await Promise.all([closedOf(a), closedOf(b)]);
    expect(ca.error?.code).toBe('EWEFT_AUTH');
    expect(ca.reason).toBe(`peer ${NAME_B} sent no authentication but a password is configured here`);
    expect(cb.error?.code).toBe('EWEFT_AUTH');
    expect(cb.reason).toBe(`peer ${NAME_A} requires a password but none is configured here`);
  });

  it('refuses a peer that announces auth but sends something else, and a forged mac', async () => {
    const password = Buffer.from('pw');
    const kx = new KeyExchange({
      role: 'initiator',
      localName: NAME_B,
      passwordKey: Buffer.alloc(32, 1),
      suite: 'aes-256-gcm',
      nonce: new Uint8Array(16),
    }).publicKey;
    for (const second of [encodeFrame({ t: 'hb' }), encodeFrame({ t: 'auth', mac: new Uint8Array(32) })]) {
      let conn: Connection | undefined;
      const port = await listen((socket) => {
        conn = wrap({ socket, outbound: false, local: local(NAME_A, 1n), password });
      });
      const raw = connect(port, '127.0.0.1');
      sockets.push(raw);
      raw.write(Buffer.concat([helloFrom(NAME_B, { auth: true, kx, ciphers: [...AEAD_CIPHERS] }), second]));
      await until(() => conn !== undefined);
      const c = await closedOf(conn!);
      expect(c.error?.code).toBe('EWEFT_AUTH');
      expect(c.reason).toMatch(
        second.length > 20 ? /passwords differ/ : /sent a "hb" message instead of authentication/,
      );
    }
  });

  it('refuses a hello with auth and a missing, malformed or low-order key', async () => {
    const password = Buffer.from('pw');
    const ciphers = [...AEAD_CIPHERS];
    for (const [patch, reason] of [
      [{ auth: true, ciphers }, /invalid hello: kx: auth needs a 32-byte x25519 public key/],
      [{ auth: true, ciphers, kx: new Uint8Array(31) }, /invalid hello: kx: want exactly 32 bytes/],
      [{ auth: true, ciphers, kx: new Uint8Array(32) }, /(unusable|low-order) x25519 public key/],
      [{ auth: true, kx: new Uint8Array(32).fill(9) }, /invalid hello: ciphers: auth needs a cipher list/],
      [{ auth: true, kx: new Uint8Array(32).fill(9), ciphers: ['rot13'] }, /offers no cipher we speak/],
    ] as const) {
      let conn: Connection | undefined;
      const port = await listen((socket) => {
        conn = wrap({ socket, outbound: false, local: local(NAME_A, 1n), password });
      });
      const raw = connect(port, '127.0.0.1');
      sockets.push(raw);
      raw.on('error', () => {});
      raw.write(rawFrame({ ...decodeBody(helloFrom(NAME_B).subarray(FRAME_HEADER_LEN)), ...patch }));
      await until(() => conn !== undefined);
      const c = await closedOf(conn!);
      expect(c.error).toBeInstanceOf(ProtocolError);
      expect(c.reason).toMatch(reason);
    }
  });

  it('binds the key confirmation to both sides: a reflected or foreign confirmation fails', () => {
    // Replaces the old HMAC test: the confirmation is bound to direction, nonces, names and password.
    const n1 = new Uint8Array(16).fill(1);
    const n2 = new Uint8Array(16).fill(2);
    const run = (pwA: string, pwB: string, nameB: PeerName = NAME_B) => {
      const i = new KeyExchange({
        role: 'initiator',
        localName: NAME_A,
        passwordKey: Buffer.from(pwA),
        suite: 'aes-256-gcm',
        nonce: n1,
      });
      const r = new KeyExchange({
        role: 'responder',
        localName: nameB,
        passwordKey: Buffer.from(pwB),
        suite: 'aes-256-gcm',
        nonce: n2,
      });
      const ki = i.finish({ name: nameB, publicKey: r.publicKey, nonce: n2 });
      const kr = r.finish({ name: NAME_A, publicKey: i.publicKey, nonce: n1 });
      return { ki, kr };
    };
    const { ki, kr } = run('pw', 'pw');
    expect(ki.confirm.length).toBe(32);
    expect(kr.verifyConfirm(ki.confirm)).toBe(true);
    expect(ki.verifyConfirm(kr.confirm)).toBe(true);
    expect(ki.verifyConfirm(ki.confirm)).toBe(false); // reflected
    const other = run('pw', 'pW');
    expect(other.kr.verifyConfirm(other.ki.confirm)).toBe(false);
  });

  it('refuses a connection to itself', async () => {
    const me = local(NAME_A, 7n);
    const { a, b } = await pair({ local: me }, { local: me });
    const [ca, cb] = await Promise.all([closedOf(a), closedOf(b)]);
    expect(ca.reason).toBe(CLOSE_SELF);
    expect(cb.reason).toBe(CLOSE_SELF);
    expect(ca.error).toBeUndefined();
  });

  it('reports a peer name collision', async () => {
    const { a, b } = await pair({ local: local(NAME_A, 7n) }, { local: local(NAME_A, 8n) });
    const [ca, cb] = await Promise.all([closedOf(a), closedOf(b)]);
    expect(ca.error?.code).toBe('EWEFT_PEER_NAME_COLLISION');
    expect(cb.error?.code).toBe('EWEFT_PEER_NAME_COLLISION');
    expect(ca.reason).toMatch(
      /peer name collision: 02:00:00:00:00:0a is also used by another router \(uid 8, ours 7\)/,
    );
  });

  it('refuses a peer announcing a name no router may have (zero, broadcast, multicast)', async () => {
    for (const bad of ['00:00:00:00:00:00', 'ff:ff:ff:ff:ff:ff', '01:00:5e:00:00:01'] as PeerName[]) {
      let conn: Connection | undefined;
      const port = await listen((socket) => {
        conn = wrap({ socket, outbound: false, local: local(NAME_A, 1n) });
      });
      const raw = connect(port, '127.0.0.1');
      sockets.push(raw);
      raw.write(helloFrom(bad));
      await until(() => conn !== undefined);
      const c = await closedOf(conn!);
      expect(c.error?.code, bad).toBe('EWEFT_PROTOCOL');
      expect(c.reason).toMatch(/which no router may have/);
    }
  });

  it('closes a peer that sends garbage instead of a hello, tells it why, and keeps accepting', async () => {
    const inbound: Connection[] = [];
    const port = await listen((socket) => inbound.push(wrap({ socket, outbound: false, local: local(NAME_A, 1n) })));
    const raw = connect(port, '127.0.0.1');
    sockets.push(raw);
    const received: Buffer[] = [];
    raw.on('data', (d: Buffer) => received.push(d));
    // Listen for 'end' before anything can close the socket, so the event cannot be missed.
    const ended = once(raw, 'end');
    raw.write('GET / HTTP/1.1\r\nHost: example\r\n\r\n');
    await until(() => inbound.length === 1);
    const c = await closedOf(inbound[0]!);
    expect(c.error).toBeInstanceOf(ProtocolError);
    expect(c.error?.code).toBe('EWEFT_PROTOCOL');
    expect(c.reason).toMatch(/frame length \d+ exceeds the limit/);
    await ended;
    // The raw peer got our Hello, then a Close with the reason.
    const d = new FrameDecoder();
    d.push(Buffer.concat(received));
    expect(decodeBody(d.next()!).proto).toBe('weft');
    expect(decodeBody(d.next()!)).toEqual({ t: 'close', reason: c.reason });

    // A well-formed msgpack error inside a valid frame is refused the same way.
    const raw2 = connect(port, '127.0.0.1');
    sockets.push(raw2);
    raw2.write(Buffer.from([0, 0, 0, 2, 0xc1, 0xc1]));
    await until(() => inbound.length === 2);
    expect((await closedOf(inbound[1]!)).reason).toMatch(/^undecodable message|message is not a map/);

    // The server still accepts and completes a normal handshake.
    const good = wrap({ socket: connect(port, '127.0.0.1'), outbound: true, local: local(NAME_B, 2n) });
    await once(good, 'established');
    expect(good.remote.name).toBe(NAME_A);
  });

  it('closes a stranger whose length prefix exceeds HELLO_MAX_BYTES at once, buffering none of its body', async () => {
    let conn: Connection | undefined;
    const port = await listen((socket) => {
      conn = wrap({ socket, outbound: false, local: local(NAME_A, 1n) });
    });
    const raw = connect(port, '127.0.0.1');
    sockets.push(raw);
    raw.on('error', () => {}); // we may reset it
    const header = Buffer.alloc(FRAME_HEADER_LEN);
    header.writeUInt32BE(CONTROL_MESSAGE_MAX_BYTES, 0);
    raw.write(header);
    raw.write(Buffer.alloc(1024 * 1024)); // the start of an 8 MiB body
    await until(() => conn !== undefined);
    const c = await closedOf(conn!);
    expect(c.error?.code).toBe('EWEFT_PROTOCOL');
    expect(c.reason).toBe(`frame length ${CONTROL_MESSAGE_MAX_BYTES} exceeds the limit of ${HELLO_MAX_BYTES} bytes`);
    expect(conn!.bufferedBytes).toBe(0);
    // It keeps sending while we linger: cut off after LINGER_DISCARD_MAX_BYTES, not after CLOSE_LINGER_MS.
    const t0 = performance.now();
    await conn!.done;
    expect(performance.now() - t0).toBeLessThan(CLOSE_LINGER_MS);
    expect(conn!.bufferedBytes).toBe(0);
  });

  it('holds at most HELLO_MAX_BYTES of an incomplete frame before the handshake', async () => {
    let conn: Connection | undefined;
    const port = await listen((socket) => {
      conn = wrap({ socket, outbound: false, local: local(NAME_A, 1n), handshakeTimeoutMs: 300 });
    });
    const raw = connect(port, '127.0.0.1');
    sockets.push(raw);
    raw.on('error', () => {});
    const partial = Buffer.alloc(FRAME_HEADER_LEN + HELLO_MAX_BYTES - 1, 0xc0);
    partial.writeUInt32BE(HELLO_MAX_BYTES, 0);
    raw.write(partial);
    await until(() => conn !== undefined && conn.bufferedBytes === HELLO_MAX_BYTES - 1, 'the partial frame');
    const c = await closedOf(conn!);
    expect(c.reason).toBe('handshake not completed within 300 ms');
    expect(conn!.bufferedBytes).toBe(0);
  });

  it('accepts frames up to CONTROL_MESSAGE_MAX_BYTES once established', async () => {
    const { a, b } = await pair({ local: local(NAME_A, 1n) }, { local: local(NAME_B, 2n) });
    await Promise.all([once(a, 'established'), b.state === 'established' ? undefined : once(b, 'established')]);
    const got: PeerMessage[] = [];
    b.on('message', (m) => got.push(m));
    expect(a.send({ t: 'gossip', channel: 'bulk', payload: Buffer.alloc(4 * 1024 * 1024, 7) })).toBe(true);
    await until(() => got.length === 1, 'the 4 MiB gossip');
    expect(got[0]?.t === 'gossip' && got[0].payload.length).toBe(4 * 1024 * 1024);
    expect(b.state).toBe('established');
  });

  it('counts and ignores unknown message types, and closes on malformed known ones', async () => {
    let conn: Connection | undefined;
    const port = await listen((socket) => {
      conn = wrap({ socket, outbound: false, local: local(NAME_A, 1n) });
    });
    const raw = connect(port, '127.0.0.1');
    sockets.push(raw);
    const messages: PeerMessage[] = [];
    raw.write(
      Buffer.concat([
        helloFrom(NAME_B),
        rawFrame({ t: 'v9-feature', data: [1, 2, 3] }),
        encodeFrame({ t: 'addrs', cidrs: ['10.0.0.1/32'] }),
      ]),
    );
    await until(() => conn !== undefined);
    conn!.on('message', (m) => messages.push(m));
    await until(() => messages.length === 1, 'addrs after the unknown message');
    expect(conn!.stats.unknownIn).toBe(1);
    expect(conn!.state).toBe('established');

    raw.write(rawFrame({ t: 'addrs', cidrs: ['10.0.0.1'] }));
    const c = await closedOf(conn!);
    expect(c.error?.code).toBe('EWEFT_PROTOCOL');
    expect(c.reason).toBe('invalid addrs message: cidrs.0: want a.b.c.d/n');
  });

  it('drops sends while not established and while the socket buffer is over its bound', async () => {
    const { a, b } = await pair({ local: local(NAME_A, 1n), sendBufferMaxBytes: 1024 }, { local: local(NAME_B, 2n) });
    expect(a.send({ t: 'hb' })).toBe(false);
    expect(a.stats.sendDropped).toBe(1);
    await Promise.all([once(a, 'established'), b.state === 'established' ? undefined : once(b, 'established')]);
    const payload = Buffer.alloc(7 * 1024 * 1024);
    let sent = 0;
    while (a.send({ t: 'gossip', channel: 'bulk', payload })) sent++;
    expect(sent).toBeGreaterThanOrEqual(1);
    expect(a.stats.sendDropped).toBe(2);
    expect(() => a.send({ t: 'addrs', cidrs: ['nope'] })).toThrow(/refusing to send invalid addrs/);
  });
});

describe('Connection timers', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
  });

  for (const password of [undefined, Buffer.from('s3cret')]) {
    it(`sends heartbeats when idle and stays up while the peer does too${password ? ' (sealed)' : ''}`, async () => {
      const pw = password === undefined ? {} : { passwordKey: derivePasswordKey(password) };
      const { a, b } = await pair({ local: local(NAME_A, 1n), ...pw }, { local: local(NAME_B, 2n), ...pw });
      await until(() => a.state === 'established' && b.state === 'established');
      expect(a.encrypted).toBe(password !== undefined);
      for (let i = 0; i < 3 * (HEARTBEAT_TIMEOUT_MS / HEARTBEAT_INTERVAL_MS); i++) {
        const inA = a.stats.framesIn;
        const inB = b.stats.framesIn;
        vi.advanceTimersByTime(HEARTBEAT_INTERVAL_MS);
        await until(() => a.stats.framesIn > inA && b.stats.framesIn > inB, `heartbeat ${i}`);
      }
      expect(a.state).toBe('established');
      expect(b.state).toBe('established');
    });
  }

  it('closes after the heartbeat timeout when the peer goes silent', async () => {
    let rawSide: Socket | undefined;
    let heard = 0;
    const port = await listen((socket) => {
      rawSide = socket;
      socket.write(helloFrom(NAME_B)); // then silence
      socket.on('data', (d: Buffer) => {
        heard += d.length;
      });
    });
    const a = wrap({ socket: connect(port, '127.0.0.1'), outbound: true, local: local(NAME_A, 1n) });
    await once(a, 'established');
    const closed = closedOf(a);
    const afterHandshake = a.stats.framesOut;
    vi.advanceTimersByTime(HEARTBEAT_TIMEOUT_MS - HEARTBEAT_INTERVAL_MS);
    expect(a.state).toBe('established');
    // heartbeats while idle: one per interval
    expect(a.stats.framesOut - afterHandshake).toBeGreaterThanOrEqual(
      Math.floor((HEARTBEAT_TIMEOUT_MS - HEARTBEAT_INTERVAL_MS) / HEARTBEAT_INTERVAL_MS),
    );
    vi.advanceTimersByTime(HEARTBEAT_INTERVAL_MS);
    expect(a.state).toBe('closed');
    expect((await closed).reason).toBe(CLOSE_HEARTBEAT_TIMEOUT);
    await until(() => heard > 0 && rawSide !== undefined);
    await a.done; // the raw side answered our FIN: no linger timer needed
  });

  it('relaxes control heartbeats while the data path proves the peer alive, and not after', async () => {
    let heardBytes = 0;
    const port = await listen((socket) => {
      socket.write(helloFrom(NAME_B)); // then control silence: only the data path speaks
      socket.on('data', (d: Buffer) => {
        heardBytes += d.length;
      });
    });
    // The data path: the peer's heartbeats heard and ours acked, both up to date while `live`.
    let live = true;
    let asked: PeerName | undefined;
    const dataLiveness = (peer: PeerName) => {
      asked = peer;
      const t = Date.now();
      return live
        ? { heardAt: t, ackedAt: t }
        : { heardAt: t - HEARTBEAT_TIMEOUT_MS, ackedAt: t - HEARTBEAT_TIMEOUT_MS };
    };
    const a = wrap({ socket: connect(port, '127.0.0.1'), outbound: true, local: local(NAME_A, 1n), dataLiveness });
    await once(a, 'established');
    const afterHandshake = a.stats.framesOut;
    // Far beyond the plain timeout, well within the relaxed one: still up, one heartbeat per relaxed interval.
    vi.advanceTimersByTime(HEARTBEAT_RELAXED_INTERVAL_MS * 2 + 1_000);
    expect(asked).toBe(NAME_B);
    expect(a.state).toBe('established');
    expect(a.stats.framesOut - afterHandshake).toBe(2);
    // Silent on TCP for the relaxed timeout: closed even though the data path lives.
    vi.advanceTimersByTime(HEARTBEAT_RELAXED_TIMEOUT_MS - HEARTBEAT_RELAXED_INTERVAL_MS * 2);
    expect(a.state).toBe('closed');
    expect((await closedOf(a)).reason).toBe(CLOSE_HEARTBEAT_TIMEOUT);
    await until(() => heardBytes > 0);
    vi.advanceTimersByTime(CLOSE_LINGER_MS);
    await a.done;

    // Once the data path stops answering, the plain interval and timeout are back at once.
    live = true;
    const port2 = await listen((socket) => socket.resume().write(helloFrom(NAME_B)));
    const c = wrap({ socket: connect(port2, '127.0.0.1'), outbound: true, local: local(NAME_A, 1n), dataLiveness });
    await once(c, 'established');
    vi.advanceTimersByTime(HEARTBEAT_TIMEOUT_MS * 2);
    expect(c.state).toBe('established');
    live = false;
    const before = c.stats.framesOut;
    vi.advanceTimersByTime(HEARTBEAT_INTERVAL_MS);
    expect(c.stats.framesOut - before).toBe(1);
    expect(c.state).toBe('closed'); // TCP silent for > HEARTBEAT_TIMEOUT_MS and no data path to vouch
    vi.advanceTimersByTime(CLOSE_LINGER_MS);
    await c.done;
  });

  it('closes a peer that never completes the handshake', async () => {
    let conn: Connection | undefined;
    const port = await listen((socket) => {
      conn = wrap({ socket, outbound: false, local: local(NAME_A, 1n) });
    });
    const raw = connect(port, '127.0.0.1');
    sockets.push(raw);
    await until(() => conn !== undefined);
    vi.advanceTimersByTime(HANDSHAKE_TIMEOUT_MS - 1);
    expect(conn!.state).toBe('handshake');
    vi.advanceTimersByTime(1);
    const c = await closedOf(conn!);
    expect(c.error?.code).toBe('EWEFT_PROTOCOL');
    expect(c.reason).toBe(`handshake not completed within ${HANDSHAKE_TIMEOUT_MS} ms`);
  });

  it('destroys a socket whose peer never answers our close', async () => {
    const port = await listen((socket) => {
      socket.pause(); // never reads, so never sees our FIN
      sockets.push(socket);
    });
    const raw = connect(port, '127.0.0.1');
    const a = wrap({ socket: raw, outbound: true, local: local(NAME_A, 1n) });
    await once(raw, 'connect');
    a.close('leaving');
    let released = false;
    void a.done.then(() => {
      released = true;
    });
    await new Promise<void>((r) => setImmediate(r));
    expect(released).toBe(false);
    vi.advanceTimersByTime(2_000);
    await a.done;
  });
});
