import dgram from 'node:dgram';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../common/log.js';
import type { PeerName } from '../../common/types.js';
import {
  decodeFastdpHeartbeat,
  encodeFastdpHeartbeat,
  FASTDP_ACK,
  FASTDP_FLAG_MTU_OK,
  FASTDP_HEARTBEAT,
  FASTDP_HEARTBEAT_LEN,
  FASTDP_PROBE,
  FASTDP_PROBE_ACK,
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

describe('fast path heartbeat socket', () => {
  it("drops a well-formed heartbeat that does not come from its sender name's weft-vx address", async () => {
    const heard: unknown[] = [];
    const hb = new FastdpHeartbeats({
      self: SELF,
      device: 'lo',
      port: 0,
      log: createLogger('error'),
      nowMs: () => 0,
      onControl: (c) => heard.push(c),
    });
    await hb.open();
    const port = (hb as unknown as { sock: dgram.Socket }).sock.address().port;
    const peer = '0a:00:00:00:00:02' as PeerName;
    const tx = dgram.createSocket('udp6');
    try {
      for (let i = 0; i < 3; i++) {
        // From ::1, not fe80::…(peer): refused each time (the address cache does not let a second one in).
        await new Promise<void>((resolve, reject) =>
          tx.send(encodeFastdpHeartbeat(FASTDP_HEARTBEAT, peer, i), port, '::1', (err) =>
            err ? reject(err) : resolve(),
          ),
        );
      }
      const deadline = Date.now() + 5_000;
      while (hb.dropped < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      expect(hb.dropped).toBe(3);
      expect(heard).toEqual([]);
    } finally {
      tx.close();
      hb.close();
    }
  });
});
