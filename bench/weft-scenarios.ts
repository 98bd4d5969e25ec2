import { rmSync } from 'node:fs';
import type { Topology } from '../e2e/netns.js';
import { launch, stateDir, waitPeers, weft } from '../e2e/weft.js';
import type { TunnelScenario } from './tunnels.js';

/**
 * weftScenario is a tunnel-table row for Weft itself: the real `weft` CLI launches a router in
 * each of the two hosts (the second told about the first), each exposes an overlay address,
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
      try {
        await launch(a, [], flags);
        await launch(b, [a.underlayIp], flags);
        await weft(a, ['expose', '10.32.0.1/12']);
        await weft(b, ['expose', '10.32.0.2/12']);
        await waitPeers(a, 1);
        await waitPeers(b, 1);
      } catch (err) {
        await teardown();
        throw err;
      }
      return { aIp: '10.32.0.1', bIp: '10.32.0.2', teardown, note: `overlay MTU ${opts.overlayMtu}` };
    },
  };
}
