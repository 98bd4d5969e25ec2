/**
 * IpamFacade is the router's address-management surface for control/: allocation for containers,
 * taking over the space of a peer gone for good (rmpeer) and handing ours over when leaving
 * (reset). It checks what only the router knows (reachability, names and nicknames in the
 * topology) and delegates the ring to IpamService.
 */
import { InputError, WeftError } from '../common/errors.js';
import type { Cidr, IPv4, PeerName } from '../common/types.js';
import type { IpamService } from './ipam/service.js';
import { EXPOSE_OWNER } from './local-addresses.js';
import type { Routes } from './routes.js';
import type { PeerEntry } from './topology.js';

/** IpamFacadeOptions connect an IpamFacade to the router. */
export interface IpamFacadeOptions {
  readonly self: PeerName;
  readonly ipam: IpamService;
  readonly entries: () => readonly PeerEntry[];
  /**
   * forgottenEntries are the entries of peers forgotten as unreachable that the topology still
   * keeps (router/topology.ts, for FORGOTTEN_KEEP_MS): rmpeer by nickname finds a peer gone a while
   * ago there (Kubernetes: a deleted Node is noticed at the next poll, after the peer was forgotten).
   */
  readonly forgottenEntries?: () => readonly PeerEntry[];
  readonly routes: () => Routes;
  /** connected says whether a peer has a control connection to us. */
  readonly connected: (peer: PeerName) => boolean;
  /** forgotten is told of a peer whose space was taken over (its DNS records go too). */
  readonly forgotten: (peers: PeerName[]) => void;
}

/** IpamFacade: see the module comment. */
export class IpamFacade {
  private readonly opts: IpamFacadeOptions;

  constructor(opts: IpamFacadeOptions) {
    this.opts = opts;
  }

  /**
   * allocate gives `owner` (a container reference) an address from this peer's IPAM space, waiting
   * for space from peers if need be. The owner's existing address is returned again.
   */
  allocate(owner: string, subnet?: Cidr): Promise<IPv4> {
    if (owner === EXPOSE_OWNER) {
      return Promise.reject(new InputError(`"${EXPOSE_OWNER}" is reserved for the host's address`));
    }
    return this.opts.ipam.allocate(owner, subnet);
  }

  /**
   * rmpeer takes over the address space of a peer gone for good (by name, or by nickname while it
   * is in the topology or its store of forgotten peers). Refused while the peer is reachable. Run
   * it on one host only.
   */
  rmpeer(peer: string): { peer: PeerName; addresses: number } {
    const { self, ipam } = this.opts;
    const name = this.resolvePeer(peer);
    if (name === self) throw new InputError('cannot rmpeer this router itself: use `weft reset` to leave');
    if (this.opts.connected(name) || this.opts.routes().unicast.has(name)) {
      throw new WeftError('EWEFT_CONFLICT', `peer ${name} is reachable: stop it (or \`weft reset\` it) first`);
    }
    if (!ipam.spans().some((s) => s.owner === name)) {
      throw new WeftError('EWEFT_NOT_FOUND', `peer ${name} owns no address space`);
    }
    const addresses = ipam.rmpeer(name);
    this.opts.forgotten([name]);
    return { peer: name, addresses };
  }

  /**
   * leave hands all our address space to a reachable peer (the one owning the most) and gossips
   * it, for `weft reset`; the caller detaches containers first. Returns the heir, or undefined
   * when no peer is reachable (the space stays ours until someone runs rmpeer).
   */
  leave(): { heir: PeerName | undefined; addresses: number } {
    const { self, ipam } = this.opts;
    const owned = new Map<string, number>();
    for (const s of ipam.spans()) owned.set(s.owner, (owned.get(s.owner) ?? 0) + s.end - s.start);
    const candidates = [...this.opts.routes().unicast.keys()]
      .filter((p) => p !== self)
      .sort((a, b) => (owned.get(b) ?? 0) - (owned.get(a) ?? 0) || (a < b ? -1 : 1));
    const heir = candidates[0];
    if (heir === undefined) return { heir: undefined, addresses: owned.get(self) ?? 0 };
    return { heir, addresses: ipam.leave(heir) };
  }

  private resolvePeer(peer: string): PeerName {
    const entries = this.opts.entries();
    const byName = entries.find((e) => e.name === peer) ?? this.opts.ipam.spans().find((s) => s.owner === peer);
    if (byName !== undefined) return peer as PeerName;
    let byNick = entries.filter((e) => e.nickname === peer);
    if (byNick.length === 0) byNick = (this.opts.forgottenEntries?.() ?? []).filter((e) => e.nickname === peer);
    if (byNick.length === 1) return byNick[0]!.name;
    if (byNick.length > 1) throw new InputError(`nickname "${peer}" is ambiguous: give the peer name`);
    throw new WeftError('EWEFT_NOT_FOUND', `no peer "${peer}" (give a peer name like 0a:1b:2c:3d:4e:5f)`);
  }
}
