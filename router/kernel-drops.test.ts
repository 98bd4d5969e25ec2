import { describe, expect, it } from 'vitest';
import { parseUdpSnmp, parseUdpSocketDrops, readKernelDrops } from './kernel-drops.js';

const SNMP = `Ip: Forwarding DefaultTTL InReceives
Ip: 1 64 100
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 10 2 7 12 5 0 0 0 0
`;

const UDP = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  101: 00000000:1A7F 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 12345 2 0000000000000000 17
  102: 00000000:1A80 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 12346 2 0000000000000000 0
  garbage line
`;

describe('kernel drop counters', () => {
  it('reads RcvbufErrors from /proc/net/snmp', () => {
    expect(parseUdpSnmp(SNMP).get('RcvbufErrors')).toBe(5);
    expect(parseUdpSnmp('nothing here').size).toBe(0);
  });

  it('reads per-socket drops by local port from /proc/net/udp, skipping garbage', () => {
    const m = parseUdpSocketDrops(UDP);
    expect(m.get(6783)).toBe(17);
    expect(m.get(6784)).toBe(0);
    expect(m.size).toBe(2);
  });

  it('reads this namespace live', () => {
    const k = readKernelDrops({ none: 1 });
    expect(k === undefined || (k.rcvbufErrors >= 0 && k.sockets.none === 0)).toBe(true);
  });
});
