import { describe, expect, it } from 'vitest';
import type { RouterStatus } from '../router/index.js';
import { dockerLine, formatConnections, formatPeers, formatTargets } from './format.js';

const NOW = Date.parse('2026-01-01T00:00:00Z');

function withTargets(targets: unknown[]): RouterStatus {
  return { targets } as unknown as RouterStatus;
}

describe('formatTargets', () => {
  it('shows each target with its state, peer, attempts, last error and next retry', () => {
    const text = formatTargets(
      withTargets([
        { address: '10.0.0.2:6783', state: 'established', attempts: 0, peer: '02:00:00:00:00:02' },
        {
          address: '10.0.0.3:6783',
          state: 'failed',
          attempts: 3,
          lastError: 'connect ECONNREFUSED 10.0.0.3:6783',
          nextRetryAt: NOW + 4_200,
        },
        { address: '10.0.0.4:6783', state: 'failed', attempts: 1, lastError: 'cannot connect to ourselves' },
        { address: '10.0.0.5:6783', state: 'connecting', attempts: 1 },
        { address: '10.0.0.6:6783', state: 'retrying', attempts: 2, lastError: 'timeout', nextRetryAt: NOW - 5 },
      ]),
      NOW,
    );
    expect(text.split('\n')).toEqual([
      '10.0.0.2:6783  established  peer 02:00:00:00:00:02',
      '10.0.0.3:6783  failed  3 attempts  last error: connect ECONNREFUSED 10.0.0.3:6783  next retry in 4.2 s',
      '10.0.0.4:6783  failed  1 attempt  last error: cannot connect to ourselves  not retried',
      '10.0.0.5:6783  connecting  1 attempt',
      '10.0.0.6:6783  retrying  2 attempts  last error: timeout  next retry now',
      '',
    ]);
  });

  it('says so when there are no targets', () => {
    expect(formatTargets(withTargets([]), NOW)).toBe('no targets\n');
  });
});

describe('formatConnections', () => {
  it('says per connection whether it is encrypted, and with which cipher', () => {
    const text = formatConnections({
      peers: [],
      targets: [],
      connections: [
        { remoteAddr: '10.0.0.2:6783', outbound: true, state: 'established', encrypted: true, cipher: 'aes-256-gcm' },
        { remoteAddr: '10.0.0.3:40000', outbound: false, state: 'established', encrypted: false },
        { remoteAddr: '10.0.0.4:40001', outbound: false, state: 'pending' },
      ],
    } as unknown as RouterStatus);
    expect(text.split('\n')).toEqual([
      '-> 10.0.0.2:6783  established  encrypted(aes-256-gcm)',
      '<- 10.0.0.3:40000  established  unencrypted',
      '<- 10.0.0.4:40001  pending',
      '',
    ]);
  });
});

describe('formatPeers', () => {
  it('says which data path each peer uses, and why a peer is not on the fast path', () => {
    const peer = (name: string, encap: string, encapReason?: string) => ({
      name,
      nickname: name,
      addr: '192.168.1.2',
      encap,
      ...(encapReason === undefined ? {} : { encapReason }),
      state: 'established',
      cidrs: [],
      connections: 1,
      txPackets: 0,
      txBytes: 0,
      rxPackets: 0,
      rxBytes: 0,
    });
    const text = formatPeers({
      name: 'me',
      nickname: 'me',
      exposed: [],
      peers: [peer('a', 'fastdp'), peer('b', 'sleeve', 'vxlan blocked: no heartbeat for 5 s')],
    } as unknown as RouterStatus);
    expect(text).toMatch(/^a\(a\) {2}192\.168\.1\.2 {2}fastdp {2}established$/m);
    expect(text).toMatch(
      /^b\(b\) {2}192\.168\.1\.2 {2}sleeve \(vxlan blocked: no heartbeat for 5 s\) {2}established$/m,
    );
  });
});

describe('formatPeers: bare kernel vxlan hosts', () => {
  it('gives each --vxlan-peer a line saying how it is reached and what was seen behind it', () => {
    const text = formatPeers({
      name: 'me',
      nickname: 'me',
      exposed: [],
      peers: [],
      vxlanPeerPaths: [
        {
          addr: '192.168.1.12',
          via: 'fastdp',
          seen: ['10.32.0.9'],
          routed: ['10.32.0.0/16', '10.33.0.0/16', '10.34.0.0/15', '10.36.0.0/14', '10.40.0.0/13'],
        },
        { addr: '192.168.1.13', via: 'vxlan', seen: [] },
        { addr: '192.168.1.14', via: 'none', reason: 'fastdp off: native addon missing', seen: [] },
      ],
    } as unknown as RouterStatus);
    expect(text).toMatch(
      /^192\.168\.1\.12 {2}kernel vxlan host {2}fastdp \(weft-vx floods to it; routed 10\.32\.0\.0\/16 10\.33\.0\.0\/16 10\.34\.0\.0\/15 10\.36\.0\.0\/14 …\(\+1\)\) {2}seen 10\.32\.0\.9$/m,
    );
    expect(text).toMatch(/^192\.168\.1\.13 {2}kernel vxlan host {2}vxlan \(the router's VXLAN socket\)$/m);
    expect(text).toMatch(/^192\.168\.1\.14 {2}kernel vxlan host {2}unreachable \(fastdp off: native addon missing\)$/m);
    // Without any, nothing is added.
    expect(formatPeers({ name: 'me', nickname: 'me', exposed: [], peers: [] } as unknown as RouterStatus)).toBe(
      'me(me)  this router\n',
    );
  });
});

describe('dockerLine', () => {
  it('says which Docker integration is active, and off when there is none', () => {
    expect(dockerLine(undefined)).toBe('off (--docker-socket none)');
    expect(dockerLine({ socket: '/d.sock', state: 'not found', events: false, badEvents: 0 })).toBe(
      'not found at /d.sock',
    );
    expect(dockerLine({ socket: '/d.sock', state: 'connected', events: false, badEvents: 0 })).toBe(
      'connected to /d.sock (no events)',
    );
  });
});
