import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  buildLaunchConfig,
  checkStateDir,
  parseHostPort,
  parsePeerAddress,
  prepareStateDir,
  TARGETS_MAX,
} from './config.js';

describe('buildLaunchConfig', () => {
  it('fills the documented defaults', () => {
    const c = buildLaunchConfig([], { stateDir: '/tmp/x' }, {});
    expect(c).toMatchObject({
      port: 6783,
      encap: 'auto',
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
    [{ encap: 'auto', vxlanPort: '6783' }, /must differ from --port/],
    [{ vxlanPeer: '192.168.1' }, /invalid --vxlan-peer "192.168.1": want IPv4/],
    [{ vxlanPeer: '192.168.1.12,,' }, /invalid --vxlan-peer "": want IPv4/],
    [{ vxlanPeer: '192.168.1.256' }, /invalid --vxlan-peer/],
    [{ vxlanPeer: '0.0.0.0' }, /invalid --vxlan-peer "0.0.0.0": want a unicast/],
    [{ vxlanPeer: '127.0.0.1' }, /want a unicast/],
    [{ vxlanPeer: '239.1.1.1' }, /want a unicast/],
    [{ vxlanPeer: '255.255.255.255' }, /want a unicast/],
    [{ trustedSubnets: '10.0.0.0/8' }, /--trusted-subnets needs a password/],
  ])('rejects %o with a clear message', (flags, msg) => {
    expect(() => buildLaunchConfig([], { stateDir: '/tmp/x', ...flags }, {})).toThrow(msg);
  });

  it('turns egress masquerading on with --masquerade or WEFT_MASQUERADE=1, off by default', () => {
    expect(buildLaunchConfig([], { stateDir: '/tmp/x' }, {}).masquerade).toBe(false);
    expect(buildLaunchConfig([], { stateDir: '/tmp/x', masquerade: true }, {}).masquerade).toBe(true);
    expect(buildLaunchConfig([], { stateDir: '/tmp/x' }, { WEFT_MASQUERADE: '1' }).masquerade).toBe(true);
  });

  it('takes --trusted-subnets (or WEFT_TRUSTED_SUBNETS) with a password, refusing host bits and non-prefixes', () => {
    const env = { WEFT_PASSWORD: 'pw' };
    expect(buildLaunchConfig([], { stateDir: '/tmp/x' }, env).trustedSubnets).toEqual([]);
    expect(
      buildLaunchConfig([], { stateDir: '/tmp/x', trustedSubnets: '10.0.0.0/8, 192.168.1.0/24' }, env).trustedSubnets,
    ).toEqual([
      { addr: 0x0a000000, prefix: 8 },
      { addr: 0xc0a80100, prefix: 24 },
    ]);
    expect(
      buildLaunchConfig([], { stateDir: '/tmp/x' }, { ...env, WEFT_TRUSTED_SUBNETS: '172.16.0.0/12' }).trustedSubnets,
    ).toEqual([{ addr: 0xac100000, prefix: 12 }]);
    expect(() => buildLaunchConfig([], { stateDir: '/tmp/x', trustedSubnets: '10.1.2.3/8' }, env)).toThrow(
      /invalid --trusted-subnets "10.1.2.3\/8": host bits set \(want 10.0.0.0\/8\)/,
    );
    expect(() => buildLaunchConfig([], { stateDir: '/tmp/x', trustedSubnets: '10.0.0.0/8,bogus' }, env)).toThrow(
      /invalid --trusted-subnets "bogus"/,
    );
  });

  it('takes WEFT_REKEY_AFTER_MS between 1 s and the 120 s default, and nothing else', () => {
    expect(buildLaunchConfig([], { stateDir: '/tmp/x' }, {}).rekeyAfterTimeMs).toBeUndefined();
    expect(buildLaunchConfig([], { stateDir: '/tmp/x' }, { WEFT_REKEY_AFTER_MS: '1000' }).rekeyAfterTimeMs).toBe(1000);
    for (const bad of ['999', '120001', '2s', '']) {
      expect(() => buildLaunchConfig([], { stateDir: '/tmp/x' }, { WEFT_REKEY_AFTER_MS: bad })).toThrow(
        /WEFT_REKEY_AFTER_MS/,
      );
    }
  });

  it('takes --encap auto and fastdp, and refuses fastdp with a password (never the clear)', () => {
    expect(buildLaunchConfig([], { stateDir: '/tmp/x', encap: 'auto' }, {}).encap).toBe('auto');
    expect(buildLaunchConfig([], { stateDir: '/tmp/x', encap: 'fastdp' }, {}).encap).toBe('fastdp');
    expect(() => buildLaunchConfig([], { stateDir: '/tmp/x', encap: 'fastdp' }, { WEFT_PASSWORD: 'pw' })).toThrow(
      /--encap fastdp cannot encrypt/,
    );
    expect(buildLaunchConfig([], { stateDir: '/tmp/x', encap: 'auto' }, { WEFT_PASSWORD: 'pw' }).encap).toBe('auto');
  });

  it('takes --vxlan-peer on every data path (auto: the kernel meets them), each once; with a password only on vxlan/sleeve', () => {
    for (const encap of [undefined, 'auto', 'fastdp', 'vxlan', 'sleeve']) {
      const c = buildLaunchConfig(
        [],
        { stateDir: '/tmp/x', vxlanPeer: ' 192.168.1.12, 192.168.1.13,192.168.1.12', ...(encap && { encap }) },
        {},
      );
      expect(c.vxlanPeers).toEqual(['192.168.1.12', '192.168.1.13']);
    }
    expect(() =>
      buildLaunchConfig([], { stateDir: '/tmp/x', vxlanPeer: '192.168.1.12' }, { WEFT_PASSWORD: 'pw' }),
    ).toThrow(/--vxlan-peer with a password needs --encap vxlan: .*fast path is off/);
    const vx = buildLaunchConfig(
      [],
      { stateDir: '/tmp/x', encap: 'vxlan', vxlanPeer: '192.168.1.12' },
      { WEFT_PASSWORD: 'pw' },
    );
    expect(vx.vxlanPeers).toEqual(['192.168.1.12']);
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

describe('buildLaunchConfig: inputs that could brick', () => {
  it.each(['ff:ff:ff:ff:ff:ff', '00:00:00:00:00:00', '01:00:5e:00:00:fb'])(
    'refuses --name %s: a peer name is the inner MAC address',
    (name) => {
      expect(() => buildLaunchConfig([], { stateDir: '/tmp/x', name }, {})).toThrow(
        /^invalid --name: .*cannot be used/,
      );
    },
  );

  it('takes a unicast --name', () => {
    expect(buildLaunchConfig([], { stateDir: '/tmp/x', name: '02:42:0A:00:00:01' }, {}).name).toBe('02:42:0a:00:00:01');
  });

  it.each([['/proc/1/x'], ['/proc'], ['/sys/fs/weft'], ['/dev/weft'], ['/dev/shm/weft']])(
    'refuses --state-dir %s (and WEFT_STATE_DIR) at once, in one line',
    (dir) => {
      const t0 = Date.now();
      expect(() => buildLaunchConfig([], { stateDir: dir }, {})).toThrow(/^invalid --state-dir .*kernel file system/);
      expect(() => buildLaunchConfig([], {}, { WEFT_STATE_DIR: dir })).toThrow(
        /^invalid WEFT_STATE_DIR .*kernel file system/,
      );
      expect(Date.now() - t0).toBeLessThan(1_000);
    },
  );

  it('keeps TARGETS_MAX equal to what a state file holds', () => {
    expect(TARGETS_MAX).toBe(10_000);
  });
});

describe('checkStateDir and prepareStateDir', () => {
  let root: string;
  beforeEach(() => {
    root = mkdtempSync(path.join(tmpdir(), 'weft-statedir-'));
  });
  afterEach(() => {
    chmodSync(root, 0o700);
    rmSync(root, { recursive: true, force: true });
  });

  it('makes an absolute path of a relative one', () => {
    expect(checkStateDir('some/dir')).toBe(path.resolve('some/dir'));
    expect(() => checkStateDir('')).toThrow(/invalid --state-dir/);
    expect(() => checkStateDir('/tmp/a\0b')).toThrow(/invalid --state-dir/);
  });

  it('refuses a path that reaches /proc through a symbolic link', () => {
    symlinkSync('/proc/1', path.join(root, 'p'));
    expect(() => checkStateDir(path.join(root, 'p', 'x', 'y'))).toThrow(
      /resolves to \/proc\/1\/x\/y.*kernel file system/,
    );
  });

  it('makes the directory and its parents, mode 0700, and leaves nothing else there', () => {
    const dir = path.join(root, 'a', 'b', 'c');
    prepareStateDir(dir);
    expect(statSync(dir).isDirectory()).toBe(true);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(readdirSync(dir)).toEqual([]);
    prepareStateDir(dir); // again: it exists
  });

  it('refuses a path through a file, in one line', () => {
    writeFileSync(path.join(root, 'f'), '');
    expect(() => prepareStateDir(path.join(root, 'f'))).toThrow(
      /^cannot use the state directory .*f is not a directory$/,
    );
    expect(() => prepareStateDir(path.join(root, 'f', 'x'))).toThrow(
      /^cannot use the state directory .*not a directory/,
    );
  });

  it('refuses a directory it cannot write, in one line', () => {
    if (process.getuid?.() === 0) {
      // root writes anywhere but on a read-only file system: /proc/sys is one.
      expect(() => prepareStateDir('/proc/sys')).toThrow(/kernel file system/);
      return;
    }
    chmodSync(root, 0o500);
    expect(() => prepareStateDir(path.join(root, 'x'))).toThrow(
      /^cannot use the state directory .*cannot create .*EACCES: permission denied$/,
    );
    expect(() => prepareStateDir(root)).toThrow(/cannot write there: EACCES/);
  });

  it('refuses a missing path below /proc at once (a recursive mkdir spins there forever)', () => {
    const t0 = Date.now();
    expect(() => prepareStateDir('/proc/1/x')).toThrow();
    expect(Date.now() - t0).toBeLessThan(1_000);
    expect(existsSync('/proc/1/x')).toBe(false);
  });
});
