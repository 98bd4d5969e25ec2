/**
 * How an IPAM ring starts (`--ipalloc-init`); see router/ipam/service.ts. Kept apart, with no
 * heavy imports, so the CLI can validate the flag without loading the router.
 */
import { WeftError } from '../../common/errors.js';
import { type PeerName, parsePeerName, reservedPeerNameReason } from '../../common/types.js';

/** ALLOCATE_TIMEOUT_MS is how long an allocation waits for a seeded ring or for space (the router's deadline). */
export const ALLOCATE_TIMEOUT_MS = 20_000;
/**
 * CLIENT_ALLOCATE_TIMEOUT_MS is how long a client of the API should wait for a request that may
 * allocate (attach, expose): the router's deadline plus room for the rest of the work, so the
 * client prints the router's reason instead of giving up first.
 */
export const CLIENT_ALLOCATE_TIMEOUT_MS = ALLOCATE_TIMEOUT_MS + 10_000;

/** IpamInit says how this router may start the ring (see the module comment). */
export type IpamInit =
  | { readonly mode: 'auto'; readonly alone: boolean }
  | { readonly mode: 'seed'; readonly seed: readonly PeerName[] }
  | { readonly mode: 'observer' };

/** parseIpamInit parses `auto`, `observer` or `seed=NAME,...`; `alone` says whether launch had no peers. */
export function parseIpamInit(text: string, alone: boolean): IpamInit {
  if (text === 'auto') return { mode: 'auto', alone };
  if (text === 'observer') return { mode: 'observer' };
  const m = /^seed=(.+)$/.exec(text);
  if (m !== null) {
    const names = m[1]!.split(',').map((s) => {
      let name: PeerName;
      try {
        name = parsePeerName(s.trim());
      } catch {
        throw new WeftError(
          'EWEFT_CONFIG',
          `invalid --ipalloc-init seed name "${s}": want a peer name like 0a:1b:2c:3d:4e:5f`,
        );
      }
      // No router can have such a name (see parseOwnPeerName): a seed list naming one never completes.
      const reserved = reservedPeerNameReason(name);
      if (reserved !== undefined) {
        throw new WeftError('EWEFT_CONFIG', `invalid --ipalloc-init seed name "${s}": ${reserved}, no router has it`);
      }
      return name;
    });
    return { mode: 'seed', seed: names };
  }
  throw new WeftError('EWEFT_CONFIG', `invalid --ipalloc-init "${text}": want auto, observer or seed=NAME,...`);
}

/** formatIpamInit is the inverse of {@link parseIpamInit} (for status). */
export function formatIpamInit(init: IpamInit): string {
  if (init.mode === 'seed') return `seed=${init.seed.join(',')}`;
  return init.mode;
}
