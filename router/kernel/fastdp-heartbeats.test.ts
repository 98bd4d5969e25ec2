import { describe, expect, it } from 'vitest';
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
});
