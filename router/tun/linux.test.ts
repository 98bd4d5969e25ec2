import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TunOpenError, WeftError } from '../../common/errors.js';
import { formatIPv4 } from '../../common/types.js';
import { DISCARD_PORT, type TunHarness, tunDeviceSuite } from './device.suite.js';
import { LinuxTun, toTunOpenError } from './linux.js';
import { NATIVE_ADDON_RELPATH, nativeAddonCandidates, tryLoadNative } from './native.js';

const run = promisify(execFile);
const NS = `wfttest${process.pid}`;

/** skipReason says why the kernel tests cannot run here, or undefined if they can. */
function skipReason(): string | undefined {
  if (process.platform !== 'linux') return 'not Linux';
  if (process.getuid?.() !== 0) return 'not root (needs CAP_NET_ADMIN for TUN and netns)';
  if (!existsSync('/dev/net/tun')) return '/dev/net/tun is missing';
  if (tryLoadNative() === undefined) return 'native addon not built (run `npm run build:native`)';
  try {
    execFileSync('sh', ['-c', 'command -v ip && command -v ping && command -v python3'], { stdio: 'ignore' });
  } catch {
    return 'ip, ping or python3 not found';
  }
  return undefined;
}
const why = skipReason();

// Sends COUNT UDP datagrams of SIZE bytes to DST:PORT from inside the namespace.
const SEND_PY =
  'import socket,sys\n' +
  'd,p,n,z=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),int(sys.argv[4])\n' +
  's=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n' +
  'for _ in range(n): s.sendto(b"a"*z,(d,p))\n';

let seq = 0;

/**
 * linuxHarness opens a TUN in this process, moves it into the test namespace (the fd keeps
 * working) and gives it 10.99.N.1/30 there; the namespace's kernel is the peer.
 */
async function linuxHarness(): Promise<TunHarness> {
  const n = ++seq;
  const peerAddr = ((10 << 24) | (99 << 16) | (n << 8) | 1) >>> 0;
  const targetAddr = peerAddr + 1;
  const device = LinuxTun.open({ name: `wft${process.pid}t${n}` });
  try {
    await device.moveToNetns(NS);
    await device.addAddress(`${formatIPv4(peerAddr)}/30`);
    await device.setUp();
  } catch (err) {
    device.close();
    throw err;
  }
  const native = tryLoadNative();
  return {
    device,
    peerAddr,
    targetAddr,
    async sendPackets(count, payloadBytes) {
      const args = [formatIPv4(targetAddr), String(DISCARD_PORT), String(count), String(payloadBytes)];
      await run('ip', ['netns', 'exec', NS, 'python3', '-c', SEND_PY, ...args]);
    },
    async ping(timeoutMs) {
      const wait = String(Math.max(1, Math.ceil(timeoutMs / 1000)));
      try {
        await run('ip', ['netns', 'exec', NS, 'ping', '-n', '-c', '1', '-W', wait, formatIPv4(targetAddr)]);
        return true;
      } catch {
        return false;
      }
    },
    nativeHandles: () => native?.activeWatchers() ?? 0,
    async teardown() {
      device.close();
    },
  };
}

describe('toTunOpenError', () => {
  const sysErr = (code: string): Error => Object.assign(new Error(`x: ${code}`), { code, errno: -1, syscall: 'open' });

  it('says what to do for each common failure', () => {
    expect(toTunOpenError('weft', sysErr('ENOENT')).message).toBe(
      '/dev/net/tun is missing: load the tun module or give the container --device /dev/net/tun',
    );
    expect(toTunOpenError('weft', sysErr('EPERM')).message).toBe(
      'permission denied opening TUN device weft: need CAP_NET_ADMIN (run as root)',
    );
    expect(toTunOpenError('weft', sysErr('EACCES')).message).toMatch(/^permission denied opening TUN device weft/);
    expect(toTunOpenError('weft', sysErr('EBUSY')).message).toBe('TUN device weft is busy (another process owns it)');
    const other = toTunOpenError('weft', sysErr('EMFILE'));
    expect(other).toBeInstanceOf(TunOpenError);
    expect(other.code).toBe('EWEFT_TUN_OPEN');
    expect(other.message).toBe('cannot open TUN device weft: x: EMFILE');
  });
});

describe('native addon loader', () => {
  it('looks beside the source and at the package root', () => {
    const c = nativeAddonCandidates();
    expect(c[0]).toMatch(/router\/tun\/native\/build\/Release\/weft_native\.node$/);
    expect(c.every((p) => p.endsWith('weft_native.node'))).toBe(true);
    expect(NATIVE_ADDON_RELPATH).toBe('router/tun/native/build/Release/weft_native.node');
  });
});

describe.skipIf(why !== undefined)(`LinuxTun on the kernel${why ? ` (skipped: ${why})` : ''}`, () => {
  beforeAll(async () => {
    await run('ip', ['netns', 'add', NS]);
    // No IPv6 in the namespace: router solicitations would be noise on the device.
    await run('ip', [
      'netns',
      'exec',
      NS,
      'sysctl',
      '-qw',
      'net.ipv6.conf.all.disable_ipv6=1',
      'net.ipv6.conf.default.disable_ipv6=1',
    ]);
    await run('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
  });
  afterAll(async () => {
    await run('ip', ['netns', 'del', NS]).catch(() => undefined);
  });

  tunDeviceSuite('LinuxTun', linuxHarness);

  describe('LinuxTun', () => {
    it('configures MTU, address and routes with ip, and removes them', async () => {
      const h = await linuxHarness();
      const dev = h.device as LinuxTun;
      try {
        await dev.setMtu(1400);
        await dev.addAddress('10.98.0.1/24');
        await dev.addAddress('10.98.0.1/24'); // idempotent
        await dev.addRoute('10.200.0.0/16');
        const link = JSON.parse((await run('ip', ['-n', NS, '-j', 'link', 'show', 'dev', dev.name])).stdout);
        expect(link[0].mtu).toBe(1400);
        const routes = (await run('ip', ['-n', NS, 'route', 'show', 'dev', dev.name])).stdout;
        expect(routes).toContain('10.200.0.0/16');
        await dev.delRoute('10.200.0.0/16');
        await dev.delAddress('10.98.0.1/24');
        const after = (await run('ip', ['-n', NS, 'address', 'show', 'dev', dev.name])).stdout;
        expect(after).not.toContain('10.98.0.1');
        expect((await run('ip', ['-n', NS, 'route', 'show', 'dev', dev.name])).stdout).not.toContain('10.200.');
      } finally {
        await h.teardown();
      }
    });

    it('reports an ip failure as EWEFT_SYSTEM with the first line of its stderr', async () => {
      const h = await linuxHarness();
      try {
        const err = await (h.device as LinuxTun).delRoute('10.201.0.0/16').catch((e: unknown) => e);
        expect(err).toBeInstanceOf(WeftError);
        expect((err as WeftError).code).toBe('EWEFT_SYSTEM');
        expect((err as WeftError).message).toMatch(
          new RegExp(`^ip -n ${NS} route del 10\\.201\\.0\\.0/16 dev \\S+ failed: \\S.*$`),
        );
      } finally {
        await h.teardown();
      }
    });

    it('rejects a bad MTU or CIDR before running ip', async () => {
      const h = await linuxHarness();
      try {
        const dev = h.device as LinuxTun;
        await expect(dev.setMtu(100)).rejects.toMatchObject({ code: 'EWEFT_INPUT' });
        await expect(dev.addAddress('10.1.2.3')).rejects.toMatchObject({ code: 'EWEFT_INPUT' });
        await expect(dev.addRoute('10.1.2.0/33')).rejects.toMatchObject({ code: 'EWEFT_INPUT' });
      } finally {
        await h.teardown();
      }
    });

    it('says a device is busy when another fd owns it', () => {
      const name = `wft${process.pid}b`;
      const a = LinuxTun.open({ name });
      try {
        expect(() => LinuxTun.open({ name })).toThrow(`TUN device ${name} is busy (another process owns it)`);
      } finally {
        a.close();
      }
    });

    it('refuses a name longer than 15 bytes', () => {
      expect(() => LinuxTun.open({ name: 'weft-name-too-long' })).toThrow(TunOpenError);
      expect(() => LinuxTun.open({ name: 'weft-name-too-long' })).toThrow(/longer than 15 bytes/);
    });

    it('lets the kernel pick the number in a %d name', () => {
      const t = LinuxTun.open({ name: `wft${process.pid}n%d` });
      try {
        expect(t.name).toMatch(new RegExp(`^wft${process.pid}n\\d+$`));
      } finally {
        t.close();
      }
    });

    it('opens a TAP device, two queues of a multi-queue device, and a vnet-header device with offloads', () => {
      const native = tryLoadNative()!;
      const tap = LinuxTun.open({ name: `wft${process.pid}p`, mode: 'tap' });
      const q1 = LinuxTun.open({ name: `wft${process.pid}q`, multiQueue: true });
      const q2 = LinuxTun.open({ name: `wft${process.pid}q`, multiQueue: true });
      const v = LinuxTun.open({ name: `wft${process.pid}v`, vnetHdr: true });
      try {
        expect(tap.kind).toBe('tap');
        expect(q2.name).toBe(q1.name);
        expect(q2.fd).not.toBe(q1.fd);
        v.setVnetHdrSize(native.VIRTIO_NET_HDR_MRG_RXBUF_LEN);
        v.setOffload(native.TUN_F_CSUM | native.TUN_F_TSO4 | native.TUN_F_TSO6);
      } finally {
        for (const t of [tap, q1, q2, v]) t.close();
      }
    });

    it('is refused to an unprivileged user with a permission error', async () => {
      const addon = nativeAddonCandidates().find((p) => existsSync(p))!;
      const script =
        'process.setgid(65534); process.setuid(65534);' +
        `const a = require(${JSON.stringify(addon)});` +
        'try { a.tunOpen("wftperm", "tun", false, false); console.log("opened"); }' +
        'catch (e) { console.log(e.code); }';
      const { stdout } = await run(process.execPath, ['-e', script]);
      const code = stdout.trim();
      expect(['EACCES', 'EPERM']).toContain(code);
      expect(toTunOpenError('wftperm', Object.assign(new Error(code), { code, syscall: 'open' })).message).toMatch(
        /need CAP_NET_ADMIN/,
      );
    });
  });
});
