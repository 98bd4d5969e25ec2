/**
 * resolv.conf(5): the host's resolver configuration, read for the upstream servers the DNS
 * forwards to, with our own listen addresses removed so that we never forward to ourselves.
 */
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import { isIPv4, WeftError } from '../common/index.js';
import { DNS_PORT } from './defaults.js';
import { canonicalIPv6, parseUpstreamServer } from './upstream-server.js';

/** RESOLV_CONF_PATH is where the host's resolver configuration lives. */
export const RESOLV_CONF_PATH = '/etc/resolv.conf';

/** ResolvConfOptions are the `options` line's settings that a forwarder may care about. */
export interface ResolvConfOptions {
  ndots?: number;
  /** timeoutSeconds is `timeout:n` (glibc caps it at 30). */
  timeoutSeconds?: number;
  /** attempts is `attempts:n` (glibc caps it at 5). */
  attempts?: number;
  rotate: boolean;
  edns0: boolean;
  /** other lists the options we do not interpret, as written. */
  other: string[];
}

/** ResolvConf is what parseResolvConf found. */
export interface ResolvConf {
  /** nameservers are IPv4 (dotted) and IPv6 (RFC 5952) addresses in file order, duplicates dropped; port 53 is implied. */
  nameservers: string[];
  /** search is the last `search` or `domain` line's domains, lower-cased, trailing dot dropped. */
  search: string[];
  options: ResolvConfOptions;
  /** notes say which lines were skipped and why, one line each, for the caller to log. */
  notes: string[];
}

function optionNumber(value: string, max: number): number | undefined {
  if (!/^\d{1,6}$/.test(value)) return undefined;
  return Math.min(Number(value), max);
}

/**
 * parseResolvConf reads resolv.conf(5) text. It never throws: comments (`#` or `;` to the end of
 * a line), blank lines and unknown keywords are skipped, bad lines are reported in `notes`. It
 * returns exactly what the file says: no nameserver line means an empty list (glibc would fall
 * back to 127.0.0.1, which for a DNS server on this host is usually itself).
 */
export function parseResolvConf(text: string): ResolvConf {
  const out: ResolvConf = {
    nameservers: [],
    search: [],
    options: { rotate: false, edns0: false, other: [] },
    notes: [],
  };
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] ?? '').replace(/[#;].*$/, '').trim();
    if (line === '') continue;
    const [keyword = '', ...args] = line.split(/\s+/);
    const where = `line ${i + 1}`;
    switch (keyword) {
      case 'nameserver': {
        const addr = args[0] ?? '';
        const v = isIPv4(addr) ? addr : canonicalIPv6(addr);
        if (v === undefined) out.notes.push(`${where}: skipped nameserver "${addr}": not an IP address`);
        else if (out.nameservers.includes(v)) out.notes.push(`${where}: skipped duplicate nameserver ${v}`);
        else out.nameservers.push(v);
        break;
      }
      case 'search':
      case 'domain':
        out.search = args.map((d) => d.toLowerCase().replace(/\.$/, '')).filter((d) => d !== '');
        break;
      case 'options':
        for (const opt of args) {
          const colon = opt.indexOf(':');
          const name = colon < 0 ? opt : opt.slice(0, colon);
          const value = colon < 0 ? '' : opt.slice(colon + 1);
          if (name === 'ndots' && optionNumber(value, 15) !== undefined) out.options.ndots = optionNumber(value, 15);
          else if (name === 'timeout' && optionNumber(value, 30) !== undefined)
            out.options.timeoutSeconds = optionNumber(value, 30);
          else if (name === 'attempts' && optionNumber(value, 5) !== undefined)
            out.options.attempts = optionNumber(value, 5);
          else if (opt === 'rotate') out.options.rotate = true;
          else if (opt === 'edns0') out.options.edns0 = true;
          else out.options.other.push(opt);
        }
        break;
      case 'sortlist':
        break;
      default:
        out.notes.push(`${where}: skipped unknown keyword "${keyword.slice(0, 40)}"`);
    }
  }
  return out;
}

/**
 * excludeNameservers drops nameservers that are our own DNS server, so that we never forward a
 * query to ourselves. `exclude` lists our listen addresses (`ip`, `ip:port`, `[ipv6]:port`);
 * only those on port 53 can collide with a resolv.conf nameserver. A wildcard (`0.0.0.0`, `::`)
 * stands for itself and every address in `localAddresses` of its family. Other loopback
 * addresses stay: a stub resolver such as systemd-resolved on 127.0.0.53 is a fine upstream.
 * Throws ConfigError on an unparsable `exclude` entry.
 */
export function excludeNameservers(
  nameservers: readonly string[],
  exclude: readonly string[],
  localAddresses: readonly string[] = [],
): { kept: string[]; excluded: string[] } {
  const ours = new Set<string>();
  for (const e of exclude) {
    const s = parseUpstreamServer(e);
    if (s.port !== DNS_PORT) continue;
    ours.add(s.address);
    if (s.address === '0.0.0.0' || s.address === '::') {
      for (const a of localAddresses) {
        const v = isIPv4(a) ? a : canonicalIPv6(a);
        if (v !== undefined && isIPv4(v) === (s.family === 'udp4')) ours.add(v);
      }
    }
  }
  const kept: string[] = [];
  const excluded: string[] = [];
  for (const n of nameservers) (ours.has(n) ? excluded : kept).push(n);
  return { kept, excluded };
}

/** LoadResolvConfOptions configure loadResolvConf. */
export interface LoadResolvConfOptions {
  /** path defaults to /etc/resolv.conf. */
  readonly path?: string;
  /** exclude lists our own DNS listen addresses; see excludeNameservers. */
  readonly exclude?: readonly string[];
  /** localAddresses lists this host's interface addresses (default: os.networkInterfaces()). */
  readonly localAddresses?: () => readonly string[];
}

function interfaceAddresses(): string[] {
  const out: string[] = [];
  for (const list of Object.values(os.networkInterfaces())) for (const a of list ?? []) out.push(a.address);
  return out;
}

/**
 * loadResolvConf reads and parses the host's resolv.conf and removes our own listen addresses
 * from its nameservers (see excludeNameservers); `excluded` lists what was removed. A missing
 * file gives an empty result with a note. Other read failures throw WeftError EWEFT_SYSTEM.
 */
export async function loadResolvConf(
  options: LoadResolvConfOptions = {},
): Promise<ResolvConf & { excluded: string[] }> {
  const path = options.path ?? RESOLV_CONF_PATH;
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      const conf = parseResolvConf('');
      conf.notes.push(`${path} does not exist: no upstream nameservers`);
      return { ...conf, excluded: [] };
    }
    throw new WeftError('EWEFT_SYSTEM', `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  const conf = parseResolvConf(text);
  const local = (options.localAddresses ?? interfaceAddresses)();
  const { kept, excluded } = excludeNameservers(conf.nameservers, options.exclude ?? [], local);
  for (const e of excluded) conf.notes.push(`skipped nameserver ${e}: it is our own dns listen address`);
  return { ...conf, nameservers: kept, excluded };
}
