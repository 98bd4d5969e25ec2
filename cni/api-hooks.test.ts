import { mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WeftError } from '../common/errors.js';
import { noopLogger } from '../common/log.js';
import { type Cidr, parseCidr } from '../common/types.js';
import type { AttachAt, AttachedContainer, Attacher } from '../control/attach.js';
import type { DnsService } from '../control/dns.js';
import { createApi } from '../control/http.js';
import { createMetrics } from '../control/metrics.js';
import { StateFile } from '../control/state.js';
import { MemoryMesh } from '../router/testing/memory-router.js';
import { RouterRefused, SocketRouterApi } from './router-api.js';

/** FakeAttacher records what the API asked of it. */
class FakeAttacher {
  calls: { target: string; cidrs: readonly Cidr[]; name: string | undefined; at: AttachAt | undefined }[] = [];
  held = new Map<string, AttachedContainer>();
  async attach(target: string, cidrs: readonly Cidr[], name?: string, at?: AttachAt): Promise<AttachedContainer> {
    this.calls.push({ target, cidrs, name, at });
    const a: AttachedContainer = {
      target,
      ifname: 'vw0123abcd',
      cidrs: ['10.32.0.5/12'],
      mac: '02:00:00:00:00:05',
      ...(at === undefined ? {} : { netns: at.netns, containerIfname: at.ifname }),
    };
    this.held.set(target, a);
    return a;
  }
  async gateway(): Promise<Cidr> {
    return parseCidr('10.32.0.1/12');
  }
  async detach(target: string): Promise<AttachedContainer> {
    const a = this.held.get(target);
    if (a === undefined) throw new WeftError('EWEFT_NOT_FOUND', `${target} is not attached`);
    this.held.delete(target);
    return a;
  }
  list(): AttachedContainer[] {
    return [...this.held.values()];
  }
  async refreshRoutes(): Promise<void> {}
}

/**
 * The API hooks the CNI plugin uses (control/http.ts POST /attach with netns/ifname/defaultRoute,
 * its answer's mtu/gateway/dns), reached through the plugin's own client over a real unix socket.
 */
describe('HTTP API hooks for the CNI plugin', () => {
  let mesh: MemoryMesh;
  let server: Server;
  let dir: string;
  let attacher: FakeAttacher;
  let api: SocketRouterApi;

  beforeEach(async () => {
    mesh = new MemoryMesh();
    const { router } = await mesh.add();
    attacher = new FakeAttacher();
    dir = mkdtempSync(path.join(tmpdir(), 'weft-cni-api-'));
    server = createApi(
      {
        router,
        attacher: attacher as unknown as Attacher,
        dns: { address: '10.32.0.1', domain: 'weft.local' } as unknown as DnsService,
        metrics: createMetrics(router),
        log: noopLogger,
        onStop: () => undefined,
      },
      { transport: 'unix' },
    );
    const sock = path.join(dir, 'weft.sock');
    await new Promise<void>((r) => server.listen(sock, r));
    api = new SocketRouterApi(sock);
  });

  afterEach(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await mesh.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('attaches by netns path and answers the record with the MTU, gateway and DNS', async () => {
    const reply = await api.attach({
      target: 'net:c1:eth0',
      netns: '/run/netns/x',
      ifname: 'eth0',
      defaultRoute: true,
      name: 'web',
    });
    expect(attacher.calls).toEqual([
      {
        target: 'net:c1:eth0',
        cidrs: [],
        name: 'web',
        at: { netns: '/run/netns/x', ifname: 'eth0', defaultRoute: true },
      },
    ]);
    expect(reply).toMatchObject({
      target: 'net:c1:eth0',
      netns: '/run/netns/x',
      containerIfname: 'eth0',
      gateway: '10.32.0.1',
      dns: { nameservers: ['10.32.0.1'], search: ['weft.local'] },
    });
    expect(reply.mtu).toBeGreaterThan(1000);
    expect(await api.list()).toMatchObject([{ target: 'net:c1:eth0' }]);
  });

  it('leaves the answer of an attach by target as it was', async () => {
    const r = await fetchOverSocket(api, { target: 'web' });
    expect(r).not.toHaveProperty('gateway');
    expect(attacher.calls[0]?.at).toBeUndefined();
  });

  it.each([
    [{ target: 'k', netns: 5, ifname: 'eth0' }, /"netns" must be/],
    [{ target: 'k', netns: '/run/netns/x' }, /"ifname"/],
    [{ target: 'k', netns: '/run/netns/x', ifname: 'eth0', defaultRoute: 'yes' }, /"defaultRoute"/],
  ])('refuses a malformed attach by path with 400: %j', async (body, msg) => {
    const err = await fetchOverSocket(api, body).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RouterRefused);
    expect(err).toMatchObject({ status: 400, code: 'EWEFT_INPUT' });
    expect((err as Error).message).toMatch(msg);
  });

  it('detach says whether there was an attachment (404 EWEFT_NOT_FOUND is "already gone")', async () => {
    await api.attach({ target: 'net:c1:eth0', netns: '/run/netns/x', ifname: 'eth0', defaultRoute: false });
    expect(await api.detach('net:c1:eth0')).toBe(true);
    expect(await api.detach('net:c1:eth0')).toBe(false);
  });
});

/** fetchOverSocket posts a raw /attach body through the client's transport (for bodies the typed API cannot make). */
function fetchOverSocket(api: SocketRouterApi, body: unknown): Promise<unknown> {
  return (api as unknown as { call(m: string, p: string, b: unknown, t: number): Promise<unknown> }).call(
    'POST',
    '/attach',
    body,
    5_000,
  );
}

describe('state.json keeps attachments made by path', () => {
  it('round-trips an owner key longer than a name, the netns path and the interface name inside', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'weft-cni-state-'));
    try {
      const f = new StateFile(dir);
      const target = `weftnet:${'a'.repeat(64)}:eth0`;
      const a: AttachedContainer = {
        target,
        ifname: 'vw0123abcd',
        cidrs: ['10.32.0.5/12'],
        netns: '/var/run/netns/cni-6d1f2a3b-1111-2222-3333-444455556666',
        containerIfname: 'eth0',
      };
      f.save({ targets: [], exposed: [], attached: [a] });
      expect(f.load().attached).toEqual([a]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
