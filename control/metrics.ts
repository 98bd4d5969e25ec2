import type { Registry } from 'prom-client';
import type { Router } from '../router/index.js';
import { DROP_NAMES } from '../router/index.js';
import type { DnsService } from './dns.js';

type PromClient = typeof import('prom-client');
type PerfHooks = typeof import('node:perf_hooks');

/**
 * EVENT_LOOP_RESOLUTION_MS is how often the event-loop delay monitor samples: once a second, so an
 * idle router is not woken 100 times a second (the default of 10 ms would).
 */
const EVENT_LOOP_RESOLUTION_MS = 1000;
/** SNAPSHOT_REUSE_MS: one router status snapshot serves all metrics of a scrape. */
const SNAPSHOT_REUSE_MS = 200;

const LAG_STATS = ['min', 'max', 'mean', 'stddev', 'p50', 'p90', 'p99'] as const;

/**
 * replaceEventLoopLag replaces prom-client's event-loop lag gauges, which report the monitor's
 * sampling interval itself (~1.0 s at a 1 s resolution on an idle router), with gauges of how
 * late the loop actually was: each sample minus the resolution, never below 0. Same names.
 */
function replaceEventLoopLag(register: Registry, { Gauge }: PromClient, { monitorEventLoopDelay }: PerfHooks): void {
  const prefix = 'weft_process_nodejs_eventloop_lag';
  for (const stat of LAG_STATS) register.removeSingleMetric(`${prefix}_${stat}_seconds`);
  register.removeSingleMetric(`${prefix}_seconds`);
  const h = monitorEventLoopDelay({ resolution: EVENT_LOOP_RESOLUTION_MS });
  h.enable();
  const late = (ns: number) => (Number.isFinite(ns) ? Math.max(0, ns / 1e9 - EVENT_LOOP_RESOLUTION_MS / 1000) : 0);
  const value = (stat: (typeof LAG_STATS)[number]): number => {
    switch (stat) {
      case 'min':
        return late(h.min);
      case 'max':
        return late(h.max);
      case 'mean':
        return late(h.mean);
      case 'stddev':
        return Number.isFinite(h.stddev) ? h.stddev / 1e9 : 0;
      default:
        return late(h.percentile(Number(stat.slice(1))));
    }
  };
  for (const stat of LAG_STATS) {
    new Gauge({
      name: `${prefix}_${stat}_seconds`,
      help: `Event-loop lag ${stat} in seconds since the last scrape (delay beyond the monitor's resolution).`,
      registers: [register],
      collect() {
        this.set(value(stat));
      },
    });
  }
  // Registered last, so it is collected after the others: it starts the next interval.
  new Gauge({
    name: `${prefix}_seconds`,
    help: 'Event-loop lag in seconds: the mean delay beyond the monitor resolution since the last scrape.',
    registers: [register],
    collect() {
      this.set(value('mean'));
      h.reset();
    },
  });
}

/**
 * PROMETHEUS_CONTENT_TYPE is the text exposition format's content type (prom-client's
 * `Registry.PROMETHEUS_CONTENT_TYPE`), known before the registry exists.
 */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/**
 * UNUSED_MONITOR_RESOLUTION_MS is the resolution given to prom-client's own event-loop delay
 * monitor, whose gauges {@link replaceEventLoopLag} replaces: so coarse that the unused monitor
 * never wakes the loop (Node's largest timer delay).
 */
const UNUSED_MONITOR_RESOLUTION_MS = 2 ** 31 - 1;

/**
 * Metrics is the router's Prometheus endpoint: `metrics()` renders the text exposition format.
 * Nothing exists until the first scrape: prom-client (about 4 MB of heap once loaded), its
 * default process metrics, the event-loop delay monitor and the GC observer are set up then, so
 * a router nobody scrapes pays for none of them. Process-wide figures (CPU, memory, handles) are
 * since the process started; GC durations and event-loop lag are since the first scrape.
 */
export interface Metrics {
  /** metrics renders every metric, read from the router and DNS service at this moment. */
  metrics(): Promise<string>;
  /** contentType is the Content-Type of what `metrics()` returns. */
  readonly contentType: string;
}

/**
 * createMetrics returns the router's {@link Metrics}, whose values are read from the router at
 * scrape time (the datapath keeps plain counters; nothing is updated per packet here). The
 * Prometheus registry is built at the first scrape.
 */
export function createMetrics(router: Router, dns?: DnsService): Metrics {
  let registry: Promise<Registry> | undefined;
  return {
    contentType: PROMETHEUS_CONTENT_TYPE,
    async metrics() {
      // node:perf_hooks is loaded with prom-client (which needs it too), not by every router at start.
      registry ??= Promise.all([import('prom-client'), import('node:perf_hooks')]).then(([prom, perf]) =>
        createRegistry(prom, perf, router, dns),
      );
      return (await registry).metrics();
    },
  };
}

/** createRegistry builds the Prometheus registry behind {@link createMetrics}. */
function createRegistry(prom: PromClient, perf: PerfHooks, router: Router, dns: DnsService | undefined): Registry {
  const { Counter, Gauge, Registry } = prom;
  const register = new Registry();
  // prom-client's event-loop delay monitor is replaced below; given the largest resolution it never samples.
  prom.collectDefaultMetrics({
    register,
    prefix: 'weft_process_',
    eventLoopMonitoringPrecision: UNUSED_MONITOR_RESOLUTION_MS,
  });
  replaceEventLoopLag(register, prom, perf);
  // One status snapshot serves every metric of a scrape (building it is the costly part).
  let cached: ReturnType<Router['status']> | undefined;
  let cachedAt = 0;
  const snap = () => {
    const now = Date.now();
    if (cached === undefined || now - cachedAt > SNAPSHOT_REUSE_MS) {
      cached = router.status();
      cachedAt = now;
    }
    return cached;
  };
  new Counter({
    name: 'weft_kernel_udp_drops_total',
    help: 'Datagrams the kernel dropped before the router read them: receive buffer overflows on each data socket (socket = sleeve, vxlan), and RcvbufErrors of the whole network namespace (socket = all).',
    labelNames: ['socket'],
    registers: [register],
    collect() {
      this.reset();
      const k = snap().kernelDrops;
      if (k === undefined) return;
      this.inc({ socket: 'all' }, k.rcvbufErrors);
      for (const [name, n] of Object.entries(k.sockets)) this.inc({ socket: name }, n);
    },
  });

  new Gauge({
    name: 'weft_connections',
    help: 'Live control connections by state (pending = handshake in progress).',
    labelNames: ['state'],
    registers: [register],
    collect() {
      this.reset();
      const conns = snap().connections as { state?: string }[];
      for (const st of ['pending', 'established']) this.set({ state: st }, conns.filter((c) => c.state === st).length);
    },
  });
  new Gauge({
    name: 'weft_target_states',
    help: 'Connection targets by state (connecting, established, retrying, failed).',
    labelNames: ['state'],
    registers: [register],
    collect() {
      this.reset();
      const targets = snap().targets as { state?: string }[];
      for (const st of ['connecting', 'established', 'retrying', 'failed']) {
        this.set({ state: st }, targets.filter((t) => t.state === st).length);
      }
    },
  });
  new Gauge({
    name: 'weft_peers',
    help: 'Peers this router is connected to.',
    registers: [register],
    collect() {
      this.set(snap().peers.length);
    },
  });
  new Gauge({
    name: 'weft_targets',
    help: 'Connection targets (from launch and connect).',
    registers: [register],
    collect() {
      this.set(snap().targets.length);
    },
  });
  new Counter({
    name: 'weft_packets_total',
    help: 'Packets through the datapath: tun_rx (host to overlay), tun_tx, udp_rx, udp_tx.',
    labelNames: ['direction'],
    registers: [register],
    collect() {
      const c = router.counters;
      this.reset();
      this.inc({ direction: 'tun_rx' }, c.tunRxPackets);
      this.inc({ direction: 'tun_tx' }, c.tunTxPackets);
      this.inc({ direction: 'udp_rx' }, c.udpRxPackets);
      this.inc({ direction: 'udp_tx' }, c.udpTxPackets);
    },
  });
  new Counter({
    name: 'weft_bytes_total',
    help: 'Bytes through the datapath, by direction (as weft_packets_total).',
    labelNames: ['direction'],
    registers: [register],
    collect() {
      const c = router.counters;
      this.reset();
      this.inc({ direction: 'tun_rx' }, c.tunRxBytes);
      this.inc({ direction: 'tun_tx' }, c.tunTxBytes);
      this.inc({ direction: 'udp_rx' }, c.udpRxBytes);
      this.inc({ direction: 'udp_tx' }, c.udpTxBytes);
    },
  });
  new Counter({
    name: 'weft_drops_total',
    help: 'Packets dropped by the datapath, by reason.',
    labelNames: ['reason'],
    registers: [register],
    collect() {
      const c = router.counters;
      this.reset();
      for (let i = 0; i < DROP_NAMES.length; i++) this.inc({ reason: DROP_NAMES[i] as string }, c.drops[i] as number);
    },
  });
  new Counter({
    name: 'weft_connection_terminations_total',
    help: 'Closed control connections by kind: an error code (EWEFT_PROTOCOL, EWEFT_AUTH, ...) or who closed it.',
    labelNames: ['reason'],
    registers: [register],
    collect() {
      this.reset();
      for (const [reason, n] of Object.entries(snap().terminations)) this.inc({ reason }, n);
    },
  });
  new Gauge({
    name: 'weft_peer_states',
    help: 'Known peers by how they are reached: established (direct), pending, failed, relayed, unreachable.',
    labelNames: ['state'],
    registers: [register],
    collect() {
      this.reset();
      const peers = snap().peers;
      for (const st of ['pending', 'established', 'failed', 'relayed', 'unreachable']) {
        this.set({ state: st }, peers.filter((p) => p.state === st).length);
      }
    },
  });
  new Gauge({
    name: 'weft_peer_encap',
    help: 'Directly connected peers by the data path their traffic takes now: fastdp (kernel weft-vx), sleeve, vxlan (userspace).',
    labelNames: ['encap'],
    registers: [register],
    collect() {
      this.reset();
      const direct = snap().peers.filter((p) => p.state !== 'relayed' && p.state !== 'unreachable');
      for (const e of ['fastdp', 'sleeve', 'vxlan']) this.set({ encap: e }, direct.filter((p) => p.encap === e).length);
    },
  });
  new Counter({
    name: 'weft_e2e_key_exchanges_total',
    help: 'End-to-end data key exchanges through the mesh with peers reached only through relays (a password is set), by outcome.',
    labelNames: ['result'],
    registers: [register],
    collect() {
      this.reset();
      const e = snap().endToEnd;
      if (e === undefined) return;
      for (const [result, n] of Object.entries(e)) this.inc({ result }, n);
    },
  });
  new Counter({
    name: 'weft_relayed_total',
    help: 'Sleeve datagrams this router forwarded for other peers.',
    registers: [register],
    collect() {
      this.reset();
      this.inc(router.counters.relayed);
    },
  });
  new Counter({
    name: 'weft_arp_replies_total',
    help: 'ARP replies sent to VXLAN endpoints for addresses this host serves.',
    registers: [register],
    collect() {
      this.reset();
      this.inc(router.counters.arpReplies);
    },
  });
  new Gauge({
    name: 'weft_ipam_addresses',
    help: 'IPAM addresses: owned by this router, in use here, owned by unreachable peers, and the whole range.',
    labelNames: ['kind'],
    registers: [register],
    collect() {
      this.reset();
      const i = snap().ipam;
      this.set({ kind: 'owned' }, i.owned);
      this.set({ kind: 'used' }, i.used);
      this.set({ kind: 'unreachable' }, i.unreachableOwned);
      this.set({ kind: 'range' }, i.size);
    },
  });
  new Gauge({
    name: 'weft_ipam_pending_allocations',
    help: 'Allocations waiting for a seeded ring or for space from another router.',
    registers: [register],
    collect() {
      this.set(snap().ipam.pending.length);
    },
  });
  if (dns !== undefined) dnsMetrics(register, dns, prom);
  return register;
}

/** dnsMetrics exports the DNS server's and the upstream forwarder's counters. */
function dnsMetrics(register: Registry, dns: DnsService, { Counter, Gauge }: PromClient): void {
  const st = () =>
    dns.status() as {
      server: { queries: Record<string, number>; results: Record<string, number> };
      upstream?: { cacheHits: number; cacheMisses: number; latency: { count: number; sumMs: number } };
      entries: unknown[];
    };
  new Counter({
    name: 'weft_dns_queries_total',
    help: 'DNS queries received, by question type.',
    labelNames: ['type'],
    registers: [register],
    collect() {
      this.reset();
      for (const [type, n] of Object.entries(st().server.queries)) this.inc({ type }, n);
    },
  });
  new Counter({
    name: 'weft_dns_results_total',
    help: 'DNS queries by what became of them: answer, nxdomain, nodata, forwarded, servfail, refused, formerr, notimp, dropped, truncated.',
    labelNames: ['result'],
    registers: [register],
    collect() {
      this.reset();
      for (const [result, n] of Object.entries(st().server.results)) this.inc({ result }, n);
    },
  });
  new Counter({
    name: 'weft_dns_upstream_cache_total',
    help: 'Forwarded queries answered from the cache (hit) or sent upstream (miss).',
    labelNames: ['outcome'],
    registers: [register],
    collect() {
      this.reset();
      const u = st().upstream;
      this.inc({ outcome: 'hit' }, u?.cacheHits ?? 0);
      this.inc({ outcome: 'miss' }, u?.cacheMisses ?? 0);
    },
  });
  new Counter({
    name: 'weft_dns_upstream_latency_seconds_sum',
    help: 'Total time upstream resolvers took to answer (divide by weft_dns_upstream_answers_total).',
    registers: [register],
    collect() {
      this.reset();
      this.inc((st().upstream?.latency.sumMs ?? 0) / 1000);
    },
  });
  new Counter({
    name: 'weft_dns_upstream_answers_total',
    help: 'Answers received from upstream resolvers.',
    registers: [register],
    collect() {
      this.reset();
      this.inc(st().upstream?.latency.count ?? 0);
    },
  });
  new Gauge({
    name: 'weft_dns_records',
    help: 'Live DNS records known cluster-wide.',
    registers: [register],
    collect() {
      this.set(st().entries.length);
    },
  });
}
