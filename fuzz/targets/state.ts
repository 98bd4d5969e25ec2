/**
 * State and configuration files a router reads at start: `state.json` (control/state.ts
 * StateFile.load), `ipam.json` (loadIpam, then the IPAM service's restore through
 * Allocator.fromJSON), and the host files it parses (resolv.conf, /proc/net/snmp, /proc/net/udp).
 * The files are real files in a private directory under /dev/shm (or the temp directory).
 *
 * Input: | kind (1) | file text ... |; kind % 5: 0 state.json, 1 ipam.json, 2 resolv.conf,
 * 3 /proc/net/snmp, 4 /proc/net/udp.
 *
 * Properties: a bad state file is a ConfigError (EWEFT_CONFIG) that says which file, never another
 * exception and never a silent fresh start; a state that loads saves and loads back the same;
 * a restored IPAM service holds every allocation it restored; the host-file parsers never throw.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as fc from 'fast-check';
import { ConfigError, WeftError } from '../../common/errors.js';
import { noopLogger } from '../../common/log.js';
import { type PeerName, parseCidr } from '../../common/types.js';
import { ipamFile, loadIpam, StateFile, saveIpam } from '../../control/state.js';
import { parseResolvConf } from '../../dns/index.js';
import { Allocator } from '../../router/ipam/allocator.js';
import { Ring } from '../../router/ipam/ring.js';
import { IpamService } from '../../router/ipam/service.js';
import { parseUdpSnmp, parseUdpSocketDrops } from '../../router/kernel-drops.js';
import { concat } from '../mutator.js';
import { cidrText, oddValue, Pool } from '../structured.js';
import { check, type FuzzTarget, label } from '../target.js';

const SELF = '02:00:00:00:00:01' as PeerName;
const RANGE = parseCidr('10.32.0.0/22');

let dir: string | undefined;
const enc = new TextEncoder();

function text(kind: number, s: string): Uint8Array {
  return concat(Uint8Array.of(kind), enc.encode(s));
}

function seeds(): Uint8Array[] {
  const alloc = new Allocator(Ring.seeded(RANGE, SELF, [SELF, '02:00:00:00:00:02' as PeerName]));
  alloc.allocate('c1');
  alloc.allocate('weft:expose');
  alloc.claim('c2', (0x0a200000 + 9) as never);
  const state = {
    peerName: SELF,
    targets: ['192.168.1.10:6783', 'host-b'],
    exposed: ['10.32.0.1/22'],
    incarnation: 1733300000000,
    attached: [{ target: 'web', ifname: 'weft0', cidrs: ['10.32.0.2/22'], name: 'db', mac: '02:42:0a:20:00:02' }],
  };
  return [
    text(0, JSON.stringify(state, null, 2)),
    text(0, JSON.stringify({ targets: [], exposed: [], attached: [] })),
    text(0, '{}'),
    text(1, JSON.stringify(alloc.toJSON(), null, 2)),
    text(1, JSON.stringify(new Allocator(new Ring(RANGE, SELF)).toJSON())),
    text(
      2,
      'nameserver 192.168.1.1\nnameserver 2001:db8::1\nsearch example.com corp.\noptions ndots:2 timeout:3 rotate edns0\n',
    ),
    text(2, '# generated\ndomain example.org\nnameserver 127.0.0.53 ; stub\nsortlist 10.0.0.0\n'),
    text(
      3,
      'Ip: Forwarding DefaultTTL\nIp: 1 64\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\nUdp: 100 2 0 90 5 0 0 0 0\n',
    ),
    text(
      4,
      '   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n  1: 00000000:1A7F 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 12345 2 0000000000000000 7\n',
    ),
  ];
}

const stateJson = fc.record(
  {
    peerName: fc.oneof(fc.constantFrom(SELF, ''), fc.string({ maxLength: 70 }), oddValue),
    targets: fc.oneof(fc.array(fc.string({ maxLength: 20 }), { maxLength: 3 }), oddValue),
    exposed: fc.oneof(fc.array(cidrText, { maxLength: 3 }), oddValue),
    incarnation: fc.oneof(fc.constantFrom(0, -1, 1.5, 2 ** 53), oddValue),
    attached: fc.oneof(
      fc.array(
        fc.record(
          {
            target: fc.string({ maxLength: 70 }),
            ifname: fc.string({ maxLength: 17 }),
            cidrs: fc.array(cidrText, { maxLength: 2 }),
            name: fc.string({ maxLength: 70 }),
            mac: fc.string({ maxLength: 20 }),
          },
          { requiredKeys: [] },
        ),
        { maxLength: 2 },
      ),
      oddValue,
    ),
  },
  { requiredKeys: [] },
);
const ipamJson = fc.record(
  {
    format: fc.oneof(fc.constant(1), oddValue),
    self: fc.oneof(fc.constantFrom(SELF, '02:00:00:00:00:02', '02:00:00:00:00:0G'), fc.string({ maxLength: 20 })),
    range: fc.oneof(fc.constant('10.32.0.0/22'), cidrText),
    seedId: fc.oneof(fc.constantFrom(0, 1, 0xffffffff, 2 ** 32), oddValue),
    tokens: fc.array(
      fc.record({
        start: fc.constantFrom('10.32.0.0', '10.32.2.0', '10.32.3.255', '10.32.4.0', '10.32.0.300', ''),
        owner: fc.constantFrom(SELF, '02:00:00:00:00:02', 'x'),
        version: fc.oneof(fc.constantFrom(1, 0, 2 ** 53), oddValue),
        free: fc.oneof(fc.constantFrom(0, 512, 1024, -1), oddValue),
      }),
      { maxLength: 4 },
    ),
    allocations: fc.oneof(
      fc.dictionary(
        fc.constantFrom('c1', 'weft:expose', '', '__proto__'),
        fc.array(fc.constantFrom('10.32.0.1', '10.32.0.1', '10.32.2.5', '10.33.0.1', 'x'), { maxLength: 3 }),
      ),
      oddValue,
    ),
  },
  { requiredKeys: [] },
);
const pool = new Pool(
  fc.oneof(
    fc.tuple(fc.constant(0), stateJson),
    fc.tuple(fc.constant(1), ipamJson),
    fc.tuple(fc.constantFrom(2, 3, 4), fc.string({ maxLength: 200 })),
  ),
  (v) => {
    const [kind, body] = v as [number, unknown];
    const s = typeof body === 'string' && kind >= 2 ? body : JSON.stringify(body);
    return s === undefined ? undefined : text(kind, s);
  },
  71,
);

function configError(err: unknown, file: string): string {
  if (err instanceof ConfigError || (err instanceof WeftError && err.code === 'EWEFT_CONFIG')) {
    return label('config', err.message.replace(file, 'FILE').replace(dir ?? '', 'DIR'));
  }
  throw err;
}

/** stateFiles fuzzes the files read at start. */
export const stateFiles: FuzzTarget = {
  name: 'state-files',
  parsers: [
    'control/state.ts: StateFile.load, loadIpam (and save/saveIpam for the round trip)',
    'router/ipam/service.ts: IpamService restore (persisted) → router/ipam/allocator.ts Allocator.fromJSON',
    'dns/resolv-conf.ts: parseResolvConf; router/kernel-drops.ts: parseUdpSnmp, parseUdpSocketDrops',
  ],
  maxLen: 4096,
  seeds,
  generate: (rand) => pool.next(rand),
  async setup(): Promise<void> {
    dir = mkdtempSync(path.join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'weft-fuzz-'));
  },
  async teardown(): Promise<void> {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  },
  run(input: Uint8Array): string {
    if (input.length === 0) return 'empty';
    const kind = (input[0] as number) % 5;
    const body = Buffer.from(input.buffer, input.byteOffset + 1, input.length - 1);
    if (kind >= 2) {
      const s = body.toString('utf8');
      if (kind === 2) {
        const r = parseResolvConf(s);
        check(Array.isArray(r.nameservers) && Array.isArray(r.notes), 'parseResolvConf returned no lists');
        return `resolv:${Math.min(r.nameservers.length, 3)}:${r.notes.length > 0 ? 'notes' : ''}`;
      }
      const m = kind === 3 ? parseUdpSnmp(s) : parseUdpSocketDrops(s);
      return `proc:${kind}:${Math.min(m.size, 3)}`;
    }
    if (dir === undefined) throw new Error('state-files: setup was not run');
    if (kind === 0) {
      const sf = new StateFile(dir);
      writeFileSync(sf.file, body);
      let st: ReturnType<StateFile['load']>;
      try {
        st = sf.load();
      } catch (err) {
        return configError(err, sf.file);
      }
      sf.save(st);
      check(
        JSON.stringify(sf.load()) === JSON.stringify(st),
        'a state that loads does not load back the same after save',
      );
      return 'state:ok';
    }
    const file = ipamFile(dir);
    writeFileSync(file, body);
    let json: unknown;
    try {
      json = loadIpam(dir);
    } catch (err) {
      return configError(err, file);
    }
    let svc: IpamService;
    try {
      svc = new IpamService(
        { self: SELF, range: RANGE, init: { mode: 'auto', alone: false }, persisted: json, log: noopLogger },
        { broadcast: () => {}, unicast: () => true },
      );
    } catch (err) {
      return configError(err, file);
    }
    // What was restored must be what is served, and must persist and restore unchanged.
    const restored = Allocator.fromJSON(json, { self: SELF, range: RANGE });
    for (const owner of restored.allocations().map(([, o]) => o)) {
      check(svc.lookup(owner).length > 0, `restored allocation of ${owner} is not served`);
    }
    saveIpam(dir, restored.toJSON());
    const again = Allocator.fromJSON(loadIpam(dir), { self: SELF, range: RANGE });
    check(JSON.stringify(again.toJSON()) === JSON.stringify(restored.toJSON()), 'ipam state does not round-trip');
    return `ipam:ok:${Math.min(svc.owners().length, 3)}`;
  },
};
