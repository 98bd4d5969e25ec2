/**
 * tunnels measures IP tunnels between two hosts of a netns {@link Lab}, side by side in one run:
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
 * A scenario may instead measure between two other namespaces (Weft's containers, attached on each
 * host: {@link TunnelSetup.client}, {@link TunnelSetup.server}). {@link measureLossLevels} repeats the
 * rows on a lossy underlay (the switch drops a share of frames, offloads off); every row also
 * reports the IP fragments the hosts (and routers) made or reassembled while it ran, and, where
 * the tunnel is a process of its own, that process's CPU during the TCP test.
 *
 * Timings are reported, never asserted. Every link and process a scenario makes carries the run id
 * (via {@link Netns.ifname}) and is removed by its teardown, or at the latest by `topo.destroy()`.
 *
 * Over 400 lines because it is one bench: the baseline scenarios, the measuring loop and the table
 * share the {@link TunnelScenario} contract and the {@link RAW_ID} row every ratio is taken
 * against, and each baseline is a few dozen lines of setup that read best next to the others it is
 * measured beside.
 */
import { type ChildProcess, execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path, { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Host, Lab, Netns } from '../lab/netns.js';
import { AbortWait, outputTail, stopProcess, waitUntil } from '../lab/netns.js';
import { cpuPercent, type IpFragments, readCpuTicks, readIpFragments } from './proc-counters.js';

/** RAW_VETH is the name of the no-tunnel row every ratio is taken against. */
export const RAW_VETH = 'raw veth';
/** RAW_ID is the {@link TunnelScenario.id} of that row: ratios are to the row with this id and the same loss. */
export const RAW_ID = 'raw';
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
  /**
   * MTU to give the tunnel device, where the tunnel lets us set it; a userspace tunnel whose
   * encapsulation would not fit the hosts' links at this MTU gets less (wireguard-go, nebula), and
   * Weft rows use the router's own default.
   */
  overlayMtu: number;
  /** MTU of the underlay veths (for notes: whether encapsulated packets fit). */
  underlayMtu: number;
  /** The smallest MTU on the routed path between the hosts, when below `underlayMtu` (for notes). */
  pathMtu?: number;
}

/** TunnelSetup is a running tunnel between hosts[0] and hosts[1]. */
export interface TunnelSetup {
  /** Overlay address of the sending side: traffic is sent from `client` to `bIp`. */
  aIp: string;
  /** Overlay address of the receiving side, where the iperf3 server in `server` is reached. */
  bIp: string;
  /** Removes every link, process and file the setup made. Idempotent; runs every step even when one fails. */
  teardown(): Promise<void>;
  /** A short remark for the table (cipher, fragmentation, MTU caveats). */
  note?: string;
  /** Where ping and `iperf3 -c` run (a container on hosts[0], say). Default hosts[0]. */
  client?: Netns;
  /** Where `iperf3 -s` runs. Default hosts[1]. */
  server?: Netns;
  /**
   * The tunnel's own processes (the router, the userspace tunnel daemon) on hosts[0] and on
   * hosts[1], by pid; their CPU during the TCP test is reported. Absent for kernel tunnels.
   */
  processes?: readonly [readonly number[], readonly number[]];
}

/** TunnelScenario is one row of the tunnel table: how to set up the tunnel it measures. */
export interface TunnelScenario {
  /** Short stable key for selecting rows (`--rows raw,weft-sleeve`), e.g. `'vxlan'`. */
  id: string;
  /** Row name in the table, e.g. `'kernel vxlan'`. */
  name: string;
  /** false: measured on a lossless underlay only, not at the lossy levels. Default true. */
  lossy?: boolean;
  /**
   * setup builds a tunnel between hosts[0] and hosts[1] of topo and resolves when it is configured
   * (not necessarily handshaken: the measurement pings until the first reply). On failure it removes
   * what it built before rejecting.
   */
  setup(topo: Lab, opts: TunnelSetupOptions): Promise<TunnelSetup>;
}

/** TunnelResult is one measured row. Numbers are NaN where a measurement failed (see `error`). */
export interface TunnelResult {
  /** The scenario's {@link TunnelScenario.id}. */
  id: string;
  name: string;
  /** Frames the underlay switch dropped per 1000 during the row (0: lossless). */
  lossPermille: number;
  /** Single-stream TCP throughput at the receiver, Gbit/s. */
  tcpGbps: number;
  /** TCP segments the sender retransmitted during the TCP test. */
  tcpRetransmits?: number;
  /** 64-byte UDP datagrams the receiver got per second with an unlimited sender. */
  udpPps?: number;
  /** Mean ping RTT over the tunnel, ms. */
  pingAvgMs: number;
  /** Median ping RTT over the tunnel, ms. */
  pingMedianMs?: number;
  /** tcpGbps / raw veth tcpGbps of the same run and loss (NaN when unknown). */
  ratioTcp: number;
  /** Echo requests without a reply, of those sent (reported, not an error, on a lossy underlay). */
  pingLost?: number;
  /**
   * IP fragments made (FragCreates) and reassembly requests (ReasmReqds) in the host namespaces and
   * routers, from just before the setup to just before the teardown.
   */
  fragments?: IpFragments;
  /** CPU of the tunnel's processes during the TCP test, % of one core, [hosts[0], hosts[1]]. */
  cpuPercent?: [number, number];
  /** tcpGbps divided by the cores both hosts' tunnel processes used together during the TCP test. */
  gbpsPerCore?: number;
  /** Frames the switch's loss rule dropped during the row. */
  framesDropped?: number;
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
  /** The frame loss the topology is set to, per mille (recorded in each result). Default 0. */
  lossPermille?: number;
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

function pair(topo: Lab): [Host, Host] {
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

/**
 * fittedMtu is the tunnel device MTU for a tunnel whose encapsulation adds `overheadBytes`: the
 * overlay MTU, or less when that would not fit the hosts' own links (as wg-quick and nebula users
 * size it: a fragmented underlay is not how these tunnels are run). The hosts do not know a smaller
 * mid-path MTU; that is left to path MTU discovery.
 */
function fittedMtu(overheadBytes: number, opts: TunnelSetupOptions): { mtu: number; note: string } {
  const mtu = Math.min(opts.overlayMtu, opts.underlayMtu - overheadBytes);
  return {
    mtu,
    note: mtu < opts.overlayMtu ? `MTU ${mtu} (${opts.overlayMtu} + ${overheadBytes} B > ${opts.underlayMtu})` : '',
  };
}

function fitNote(overheadBytes: number, opts: TunnelSetupOptions): string {
  const outer = opts.overlayMtu + overheadBytes;
  if (outer > opts.underlayMtu) return `outer ${outer} B > underlay ${opts.underlayMtu}: fragmented`;
  if (opts.pathMtu !== undefined && outer > opts.pathMtu) return `outer ${outer} B > path MTU ${opts.pathMtu}`;
  return '';
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
export const rawVeth: TunnelScenario = {
  id: RAW_ID,
  name: RAW_VETH,
  async setup(topo, opts) {
    const [a, b] = pair(topo);
    const routed = opts.pathMtu === undefined ? '' : `, routed, path MTU ${opts.pathMtu}`;
    return {
      aIp: a.underlayIp,
      bIp: b.underlayIp,
      teardown: async () => {},
      note: `no tunnel, MTU ${opts.underlayMtu}${routed}`,
    };
  },
};

/** kernelVxlan is Linux's vxlan device, unicast to the peer (`remote`), on Weft's VXLAN port. */
export const kernelVxlan: TunnelScenario = {
  id: 'vxlan',
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
  id: 'socat',
  name: 'socat TUN/UDP',
  lossy: false,
  setup: (topo, opts) =>
    staged(async (defer) => {
      const [a, b] = pair(topo);
      const dev = a.ifname('sc');
      const ips = ['172.30.2.1', '172.30.2.2'] as const;
      const hosts = [a, b] as const;
      const pids: [number[], number[]] = [[], []];
      for (const [i, h] of hosts.entries()) {
        const peer = hosts[1 - i]!;
        const child = h.spawn('socat', [
          '-b',
          '65536',
          `UDP-DATAGRAM:${peer.underlayIp}:${SOCAT_UDP_PORT},bind=${h.underlayIp}:${SOCAT_UDP_PORT}`,
          `TUN:${ips[i]}/24,tun-name=${dev},tun-type=tun,iff-no-pi,iff-up`,
        ]);
        defer(() => stopProcess(child));
        if (child.pid !== undefined) pids[i]!.push(child.pid);
        await waitForLink(h, dev, child, 'socat');
        await h.ip('link', 'set', dev, 'mtu', String(opts.overlayMtu));
      }
      return {
        aIp: ips[0],
        bIp: ips[1],
        processes: pids,
        note: joinNotes('no encryption', fitNote(OVERHEAD_BYTES.socat, opts)),
      };
    }),
};

/** WireguardGoOptions pick the wireguard-go binary a {@link wireguardGoScenario} row runs. */
export interface WireguardGoOptions {
  id: string;
  name: string;
  /** The binary's path, or a function that finds (or fetches) it; a rejection becomes the row's error. */
  binary: string | (() => Promise<string>);
  /** Added to the row's note (version, offloads). */
  note?: string;
}

/**
 * wireguardGoScenario is userspace WireGuard: the given wireguard-go binary, configured with `wg`
 * from wireguard-tools, the same way for every binary (so rows differ only in the daemon).
 */
export function wireguardGoScenario(wg: WireguardGoOptions): TunnelScenario {
  return {
    id: wg.id,
    name: wg.name,
    setup: (topo, opts) =>
      staged(async (defer) => {
        const [a, b] = pair(topo);
        const binary = typeof wg.binary === 'string' ? wg.binary : await wg.binary();
        const version = await a.exec(binary, ['--version'], { allowFail: true });
        if (version.code !== 0) {
          const ldd = await a.exec('ldd', [binary], { allowFail: true });
          throw new Error(
            `${binary} does not run here (exit ${version.code}: ${(version.stderr || version.stdout).trim()}); ldd: ${(ldd.stdout + ldd.stderr).trim().replace(/\s+/g, ' ')}`,
          );
        }
        const dir = await mkdtemp(join(tmpdir(), `${a.ifname('wg')}-`));
        defer(() => rm(dir, { recursive: true, force: true }));
        const fit = fittedMtu(OVERHEAD_BYTES.wireguard, opts);
        const ips = ['172.30.3.1', '172.30.3.2'] as const;
        const hosts = [a, b] as const;
        const pids: [number[], number[]] = [[], []];
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
          const child = h.spawn(binary, ['-f', dev], {
            env: { WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1' },
          });
          defer(() => rm(`/var/run/wireguard/${dev}.sock`, { force: true }));
          defer(() => stopProcess(child));
          if (child.pid !== undefined) pids[i]!.push(child.pid);
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
          await h.ip('link', 'set', dev, 'mtu', String(fit.mtu), 'up');
        }
        // wireguard-go ≥ 0.0.20230223 opens its TUN with virtio-net headers and then offers TSO on it.
        const features = await a.exec('ethtool', ['-k', devs[0]!], { allowFail: true });
        const tso = /^tcp-segmentation-offload: (on|off)/m.exec(features.stdout)?.[1];
        return {
          aIp: ips[0],
          bIp: ips[1],
          processes: pids,
          note: joinNotes(
            'ChaCha20-Poly1305',
            wg.note ?? '',
            tso ? `TUN TSO ${tso}` : '',
            fit.note,
            fitNote(OVERHEAD_BYTES.wireguard, { ...opts, overlayMtu: fit.mtu }),
          ),
        };
      }),
  };
}

/** wireguardGo is bookworm's wireguard-go, the Debian package installed on this machine. */
const wireguardGo = wireguardGoScenario({
  id: 'wireguard-go',
  name: 'wireguard-go',
  binary: '/usr/bin/wireguard-go',
  note: 'bookworm 0.0.20220316',
});

const here = path.dirname(fileURLToPath(import.meta.url));
/** REPO_ROOT is the repository root, from source (bench/) or compiled (dist/bench/). */
const REPO_ROOT = path.basename(path.dirname(here)) === 'dist' ? path.resolve(here, '../..') : path.resolve(here, '..');
let trixieBinary: Promise<string> | undefined;

/**
 * fetchWireguardGoTrixie runs scripts/fetch-wireguard-go-trixie.sh once per process (it downloads
 * trixie's package with a private apt setup, or reuses what it unpacked before) and resolves to the
 * binary's path; rejects with the script's one-line reason.
 */
export function fetchWireguardGoTrixie(): Promise<string> {
  trixieBinary ??= promisify(execFile)('sh', [join(REPO_ROOT, 'scripts/fetch-wireguard-go-trixie.sh')], {
    timeout: 120_000,
  }).then(
    ({ stdout }) => stdout.trim().split('\n').at(-1) ?? '',
    (err: { stderr?: string; message: string }) => {
      trixieBinary = undefined;
      throw new Error(`trixie wireguard-go unavailable: ${(err.stderr ?? '').trim() || err.message}`);
    },
  );
  return trixieBinary;
}

/**
 * wireguardGoTrixie is Debian trixie's wireguard-go 0.0.20231211 (the current upstream release,
 * with TUN offloads and UDP GSO/GRO), run beside bookworm's; fetched, not installed.
 */
const wireguardGoTrixie = wireguardGoScenario({
  id: 'wireguard-go-trixie',
  name: 'wireguard-go (trixie)',
  binary: fetchWireguardGoTrixie,
  note: 'trixie 0.0.20231211, TUN + UDP offloads',
});

/** nebula is Slack's nebula with a throwaway CA, no lighthouse, and a static host map. */
const nebula: TunnelScenario = {
  id: 'nebula',
  name: 'nebula',
  setup: (topo, opts) =>
    staged(async (defer) => {
      const [a, b] = pair(topo);
      const dir = await mkdtemp(join(tmpdir(), `${a.ifname('nb')}-`));
      defer(() => rm(dir, { recursive: true, force: true }));
      const fit = fittedMtu(OVERHEAD_BYTES.nebula, opts);
      const ips = ['172.30.4.1', '172.30.4.2'] as const;
      const hosts = [a, b] as const;
      const pids: [number[], number[]] = [[], []];
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
            `tun: { disabled: false, dev: "${dev}", mtu: ${fit.mtu}, drop_local_broadcast: false, drop_multicast: false }`,
            'logging: { level: warning, format: text }',
            'firewall:',
            '  outbound: [{ port: any, proto: any, host: any }]',
            '  inbound: [{ port: any, proto: any, host: any }]',
            '',
          ].join('\n'),
        );
        const child = h.spawn('nebula', ['-config', config]);
        defer(() => stopProcess(child));
        if (child.pid !== undefined) pids[i]!.push(child.pid);
        await waitForLink(h, dev, child, 'nebula');
      }
      return {
        aIp: ips[0],
        bIp: ips[1],
        processes: pids,
        note: joinNotes('AES-256-GCM', fit.note, fitNote(OVERHEAD_BYTES.nebula, { ...opts, overlayMtu: fit.mtu })),
      };
    }),
};

/**
 * baselineScenarios are the rows every tunnel table starts with, in order: raw veth (the ratio
 * reference), kernel vxlan, socat TUN-over-UDP, wireguard-go (bookworm's, and trixie's current
 * release), nebula. Needs `socat`, `wireguard-go`, `wireguard-tools` (`wg`) and `nebula` (Debian
 * packages) plus `iperf3`, `iputils-ping`, `ethtool` and `nftables`; the trixie row fetches its binary.
 */
export const baselineScenarios: TunnelScenario[] = [
  rawVeth,
  kernelVxlan,
  socatTun,
  wireguardGo,
  wireguardGoTrixie,
  nebula,
];

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

/** underlayNamespaces are where underlay fragments are counted: every host and router of `topo`. */
function underlayNamespaces(topo: Lab): Netns[] {
  return [...topo.hosts, ...topo.routers];
}

let clockTicks: Promise<number> | undefined;

/** ticksPerSecond is `getconf CLK_TCK` (the unit of /proc/<pid>/stat times), 100 when it cannot run. */
function ticksPerSecond(): Promise<number> {
  clockTicks ??= promisify(execFile)('getconf', ['CLK_TCK']).then(
    ({ stdout }) => Number(stdout.trim()) || 100,
    () => 100,
  );
  return clockTicks;
}

/**
 * measureScenario sets up `scenario` between hosts[0] and hosts[1], pings until the tunnel answers
 * (handshakes), then measures from the setup's client (hosts[0] unless it says otherwise) to its
 * server: one TCP stream for `seconds` (iperf3) while sampling the CPU of the tunnel's processes,
 * 64-byte UDP datagrams with an unlimited sender for `udpSeconds` (received packets/s at the
 * receiver), and 20 pings 50 ms apart (mean and median RTT). The IP fragmentation counters of every
 * host and router are read before the setup and before the teardown. Each measurement that fails
 * leaves NaN and adds to `error` (lost pings are an error only on a lossless underlay); this
 * function never rejects, and it always tears the scenario down.
 */
export async function measureScenario(
  topo: Lab,
  scenario: TunnelScenario,
  opts: MeasureOptions,
): Promise<TunnelResult> {
  const log = opts.log ?? (() => {});
  const lossPermille = opts.lossPermille ?? 0;
  const result: TunnelResult = {
    id: scenario.id,
    name: scenario.name,
    lossPermille,
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
  const counted = underlayNamespaces(topo);
  let fragsBefore: IpFragments | undefined;
  let droppedBefore = 0;
  try {
    const [a, b] = pair(topo);
    fragsBefore = await readIpFragments(counted);
    droppedBefore = await topo.droppedFrames();
    log(`${scenario.name}: setup`);
    setup = await scenario.setup(topo, {
      overlayMtu: opts.overlayMtu,
      underlayMtu: opts.underlayMtu,
      pathMtu: opts.pathMtu,
    });
    result.note = setup.note;
    const { bIp, processes } = setup;
    const client = setup.client ?? a;
    const serverNs = setup.server ?? b;
    await waitUntil(async () => (await client.ping(bIp, { count: 1, timeoutMs: 1_000 })).received === 1, {
      timeoutMs: 15_000,
      intervalMs: 100,
      what: `a ping reply from ${bIp} over ${scenario.name}`,
    });
    let server = await serverNs.iperf3Server(IPERF3_PORT);
    try {
      await attempt('tcp', async () => {
        const ticks = processes ? await Promise.all(processes.map((pids) => readCpuTicks(pids))) : undefined;
        const started = performance.now();
        const tcp = await client.iperf3Client(bIp, { seconds: opts.seconds ?? 5, port: IPERF3_PORT });
        const wallMs = performance.now() - started;
        result.tcpGbps = tcp.bitsPerSecond / 1e9;
        result.tcpRetransmits = tcp.retransmits;
        if (processes && ticks) {
          const hz = await ticksPerSecond();
          const after = await Promise.all(processes.map((pids) => readCpuTicks(pids)));
          const pct = after.map((t, i) => cpuPercent(t - ticks[i]!, wallMs, hz)) as [number, number];
          result.cpuPercent = pct;
          const cores = (pct[0] + pct[1]) / 100;
          if (cores > 0) result.gbpsPerCore = result.tcpGbps / cores;
        }
      });
      await attempt('udp', async () => {
        const udp = () =>
          client.iperf3Client(bIp, {
            seconds: opts.udpSeconds ?? 3,
            port: IPERF3_PORT,
            udp: true,
            length: 64,
            bitrate: '0',
          });
        try {
          result.udpPps = (await udp()).receivedPps;
        } catch (err) {
          // iperf3's end-of-test exchange on its control connection now and then never completes
          // under loss with a flooding sender; once more, with a fresh server.
          log(`${scenario.name}: udp again (${message(err).slice(0, 80)})`);
          await server.stop();
          server = await serverNs.iperf3Server(IPERF3_PORT);
          result.udpPps = (await udp()).receivedPps;
        }
      });
    } finally {
      await server.stop();
    }
    await attempt('ping', async () => {
      const p = await client.ping(bIp, { count: 20, intervalS: 0.05 });
      if (p.received === 0) throw new Error(`no reply from ${bIp} (${p.transmitted} sent)`);
      result.pingAvgMs = p.rttAvgMs;
      result.pingMedianMs = median(p.rttsMs);
      result.pingLost = p.transmitted - p.received;
      if (p.received < p.transmitted && lossPermille === 0) {
        errors.push(`ping: ${p.transmitted - p.received}/${p.transmitted} lost`);
      }
    });
  } catch (err) {
    errors.push(message(err));
  } finally {
    if (fragsBefore) {
      try {
        const after = await readIpFragments(counted);
        result.fragments = {
          created: after.created - fragsBefore.created,
          reassembly: after.reassembly - fragsBefore.reassembly,
        };
        if (lossPermille > 0) result.framesDropped = (await topo.droppedFrames()) - droppedBefore;
      } catch (err) {
        errors.push(`counters: ${message(err)}`);
      }
    }
    if (setup) await setup.teardown().catch((err: unknown) => errors.push(`teardown: ${message(err)}`));
  }
  if (opts.rawTcpGbps !== undefined && opts.rawTcpGbps > 0) result.ratioTcp = result.tcpGbps / opts.rawTcpGbps;
  if (errors.length > 0) result.error = errors.join('; ');
  return result;
}

/**
 * measureScenarios runs {@link measureScenario} for each scenario in order on one topology and fills
 * `ratioTcp` against the {@link RAW_ID} row (measured first when present). Never rejects for a
 * failing scenario; its row carries the `error`.
 */
export async function measureScenarios(
  topo: Lab,
  scenarios: readonly TunnelScenario[],
  opts: MeasureOptions,
): Promise<TunnelResult[]> {
  const ordered = [...scenarios].sort((x, y) => Number(y.id === RAW_ID) - Number(x.id === RAW_ID));
  const results: TunnelResult[] = [];
  let raw = opts.rawTcpGbps;
  for (const scenario of ordered) {
    const r = await measureScenario(topo, scenario, { ...opts, rawTcpGbps: raw });
    if (scenario.id === RAW_ID && Number.isFinite(r.tcpGbps)) {
      raw = r.tcpGbps;
      r.ratioTcp = 1;
    }
    results.push(r);
  }
  return results;
}

/** LossLevelOptions add the loss levels to {@link MeasureOptions}. */
export interface LossLevelOptions extends Omit<MeasureOptions, 'lossPermille' | 'rawTcpGbps'> {
  /** Frame loss levels in per mille, measured in this order, e.g. `[0, 2, 10]` (0, 0.2 %, 1 %). */
  lossPermille: readonly number[];
}

/**
 * measureLossLevels measures `scenarios` once per loss level on one topology: for a level above 0
 * it turns the underlay's offloads off (so that each dropped frame is one wire-sized packet, for
 * every tunnel alike) and has the switch drop that share of frames; scenarios with `lossy: false`
 * are measured at level 0 only. Level 0 keeps the offloads as they are. Restores a lossless
 * underlay with offloads on when done, also on failure. Ratios are to raw veth of the same level.
 */
export async function measureLossLevels(
  topo: Lab,
  scenarios: readonly TunnelScenario[],
  opts: LossLevelOptions,
): Promise<TunnelResult[]> {
  const results: TunnelResult[] = [];
  try {
    for (const loss of opts.lossPermille) {
      const rows = scenarios.filter((sc) => loss === 0 || sc.lossy !== false);
      if (rows.length === 0) continue;
      await topo.setUnderlayOffloads(loss === 0);
      await topo.setFrameLoss(loss);
      const log = opts.log;
      results.push(
        ...(await measureScenarios(topo, rows, {
          ...opts,
          lossPermille: loss,
          log: log && ((line) => log(loss === 0 ? line : `loss ${formatLoss(loss)}: ${line}`)),
        })),
      );
    }
  } finally {
    await topo.setFrameLoss(0);
    await topo.setUnderlayOffloads(true);
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
  /** Heading instead of `Tunnels, underlay MTU …` (the date and machine follow it). */
  title?: string;
}

function fmt(value: number | undefined, digits: number): string {
  return value === undefined || !Number.isFinite(value) ? '—' : value.toFixed(digits);
}

function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/** formatLoss renders a per-mille frame loss as a percentage: 0 → `0`, 2 → `0.2 %`, 10 → `1 %`. */
export function formatLoss(permille: number): string {
  return permille === 0 ? '0' : `${Number((permille / 10).toFixed(2))} %`;
}

/**
 * renderTable renders results as a markdown table, one row per scenario and loss level: the loss,
 * TCP Gbit/s and its ratio to the raw veth row of the same loss, TCP retransmits, 64-byte UDP kpps
 * at the receiver, ping mean and median, the RTT a tunnel adds over raw veth (median, µs), the IP
 * fragments made/reassembled on the underlay, the tunnel processes' CPU on each host (% of one
 * core) with Gbit/s per core, and notes/errors. Ratios are recomputed from the raw veth rows when
 * they are among `results`.
 */
export function renderTable(results: readonly TunnelResult[], meta: TableMeta): string {
  const rawOf = (r: TunnelResult) => results.find((x) => x.id === RAW_ID && x.lossPermille === r.lossPermille);
  const lines = [
    `${meta.title ?? `Tunnels, underlay MTU ${meta.underlayMtu}, overlay MTU ${meta.overlayMtu}`} — ${meta.date}, ${meta.machine}`,
    '',
    '| tunnel | loss | TCP Gbit/s | × raw veth | TCP retr | UDP 64 B kpps (rx) | ping avg ms | ping median ms | + RTT µs | IP frags made/reasm | CPU % A / B | Gbit/s per core | note |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  ];
  for (const r of results) {
    const raw = rawOf(r);
    const ratio = raw && Number.isFinite(raw.tcpGbps) && raw.tcpGbps > 0 ? r.tcpGbps / raw.tcpGbps : r.ratioTcp;
    const added =
      raw && r !== raw && raw.pingMedianMs !== undefined && r.pingMedianMs !== undefined
        ? (r.pingMedianMs - raw.pingMedianMs) * 1000
        : undefined;
    const frags = r.fragments ? `${r.fragments.created}/${r.fragments.reassembly}` : '—';
    const cpu = r.cpuPercent ? `${fmt(r.cpuPercent[0], 0)} / ${fmt(r.cpuPercent[1], 0)}` : '—';
    const lossNotes =
      r.lossPermille > 0
        ? [
            r.framesDropped !== undefined ? `${r.framesDropped} frames dropped` : '',
            r.pingLost ? `${r.pingLost}/20 pings lost` : '',
          ]
        : [];
    const note = [r.note ?? '', ...lossNotes, r.error ? `error: ${r.error}` : ''].filter((t) => t !== '').join('; ');
    lines.push(
      `| ${cell(r.name)} | ${formatLoss(r.lossPermille)} | ${fmt(r.tcpGbps, 2)} | ${fmt(ratio, 3)} | ${r.tcpRetransmits ?? '—'} | ` +
        `${fmt(r.udpPps === undefined ? undefined : r.udpPps / 1000, 0)} | ${fmt(r.pingAvgMs, 3)} | ${fmt(r.pingMedianMs, 3)} | ` +
        `${r === raw ? '0' : fmt(added, 0)} | ${frags} | ${cpu} | ${fmt(r.gbpsPerCore, 2)} | ${cell(note)} |`,
    );
  }
  return lines.join('\n');
}
