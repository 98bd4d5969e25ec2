import { rmSync } from 'node:fs';
import type { Topology } from '../e2e/netns.js';
import { expose, launch, stateDir, waitPeers, weft } from '../e2e/weft.js';
import type { TunnelScenario } from './tunnels.js';

/**
 * weftScenario is a tunnel-table row for Weft itself: the real `weft` CLI launches a router in
 * each of the two hosts (the second told about the first), each exposes an overlay address from IPAM,
 * and the measurement runs between those addresses.
 */
export function weftScenario(encap: 'sleeve' | 'vxlan', extraFlags: string[] = []): TunnelScenario {
  return {
    name: `weft ${encap}${extraFlags.length > 0 ? ` ${extraFlags.join(' ')}` : ''}`,
    async setup(topo: Topology, opts) {
      const [a, b] = topo.hosts;
      if (a === undefined || b === undefined) throw new Error('weft scenario needs two hosts');
      const flags = ['--encap', encap, '--mtu', String(opts.overlayMtu), ...extraFlags];
      const teardown = async () => {
        for (const h of [a, b]) {
          await weft(h, ['stop'], { allowFail: true });
          rmSync(stateDir(h), { recursive: true, force: true });
        }
      };
      let aIp: string;
      let bIp: string;
      try {
        await launch(a, [], flags);
        await launch(b, [a.underlayIp], flags);
        // a exposes first and seeds the IPAM ring; b then gets space from a.
        aIp = await expose(a);
        bIp = await expose(b);
        await waitPeers(a, 1);
        await waitPeers(b, 1);
      } catch (err) {
        await teardown();
        throw err;
      }
      return { aIp, bIp, teardown, note: `overlay MTU ${opts.overlayMtu}` };
    },
  };
}
