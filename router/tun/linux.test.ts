import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TunOpenError, WeftError } from '../../common/errors.js';
import { formatIPv4 } from '../../common/types.js';
import { DISCARD_PORT, type TunHarness, tunDeviceSuite } from './device.suite.js';
import { LinuxTun, type LinuxTunOptions, toTunOpenError } from './linux.js';
import { NATIVE_ADDON_RELPATH, nativeAddonCandidates, tryLoadNative } from './native.js';

const run = promisify(execFile);

/*
 * The kernel tests never create a link in the network namespace the test run started in. A TUN
 * device is born in the namespace of the process that opens /dev/net/tun, and a Node process
 * cannot change its own, so this file runs twice. The outer run (where Vitest was started) makes
 * two namespaces named after its id and runs this file again inside the first, with RUN_ENV set
 * to that id. The inner run opens every device there; the harness moves its device on into the
 * second, whose kernel plays the peer. The outer run checks the inner run's report, watches its
 * own namespace for links carrying the id, and deletes both namespaces, also on failure.
 */
const RUN_ENV = 'WEFT_TUN_TEST_RUN';
const inner = process.env[RUN_ENV];
const RUN_ID = inner ?? String(process.pid);
if (!/^\d{1,7}$/.test(RUN_ID)) throw new Error(`${RUN_ENV} must be the outer run's pid, not "${RUN_ID}"`);
/** HOST_NS is where the inner run lives and opens its devices. */
const HOST_NS = `wfttest${RUN_ID}`;
/** PEER_NS is where the harness moves its device; its kernel is the peer. */
const PEER_NS = `wfttest${RUN_ID}p`;
/** DEV starts every device name the tests ask for; a lowercase letter follows it. */
const DEV = `wft${RUN_ID}`;

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
const skipped = why ? ` (skipped: ${why})` : '';

// ---- outer run ----

/** InnerCase is one test of the inner run, as its JUnit report tells it. */
interface InnerCase {
  name: string;
  outcome: 'passed' | 'failed' | 'skipped';
  /** message is the first line of the failure, if any. */
  message: string;
}

const XML_ENTITIES: Record<string, string> = { lt: '<', gt: '>', quot: '"', apos: "'", amp: '&' };

/** junitCases reads the test cases of a Vitest JUnit report (a suite that failed outside its tests is a case too). */
function junitCases(xml: string): InnerCase[] {
  const text = (s: string): string => s.replace(/&(lt|gt|quot|apos|amp);/g, (_, e: string) => XML_ENTITIES[e] ?? '');
  return xml
    .split('<testcase ')
    .slice(1)
    .map((c) => {
      const failure = /<(?:failure|error) message="([^"]*)"/.exec(c);
      return {
        name: text(/ name="([^"]*)"/.exec(c)?.[1] ?? ''),
        outcome: failure ? 'failed' : c.includes('<skipped') ? 'skipped' : 'passed',
        message: text(failure?.[1] ?? '').split('\n')[0] as string,
      };
    });
}

/**
 * runInside runs this file again inside HOST_NS and returns its test cases. The report is JUnit
 * in a scratch directory because the config pins the JSON reporter to the outer run's file.
 */
async function runInside(): Promise<InnerCase[]> {
  const root = fileURLToPath(new URL('../../', import.meta.url));
  const vitest = join(dirname(createRequire(import.meta.url).resolve('vitest/package.json')), 'vitest.mjs');
  const dir = mkdtempSync(join(tmpdir(), `${HOST_NS}-`));
  const report = join(dir, 'junit.xml');
  const file = relative(root, fileURLToPath(import.meta.url));
  try {
    const args = ['run', '--project', 'unit', '--reporter=junit', `--outputFile=${report}`, file];
    const failed = await run('ip', ['netns', 'exec', HOST_NS, process.execPath, vitest, ...args], {
      cwd: root,
      env: { ...process.env, [RUN_ENV]: RUN_ID },
      timeout: 100_000,
    }).then(
      () => undefined,
      (err: { message?: string; stderr?: string }) => err,
    );
    const cases = existsSync(report) ? junitCases(readFileSync(report, 'utf8')) : [];
    if (cases.length === 0) {
      const why = failed?.stderr?.trim().slice(-2000) || failed?.message || 'no test ran';
      throw new Error(`the run inside ${HOST_NS} reported no test: ${why}`);
    }
    return cases;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** watchLinks starts recording this namespace's link events (`ip -o monitor link`); the result stops it. */
async function watchLinks(): Promise<() => Promise<string[]>> {
  const p = spawn('ip', ['-o', 'monitor', 'link'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const closed = new Promise<void>((resolve) => p.on('close', () => resolve()));
  let out = '';
  p.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  await new Promise<void>((resolve, reject) => p.once('spawn', resolve).once('error', reject));
  return async () => {
    p.kill();
    await closed;
    return out.split('\n').filter((l) => l !== '');
  };
}

if (inner === undefined) {
  describe('toTunOpenError', () => {
    const sysErr = (code: string): Error =>
      Object.assign(new Error(`x: ${code}`), { code, errno: -1, syscall: 'open' });

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

  describe.skipIf(why !== undefined)(`LinuxTun on the kernel, run in test namespaces${skipped}`, () => {
    let cases: InnerCase[] = [];
    let events: string[] = [];

    beforeAll(async () => {
      await run('ip', ['netns', 'add', HOST_NS]);
      await run('ip', ['netns', 'add', PEER_NS]);
      // No IPv6 for the peer: router solicitations would be noise on the device.
      const noIpv6 = ['net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1'];
      await run('ip', ['netns', 'exec', PEER_NS, 'sysctl', '-qw', ...noIpv6]);
      await run('ip', ['-n', PEER_NS, 'link', 'set', 'lo', 'up']);
      // `ip monitor` is listening long before the inner Vitest has started and opens a device.
      const stop = await watchLinks();
      try {
        cases = await runInside();
      } finally {
        events = await stop();
      }
    }, 120_000);
    afterAll(async () => {
      for (const ns of [HOST_NS, PEER_NS]) await run('ip', ['netns', 'del', ns]).catch(() => undefined);
    });

    it('passes every kernel test inside the test namespace', () => {
      const notPassed = cases.filter((c) => c.outcome !== 'passed');
      expect(notPassed.map((c) => `${c.outcome}: ${c.name}: ${c.message}`)).toEqual([]);
      expect(cases.filter((c) => c.name.includes('> TunDevice conformance: LinuxTun >')).length).toBeGreaterThan(0);
    });

    it("never adds, changes or removes a link of this run's in the namespace the run started in", () => {
      expect(events.filter((l) => new RegExp(`\\b${DEV}[a-z]`).test(l))).toEqual([]);
    });
  });
}

// ---- inner run ----

// Sends COUNT UDP datagrams of SIZE bytes to DST:PORT from inside the peer namespace.
const SEND_PY =
  'import socket,sys\n' +
  'd,p,n,z=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),int(sys.argv[4])\n' +
  's=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n' +
  'for _ in range(n): s.sendto(b"a"*z,(d,p))\n';

let seq = 0;

/**
 * linuxHarness opens a TUN here (in HOST_NS), moves it into PEER_NS (the fd keeps working) and
 * gives it 10.99.N.1/30 there; PEER_NS's kernel is the peer.
 */
async function linuxHarness(): Promise<TunHarness> {
  const n = ++seq;
  const peerAddr = ((10 << 24) | (99 << 16) | (n << 8) | 1) >>> 0;
  const targetAddr = peerAddr + 1;
  const device = LinuxTun.open({ name: `${DEV}t${n}` });
  try {
    await device.moveToNetns(PEER_NS);
    await device.addAddress(`${formatIPv4(peerAddr)}/30`);
    await device.setUp();
  } catch (err) {
    device.close();
    throw err;
  }
  return {
    device,
    peerAddr,
    targetAddr,
    async sendPackets(count, payloadBytes) {
      const args = [formatIPv4(targetAddr), String(DISCARD_PORT), String(count), String(payloadBytes)];
      await run('ip', ['netns', 'exec', PEER_NS, 'python3', '-c', SEND_PY, ...args]);
    },
    async ping(timeoutMs) {
      const wait = String(Math.max(1, Math.ceil(timeoutMs / 1000)));
      try {
        await run('ip', ['netns', 'exec', PEER_NS, 'ping', '-n', '-c', '1', '-W', wait, formatIPv4(targetAddr)]);
        return true;
      } catch {
        return false;
      }
    },
    async teardown() {
      device.close();
    },
  };
}

/** withHarnessDevice runs `use` on a fresh harness device and tears the harness down after, also on failure. */
async function withHarnessDevice(use: (dev: LinuxTun) => Promise<void>): Promise<void> {
  const h = await linuxHarness();
  try {
    await use(h.device as LinuxTun);
  } finally {
    await h.teardown();
  }
}

/** tunInfo is the kernel's view of TUN/TAP device `name` in this namespace (`ip -d -j link show`). */
async function tunInfo(name: string): Promise<Record<string, unknown>> {
  const links = JSON.parse((await run('ip', ['-d', '-j', 'link', 'show', 'dev', name])).stdout);
  return links[0].linkinfo.info_data;
}

if (inner !== undefined) {
  describe.skipIf(why !== undefined)(`LinuxTun on the kernel, inside a test namespace${skipped}`, () => {
    beforeAll(() => {
      // Open nothing unless this process really is in HOST_NS.
      const self = statSync('/proc/self/ns/net');
      const ns = statSync(`/run/netns/${HOST_NS}`);
      if (self.dev !== ns.dev || self.ino !== ns.ino) throw new Error(`${RUN_ENV} is set but this is not ${HOST_NS}`);
    });

    tunDeviceSuite('LinuxTun', linuxHarness);

    describe('LinuxTun', () => {
      it('configures MTU, address and routes with ip, and removes them', () =>
        withHarnessDevice(async (dev) => {
          const ipShow = async (...what: string[]): Promise<string> =>
            (await run('ip', ['-n', PEER_NS, ...what, 'show', 'dev', dev.name])).stdout;
          await dev.setMtu(1400);
          await dev.addAddress('10.98.0.1/24');
          await dev.addAddress('10.98.0.1/24'); // idempotent
          await dev.addRoute('10.200.0.0/16');
          expect(JSON.parse(await ipShow('-j', 'link'))[0].mtu).toBe(1400);
          expect(await ipShow('route')).toContain('10.200.0.0/16');
          await dev.delRoute('10.200.0.0/16');
          await dev.delAddress('10.98.0.1/24');
          expect(await ipShow('address')).not.toContain('10.98.0.1');
          expect(await ipShow('route')).not.toContain('10.200.');
        }));

      it('reports an ip failure as EWEFT_SYSTEM with the first line of its stderr', () =>
        withHarnessDevice(async (dev) => {
          const err = await dev.delRoute('10.201.0.0/16').catch((e: unknown) => e);
          expect(err).toBeInstanceOf(WeftError);
          expect((err as WeftError).code).toBe('EWEFT_SYSTEM');
          expect((err as WeftError).message).toMatch(
            new RegExp(`^ip -n ${PEER_NS} route del 10\\.201\\.0\\.0/16 dev \\S+ failed: \\S.*$`),
          );
        }));

      it('rejects a bad MTU or CIDR before running ip', () =>
        withHarnessDevice(async (dev) => {
          await expect(dev.setMtu(100)).rejects.toMatchObject({ code: 'EWEFT_INPUT' });
          await expect(dev.addAddress('10.1.2.3')).rejects.toMatchObject({ code: 'EWEFT_INPUT' });
          await expect(dev.addRoute('10.1.2.0/33')).rejects.toMatchObject({ code: 'EWEFT_INPUT' });
        }));

      it('says a device is busy when another fd owns it', () => {
        const name = `${DEV}b`;
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
        const t = LinuxTun.open({ name: `${DEV}n%d` });
        try {
          expect(t.name).toMatch(new RegExp(`^${DEV}n\\d+$`));
        } finally {
          t.close();
        }
      });

      it('opens a TAP device, two queues of a multi-queue device, and a vnet-header device with offloads', async () => {
        const native = tryLoadNative()!;
        const opened: LinuxTun[] = [];
        const open = (opts: LinuxTunOptions): LinuxTun => {
          const t = LinuxTun.open(opts);
          opened.push(t);
          return t;
        };
        try {
          const tap = open({ name: `${DEV}p`, mode: 'tap' });
          const q1 = open({ name: `${DEV}q`, multiQueue: true });
          const q2 = open({ name: `${DEV}q`, multiQueue: true });
          const v = open({ name: `${DEV}v`, vnetHdr: true });
          expect(tap.kind).toBe('tap');
          expect(await tunInfo(tap.name)).toMatchObject({
            type: 'tap',
            pi: false,
            multi_queue: false,
            vnet_hdr: false,
          });
          expect(q2.name).toBe(q1.name);
          expect(q2.fd).not.toBe(q1.fd);
          expect(await tunInfo(q1.name)).toMatchObject({ type: 'tun', multi_queue: true, numqueues: 2 });
          expect(await tunInfo(v.name)).toMatchObject({ type: 'tun', multi_queue: false, vnet_hdr: true });
          v.setVnetHdrSize(native.VIRTIO_NET_HDR_MRG_RXBUF_LEN);
          v.setOffload(native.TUN_F_CSUM | native.TUN_F_TSO4 | native.TUN_F_TSO6);
        } finally {
          for (const t of opened) t.close();
        }
      });

      it('is refused to an unprivileged user with a permission error', async () => {
        const addon = nativeAddonCandidates().find((p) => existsSync(p))!;
        const name = `${DEV}u`;
        const script =
          'process.setgid(65534); process.setuid(65534);' +
          `const a = require(${JSON.stringify(addon)});` +
          `try { a.tunOpen(${JSON.stringify(name)}, "tun", false, false); console.log("opened"); }` +
          'catch (e) { console.log(e.code); }';
        const { stdout } = await run(process.execPath, ['-e', script]);
        const code = stdout.trim();
        expect(['EACCES', 'EPERM']).toContain(code);
        expect(toTunOpenError(name, Object.assign(new Error(code), { code, syscall: 'open' })).message).toMatch(
          /need CAP_NET_ADMIN/,
        );
      });
    });
  });
}
