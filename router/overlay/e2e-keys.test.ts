import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../../common/clock.js';
import { ProtocolError } from '../../common/errors.js';
import { noopLogger } from '../../common/log.js';
import type { PeerName } from '../../common/types.js';
import type { DataKeys } from '../connection.js';
import { derivePasswordKey } from '../crypto/keys.js';
import { EndToEndKeys, INIT_BYTES, RESP_BYTES } from './e2e-keys.js';

const A = 'aa:00:00:00:00:01' as PeerName;
const C = 'cc:00:00:00:00:03' as PeerName;
const PW = derivePasswordKey(Buffer.from('correct horse'));

/** Side is one router's exchange with what it installed and what the mesh carried from it. */
interface Side {
  keys: EndToEndKeys;
  installed: Map<PeerName, DataKeys>;
  cleared: PeerName[];
  outbox: { dst: PeerName; payload: Buffer }[];
}

function side(self: PeerName, clock: VirtualClock, pw = PW, reachable = true, known?: (p: PeerName) => boolean): Side {
  const s: Side = { keys: undefined as unknown as EndToEndKeys, installed: new Map(), cleared: [], outbox: [] };
  s.keys = new EndToEndKeys({
    self,
    passwordKey: pw,
    clock,
    log: noopLogger,
    send: (dst, payload) => {
      if (!reachable) return false;
      s.outbox.push({ dst, payload: Buffer.from(payload) });
      return true;
    },
    // copies: the exchange wipes the secrets after install
    install: (peer, k) =>
      s.installed.set(peer, { suite: k.suite, send: Buffer.from(k.send), recv: Buffer.from(k.recv) }),
    cleared: (peer) => s.cleared.push(peer),
    ...(known !== undefined && { known }),
  });
  return s;
}

/** deliver carries every queued message of `from` to `to` (the mesh's unicast), in order. */
function deliver(from: Side, fromName: PeerName, to: Side): void {
  const msgs = from.outbox.splice(0);
  for (const m of msgs) to.keys.onGossipUnicast(fromName, m.payload);
}

describe('EndToEndKeys', () => {
  it('makes matching keys through two messages: the initiator checks the confirmation', () => {
    const clock = new VirtualClock();
    const a = side(A, clock);
    const c = side(C, clock);
    expect(a.keys.request(C)).toBe(true);
    expect(a.outbox[0]?.payload.length).toBe(INIT_BYTES);
    deliver(a, A, c);
    expect(c.installed.has(A)).toBe(true); // the responder installs at once
    expect(c.outbox[0]?.payload.length).toBe(RESP_BYTES);
    deliver(c, C, a);
    const ka = a.installed.get(C)!;
    const kc = c.installed.get(A)!;
    expect(ka.suite).toBe('aes-256-gcm');
    expect(ka.send.equals(kc.recv)).toBe(true);
    expect(ka.recv.equals(kc.send)).toBe(true);
    expect(ka.send.equals(ka.recv)).toBe(false);
    expect(a.keys.stats).toMatchObject({ initiated: 1, completed: 1, refused: 0 });
    expect(c.keys.stats).toMatchObject({ answered: 1, refused: 0 });
    expect(a.keys.waiting(C)).toBe(false);
  });

  it('gives fresh keys on every exchange (a restarted peer asks again)', () => {
    const clock = new VirtualClock();
    const a = side(A, clock);
    const c = side(C, clock);
    a.keys.request(C);
    deliver(a, A, c);
    deliver(c, C, a);
    const first = Buffer.from(a.installed.get(C)!.send);
    const c2 = side(C, clock); // C restarted: it starts the exchange this time
    c2.keys.request(A);
    deliver(c2, C, a);
    deliver(a, A, c2);
    expect(a.installed.get(C)!.send.equals(first)).toBe(false);
    expect(a.installed.get(C)!.send.equals(c2.installed.get(A)!.recv)).toBe(true);
  });

  it('refuses an answer made with another password: nothing installed, asks again later', () => {
    const clock = new VirtualClock();
    const a = side(A, clock);
    const c = side(C, clock, derivePasswordKey(Buffer.from('wrong')));
    a.keys.request(C);
    deliver(a, A, c);
    expect(() => deliver(c, C, a)).toThrow(ProtocolError);
    expect(a.installed.size).toBe(0);
    expect(a.keys.stats.refused).toBe(1);
    expect(a.cleared).toEqual([C]);
  });

  it("when both start at once, the smaller name's Init wins and both end with one key pair", () => {
    const clock = new VirtualClock();
    const a = side(A, clock);
    const c = side(C, clock);
    a.keys.request(C);
    c.keys.request(A);
    deliver(a, A, c); // C (larger) drops its own Init and answers A's
    deliver(c, C, a); // A ignores C's Init and takes C's answer
    deliver(a, A, c);
    expect(a.keys.stats.completed).toBe(1);
    expect(c.keys.stats).toMatchObject({ crossed: 1, answered: 1, completed: 0 });
    expect(a.installed.get(C)!.send.equals(c.installed.get(A)!.recv)).toBe(true);
    expect(a.installed.get(C)!.recv.equals(c.installed.get(A)!.send)).toBe(true);
  });

  it('gives up an unanswered Init after the retry time, so the next drop asks again', () => {
    const clock = new VirtualClock();
    const a = side(A, clock);
    a.keys.request(C);
    expect(a.keys.request(C)).toBe(true); // one under way: no second Init
    expect(a.outbox.length).toBe(1);
    clock.advance(999);
    expect(a.keys.waiting(C)).toBe(true);
    clock.advance(2);
    expect(a.keys.waiting(C)).toBe(false);
    expect(a.keys.stats.lost).toBe(1);
    expect(a.cleared).toEqual([C]);
    a.keys.request(C);
    expect(a.outbox.length).toBe(2);
  });

  it('ignores an answer to an Init it gave up (stale), and reports an unreachable peer', () => {
    const clock = new VirtualClock();
    const a = side(A, clock);
    const c = side(C, clock);
    a.keys.request(C);
    deliver(a, A, c);
    clock.advance(1_001);
    deliver(c, C, a);
    expect(a.installed.size).toBe(0);
    expect(a.keys.stats.stale).toBe(1);
    const lone = side(A, clock, PW, false);
    expect(lone.keys.request(C)).toBe(false);
    expect(lone.cleared).toEqual([C]);
  });

  it('refuses malformed messages with a ProtocolError and counts them, installing nothing', () => {
    const clock = new VirtualClock();
    const a = side(A, clock);
    const c = side(C, clock);
    a.keys.request(C);
    const init = a.outbox[0]!.payload;
    const bad: Buffer[] = [
      Buffer.alloc(0),
      Buffer.from([1]),
      Buffer.concat([init, Buffer.alloc(1)]), // too long
      init.subarray(0, INIT_BYTES - 1), // too short
      Buffer.from([9, 1, 0, ...init.subarray(3)]), // unknown type
      Buffer.from([1, 2, 0, ...init.subarray(3)]), // unknown version
      Buffer.from([1, 1, 7, ...init.subarray(3)]), // unknown suite
      Buffer.concat([init.subarray(0, 3 + 16), Buffer.alloc(32)]), // all-zero (low-order) public key
      Buffer.from([2, 1, 0, ...Buffer.alloc(RESP_BYTES - 4)]), // a Resp one byte short
    ];
    for (const b of bad) expect(() => c.keys.onGossipUnicast(A, b)).toThrow(ProtocolError);
    expect(c.keys.stats.refused).toBe(bad.length);
    expect(c.installed.size).toBe(0);
    expect(c.outbox.length).toBe(0);
    // a Resp of the right size for an Init nobody sent is stale, not an error
    c.keys.onGossipUnicast(A, Buffer.from([2, 1, 0, ...Buffer.alloc(RESP_BYTES - 3)]));
    expect(c.keys.stats.stale).toBe(1);
  });

  it('refuses an answer whose confirmation was tampered with', () => {
    const clock = new VirtualClock();
    const a = side(A, clock);
    const c = side(C, clock);
    a.keys.request(C);
    deliver(a, A, c);
    const resp = c.outbox.splice(0)[0]!.payload;
    resp[RESP_BYTES - 1]! ^= 1;
    expect(() => a.keys.onGossipUnicast(C, resp)).toThrow(/confirmation/);
    expect(a.installed.size).toBe(0);
  });

  it('lets the datapath ask again on every way an exchange ends without keys (an unusable key in the answer)', () => {
    const clock = new VirtualClock();
    const a = side(A, clock);
    const c = side(C, clock);
    a.keys.request(C);
    deliver(a, A, c);
    const resp = c.outbox.splice(0)[0]!.payload;
    resp.fill(0, 3 + 32, 3 + 32 + 32); // the responder's public key: all zero, a low-order point
    expect(() => a.keys.onGossipUnicast(C, resp)).toThrow(ProtocolError);
    expect(a.installed.size).toBe(0);
    expect(a.cleared).toEqual([C]);
    expect(a.keys.waiting(C)).toBe(false);
  });

  it('backs the retry off per peer (1 s, 2 s, ...) and starts again at 1 s once keys are made', () => {
    const clock = new VirtualClock();
    const a = side(A, clock);
    const c = side(C, clock);
    a.keys.request(C);
    clock.advance(1_001);
    a.keys.request(C);
    clock.advance(1_500);
    expect(a.keys.waiting(C)).toBe(true); // the second waits 2 s
    clock.advance(600);
    expect(a.keys.waiting(C)).toBe(false);
    a.outbox.splice(0);
    a.keys.request(C);
    deliver(a, A, c);
    deliver(c, C, a);
    expect(a.keys.stats.completed).toBe(1);
    a.keys.request(C);
    clock.advance(1_001);
    expect(a.keys.waiting(C)).toBe(false);
  });

  it('drops Inits from peers not in its topology, keeping no keys for them', () => {
    const clock = new VirtualClock();
    const a = side(A, clock);
    const c = side(C, clock, PW, true, () => false);
    a.keys.request(C);
    deliver(a, A, c);
    expect(c.installed.size).toBe(0);
    expect(c.outbox.length).toBe(0);
    expect(c.keys.stats.unknown).toBe(1);
  });
});
