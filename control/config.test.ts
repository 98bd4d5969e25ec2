import { describe, expect, it } from 'vitest';
import { buildLaunchConfig, parseHostPort, parsePeerAddress } from './config.js';

describe('buildLaunchConfig', () => {
  it('fills the documented defaults', () => {
    const c = buildLaunchConfig([], { stateDir: '/tmp/x' }, {});
    expect(c).toMatchObject({
      port: 6783,
      encap: 'sleeve',
      vxlanPort: 6784,
      httpAddr: { host: '127.0.0.1', port: 6784 },
      dnsDomain: 'weft.local',
      mtu: undefined,
      offload: true,
      datapath: 'native',
      noDiscovery: false,
    });
    expect(c.ipallocRange).toEqual({ addr: 0x0a200000, prefix: 12 });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('takes the environment, and flags over the environment', () => {
    const env = { WEFT_MTU: '1400', WEFT_HTTP_ADDR: '127.0.0.1:7000', WEFT_STATE_DIR: '/tmp/s', WEFT_PASSWORD: 'pw' };
    const c = buildLaunchConfig(['10.0.0.1', 'host-b:7000'], { mtu: '1300' }, env);
    expect(c.mtu).toBe(1300);
    expect(c.httpAddr).toEqual({ host: '127.0.0.1', port: 7000 });
    expect(c.stateDir).toBe('/tmp/s');
    expect(c.password?.toString()).toBe('pw');
    expect(c.peers).toEqual(['10.0.0.1:6783', 'host-b:7000']);
  });

  it.each([
    [{ encap: 'ipsec' }, /invalid --encap "ipsec"/],
    [{ mtu: '100' }, /invalid --mtu "100"/],
    [{ mtu: '1e3' }, /invalid --mtu/],
    [{ port: '70000' }, /invalid --port "70000"/],
    [{ vni: '16777216' }, /invalid --vni/],
    [{ ipallocRange: '10.32.0.0' }, /invalid --ipalloc-range/],
    [{ ipallocRange: '10.32.0.0/33' }, /invalid --ipalloc-range/],
    [{ name: 'not-a-mac' }, /invalid --name/],
    [{ nickname: 'bad name!' }, /invalid --nickname/],
    [{ device: 'a-very-long-device-name' }, /invalid --device/],
    [{ dnsDomain: 'bad_domain!' }, /invalid --dns-domain/],
    [{ httpAddr: 'localhost' }, /invalid --http-addr/],
    [{ passwordFile: '/nonexistent/pw' }, /cannot read --password-file/],
    [{ encap: 'vxlan', vxlanPort: '6783' }, /must differ from --port/],
  ])('rejects %o with a clear message', (flags, msg) => {
    expect(() => buildLaunchConfig([], { stateDir: '/tmp/x', ...flags }, {})).toThrow(msg);
  });

  it('configures IPAM and DNS, and refuses bad values with the flag named', () => {
    const alone = buildLaunchConfig([], { stateDir: '/tmp/x' }, {});
    expect(alone).toMatchObject({
      ipallocInit: { mode: 'auto', alone: true },
      ipallocRangeGiven: false,
      containerGraceMs: 30_000,
      dnsUpstream: undefined,
      dnsTtl: 1,
      dnsPort: 53,
    });
    const withPeers = buildLaunchConfig(
      ['10.0.0.1'],
      {
        stateDir: '/tmp/x',
        ipallocRange: '10.40.0.0/16',
        containerGrace: '0',
        dnsUpstream: '1.1.1.1, 9.9.9.9:5353',
        dnsTtl: '30',
        dnsPort: '5353',
      },
      {},
    );
    expect(withPeers).toMatchObject({
      ipallocInit: { mode: 'auto', alone: false },
      ipallocRangeGiven: true,
      containerGraceMs: 0,
      dnsUpstream: ['1.1.1.1', '9.9.9.9:5353'],
      dnsTtl: 30,
      dnsPort: 5353,
    });
    expect(buildLaunchConfig([], { stateDir: '/tmp/x' }, { WEFT_IPALLOC_INIT: 'observer' }).ipallocInit).toEqual({
      mode: 'observer',
    });
    const bad: [Record<string, string>, RegExp][] = [
      [{ ipallocInit: 'consensus=3' }, /--ipalloc-init/],
      [{ containerGrace: '-1' }, /--container-grace/],
      [{ dnsUpstream: 'dns.example' }, /--dns-upstream/],
      [{ dnsUpstream: '1.1.1.1:99999' }, /port/],
      [{ dnsTtl: '1.5' }, /--dns-ttl/],
      [{ dnsPort: '0' }, /--dns-port/],
    ];
    for (const [flags, msg] of bad) {
      expect(() => buildLaunchConfig([], { stateDir: '/tmp/x', ...flags }, {}), JSON.stringify(flags)).toThrow(msg);
    }
  });

  it('rejects a malformed peer', () => {
    expect(() => buildLaunchConfig(['10.0.0.1:99999'], { stateDir: '/tmp/x' }, {})).toThrow(/invalid peer port/);
    expect(() => parsePeerAddress('a b')).toThrow(/invalid peer/);
    expect(() => parsePeerAddress('$(reboot)')).toThrow(/invalid peer/);
  });

  it('parses host:port', () => {
    expect(parseHostPort('0.0.0.0:6784', 'x')).toEqual({ host: '0.0.0.0', port: 6784 });
    expect(() => parseHostPort(':6784', 'x')).toThrow(/invalid x/);
  });
});
