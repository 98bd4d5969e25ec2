import { describe, expect, it } from 'vitest';
import { GSO_MAX_BYTES } from '../router/index.js';
import { CONTAINER_IFNAME, vethAddArgs } from './attach.js';

/** valuesAfter returns what follows every occurrence of `key` in `args`. */
function valuesAfter(args: string[], key: string): string[] {
  return args.flatMap((a, i) => (a === key ? [args[i + 1] as string] : []));
}

describe('vethAddArgs', () => {
  const args = vethAddArgs('vw0123abcd', 1410, '02:00:00:00:00:01', 'web');

  it('makes the pair with ethwe in the target namespace, the MAC and the overlay MTU on both ends', () => {
    expect(args.slice(0, 3)).toEqual(['link', 'add', 'vw0123abcd']);
    const peer = args.indexOf('peer');
    expect(args.slice(peer, peer + 3)).toEqual(['peer', 'name', CONTAINER_IFNAME]);
    expect(valuesAfter(args, 'address')).toEqual(['02:00:00:00:00:01']);
    expect(valuesAfter(args, 'mtu')).toEqual(['1410', '1410']);
    expect(args.slice(-2)).toEqual(['netns', 'web']);
  });

  it("caps both ends' gso_max_size at the TUN device's, so forwarded super-packets are not segmented", () => {
    const peer = args.indexOf('peer');
    const at = args.flatMap((a, i) => (a === 'gso_max_size' ? [i] : []));
    expect(at).toHaveLength(2);
    expect(at[0]).toBeLessThan(peer);
    expect(at[1]).toBeGreaterThan(peer);
    expect(valuesAfter(args, 'gso_max_size')).toEqual([String(GSO_MAX_BYTES), String(GSO_MAX_BYTES)]);
  });
});
