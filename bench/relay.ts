/**
 * relay measures what relaying costs: ping RTT between two Weft hosts directly, then with the
 * direct link cut (nftables inside one host's namespace) so traffic crosses a third host.
 */

import { expose, launch, removeStateDirs, status } from '../e2e/weft.js';
import { type Host, Lab, waitUntil } from '../lab/netns.js';

/** RelayResult is the median RTTs and their ratio. */
export interface RelayResult {
  directMedianMs: number;
  relayedMedianMs: number;
  ratio: number;
  pings: number;
}

/** median of a non-empty list. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/** runRelay builds three hosts, measures `pings` pings direct and relayed between hosts 1 and 3. */
export async function runRelay(pings = 100): Promise<RelayResult> {
  const topo = await Lab.create({ hosts: 3 });
  try {
    const [h1, h2, h3] = topo.hosts as [Host, Host, Host];
    await launch(h1, []);
    await launch(h2, [h1.underlayIp]);
    await launch(h3, [h2.underlayIp]);
    // h1 exposes first and seeds the IPAM ring; h2 and h3 then get space from a peer.
    await expose(h1);
    await expose(h2);
    const a3 = await expose(h3);
    const state = async (h: Host, nickname: string) =>
      (await status(h)).peers.find((p) => p.nickname === nickname)?.state;
    await waitUntil(async () => (await state(h1, h3.name)) === 'established', {
      timeoutMs: 30_000,
      what: 'h1–h3 direct',
    });
    // h1 may hear the ring that routes h3's address a moment after the connection is up.
    await waitUntil(async () => (await h1.ping(a3, { count: 1, timeoutMs: 1_000 })).received === 1, {
      timeoutMs: 20_000,
      what: 'direct ping',
    });
    const direct = await h1.ping(a3, { count: pings, intervalS: 0.02 });
    await h1.exec('nft', ['-f', '-'], {
      input: `table inet weftrelay {
  chain out { type filter hook output priority 0; ip daddr ${h3.underlayIp} drop; }
  chain in { type filter hook input priority 0; ip saddr ${h3.underlayIp} drop; }
}
`,
    });
    await waitUntil(async () => (await state(h1, h3.name)) === 'relayed', { timeoutMs: 30_000, what: 'h1–h3 relayed' });
    await waitUntil(async () => (await h1.ping(a3, { count: 1, timeoutMs: 2_000 })).received === 1, {
      timeoutMs: 20_000,
      what: 'relayed ping',
    });
    const relayed = await h1.ping(a3, { count: pings, intervalS: 0.02 });
    const d = median(direct.rttsMs);
    const r = median(relayed.rttsMs);
    return { directMedianMs: d, relayedMedianMs: r, ratio: r / d, pings };
  } finally {
    await topo.destroy();
    removeStateDirs(topo);
  }
}
