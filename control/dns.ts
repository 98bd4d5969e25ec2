/**
 * DnsService runs the embedded DNS for one router: the gossiped record set on the 'dns' channel,
 * the server on the host's overlay address (the containers' gateway), upstream forwarding, and
 * the containers' resolver configuration.
 *
 * Where it listens: the host's overlay address (`weft expose`). Attaching a container exposes
 * the host first if it has no overlay address, so every container has its router's DNS one hop
 * away; nothing listens on the underlay.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { errorMessage, InputError, WeftError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { type Cidr, cidrContains, formatIPv4, type PeerName, parseIPv4 } from '../common/types.js';
import {
  DNS_CHANNEL,
  DNS_EXTERN_OWNER,
  DnsGossiper,
  DnsRecords,
  DnsServer,
  loadResolvConf,
  Upstream,
} from '../dns/index.js';
import type { Gossip, Gossiper } from '../router/index.js';
import type { AttachedContainer } from './attach.js';

/** RESOLV_MARK starts every resolv.conf Weft writes, so it only ever removes its own. */
const RESOLV_MARK = '# written by weft: the router DNS of this host';
/** GC_INTERVAL_MS: how often tombstones past their time are dropped. */
const GC_INTERVAL_MS = 60_000;

/**
 * DnsRouter is all a DnsService needs of its router; Router satisfies it. Four members, so that
 * tests and other hosts of the DNS can provide them without a whole mesh.
 */
export interface DnsRouter {
  /** name is our peer name: the origin of the records we register. */
  readonly name: PeerName;
  /** addGossiper opens the named gossip channel over the mesh for `gossiper`; returns its sending side. */
  addGossiper(channel: string, gossiper: Gossiper): Gossip;
  /**
   * onPeersForgotten is called with the peers dropped from the topology, whose records go with
   * them; `forGood` when rmpeer'd rather than unreachable. One listener: DnsService sets it and nothing else may.
   */
  onPeersForgotten: ((peers: PeerName[], forGood: boolean) => void) | undefined;
  /** exposedCidrs lists the host's overlay addresses; the server listens on the one in the range. */
  exposedCidrs(): readonly Cidr[];
}

/** DnsServiceOptions configure a DnsService. */
export interface DnsServiceOptions {
  router: DnsRouter;
  range: Cidr;
  domain: string;
  ttl: number;
  port: number;
  /** upstreams overrides the host's resolv.conf nameservers (`--dns-upstream`). */
  upstreams: readonly string[] | undefined;
  incarnation: number;
  log: Logger;
  /** netnsDir is where per-namespace resolv.conf files go (`ip netns exec` bind-mounts them). */
  netnsDir?: string;
}

/** DnsStatus is `weft status dns`. */
export interface DnsStatus {
  domain: string;
  listening: string | undefined;
  ttl: number;
  upstreams: string[];
  entries: { name: string; addr: string; owner: string; origin: string }[];
  server: unknown;
  upstream: unknown;
  records: unknown;
}

/** DnsService (see the module comment). */
export class DnsService {
  readonly records: DnsRecords;
  private readonly server: DnsServer;
  private upstream: Upstream | undefined;
  private upstreams: string[] = [];
  private readonly gossip;
  private gcTimer: NodeJS.Timeout | undefined;
  /** domain is the DNS domain, lower-case, without the final dot (the search domain containers get). */
  readonly domain: string;

  constructor(private readonly opts: DnsServiceOptions) {
    this.domain = opts.domain.replace(/\.$/, '').toLowerCase();
    this.records = new DnsRecords({ self: opts.router.name, incarnation: opts.incarnation });
    this.gossip = opts.router.addGossiper(DNS_CHANNEL, new DnsGossiper(this.records));
    opts.router.onPeersForgotten = (peers, forGood) => {
      for (const p of peers) {
        // Only a peer gone for good is refused from then on: an unreachable one (a partition) may
        // come back with the same incarnation, and its records must be taken again when it does.
        const n = this.records.dropOrigin(p, undefined, forGood);
        if (n > 0) opts.log.info('dns: dropped the records of a peer gone', { peer: p, records: n });
      }
    };
    this.server = new DnsServer({
      domain: this.domain,
      ttl: opts.ttl,
      records: this.records,
      allowed: (a) => this.allowed(a),
      inRange: (a) => cidrContains(opts.range, a),
      log: opts.log,
    });
  }

  /** start finds the upstream resolvers and listens if the host has an overlay address. */
  async start(): Promise<void> {
    const inRange = (s: string) => {
      try {
        return cidrContains(this.opts.range, parseIPv4(s.split(':')[0] ?? s));
      } catch {
        return false;
      }
    };
    let servers = [...(this.opts.upstreams ?? [])];
    if (this.opts.upstreams === undefined) {
      try {
        servers = (await loadResolvConf()).nameservers.filter((s) => !inRange(s));
      } catch (err) {
        this.opts.log.warn('dns: cannot read the host resolv.conf; no upstream', { err: errorMessage(err) });
      }
    }
    this.upstreams = servers;
    if (servers.length > 0) {
      this.upstream = new Upstream({ servers, log: this.opts.log });
      await this.upstream.start();
      this.server.upstream = this.upstream;
    }
    this.gcTimer = setInterval(() => this.records.gc(), GC_INTERVAL_MS);
    this.gcTimer.unref();
    await this.sync();
  }

  async stop(): Promise<void> {
    if (this.gcTimer !== undefined) clearInterval(this.gcTimer);
    await this.server.close();
    await this.upstream?.stop();
  }

  /** address is the overlay address the server listens on, if any. */
  get address(): string | undefined {
    return this.server.address?.split(':')[0];
  }

  /** sync listens on the host's overlay address (or stops listening when it has none). */
  async sync(): Promise<void> {
    const host = this.opts.router.exposedCidrs().find((c) => cidrContains(this.opts.range, c.addr));
    if (host === undefined) {
      await this.server.close();
      return;
    }
    try {
      await this.server.listen(formatIPv4(host.addr), this.opts.port);
    } catch (err) {
      this.opts.log.error('dns: cannot listen', { err: errorMessage(err) });
    }
  }

  /**
   * attached registers a container: its name (if any) for every address, and its resolver
   * configuration pointing at this router's DNS (named namespaces; the host is exposed first
   * when it has no overlay address yet).
   */
  async attached(a: AttachedContainer, exposeHost: () => Promise<void>): Promise<void> {
    if (this.address === undefined) {
      await exposeHost();
      await this.sync();
    }
    if (a.name !== undefined) {
      for (const c of a.cidrs) this.broadcast(this.records.add(a.target, `${a.name}.${this.domain}`, cidrAddr(c)));
    }
    // A container attached by path (CNI) gets its resolver from the runtime (the CNI result's dns).
    if (this.address !== undefined && a.netns === undefined && isNetnsName(a.target)) {
      const dir = path.join(this.opts.netnsDir ?? '/etc/netns', a.target);
      await mkdir(dir, { recursive: true });
      await writeFile(
        path.join(dir, 'resolv.conf'),
        `${RESOLV_MARK}\nnameserver ${this.address}\nsearch ${this.domain}\noptions ndots:1\n`,
      );
    }
  }

  /** detached removes a container's names at once (gossiped) and the resolv.conf Weft wrote. */
  async detached(a: AttachedContainer): Promise<void> {
    this.broadcast(this.records.remove(a.target));
    if (a.netns !== undefined || !isNetnsName(a.target)) return;
    const dir = path.join(this.opts.netnsDir ?? '/etc/netns', a.target);
    const file = path.join(dir, 'resolv.conf');
    const text = await readFile(file, 'utf8').catch(() => '');
    if (text.startsWith(RESOLV_MARK)) {
      await rm(file, { force: true });
      await rm(dir).catch(() => undefined); // only if empty
    }
  }

  /** add registers `name` for addresses not owned by a container (`weft dns-add`). */
  add(name: string, addrs: readonly string[], owner = DNS_EXTERN_OWNER): void {
    if (addrs.length === 0) throw new InputError('give at least one address');
    const fq = this.qualify(name);
    for (const a of addrs) this.broadcast(this.records.add(owner, fq, parseIPv4(a)));
  }

  /** remove drops records of `owner` (extern by default) for `name` and/or the addresses. */
  remove(name: string | undefined, addrs: readonly string[], owner = DNS_EXTERN_OWNER): number {
    const fq = name === undefined ? undefined : this.qualify(name);
    let n = 0;
    const targets = addrs.length === 0 ? [undefined] : addrs.map((a) => parseIPv4(a));
    for (const addr of targets) {
      const before = this.records.liveCount;
      this.broadcast(this.records.remove(owner, fq, addr));
      n += before - this.records.liveCount;
    }
    if (n === 0) throw new WeftError('EWEFT_NOT_FOUND', `no such record${fq === undefined ? '' : ` for ${fq}`}`);
    return n;
  }

  /** lookup answers from the record set (what the server would answer for an A question). */
  lookup(name: string): string[] {
    return this.records.lookupName(this.qualify(name)).map(formatIPv4);
  }

  status(): DnsStatus {
    return {
      domain: this.domain,
      listening: this.server.address,
      ttl: this.opts.ttl,
      upstreams: this.upstreams,
      entries: this.records
        .entries()
        .filter((r) => !r.deleted)
        .map((r) => ({ name: r.name, addr: formatIPv4(r.addr), owner: r.owner, origin: r.origin })),
      server: this.server.stats(),
      upstream: this.upstream?.stats(),
      records: this.records.stats,
    };
  }

  /** qualify puts a bare name into the domain; a name already in it is kept. */
  private qualify(name: string): string {
    const n = name.replace(/\.$/, '').toLowerCase();
    return n === this.domain || n.endsWith(`.${this.domain}`) ? n : `${n}.${this.domain}`;
  }

  private broadcast(delta: Uint8Array | undefined): void {
    if (delta !== undefined) this.gossip.broadcast(delta);
  }

  /** allowed: overlay addresses and the host's loopback. */
  private allowed(addr: number): boolean {
    return addr >>> 24 === 127 || cidrContains(this.opts.range, addr);
  }
}

function cidrAddr(c: string): number {
  return parseIPv4(c.split('/')[0] ?? c);
}

function isNetnsName(target: string): boolean {
  return !/^[0-9]+$/.test(target);
}
