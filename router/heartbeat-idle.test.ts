/**
 * The data-path heartbeat budget of an idle pair of routers, on virtual time (so it does not
 * depend on the machine's load): once established, each router sends one heartbeat per healthy
 * interval (switch.ts healthyIntervalMs) and acks each of the peer's, and nothing else. This is
 * what the idle bench (bench/idle.ts) multiplies by peers; a change that sends more at idle shows
 * here first.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { PEER_DOWN_TIMEOUT_MS } from './constants.js';
import { SLEEVE_ACK_LEN, SLEEVE_HEARTBEAT_LEN } from './overlay/frame.js';
import { healthyIntervalMs } from './overlay/switch.js';
import { MemoryMesh } from './testing/memory-router.js';

const WINDOW_MS = 60_000;

let mesh: MemoryMesh | undefined;
afterEach(async () => {
  await mesh?.stop();
  mesh = undefined;
});

describe('two idle routers (virtual time)', () => {
  it('send one data-path heartbeat per healthy interval each, one ack for each of the peer’s, nothing else', async () => {
    mesh = new MemoryMesh({ virtual: true });
    const m = mesh;
    const a = await m.add();
    const b = await m.add();
    b.router.connect([`127.0.0.1:${a.router.controlPort}`]);
    const up = (r: typeof a) => r.router.status().peers.some((p) => p.state === 'established');
    await m.until(() => up(a) && up(b), 'both data paths established', 20_000);
    await m.sleep(10_000);
    const sent = new Map<string, number>();
    m.net.filter = (_src, port, _dst, _dp, len) => {
      const kind = len === SLEEVE_HEARTBEAT_LEN ? 'heartbeat' : len === SLEEVE_ACK_LEN ? 'ack' : `other ${len}`;
      const key = `${port === a.router.status().sleevePort ? 'a' : 'b'} ${kind}`;
      sent.set(key, (sent.get(key) ?? 0) + 1);
      return true;
    };
    await m.sleep(WINDOW_MS);
    const beats = WINDOW_MS / healthyIntervalMs(PEER_DOWN_TIMEOUT_MS);
    for (const r of ['a', 'b']) {
      expect(sent.get(`${r} heartbeat`)).toBeGreaterThanOrEqual(beats - 1);
      expect(sent.get(`${r} heartbeat`)).toBeLessThanOrEqual(beats + 1);
      expect(sent.get(`${r} ack`)).toBe(sent.get(`${r === 'a' ? 'b' : 'a'} heartbeat`));
    }
    expect([...sent.keys()].filter((k) => k.includes('other'))).toEqual([]);
    expect(up(a) && up(b)).toBe(true);
  }, 30_000);
});
