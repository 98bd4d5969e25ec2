/**
 * lookupA asks a DNS server (`host:port`) for a name's A records over UDP, the way a container's
 * resolver does; for `weft dns-lookup`. Uses dns2 for the wire format (not a hot path).
 */

import { randomInt } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { Packet } from 'dns2';
import { WeftError } from '../common/errors.js';

/** lookupA resolves `name` at `server` (a.b.c.d:port); [] for NXDOMAIN or no A records. */
export function lookupA(server: string, name: string, timeoutMs = 2_000): Promise<string[]> {
  const [host, port] = server.split(':') as [string, string];
  const query = new Packet();
  query.header.id = randomInt(0, 65536);
  query.header.rd = 1;
  query.questions.push(new Packet.Question(name, Packet.TYPE.A, Packet.CLASS.IN));
  const sock = createSocket('udp4');
  return new Promise<string[]>((resolve, reject) => {
    const timer = setTimeout(() => {
      sock.close();
      reject(new WeftError('EWEFT_UNAVAILABLE', `no answer from the DNS server at ${server}`));
    }, timeoutMs);
    sock.on('message', (msg) => {
      let reply: ReturnType<typeof Packet.parse>;
      try {
        reply = Packet.parse(msg);
      } catch {
        return;
      }
      if (reply.header.id !== query.header.id) return;
      clearTimeout(timer);
      sock.close();
      resolve(
        reply.answers
          .filter((a: { type: number; address?: string }) => a.type === Packet.TYPE.A && a.address !== undefined)
          .map((a: { address?: string }) => a.address as string),
      );
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      sock.close();
      reject(new WeftError('EWEFT_SYSTEM', `dns query to ${server} failed: ${err.message}`));
    });
    sock.send(query.toBuffer(), Number(port), host);
  });
}
