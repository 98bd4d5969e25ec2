import { execFile } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ExecResult, type Host, Lab, type Netns, requireRoot, waitUntil } from '../lab/netns.js';
import { launch, removeStateDirs, routerPid, weft } from './weft.js';

const reason = requireRoot();
const run = promisify(execFile);

/** N is how many containers are attached at once when the router is killed. */
const N = 30;
/** KILL_AT is how many container interfaces exist when the router gets `kill -9`. */
const KILL_AT = 10;

interface PsEntry {
  target: string;
  ifname: string;
  cidrs: string[];
  name?: string;
  names?: string[];
  state?: string;
}

async function ps(h: Host): Promise<PsEntry[]> {
  return JSON.parse((await weft(h, ['ps', '--json'])).stdout) as PsEntry[];
}

async function allocations(h: Host): Promise<{ addr: string; owner: string }[]> {
  return (JSON.parse((await weft(h, ['status', 'ipam', '--json'])).stdout) as { allocations: [] }).allocations;
}

/** vwLinks lists the container interfaces (`vw` + 8 hex) in a host's namespace. */
async function vwLinks(h: Host): Promise<string[]> {
  const links = JSON.parse((await h.ip('-j', 'link', 'show')).stdout) as { ifname: string }[];
  return links.map((l) => l.ifname).filter((n) => /^vw[0-9a-f]{8}$/.test(n));
}

/** ethweAddrs returns the IPv4 addresses on `ethwe` inside a container, or undefined when it has no ethwe. */
async function ethweAddrs(c: Netns): Promise<string[] | undefined> {
  const r = await c.ip('-j', 'addr', 'show');
  const links = JSON.parse(r.stdout) as { ifname: string; addr_info?: { family: string; local: string }[] }[];
  const e = links.find((l) => l.ifname === 'ethwe');
  return e?.addr_info?.filter((a) => a.family === 'inet').map((a) => a.local);
}

/** killRouter sends SIGKILL to a host's router and waits until it is gone. */
async function killRouter(h: Host): Promise<void> {
  const pid = await routerPid(h);
  process.kill(pid, 'SIGKILL');
  await waitUntil(() => !readdirSync('/proc').includes(String(pid)), { timeoutMs: 5_000, what: 'the router to die' });
}

function tmpFiles(dir: string): string[] {
  return readdirSync(dir).filter((f) => f.endsWith('.tmp'));
}

/**
 * Attach is a transaction across crashes, and a state directory that cannot be written fails
 * attaches instead of losing them: `kill -9` among parallel attaches leaves no duplicate address,
 * no orphaned interface, and the CLI's answers hold; a full disk fails attach with a clear message
 * and leaves nothing behind.
 */
describe.skipIf(reason)('attach across crashes and full disks', () => {
  let topo: Lab;
  let h1: Host;
  let h2: Host;
  /** disk is the small tmpfs h2 keeps its state in. */
  let disk: string | undefined;
  let mounted = false;

  beforeAll(async () => {
    topo = await Lab.create({ hosts: 2 });
    [h1, h2] = topo.hosts as [Host, Host];
    await launch(h1, [], ['--container-grace', '1000']);
  });

  afterAll(async () => {
    for (const h of [h1, h2]) if (h) await weft(h, ['stop'], { allowFail: true, timeoutMs: 10_000 }).catch(() => {});
    await topo?.destroy();
    if (mounted && disk !== undefined) await run('umount', ['-l', disk]).catch(() => undefined);
    if (disk !== undefined) rmSync(disk, { recursive: true, force: true });
    if (topo) removeStateDirs(topo);
  });

  it(`kill -9 during ${N} parallel attaches: answers hold, no duplicate address, no orphan interface`, async () => {
    const cs = await Promise.all(Array.from({ length: N }, (_, i) => topo.addNamespace(`k${i}`)));
    const answers = new Map<string, ExecResult>();
    const attaches = Promise.all(
      cs.map(async (c) => {
        answers.set(c.name, await weft(h1, ['attach', c.name], { allowFail: true, timeoutMs: 90_000 }));
      }),
    );
    await waitUntil(async () => (await vwLinks(h1)).length >= KILL_AT, {
      timeoutMs: 60_000,
      intervalMs: 20,
      what: `${KILL_AT} container interfaces`,
    });
    await killRouter(h1);
    await attaches;
    const done = cs.filter((c) => answers.get(c.name)?.code === 0);
    // Exit 4: the router died after it got the request and before it answered; either outcome is
    // allowed, but it must be a whole one.
    const interrupted = cs.filter((c) => answers.get(c.name)?.code === 4);
    const failed = cs.filter((c) => ![0, 4].includes(answers.get(c.name)?.code ?? -1));
    expect(failed.length + interrupted.length, 'the kill cut some attaches short').toBeGreaterThan(0);
    for (const c of [...failed, ...interrupted]) expect(answers.get(c.name)?.stderr.trim().split('\n')).toHaveLength(1);
    for (const c of interrupted) expect(answers.get(c.name)?.stderr).toMatch(/may or may not have been made/);

    // An interface no record speaks for (as an older version or a lost state file leaves): removed at restart.
    const orphan = await topo.addNamespace('korphan');
    await h1.ip('link', 'add', 'vwdeadbeef', 'type', 'veth', 'peer', 'name', 'ethwe', 'netns', orphan.name);
    await orphan.ip('addr', 'add', '10.32.0.250/12', 'dev', 'ethwe');

    await launch(h1, [], ['--container-grace', '1000']);
    // An attach waits for the restart's reconciliation, and must not get an address still in use.
    const fresh = await topo.addNamespace('kfresh');
    const freshAddr = (await weft(h1, ['attach', fresh.name])).stdout.trim();

    const list = await ps(h1);
    const byTarget = new Map(list.map((a) => [a.target, a]));
    expect(list.filter((a) => a.state === 'pending')).toEqual([]);
    // Done means done: attached, with the address the CLI printed, inside the container too.
    for (const c of done) {
      const printed = answers.get(c.name)?.stdout.trim();
      expect(byTarget.get(c.name)?.cidrs, c.name).toEqual([`${printed}/12`]);
      expect(await ethweAddrs(c), c.name).toEqual([printed]);
    }
    // Failed means nothing is left: no record, no interface inside.
    for (const c of failed) {
      expect(byTarget.has(c.name), `${c.name} failed (${answers.get(c.name)?.stderr.trim()}) but is attached`).toBe(
        false,
      );
      expect(await ethweAddrs(c), `${c.name} failed but has ethwe`).toBeUndefined();
    }
    // Interrupted means all or nothing: a record and its address inside, or neither.
    for (const c of interrupted) {
      const rec = byTarget.get(c.name);
      expect(await ethweAddrs(c), c.name).toEqual(rec ? rec.cidrs.map((x) => x.split('/')[0]) : undefined);
    }
    expect(await ethweAddrs(orphan)).toBeUndefined();
    // No orphan: every vw interface is a recorded container's, and every record has its interface.
    expect((await vwLinks(h1)).sort()).toEqual(list.map((a) => a.ifname).sort());
    // No address twice, and IPAM holds each in-use address for its container.
    const inUse = new Map<string, string>();
    for (const c of [...cs, fresh]) {
      for (const a of (await ethweAddrs(c)) ?? []) {
        expect(inUse.get(a), `${a} is used by ${inUse.get(a)} and ${c.name}`).toBeUndefined();
        inUse.set(a, c.name);
      }
    }
    expect(inUse.get(freshAddr)).toBe(fresh.name);
    const held = new Map((await allocations(h1)).map((x) => [x.addr, x.owner]));
    for (const [a, owner] of inUse) expect(held.get(a), a).toBe(owner);

    // The containers whose attach failed attach now (no "File exists"), each with an address of its own.
    for (const c of [...failed, ...interrupted.filter((x) => !byTarget.has(x.name))]) {
      const r = await weft(h1, ['attach', c.name], { allowFail: true });
      expect(r.stderr).toBe('');
      const a = r.stdout.trim();
      expect(inUse.has(a), `${a} handed out again`).toBe(false);
      inUse.set(a, c.name);
    }
  }, 240_000);

  it('attach --name on an attached container adds the name', async () => {
    const c = await topo.addNamespace('kname');
    const a = (await weft(h1, ['attach', c.name, '--name', 'first'])).stdout.trim();
    expect((await weft(h1, ['attach', c.name, '--name', 'second'])).stdout.trim()).toBe(a);
    for (const n of ['first', 'second']) {
      await waitUntil(async () => (await weft(h1, ['dns-lookup', n], { allowFail: true })).stdout.includes(a), {
        timeoutMs: 10_000,
        what: `${n} to resolve to ${a}`,
      });
    }
    expect((await ps(h1)).find((x) => x.target === c.name)?.names).toEqual(['first', 'second']);
    // Both names survive kill -9.
    await killRouter(h1);
    await launch(h1, [], ['--container-grace', '1000']);
    await weft(h1, ['attach', c.name]);
    for (const n of ['first', 'second']) {
      await waitUntil(async () => (await weft(h1, ['dns-lookup', n], { allowFail: true })).stdout.includes(a), {
        timeoutMs: 10_000,
        what: `${n} to resolve to ${a} after a restart`,
      });
    }
  }, 60_000);

  it('a full state directory fails attach and --name with a clear message, leaving nothing behind', async () => {
    disk = path.join(tmpdir(), 'weft-e2e', `${topo.prefix}disk`);
    mkdirSync(disk, { recursive: true });
    await run('mount', ['-t', 'tmpfs', '-o', 'size=512k,mode=0700', 'tmpfs', disk]);
    mounted = true;
    await launch(h2, [], ['--state-dir', disk, '--no-dns']);
    const ok = await topo.addNamespace('dok');
    const full = await topo.addNamespace('dfull');
    const okAddr = (await weft(h2, ['attach', ok.name])).stdout.trim();

    // Fill the disk (dd stops at ENOSPC).
    await run('dd', ['if=/dev/zero', `of=${path.join(disk, 'fill')}`, 'bs=4k'], { timeout: 30_000 }).catch(() => {});
    const linksBefore = await vwLinks(h2);
    const r = await weft(h2, ['attach', full.name], { allowFail: true });
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(/^weft: cannot save state in \S+: no space left on device$/);
    expect(await vwLinks(h2)).toEqual(linksBefore);
    expect(await ethweAddrs(full)).toBeUndefined();
    expect((await ps(h2)).map((a) => a.target)).toEqual([ok.name]);
    expect((await allocations(h2)).map((a) => a.addr)).toEqual([okAddr]);
    expect(tmpFiles(disk)).toEqual([]);

    const n = await weft(h2, ['attach', ok.name, '--name', 'web'], { allowFail: true });
    expect(n.code).toBe(1);
    expect(n.stderr.trim()).toMatch(/^weft: cannot save state in \S+: no space left on device$/);
    expect((await ps(h2))[0]?.name).toBeUndefined();

    const st = JSON.parse((await weft(h2, ['status', '--json'])).stdout) as {
      state?: { failing: boolean; errors: number; attach: { persistErrors: number } };
    };
    expect(st.state?.failing).toBe(true);
    expect(st.state?.attach.persistErrors).toBeGreaterThanOrEqual(2);
    expect((await weft(h2, ['status'])).stdout).toMatch(/FAILING: cannot save state in .*: no space left on device/);

    // Space again, then kill -9: what was reported done is there, what failed is not.
    rmSync(path.join(disk, 'fill'));
    await killRouter(h2);
    await launch(h2, [], ['--state-dir', disk, '--no-dns']);
    expect(tmpFiles(disk)).toEqual([]);
    const again = (await weft(h2, ['attach', full.name])).stdout.trim();
    expect(again).not.toBe(okAddr);
    const list = await ps(h2);
    expect(list.find((a) => a.target === ok.name)?.cidrs).toEqual([`${okAddr}/12`]);
    expect(await ethweAddrs(ok)).toEqual([okAddr]);
    expect((await vwLinks(h2)).sort()).toEqual(list.map((a) => a.ifname).sort());
    await weft(h2, ['stop']);
  }, 90_000);
});
