import { describe, expect, it } from 'vitest';
import { ConfigError } from '../common/index.js';
import { parseUpstreamServer, sameAddress } from './upstream-server.js';

describe('parseUpstreamServer', () => {
  it('parses IPv4 and IPv6 forms, port 53 by default', () => {
    expect(parseUpstreamServer('8.8.8.8')).toEqual({
      address: '8.8.8.8',
      port: 53,
      family: 'udp4',
      name: '8.8.8.8:53',
    });
    expect(parseUpstreamServer('127.0.0.1:5353').name).toBe('127.0.0.1:5353');
    expect(parseUpstreamServer('2001:db8::1')).toMatchObject({ address: '2001:db8::1', port: 53, family: 'udp6' });
    expect(parseUpstreamServer('[0:0::1]:5300')).toMatchObject({ address: '::1', port: 5300, name: '[::1]:5300' });
  });

  it('refuses host names, bad ports and garbage with a ConfigError', () => {
    for (const bad of ['dns.google', '1.2.3', '01.2.3.4', '1.2.3.4:0', '1.2.3.4:70000', '[::1]x', '', 'a:b:c']) {
      expect(() => parseUpstreamServer(bad), bad).toThrow(ConfigError);
    }
  });
});

describe('sameAddress', () => {
  it('matches the same text, and IPv6 in any spelling', () => {
    expect(sameAddress('127.0.0.1', parseUpstreamServer('127.0.0.1:5353'))).toBe(true);
    expect(sameAddress('127.0.0.2', parseUpstreamServer('127.0.0.1:5353'))).toBe(false);
    expect(sameAddress('2001:db8:0:0::1', parseUpstreamServer('[2001:db8::1]:53'))).toBe(true);
    expect(sameAddress('2001:db8::2', parseUpstreamServer('[2001:db8::1]:53'))).toBe(false);
    expect(sameAddress('not an address', parseUpstreamServer('[2001:db8::1]:53'))).toBe(false);
  });
});
