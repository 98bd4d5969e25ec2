/**
 * app is the script of the web page `GET /ui` serves: once a second it reads the documented
 * status API (`GET /status`, `GET /ps`, `GET /status/dns`, JSON) of the router that served it and
 * redraws the mesh, the address range, the counters, and the containers and names. When the
 * router does not answer (restarting, stopped) it says so and keeps asking; the next answer
 * brings the picture back. Beyond loopback every request needs the bearer token: the page takes
 * it from the URL's fragment (`/ui#token=...`, which no browser sends to a server) or from the
 * field it shows on a 401, keeps it in this tab's session storage and sends it as
 * `Authorization: Bearer`.
 *
 * Everything drawn is built with DOM calls (no innerHTML, no inline style: the page's CSP allows
 * neither), and every state has a word next to its colour.
 */
import {
  COUNTERS,
  type ContainerRow,
  type CounterKey,
  type CounterTotals,
  containerRows,
  counterTotals,
  formatRate,
  formatRtt,
  layoutCircle,
  type MeshView,
  matches,
  meshView,
  type NameRow,
  nameRows,
  pushSample,
  type RingView,
  rates,
  ringView,
  sparkline,
} from './model.js';

/** POLL_MS is how often the page reads the status. */
const POLL_MS = 1_000;
/** FETCH_TIMEOUT_MS: a read that takes longer counts as the router not answering. */
const FETCH_TIMEOUT_MS = 3_000;
/** TOKEN_KEY is where this tab keeps the bearer token. */
const TOKEN_KEY = 'weft-api-token';
const SVG = 'http://www.w3.org/2000/svg';
const GRAPH_W = 540;
const GRAPH_H = 380;
const SPARK_W = 120;
const SPARK_H = 24;

interface Answer {
  status: number;
  json: unknown;
}

const series = new Map<CounterKey, number[]>(COUNTERS.map((c) => [c.key, []]));
let lastTotals: { at: number; totals: CounterTotals } | undefined;
let downSince: Date | undefined;
let containers: ContainerRow[] = [];
let names: NameRow[] = [];

function byId<T extends Element = HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (e === null) throw new Error(`the page has no #${id}`);
  return e as unknown as T;
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  text?: string,
  attrs: Record<string, string> = {},
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function svg(tag: string, attrs: Record<string, string | number> = {}, text?: string): SVGElement {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function row(cells: readonly string[], attrs: Record<string, string> = {}): HTMLTableRowElement {
  const tr = el('tr', undefined, attrs);
  for (const c of cells) tr.append(el('td', c));
  return tr;
}

// ---- the token ----

function takeTokenFromUrl(): void {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m?.[1] === undefined) return;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
  byId('token').hidden = true;
  // Out of the address bar and the history: the token stays in this tab's storage only.
  history.replaceState(null, '', location.pathname + location.search);
}

function showTokenBox(why: string): void {
  const box = byId('token');
  box.hidden = false;
  byId('token-why').textContent = why;
}

function setupTokenBox(): void {
  const input = byId<HTMLInputElement>('token-input');
  const use = (): void => {
    const t = input.value.trim();
    if (t === '') return;
    sessionStorage.setItem(TOKEN_KEY, t);
    input.value = '';
    byId('token').hidden = true;
  };
  byId('token-use').addEventListener('click', use);
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') use();
  });
}

// ---- reading the API ----

async function get(path: string): Promise<Answer> {
  const headers: Record<string, string> = { accept: 'application/json' };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token !== null) headers.authorization = `Bearer ${token}`;
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
  try {
    const r = await fetch(path, { headers, signal: ctl.signal, cache: 'no-store', credentials: 'omit' });
    const json: unknown = await r.json().catch(() => undefined);
    return { status: r.status, json };
  } finally {
    clearTimeout(timer);
  }
}

function errorOf(a: Answer): string {
  const e = (a.json as { error?: unknown } | undefined)?.error;
  return typeof e === 'string' ? e : `HTTP ${a.status}`;
}

function setConnection(state: 'live' | 'down' | 'auth' | 'starting', text: string): void {
  const c = byId('connection');
  c.className = `connection ${state}`;
  c.textContent = text;
  // What is drawn is the last answer: faded while it may be out of date.
  document.body.classList.toggle('stale', state !== 'live');
}

async function tick(): Promise<void> {
  try {
    const [st, ps, dns] = await Promise.all([get('/status'), get('/ps'), get('/status/dns')]);
    if (st.status === 401) {
      setConnection('auth', `the router wants its bearer token: ${errorOf(st)}`);
      showTokenBox(errorOf(st));
      return;
    }
    if (st.status === 503) {
      setConnection('starting', `the router is starting (${errorOf(st)})`);
      return;
    }
    if (st.status !== 200) throw new Error(errorOf(st));
    downSince = undefined;
    byId('token').hidden = true;
    render(st.json, ps.status === 200 ? ps.json : [], dns.status === 200 ? dns.json : undefined);
    setConnection('live', `live: updated ${new Date().toLocaleTimeString()}`);
  } catch (err) {
    downSince ??= new Date();
    const why = err instanceof Error && err.name !== 'AbortError' ? ` (${err.message})` : '';
    setConnection(
      'down',
      `not connected: the router has not answered since ${downSince.toLocaleTimeString()}${why}; retrying every second`,
    );
  } finally {
    setTimeout(() => void tick(), POLL_MS);
  }
}

// ---- drawing ----

function render(status: unknown, ps: unknown, dns: unknown): void {
  const mesh = meshView(status);
  const ring = ringView(status);
  renderSelf(mesh);
  renderGraph(mesh);
  renderPeers(mesh);
  renderRing(ring);
  renderCounters(counterTotals(status, dns));
  containers = containerRows(ps);
  const nick = new Map(mesh.nodes.map((n) => [n.name, n.nickname]));
  names = nameRows(dns).map((n) => ({ ...n, origin: nick.get(n.origin) ?? n.origin }));
  renderLists();
  const problems = [...mesh.problems, ...ring.problems];
  const p = byId('problems');
  p.replaceChildren(...problems.map((t) => el('li', t)));
  byId('problems-section').hidden = problems.length === 0;
}

function renderSelf(m: MeshView): void {
  byId('self').textContent =
    `${m.self.nickname} (${m.self.name}), weft ${m.self.version}, up ${uptime(m.self.uptimeSeconds)}`;
}

function uptime(s: number): string {
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 3600)} h`;
}

function renderGraph(m: MeshView): void {
  const g = byId<SVGSVGElement>('graph');
  const at = layoutCircle(m.nodes, GRAPH_W, GRAPH_H, 62);
  const nick = new Map(m.nodes.map((n) => [n.name, n.nickname]));
  const parts: SVGElement[] = [];
  for (const l of m.links) {
    const a = at.get(l.a);
    const b = at.get(l.b);
    if (a === undefined || b === undefined) continue;
    const link = svg('g', { class: `link ${l.state}${l.local ? ' local' : ''}`, 'data-link': `${l.a} ${l.b}` });
    link.append(svg('title', {}, `${nick.get(l.a)} – ${nick.get(l.b)}: ${l.label}`));
    link.append(svg('line', { x1: a.x, y1: a.y, x2: b.x, y2: b.y }));
    link.append(svg('text', { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 - 4, 'text-anchor': 'middle' }, l.label));
    parts.push(link);
  }
  for (const n of m.nodes) {
    const p = at.get(n.name);
    if (p === undefined) continue;
    const node = svg('g', { class: `node ${n.state}`, 'data-peer': n.name });
    node.append(svg('title', {}, `${n.nickname} (${n.name}): ${n.label}${n.reason ? `: ${n.reason}` : ''}`));
    if (n.state === 'self') node.append(svg('circle', { class: 'halo', cx: p.x, cy: p.y, r: 24 }));
    node.append(svg('circle', { cx: p.x, cy: p.y, r: 17 }));
    if (n.state === 'unreachable')
      node.append(svg('path', { class: 'cross', d: `M${p.x - 8},${p.y - 8}l16,16m0,-16l-16,16` }));
    node.append(svg('text', { class: 'nick', x: p.x, y: p.y + 40, 'text-anchor': 'middle' }, n.nickname));
    node.append(svg('text', { class: 'state', x: p.x, y: p.y + 56, 'text-anchor': 'middle' }, n.label));
    parts.push(node);
  }
  const title = g.querySelector('title');
  g.replaceChildren(...(title === null ? [] : [title]), ...parts);
  g.setAttribute('aria-label', `${m.nodes.length} peers, ${m.links.length} connections; the table below says the same`);
}

function renderPeers(m: MeshView): void {
  const body = byId('peers').querySelector('tbody') as HTMLTableSectionElement;
  body.replaceChildren(
    ...m.nodes.map((n) =>
      row(
        [
          `${n.nickname} (${n.name})`,
          n.label,
          n.state === 'self' ? '' : `${n.encap ?? ''}${n.encrypted ? ' encrypted' : ''}`,
          n.rttMs === undefined ? '' : formatRtt(n.rttMs),
          n.addr ?? '',
          n.reason ?? '',
        ],
        { 'data-peer': n.name, 'data-state': n.state, class: n.state },
      ),
    ),
  );
}

function renderRing(r: RingView): void {
  byId('ring-range').textContent =
    r.range === '' ? '' : `${r.range}: ${r.size} addresses, ${r.state}${r.message ? ` (${r.message})` : ''}`;
  const bar = byId<SVGSVGElement>('ring-bar');
  const parts: SVGElement[] = [];
  let x = 0;
  for (const s of r.shares) {
    const w = s.fraction * 1000;
    const seg = svg('g', { class: `share${s.self ? ' self' : ''}${s.reachable ? '' : ' unreachable'}` });
    seg.append(svg('title', {}, `${s.label}: ${s.owned} addresses (${pct(s.fraction)})`));
    seg.append(svg('rect', { x, y: 0, width: w, height: 30 }));
    seg.append(svg('rect', { class: 'used', x, y: 22, width: s.owned > 0 ? (w * s.used) / s.owned : 0, height: 8 }));
    parts.push(seg);
    x += w;
  }
  bar.replaceChildren(...parts);
  const body = byId('ring').querySelector('tbody') as HTMLTableSectionElement;
  body.replaceChildren(
    ...r.shares.map((s) => {
      const tr = row(
        [
          `${s.label}${s.self ? ' (this host)' : ''}`,
          `${s.owned} (${pct(s.fraction)})`,
          String(s.used),
          String(s.free),
          s.reachable ? 'reachable' : (s.hint ?? 'unreachable'),
        ],
        { 'data-peer': s.name, class: s.reachable ? '' : 'unreachable' },
      );
      return tr;
    }),
  );
  byId('ring-note').textContent =
    r.unreachableOwned > 0 ? `${r.unreachableOwned} addresses are owned by peers this router cannot reach.` : '';
}

function pct(f: number): string {
  return `${(f * 100).toFixed(f < 0.1 ? 1 : 0)}\u00a0%`;
}

function renderCounters(totals: CounterTotals): void {
  const now = Date.now();
  if (lastTotals !== undefined) {
    const r = rates(lastTotals.totals, totals, now - lastTotals.at);
    for (const { key } of COUNTERS) pushSample(series.get(key) as number[], r[key]);
  }
  lastTotals = { at: now, totals };
  const list = byId('counters');
  list.replaceChildren(
    ...COUNTERS.map((c) => {
      const s = series.get(c.key) as number[];
      const li = el('li', undefined, { 'data-counter': c.key });
      li.append(el('span', c.label, { class: 'what' }));
      li.append(el('span', s.length === 0 ? '…' : formatRate(s[s.length - 1] as number, c.unit), { class: 'rate' }));
      const spark = svg('svg', {
        class: 'spark',
        viewBox: `0 0 ${SPARK_W} ${SPARK_H}`,
        width: SPARK_W,
        height: SPARK_H,
        role: 'img',
        'aria-label': `${c.label} over the last minute`,
      });
      spark.append(svg('polyline', { points: sparkline(s, SPARK_W, SPARK_H) }));
      li.append(spark);
      li.append(el('span', `total ${Math.round(totals.values[c.key])}`, { class: 'total' }));
      return li;
    }),
  );
  const drops = Object.entries(totals.drops).filter(([, n]) => n > 0);
  const body = byId('drops').querySelector('tbody') as HTMLTableSectionElement;
  body.replaceChildren(
    ...(drops.length === 0 ? [row(['none', ''])] : drops.map(([reason, n]) => row([reason, String(n)]))),
  );
}

function renderLists(): void {
  const q = byId<HTMLInputElement>('search').value;
  const cs = containers.filter((c) => matches([c.target, ...c.names, ...c.addrs, c.mac], q));
  const cBody = byId('containers').querySelector('tbody') as HTMLTableSectionElement;
  cBody.replaceChildren(
    ...(cs.length === 0
      ? [row([containers.length === 0 ? 'no container attached to this host' : 'no match', '', '', ''])]
      : cs.map((c) => row([c.target, c.names.join(', '), c.addrs.join(', '), c.mac], { 'data-target': c.target }))),
  );
  const ns = names.filter((n) => matches([n.name, n.addr, n.origin], q));
  const nBody = byId('names').querySelector('tbody') as HTMLTableSectionElement;
  nBody.replaceChildren(
    ...(ns.length === 0
      ? [row([names.length === 0 ? 'no names' : 'no match', '', ''])]
      : ns.map((n) => row([n.name, n.addr, n.origin], { 'data-name': n.name }))),
  );
}

// ---- start ----

takeTokenFromUrl();
// A token pasted into the address bar of the open page changes only the fragment: no reload.
window.addEventListener('hashchange', takeTokenFromUrl);
setupTokenBox();
byId('search').addEventListener('input', renderLists);
void tick();
