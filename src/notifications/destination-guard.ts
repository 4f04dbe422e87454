import dns from 'node:dns';
import net from 'node:net';
import { canonicalAddress, embeddedIpv4, ipv6Groups, NO_ALLOWED_HOSTS, type AllowedHosts } from '../lib/ip-addresses';

/**
 * The SSRF guard for webhook URLs: a destination whose address is private, loopback, link-local, unique-local,
 * multicast or otherwise not on the public internet is refused unless WEBHOOK_ALLOWED_HOSTS names its host or covers
 * its address. Checked when a URL is registered and again on every connection (DNS can change in between). The
 * allow-list's parsing and the address arithmetic are in src/lib/ip-addresses.ts.
 */

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
