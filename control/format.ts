import type { RouterStatus } from '../router/index.js';
import type { AttacherStatus } from './attach.js';
import type { DockerStatus } from './docker.js';
import type { EgressStatus } from './egress.js';
import type { StateDirStatus } from './state.js';

/** StateStatus is `state` in status: whether the state directory takes writes, and attaches refused for it. */
export type StateStatus = StateDirStatus & { attach: AttacherStatus };
/**
 * ApiStatus is `api` in status: where the HTTP API listens over TCP (`host:port`) and whether that
 * is a loopback address (reads need no token there); `weft ui` builds the page's URL from it.
 */
export interface ApiStatus {
  http: string;
  loopback: boolean;
}
/** StatusView is what `GET /status` shows: the router's status, the daemon's state directory and its API. */
export type StatusView = RouterStatus & {
  state?: StateStatus;
  docker?: DockerStatus;
  egress?: EgressStatus;
  api?: ApiStatus;
};

/** ConnectionView is the shape of one entry of RouterStatus.connections. */
interface ConnectionView {
  peer?: string;
  nickname?: string;
  remoteAddr?: string;
  outbound?: boolean;
  state?: string;
  since?: number | string;
  encrypted?: boolean;
  cipher?: string;
}

/** TargetView is the shape of one entry of RouterStatus.targets. */
interface TargetView {
  address?: string;
  state?: string;
  lastError?: string;
  nextRetryAt?: number | string;
  attempts?: number;
  peer?: string;
}

/** formatStatus renders the human summary of `weft status`. */
export function formatStatus(s: StatusView): string {
  const conns = s.connections as ConnectionView[];
  const established = conns.filter((c) => c.state === 'established').length;
  const rows: [string, string][] = [
    ['Version', s.version],
    ['Name', `${s.name} (${s.nickname})`],
    [
      'Encapsulation',
      `${s.encap} (control TCP ${s.port}, sleeve UDP ${s.sleevePort}, VXLAN UDP ${s.vxlanPort} VNI ${s.vni})`,
    ],
    ...(s.fastdp === undefined
      ? []
      : [
          [
            'Fast path',
            `${s.fastdp.device} ${s.fastdp.up ? 'up' : `off${s.fastdp.reason === undefined ? '' : ` (${s.fastdp.reason})`}`}`,
          ] as [string, string],
        ]),
    ['Device', `${s.device} (mtu ${s.mtu}, ${s.datapath} datapath${s.offload ? ', TCP segmentation offload' : ''})`],
    ['UDP offload', udpOffloadText(s.udpOffload)],
    ...(s.kernelDrops === undefined
      ? []
      : [
          [
            'Kernel drops',
            `${s.kernelDrops.rcvbufErrors} UDP receive-buffer overflows in this namespace (${Object.entries(
              s.kernelDrops.sockets,
            )
              .map(([k, v]) => `${k} ${v}`)
              .join(', ')})`,
          ] as [string, string],
        ]),
    [
      'Encryption',
      s.encryption
        ? `enabled${s.cipher === undefined ? '' : ` (${s.cipher})`}${s.trustedSubnets === undefined ? '' : `, data unencrypted with trusted subnets ${s.trustedSubnets.join(',')}`}`
        : 'disabled',
    ],
    ['Range', s.ipallocRange],
    ['IPAM', ipamLine(s)],
    ['Exposed', s.exposed.length > 0 ? s.exposed.join(', ') : 'none'],
    ...(s.state === undefined ? [] : [['State', stateLine(s.state)] as [string, string]]),
    ['Docker', dockerLine(s.docker)],
    ...(s.egress === undefined
      ? []
      : [
          [
            'Egress',
            `masquerade ${s.egress.masquerade} beyond the overlay (nftables table ${s.egress.table}${s.egress.installed ? '' : ', NOT installed: see the log'})`,
          ] as [string, string],
        ]),
    ['Targets', String(s.targets.length)],
    ['Connections', `${conns.length} (${established} established)`],
    [
      'Peers',
      `${s.peers.length + 1} (${s.peers.filter((p) => p.state === 'established').length} direct, ${s.peers.filter((p) => p.state === 'relayed').length} relayed)`,
    ],
    [
      'Traffic',
      `tx ${s.counters.tunRxPackets} pkts ${bytes(s.counters.tunRxBytes)}, rx ${s.counters.tunTxPackets} pkts ${bytes(s.counters.tunTxBytes)}, dropped ${totalDrops(s)}`,
    ],
  ];
  if (!s.ready) rows.unshift(['Status', 'starting']);
  const w = Math.max(...rows.map(([k]) => k.length));
  return `${rows.map(([k, v]) => `${k.padStart(w + 4)}: ${v}`).join('\n')}\n`;
}

/**
 * dockerLine is the `Docker` line: which engine socket, and whether its events are followed, and
 * the network plugin's socket when it is on; `off` when the router runs with `--docker-socket none`
 * (no Docker integration at all, as for podman or CNI hosts).
 */
export function dockerLine(d: DockerStatus | undefined): string {
  if (d === undefined) return 'off (--docker-socket none)';
  const engine =
    d.state === 'not found'
      ? `not found at ${d.socket}`
      : `connected to ${d.socket} (${d.events ? 'events' : 'no events'})`;
  const p = d.plugin;
  if (p === undefined) return engine;
  const plugin = p.listening
    ? `network plugin on ${p.socket} (${p.endpoints} endpoints)`
    : `network plugin not listening on ${p.socket}${p.lastError === undefined ? '' : `: ${p.lastError}`}`;
  return `${engine}; ${plugin}`;
}

/** formatPeers renders `weft status peers`: ourselves, then every connected peer. */
export function formatPeers(s: RouterStatus): string {
  const lines = [`${s.name}(${s.nickname})  this router  ${s.exposed.join(' ')}`.trimEnd()];
  const names = new Map(s.peers.map((p) => [p.name, p.nickname]));
  for (const p of s.peers) {
    const how =
      p.state === 'relayed'
        ? `relayed via ${p.via}(${names.get(p.via ?? '') ?? '?'})${p.dataEndToEnd === true ? ' encrypted end to end' : p.dataEncrypted === true ? ' encrypted' : ''}${p.reason ? ` (${p.reason})` : ''}`
        : p.state === 'unreachable'
          ? 'unreachable'
          : `${p.addr}  ${p.encap}${p.dataEncrypted === true ? ' encrypted' : p.dataTrusted === true ? ' unencrypted (trusted subnet)' : ''}${p.encapReason === undefined ? '' : ` (${p.encapReason})`}  ${p.state}${p.reason ? ` (${p.reason})` : ''}${p.rttMs === undefined ? '' : `  rtt=${p.rttMs.toFixed(2)}ms`}${pmtuText(p.pmtu)}`;
    lines.push(
      `${p.name}(${p.nickname})  ${how}  ${p.cidrs.join(' ')}`.trimEnd(),
      `   ${p.connections} connections  tx ${p.txPackets} pkts ${bytes(p.txBytes)}  rx ${p.rxPackets} pkts ${bytes(p.rxBytes)}`,
    );
  }
  for (const v of s.vxlanPeerPaths ?? []) lines.push(vxlanPeerLine(v));
  return `${lines.join('\n')}\n`;
}

/** VXLAN_PEER_LIST_MAX bounds the addresses a `weft status peers` line lists (the JSON has them all). */
const VXLAN_PEER_LIST_MAX = 4;

/**
 * vxlanPeerLine is a bare kernel vxlan host's line in `weft status peers`: how it is reached and
 * the addresses seen behind it.
 *
 * ```
 * 192.168.1.12  kernel vxlan host  fastdp (weft-vx floods to it; routed 10.32.0.0/13 10.40.0.0/14)  seen 10.32.0.9
 * 192.168.1.12  kernel vxlan host  vxlan (the router's VXLAN socket)  seen 10.32.0.9
 * 192.168.1.12  kernel vxlan host  unreachable (fastdp off: encrypted)
 * ```
 */
export function vxlanPeerLine(v: NonNullable<RouterStatus['vxlanPeerPaths']>[number]): string {
  const list = (xs: readonly string[]) =>
    xs.length <= VXLAN_PEER_LIST_MAX
      ? xs.join(' ')
      : `${xs.slice(0, VXLAN_PEER_LIST_MAX).join(' ')} …(+${xs.length - VXLAN_PEER_LIST_MAX})`;
  const how =
    v.via === 'fastdp'
      ? `fastdp (weft-vx floods to it${v.routed === undefined || v.routed.length === 0 ? '' : `; routed ${list(v.routed)}`})`
      : v.via === 'vxlan'
        ? "vxlan (the router's VXLAN socket)"
        : `unreachable${v.reason === undefined ? '' : ` (${v.reason})`}`;
  return `${v.addr}  kernel vxlan host  ${how}${v.seen.length === 0 ? '' : `  seen ${list(v.seen)}`}`;
}

/** udpOffloadText says how datagram trains leave and arrive: UDP GSO / GRO, or one datagram per entry. */
function udpOffloadText(u: RouterStatus['udpOffload'] | undefined): string {
  if (u === undefined) return 'unknown';
  const gso = u.gso ? 'GSO (one send per segment train)' : `no GSO${u.reason ? ` (${u.reason})` : ''}`;
  return `${gso}, ${u.gro ? 'GRO (coalesced receive)' : 'no GRO'}`;
}

/** pmtuText shows a peer's path MTU: `pmtu=1400`, with "(probing)" until it is confirmed. */
function pmtuText(m: RouterStatus['peers'][number]['pmtu']): string {
  if (m === undefined) return '';
  return `  pmtu=${m.pmtu}${m.state === 'confirmed' ? '' : ' (probing)'}`;
}

/** formatConnections renders `weft status connections`, one line per connection. */
export function formatConnections(s: RouterStatus): string {
  const peers = new Map(s.peers.map((p) => [p.name, p]));
  const lines = (s.connections as ConnectionView[]).map((c) => {
    const dir = c.outbound ? '->' : '<-';
    const p = c.peer === undefined ? undefined : peers.get(c.peer);
    const overlay = p === undefined ? '' : `  ${p.encap}  mtu=${p.mtu}`;
    const who = c.peer === undefined ? '' : `  ${c.peer}(${c.nickname ?? ''})`;
    const enc = c.encrypted === undefined ? '' : c.encrypted ? `  encrypted(${c.cipher ?? '?'})` : '  unencrypted';
    return `${dir} ${c.remoteAddr ?? '?'}  ${c.state ?? '?'}${overlay}${who}${enc}`;
  });
  for (const t of s.targets as TargetView[]) {
    if (t.state === 'established') continue;
    const next = t.nextRetryAt === undefined ? '' : `, next retry ${new Date(t.nextRetryAt).toISOString()}`;
    lines.push(`-> ${t.address ?? '?'}  ${t.state ?? '?'}${t.lastError ? ` (${t.lastError}${next})` : next}`);
  }
  return lines.length === 0 ? 'no connections\n' : `${lines.join('\n')}\n`;
}

/**
 * formatTargets renders `weft status targets`, one target per line: its address, its state, the
 * peer it led to, and for one that is not established how many attempts, the last error and when
 * the next retry starts (relative to `now`, ms since the epoch), or that it was given up.
 *
 * ```
 * 192.168.1.10:6783  established  peer 62:8e:01:02:03:04
 * 192.168.1.12:6783  failed  3 attempts  last error: connect ECONNREFUSED 192.168.1.12:6783  next retry in 4.2 s
 * 192.168.1.11:6783  failed  1 attempt  last error: cannot connect to ourselves  not retried
 * ```
 */
export function formatTargets(s: RouterStatus, now: number = Date.now()): string {
  const t = s.targets as TargetView[];
  if (t.length === 0) return 'no targets\n';
  const lines = t.map((x) => {
    const parts = [x.address ?? '?', x.state ?? '?'];
    if (x.peer !== undefined) parts.push(`peer ${x.peer}`);
    if (x.state !== 'established') {
      if (x.attempts !== undefined && x.attempts > 0) parts.push(`${x.attempts} attempt${x.attempts === 1 ? '' : 's'}`);
      if (x.lastError !== undefined) parts.push(`last error: ${x.lastError}`);
      if (x.nextRetryAt !== undefined) parts.push(`next retry ${retryIn(x.nextRetryAt, now)}`);
      else if (x.state === 'failed') parts.push('not retried');
    }
    return parts.join('  ');
  });
  return `${lines.join('\n')}\n`;
}

/** retryIn says when a retry at `at` starts: "in 4.2 s", or "now" when it is due. */
function retryIn(at: number | string, now: number): string {
  const ms = (typeof at === 'number' ? at : Date.parse(at)) - now;
  if (!Number.isFinite(ms)) return String(at);
  return ms <= 0 ? 'now' : `in ${(ms / 1000).toFixed(1)} s`;
}

/** formatIpam renders `weft status ipam`: the state, then each owner's share of the range. */
export function formatIpam(s: RouterStatus): string {
  const i = s.ipam;
  const lines = [`${ipamLine(s)}  range ${i.range}  init ${i.init}`];
  for (const p of i.peers) {
    const pct = ((100 * p.owned) / i.size).toFixed(1);
    const who = `${p.name}(${p.nickname ?? (p.self ? s.nickname : '?')})`;
    const extra = p.self
      ? `  (${i.used} used)`
      : p.reachable
        ? ''
        : '  - unreachable! use `weft rmpeer` if it is gone for good';
    lines.push(`${who}  ${p.owned} IPs (${pct}% of total)  ${p.free} free${extra}`);
  }
  for (const p of i.pending) lines.push(`waiting: ${p.owner} for ${(p.sinceMs / 1000).toFixed(1)} s: ${p.reason}`);
  for (const c of i.conflicts) lines.push(`conflict: ${c}`);
  return `${lines.join('\n')}\n`;
}

/** formatDns renders `weft status dns`: where it listens, upstreams, then every name. */
export function formatDns(d: {
  domain: string;
  listening: string | undefined;
  ttl: number;
  upstreams: string[];
  entries: { name: string; addr: string; owner: string; origin: string }[];
}): string {
  const lines = [
    `Domain: ${d.domain}  TTL: ${d.ttl} s  Listening: ${d.listening ?? 'no (this host has no overlay address yet)'}`,
    `Upstream: ${d.upstreams.length > 0 ? d.upstreams.join(' ') : 'none (other names are refused)'}`,
  ];
  for (const e of [...d.entries].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    lines.push(`${e.name}  ${e.addr}  ${e.owner}  ${e.origin}`);
  }
  return `${lines.join('\n')}\n`;
}

function ipamLine(s: RouterStatus): string {
  const i = s.ipam;
  if (i.state === 'awaiting-seed') return `awaiting a seeded ring: ${i.message ?? ''}`;
  const unreachable = i.unreachableOwned > 0 ? `, ${i.unreachableOwned} IPs owned by unreachable peers` : '';
  const waiting = i.state === 'waiting-for-space' ? `, waiting for space: ${i.message ?? ''}` : '';
  return `ready: ${i.owned} IPs owned here, ${i.used} in use${unreachable}${waiting}`;
}

function totalDrops(s: RouterStatus): number {
  return Object.values(s.counters.drops).reduce((a, b) => a + b, 0);
}

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

/** stateLine says where state is kept and, when writes fail, that the directory is failing and why. */
function stateLine(st: StateStatus): string {
  if (!st.failing) return `${st.dir}${st.errors > 0 ? ` (${st.errors} failed writes earlier)` : ''}`;
  const refused = st.attach.persistErrors > 0 ? `, ${st.attach.persistErrors} attaches/names refused` : '';
  return `FAILING: ${st.lastError ?? st.dir} (${st.errors} failed writes${refused})`;
}
