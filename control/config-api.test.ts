import { describe, expect, it } from 'vitest';
import { buildLaunchConfig, clientTarget, defaultApiSocket, isLoopbackHost, loopbackFor } from './config.js';

describe('defaultApiSocket', () => {
  it('lays the socket out per network namespace under /run/weft', () => {
    expect(defaultApiSocket({ inode: 1, name: undefined, root: true })).toBe('/run/weft/weft.sock');
    expect(defaultApiSocket({ inode: 2, name: 'h1', root: false })).toBe('/run/weft/netns/h1/weft.sock');
    expect(defaultApiSocket({ inode: 4026532000, name: undefined, root: false })).toBe(
      '/run/weft/netns-ino/4026532000/weft.sock',
    );
  });
});

describe('isLoopbackHost', () => {
  it.each([
    ['127.0.0.1', true],
    ['127.1.2.3', true],
    ['localhost', true],
    ['::1', true],
    ['[::1]', true],
    ['::ffff:127.0.0.1', true],
    ['0.0.0.0', false],
    ['192.168.1.10', false],
    ['myhost', false],
    ['128.0.0.1', false],
  ])('%s → %s', (host, want) => {
    expect(isLoopbackHost(host)).toBe(want);
  });
});

describe('API access in the launch configuration', () => {
  it('puts the token in the state directory and the socket in the namespace runtime directory', () => {
    const c = buildLaunchConfig([], { stateDir: '/tmp/x' }, {});
    expect(c.apiTokenFile).toBe('/tmp/x/api-token');
    expect(c.apiSocket).toMatch(/^\/run\/weft\/(weft\.sock|netns\/[^/]+\/weft\.sock|netns-ino\/\d+\/weft\.sock)$/);
    expect(c.httpLoopback).toBe(true);
  });

  it('marks a non-loopback --http-addr, and takes --api-socket / WEFT_API_SOCKET', () => {
    expect(buildLaunchConfig([], { stateDir: '/tmp/x', httpAddr: '0.0.0.0:6784' }, {}).httpLoopback).toBe(false);
    expect(buildLaunchConfig([], { stateDir: '/tmp/x', apiSocket: '/tmp/a.sock' }, {}).apiSocket).toBe('/tmp/a.sock');
    expect(buildLaunchConfig([], { stateDir: '/tmp/x' }, { WEFT_API_SOCKET: '/tmp/b.sock' }).apiSocket).toBe(
      '/tmp/b.sock',
    );
  });

  it.each([['rel.sock'], [`/${'x'.repeat(107)}`]])('refuses --api-socket %s', (apiSocket) => {
    expect(() => buildLaunchConfig([], { stateDir: '/tmp/x', apiSocket }, {})).toThrow(/invalid --api-socket/);
  });
});

describe('clientTarget', () => {
  it('prefers the socket of this namespace, then 127.0.0.1:6784 with the token of the state directory', () => {
    const t = clientTarget({}, { WEFT_STATE_DIR: '/tmp/s' });
    expect(t.addr).toEqual({ host: '127.0.0.1', port: 6784 });
    expect(t.socketPath).toMatch(/\/weft\.sock$/);
    expect(t.tokenFile).toBe('/tmp/s/api-token');
  });

  it('uses a TCP address given alone, unless a socket is given too', () => {
    expect(clientTarget({ httpAddr: '10.0.0.5:6784' }, {})).not.toHaveProperty('socketPath');
    expect(clientTarget({}, { WEFT_HTTP_ADDR: '127.0.0.1:7000' })).not.toHaveProperty('socketPath');
    const both = clientTarget({ httpAddr: '127.0.0.1:7000', apiSocket: '/tmp/w.sock', apiTokenFile: '/tmp/t' }, {});
    expect(both).toEqual({ addr: { host: '127.0.0.1', port: 7000 }, socketPath: '/tmp/w.sock', tokenFile: '/tmp/t' });
    expect(clientTarget({ httpAddr: '0.0.0.0:6784' }, {}).addr).toEqual({ host: '127.0.0.1', port: 6784 });
    expect(loopbackFor({ host: '192.168.1.2', port: 1 })).toEqual({ host: '192.168.1.2', port: 1 });
  });
});
