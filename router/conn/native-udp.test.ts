import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { WeftError } from '../../common/errors.js';
import { UDP_RCVBUF_BYTES } from '../constants.js';
import { nativeAddonCandidates, tryLoadNative } from '../tun/native.js';
import { NativeUdp } from './native-udp.js';
import { LOOPBACK_ADDR as LOOPBACK, loopbackHarness, packetConnSuite, receive } from './packet-conn.suite.js';

const run = promisify(execFile);
const native = tryLoadNative();
const why = native === undefined ? 'native addon not built (run `npm run build:native`)' : undefined;

/** runAddonScript runs a CommonJS snippet in a fresh node with `a` bound to the addon. */
async function runAddonScript(body: string, flags: string[] = []): Promise<{ stdout: string; code: number }> {
  const addon = nativeAddonCandidates().find((p) => existsSync(p));
  const script = `const a = require(${JSON.stringify(addon)});\n${body}`;
  try {
    const { stdout } = await run(process.execPath, [...flags, '-e', script], { timeout: 10_000 });
    return { stdout, code: 0 };
  } catch (err) {
    const e = err as { stdout?: string; code?: number; killed?: boolean };
    if (e.killed) throw new Error('child did not exit in time');
    return { stdout: e.stdout ?? '', code: e.code ?? -1 };
  }
}

describe.skipIf(why !== undefined)(`NativeUdp${why ? ` (skipped: ${why})` : ''}`, () => {
  packetConnSuite(
    'NativeUdp',
    loopbackHarness((bindAddr) => NativeUdp.open({ bindAddr, port: 0 })),
  );

  it('says a port in use is a configuration error', () => {
    const a = NativeUdp.open({ bindAddr: LOOPBACK, port: 0 });
    try {
      let err: unknown;
      try {
        NativeUdp.open({ port: a.port });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(WeftError);
      expect(err).toMatchObject({ code: 'EWEFT_CONFIG', message: `UDP port ${a.port} is already in use` });
    } finally {
      a.close();
    }
  });

  it('forces the kernel buffers to the requested size when privileged', () => {
    const a = NativeUdp.open({ bindAddr: LOOPBACK, port: 0 });
    try {
      const { rcvbuf, sndbuf } = a.buffers();
      if (process.getuid?.() === 0) expect(rcvbuf).toBeGreaterThanOrEqual(UDP_RCVBUF_BYTES);
      expect(sndbuf).toBeGreaterThan(0);
    } finally {
      a.close();
    }
  });

  it('moves large datagrams and chunks batches beyond MMSG_CHUNK', async () => {
    const a = NativeUdp.open({ bindAddr: LOOPBACK, port: 0 });
    const b = NativeUdp.open({ bindAddr: LOOPBACK, port: 0 });
    try {
      const big = Buffer.alloc(60_000, 9);
      const got = receive(b, 1, { stride: 65_536, max: 1 });
      expect(
        a.sendBatch(big, Int32Array.of(0), Int32Array.of(60_000), Uint32Array.of(LOOPBACK), Uint16Array.of(b.port), 1),
      ).toBe(1);
      expect((await got).lengths).toEqual([60_000]);

      const n = 300; // > MMSG_CHUNK (256) on both sides
      const buf = Buffer.alloc(n * 64);
      const offsets = Int32Array.from({ length: n }, (_, i) => i * 64);
      const all = receive(b, n, { stride: 64, max: n });
      expect(
        a.sendBatch(
          buf,
          offsets,
          new Int32Array(n).fill(64),
          new Uint32Array(n).fill(LOOPBACK),
          new Uint16Array(n).fill(b.port),
          n,
        ),
      ).toBe(n);
      const r = await all;
      expect(r.lengths).toHaveLength(n);
      expect(r.batches[0]).toBe(n);
    } finally {
      a.close();
      b.close();
    }
  });

  it('returns an error instead of crashing on a closed fd, and the wrapper returns 0', () => {
    const a = NativeUdp.open({ bindAddr: LOOPBACK, port: 0 });
    const fd = a.fd;
    a.close();
    const buf = Buffer.alloc(2048);
    const l = new Int32Array(1);
    const ad = new Uint32Array(1);
    const p = new Uint16Array(1);
    expect(native!.recvBatch(fd, buf, 0, 2048, 1, l, ad, p)).toBeLessThan(0);
    expect(
      native!.sendBatch(fd, buf, Int32Array.of(0), Int32Array.of(10), Uint32Array.of(LOOPBACK), Uint16Array.of(9), 1),
    ).toBe(0);
    expect(native!.close(fd)).toBeLessThan(0);
    expect(a.recvBatch(buf, 0, 2048, 1, l, ad, p)).toBe(0);
  });

  it('throws TypeError for arguments of the wrong type', () => {
    const buf = Buffer.alloc(64);
    const fn = native!.recvBatch as unknown as (...args: unknown[]) => number;
    expect(() => fn(0, 'x', 0, 64, 1, new Int32Array(1), new Uint32Array(1), new Uint16Array(1))).toThrow(TypeError);
    expect(() => fn(0, buf, 0, 64, 1, new Uint32Array(1), new Uint32Array(1), new Uint16Array(1))).toThrow(TypeError);
    expect(() => fn(0, buf, 0.5, 64, 1, new Int32Array(1), new Uint32Array(1), new Uint16Array(1))).toThrow(TypeError);
    expect(() => fn(0, buf)).toThrow(TypeError);
    expect(() => (native!.unwatch as unknown as (h: unknown) => void)({})).toThrow(TypeError);
  });

  it('hands an exception thrown by a readable callback to uncaughtException', async () => {
    const r = await runAddonScript(`
      process.on('uncaughtException', (e) => { console.log('caught ' + e.message); process.exit(0); });
      const s = a.udpOpen(0x7f000001, 0, 0, 0);
      a.watch(s.fd, () => { throw new Error('boom'); });
      a.sendBatch(s.fd, Buffer.alloc(1), Int32Array.of(0), Int32Array.of(1), Uint32Array.of(0x7f000001), Uint16Array.of(s.port), 1);
    `);
    expect(r).toEqual({ stdout: 'caught boom\n', code: 0 });
  });

  it('does not keep the process alive after unwatch', async () => {
    const r = await runAddonScript(`
      const s = a.udpOpen(0x7f000001, 0, 0, 0);
      const h = a.watch(s.fd, () => {});
      a.unwatch(h);
      a.unwatch(h);
      a.close(s.fd);
      process.on('exit', () => console.log('exited with ' + a.activeWatchers() + ' watchers'));
    `);
    expect(r).toEqual({ stdout: 'exited with 0 watchers\n', code: 0 });
  });

  it('stops the watcher of a handle that was garbage collected', async () => {
    const r = await runAddonScript(
      `
      const s = a.udpOpen(0x7f000001, 0, 0, 0);
      a.watch(s.fd, () => {}); // handle dropped at once
      const before = a.activeWatchers();
      const poll = (n) => {
        globalThis.gc();
        if (a.activeWatchers() === 0) { console.log('watchers ' + before + ' -> 0'); a.close(s.fd); }
        else if (n > 0) setTimeout(poll, 10, n - 1);
        else { console.log('still watching'); process.exit(1); }
      };
      setTimeout(poll, 10, 100);
    `,
      ['--expose-gc'],
    );
    expect(r).toEqual({ stdout: 'watchers 1 -> 0\n', code: 0 });
  });
});
