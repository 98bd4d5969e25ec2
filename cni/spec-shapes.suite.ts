/**
 * The CNI spec's JSON shapes (spec 1.1 section 5, and the 0.3/0.4 results with `ips[].version`),
 * as strict zod schemas: a test that parses a plugin's output with them fails on a missing field,
 * a wrong type, or a field the version does not have.
 */
import { z } from 'zod';

const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;
const ip = z.string().regex(IPV4);
const cidr = z.string().refine((s) => {
  const [a, p] = s.split('/');
  return a !== undefined && IPV4.test(a) && p !== undefined && /^\d{1,2}$/.test(p) && Number(p) <= 32;
}, 'an IPv4 CIDR');
const uint = z.number().int().nonnegative();
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

const dns = z
  .object({
    nameservers: z.array(ip).optional(),
    domain: z.string().optional(),
    search: z.array(z.string()).optional(),
    options: z.array(z.string()).optional(),
  })
  .strict();

/** resultSchema is the ADD success result of `version`. */
export function resultSchema(version: string) {
  const v1 = !version.startsWith('0.');
  const v11 = version === '1.1.0';
  const iface = z
    .object({
      name: z.string().min(1).max(15),
      mac: z.string().regex(MAC).optional(),
      ...(v11 ? { mtu: uint.optional(), socketPath: z.string().optional(), pciID: z.string().optional() } : {}),
      sandbox: z.string().optional(),
    })
    .strict();
  const ipEntry = z
    .object({
      ...(v1 ? {} : { version: z.enum(['4', '6']) }),
      address: cidr,
      gateway: ip.optional(),
      interface: uint.optional(),
    })
    .strict();
  const route = z
    .object({
      dst: cidr,
      gw: ip.optional(),
      ...(v11
        ? {
            mtu: uint.optional(),
            advmss: uint.optional(),
            priority: uint.optional(),
            table: uint.optional(),
            scope: uint.optional(),
          }
        : {}),
    })
    .strict();
  return z
    .object({
      cniVersion: z.literal(version),
      interfaces: z.array(iface).optional(),
      ips: z.array(ipEntry).optional(),
      routes: z.array(route).optional(),
      dns: dns.optional(),
    })
    .strict()
    .superRefine((r, ctx) => {
      for (const x of r.ips ?? []) {
        if (x.interface !== undefined && (r.interfaces === undefined || x.interface >= r.interfaces.length)) {
          ctx.addIssue({ code: 'custom', message: `ips[].interface ${x.interface} is not an index of interfaces` });
        }
      }
    });
}

/** errorSchema is the error result. */
export const errorSchema = z
  .object({ cniVersion: z.string(), code: uint, msg: z.string().min(1), details: z.string().optional() })
  .strict();

/** versionSchema is the VERSION result. */
export const versionSchema = z
  .object({ cniVersion: z.string(), supportedVersions: z.array(z.string().regex(/^\d+\.\d+\.\d+$/)).min(1) })
  .strict();
