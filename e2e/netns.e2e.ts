import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ExecError,
  Lab,
  listNamespaces,
  outputTail,
  parseEthtoolFeatures,
  parsePing,
  requireRoot,
  runId,
  stopProcess,
  sweepStale,
  waitUntil,
} from '../lab/netns.js';

const reason = requireRoot();

describe('runId', () => {
  it('carries the pid and leaves room for suffixes within 15 characters', () => {
    expect(runId()).toBe(`w${process.pid}`);
    // prefix = runId + up to 2 letters; the longest suffix the harness appends is 3 (`u50`).
    expect(`${runId()}zzu50`.length).toBeLessThanOrEqual(15);
  });
});

describe('parsePing', () => {
  it('reads counts, the rtt summary and every reply time', () => {
    const r = parsePing(
      [
        '64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.050 ms',
        '64 bytes from 10.0.0.2: icmp_seq=2 ttl=64 time=0.070 ms',
        '2 packets transmitted, 2 received, 0% packet loss, time 51ms',
        'rtt min/avg/max/mdev = 0.050/0.060/0.070/0.010 ms',
      ].join('\n'),
    );
    expect(r).toMatchObject({
      transmitted: 2,
      received: 2,
      rttMinMs: 0.05,
      rttAvgMs: 0.06,
      rttMaxMs: 0.07,
      rttMdevMs: 0.01,
    });
    expect(r.rttsMs).toEqual([0.05, 0.07]);
  });

  it('gives NaN round-trip times when nothing came back', () => {
    const r = parsePing('3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 2002ms');
    expect(r.received).toBe(0);
    expect(r.rttAvgMs).toBeNaN();
  });
});

describe('parseEthtoolFeatures', () => {
  it('reads each changeable feature and leaves out fixed ones', () => {
    const f = parseEthtoolFeatures(
      [
        'Features for w1u1:',
        'tcp-segmentation-offload: on',
        '\ttx-tcp-segmentation: on',
        'generic-receive-offload: off',
        'large-receive-offload: off [fixed]',
        'tx-udp-segmentation: on',
      ].join('\n'),
    );
    expect(Object.fromEntries(f)).toEqual({
      'tcp-segmentation-offload': 'on',
      'tx-tcp-segmentation': 'on',
      'generic-receive-offload': 'off',
      'tx-udp-segmentation': 'on',
    });
  });
});

describe.skipIf(reason)('Lab (network namespaces, root)', () => {
  describe('three hosts at MTU 1500', () => {
    let topo: Lab;
    beforeAll(async () => {
      topo = await Lab.create({ hosts: 3 });
    });
    afterAll(async () => {
      await topo?.destroy();
    });

    it('names every namespace and link after the run id', async () => {
      expect(topo.prefix.startsWith(runId())).toBe(true);
      for (const ns of topo.namespaces) expect(ns.startsWith(topo.prefix)).toBe(true);
      const names = await listNamespaces();
      for (const h of topo.hosts) {
        expect(names).toContain(h.name);
        expect(h.underlayDev.startsWith(topo.prefix)).toBe(true);
        const link = await h.exec('ip', ['-o', 'link', 'show', h.underlayDev]);
        expect(link.stdout).toContain('mtu 1500');
      }
    });

    it('lets every host ping every other host over the underlay', async () => {
      for (const src of topo.hosts) {
        for (const dst of topo.hosts) {
          if (src === dst) continue;
          const r = await src.ping(dst.underlayIp, { count: 2, intervalS: 0.05 });
          expect(r.received, `${src.name} → ${dst.underlayIp}\n${r.output}`).toBe(2);
          expect(r.rttAvgMs).toBeGreaterThan(0);
        }
      }
    });

    it('rejects a failing command with its stderr in the message', async () => {
      const host = topo.hosts[0]!;
      const err = await host.exec('ip', ['link', 'show', 'nosuchdev0']).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ExecError);
      expect((err as ExecError).message).toMatch(/nosuchdev0.*does not exist/s);
      expect((err as ExecError).message).toContain(host.name);
      expect((err as ExecError).exitCode).not.toBe(0);
      const allowed = await host.exec('ip', ['link', 'show', 'nosuchdev0'], { allowFail: true });
      expect(allowed.code).not.toBe(0);
      expect(allowed.stderr).toContain('does not exist');
    });

    it('runs commands with input and environment inside the namespace', async () => {
      const host = topo.hosts[1]!;
      const r = await host.exec('sh', ['-c', 'cat; echo " $WEFT_E2E_X"; ip -o addr show dev "$DEV"'], {
        input: 'hello',
        env: { WEFT_E2E_X: 'x1', DEV: host.underlayDev },
      });
      expect(r.stdout).toContain('hello x1');
      expect(r.stdout).toContain(host.underlayIp);
    });

    it('measures TCP and UDP between hosts with iperf3', async () => {
      const [a, b] = [topo.hosts[0]!, topo.hosts[1]!];
      const server = await b.iperf3Server(5202);
      try {
        const tcp = await a.iperf3Client(b.underlayIp, { seconds: 1, port: 5202 });
        expect(tcp.bitsPerSecond).toBeGreaterThan(0);
        const udp = await a.iperf3Client(b.underlayIp, {
          seconds: 1,
          port: 5202,
          udp: true,
          length: 64,
          bitrate: '10M',
        });
        expect(udp.packets).toBeGreaterThan(0);
        expect(udp.receivedPps).toBeGreaterThan(0);
      } finally {
        await server.stop();
      }
    });
  });

  it('carries 9000-byte packets unfragmented at MTU 9000, and no larger', async () => {
    const topo = await Lab.create({ hosts: 2, underlayMtu: 9000 });
    try {
      const [a, b] = [topo.hosts[0]!, topo.hosts[1]!];
      const sw = await a.exec('ip', ['-o', 'link', 'show', a.underlayDev]);
      expect(sw.stdout).toContain('mtu 9000');
      const fits = await a.ping(b.underlayIp, { count: 2, intervalS: 0.05, size: 9000 - 28, dontFragment: true });
      expect(fits.received, fits.output).toBe(2);
      const tooBig = await a.ping(b.underlayIp, { count: 1, size: 9000 - 27, dontFragment: true, timeoutMs: 2_000 });
      expect(tooBig.received).toBe(0);
    } finally {
      await topo.destroy();
    }
  });

  it('routes two hosts across a smaller mid-path MTU, whose routers answer too-big DF packets', async () => {
    const topo = await Lab.create({ hosts: 2, midPathMtu: 1400 });
    try {
      const [a, b] = [topo.hosts[0]!, topo.hosts[1]!];
      expect(topo.routers.map((r) => r.name)).toEqual([`${topo.prefix}rt1`, `${topo.prefix}rt2`]);
      for (const h of [a, b]) {
        expect((await h.exec('ip', ['-o', 'link', 'show', h.underlayDev])).stdout).toContain('mtu 1500');
      }
      const fits = await a.ping(b.underlayIp, { count: 2, intervalS: 0.05, size: 1400 - 28, dontFragment: true });
      expect(fits.received, fits.output).toBe(2);
      // 1500 fits a's own link but not the middle one: rt1 answers "fragmentation needed", a learns 1400.
      const tooBig = await a.ping(b.underlayIp, { count: 2, intervalS: 0.2, size: 1500 - 28, dontFragment: true });
      expect(tooBig.received).toBe(0);
      expect(tooBig.output).toMatch(/mtu = 1400|message too long/i);
      const route = await a.exec('ip', ['route', 'get', b.underlayIp]);
      expect(route.stdout).toMatch(/mtu 1400/);
      // And the other way round, through rt2.
      const back = await b.ping(a.underlayIp, { count: 2, intervalS: 0.2, size: 1500 - 28, dontFragment: true });
      expect(back.output).toMatch(/mtu = 1400|message too long/i);
    } finally {
      await topo.destroy();
    }
    for (const ns of [`${topo.prefix}rt1`, `${topo.prefix}rt2`]) expect(await listNamespaces()).not.toContain(ns);
  });

  it('drops frames in the switch namespace only, and turns underlay offloads off and back on', async () => {
    const topo = await Lab.create({ hosts: 2 });
    try {
      const [a, b] = [topo.hosts[0]!, topo.hosts[1]!];
      const tso = async () =>
        /^tcp-segmentation-offload: (\w+)/m.exec((await a.exec('ethtool', ['-k', a.underlayDev])).stdout)?.[1];
      expect(await tso()).toBe('on');
      await topo.setUnderlayOffloads(false);
      expect(await tso()).toBe('off');
      await topo.setFrameLoss(1000);
      await topo.setFrameLoss(1000); // idempotent: replaces the table
      expect((await a.ping(b.underlayIp, { count: 2, intervalS: 0.05, timeoutMs: 1_000 })).received).toBe(0);
      expect(await topo.droppedFrames()).toBeGreaterThan(0);
      expect((await topo.switchNetns.exec('nft', ['list', 'tables'])).stdout).toContain('bridge weft_loss');
      for (const h of [a, b]) expect((await h.exec('nft', ['list', 'tables'])).stdout).not.toContain('weft_loss');
      await topo.setFrameLoss(0);
      expect(await topo.droppedFrames()).toBe(0);
      // Requests queued while ARP was being dropped may all be answered at once: at least one reply.
      expect((await a.ping(b.underlayIp, { count: 2, intervalS: 0.05 })).received).toBeGreaterThan(0);
      await topo.setUnderlayOffloads(true);
      expect(await tso()).toBe('on');
      await expect(topo.setFrameLoss(1001)).rejects.toThrow(/per mille/);
    } finally {
      await topo.destroy();
    }
  });

  it('partitions the switch between two groups of hosts only, and heals', async () => {
    const topo = await Lab.create({ hosts: 3 });
    try {
      const [a, b, c] = [topo.hosts[0]!, topo.hosts[1]!, topo.hosts[2]!];
      await topo.partition([a], [b]);
      await topo.partition([a], [b]); // replaces the cut
      expect((await a.ping(b.underlayIp, { count: 2, intervalS: 0.05, timeoutMs: 1_000 })).received).toBe(0);
      expect((await b.ping(a.underlayIp, { count: 2, intervalS: 0.05, timeoutMs: 1_000 })).received).toBe(0);
      expect(await topo.partitionedFrames()).toBeGreaterThan(0);
      // A host in neither group still reaches both sides.
      expect((await c.ping(a.underlayIp, { count: 2, intervalS: 0.05 })).received).toBe(2);
      expect((await c.ping(b.underlayIp, { count: 2, intervalS: 0.05 })).received).toBe(2);
      for (const h of [a, b, c])
        expect((await h.exec('nft', ['list', 'tables'])).stdout).not.toContain('weft_partition');
      await topo.heal();
      await topo.heal(); // idempotent
      expect(await topo.partitionedFrames()).toBe(0);
      await waitUntil(async () => (await a.ping(b.underlayIp, { count: 1, timeoutMs: 1_000 })).received === 1, {
        timeoutMs: 5_000,
        what: 'a to reach b after the heal',
      });
      await expect(topo.partition([a], [a, b])).rejects.toThrow(/both sides/);
      await expect(topo.partition([], [b])).rejects.toThrow(/empty/);
    } finally {
      await topo.destroy();
    }
  });

  it('removes an added namespace before the topology, but never a host', async () => {
    const topo = await Lab.create({ hosts: 1 });
    try {
      const c = await topo.addNamespace('c1');
      c.spawn('sleep', ['300']);
      await topo.removeNamespace(c);
      expect(await listNamespaces()).not.toContain(c.name);
      expect(topo.namespaces).not.toContain(c.name);
      await expect(topo.removeNamespace(topo.hosts[0]!)).rejects.toThrow(/underlay/);
      await expect(topo.addNamespace('rt1')).rejects.toThrow(/bad namespace suffix/);
    } finally {
      await topo.destroy();
    }
  });

  it('destroy removes every namespace and process, and is idempotent', async () => {
    const topo = await Lab.create({ hosts: 2 });
    const extra = await topo.addNamespace('c1');
    const child = topo.hosts[0]!.spawn('sleep', ['300']);
    await new Promise((r) => setTimeout(r, 100));
    expect(child.exitCode).toBeNull();
    const created = topo.namespaces;
    expect(created).toContain(extra.name);
    expect(created).toHaveLength(4);
    await topo.destroy();
    await topo.destroy();
    const left = await listNamespaces();
    for (const ns of created) expect(left).not.toContain(ns);
    expect(child.exitCode !== null || child.signalCode !== null).toBe(true);
    expect(() => topo.hosts[0]!.spawn('true')).toThrow(/destroyed/);
  });

  it('sweepStale deletes namespaces of runs it considers dead and nothing else', async () => {
    const topo = await Lab.create({ hosts: 1 });
    const created = topo.namespaces;
    // Every pid but ours counts as alive, so only this test's namespaces qualify.
    const swept = await sweepStale('w', { isAlive: (pid) => pid !== process.pid });
    expect([...swept].sort()).toEqual([...created].sort());
    const left = await listNamespaces();
    for (const ns of created) expect(left).not.toContain(ns);
    await topo.destroy();
  });

  it('keeps the output of spawned processes and stops them', async () => {
    const topo = await Lab.create({ hosts: 1 });
    try {
      const child = topo.hosts[0]!.spawn('sh', ['-c', 'echo ready; exec sleep 300']);
      await new Promise<void>((resolve) => child.stdout?.once('data', () => resolve()));
      expect(outputTail(child)).toContain('ready');
      await stopProcess(child);
      expect(child.signalCode ?? child.exitCode).not.toBeNull();
    } finally {
      await topo.destroy();
    }
  });

  it('rejects names that would not carry the run id', async () => {
    await expect(Lab.create({ hosts: 1, prefix: 'w1x' })).rejects.toThrow(/prefix/);
    await expect(Lab.create({ hosts: 0 })).rejects.toThrow(/hosts/);
  });
});
