import { readFileSync } from 'node:fs';

/** KernelDrops are datagrams the kernel dropped before the router could read them. */
export interface KernelDrops {
  /** rcvbufErrors is the network namespace's UDP RcvbufErrors (every socket: receive buffer full). */
  rcvbufErrors: number;
  /** sockets maps a socket's name to the drops the kernel counted on it (/proc/net/udp "drops"). */
  sockets: Record<string, number>;
}

/**
 * parseUdpSnmp reads the `Udp:` header and value lines of /proc/net/snmp into a map from counter
 * name to value (empty when absent).
 */
export function parseUdpSnmp(text: string): Map<string, number> {
  const lines = text.split('\n').filter((l) => l.startsWith('Udp: '));
  const [names, values] = lines.map((l) => l.slice(5).trim().split(/\s+/));
  const out = new Map<string, number>();
  if (names === undefined || values === undefined || names.length !== values.length) return out;
  names.forEach((n, i) => {
    const v = Number(values[i]);
    if (Number.isFinite(v)) out.set(n, v);
  });
  return out;
}

/**
 * parseUdpSocketDrops reads /proc/net/udp and returns, per local port, the summed `drops` column
 * of the sockets bound to it (the last field of each row).
 */
export function parseUdpSocketDrops(text: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 13) continue;
    const local = f[1]?.split(':')[1];
    const drops = Number(f[f.length - 1]);
    if (local === undefined || !Number.isFinite(drops)) continue;
    const port = Number.parseInt(local, 16);
    if (!Number.isFinite(port)) continue;
    out.set(port, (out.get(port) ?? 0) + drops);
  }
  return out;
}

/**
 * readKernelDrops reads the kernel's UDP drop counters of this network namespace for the named
 * ports (e.g. { sleeve: 6783, vxlan: 6784 }); undefined where /proc is not readable.
 */
export function readKernelDrops(ports: Record<string, number>): KernelDrops | undefined {
  try {
    const snmp = parseUdpSnmp(readFileSync('/proc/net/snmp', 'utf8'));
    const byPort = parseUdpSocketDrops(readFileSync('/proc/net/udp', 'utf8'));
    const sockets: Record<string, number> = {};
    for (const [name, port] of Object.entries(ports)) sockets[name] = byPort.get(port) ?? 0;
    return { rcvbufErrors: snmp.get('RcvbufErrors') ?? 0, sockets };
  } catch {
    return undefined;
  }
}
