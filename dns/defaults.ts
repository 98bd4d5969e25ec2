/**
 * The DNS defaults that `weft launch` applies and its help text shows. This file imports
 * nothing, so control/config.ts and control/cli.ts may import it directly, without loading the
 * DNS server (and with it the router) at CLI start; everyone else takes these from dns/index.ts.
 */

/** DNS_PORT is the DNS port (RFC 1035 §4.2): the default of `--dns-port`, and of resolv.conf nameservers and upstream servers given without one. */
export const DNS_PORT = 53;
/** DNS_TTL_S is the default TTL of our answers (`--dns-ttl`), in seconds: short, so a container that goes away is forgotten fast. */
export const DNS_TTL_S = 1;
