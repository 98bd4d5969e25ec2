/**
 * The DNS folder's public surface: the only module control/, bench/, e2e/ and fuzz/ import from
 * dns/ (control/config.ts and control/cli.ts also import defaults.ts directly, which imports
 * nothing, so that the CLI starts without loading the server). See README.md.
 */

export { DNS_PORT, DNS_TTL_S } from './defaults.js';
export {
  DNS_CHANNEL,
  DNS_EXTERN_OWNER,
  DnsGossiper,
  type DnsRecord,
  DnsRecords,
  type DnsRecordsOptions,
  type DnsRecordsStats,
  decodeDnsMessage,
} from './records.js';
export { excludeNameservers, loadResolvConf, parseResolvConf, type ResolvConf } from './resolv-conf.js';
export { type DnsResult, DnsServer, type DnsServerOptions, type DnsServerStats } from './server.js';
export {
  type UdpSocketFactory,
  Upstream,
  UpstreamError,
  type UpstreamFailure,
  type UpstreamOptions,
  type UpstreamSocket,
  type UpstreamStats,
} from './upstream.js';
export { parseUpstreamServer, type UpstreamServer } from './upstream-server.js';
export {
  DNS_HEADER_LEN,
  DNS_TCP_MAX_BYTES,
  DNS_UDP_LEGACY_MAX_BYTES,
  EDNS_UDP_PAYLOAD_BYTES,
  FLAG_AA,
  FLAG_QR,
  FLAG_RA,
  FLAG_RD,
  FLAG_TC,
  QType,
  Rcode,
} from './wire.js';
