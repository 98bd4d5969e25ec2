/**
 * dns-server runs Weft's DNS server alone for bench/dns.ts: the same DnsServer and DnsRecords
 * the router runs, filled with the benchmark's names, on 127.0.0.1:PORT, until killed.
 *
 *   node dist/bench/dns-server.js PORT HOSTSFILE
 */
import { readFileSync } from 'node:fs';
import { type PeerName, parseIPv4 } from '../common/types.js';
import { DnsRecords, DnsServer } from '../dns/index.js';

const [portText, hostsFile] = process.argv.slice(2) as [string, string];
const records = new DnsRecords({ self: '02:00:00:00:00:01' as PeerName, incarnation: 1 });
for (const line of readFileSync(hostsFile, 'utf8').split('\n')) {
  const [addr, name] = line.split(/\s+/);
  if (addr && name) records.add(name, name, parseIPv4(addr));
}
const server = new DnsServer({
  domain: 'weft.local',
  records,
  allowed: () => true,
  inRange: (a) => a >>> 20 === parseIPv4('10.32.0.0') >>> 20,
});
await server.listen('127.0.0.1', Number(portText));
process.stdout.write('ready\n');
process.on('SIGTERM', () => process.exit(0));
