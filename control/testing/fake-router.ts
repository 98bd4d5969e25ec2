/**
 * FakeAttachRouter is the part of the Router an Attacher uses, with IPAM as a map of owners to
 * addresses, for the attach tests (control/attach.test.ts, control/docker-attach.test.ts,
 * cni/attach-at.test.ts) that run the Attacher against a fake kernel.
 */
import { type Cidr, formatIPv4, type IPv4, parseCidr } from '../../common/types.js';

export interface FakeAttachRouterOptions {
  /** first is the first address allocate hands out (default 10.32.0.1). */
  first?: number;
  /** onFree sees every owner whose addresses are freed. */
  onFree?: (owner: string) => void;
}

export class FakeAttachRouter {
  readonly mtu = 1410;
  /** held maps owners to their addresses. */
  readonly held = new Map<string, number[]>();
  /** claimed are the owners restore claimed (claim without release since). */
  readonly claimed = new Set<string>();
  /** exposed are the host's own addresses; expose() makes 10.32.0.1/12 the first time. */
  exposed: Cidr[] = [];
  /** exposes counts expose() calls. */
  exposes = 0;
  private next: number;
  readonly ipam = {
    owners: () => [...this.held.keys()],
    claim: (owner: string, addr: number): void => {
      this.held.set(owner, [...(this.held.get(owner) ?? []), addr]);
    },
    free: (owner: string): number[] => {
      this.opts.onFree?.(owner);
      const had = this.held.get(owner) ?? [];
      this.held.delete(owner);
      return had;
    },
  };

  constructor(private readonly opts: FakeAttachRouterOptions = {}) {
    this.next = opts.first ?? 0x0a200001;
  }

  /** allocate gives an owner its one address (the same one again while it holds it). */
  async allocate(owner: string): Promise<number> {
    const had = this.held.get(owner);
    if (had?.[0] !== undefined) return had[0];
    const addr = this.next++;
    this.held.set(owner, [addr]);
    return addr;
  }
  reserve(owner: string, addrs: readonly Cidr[]): void {
    this.held.set(
      owner,
      addrs.map((a) => a.addr),
    );
  }
  claim(owner: string, addrs: readonly Cidr[]): void {
    this.reserve(owner, addrs);
    this.claimed.add(owner);
  }
  /** release frees an owner's addresses; returns them when it had claimed them (as the Router does, with the range's prefix). */
  release(owner: string): Cidr[] {
    const had = this.claimed.has(owner)
      ? (this.held.get(owner) ?? []).map((addr) => ({ addr: addr as IPv4, prefix: 12 }))
      : [];
    this.ipam.free(owner);
    this.claimed.delete(owner);
    return had;
  }
  async expose(): Promise<Cidr[]> {
    this.exposes++;
    if (this.exposed.length === 0) this.exposed = [parseCidr('10.32.0.1/12')];
    return this.exposed;
  }
  exposedCidrs(): Cidr[] {
    return [...this.exposed];
  }
  /** used lists every held address as text. */
  used(): string[] {
    return [...this.held.values()].flat().map(formatIPv4);
  }
}
