/**
 * LocalAddresses are the overlay addresses this host serves itself: the host's exposed addresses
 * (on the TUN device) and the containers' claimed ones. It checks a new address is free here and
 * nowhere else in the topology, records it in IPAM, and says what our topology entry announces.
 * `onChange` tells the owner to publish a new entry.
 */
import { InputError, WeftError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { Cidr, IPv4, PeerName } from '../common/types.js';
import { cidrContains, formatCidr, formatIPv4 } from '../common/types.js';
import type { IpamService } from './ipam/service.js';
import type { PeerEntry } from './topology.js';
import type { TunDevice } from './tun/device.js';
import { LinuxTun } from './tun/linux.js';

/** EXPOSE_OWNER is the IPAM owner key of the host's own overlay addresses. */
export const EXPOSE_OWNER = 'weft:expose';

/** LocalAddressesOptions configure LocalAddresses. */
export interface LocalAddressesOptions {
  readonly self: PeerName;
  /** range is the IPAM range: an exposed address without a CIDR comes from it, with its prefix. */
  readonly range: Cidr;
  readonly ipam: IpamService;
  readonly log: Logger;
  /** tun is the device exposed addresses are added to (a kernel device only). */
  readonly tun: () => TunDevice | undefined;
  /** entries is the topology: an address another peer announces is not free. */
  readonly entries: () => readonly PeerEntry[];
  /** onChange fires after what we serve changed. */
  readonly onChange: () => void;
}

/** LocalAddresses: see the module comment. */
export class LocalAddresses {
  private readonly opts: LocalAddressesOptions;
  private readonly ipam: IpamService;
  private exposed: Cidr[] = [];
  /** claims are container addresses served here, by owner (container reference). */
  private readonly claims = new Map<string, Cidr[]>();

  constructor(opts: LocalAddressesOptions) {
    this.opts = opts;
    this.ipam = opts.ipam;
  }

  /** exposedCidrs lists the host's overlay addresses. */
  exposedCidrs(): Cidr[] {
    return [...this.exposed];
  }

  /** addrs lists the addresses this host serves itself. */
  addrs(): number[] {
    const out = this.exposed.map((c) => c.addr as number);
    for (const addrs of this.claims.values()) for (const c of addrs) out.push(c.addr);
    return out;
  }

  /**
   * announced is what we tell peers we serve as /32s: exposed and container addresses that are not
   * in our IPAM space (addresses in it are routed here by the ring itself).
   */
  announced(): string[] {
    return this.addrs()
      .filter((a) => !this.ipam.isOurs(a))
      .map((a) => `${formatIPv4(a)}/32`);
  }

  /**
   * expose gives this host an overlay address: the CIDR given, or one from IPAM (with the range's
   * prefix) when none is given. It is added to the TUN device and routed here by every peer.
   * Idempotent: without a CIDR it returns the address the host already has.
   */
  async expose(cidr?: Cidr): Promise<Cidr[]> {
    const range = this.opts.range;
    if (cidr === undefined) {
      const have = this.exposed.find((c) => cidrContains(range, c.addr));
      if (have !== undefined) return [...this.exposed];
      const addr = await this.ipam.allocate(EXPOSE_OWNER);
      cidr = { addr, prefix: range.prefix };
    } else if (cidr.prefix === 32 || cidr.prefix < 1) {
      throw new InputError(`cannot expose ${formatCidr(cidr)}: want a prefix between /1 and /31`);
    }
    const same = this.exposed.find((c) => c.addr === cidr.addr);
    if (same !== undefined) {
      if (same.prefix === cidr.prefix) return [...this.exposed];
      throw new WeftError('EWEFT_CONFLICT', `${formatIPv4(cidr.addr)} is already exposed as ${formatCidr(same)}`);
    }
    const had = this.ipam.lookup(EXPOSE_OWNER);
    try {
      this.checkFree(cidr.addr, EXPOSE_OWNER);
      this.ipam.claim(EXPOSE_OWNER, cidr.addr);
      const tun = this.opts.tun();
      if (tun instanceof LinuxTun) await tun.addAddress(formatCidr(cidr));
    } catch (err) {
      this.ipam.keepOnly(EXPOSE_OWNER, had);
      throw err;
    }
    this.exposed = [...this.exposed, cidr];
    this.opts.onChange();
    this.opts.log.info('address exposed', { cidr: formatCidr(cidr) });
    return [...this.exposed];
  }

  /** hide removes an exposed address (or all of them when `cidr` is undefined); returns what remains. */
  async hide(cidr?: Cidr): Promise<Cidr[]> {
    const gone = cidr === undefined ? this.exposed : this.exposed.filter((c) => c.addr === cidr.addr);
    if (cidr !== undefined && gone.length === 0) {
      throw new WeftError('EWEFT_NOT_FOUND', `${formatIPv4(cidr.addr)} is not exposed`);
    }
    for (const c of gone) {
      const tun = this.opts.tun();
      if (tun instanceof LinuxTun) await tun.delAddress(formatCidr(c));
    }
    this.exposed = this.exposed.filter((c) => !gone.includes(c));
    this.ipam.keepOnly(
      EXPOSE_OWNER,
      this.exposed.map((c) => c.addr as IPv4),
    );
    this.opts.onChange();
    return [...this.exposed];
  }

  /**
   * checkFree throws EWEFT_CONFLICT when an address is already served here (exposed or claimed by
   * a container) or announced by another peer.
   */
  checkFree(addr: number, exceptOwner?: string): void {
    const ip = formatIPv4(addr);
    if (exceptOwner !== EXPOSE_OWNER && this.exposed.some((c) => c.addr === addr))
      throw new WeftError('EWEFT_CONFLICT', `${ip} is this host's exposed address`);
    for (const [owner, addrs] of this.claims) {
      if (owner !== exceptOwner && addrs.some((c) => c.addr === addr)) {
        throw new WeftError('EWEFT_CONFLICT', `${ip} is already used by ${owner} on this host`);
      }
    }
    const host = `${ip}/32`;
    for (const e of this.opts.entries()) {
      if (e.name !== this.opts.self && e.cidrs.includes(host)) {
        throw new WeftError('EWEFT_CONFLICT', `${ip} is already in use by peer ${e.name}`);
      }
    }
  }

  /**
   * reserve records given addresses for `owner` in IPAM before they are plumbed: each must be free
   * here and, inside the range, in this peer's space. Throws EWEFT_CONFLICT saying who has it.
   */
  reserve(owner: string, addrs: readonly Cidr[]): void {
    for (const a of addrs) this.checkFree(a.addr, owner);
    for (const a of addrs) this.ipam.claim(owner, a.addr as IPv4);
  }

  /**
   * claim makes this router serve container addresses for `owner` (a container reference): they
   * are reserved in IPAM and routed here by every peer. Replaces the owner's previous claim.
   */
  claim(owner: string, addrs: readonly Cidr[]): void {
    this.reserve(owner, addrs);
    this.claims.set(owner, [...addrs]);
    this.opts.onChange();
  }

  /** release stops serving an owner's addresses and frees them in IPAM; returns them (empty when it had none). */
  release(owner: string): Cidr[] {
    const had = this.claims.get(owner) ?? [];
    this.ipam.free(owner);
    if (this.claims.delete(owner)) this.opts.onChange();
    return had;
  }
}
