/**
 * model turns what the page reads from the documented status API (`GET /status`, `GET /ps`,
 * `GET /status/dns`, all JSON) into what it draws: the mesh as nodes and links, the IPAM ring as
 * shares, the containers and names as rows, the counters as rates. Plain data in, plain data out,
 * no DOM and no imports, so it runs in the browser (compiled to dist/control/ui/model.js) and in
 * unit tests alike.
 *
 * Every input is `unknown`: a router of another version, a partial answer or garbage gives a
 * smaller picture and a line in `problems`, never an exception.
 */

/** LinkState is how a connection is drawn: its data path is proven, being proven, or failed. */
export type LinkState = 'established' | 'pending' | 'failed';

/** NodeState is a peer as this router sees it; 'self' is this host. */
export type NodeState = 'self' | LinkState | 'relayed' | 'unreachable';

/** MeshNode is one peer of the graph. */
export interface MeshNode {
  name: string;
  nickname: string;
  state: NodeState;
  /** via is the nickname (or name) of the peer traffic to a relayed peer goes through. */
  via?: string;
  /** encap is the data path: sleeve, vxlan or fastdp (the kernel weft-vx; relayed peers: sleeve through the hop). */
  encap?: string;
  encrypted: boolean;
  rttMs?: number;
  addr?: string;
  reason?: string;
  /** label is the one line said about the peer besides its name, e.g. `relayed via h3`. */
  label: string;
}

/** MeshLink is one control connection between two peers (`a` < `b` by name). */
export interface MeshLink {
  a: string;
  b: string;
  state: LinkState;
  /** label names the data path and RTT for a link of this host, else the state. */
  label: string;
  /** local: one end is this host (so its data path and RTT are known). */
  local: boolean;
}

/** MeshView is the graph of the mesh as this router knows it. */
export interface MeshView {
  self: { name: string; nickname: string; version: string; uptimeSeconds: number };
  nodes: MeshNode[];
  links: MeshLink[];
  problems: string[];
}

/** RingShare is one peer's share of the address range. */
export interface RingShare {
  name: string;
  label: string;
  self: boolean;
  owned: number;
  free: number;
  used: number;
  /** fraction is `owned` over the range's size (0..1). */
  fraction: number;
  reachable: boolean;
  /** hint says what to do about an unreachable owner. */
  hint?: string;
}

/** RingView is the IPAM ring. */
export interface RingView {
  range: string;
  size: number;
  state: string;
  message?: string;
  shares: RingShare[];
  unreachableOwned: number;
  problems: string[];
}

/** ContainerRow is one attached container of this host. */
export interface ContainerRow {
  target: string;
  names: string[];
  addrs: string[];
  mac: string;
}

/** NameRow is one DNS name of the cluster. */
export interface NameRow {
  name: string;
  addr: string;
  owner: string;
  origin: string;
}

/** COUNTERS are the counters the page plots, in order: what each is and how to read it. */
export const COUNTERS = [
  { key: 'sentBytes', label: 'sent to the overlay', unit: 'B/s' },
  { key: 'receivedBytes', label: 'received from the overlay', unit: 'B/s' },
  { key: 'relayed', label: 'datagrams relayed for other peers', unit: '/s' },
  { key: 'drops', label: 'packets dropped', unit: '/s' },
  { key: 'dnsQueries', label: 'DNS queries', unit: '/s' },
] as const;

/** CounterKey names one plotted counter. */
export type CounterKey = (typeof COUNTERS)[number]['key'];

/** CounterTotals are the plotted counters' running totals at one moment, plus drops by reason. */
export interface CounterTotals {
  values: Record<CounterKey, number>;
  drops: Record<string, number>;
}

/** RMPEER_HINT says what to do about space owned by a peer that is gone for good. */
export function rmpeerHint(name: string): string {
  return `unreachable: if it is gone for good, run \`weft rmpeer ${name}\` on a live host to take its space back`;
}

// ---- small readers of unknown JSON ----

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

function count(v: unknown): number {
  const n = num(v);
  return n !== undefined && n >= 0 ? n : 0;
}

function list(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

function strings(v: unknown): string[] {
  return list(v).filter((x): x is string => typeof x === 'string');
}

const LINK_STATES: readonly string[] = ['established', 'pending', 'failed'];
const PEER_STATES: readonly string[] = [...LINK_STATES, 'relayed', 'unreachable'];

/** formatRtt prints a round trip in ms with sensible precision. */
export function formatRtt(ms: number): string {
  return ms < 10 ? `${ms.toFixed(2)} ms` : `${Math.round(ms)} ms`;
}

/** formatRate prints a per-second rate with a unit, binary prefixes for bytes. */
export function formatRate(v: number, unit: string): string {
  if (unit === 'B/s') {
    const units = ['B/s', 'KiB/s', 'MiB/s', 'GiB/s'];
    let i = 0;
    let x = v;
    while (x >= 1024 && i < units.length - 1) {
      x /= 1024;
      i++;
    }
    return `${x < 10 && i > 0 ? x.toFixed(1) : Math.round(x)} ${units[i]}`;
  }
  const n = v < 10 && v !== Math.round(v) ? v.toFixed(1) : String(Math.round(v));
  return unit.startsWith('/') ? `${n}${unit}` : `${n} ${unit}`;
}

// ---- the mesh ----

/**
 * meshView reads the graph from `GET /status`: this host, every peer of `peers` (with its state,
 * data path, RTT and relay), every link of this host (from the peers' states) and every link
 * between two other peers (from their `neighbours`), each once.
 */
export function meshView(status: unknown): MeshView {
  const problems: string[] = [];
  const s = isObj(status) ? status : {};
  if (!isObj(status)) problems.push('the status is not a JSON object');
  const selfName = str(s.name) ?? '';
  if (selfName === '' && isObj(status)) problems.push('the status names no router');
  const self = {
    name: selfName,
    nickname: str(s.nickname) ?? selfName,
    version: str(s.version) ?? '?',
    uptimeSeconds: count(s.uptimeSeconds),
  };
  const nodes: MeshNode[] = [
    { name: selfName, nickname: self.nickname, state: 'self', encrypted: false, label: 'this host' },
  ];
  const nickOf = new Map<string, string>([[selfName, self.nickname]]);
  const neighbours = new Map<string, { name: string; established: boolean }[]>();
  let skipped = 0;
  const raw = list(s.peers);
  if (s.peers !== undefined && !Array.isArray(s.peers)) problems.push('"peers" is not a list');
  for (const p of raw) {
    const name = isObj(p) ? str(p.name) : undefined;
    if (!isObj(p) || name === undefined || name === '' || nickOf.has(name)) {
      skipped++;
      continue;
    }
    const state = str(p.state);
    nickOf.set(name, str(p.nickname) ?? name);
    nodes.push({
      name,
      nickname: str(p.nickname) ?? name,
      state: state !== undefined && PEER_STATES.includes(state) ? (state as NodeState) : 'unreachable',
      ...(str(p.via) !== undefined && { via: str(p.via) }),
      ...(str(p.encap) !== undefined && { encap: str(p.encap) }),
      encrypted: p.dataEncrypted === true,
      ...(num(p.rttMs) !== undefined && { rttMs: num(p.rttMs) }),
      ...(str(p.addr) !== undefined && str(p.addr) !== '' && { addr: str(p.addr) }),
      ...(str(p.reason) !== undefined && { reason: str(p.reason) }),
      label: '',
    });
    neighbours.set(
      name,
      list(p.neighbours).flatMap((n) => {
        const nn = isObj(n) ? str(n.name) : undefined;
        return nn === undefined ? [] : [{ name: nn, established: isObj(n) && n.established === true }];
      }),
    );
  }
  if (skipped > 0) problems.push(`${skipped} peer entr${skipped === 1 ? 'y' : 'ies'} without a usable name skipped`);
  for (const n of nodes) {
    if (n.via !== undefined) n.via = nickOf.get(n.via) ?? n.via;
    n.label = nodeLabel(n);
  }

  const links = new Map<string, MeshLink>();
  const key = (x: string, y: string): [string, string, string] => {
    const [a, b] = x < y ? [x, y] : [y, x];
    return [a, b, `${a} ${b}`];
  };
  for (const n of nodes) {
    if (n.state !== 'established' && n.state !== 'pending' && n.state !== 'failed') continue;
    const [a, b, k] = key(selfName, n.name);
    links.set(k, { a, b, state: n.state, label: linkLabel(n), local: true });
  }
  for (const [name, ns] of neighbours) {
    for (const m of ns) {
      if (m.name === selfName || m.name === name || !nickOf.has(m.name)) continue;
      const [a, b, k] = key(name, m.name);
      const had = links.get(k);
      // Both ends report the link: proven if either says so (the other may not have heard yet).
      const state: LinkState = m.established || had?.state === 'established' ? 'established' : 'pending';
      links.set(k, { a, b, state, label: state, local: false });
    }
  }
  return { self, nodes, links: [...links.values()], problems };
}

function nodeLabel(n: MeshNode): string {
  switch (n.state) {
    case 'self':
      return 'this host';
    case 'relayed':
      return `relayed via ${n.via ?? '?'}`;
    case 'unreachable':
      return 'unreachable';
    default:
      return `direct, ${n.state}`;
  }
}

function linkLabel(n: MeshNode): string {
  const path = `${n.encap ?? '?'}${n.encrypted ? ' encrypted' : ''}`;
  if (n.state === 'failed') return `${path} failed`;
  if (n.state === 'pending') return `${path} pending`;
  return n.rttMs === undefined ? path : `${path} ${formatRtt(n.rttMs)}`;
}

/**
 * layoutCircle places this host at the top of a circle and the other peers clockwise by nickname,
 * in a `width` × `height` box with `margin` kept free for labels. Deterministic: the same peers
 * always land in the same places, so the picture does not jump between updates.
 */
export function layoutCircle(
  nodes: readonly MeshNode[],
  width: number,
  height: number,
  margin: number,
): Map<string, { x: number; y: number }> {
  const at = new Map<string, { x: number; y: number }>();
  const cx = width / 2;
  const cy = height / 2;
  const r = Math.max(0, Math.min(width, height) / 2 - margin);
  const self = nodes.filter((n) => n.state === 'self');
  const others = nodes
    .filter((n) => n.state !== 'self')
    .sort((x, y) => (x.nickname === y.nickname ? cmp(x.name, y.name) : cmp(x.nickname, y.nickname)));
  const order = [...self, ...others];
  if (order.length === 1) {
    at.set((order[0] as MeshNode).name, { x: cx, y: cy });
    return at;
  }
  order.forEach((n, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / order.length;
    at.set(n.name, { x: round1(cx + r * Math.cos(a)), y: round1(cy + r * Math.sin(a)) });
  });
  return at;
}

function cmp(x: string, y: string): number {
  return x < y ? -1 : x > y ? 1 : 0;
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

// ---- the IPAM ring ----

/** ringView reads each peer's share of the range from `GET /status` (`ipam`). */
export function ringView(status: unknown): RingView {
  const problems: string[] = [];
  const ipam = isObj(status) && isObj(status.ipam) ? status.ipam : undefined;
  if (ipam === undefined) {
    problems.push('the status has no IPAM ring');
    return { range: '', size: 0, state: 'unknown', shares: [], unreachableOwned: 0, problems };
  }
  const size = count(ipam.size);
  const selfNick = isObj(status) ? str(status.nickname) : undefined;
  const shares: RingShare[] = [];
  for (const p of list(ipam.peers)) {
    const name = isObj(p) ? str(p.name) : undefined;
    if (!isObj(p) || name === undefined) {
      problems.push('a share without an owner skipped');
      continue;
    }
    const owned = count(p.owned);
    const free = Math.min(count(p.free), owned);
    const reachable = p.reachable === true || p.self === true;
    shares.push({
      name,
      label: str(p.nickname) ?? (p.self === true ? selfNick : undefined) ?? name,
      self: p.self === true,
      owned,
      free,
      used: owned - free,
      fraction: size > 0 ? Math.min(1, owned / size) : 0,
      reachable,
      ...(!reachable && { hint: rmpeerHint(name) }),
    });
  }
  const message = str(ipam.message);
  return {
    range: str(ipam.range) ?? '',
    size,
    state: str(ipam.state) ?? 'unknown',
    ...(message !== undefined && { message }),
    shares,
    unreachableOwned: count(ipam.unreachableOwned),
    problems,
  };
}

// ---- containers and names ----

/** containerRows reads `GET /ps`: this host's attached containers. */
export function containerRows(ps: unknown): ContainerRow[] {
  return list(ps).flatMap((c) => {
    const target = isObj(c) ? str(c.target) : undefined;
    if (!isObj(c) || target === undefined) return [];
    const names = strings(c.names);
    const first = str(c.name);
    if (first !== undefined && !names.includes(first)) names.unshift(first);
    return [{ target, names, addrs: strings(c.cidrs), mac: str(c.mac) ?? '' }];
  });
}

/** nameRows reads `GET /status/dns`: every DNS name of the cluster, sorted by name then address. */
export function nameRows(dns: unknown): NameRow[] {
  const entries = isObj(dns) ? list(dns.entries) : [];
  return entries
    .flatMap((e) => {
      const name = isObj(e) ? str(e.name) : undefined;
      const addr = isObj(e) ? str(e.addr) : undefined;
      if (!isObj(e) || name === undefined || addr === undefined) return [];
      return [{ name, addr, owner: str(e.owner) ?? '', origin: str(e.origin) ?? '' }];
    })
    .sort((x, y) => cmp(x.name, y.name) || cmp(x.addr, y.addr));
}

/** matches: a row whose cells contain `query` (any case), or every row for an empty query. */
export function matches(cells: readonly string[], query: string): boolean {
  const q = query.trim().toLowerCase();
  return q === '' || cells.some((c) => c.toLowerCase().includes(q));
}

// ---- counters ----

/** counterTotals reads the plotted counters from `GET /status` (and DNS queries from `GET /status/dns`). */
export function counterTotals(status: unknown, dns: unknown): CounterTotals {
  const c = isObj(status) && isObj(status.counters) ? status.counters : {};
  const drops: Record<string, number> = {};
  let dropped = 0;
  if (isObj(c.drops)) {
    for (const [k, v] of Object.entries(c.drops)) {
      const n = count(v);
      drops[k] = n;
      dropped += n;
    }
  }
  const server = isObj(dns) && isObj(dns.server) ? dns.server : {};
  let queries = 0;
  if (isObj(server.queries)) for (const v of Object.values(server.queries)) queries += count(v);
  return {
    values: {
      sentBytes: count(c.tunRxBytes),
      receivedBytes: count(c.tunTxBytes),
      relayed: count(c.relayed),
      drops: dropped,
      dnsQueries: queries,
    },
    drops,
  };
}

/**
 * rates turns two readings `dtMs` apart into per-second rates; a counter that went down (the
 * router restarted) counts from zero again rather than going negative.
 */
export function rates(prev: CounterTotals, cur: CounterTotals, dtMs: number): Record<CounterKey, number> {
  const out = {} as Record<CounterKey, number>;
  for (const { key } of COUNTERS) {
    const d = cur.values[key] - prev.values[key];
    const delta = d >= 0 ? d : cur.values[key];
    out[key] = dtMs > 0 ? (delta * 1000) / dtMs : 0;
  }
  return out;
}

/** SERIES_LENGTH is how many samples a sparkline keeps (one a second: the last minute). */
export const SERIES_LENGTH = 60;

/** pushSample appends `v` to `series`, keeping the last SERIES_LENGTH samples. */
export function pushSample(series: number[], v: number): void {
  series.push(v);
  if (series.length > SERIES_LENGTH) series.splice(0, series.length - SERIES_LENGTH);
}

/**
 * sparkline returns the `points` of an SVG polyline drawing `series` in a `width` × `height`
 * box, the newest sample at the right edge and the largest at the top (a flat zero line at the
 * bottom when all are zero).
 */
export function sparkline(series: readonly number[], width: number, height: number): string {
  if (series.length === 0) return '';
  const max = Math.max(...series);
  const step = width / (SERIES_LENGTH - 1);
  const x0 = width - step * (series.length - 1);
  return series
    .map((v, i) => `${round1(x0 + step * i)},${round1(max > 0 ? height - (v / max) * height : height)}`)
    .join(' ');
}
