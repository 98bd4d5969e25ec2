/**
 * UpstreamServer: one recursive resolver's address as Upstream takes it (from `--dns-upstream` or
 * resolv.conf: IPv4 or IPv6, optional port), parsed into the form the sockets want.
 */
import net from 'node:net';
import ipaddr from 'ipaddr.js';
import { ConfigError, isIPv4 } from '../common/index.js';
import { DNS_PORT } from './defaults.js';

/** UpstreamServer is one parsed upstream address. */
export interface UpstreamServer {
  /** address is dotted IPv4 or RFC 5952 IPv6 text (a zone id such as `%eth0` kept). */
  readonly address: string;
  readonly port: number;
  readonly family: 'udp4' | 'udp6';
  /** name is `address:port` or `[address]:port`, as stats and errors show it. */
  readonly name: string;
}

/** canonicalIPv6 returns RFC 5952 text for an IPv6 address (zone id kept), or undefined for anything else. */
export function canonicalIPv6(s: string): string | undefined {
  if (!net.isIPv6(s) || !ipaddr.IPv6.isValid(s)) return undefined;
  return ipaddr.IPv6.parse(s).toRFC5952String();
}

/**
 * parseUpstreamServer parses `ipv4`, `ipv4:port`, `ipv6`, `[ipv6]` or `[ipv6]:port`; the port
 * defaults to 53. Host names are refused (resolving them would need the resolver being built).
 * Throws ConfigError.
 */
export function parseUpstreamServer(s: string): UpstreamServer {
  const text = s.trim();
  let host: string;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (bracketed !== null) {
    host = bracketed[1] ?? '';
    portText = bracketed[2];
  } else if (net.isIPv6(text)) {
    host = text;
  } else {
    const m = /^([^:]+)(?::(\d+))?$/.exec(text);
    host = m?.[1] ?? '';
    portText = m?.[2];
  }
  const port = portText === undefined ? DNS_PORT : Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new ConfigError(`invalid upstream server "${s}": port must be 1-65535`);
  }
  if (isIPv4(host)) return { address: host, port, family: 'udp4', name: `${host}:${port}` };
  const v6 = canonicalIPv6(host);
  if (v6 !== undefined) return { address: v6, port, family: 'udp6', name: `[${v6}]:${port}` };
  throw new ConfigError(`invalid upstream server "${s}": want ipv4[:port] or [ipv6]:port`);
}

/** sameAddress says whether a datagram's source address text is `server`'s address (IPv6 compared canonically). */
export function sameAddress(address: string, server: UpstreamServer): boolean {
  if (address === server.address) return true;
  return server.family === 'udp6' && canonicalIPv6(address) === server.address;
}
