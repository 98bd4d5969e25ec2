import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { CniCode } from './errors.js';
import type { NetnsInspector, NetnsView } from './netns-inspector.js';
import { type PluginDeps, runPlugin } from './plugin.js';
import {
  type AttachRecord,
  type AttachReply,
  type AttachRequest,
  type IpamSummary,
  type RouterApi,
  RouterDown,
  RouterRefused,
  SocketRouterApi,
} from './router-api.js';
import { errorSchema, resultSchema, versionSchema } from './spec-shapes.suite.js';

const NETNS = '/run/netns/cni-1234';
const KEY = 'weftnet:ctr1:eth0';

/** FakeRouter is a RouterApi holding attachments in memory; `fail` makes the next call reject. */
class FakeRouter implements RouterApi {
  records = new Map<string, AttachRecord>();
  attaches: AttachRequest[] = [];
  detaches: string[] = [];
  fail: Error | undefined;
  ipamState: IpamSummary = { state: 'ready', seeded: true, owned: 100, used: 3, peers: [] };
  failDetach = new Set<string>();

  private check(): void {
    const f = this.fail;
    this.fail = undefined;
    if (f !== undefined) throw f;
  }
  async attach(req: AttachRequest): Promise<AttachReply> {
    this.check();
    this.attaches.push(req);
    const rec: AttachRecord = {
      target: req.target,
      ifname: 'vw0123abcd',
      cidrs: ['10.32.0.5/12'],
      mac: '02:11:22:33:44:55',
      netns: req.netns,
      containerIfname: req.ifname,
    };
    this.records.set(req.target, rec);
    return {
      ...rec,
      mtu: 1420,
      gateway: '10.32.0.1',
      dns: { nameservers: ['10.32.0.1'], search: ['weft.local'] },
    };
  }
  async detach(target: string): Promise<boolean> {
    this.check();
    if (this.failDetach.has(target)) throw new RouterRefused(500, 'EWEFT_SYSTEM', `cannot remove ${target}`);
    this.detaches.push(target);
    return this.records.delete(target);
  }
  async list(): Promise<AttachRecord[]> {
    this.check();
    return [...this.records.values()];
  }
  async ipam(): Promise<IpamSummary> {
    this.check();
    return this.ipamState;
  }
}

/** healthy is what the netns looks like after a good ADD. */
const healthy = (): NetnsView => ({
  link: { ifname: 'eth0', mac: '02:11:22:33:44:55', up: true, addrs: ['10.32.0.5/12'] },
  routes: [
    { dst: '10.32.0.0/12', gateway: undefined },
    { dst: '0.0.0.0/0', gateway: '10.32.0.1' },
  ],
});

describe('runPlugin', () => {
  let router: FakeRouter;
  let view: NetnsView;
  let sockets: string[];
  let present: Set<string>;

  const conf = (cniVersion = '1.0.0', extra: Record<string, unknown> = {}) =>
    JSON.stringify({ cniVersion, name: 'weftnet', type: 'weft', ...extra });
  const env = (command: string, extra: Record<string, string> = {}) => ({
    CNI_COMMAND: command,
    CNI_CONTAINERID: 'ctr1',
    CNI_NETNS: NETNS,
    CNI_IFNAME: 'eth0',
    CNI_PATH: '/opt/cni/bin',
    ...extra,
  });
  const inspector: NetnsInspector = { inspect: async () => view };
  const run = (e: Record<string, string>, stdin: string, over: Partial<PluginDeps> = {}) =>
    runPlugin({
      env: e,
      stdin,
      api: (s) => {
        sockets.push(s);
        return router;
      },
      inspector,
      exists: (p) => present.has(p),
      defaultSocket: () => '/run/weft/weft.sock',
      ...over,
    });
  /** fails runs and returns the parsed error (validated against the spec's error shape). */
  const fails = async (e: Record<string, string>, stdin: string) => {
    const out = await run(e, stdin);
    expect(out.exitCode).toBe(1);
    return errorSchema.parse(JSON.parse(out.stdout));
  };
  const added = async (version = '1.0.0') => {
    const out = await run(env('ADD'), conf(version));
    expect(out.exitCode).toBe(0);
    return JSON.parse(out.stdout) as Record<string, unknown>;
  };

  beforeEach(() => {
    router = new FakeRouter();
    view = healthy();
    sockets = [];
    present = new Set([NETNS]);
  });

  describe('ADD', () => {
    it.each(['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'])('answers a result of the spec shape of %s', async (v) => {
      const r = resultSchema(v).parse(await added(v));
      expect(r.interfaces?.[1]).toMatchObject({ name: 'eth0', mac: '02:11:22:33:44:55', sandbox: NETNS });
      expect(r.interfaces?.[0]).toMatchObject({ name: 'vw0123abcd' });
      expect(r.interfaces?.[0]?.sandbox).toBeUndefined();
      expect(r.ips).toEqual([
        {
          ...(v.startsWith('0.') ? { version: '4' } : {}),
          address: '10.32.0.5/12',
          gateway: '10.32.0.1',
          interface: 1,
        },
      ]);
      expect(r.routes).toEqual([{ dst: '0.0.0.0/0', gw: '10.32.0.1' }]);
      expect(r.dns).toEqual({ nameservers: ['10.32.0.1'], search: ['weft.local'] });
    });

    it('gives the MTU on the interfaces only from 1.1.0 on', async () => {
      expect((await added('1.1.0')).interfaces).toEqual([
        { name: 'vw0123abcd', mtu: 1420 },
        { name: 'eth0', mac: '02:11:22:33:44:55', mtu: 1420, sandbox: NETNS },
      ]);
      expect(JSON.stringify(await added('1.0.0'))).not.toMatch(/mtu/);
    });

    it('asks the router to attach the netns by path, owned by NETWORK:CONTAINERID:IFNAME, named after the pod', async () => {
      await run(env('ADD', { CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1' }), conf());
      expect(router.attaches).toEqual([
        { target: KEY, netns: NETNS, ifname: 'eth0', defaultRoute: true, name: 'web-1' },
      ]);
      expect(sockets).toEqual(['/run/weft/weft.sock']);
    });

    it('uses the socket, defaultRoute and dnsNames of the configuration; a pod name that is no DNS label is not registered', async () => {
      const out = await run(
        env('ADD', { CNI_ARGS: 'K8S_POD_NAME=web-1' }),
        conf('1.0.0', { socket: '/run/weft/netns/h1/weft.sock', defaultRoute: false, dnsNames: false }),
      );
      expect(JSON.parse(out.stdout).routes).toEqual([]);
      expect(sockets).toEqual(['/run/weft/netns/h1/weft.sock']);
      expect(router.attaches[0]).toEqual({ target: KEY, netns: NETNS, ifname: 'eth0', defaultRoute: false });
      await run(env('ADD', { CNI_ARGS: 'K8S_POD_NAME=Not_A.Label' }), conf());
      expect(router.attaches[1]?.name).toBeUndefined();
    });

    it('appends to a prevResult when it is not the first plugin of the chain', async () => {
      const prev = {
        cniVersion: '1.0.0',
        interfaces: [{ name: 'lo0' }, { name: 'net0', sandbox: NETNS }],
        ips: [{ address: '192.168.5.2/24', interface: 1 }],
        routes: [{ dst: '192.168.0.0/16' }],
        dns: { nameservers: ['192.168.5.1'] },
      };
      const out = await run(env('ADD'), conf('1.0.0', { prevResult: prev }));
      const r = resultSchema('1.0.0').parse(JSON.parse(out.stdout));
      expect(r.interfaces?.map((i) => i.name)).toEqual(['lo0', 'net0', 'vw0123abcd', 'eth0']);
      expect(r.ips).toEqual([prev.ips[0], { address: '10.32.0.5/12', gateway: '10.32.0.1', interface: 3 }]);
      expect(r.routes).toEqual([{ dst: '192.168.0.0/16' }, { dst: '0.0.0.0/0', gw: '10.32.0.1' }]);
      expect(r.dns).toEqual(prev.dns);
    });

    it.each([
      ['the router is down', new RouterDown('/run/weft/weft.sock', 'ECONNREFUSED'), CniCode.TryAgainLater],
      [
        'the router is starting',
        new RouterRefused(503, 'EWEFT_NOT_READY', 'router is starting'),
        CniCode.TryAgainLater,
      ],
      [
        'there is no address space',
        new RouterRefused(503, 'EWEFT_UNAVAILABLE', 'no free address: the range is used up'),
        CniCode.NoAddress,
      ],
      [
        'the router is busy with it',
        new RouterRefused(409, 'EWEFT_CONFLICT', 'weftnet:ctr1:eth0 is being attached or detached'),
        CniCode.TryAgainLater,
      ],
      [
        'the interface exists and is not Weft’s',
        new RouterRefused(409, 'EWEFT_CONFLICT', 'already has an interface named eth0'),
        CniCode.RouterError,
      ],
      [
        'the namespace is gone',
        new RouterRefused(404, 'EWEFT_NOT_FOUND', 'no network namespace at /x'),
        CniCode.UnknownContainer,
      ],
      ['the router fails', new RouterRefused(500, 'EWEFT_SYSTEM', 'ip link add failed'), CniCode.RouterError],
    ])('fails with a CNI error when %s', async (_what, err, code) => {
      router.fail = err;
      const e = await fails(env('ADD'), conf());
      expect(e.code).toBe(code);
      expect(e.cniVersion).toBe('1.0.0');
      expect(`${e.msg} ${e.details ?? ''}`).toContain(err.message);
    });

    it('fails with 3 (container unknown) for a netns that does not exist, without asking the router', async () => {
      present.clear();
      expect(await fails(env('ADD'), conf())).toMatchObject({
        code: CniCode.UnknownContainer,
        msg: `no network namespace at ${NETNS}`,
      });
      expect(router.attaches).toEqual([]);
    });

    it('reaches a real socket: nothing listening is 11 (try again later)', async () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'weft-cni-'));
      try {
        const out = await run(env('ADD'), conf('1.0.0', { socket: path.join(dir, 'none.sock') }), {
          api: (s) => new SocketRouterApi(s),
        });
        expect(errorSchema.parse(JSON.parse(out.stdout))).toMatchObject({
          code: 11,
          msg: 'ADD: no weft router is running',
        });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });

  describe('configuration and environment errors', () => {
    it.each([
      ['stdin is not JSON', env('ADD'), '{"cniVersion":', CniCode.Decode],
      ['stdin is not an object', env('ADD'), '[1]', CniCode.Decode],
      ['cniVersion is missing', env('ADD'), '{"name":"n","type":"weft"}', CniCode.InvalidConfig],
      ['cniVersion is unsupported', env('ADD'), conf('2.0.0'), CniCode.IncompatibleVersion],
      ['cniVersion is too old', env('ADD'), conf('0.2.0'), CniCode.IncompatibleVersion],
      ['CHECK before 0.4.0', env('CHECK'), conf('0.3.1'), CniCode.IncompatibleVersion],
      ['GC before 1.1.0', env('GC'), conf('1.0.0', { 'cni.dev/valid-attachments': [] }), CniCode.IncompatibleVersion],
      ['STATUS before 1.1.0', env('STATUS'), conf('1.0.0'), CniCode.IncompatibleVersion],
      [
        'the name is invalid',
        env('ADD'),
        JSON.stringify({ cniVersion: '1.0.0', name: 'a/b', type: 'weft' }),
        CniCode.InvalidConfig,
      ],
      ['the type is missing', env('ADD'), JSON.stringify({ cniVersion: '1.0.0', name: 'n' }), CniCode.InvalidConfig],
      [
        'an ipam section is given',
        env('ADD'),
        conf('1.0.0', { ipam: { type: 'host-local' } }),
        CniCode.UnsupportedField,
      ],
      ['the socket is relative', env('ADD'), conf('1.0.0', { socket: 'weft.sock' }), CniCode.InvalidConfig],
      ['defaultRoute is not a boolean', env('ADD'), conf('1.0.0', { defaultRoute: 'yes' }), CniCode.InvalidConfig],
      ['prevResult is not an object', env('ADD'), conf('1.0.0', { prevResult: 'x' }), CniCode.InvalidConfig],
      ['GC has no valid-attachments', env('GC'), conf('1.1.0'), CniCode.InvalidConfig],
      [
        'GC has a malformed valid-attachment',
        env('GC'),
        conf('1.1.0', { 'cni.dev/valid-attachments': [{ containerID: 1 }] }),
        CniCode.InvalidConfig,
      ],
      ['CNI_COMMAND is unknown', env('FROB'), conf(), CniCode.InvalidEnvironment],
      ['CNI_COMMAND is missing', { CNI_CONTAINERID: 'c' }, conf(), CniCode.InvalidEnvironment],
      ['CNI_CONTAINERID is missing', env('ADD', { CNI_CONTAINERID: '' }), conf(), CniCode.InvalidEnvironment],
      ['CNI_CONTAINERID is malformed', env('ADD', { CNI_CONTAINERID: '-x y' }), conf(), CniCode.InvalidEnvironment],
      [
        'CNI_CONTAINERID is too long',
        env('ADD', { CNI_CONTAINERID: 'a'.repeat(300) }),
        conf(),
        CniCode.InvalidEnvironment,
      ],
      ['CNI_IFNAME is too long', env('ADD', { CNI_IFNAME: 'a'.repeat(16) }), conf(), CniCode.InvalidEnvironment],
      ['CNI_IFNAME has a colon', env('ADD', { CNI_IFNAME: 'eth0:1' }), conf(), CniCode.InvalidEnvironment],
      ['CNI_NETNS is missing on ADD', env('ADD', { CNI_NETNS: '' }), conf(), CniCode.InvalidEnvironment],
      ['CNI_NETNS is missing on CHECK', env('CHECK', { CNI_NETNS: '' }), conf(), CniCode.InvalidEnvironment],
    ])('%s: error %s', async (_what, e, stdin, code) => {
      const err = await fails(e as Record<string, string>, stdin);
      expect(err.code).toBe(code);
      expect(router.attaches).toEqual([]);
    });

    it('names the offending variable and field', async () => {
      expect((await fails(env('ADD', { CNI_IFNAME: '' }), conf())).msg).toMatch(/CNI_IFNAME/);
      expect((await fails(env('FROB'), conf())).msg).toMatch(/CNI_COMMAND "FROB"/);
      expect((await fails(env('ADD'), conf('1.0.0', { ipam: { type: 'host-local' } }))).msg).toMatch(
        /"ipam".*host-local/,
      );
    });
  });

  describe('VERSION', () => {
    it('lists the supported versions, answering in the version asked', async () => {
      const out = await run({ CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}');
      expect(out.exitCode).toBe(0);
      expect(versionSchema.parse(JSON.parse(out.stdout))).toEqual({
        cniVersion: '1.0.0',
        supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'],
      });
    });

    it('answers with 1.1.0 when given no configuration', async () => {
      expect(JSON.parse((await run({ CNI_COMMAND: 'VERSION' }, '')).stdout).cniVersion).toBe('1.1.0');
    });
  });

  describe('DEL', () => {
    it('detaches the attachment, and succeeds again when it is gone', async () => {
      await added();
      for (let i = 0; i < 2; i++) expect(await run(env('DEL'), conf())).toEqual({ stdout: '', exitCode: 0 });
      expect(router.detaches).toEqual([KEY, KEY]);
      expect(router.records.size).toBe(0);
    });

    it('succeeds with an empty netns, and for a container never added', async () => {
      expect(await run(env('DEL', { CNI_NETNS: '' }), conf())).toEqual({ stdout: '', exitCode: 0 });
      expect(await run(env('DEL', { CNI_CONTAINERID: 'other' }), conf())).toEqual({ stdout: '', exitCode: 0 });
    });

    it('succeeds while the router is down when the netns is gone, and is 11 while it still exists', async () => {
      router.fail = new RouterDown('/s', 'ENOENT');
      expect(await run(env('DEL', { CNI_NETNS: '' }), conf())).toEqual({ stdout: '', exitCode: 0 });
      router.fail = new RouterDown('/s', 'ENOENT');
      expect((await fails(env('DEL'), conf())).code).toBe(CniCode.TryAgainLater);
    });
  });

  describe('CHECK', () => {
    const checkConf = async () => conf('1.0.0', { prevResult: await added() });

    it('passes (no output) when the router holds the attachment and the netns has interface, address and route', async () => {
      expect(await run(env('CHECK'), await checkConf())).toEqual({ stdout: '', exitCode: 0 });
    });

    it('tolerates routes a later plugin added', async () => {
      view.routes.push({ dst: '172.16.0.0/12', gateway: '10.32.0.9' });
      expect((await run(env('CHECK'), await checkConf())).exitCode).toBe(0);
    });

    it.each([
      ['the router holds no such attachment', () => router.records.clear(), /holds no attachment weftnet:ctr1:eth0/],
      [
        'the router holds another address',
        () => {
          (router.records.get(KEY) as AttachRecord).cidrs = ['10.32.0.9/12'];
        },
        /not 10\.32\.0\.5\/12/,
      ],
      [
        'the interface is missing',
        () => {
          view.link = undefined;
        },
        /no interface eth0/,
      ],
      [
        'the interface is down',
        () => {
          if (view.link) view.link.up = false;
        },
        /is down/,
      ],
      [
        'the MAC changed',
        () => {
          if (view.link) view.link.mac = '02:00:00:00:00:99';
        },
        /has mac/,
      ],
      [
        'the address is gone',
        () => {
          if (view.link) view.link.addrs = [];
        },
        /lacks address 10\.32\.0\.5\/12/,
      ],
      [
        'the default route is gone',
        () => {
          view.routes = [];
        },
        /no route 0\.0\.0\.0\/0 via 10\.32\.0\.1/,
      ],
      ['the netns is gone', () => present.clear(), /no network namespace/],
    ])('fails with 102 when %s', async (_what, breakIt, msg) => {
      const c = await checkConf();
      breakIt();
      const e = await fails(env('CHECK'), c);
      expect(e.code).toBe(CniCode.CheckFailed);
      expect(e.msg).toMatch(msg);
    });

    it('needs prevResult (7), and one that has our interface (102)', async () => {
      expect((await fails(env('CHECK'), conf())).code).toBe(CniCode.InvalidConfig);
      const e = await fails(env('CHECK'), conf('1.0.0', { prevResult: { cniVersion: '1.0.0', interfaces: [] } }));
      expect(e).toMatchObject({ code: CniCode.CheckFailed, msg: `prevResult has no interface eth0 in ${NETNS}` });
    });

    it('is 11 while the router is down', async () => {
      const c = await checkConf();
      router.fail = new RouterDown('/s', 'ECONNREFUSED');
      expect((await fails(env('CHECK'), c)).code).toBe(CniCode.TryAgainLater);
    });
  });

  describe('STATUS', () => {
    const status = () => run({ CNI_COMMAND: 'STATUS' }, conf('1.1.0'));

    it('succeeds while the router can give addresses', async () => {
      expect(await status()).toEqual({ stdout: '', exitCode: 0 });
      router.ipamState = { state: 'awaiting-seed', seeded: false, owned: 0, used: 0 };
      expect((await status()).exitCode).toBe(0);
      router.ipamState = {
        state: 'ready',
        seeded: true,
        owned: 4,
        used: 4,
        peers: [{ self: false, free: 9, reachable: true }],
      };
      expect((await status()).exitCode).toBe(0);
    });

    it.each([
      [
        'the router is down',
        () => {
          router.fail = new RouterDown('/s', 'ENOENT');
        },
        /no weft router is running/,
      ],
      [
        'the router is starting',
        () => {
          router.fail = new RouterRefused(503, 'EWEFT_NOT_READY', 'router is starting');
        },
        /starting/,
      ],
      [
        'no address is free anywhere reachable',
        () => {
          router.ipamState = {
            state: 'ready',
            seeded: true,
            owned: 4,
            used: 4,
            peers: [{ self: false, free: 9, reachable: false }],
          };
        },
        /no free address/,
      ],
      [
        'allocations cannot be saved',
        () => {
          router.ipamState = { ...router.ipamState, persistFailing: true };
        },
        /cannot save/,
      ],
    ])('is 50 when %s', async (_what, breakIt, msg) => {
      breakIt();
      const out = await status();
      const e = errorSchema.parse(JSON.parse(out.stdout));
      expect([out.exitCode, e.code, e.cniVersion]).toEqual([1, CniCode.NotAvailable, '1.1.0']);
      expect(e.msg).toMatch(msg);
    });
  });

  describe('GC', () => {
    const record = (target: string, netns: string | undefined) =>
      router.records.set(target, {
        target,
        ifname: 'vw00000000',
        cidrs: ['10.32.0.7/12'],
        ...(netns ? { netns } : {}),
      });
    const gc = (valid: { containerID: string; ifname: string }[]) =>
      run({ CNI_COMMAND: 'GC' }, conf('1.1.0', { 'cni.dev/valid-attachments': valid }));

    beforeEach(() => {
      record('weftnet:keep:eth0', '/run/netns/a');
      record('weftnet:stale:eth0', '/run/netns/b');
      record('weftnet:keep:net1', '/run/netns/a');
      record('othernet:stale:eth0', '/run/netns/c');
      record('web', undefined); // `weft attach web`: never the runtime's
    });

    it("detaches only this network's attachments the runtime no longer lists", async () => {
      expect(await gc([{ containerID: 'keep', ifname: 'eth0' }])).toEqual({ stdout: '', exitCode: 0 });
      expect(router.detaches.sort()).toEqual(['weftnet:keep:net1', 'weftnet:stale:eth0']);
      expect([...router.records.keys()].sort()).toEqual(['othernet:stale:eth0', 'web', 'weftnet:keep:eth0']);
    });

    it('goes on past a failure and reports every one', async () => {
      router.failDetach.add('weftnet:stale:eth0');
      const out = await gc([]);
      const e = errorSchema.parse(JSON.parse(out.stdout));
      expect(e).toMatchObject({ code: CniCode.RouterError, msg: 'gc could not detach 1 stale attachment(s)' });
      expect(e.details).toMatch(/cannot remove weftnet:stale:eth0/);
      expect(router.detaches.sort()).toEqual(['weftnet:keep:eth0', 'weftnet:keep:net1']);
    });

    it('takes the list under its earlier name cni.dev/attachments too', async () => {
      await run(
        { CNI_COMMAND: 'GC' },
        conf('1.1.0', { 'cni.dev/attachments': [{ containerID: 'stale', ifname: 'eth0' }] }),
      );
      expect(router.detaches.sort()).toEqual(['weftnet:keep:eth0', 'weftnet:keep:net1']);
    });

    it('is 11 while the router is down', async () => {
      router.fail = new RouterDown('/s', 'ENOENT');
      expect((await fails({ CNI_COMMAND: 'GC' }, conf('1.1.0', { 'cni.dev/valid-attachments': [] }))).code).toBe(11);
    });
  });
});

describe('runPlugin never throws', () => {
  it('turns an unexpected failure into error 100', async () => {
    const out = await runPlugin({
      env: { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c', CNI_NETNS: NETNS, CNI_IFNAME: 'eth0' },
      stdin: JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 'weft' }),
      api: () => {
        throw new TypeError('boom');
      },
      inspector: { inspect: async () => healthy() },
      exists: () => true,
      defaultSocket: () => '/s',
    });
    expect(out.exitCode).toBe(1);
    expect(errorSchema.parse(JSON.parse(out.stdout))).toMatchObject({ code: 100, details: 'TypeError: boom' });
  });
});
