import dns from 'node:dns';
import net from 'node:net';
import { z } from 'zod';

/**
 * The SSRF guard for webhook URLs: a destination whose address is private, loopback, link-local, unique-local,
 * multicast or otherwise not on the public internet is refused unless WEBHOOK_ALLOWED_HOSTS names its host or covers
 * its address. Checked when a URL is registered and again on every connection (DNS can change in between).
 */

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

/** Ranges that are not the public internet (IANA special-purpose registries). */
const NON_PUBLIC = new net.BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.88.99.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15],
  ['198.51.100.0', 24], ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) NON_PUBLIC.addSubnet(network, prefix, 'ipv4');
for (const [network, prefix] of [
  ['::', 128], ['::1', 128], ['100::', 64], ['2001::', 32], ['2001:db8::', 32], ['fc00::', 7], ['fe80::', 10],
  ['fec0::', 10], ['ff00::', 8],
] as const) NON_PUBLIC.addSubnet(network, prefix, 'ipv6');

/** Expands an IPv6 address to eight 16-bit groups (handles `::` and a trailing dotted quad); null if not IPv6. */
function ipv6Groups(address: string): number[] | null {
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
function embeddedIpv4(groups: number[]): string | null {
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

function inAllowedRange(address: string, family: 'ipv4' | 'ipv6', allowed: AllowedHosts): boolean {
  const list = new net.BlockList();
  for (const r of allowed.ranges) if (r.family === family) list.addSubnet(r.network, r.prefix, r.family);
  return list.check(address, family);
}

/** Why an address may not be reached, or null when it may. */
export function addressRefusal(address: string, allowed: AllowedHosts = NO_ALLOWED_HOSTS): string | null {
  const groups = ipv6Groups(address);
  if (groups) {
    const v4 = embeddedIpv4(groups);
    if (v4) return inAllowedRange(canonicalAddress(address), 'ipv6', allowed) ? null : addressRefusal(v4, allowed);
    const canonical = canonicalAddress(address);
    if (!NON_PUBLIC.check(canonical, 'ipv6') || inAllowedRange(canonical, 'ipv6', allowed)) return null;
    return `${address} is not a public address`;
  }
  if (!net.isIPv4(address)) return `${address} is not an IP address`;
  if (!NON_PUBLIC.check(address, 'ipv4') || inAllowedRange(address, 'ipv4', allowed)) return null;
  return `${address} is not a public address`;
}

export type LookupAll = (hostname: string) => Promise<Array<{ address: string; family: number }>>;

const systemLookup: LookupAll = (hostname) => dns.promises.lookup(hostname, { all: true, verbatim: true });

/** Look-ups of one bounded lookup that may wait for a turn; more are refused at once. */
const MAX_WAITING_LOOKUPS = 100;

/**
 * The system's lookup (or `lookup`), bounded: an answer that takes longer than `timeoutMs` counts as none, and at most
 * `maxInFlight` look-ups run at once. getaddrinfo runs on libuv's four-thread pool and keeps running after we stop
 * waiting, so a flood of names that resolve slowly would otherwise hold every thread (file reads, crypto) for the
 * resolver's own timeout; the others wait for a turn within their own time limit.
 */
export function boundedLookup({ timeoutMs, maxInFlight = 2 }: { timeoutMs: number; maxInFlight?: number }, lookup: LookupAll = systemLookup): LookupAll {
  let running = 0;
  const waiting: Array<() => void> = [];
  const release = () => {
    running--;
    waiting.shift()?.();
  };
  return (hostname) =>
    new Promise((resolve, reject) => {
      let settled = false;
      const settle = (finish: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        finish();
      };
      const timer = setTimeout(() => settle(() => reject(new RefusedDestinationError(`${hostname} did not resolve within ${timeoutMs} ms`))), timeoutMs);
      const run = () => {
        running++;
        // Its time ran out while it waited: the turn passes on.
        if (settled) return release();
        lookup(hostname)
          .then(
            (addresses) => settle(() => resolve(addresses)),
            (err: unknown) => settle(() => reject(err)),
          )
          .finally(release);
      };
      if (running < maxInFlight) run();
      else if (waiting.length < MAX_WAITING_LOOKUPS) waiting.push(run);
      else settle(() => reject(new RefusedDestinationError(`${hostname} could not be looked up now: too many look-ups waiting`)));
    });
}

export class RefusedDestinationError extends Error {
  override name = 'RefusedDestinationError';
}

function hostOf(url: URL): string {
  return url.hostname.replace(/^\[(.*)\]$/, '$1').toLowerCase();
}

/** Throws RefusedDestinationError unless the URL is http(s) and every address its host resolves to may be reached. */
export async function assertDestinationAllowed(rawUrl: string, allowed: AllowedHosts, lookup: LookupAll = systemLookup): Promise<void> {
  let url: URL;
  try {
    url = new URL(rawUrl);
  } catch {
    throw new RefusedDestinationError('not a valid URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new RefusedDestinationError('only http and https URLs are allowed');
  const host = hostOf(url);
  if (allowed.hostnames.includes(host)) return;
  if (net.isIP(host)) {
    const refusal = addressRefusal(host, allowed);
    if (refusal) throw new RefusedDestinationError(refusal);
    return;
  }
  let addresses: Array<{ address: string }>;
  try {
    addresses = await lookup(host);
  } catch (err) {
    if (err instanceof RefusedDestinationError) throw err;
    throw new RefusedDestinationError(`${host} does not resolve`);
  }
  if (addresses.length === 0) throw new RefusedDestinationError(`${host} does not resolve`);
  for (const { address } of addresses) {
    const refusal = addressRefusal(address, allowed);
    if (refusal) throw new RefusedDestinationError(`${host} resolves to ${refusal}`);
  }
}

/**
 * A `lookup` for http.request that refuses non-public addresses at connect time, so a host cannot pass the check and
 * then resolve elsewhere for the connection (DNS rebinding).
 */
export function guardedLookup(allowed: AllowedHosts, lookup: LookupAll = systemLookup): net.LookupFunction {
  return (hostname, options, callback) => {
    lookup(hostname)
      .then((addresses) => {
        const host = hostname.toLowerCase();
        if (!allowed.hostnames.includes(host)) {
          for (const { address } of addresses) {
            const refusal = addressRefusal(address, allowed);
            if (refusal) throw new RefusedDestinationError(`${hostname} resolves to ${refusal}`);
          }
        }
        if (addresses.length === 0) throw new RefusedDestinationError(`${hostname} does not resolve`);
        const wanted = options.family === 4 || options.family === 6 ? addresses.filter((a) => a.family === options.family) : addresses;
        if (options.all) (callback as (err: null, all: typeof addresses) => void)(null, wanted);
        else callback(null, wanted[0]?.address ?? addresses[0].address, wanted[0]?.family ?? addresses[0].family);
      })
      .catch((err: Error) => callback(err as NodeJS.ErrnoException, '', 0));
  };
}
