import { mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Host, Lab, requireRoot, waitUntil } from '../lab/netns.js';
import { chromiumMissing, launchBrowserIn } from './browser.js';
import { cutUnderlay, expose, launch, removeStateDirs, stateDir, status, waitPeers, weft } from './weft.js';

const reason = requireRoot() ?? chromiumMissing();
if (reason !== undefined && requireRoot() === undefined) console.warn(`ui e2e: skipping: ${reason}`);

/** LIVE_MS: the page polls once a second, so a change the CLI sees must be on the page within 2 s. */
const LIVE_MS = 2_000;
const URL = 'http://127.0.0.1:6784/ui';

/**
 * The web page of h1's router in a three-host mesh, in a real headless Chromium inside h1's
 * network namespace: it loads without console errors and shows the same peers, states and links
 * as `weft status`; it shows a cut link (h2 relayed via h3) and a newly attached container within
 * 2 s of the CLI seeing them; it says when the router is gone and comes back by itself when it is
 * relaunched; it fits a phone's width. A screenshot of each state goes to the directory printed.
 */
describe.skipIf(reason)('the web page of the mesh (GET /ui) in a browser', () => {
  let topo: Lab;
  let hosts: Host[];
  let browser: Browser | undefined;
  let page: Page;
  let shots: string;
  /** errors are the page's console errors and uncaught exceptions. */
  const errors: string[] = [];
  const names = new Map<string, string>();

  const shot = async (name: string): Promise<void> => {
    await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
  };
  const rowOf = (nick: string) => page.locator(`#peers tbody tr[data-peer="${names.get(nick)}"]`);

  beforeAll(async () => {
    topo = await Lab.create({ hosts: 3 });
    hosts = topo.hosts;
    for (const [i, h] of hosts.entries()) {
      const prev = hosts[i - 1];
      names.set(
        `h${h.index}`,
        await launch(h, prev === undefined ? [] : [prev.underlayIp], ['--nickname', `h${h.index}`]),
      );
      await expose(h);
    }
    for (const h of hosts) await waitPeers(h, 2, 30_000);
    shots = path.join(tmpdir(), 'weft-e2e-artefacts', `ui-${topo.prefix}`);
    mkdirSync(shots, { recursive: true });
    console.info(`ui e2e: screenshots in ${shots}`);
    browser = await launchBrowserIn(hosts[0] as Host, shots);
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(`console: ${m.text()}`);
    });
    page.on('pageerror', (e) => errors.push(`uncaught: ${e.message}`));
  });

  afterAll(async () => {
    await browser?.close();
    await topo?.destroy();
    if (topo) removeStateDirs(topo);
  });

  it('loads without errors and shows the three peers and their links as `weft status` does', async () => {
    const res = await page.goto(URL);
    expect(res?.status()).toBe(200);
    expect(res?.headers()['content-security-policy']).toMatch(/default-src 'none'/);
    await page.locator('#connection.live').waitFor({ timeout: 10_000 });
    await waitUntil(async () => (await page.locator('#graph .link').count()) === 3, {
      timeoutMs: 10_000,
      what: 'the graph to show the 3 links of a full mesh',
    });
    expect(await page.locator('#graph .node').count()).toBe(3);
    expect(await page.locator('#graph .node.self .nick').textContent()).toBe('h1');
    expect(await page.locator('#peers tbody tr').count()).toBe(3);
    // The page and the CLI read one API: every peer's state is the same in both.
    const cli = await status(hosts[0] as Host);
    for (const p of cli.peers) {
      const row = page.locator(`#peers tbody tr[data-peer="${p.name}"]`);
      expect(await row.getAttribute('data-state')).toBe(p.state);
      expect(await row.textContent()).toContain(p.nickname);
    }
    expect(await page.locator('#graph .link.established').count()).toBe(3);
    // Every link of h1 is labelled with its data path (the fast path once proven, sleeve until then) and RTT; shares of the ring, one per host.
    const labels = await page.locator('#graph .link.local text').allTextContents();
    expect(labels).toHaveLength(2);
    for (const l of labels) expect(l).toMatch(/^(sleeve|fastdp) [\d.]+ ms$/);
    expect(await page.locator('#ring tbody tr').count()).toBe(3);
    expect(await page.locator('#counters li').count()).toBe(5);
    await shot('1-mesh');
    expect(errors).toEqual([]);
  });

  it('shows a cut link within 2 s of the CLI: h2 relayed via h3', async () => {
    const [h1, h2] = hosts as [Host, Host];
    const heal = await cutUnderlay(h1, h2.underlayIp, 'weftuicut');
    try {
      await waitUntil(async () => (await status(h1)).peers.some((p) => p.nickname === 'h2' && p.state === 'relayed'), {
        timeoutMs: 30_000,
        what: 'h1 to reach h2 through a relay',
      });
      await rowOf('h2').and(page.locator('[data-state="relayed"]')).waitFor({ timeout: LIVE_MS });
      expect(await rowOf('h2').textContent()).toContain('relayed via h3');
      expect(await page.locator(`#graph .node.relayed[data-peer="${names.get('h2')}"] .state`).textContent()).toBe(
        'relayed via h3',
      );
      await shot('2-h2-relayed');
      expect(errors).toEqual([]);
    } finally {
      await heal();
    }
    await waitUntil(async () => (await rowOf('h2').getAttribute('data-state')) === 'established', {
      timeoutMs: 30_000,
      what: 'the page to show h2 direct again once the cut is healed',
    });
  });

  it('lists a container within 2 s of its attach, and finds it by search', async () => {
    const c = await topo.addNamespace('c1');
    const addr = (await weft(hosts[0] as Host, ['attach', c.name, '--name', 'web'])).stdout.trim();
    const row = page.locator(`#containers tbody tr[data-target="${c.name}"]`);
    await row.waitFor({ timeout: LIVE_MS });
    expect(await row.textContent()).toContain(addr);
    await page.locator('#names tbody tr[data-name="web.weft.local"]').waitFor({ timeout: LIVE_MS });
    await page.locator('#search').fill('web');
    expect(await page.locator('#names tbody tr[data-name]').count()).toBe(1);
    expect(await page.locator('#containers tbody tr[data-target]').count()).toBe(1);
    await page.locator('#search').fill('no-such-name');
    expect(await page.locator('#containers tbody tr[data-target]').count()).toBe(0);
    await page.locator('#search').fill('');
    await shot('3-container-attached');
    expect(errors).toEqual([]);
  });

  it('says when the router is gone and comes back by itself when it is relaunched', async () => {
    const h1 = hosts[0] as Host;
    await weft(h1, ['stop']);
    await page.locator('#connection.down').waitFor({ timeout: 10_000 });
    expect(await page.locator('#connection').textContent()).toMatch(/not connected.*retrying/);
    await shot('4-router-stopped');
    await launch(h1, [], ['--nickname', 'h1']);
    await page.locator('#connection.live').waitFor({ timeout: 20_000 });
    await waitUntil(async () => (await page.locator('#graph .node').count()) === 3, {
      timeoutMs: 30_000,
      what: 'the page to show the 3 peers again after the restart',
    });
    // While the router was away its requests failed (the browser logs each); nothing else went wrong.
    expect(errors.filter((e) => !/Failed to load resource|ERR_CONNECTION_REFUSED|Failed to fetch/.test(e))).toEqual([]);
    errors.length = 0;
  });

  it('beyond loopback (--http-addr): the page asks for the token, then works with it from #token=', async () => {
    const h1 = hosts[0] as Host;
    await page.goto('about:blank');
    await weft(h1, ['stop']);
    const addr = `${h1.underlayIp}:6785`;
    await launch(h1, [], ['--nickname', 'h1', '--http-addr', addr]);
    errors.length = 0;
    await page.goto(`http://${addr}/ui`);
    await page.locator('#connection.auth').waitFor({ timeout: 10_000 });
    expect(await page.locator('#token').isVisible()).toBe(true);
    expect(await page.locator('#graph .node').count()).toBe(0);
    const token = readFileSync(path.join(stateDir(h1), 'api-token'), 'utf8').trim();
    await page.goto(`http://${addr}/ui#token=${token}`);
    await page.locator('#connection.live').waitFor({ timeout: 10_000 });
    // The token left the address bar (and the history) at once; the page keeps it for this tab.
    expect(page.url()).toBe(`http://${addr}/ui`);
    expect(await page.locator('#token').isVisible()).toBe(false);
    await waitUntil(async () => (await page.locator('#graph .node').count()) === 3, {
      timeoutMs: 30_000,
      what: 'the page beyond loopback to show the 3 peers',
    });
    // The first load's 401s are logged by the browser; nothing else went wrong.
    expect(errors.filter((e) => !/Failed to load resource.*401/.test(e))).toEqual([]);
    errors.length = 0;
  });

  it('fits a phone: one column, nothing wider than the screen', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.locator('#connection.live').waitFor({ timeout: 5_000 });
    const overflow = await page.evaluate<number>('document.documentElement.scrollWidth - window.innerWidth');
    expect(overflow).toBeLessThanOrEqual(0);
    await shot('5-phone');
    expect(errors).toEqual([]);
  });
});
