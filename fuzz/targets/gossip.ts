/**
 * Gossip payloads of the three channels, fed to the real Gossipers over live state, as the gossip
 * channel does: topology (router/topology.ts), IPAM (router/ipam/ipam.ts) and DNS records
 * (dns/records.ts).
 *
 * Input: one payload; its length's parity picks onGossip (broadcast) or onGossipUnicast.
 *
 * Properties: only the channel's typed errors escape (ProtocolError; WeftError for IPAM, whose ring
 * merge refuses another range or seed); a delta a gossiper hands back decodes with its own decoder
 * (we never gossip what we would refuse); delivering the same payload twice changes nothing the
 * second time (gossip re-delivers freely). State is rebuilt every RESET_EVERY inputs, so it stays small.
 */
import * as fc from 'fast-check';
import { ProtocolError, WeftError } from '../../common/errors.js';
import { type PeerName, parseCidr } from '../../common/types.js';
import { DnsGossiper, DnsRecords, decodeDnsMessage } from '../../dns/index.js';
import type { Gossip } from '../../router/gossip/gossip.js';
import { Allocator } from '../../router/ipam/allocator.js';
import {
  decodeMessage as decodeIpam,
  encodeMessage as encodeIpam,
  Ipam,
  IpamGossiper,
} from '../../router/ipam/ipam.js';
import { Ring } from '../../router/ipam/ring.js';
import { decodeEntries, encodeEntries, type PeerEntry, Topology, TopologyGossiper } from '../../router/topology.js';
import { cidrText, dnsName, edgeInt, oddValue, Pool, pack, peerBytes } from '../structured.js';
import { check, type FuzzTarget, label } from '../target.js';

const p = (n: number) => `02:00:00:00:00:${n.toString(16).padStart(2, '0')}` as PeerName;
const SELF = p(1);
const SRC = p(2);
const RESET_EVERY = 2_000;

/** nullGossip sends nothing: the target looks at what the gossiper returns, not at what it sends. */
const nullGossip: Gossip = { broadcast: () => {}, unicast: () => true };

function entry(name: PeerName, over: Partial<PeerEntry> = {}): PeerEntry {
  return {
    name,
    nickname: `n${name.slice(-2)}`,
    uid: String(1000 + Number.parseInt(name.slice(-2), 16)),
    incarnation: 5,
    version: 1,
    connections: [],
    cidrs: [],
    sleevePort: 6783,
    vxlanPort: 6784,
    encap: 'sleeve',
    ...over,
  };
}

/** encodeTopologySeeds returns topology payloads as routers send them: full states and deltas. */
export function encodeTopologySeeds(): Uint8Array[] {
  const conn = (peer: PeerName, established = true) => ({
    peer,
    addr: '192.168.0.2',
    tcpPort: 6783,
    outbound: true,
    established,
  });
  const b = entry(p(2), { connections: [conn(p(1)), conn(p(3), false)], cidrs: ['10.32.0.1/32', '10.40.0.0/13'] });
  const c = entry(p(3), { encap: 'vxlan', version: 9, connections: [conn(p(2))] });
  return [
    encodeEntries([b]),
    encodeEntries([b, c]),
    encodeEntries([entry(SELF, { version: 7 })]), // an echo of ourselves, newer
    encodeEntries([entry(SELF, { uid: '999' })]), // a name collision
    encodeEntries(Array.from({ length: 20 }, (_, i) => entry(p(10 + i)))),
  ];
}

function checkTyped(err: unknown, alsoWeft: boolean): string {
  if (err instanceof ProtocolError) return label('protocol', err.message);
  if (alsoWeft && err instanceof WeftError) return label(err.code, err.message);
  throw err;
}

/** gossipRun is the shared run: deliver, check the delta decodes, deliver again and check nothing changes. */
function gossipRun(
  input: Uint8Array,
  onGossip: (b: Uint8Array) => Uint8Array | undefined,
  onUnicast: (b: Uint8Array) => void,
  decode: (b: Uint8Array) => unknown,
  alsoWeft: boolean,
): string {
  if ((input.length & 1) === 1) {
    try {
      onUnicast(input);
      return 'unicast:ok';
    } catch (err) {
      return `unicast:${checkTyped(err, alsoWeft)}`;
    }
  }
  let delta: Uint8Array | undefined;
  try {
    delta = onGossip(input);
  } catch (err) {
    return checkTyped(err, alsoWeft);
  }
  if (delta !== undefined) {
    try {
      decode(delta);
    } catch (err) {
      check(false, `our own delta does not decode: ${(err as Error).message}`);
    }
  }
  let again: Uint8Array | undefined;
  try {
    again = onGossip(input);
  } catch (err) {
    check(false, `a payload accepted once is refused the second time: ${(err as Error).message}`);
  }
  check(again === undefined, 'delivering the same payload twice changed something the second time');
  return delta === undefined ? 'nothing-new' : 'new';
}

// ---- topology ----

const wireConn = fc.tuple(
  peerBytes,
  fc.oneof(fc.nat(), edgeInt),
  fc.oneof(fc.constant(6783), edgeInt),
  fc.boolean(),
  fc.boolean(),
);
const wireEntry = fc.tuple(
  peerBytes,
  fc.string({ maxLength: 70 }),
  fc.oneof(
    fc.constantFrom('1002', '0', '18446744073709551615', '18446744073709551616', ''),
    fc.string({ maxLength: 21 }),
  ),
  fc.oneof(fc.constantFrom(5, 6), edgeInt),
  fc.oneof(fc.constantFrom(1, 2, 3), edgeInt),
  fc.array(fc.oneof({ weight: 5, arbitrary: wireConn }, { weight: 1, arbitrary: oddValue }), { maxLength: 4 }),
  fc.array(fc.oneof(cidrText, oddValue), { maxLength: 4 }),
  fc.oneof(fc.constant(6783), edgeInt),
  fc.oneof(fc.constant(6784), edgeInt),
  fc.constantFrom('sleeve', 'vxlan', 'weave'),
);
const topologyPool = new Pool(
  fc.oneof(
    { weight: 8, arbitrary: fc.tuple(fc.constant(1), fc.array(wireEntry, { maxLength: 4 })) },
    { weight: 1, arbitrary: fc.tuple(fc.oneof(fc.constant(1), oddValue), oddValue) },
  ),
  pack,
  21,
);

function newTopology(): TopologyGossiper {
  return new TopologyGossiper(new Topology(entry(SELF, { connections: [], cidrs: ['10.32.0.0/32'] })));
}

let topology = newTopology();
let topologyRuns = 0;

/** topologyGossip fuzzes topology gossip: decodeEntries, Topology.mergeEncoded/merge, entryProblem. */
export const topologyGossip: FuzzTarget = {
  name: 'gossip-topology',
  parsers: [
    'router/topology.ts: TopologyGossiper.onGossip/onGossipUnicast → Topology.mergeEncoded (unpackList, isStale, toEntry)',
    'router/topology.ts: Topology.merge, entryProblem, decodeEntries',
  ],
  maxLen: 4096,
  seeds: encodeTopologySeeds,
  generate: (rand) => topologyPool.next(rand),
  run(input: Uint8Array): string {
    if (++topologyRuns % RESET_EVERY === 0) topology = newTopology();
    const g = topology;
    return gossipRun(
      input,
      (b) => g.onGossip(SRC, b),
      (b) => g.onGossipUnicast(SRC, b),
      decodeEntries,
      false,
    );
  },
};

// ---- IPAM ----

const RANGE = parseCidr('10.32.0.0/22');

function ipamSeeds(): Uint8Array[] {
  const a = Ring.seeded(RANGE, SELF, [SELF, p(2), p(3)]);
  const b = Ring.seeded(RANGE, p(2), [SELF, p(2), p(3)]);
  const bAlloc = new Allocator(b);
  bAlloc.donate(p(4), 64);
  const other = Ring.seeded(parseCidr('10.40.0.0/16'), p(2), [p(2)]);
  return [
    encodeIpam({ kind: 'ring', ring: a.state() }),
    encodeIpam({ kind: 'ring', ring: b.state() }),
    encodeIpam({ kind: 'ring', ring: other.state() }),
    encodeIpam({ kind: 'space-request', want: 2 ** 32 }),
    encodeIpam({ kind: 'space-request', want: 16 }),
  ];
}

const wireToken = fc.tuple(
  fc.oneof(fc.constantFrom(0x0a200000, 0x0a200100, 0x0a200200, 0x0a2003ff, 0x0a200400), edgeInt),
  peerBytes,
  fc.oneof(fc.constantFrom(1, 2, 3), edgeInt),
  fc.oneof(fc.constantFrom(0, 256, 1024), edgeInt),
);
const ipamPool = new Pool(
  fc.oneof(
    {
      weight: 6,
      arbitrary: fc.tuple(
        fc.constant(1),
        fc.constant(1),
        fc.tuple(
          fc.oneof(fc.constant(0x0a200000), edgeInt),
          fc.oneof(fc.constant(22), fc.integer({ min: -1, max: 33 })),
          fc.oneof(fc.constant(0), edgeInt),
          fc.array(wireToken, { maxLength: 6 }),
        ),
      ),
    },
    { weight: 2, arbitrary: fc.tuple(fc.constant(1), fc.constant(2), edgeInt) },
    { weight: 1, arbitrary: fc.array(oddValue, { maxLength: 4 }) },
  ),
  pack,
  31,
);

function newIpam(): IpamGossiper {
  return new IpamGossiper(new Ipam(new Allocator(Ring.seeded(RANGE, SELF, [SELF, p(2), p(3)])), nullGossip));
}

let ipam = newIpam();
let ipamRuns = 0;

/** ipamGossip fuzzes IPAM gossip: decodeMessage, ringProblem, Ring.merge, space requests. */
export const ipamGossip: FuzzTarget = {
  name: 'gossip-ipam',
  parsers: [
    'router/ipam/ipam.ts: IpamGossiper.onGossip/onGossipUnicast → decodeMessage, Ipam.mergeRing, Ipam.onSpaceRequest',
    'router/ipam/ring.ts: ringProblem, Ring.merge; router/ipam/allocator.ts: Allocator.donate',
  ],
  maxLen: 4096,
  seeds: ipamSeeds,
  generate: (rand) => ipamPool.next(rand),
  run(input: Uint8Array): string {
    if (++ipamRuns % RESET_EVERY === 0) ipam = newIpam();
    const g = ipam;
    return gossipRun(
      input,
      (b) => g.onGossip(SRC, b),
      (b) => g.onGossipUnicast(SRC, b),
      decodeIpam,
      true,
    );
  },
};

// ---- DNS records ----

function dnsSeeds(): Uint8Array[] {
  const other = new DnsRecords({ self: p(2), incarnation: 3 });
  const out: Uint8Array[] = [];
  for (const [owner, name, addr] of [
    ['c1', 'db.weft.local', 0x0a200001],
    ['c1', 'db.weft.local', 0x0a200002],
    ['c2', 'web.weft.local', 0x0a200003],
    ['weft:extern', 'legacy.weft.local', 0x0a200909],
  ] as const) {
    const d = other.add(owner, name, addr);
    if (d !== undefined) out.push(d);
  }
  const rm = other.remove('c1');
  if (rm !== undefined) out.push(rm);
  out.push(other.fullState());
  out.push(new DnsRecords({ self: SELF, incarnation: 9 }).fullState()); // ourselves, a newer incarnation
  return out;
}

const wireRecord = fc.tuple(
  dnsName,
  fc.oneof(fc.constantFrom(0x0a200001, 0, 0xffffffff), edgeInt),
  fc.oneof(fc.constantFrom(1, 2, 3), edgeInt),
  fc.oneof(fc.boolean(), oddValue),
);
const wireSection = fc.tuple(
  peerBytes,
  fc.oneof(fc.constantFrom(0, 3, 4), edgeInt),
  fc.oneof(fc.constantFrom(0, 1, 5), edgeInt),
  fc.array(
    fc.tuple(
      fc.oneof(fc.constantFrom('c1', 'c2', 'weft:extern', ''), fc.string()),
      fc.array(wireRecord, { maxLength: 4 }),
    ),
    {
      maxLength: 3,
    },
  ),
);
const dnsPool = new Pool(
  fc.oneof(
    { weight: 8, arbitrary: fc.tuple(fc.constant(1), fc.array(wireSection, { maxLength: 3 })) },
    { weight: 1, arbitrary: fc.tuple(oddValue, oddValue) },
  ),
  pack,
  41,
);

function newDns(): DnsGossiper {
  let now = 0;
  const records = new DnsRecords({ self: SELF, incarnation: 4, now: () => (now += 1000) });
  records.add('c9', 'self.weft.local', 0x0a200009);
  return new DnsGossiper(records);
}

let dns = newDns();
let dnsRuns = 0;

/** dnsGossip fuzzes DNS record gossip: decodeDnsMessage and DnsRecords.merge. */
export const dnsGossip: FuzzTarget = {
  name: 'gossip-dns',
  parsers: [
    'dns/records.ts: DnsGossiper.onGossip/onGossipUnicast → decodeDnsMessage, DnsRecords.merge (mergeSection, restamp)',
  ],
  maxLen: 4096,
  seeds: dnsSeeds,
  generate: (rand) => dnsPool.next(rand),
  run(input: Uint8Array): string {
    if (++dnsRuns % RESET_EVERY === 0) dns = newDns();
    const g = dns;
    return gossipRun(
      input,
      (b) => g.onGossip(SRC, b),
      (b) => g.onGossipUnicast(SRC, b),
      decodeDnsMessage,
      false,
    );
  },
};
