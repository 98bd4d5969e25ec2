import dgram from 'node:dgram';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../common/log.js';
import type { PeerName } from '../../common/types.js';
import { tryLoadNative } from '../tun/native.js';
import {
  decodeFastdpHeartbeat,
  encodeFastdpHeartbeat,
  FASTDP_ACK,
  FASTDP_FLAG_MTU_OK,
  FASTDP_HEARTBEAT,
  FASTDP_HEARTBEAT_LEN,
  FASTDP_PROBE,
  FASTDP_PROBE_ACK,
  FASTDP_PROBE_MAX,
  FastdpHeartbeats,
  fastdpProbeSize,
} from './fastdp-heartbeats.js';

const SELF = '0a:1b:2c:3d:4e:5f' as PeerName;

describe('fast path heartbeats and MTU probes (wire format)', () => {
  it('round-trips heartbeats, acks, probes and probe acks', () => {
    expect(decodeFastdpHeartbeat(encodeFastdpHeartbeat(FASTDP_HEARTBEAT, SELF, 12.5))).toEqual({
      from: SELF,
      type: FASTDP_HEARTBEAT,
      stamp: 12.5,
      size: 0,
      mtuOk: false,
    });
    expect(decodeFastdpHeartbeat(encodeFastdpHeartbeat(FASTDP_ACK, SELF, 1, 0, FASTDP_FLAG_MTU_OK))?.mtuOk).toBe(true);
    expect(decodeFastdpHeartbeat(encodeFastdpHeartbeat(FASTDP_ACK, SELF, 1))?.type).toBe(FASTDP_ACK);
    const size = fastdpProbeSize(1450);
    expect(size).toBe(1402); // + UDP 8 + IPv6 40 = weft-vx's MTU
    const probe = encodeFastdpHeartbeat(FASTDP_PROBE, SELF, 7, size);
    expect(probe.length).toBe(size);
    expect(decodeFastdpHeartbeat(probe)).toEqual({ from: SELF, type: FASTDP_PROBE, stamp: 7, size, mtuOk: false });
    const ack = encodeFastdpHeartbeat(FASTDP_PROBE_ACK, SELF, 7, size);
    expect(ack.length).toBe(FASTDP_HEARTBEAT_LEN);
    expect(decodeFastdpHeartbeat(ack)).toEqual({ from: SELF, type: FASTDP_PROBE_ACK, stamp: 7, size, mtuOk: false });
  });

  it('refuses what does not add up', () => {
    const hb = encodeFastdpHeartbeat(FASTDP_HEARTBEAT, SELF, 1);
    expect(decodeFastdpHeartbeat(Buffer.concat([hb, Buffer.alloc(1)]))).toBeUndefined(); // padded heartbeat
    const probe = encodeFastdpHeartbeat(FASTDP_PROBE, SELF, 1, 100);
    expect(decodeFastdpHeartbeat(probe.subarray(0, 99))).toBeUndefined(); // size field disagrees (truncated)
    const bad = Buffer.from(hb);
    bad.writeUInt8(9, 4);
    expect(decodeFastdpHeartbeat(bad)).toBeUndefined(); // unknown type
    const small = encodeFastdpHeartbeat(FASTDP_PROBE_ACK, SELF, 1, 3);
    expect(decodeFastdpHeartbeat(small)).toBeUndefined(); // a probe ack for a probe shorter than a heartbeat
    const nan = Buffer.from(hb);
    nan.writeDoubleBE(Number.NaN, 16);
    expect(decodeFastdpHeartbeat(nan)).toBeUndefined();
    expect(decodeFastdpHeartbeat(Buffer.alloc(10))).toBeUndefined();
  });

  it('decodes every byte of a sender name (the hex table)', () => {
    for (let i = 0; i < 256; i += 1) {
      const hex = i.toString(16).padStart(2, '0');
      const name = `${hex}:00:ff:0${i % 10}:${hex}:a0` as PeerName;
      expect(decodeFastdpHeartbeat(encodeFastdpHeartbeat(FASTDP_HEARTBEAT, name, i))?.from).toBe(name);
    }
  });
});

const native = tryLoadNative();
const why = native === undefined ? 'native addon not built (run `npm run build:native`)' : undefined;

/** openOnLo opens a heartbeat socket on lo (no link-local address there: nothing is from a peer's weft-vx). */
async function openOnLo(heard: unknown[]): Promise<FastdpHeartbeats> {
  const hb = new FastdpHeartbeats({
    self: SELF,
    device: 'lo',
    port: 0,
    log: createLogger('error'),
    nowMs: () => 0,
    onControl: (c) => heard.push(c),
  });
  await hb.open();
  return hb;
}

/** sendFrom6 sends each datagram from ::1 to [::1]:port with a node socket. */
async function sendFrom6(port: number, datagrams: readonly Buffer[]): Promise<void> {
  const tx = dgram.createSocket('udp6');
  try {
    for (const d of datagrams)
      await new Promise<void>((resolve, reject) => tx.send(d, port, '::1', (err) => (err ? reject(err) : resolve())));
  } finally {
    tx.close();
  }
}

/** waitDropped waits until `hb.dropped` reaches `n` (at most 5 s: the assertion after it then fails). */
async function waitDropped(hb: FastdpHeartbeats, n: number): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (hb.dropped < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
}

describe.skipIf(why !== undefined)(`fast path heartbeat socket${why ? ` (skipped: ${why})` : ''}`, () => {
  it("drops a well-formed heartbeat that does not come from its sender name's weft-vx address", async () => {
    const heard: unknown[] = [];
    const hb = await openOnLo(heard);
    const peer = '0a:00:00:00:00:02' as PeerName;
    try {
      // From ::1, not fe80::…(peer)%lo: refused each time (the address cache does not let a second one in).
      await sendFrom6(
        hb.port,
        [0, 1, 2].map((i) => encodeFastdpHeartbeat(FASTDP_HEARTBEAT, peer, i)),
      );
      await waitDropped(hb, 3);
      expect(hb.dropped).toBe(3);
      expect(heard).toEqual([]);
      expect(hb.unsent).toBe(0); // nothing was answered
    } finally {
      hb.close();
    }
  });

  it('counts malformed, short, oversized and own datagrams as drops and stays open', async () => {
    const heard: unknown[] = [];
    const hb = await openOnLo(heard);
    try {
      const hb24 = encodeFastdpHeartbeat(FASTDP_HEARTBEAT, '0a:00:00:00:00:02' as PeerName, 1);
      const badMagic = Buffer.from(hb24);
      badMagic.writeUInt32BE(0x11223344, 0);
      const oversized = Buffer.alloc(FASTDP_PROBE_MAX + 1); // larger than any probe
      encodeFastdpHeartbeat(FASTDP_PROBE, SELF, 1, FASTDP_PROBE_MAX).copy(oversized);
      const bad = [
        Buffer.alloc(0),
        Buffer.alloc(10),
        hb24.subarray(0, 23),
        badMagic,
        oversized,
        encodeFastdpHeartbeat(FASTDP_HEARTBEAT, SELF, 1), // our own name
      ];
      await sendFrom6(hb.port, bad);
      await waitDropped(hb, bad.length);
      expect(hb.dropped).toBe(bad.length);
      expect(heard).toEqual([]);
      // Still receiving after all that.
      await sendFrom6(hb.port, [Buffer.alloc(3)]);
      await waitDropped(hb, bad.length + 1);
      expect(hb.dropped).toBe(bad.length + 1);
    } finally {
      hb.close();
    }
  });

  it('sends the heartbeats queued in one tick as one batch, and closes twice without harm', async () => {
    const hb = await openOnLo([]);
    try {
      for (let i = 1; i <= 5; i++) hb.sendHeartbeat(`0a:00:00:00:00:0${i}` as PeerName, 6784, true);
      hb.sendProbe('0a:00:00:00:00:01' as PeerName, 6784, 1450);
      expect(hb.batches).toBe(0); // queued, not sent yet
      await Promise.resolve();
      expect(hb.batches).toBe(1);
      // fe80::…%lo has no neighbour to take them: the kernel may refuse them, which is silence.
      expect(hb.unsent).toBeGreaterThanOrEqual(0);
      expect(hb.unsent).toBeLessThanOrEqual(6);
    } finally {
      hb.close();
      hb.close();
    }
    hb.sendHeartbeat('0a:00:00:00:00:01' as PeerName, 6784);
    await Promise.resolve();
    expect(hb.batches).toBe(1); // closed: nothing queued, nothing sent
    expect(hb.port).toBe(0);
  });
});
