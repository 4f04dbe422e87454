import net from 'node:net';
import { z } from 'zod';

/** IP addresses compared alike however they are spelt, and the allow-list setting of host names, IPs and CIDRs. */

/** WEBHOOK_ALLOWED_HOSTS, parsed: exact host names, and address ranges (single IPs become /32 or /128). */
export interface AllowedHosts {
  hostnames: string[];
  ranges: Array<{ network: string; prefix: number; family: 'ipv4' | 'ipv6' }>;
}

export const NO_ALLOWED_HOSTS: AllowedHosts = { hostnames: [], ranges: [] };

/** The zod setting for WEBHOOK_ALLOWED_HOSTS: comma-separated host names, IPs or CIDRs; a typo fails at boot. */
export const allowedHostsSetting = z
  .string()
  .default('')
  .transform((value, ctx): AllowedHosts => {
    const allowed: AllowedHosts = { hostnames: [], ranges: [] };
    for (const entry of value.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean)) {
      const [address, bits] = entry.split('/');
      const family = net.isIP(address);
      const prefix = bits === undefined ? (family === 6 ? 128 : 32) : Number(bits);
      if (family !== 0 && Number.isInteger(prefix) && prefix >= 0 && prefix <= (family === 6 ? 128 : 32)) {
        allowed.ranges.push({ network: canonicalAddress(address), prefix, family: family === 6 ? 'ipv6' : 'ipv4' });
      } else if (bits === undefined && /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(entry)) {
        allowed.hostnames.push(entry);
      } else {
        ctx.addIssue({ code: 'custom', message: `expected host names, IPs or CIDRs separated by commas, got "${entry}"` });
        return z.NEVER;
      }
    }
    return allowed;
  });

/** Expands an IPv6 address to eight 16-bit groups (handles `::` and a trailing dotted quad); null if not IPv6. */
export function ipv6Groups(address: string): number[] | null {
  if (net.isIPv6(address) === false) return null;
  let text = address.toLowerCase().replace(/%.*$/, '');
  const quad = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (quad) {
    const [a, b, c, d] = quad[1].split('.').map(Number);
    text = text.slice(0, -quad[1].length) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const zeros = tail === undefined ? [] : Array(8 - left.length - right.length).fill('0');
  return [...left, ...zeros, ...right].map((g) => parseInt(g, 16));
}

/** The IPv4 address embedded in an IPv4-mapped, IPv4-compatible, NAT64 or 6to4 IPv6 address. */
export function embeddedIpv4(groups: number[]): string | null {
  const quad = (hi: number, lo: number) => `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  const zeroThrough = (n: number) => groups.slice(0, n).every((g) => g === 0);
  if (zeroThrough(5) && groups[5] === 0xffff) return quad(groups[6], groups[7]); // ::ffff:a.b.c.d
  if (zeroThrough(6) && (groups[6] !== 0 || groups[7] > 1)) return quad(groups[6], groups[7]); // ::a.b.c.d
  if (groups[0] === 0x64 && groups[1] === 0xff9b && groups.slice(2, 6).every((g) => g === 0)) return quad(groups[6], groups[7]);
  if (groups[0] === 0x2002) return quad(groups[1], groups[2]);
  return null;
}

/** One spelling per address, so range checks and allow-list entries compare alike. */
export function canonicalAddress(address: string): string {
  const groups = ipv6Groups(address);
  return groups ? groups.map((g) => g.toString(16)).join(':') : address;
}
