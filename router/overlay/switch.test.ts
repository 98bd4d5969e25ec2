import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../../common/clock.js';
import { noopLogger } from '../../common/log.js';
import type { PeerName } from '../../common/types.js';
import type { Connection, DataKeys } from '../connection.js';
import { DATA_HEARTBEAT_INTERVAL_MS } from '../constants.js';
import { Encap, type Hop, peerNameHi, peerNameLo } from '../datapath/fib.js';
import type { ControlDatagram, Forwarder } from '../datapath/forwarder.js';
import { PeerCrypto } from '../datapath/peer-crypto.js';
import { spanCidrs } from '../kernel/fast-data-path.js';
import { fastdpProbeSize } from '../kernel/fastdp-heartbeats.js';
import { FASTDP_MTU_REPROBE_MS } from '../kernel/fastdp-mtu.js';
import { tryLoadNative } from '../tun/native.js';
import { SleeveType } from './frame.js';
import {
  E2E_AUTH_CHECK_MS,
  fastActive,
  fastProves,
  healthyIntervalMs,
  ipToU32,
  linkState,
  OverlaySwitch,
} from './switch.js';

const PEER = '02:00:00:00:00:02' as PeerName;
const TIMEOUT_MS = 1_500;

function fakeConn(encap: 'sleeve' | 'vxlan'): Connection {
  return {
    outbound: true,
    remote: {
      name: PEER,
      nickname: 'r2',
      addr: '127.0.0.2',
      tcpPort: 6783,
      sleevePort: 7000,
      vxlanPort: 7001,
      encap,
      mtu: 1400,
    },
  } as unknown as Connection;
}

function setup(encap: 'sleeve' | 'vxlan') {
  return setupWith(TIMEOUT_MS, encap);
}

function setupWith(peerTimeoutMs: number, encap: 'sleeve' | 'vxlan' = 'sleeve') {
  const clock = new VirtualClock(0);
  const sent: { hop: Hop; vxlan: boolean; size: number }[] = [];
  const forwarder = {
    sendHeartbeat: (hop: Hop, _stamp: number, size = 0) => {
      sent.push({ hop, vxlan: false, size });
      return true;
    },
    sendVxlanHeartbeat: (hop: Hop) => {
      sent.push({ hop, vxlan: true, size: 0 });
      return true;
    },
  } as unknown as Forwarder;
  let changes = 0;
  const pmtus: number[] = [];
  const sw = new OverlaySwitch({
    clock,
    log: noopLogger,
    encap,
    peerTimeoutMs,
    forwarder: () => forwarder,
    routeMtu: () => 1500,
    kernelPathMtu: () => 0,
    onPmtu: (_via, pmtu) => pmtus.push(pmtu),
    onChange: () => changes++,
  });
  const dgram = (type: number, overlay: Encap, stamp = clock.now(), size = 0): ControlDatagram => ({
    type,
    srcHi: peerNameHi(PEER),
    srcLo: peerNameLo(PEER),
    addr: ipToU32('127.0.0.2'),
    port: 7000,
    stamp,
    size,
    overlay,
  });
  return { clock, sent, sw, dgram, changes: () => changes, pmtus };
}

describe('OverlaySwitch', () => {
  it('makes a sleeve hop for a sleeve peer and heartbeats it on the clock', () => {
    const { clock, sent, sw } = setup('vxlan');
    const st = sw.add(fakeConn('sleeve'));
    expect(st.vxlanHop).toBeUndefined();
    expect(st.hop.encap).toBe(Encap.Sleeve);
    expect(st.hop.addr).toBe(0x7f000002);
    const first = sent.length;
    expect(first).toBeGreaterThan(0);
    sw.start();
    clock.advance(DATA_HEARTBEAT_INTERVAL_MS * 4);
    expect(sent.filter((s) => !s.vxlan && s.size === 0).length).toBe(5);
    sw.stop();
    const after = sent.length;
    clock.advance(DATA_HEARTBEAT_INTERVAL_MS * 4);
    expect(sent.length).toBe(after);
    expect(sw.size).toBe(0);
  });

  it('establishes a link once heartbeats flow both ways, and fails it after the timeout', () => {
    const { clock, sw, dgram, changes } = setup('sleeve');
    const st = sw.add(fakeConn('sleeve'));
    sw.start();
    expect(linkState(st).state).toBe('pending');
    clock.advance(10);
    sw.onDataControl(dgram(SleeveType.Heartbeat, Encap.Sleeve));
    sw.onDataControl(dgram(SleeveType.HeartbeatAck, Encap.Sleeve, clock.now() - 4));
    expect(linkState(st)).toMatchObject({ state: 'established', rttMs: 4 });
    expect(changes()).toBe(1);
    expect(sw.summaries()).toEqual([
      { peer: PEER, addr: '127.0.0.2', tcpPort: 6783, outbound: true, established: true },
    ]);
    clock.advance(TIMEOUT_MS + DATA_HEARTBEAT_INTERVAL_MS);
    expect(linkState(st)).toMatchObject({ state: 'failed', reason: 'no heartbeats either way' });
    expect(changes()).toBe(2);
  });

  it('uses VXLAN while its heartbeats flow and falls back to sleeve when they stop', () => {
    const { clock, sent, sw, dgram } = setup('vxlan');
    const st = sw.add(fakeConn('vxlan'));
    expect(st.vxlanHop?.encap).toBe(Encap.Vxlan);
    expect(sent.some((s) => s.vxlan)).toBe(true);
    sw.start();
    const both = () => {
      for (const o of [Encap.Sleeve, Encap.Vxlan]) {
        sw.onDataControl(dgram(SleeveType.Heartbeat, o));
        sw.onDataControl(dgram(SleeveType.HeartbeatAck, o));
      }
    };
    both();
    expect(st.hop).toBe(st.vxlanHop);
    // Only sleeve keeps working.
    for (let t = 0; t < TIMEOUT_MS + 1_000; t += DATA_HEARTBEAT_INTERVAL_MS) {
      clock.advance(DATA_HEARTBEAT_INTERVAL_MS);
      sw.onDataControl(dgram(SleeveType.Heartbeat, Encap.Sleeve));
      sw.onDataControl(dgram(SleeveType.HeartbeatAck, Encap.Sleeve));
    }
    expect(st.hop).toBe(st.sleeveHop);
    expect(linkState(st)).toMatchObject({
      state: 'established',
      reason: 'vxlan no heartbeats either way: using sleeve',
    });
    both();
    expect(st.hop).toBe(st.vxlanHop);
  });

  it('paces heartbeats: every tick until the path is established, then every healthy interval, retrying a lost one at once', () => {
    const slow = setupWith(5_000);
    expect(healthyIntervalMs(5_000)).toBe(2_000);
    expect(healthyIntervalMs(TIMEOUT_MS)).toBe(DATA_HEARTBEAT_INTERVAL_MS); // a short timeout keeps every tick
    const st = slow.sw.add(fakeConn('sleeve'));
    slow.sw.start();
    const plain = () => slow.sent.filter((s) => s.size === 0).length;
    const answer = () => {
      slow.sw.onDataControl(slow.dgram(SleeveType.Heartbeat, Encap.Sleeve));
      slow.sw.onDataControl(slow.dgram(SleeveType.HeartbeatAck, Encap.Sleeve));
    };
    // Pending: one per tick.
    slow.clock.advance(DATA_HEARTBEAT_INTERVAL_MS * 2);
    expect(plain()).toBe(3);
    answer();
    expect(linkState(st).state).toBe('established');
    // Healthy and answered: one per 2 s, not per tick.
    for (let i = 0; i < 20; i++) {
      const before = plain();
      slow.clock.advance(DATA_HEARTBEAT_INTERVAL_MS);
      if (plain() > before) answer();
    }
    expect(plain()).toBe(3 + 20 / 4);
    // A heartbeat whose ack is lost is sent again at the next tick, and every tick until answered.
    const before = plain();
    slow.clock.advance(2_000); // one due now, not answered
    expect(plain()).toBe(before + 1);
    slow.clock.advance(DATA_HEARTBEAT_INTERVAL_MS);
    slow.clock.advance(DATA_HEARTBEAT_INTERVAL_MS);
    expect(plain()).toBe(before + 3);
    expect(linkState(st).state).toBe('established');
    answer();
    slow.clock.advance(DATA_HEARTBEAT_INTERVAL_MS);
    expect(plain()).toBe(before + 3);
    // Silence still fails the link within the timeout.
    slow.clock.advance(5_000 + DATA_HEARTBEAT_INTERVAL_MS);
    expect(linkState(st).state).toBe('failed');
  });

  it('ignores datagrams from peers it does not know and forgets only the connection it holds', () => {
    const { sw, dgram } = setup('sleeve');
    sw.onDataControl({ ...dgram(SleeveType.Heartbeat, Encap.Sleeve), srcLo: 1 });
    const conn = fakeConn('sleeve');
    sw.add(conn);
    expect(sw.remove(fakeConn('sleeve'))).toBe(false);
    expect(sw.has(PEER)).toBe(true);
    expect(sw.remove(conn)).toBe(true);
    expect(sw.names()).toEqual([]);
  });

  it('applies an acknowledged path MTU probe to the direct hops and reports it', () => {
    const { sw, dgram, pmtus } = setup('sleeve');
    const st = sw.add(fakeConn('sleeve'));
    const probe = st.pmtu.status().probing;
    expect(probe).toBeGreaterThan(0);
    sw.onDataControl(dgram(SleeveType.HeartbeatAck, Encap.Sleeve, 0, probe));
    expect(st.sleeveHop.pmtu).toBe(st.pmtu.pmtu);
    expect(pmtus.every((p) => p === st.pmtu.pmtu)).toBe(true);
  });

  it('parses IPv4 and IPv4-mapped addresses, and refuses others', () => {
    expect(ipToU32('10.32.0.1')).toBe(0x0a200001);
    expect(ipToU32('::ffff:127.0.0.1')).toBe(0x7f000001);
    expect(() => ipToU32('fe80::1')).toThrow(/not an IPv4/);
  });
});

describe('OverlaySwitch data keys (a password is set)', () => {
  const native = tryLoadNative();
  const keys = (): DataKeys => ({ suite: 'aes-256-gcm', send: randomBytes(32), recv: randomBytes(32) });
  const encryptedConn = (): Connection => {
    const c = fakeConn('vxlan') as unknown as { dataKeys: DataKeys };
    c.dataKeys = keys();
    return c as unknown as Connection;
  };
  function make(withNative: boolean) {
    return new OverlaySwitch({
      clock: new VirtualClock(0),
      log: noopLogger,
      encap: 'vxlan',
      forwarder: () => undefined,
      routeMtu: () => 1500,
      kernelPathMtu: () => 0,
      onChange: () => {},
      native: withNative ? native : undefined,
    });
  }

  it.skipIf(native === undefined)(
    'puts keys on an encrypted peer, uses sleeve only, installs on reconnect, closes when it goes',
    () => {
      const sw = make(true);
      const c1 = encryptedConn();
      const st1 = sw.add(c1);
      expect(st1.vxlanHop).toBeUndefined(); // VXLAN cannot be sealed
      const pc = st1.sleeveHop.crypto;
      expect(pc?.open).toBe(true);
      expect(sw.crypto(PEER)).toBe(pc);
      // A reconnect while the old connection is up: the same keys object, new secrets.
      const c2 = encryptedConn();
      const st2 = sw.add(c2);
      expect(st2.sleeveHop.crypto).toBe(pc);
      expect(pc?.receiver?.rekeys).toBe(1);
      expect(sw.remove(c1)).toBe(false);
      expect(pc?.open).toBe(true);
      expect(sw.remove(c2)).toBe(true);
      expect(pc?.open).toBe(false); // the hops keep it, closed: nothing falls back to cleartext
      expect(st2.sleeveHop.crypto).toBe(pc);
      sw.stop();
    },
  );

  it.skipIf(native === undefined)(
    "keeps a trusted peer's direct hops in the clear (VXLAN allowed) and its keys for relays",
    () => {
      const sw = make(true);
      const c = encryptedConn() as unknown as { dataTrusted: boolean };
      c.dataTrusted = true;
      const st = sw.add(c as unknown as Connection);
      expect(st.sleeveHop.crypto).toBeUndefined();
      expect(st.vxlanHop).toBeDefined();
      expect(st.vxlanHop?.crypto).toBeUndefined();
      // What is relayed to or from it is still sealed end to end, with its connection's keys.
      expect(sw.crypto(PEER)?.open).toBe(true);
      sw.stop();
    },
  );

  it.skipIf(native === undefined)(
    'gives a peer without a connection a keyless PeerCrypto that asks for end-to-end keys, and keeps them across a connection',
    () => {
      const clock = new VirtualClock(0);
      const wanted: PeerName[] = [];
      const sw = new OverlaySwitch({
        clock,
        log: noopLogger,
        encap: 'sleeve',
        forwarder: () => undefined,
        routeMtu: () => 1500,
        kernelPathMtu: () => 0,
        onChange: () => {},
        native,
        wantKeys: (p) => wanted.push(p),
      });
      const pc = sw.dataKeys(PEER);
      expect(sw.dataKeys(PEER)).toBe(pc); // one per peer
      expect(pc.open).toBe(false);
      pc.want();
      pc.want();
      expect(wanted).toEqual([]); // never from inside the datapath: on a timer
      clock.advance(1);
      expect(wanted).toEqual([PEER]);
      sw.clearWant(PEER);
      pc.want();
      clock.advance(1);
      expect(wanted).toEqual([PEER, PEER]);
      sw.installEndToEnd(PEER, keys());
      expect(pc.open && pc.endToEnd).toBe(true);
      // Keys there now: a want for none no longer holds when the timer runs, nothing is asked.
      pc.want();
      clock.advance(1);
      expect(wanted).toEqual([PEER, PEER]);
      // Datagrams failing under the keys we hold: asked only after the auth check, if none opened.
      pc.want(true);
      clock.advance(E2E_AUTH_CHECK_MS - 1);
      expect(wanted).toEqual([PEER, PEER]);
      clock.advance(1);
      expect(wanted).toEqual([PEER, PEER, PEER]);
      sw.installEndToEnd(PEER, keys());
      // A connection comes: its keys seal; when it goes the end-to-end keys take over again.
      const c = encryptedConn();
      expect(sw.add(c).sleeveHop.crypto).toBe(pc);
      expect(pc.endToEnd).toBe(false);
      sw.remove(c);
      expect(pc.open && pc.endToEnd).toBe(true);
      sw.forget([PEER]);
      expect(pc.open).toBe(false);
      expect(sw.crypto(PEER)).toBeUndefined();
      sw.stop();
    },
  );

  it("without the native addon drops an encrypted peer's data (NO_KEYS), never the clear", () => {
    const sw = make(false);
    const st = sw.add(encryptedConn());
    expect(st.sleeveHop.crypto).toBe(PeerCrypto.NO_KEYS);
    expect(st.sleeveHop.crypto?.sender).toBeUndefined();
    expect(st.vxlanHop).toBeUndefined();
    sw.stop();
  });

  it('leaves a cleartext connection without keys (VXLAN allowed)', () => {
    const sw = make(true);
    const st = sw.add(fakeConn('vxlan'));
    expect(st.sleeveHop.crypto).toBeUndefined();
    expect(st.vxlanHop).toBeDefined();
    sw.stop();
  });
});

describe('OverlaySwitch fast path', () => {
  const MTU = 1450;
  const PROBE = fastdpProbeSize(MTU);
  function fastSetup(peerFastdp: boolean, up = true, timeoutMs = TIMEOUT_MS) {
    const clock = new VirtualClock(0);
    const fastSent: string[] = [];
    const probes: string[] = [];
    const flags: boolean[] = [];
    let changes = 0;
    let pathMtu = 0;
    const sleeveSent: number[] = [];
    const sw = new OverlaySwitch({
      clock,
      log: noopLogger,
      encap: 'auto',
      peerTimeoutMs: timeoutMs,
      forwarder: () =>
        ({
          sendHeartbeat: (_h: Hop, _stamp: number, size = 0) => sleeveSent.push(size) > 0,
          sendVxlanHeartbeat: () => true,
        }) as unknown as Forwarder,
      routeMtu: () => 1500,
      kernelPathMtu: () => pathMtu,
      onChange: () => changes++,
      fastdp: () => ({
        up,
        mtu: MTU,
        sendHeartbeat: (peer: PeerName, _port: number, mtuOk?: boolean) => {
          fastSent.push(peer);
          flags.push(mtuOk === true);
        },
        sendProbe: (peer: PeerName) => void probes.push(peer),
      }),
    });
    const conn = fakeConn('sleeve');
    (conn.remote as { fastdp: boolean }).fastdp = peerFastdp;
    const st = sw.add(conn);
    const tick = (): void => {
      clock.advance(DATA_HEARTBEAT_INTERVAL_MS);
      sw.heartbeat();
    };
    /** answered: the peer's heartbeat and its ack of ours, now. */
    const answered = (): void => {
      sw.onFastdpControl({ from: PEER, type: 1, stamp: clock.now(), size: 0, mtuOk: true });
      sw.onFastdpControl({ from: PEER, type: 2, stamp: clock.now(), size: 0, mtuOk: true });
    };
    const probeAcked = (size = PROBE): void =>
      sw.onFastdpControl({ from: PEER, type: 4, stamp: 0, size, mtuOk: false });
    const setPathMtu = (m: number): void => {
      pathMtu = m;
    };
    return {
      clock,
      sw,
      st,
      fastSent,
      probes,
      flags,
      sleeveSent,
      tick,
      answered,
      probeAcked,
      setPathMtu,
      changes: () => changes,
    };
  }

  it('sends no sleeve heartbeats while the fast path proves the peer, and resumes them on the first late one', () => {
    const { clock, st, sleeveSent, tick, answered, probeAcked } = fastSetup(true);
    answered();
    tick();
    probeAcked();
    expect(fastActive(st)).toBe(true);
    const healthy = healthyIntervalMs(TIMEOUT_MS);
    let at = clock.now();
    for (let i = 0; i < 20; i++) {
      tick();
      if (clock.now() - at >= healthy) {
        answered(); // the fast path's heartbeat and ack, once per healthy interval
        at = clock.now();
      }
    }
    const during = sleeveSent.length;
    for (let i = 0; i < 20; i++) {
      tick();
      if (clock.now() - at >= healthy) {
        answered();
        at = clock.now();
      }
    }
    expect(sleeveSent.length).toBe(during); // none while proven by weft-vx
    expect(st.data.state).toBe('established'); // fed by the fast path's heartbeats
    expect(fastProves(st, clock.now(), healthy)).toBe(true);
    // The fast path goes quiet: sleeve heartbeats come back before either path fails.
    let resumedAt = -1;
    for (let t = 0; t < TIMEOUT_MS && resumedAt < 0; t += DATA_HEARTBEAT_INTERVAL_MS) {
      tick();
      if (sleeveSent.length > during) resumedAt = clock.now();
    }
    expect(resumedAt).toBeGreaterThan(0);
    expect(resumedAt - at).toBeLessThanOrEqual(healthy + 2 * DATA_HEARTBEAT_INTERVAL_MS);
    expect(st.data.state).toBe('established');
    expect(fastActive(st)).toBe(true);
  });

  it('uses the fast path only while heartbeats and a full-size probe through weft-vx are answered, and says why not', () => {
    const { clock, sw, st, fastSent, probes, tick, probeAcked } = fastSetup(true);
    expect(st.fast).toBeDefined();
    expect(fastSent).toEqual([PEER]);
    expect(fastActive(st)).toBe(false);
    expect(sw.reason(st, clock.now())).toBe('fastdp pending');
    sw.onFastdpControl({ from: PEER, type: 1, stamp: 0, size: 0, mtuOk: true });
    expect(fastActive(st)).toBe(false);
    clock.advance(5);
    sw.onFastdpControl({ from: PEER, type: 2, stamp: 0, size: 0, mtuOk: true });
    expect(st.fast?.rttMs).toBe(5);
    // Heartbeats answered, the MTU not yet proven: still sleeve, and no probe before the next tick.
    expect(fastActive(st)).toBe(false);
    expect(sw.reason(st, clock.now())).toBe('fastdp pending');
    expect(probes).toEqual([]);
    tick();
    expect(probes).toEqual([PEER]);
    probeAcked();
    expect(fastActive(st)).toBe(true);
    expect(sw.reason(st, clock.now())).toBeUndefined();
    // Silence past the peer timeout: back to sleeve, with the reason status shows.
    for (let t = 0; t <= TIMEOUT_MS + DATA_HEARTBEAT_INTERVAL_MS; t += DATA_HEARTBEAT_INTERVAL_MS) tick();
    expect(fastActive(st)).toBe(false);
    expect(sw.reason(st, clock.now())).toMatch(/^vxlan blocked: no heartbeat for \d+ s$/);
    // Heartbeats return: the MTU is proven again before the fast path is used.
    sw.onFastdpControl({ from: PEER, type: 1, stamp: clock.now(), size: 0, mtuOk: true });
    sw.onFastdpControl({ from: PEER, type: 2, stamp: clock.now(), size: 0, mtuOk: true });
    expect(fastActive(st)).toBe(false);
    tick();
    probeAcked();
    expect(fastActive(st)).toBe(true);
  });

  it('names a one-way block a block, also when the peer says "MTU not proven" before our own timeout', () => {
    // What e2e/fastdp saw once: the peer drops inbound VXLAN. Its heartbeats still reach us, ours
    // no longer reach it; its fast path fails on its timeout and renews its MTU proof, and its
    // heartbeats say so a moment before our unanswered ones fail ours.
    const timeout = 5_000;
    const { clock, sw, st, tick, answered, probeAcked } = fastSetup(true, true, timeout);
    answered();
    tick();
    probeAcked();
    expect(fastActive(st)).toBe(true);
    const healthy = healthyIntervalMs(timeout);
    const blockedAt = clock.now();
    const peerFailsAt = blockedAt + timeout - DATA_HEARTBEAT_INTERVAL_MS;
    let heard = blockedAt;
    const reasons = new Set<string>();
    let peerSaidUnproven = false;
    while (clock.now() <= blockedAt + timeout + 2 * DATA_HEARTBEAT_INTERVAL_MS) {
      tick();
      const now = clock.now();
      if (now - heard >= healthy || now >= peerFailsAt) {
        sw.onFastdpControl({ from: PEER, type: 1, stamp: now, size: 0, mtuOk: now < peerFailsAt });
        heard = now;
        if (now >= peerFailsAt && st.fast?.state === 'established') peerSaidUnproven = true;
      }
      if (!fastActive(st)) reasons.add((sw.reason(st, now) ?? 'none').replace(/\d+/, 'N'));
    }
    expect(peerSaidUnproven).toBe(true); // the race happened: the flag came while ours still stood
    expect(st.fast?.state).toBe('failed');
    expect([...reasons]).toEqual(['vxlan blocked: no heartbeat for N s']);
    // The seconds count from the silent direction (our last ack), not from the peer's last heartbeat.
    const s = Number(/(\d+) s$/.exec(sw.reason(st, clock.now()) ?? '')?.[1]);
    expect(s).toBeGreaterThanOrEqual(timeout / 1000);
    sw.stop();
  });

  it('falls back to sleeve when full-size probes go unanswered while heartbeats flow, and returns when one is', () => {
    const { clock, sw, st, probes, tick, answered, probeAcked } = fastSetup(true);
    answered();
    tick();
    probeAcked(PROBE - 1); // a smaller probe's ack proves nothing
    expect(fastActive(st)).toBe(false);
    for (let t = 0; t <= TIMEOUT_MS + DATA_HEARTBEAT_INTERVAL_MS; t += DATA_HEARTBEAT_INTERVAL_MS) {
      tick();
      answered();
    }
    expect(st.fast?.state).toBe('established');
    expect(fastActive(st)).toBe(false);
    expect(sw.reason(st, clock.now())).toBe(`vxlan: MTU ${MTU} not carried`);
    // Failed probes are retried at the healthy pace, not every tick.
    const n = probes.length;
    tick();
    answered();
    expect(probes.length).toBeLessThanOrEqual(n + 1);
    probeAcked();
    expect(fastActive(st)).toBe(true);
  });

  it('re-probes a proven fast path and falls back when the probes stop getting through', () => {
    const { clock, sw, st, probes, tick, answered, probeAcked } = fastSetup(true);
    answered();
    tick();
    probeAcked();
    expect(fastActive(st)).toBe(true);
    const n = probes.length;
    for (let t = 0; t < FASTDP_MTU_REPROBE_MS; t += DATA_HEARTBEAT_INTERVAL_MS) {
      tick();
      answered();
    }
    expect(probes.length).toBe(n + 1);
    expect(fastActive(st)).toBe(true);
    for (let t = 0; t <= TIMEOUT_MS + DATA_HEARTBEAT_INTERVAL_MS; t += DATA_HEARTBEAT_INTERVAL_MS) {
      tick();
      answered();
    }
    expect(fastActive(st)).toBe(false);
    expect(sw.reason(st, clock.now())).toBe(`vxlan: MTU ${MTU} not carried`);
  });

  it('falls back at once when the kernel knows a path MTU too small for a full frame', () => {
    const { clock, sw, st, tick, answered, probeAcked, setPathMtu } = fastSetup(true);
    answered();
    tick();
    probeAcked();
    expect(fastActive(st)).toBe(true);
    // An ICMP "fragmentation needed" told the kernel 1400: the next probe would be fragmented at
    // its source and prove nothing, so the kernel's view decides.
    setPathMtu(1400);
    for (let t = 0; t < FASTDP_MTU_REPROBE_MS; t += DATA_HEARTBEAT_INTERVAL_MS) {
      tick();
      answered();
    }
    probeAcked();
    expect(fastActive(st)).toBe(false);
    expect(sw.reason(st, clock.now())).toBe(`vxlan: MTU ${MTU} not carried (path MTU 1400)`);
  });

  it('uses the fast path only once the peer says its own probes are answered too, and tells the peer', () => {
    const { clock, sw, st, flags, tick, probeAcked } = fastSetup(true);
    sw.onFastdpControl({ from: PEER, type: 1, stamp: clock.now(), size: 0, mtuOk: false });
    sw.onFastdpControl({ from: PEER, type: 2, stamp: clock.now(), size: 0, mtuOk: false });
    tick();
    expect(flags.at(-1)).toBe(false); // our proof does not hold yet
    probeAcked();
    expect(flags.at(-1)).toBe(true); // said at once
    expect(st.fastMtu?.state).toBe('ok');
    expect(fastActive(st)).toBe(false);
    expect(sw.reason(st, clock.now())).toBe('vxlan: MTU not proven by peer');
    sw.onFastdpControl({ from: PEER, type: 2, stamp: clock.now(), size: 0, mtuOk: true });
    expect(fastActive(st)).toBe(true);
    // The peer's proof fails (frames towards it no longer cross): both ends back to sleeve.
    sw.onFastdpControl({ from: PEER, type: 1, stamp: clock.now(), size: 0, mtuOk: false });
    expect(fastActive(st)).toBe(false);
  });

  it('does not try the fast path towards a peer without one, or when ours is down, and ignores strangers', () => {
    const a = fastSetup(false);
    expect(a.st.fast).toBeUndefined();
    expect(a.st.fastOff).toBe('peer has no fast path');
    expect(a.fastSent).toEqual([]);
    a.sw.onFastdpControl({ from: '02:00:00:00:00:09' as PeerName, type: 2, stamp: 0, size: 0, mtuOk: true });
    expect(a.changes()).toBe(0);
    const b = fastSetup(true, false);
    expect(b.st.fast).toBeUndefined();
    expect(b.st.fastOff).toBe('fastdp off here');
  });
});

describe('spanCidrs', () => {
  it('cuts a span into aligned CIDRs, each more specific than the range', () => {
    expect(spanCidrs(0x0a200000, 0x0a300000, 12)).toEqual([
      { addr: 0x0a200000, prefix: 13 },
      { addr: 0x0a280000, prefix: 13 },
    ]);
    expect(spanCidrs(0x0a240000, 0x0a240003, 12)).toEqual([
      { addr: 0x0a240000, prefix: 31 },
      { addr: 0x0a240002, prefix: 32 },
    ]);
    expect(spanCidrs(5, 5, 12)).toEqual([]);
  });
});
