import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expose, launch, routerPids, stateDir, status, waitPeers, weft } from '../e2e/weft.js';
import { type Host, type Lab, type Netns, waitUntil } from '../lab/netns.js';
import type { TunnelScenario, TunnelSetup } from './tunnels.js';

let containerSeq = 0;

/** WeftMode is where a Weft row measures: between attached containers, or between the hosts' exposed addresses. */
export type WeftMode = 'container' | 'host';

/**
 * weftRow is a tunnel-table row for Weft itself: the real `weft` CLI launches a router in each of
 * the two hosts (the second told about the first) with its default overlay MTU (the underlay's
 * minus Weft's largest encapsulation; `extraFlags` may set `--mtu`). In `'container'` mode (what
 * users run) a container namespace is made on each host and `weft attach`ed, and the measurement
 * runs from the container on hosts[0] to the one on hosts[1]; in `'host'` mode each host exposes
 * an overlay address from IPAM and the measurement runs between the hosts themselves. Each
 * host's router processes are reported for CPU.
 */
function weftRow(
  encap: 'sleeve' | 'vxlan' | 'auto',
  mode: WeftMode,
  extraFlags: string[],
  password = false,
): TunnelScenario {
  const flagText = extraFlags.length > 0 ? ` ${extraFlags.join(' ')}` : '';
  // `auto` is measured once the kernel fast path carries the peer: the row is the fast path's.
  const label = encap === 'auto' ? 'fastdp' : encap;
  return {
    id: `weft-${label}${password ? '-encrypted' : ''}${mode === 'host' ? '-host' : ''}`,
    name: `weft ${label}${encap === 'auto' ? ' (--encap auto, kernel weft-vx)' : ''}${password ? ', password (sealed)' : ''}${flagText}${mode === 'host' ? ', host to host' : ''}`,
    lossy: mode === 'container',
    async setup(topo: Lab): Promise<TunnelSetup> {
      const [a, b] = topo.hosts as [Host | undefined, Host | undefined];
      if (a === undefined || b === undefined) throw new Error('weft scenario needs two hosts');
      // No --mtu: the router picks the overlay MTU from its underlay, as users run it.
      const flags = ['--encap', encap, ...extraFlags];
      if (password) {
        // Outside the state directories: a row's teardown removes them.
        const file = path.join(tmpdir(), `weft-bench-password-${process.pid}`);
        writeFileSync(file, 'bench password\n', { mode: 0o600 });
        flags.push('--password-file', file);
      }
      const containers: { host: Host; ns: Netns }[] = [];
      const teardown = async () => {
        for (const c of containers.splice(0)) {
          // Detach first: deleting a namespace frees its veth pair only later, asynchronously.
          await weft(c.host, ['detach', c.ns.name], { allowFail: true });
          await topo.removeNamespace(c.ns).catch(() => {});
        }
        for (const h of [a, b]) {
          await weft(h, ['stop'], { allowFail: true });
          rmSync(stateDir(h), { recursive: true, force: true });
        }
      };
      try {
        await launch(a, [], flags);
        await launch(b, [a.underlayIp], flags);
        let aIp: string;
        let bIp: string;
        let client: Netns | undefined;
        let server: Netns | undefined;
        if (mode === 'host') {
          // a exposes first and seeds the IPAM ring; b then gets space from a.
          aIp = await expose(a);
          bIp = await expose(b);
        } else {
          // New names every row, so nothing can collide with what a previous row's teardown leaves.
          const seq = containerSeq++;
          client = await topo.addNamespace(`ca${seq}`);
          containers.push({ host: a, ns: client });
          server = await topo.addNamespace(`cb${seq}`);
          containers.push({ host: b, ns: server });
          // The container on a is attached first, so a seeds the IPAM ring; b then gets space from a.
          aIp = (await weft(a, ['attach', client.name])).stdout.trim();
          await waitPeers(b, 1);
          bIp = (await weft(b, ['attach', server.name])).stdout.trim();
        }
        const { mtu } = await waitPeers(a, 1);
        await waitPeers(b, 1);
        if (encap === 'auto') {
          for (const h of [a, b]) {
            await waitUntil(
              async () => ((await status(h)).peers[0] as { encap?: string } | undefined)?.encap === 'fastdp',
              { timeoutMs: 30_000, intervalMs: 200, what: `${h.name}: peer on fastdp` },
            );
          }
        }
        const processes = [await routerPids(a), await routerPids(b)] as const;
        const where = mode === 'host' ? 'host to host' : 'container to container (weft attach)';
        return { aIp, bIp, client, server, processes, teardown, note: `${where}, overlay MTU ${mtu}` };
      } catch (err) {
        await teardown();
        throw err;
      }
    },
  };
}

/**
 * weftScenario is the host-to-host Weft row (each host `weft expose`s an address, the
 * measurement runs between the hosts): kept beside the container rows, lossless only.
 */
export function weftScenario(encap: 'sleeve' | 'vxlan' | 'auto', extraFlags: string[] = []): TunnelScenario {
  return weftRow(encap, 'host', extraFlags);
}

/**
 * weftContainerScenario is the Weft row users run: a container on each host attached with `weft
 * attach`, measured container to container across the hosts, also at the lossy levels.
 */
export function weftContainerScenario(encap: 'sleeve' | 'vxlan' | 'auto', extraFlags: string[] = []): TunnelScenario {
  return weftRow(encap, 'container', extraFlags);
}

/**
 * weftEncryptedScenario is the container row with a password: every sleeve datagram sealed
 * (AES-256-GCM), to compare with the unencrypted row and with wireguard-go and nebula, which
 * also encrypt.
 */
export function weftEncryptedScenario(): TunnelScenario {
  return weftRow('sleeve', 'container', [], true);
}
