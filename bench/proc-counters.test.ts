import { describe, expect, it } from 'vitest';
import {
  cpuPercent,
  fragmentsOf,
  parseSnmpIp,
  parseStatTicks,
  parseVmRssBytes,
  readFdCount,
  readRssBytes,
} from './proc-counters.js';

const SNMP = [
  'Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos InDiscards InDelivers OutRequests OutDiscards OutNoRoutes ReasmTimeout ReasmReqds ReasmOKs ReasmFails FragOKs FragFails FragCreates OutTransmits',
  'Ip: 2 64 3643 0 0 0 0 0 3643 2635 0 0 0 17 8 0 4 0 9 2635',
  'Icmp: InMsgs InErrors',
  'Icmp: 1 0',
  '',
].join('\n');

describe('parseSnmpIp', () => {
  it('maps each Ip counter name to its value', () => {
    const ip = parseSnmpIp(SNMP);
    expect(ip.get('InReceives')).toBe(3643);
    expect(fragmentsOf(ip)).toEqual({ created: 9, reassembly: 17 });
  });

  it('rejects text without the Ip lines', () => {
    expect(() => parseSnmpIp('Icmp: InMsgs\nIcmp: 1\n')).toThrow(/no Ip: header/);
  });

  it('counts absent fragmentation counters as 0', () => {
    expect(fragmentsOf(new Map())).toEqual({ created: 0, reassembly: 0 });
  });
});

describe('parseStatTicks', () => {
  it('adds utime and stime, counting fields after the command name', () => {
    const stat = '4242 (node (weft) x) S 1 4242 4242 0 -1 4194560 9000 0 0 0 1234 567 0 0 20 0 11 0 100 1 1';
    expect(parseStatTicks(stat)).toBe(1234 + 567);
  });

  it('rejects a line that is not a stat line', () => {
    expect(() => parseStatTicks('garbage')).toThrow(/not a \/proc/);
  });
});

describe('cpuPercent', () => {
  it('gives the share of one core', () => {
    expect(cpuPercent(250, 5_000, 100)).toBeCloseTo(50);
    expect(cpuPercent(1000, 5_000, 100)).toBeCloseTo(200);
    expect(cpuPercent(10, 0, 100)).toBeNaN();
  });
});

describe('parseVmRssBytes', () => {
  it('reads the VmRSS line in bytes', () => {
    const status = 'Name:\tnode\nVmHWM:\t   90000 kB\nVmRSS:\t   81234 kB\nVmData:\t  1000 kB\n';
    expect(parseVmRssBytes(status)).toBe(81_234 * 1024);
  });

  it('rejects a status without VmRSS (a kernel thread)', () => {
    expect(() => parseVmRssBytes('Name:\tkthreadd\nState:\tS\n')).toThrow(/no VmRSS/);
  });
});

describe('readRssBytes and readFdCount', () => {
  it('read this process', async () => {
    expect(await readRssBytes(process.pid)).toBeGreaterThan(1024 * 1024);
    expect(await readFdCount(process.pid)).toBeGreaterThanOrEqual(3);
  });
});
