/**
 * tunnels measures IP tunnels between two hosts of a netns {@link Topology}, side by side in one run:
 * the physical limit (raw veth), the kernel's own vxlan, and userspace tunnels installed from Debian
 * packages (socat TUN-over-UDP, wireguard-go, nebula). Weft's bench adds its own {@link TunnelScenario}s
 * and passes them through the same {@link measureScenarios} and {@link renderTable}.
 *
 * ```
 *   hosts[0] netns                                          hosts[1] netns
 *   aIp ── tunnel dev ── encapsulation ── underlay veth ── bridge ── underlay veth ── tunnel dev ── bIp
 *   (ping, iperf3 -c)                                                           (iperf3 -s on bIp)
 * ```
 *
 * Timings are reported, never asserted. Every link and process a scenario makes carries the run id
 * (via {@link Netns.ifname}) and is removed by its teardown, or at the latest by `topo.destroy()`.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Host, Netns, Topology } from '../e2e/netns.js';
import { AbortWait, outputTail, stopProcess, waitUntil } from '../e2e/netns.js';

/** RAW_VETH is the name of the no-tunnel row every ratio is taken against. */
export const RAW_VETH = 'raw veth';
/** VXLAN_UDP_PORT is the UDP port of the kernel vxlan row: Weft's VXLAN port (DESIGN.md §2). */
export const VXLAN_UDP_PORT = 6784;
/** VXLAN_VNI is the VXLAN network identifier of the kernel vxlan row. */
export const VXLAN_VNI = 42;
/** SOCAT_UDP_PORT carries the socat row's TUN-over-UDP datagrams. */
export const SOCAT_UDP_PORT = 6790;
/** WIREGUARD_UDP_PORT is wireguard-go's listen port on both hosts. */
export const WIREGUARD_UDP_PORT = 51820;
/** NEBULA_UDP_PORT is nebula's listen port on both hosts (nebula's default). */
export const NEBULA_UDP_PORT = 4242;
/** IPERF3_PORT is where the measuring iperf3 server listens on hosts[1]. */
export const IPERF3_PORT = 5201;

/** Outer-header bytes each tunnel adds to an IPv4 packet (outer IPv4 20 + UDP 8 + the tunnel's own). */
const OVERHEAD_BYTES = {
  vxlan: 20 + 8 + 8 + 14, // + VXLAN header + inner Ethernet
  socat: 20 + 8, // bare IP packet in UDP
  wireguard: 20 + 8 + 16 + 16, // + message header + Poly1305 tag
  nebula: 20 + 8 + 16 + 16, // + nebula header + AES-GCM tag
} as const;

/** TunnelSetupOptions are the MTUs a scenario must honour. */
export interface TunnelSetupOptions {
  /** MTU to give the tunnel device, where the tunnel lets us set it. */
  overlayMtu: number;
  /** MTU of the underlay veths (for notes: whether encapsulated packets fit). */
  underlayMtu: number;
}

/** TunnelSetup is a running tunnel between hosts[0] and hosts[1]. */
export interface TunnelSetup {
  /** Overlay address of hosts[0]: traffic is sent from hosts[0] to `bIp`. */
  aIp: string;
  /** Overlay address of hosts[1], where the iperf3 server is reached. */
  bIp: string;
  /** Removes every link, process and file the setup made. Idempotent; runs every step even when one fails. */
  teardown(): Promise<void>;
  /** A short remark for the table (cipher, fragmentation, MTU caveats). */
  note?: string;
}

/** TunnelScenario is one row of the tunnel table: how to set up the tunnel it measures. */
export interface TunnelScenario {
  /** Row name in the table, e.g. `'kernel vxlan'`. */
  name: string;
  /**
   * setup builds a tunnel between hosts[0] and hosts[1] of topo and resolves when it is configured
   * (not necessarily handshaken: the measurement pings until the first reply). On failure it removes
   * what it built before rejecting.
   */
  setup(topo: Topology, opts: TunnelSetupOptions): Promise<TunnelSetup>;
}

/** TunnelResult is one measured row. Numbers are NaN where a measurement failed (see `error`). */
export interface TunnelResult {
  name: string;
  /** Single-stream TCP throughput at the receiver, Gbit/s. */
  tcpGbps: number;
  /** 64-byte UDP datagrams the receiver got per second with an unlimited sender. */
  udpPps?: number;
  /** Mean ping RTT over the tunnel, ms. */
  pingAvgMs: number;
  /** Median ping RTT over the tunnel, ms. */
  pingMedianMs?: number;
  /** tcpGbps / raw veth tcpGbps of the same run (NaN when unknown). */
  ratioTcp: number;
  note?: string;
  /** Why (part of) the measurement failed; the row is still reported. */
  error?: string;
}

/** MeasureOptions tune {@link measureScenario}. */
export interface MeasureOptions extends TunnelSetupOptions {
  /** TCP test length in seconds. Default 5. */
  seconds?: number;
  /** Small-packet UDP test length in seconds. Default 3. */
  udpSeconds?: number;
  /** Raw veth TCP Gbit/s of this run, for `ratioTcp`. */
  rawTcpGbps?: number;
  /** Called with progress lines ("kernel vxlan: tcp"), e.g. to print to stderr. */
  log?: (line: string) => void;
}

// ─── scenario helpers ───────────────────────────────────────────────────────────────────────────

type Defer = (step: () => Promise<unknown>) => void;

/**
 * staged runs `build`, which registers undo steps with `defer`. On success it returns the built value
 * plus a teardown that runs the steps in reverse; on failure it runs them at once and rethrows.
 */
async function staged<T extends Omit<TunnelSetup, 'teardown'>>(
  build: (defer: Defer) => Promise<T>,
): Promise<T & TunnelSetup> {
  const steps: (() => Promise<unknown>)[] = [];
  let done: Promise<void> | undefined;
  const teardown = (): Promise<void> => {
    done ??= (async () => {
      const errors: unknown[] = [];
      for (const step of steps.reverse()) {
        try {
          await step();
        } catch (err) {
          errors.push(err);
        }
      }
      if (errors.length > 0) throw errors[0];
    })();
    return done;
  };
  try {
    const value = await build((step) => steps.push(step));
    return { ...value, teardown };
  } catch (err) {
    await teardown().catch(() => {});
    throw err;
  }
}

function pair(topo: Topology): [Host, Host] {
  const [a, b] = topo.hosts;
  if (!a || !b) throw new Error(`a tunnel needs 2 hosts; topology ${topo.prefix} has ${topo.hosts.length}`);
  return [a, b];
}

/** Resolves once `dev` exists in `ns`; rejects at once, with its output, if `child` exits first. */
async function waitForLink(ns: Netns, dev: string, child: ChildProcess, what: string): Promise<void> {
  await waitUntil(
    async () => {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new AbortWait(
          `${what} in ${ns.name} exited (${child.exitCode ?? child.signalCode}): ${outputTail(child).trim()}`,
        );
      }
      const r = await ns.exec('ip', ['link', 'show', dev], { allowFail: true });
      return r.code === 0;
    },
    { timeoutMs: 10_000, what: `${dev} to appear in ${ns.name}` },
  );
}

function fitNote(overheadBytes: number, opts: TunnelSetupOptions): string {
  const outer = opts.overlayMtu + overheadBytes;
  return outer > opts.underlayMtu ? `outer ${outer} B > underlay ${opts.underlayMtu}: fragmented` : '';
}

/**
 * argv is a tag that splits a command line into arguments at the spaces of its literal text only, so an
 * interpolated value (a temp path, a key) stays one argument even if it contains a space.
 */
function argv(strings: TemplateStringsArray, ...values: unknown[]): string[] {
  const out: string[] = [];
  let word = '';
  let started = false;
  strings.forEach((literal, i) => {
    for (const ch of literal) {
      if (ch === ' ') {
        if (started) out.push(word);
        word = '';
        started = false;
      } else {
        word += ch;
        started = true;
      }
    }
    if (i < values.length) {
      word += String(values[i]);
      started = true;
    }
  });
  if (started) out.push(word);
  return out;
}

function joinNotes(...notes: string[]): string {
  return notes.filter((n) => n !== '').join('; ');
}

// ─── baseline scenarios ─────────────────────────────────────────────────────────────────────────

/** rawVeth is the physical limit: no tunnel, the hosts' underlay addresses over the veth/bridge path. */
const rawVeth: TunnelScenario = {
  name: RAW_VETH,
  async setup(topo, opts) {
    const [a, b] = pair(topo);
    return {
      aIp: a.underlayIp,
      bIp: b.underlayIp,
      teardown: async () => {},
      note: `no tunnel, MTU ${opts.underlayMtu}`,
    };
  },
};

/** kernelVxlan is Linux's vxlan device, unicast to the peer (`remote`), on Weft's VXLAN port. */
const kernelVxlan: TunnelScenario = {
  name: 'kernel vxlan',
  setup: (topo, opts) =>
    staged(async (defer) => {
      const [a, b] = pair(topo);
      const dev = a.ifname('vx');
      const ips = ['172.30.1.1', '172.30.1.2'] as const;
      const hosts = [a, b] as const;
      for (const [i, h] of hosts.entries()) {
        const peer = hosts[1 - i]!;
        await h.ip(
          ...argv`link add ${dev} type vxlan id ${VXLAN_VNI} local ${h.underlayIp} remote ${peer.underlayIp} dstport ${VXLAN_UDP_PORT} dev ${h.underlayDev}`,
        );
        defer(() => h.ip('link', 'del', dev));
        await h.ip('link', 'set', dev, 'mtu', String(opts.overlayMtu), 'up');
        await h.ip('addr', 'add', `${ips[i]}/24`, 'dev', dev);
      }
      return {
        aIp: ips[0],
        bIp: ips[1],
        note: joinNotes(`VNI ${VXLAN_VNI}, udp ${VXLAN_UDP_PORT}`, fitNote(OVERHEAD_BYTES.vxlan, opts)),
      };
    }),
};

/** socatTun is `socat` joining a TUN device to an unconnected UDP socket: the simplest userspace tunnel. */
const socatTun: TunnelScenario = {
  name: 'socat TUN/UDP',
  setup: (topo, opts) =>
    staged(async (defer) => {
      const [a, b] = pair(topo);
      const dev = a.ifname('sc');
      const ips = ['172.30.2.1', '172.30.2.2'] as const;
      const hosts = [a, b] as const;
      for (const [i, h] of hosts.entries()) {
        const peer = hosts[1 - i]!;
        const child = h.spawn('socat', [
          '-b',
          '65536',
          `UDP-DATAGRAM:${peer.underlayIp}:${SOCAT_UDP_PORT},bind=${h.underlayIp}:${SOCAT_UDP_PORT}`,
          `TUN:${ips[i]}/24,tun-name=${dev},tun-type=tun,iff-no-pi,iff-up`,
        ]);
        defer(() => stopProcess(child));
        await waitForLink(h, dev, child, 'socat');
        await h.ip('link', 'set', dev, 'mtu', String(opts.overlayMtu));
      }
      return { aIp: ips[0], bIp: ips[1], note: joinNotes('no encryption', fitNote(OVERHEAD_BYTES.socat, opts)) };
    }),
};

/** wireguardGo is userspace WireGuard (wireguard-go, configured with `wg` from wireguard-tools). */
const wireguardGo: TunnelScenario = {
  name: 'wireguard-go',
  setup: (topo, opts) =>
    staged(async (defer) => {
      const [a, b] = pair(topo);
      const dir = await mkdtemp(join(tmpdir(), `${a.ifname('wg')}-`));
      defer(() => rm(dir, { recursive: true, force: true }));
      const ips = ['172.30.3.1', '172.30.3.2'] as const;
      const hosts = [a, b] as const;
      // The UAPI socket is /var/run/wireguard/<dev>.sock, shared by all namespaces: one name per host.
      const devs = hosts.map((h) => h.ifname(`wg${h.index}`));
      const keys: { file: string; pub: string }[] = [];
      for (const [i, h] of hosts.entries()) {
        const priv = (await h.exec('wg', ['genkey'])).stdout.trim();
        const pub = (await h.exec('wg', ['pubkey'], { input: `${priv}\n` })).stdout.trim();
        const file = join(dir, `${i}.key`);
        await writeFile(file, `${priv}\n`, { mode: 0o600 });
        keys.push({ file, pub });
      }
      for (const [i, h] of hosts.entries()) {
        const dev = devs[i]!;
        const peer = hosts[1 - i]!;
        const child = h.spawn('wireguard-go', ['-f', dev], {
          env: { WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1' },
        });
        defer(() => rm(`/var/run/wireguard/${dev}.sock`, { force: true }));
        defer(() => stopProcess(child));
        await waitForLink(h, dev, child, 'wireguard-go');
        await waitUntil(async () => (await h.exec('wg', ['show', dev], { allowFail: true })).code === 0, {
          timeoutMs: 5_000,
          what: `wireguard-go's control socket for ${dev}`,
        });
        await h.exec(
          'wg',
          argv`set ${dev} private-key ${keys[i]!.file} listen-port ${WIREGUARD_UDP_PORT} peer ${keys[1 - i]!.pub} endpoint ${peer.underlayIp}:${WIREGUARD_UDP_PORT} allowed-ips ${ips[1 - i]}/32`,
        );
        await h.ip('addr', 'add', `${ips[i]}/24`, 'dev', dev);
        await h.ip('link', 'set', dev, 'mtu', String(opts.overlayMtu), 'up');
      }
      return {
        aIp: ips[0],
        bIp: ips[1],
        note: joinNotes('ChaCha20-Poly1305', fitNote(OVERHEAD_BYTES.wireguard, opts)),
      };
    }),
};

/** nebula is Slack's nebula with a throwaway CA, no lighthouse, and a static host map. */
const nebula: TunnelScenario = {
  name: 'nebula',
  setup: (topo, opts) =>
    staged(async (defer) => {
      const [a, b] = pair(topo);
      const dir = await mkdtemp(join(tmpdir(), `${a.ifname('nb')}-`));
      defer(() => rm(dir, { recursive: true, force: true }));
      const ips = ['172.30.4.1', '172.30.4.2'] as const;
      const hosts = [a, b] as const;
      const ca = { crt: join(dir, 'ca.crt'), key: join(dir, 'ca.key') };
      await a.exec('nebula-cert', [
        'ca',
        '-name',
        `weft bench ${topo.prefix}`,
        '-duration',
        '24h',
        '-out-crt',
        ca.crt,
        '-out-key',
        ca.key,
      ]);
      for (const [i, h] of hosts.entries()) {
        const peer = hosts[1 - i]!;
        const crt = join(dir, `${i}.crt`);
        const key = join(dir, `${i}.key`);
        await h.exec(
          'nebula-cert',
          argv`sign -ca-crt ${ca.crt} -ca-key ${ca.key} -name ${h.name} -ip ${ips[i]}/24 -out-crt ${crt} -out-key ${key}`,
        );
        const dev = h.ifname(`nb${h.index}`);
        const config = join(dir, `${i}.yml`);
        await writeFile(
          config,
          [
            `pki: { ca: "${ca.crt}", cert: "${crt}", key: "${key}" }`,
            `static_host_map: { "${ips[1 - i]}": ["${peer.underlayIp}:${NEBULA_UDP_PORT}"] }`,
            'lighthouse: { am_lighthouse: false, interval: 60, hosts: [] }',
            `listen: { host: "${h.underlayIp}", port: ${NEBULA_UDP_PORT} }`,
            'punchy: { punch: false }',
            `tun: { disabled: false, dev: "${dev}", mtu: ${opts.overlayMtu}, drop_local_broadcast: false, drop_multicast: false }`,
            'logging: { level: warning, format: text }',
            'firewall:',
            '  outbound: [{ port: any, proto: any, host: any }]',
            '  inbound: [{ port: any, proto: any, host: any }]',
            '',
          ].join('\n'),
        );
        const child = h.spawn('nebula', ['-config', config]);
        defer(() => stopProcess(child));
        await waitForLink(h, dev, child, 'nebula');
      }
      return { aIp: ips[0], bIp: ips[1], note: joinNotes('AES-256-GCM', fitNote(OVERHEAD_BYTES.nebula, opts)) };
    }),
};

/**
 * baselineScenarios are the rows every tunnel table starts with, in order: raw veth (the ratio
 * reference), kernel vxlan, socat TUN-over-UDP, wireguard-go, nebula. Needs `socat`, `wireguard-go`,
 * `wireguard-tools` (`wg`) and `nebula` (Debian packages) plus `iperf3` and `iputils-ping`.
 */
export const baselineScenarios: TunnelScenario[] = [rawVeth, kernelVxlan, socatTun, wireguardGo, nebula];

// ─── measuring ──────────────────────────────────────────────────────────────────────────────────

function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((x, y) => x - y);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function message(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0]!.slice(0, 300);
}

/**
 * measureScenario sets up `scenario` between hosts[0] and hosts[1], pings until the tunnel answers
 * (handshakes), then measures from hosts[0] to hosts[1]: one TCP stream for `seconds` (iperf3), 64-byte
 * UDP datagrams with an unlimited sender for `udpSeconds` (received packets/s at the receiver), and 20
 * pings 50 ms apart (mean and median RTT). Each measurement that fails leaves NaN and adds to `error`;
 * this function never rejects, and it always tears the scenario down.
 */
export async function measureScenario(
  topo: Topology,
  scenario: TunnelScenario,
  opts: MeasureOptions,
): Promise<TunnelResult> {
  const log = opts.log ?? (() => {});
  const result: TunnelResult = {
    name: scenario.name,
    tcpGbps: Number.NaN,
    pingAvgMs: Number.NaN,
    ratioTcp: Number.NaN,
  };
  const errors: string[] = [];
  const attempt = async (what: string, fn: () => Promise<void>): Promise<void> => {
    log(`${scenario.name}: ${what}`);
    try {
      await fn();
    } catch (err) {
      errors.push(`${what}: ${message(err)}`);
    }
  };
  let setup: TunnelSetup | undefined;
  try {
    const [a, b] = pair(topo);
    log(`${scenario.name}: setup`);
    setup = await scenario.setup(topo, { overlayMtu: opts.overlayMtu, underlayMtu: opts.underlayMtu });
    result.note = setup.note;
    const { bIp } = setup;
    await waitUntil(async () => (await a.ping(bIp, { count: 1, timeoutMs: 1_000 })).received === 1, {
      timeoutMs: 15_000,
      intervalMs: 100,
      what: `a ping reply from ${bIp} over ${scenario.name}`,
    });
    const server = await b.iperf3Server(IPERF3_PORT);
    try {
      await attempt('tcp', async () => {
        const tcp = await a.iperf3Client(bIp, { seconds: opts.seconds ?? 5, port: IPERF3_PORT });
        result.tcpGbps = tcp.bitsPerSecond / 1e9;
      });
      await attempt('udp', async () => {
        const udp = await a.iperf3Client(bIp, {
          seconds: opts.udpSeconds ?? 3,
          port: IPERF3_PORT,
          udp: true,
          length: 64,
          bitrate: '0',
        });
        result.udpPps = udp.receivedPps;
      });
    } finally {
      await server.stop();
    }
    await attempt('ping', async () => {
      const p = await a.ping(bIp, { count: 20, intervalS: 0.05 });
      if (p.received === 0) throw new Error(`no reply from ${bIp} (${p.transmitted} sent)`);
      result.pingAvgMs = p.rttAvgMs;
      result.pingMedianMs = median(p.rttsMs);
      if (p.received < p.transmitted) errors.push(`ping: ${p.transmitted - p.received}/${p.transmitted} lost`);
    });
  } catch (err) {
    errors.push(message(err));
  } finally {
    if (setup) await setup.teardown().catch((err: unknown) => errors.push(`teardown: ${message(err)}`));
  }
  if (opts.rawTcpGbps !== undefined && opts.rawTcpGbps > 0) result.ratioTcp = result.tcpGbps / opts.rawTcpGbps;
  if (errors.length > 0) result.error = errors.join('; ');
  return result;
}

/**
 * measureScenarios runs {@link measureScenario} for each scenario in order on one topology and fills
 * `ratioTcp` against the {@link RAW_VETH} row (measured first when present). Never rejects for a
 * failing scenario; its row carries the `error`.
 */
export async function measureScenarios(
  topo: Topology,
  scenarios: readonly TunnelScenario[],
  opts: MeasureOptions,
): Promise<TunnelResult[]> {
  const ordered = [...scenarios].sort((x, y) => Number(y.name === RAW_VETH) - Number(x.name === RAW_VETH));
  const results: TunnelResult[] = [];
  let raw = opts.rawTcpGbps;
  for (const scenario of ordered) {
    const r = await measureScenario(topo, scenario, { ...opts, rawTcpGbps: raw });
    if (scenario.name === RAW_VETH && Number.isFinite(r.tcpGbps)) {
      raw = r.tcpGbps;
      r.ratioTcp = 1;
    }
    results.push(r);
  }
  return results;
}

// ─── rendering ──────────────────────────────────────────────────────────────────────────────────

/** TableMeta heads a rendered table. */
export interface TableMeta {
  /** ISO date of the run. */
  date: string;
  /** CPU, cores, kernel, Node version. */
  machine: string;
  underlayMtu: number;
  overlayMtu: number;
}

function fmt(value: number | undefined, digits: number): string {
  return value === undefined || !Number.isFinite(value) ? '—' : value.toFixed(digits);
}

function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/**
 * renderTable renders results as a markdown table: TCP Gbit/s and its ratio to the raw veth row, 64-byte
 * UDP kpps at the receiver, ping mean and median, the RTT a tunnel adds over raw veth (median, µs), and
 * notes/errors. Ratios are recomputed from the raw veth row when it is among `results`.
 */
export function renderTable(results: readonly TunnelResult[], meta: TableMeta): string {
  const raw = results.find((r) => r.name === RAW_VETH);
  const lines = [
    `Tunnels, underlay MTU ${meta.underlayMtu}, overlay MTU ${meta.overlayMtu} — ${meta.date}, ${meta.machine}`,
    '',
    '| tunnel | TCP Gbit/s | × raw veth | UDP 64 B kpps (rx) | ping avg ms | ping median ms | + RTT µs | note |',
    '|---|---:|---:|---:|---:|---:|---:|---|',
  ];
  for (const r of results) {
    const ratio = raw && Number.isFinite(raw.tcpGbps) && raw.tcpGbps > 0 ? r.tcpGbps / raw.tcpGbps : r.ratioTcp;
    const added =
      raw && r !== raw && raw.pingMedianMs !== undefined && r.pingMedianMs !== undefined
        ? (r.pingMedianMs - raw.pingMedianMs) * 1000
        : undefined;
    const note = [r.note ?? '', r.error ? `error: ${r.error}` : ''].filter((s) => s !== '').join('; ');
    lines.push(
      `| ${cell(r.name)} | ${fmt(r.tcpGbps, 2)} | ${fmt(ratio, 3)} | ${fmt(r.udpPps === undefined ? undefined : r.udpPps / 1000, 0)} | ` +
        `${fmt(r.pingAvgMs, 3)} | ${fmt(r.pingMedianMs, 3)} | ${r === raw ? '0' : fmt(added, 0)} | ${cell(note)} |`,
    );
  }
  return lines.join('\n');
}
