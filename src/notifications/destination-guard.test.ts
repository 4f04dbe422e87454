import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { allowedHostsSetting, NO_ALLOWED_HOSTS } from '../lib/ip-addresses';
import { addressRefusal, assertDestinationAllowed, boundedLookup, guardedLookup, RefusedDestinationError, type LookupAll } from './destination-guard';

const fakeDns =
  (records: Record<string, string[]>): LookupAll =>
  async (host) => {
    const addresses = records[host];
    if (!addresses) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    return addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
  };

describe('the webhook destination guard refuses addresses off the public internet', () => {
  test.each([
    '127.0.0.1', '127.255.0.9', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '169.254.169.254', '100.64.0.1',
    '0.0.0.0', '224.0.0.251', '255.255.255.255', '198.18.0.1',
    '::1', '::', 'fe80::1', 'fc00::1', 'fd12:3456::1', 'ff02::1', '2001:db8::1',
    '::ffff:127.0.0.1', '::ffff:7f00:1', '0:0:0:0:0:ffff:a00:1', '::ffff:169.254.169.254', '64:ff9b::10.0.0.1', '2002:c0a8:101::1', '::10.0.0.1',
  ])('%s is refused', (address) => {
    expect(addressRefusal(address)).toMatch(/not a public address/);
  });

  test.each(['93.184.216.34', '8.8.8.8', '172.32.0.1', '2606:4700::1111', '::ffff:8.8.8.8', '64:ff9b::8.8.8.8'])('%s is allowed', (address) => {
    expect(addressRefusal(address)).toBeNull();
  });

  test('WEBHOOK_ALLOWED_HOSTS lets listed ranges, addresses and host names through', () => {
    const allowed = allowedHostsSetting.parse('127.0.0.0/8, ::1, receiver.internal, 10.9.0.0/16');
    expect(allowed.hostnames).toEqual(['receiver.internal']);
    expect(addressRefusal('127.0.0.1', allowed)).toBeNull();
    expect(addressRefusal('::ffff:127.0.0.1', allowed)).toBeNull();
    expect(addressRefusal('::1', allowed)).toBeNull();
    expect(addressRefusal('10.9.4.4', allowed)).toBeNull();
    expect(addressRefusal('10.8.4.4', allowed)).toMatch(/not a public address/);
    expect(addressRefusal('169.254.169.254', allowed)).toMatch(/not a public address/);
  });

  test('a malformed WEBHOOK_ALLOWED_HOSTS entry fails to parse', () => {
    expect(allowedHostsSetting.safeParse('127.0.0.0/33').success).toBe(false);
    expect(allowedHostsSetting.safeParse('not a host!').success).toBe(false);
    expect(allowedHostsSetting.parse('')).toEqual(NO_ALLOWED_HOSTS);
  });

  test('URLs are checked by scheme, literal address and every address their host resolves to', async () => {
    const dns = fakeDns({ 'public.example': ['93.184.216.34'], 'sneaky.example': ['93.184.216.34', '10.0.0.5'], 'v6.example': ['fd00::1'] });
    await expect(assertDestinationAllowed('https://public.example/hook', NO_ALLOWED_HOSTS, dns)).resolves.toBeUndefined();
    await expect(assertDestinationAllowed('https://8.8.8.8/hook', NO_ALLOWED_HOSTS, dns)).resolves.toBeUndefined();
    for (const url of [
      'https://sneaky.example/hook',
      'https://v6.example/hook',
      'http://169.254.169.254/latest/meta-data',
      'http://[::ffff:127.0.0.1]:8080/',
      'http://[fe80::1]/',
      'https://nowhere.example/',
      'ftp://public.example/',
      'not a url',
    ]) {
      await expect(assertDestinationAllowed(url, NO_ALLOWED_HOSTS, dns)).rejects.toBeInstanceOf(RefusedDestinationError);
    }
    const allowed = allowedHostsSetting.parse('sneaky.example');
    await expect(assertDestinationAllowed('https://sneaky.example/hook', allowed, dns)).resolves.toBeUndefined();
  });

  test('the connection itself refuses a host that resolves to a private address (DNS rebinding)', async () => {
    const server = http.createServer((_req, res) => res.end('reached'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const rebinding = fakeDns({ 'rebind.example': ['127.0.0.1'] });
    const get = (lookup: ReturnType<typeof guardedLookup>) =>
      new Promise<string>((resolve, reject) => {
        http
          .get({ host: 'rebind.example', port, path: '/', lookup }, (res) => {
            res.setEncoding('utf8');
            let body = '';
            res.on('data', (c: string) => (body += c));
            res.on('end', () => resolve(body));
          })
          .on('error', reject);
      });
    try {
      await expect(get(guardedLookup(NO_ALLOWED_HOSTS, rebinding))).rejects.toThrow(/not a public address/);
      await expect(get(guardedLookup(allowedHostsSetting.parse('127.0.0.0/8'), rebinding))).resolves.toBe('reached');
    } finally {
      server.close();
    }
  });
});

describe('bounded DNS look-ups', () => {
  const never: LookupAll = () => new Promise(() => undefined);

  test('a name that does not resolve within the time limit is refused, by the check and at connect time', async () => {
    const lookup = boundedLookup({ timeoutMs: 50 }, never);
    await expect(lookup('slow.example')).rejects.toThrow(new RefusedDestinationError('slow.example did not resolve within 50 ms'));
    await expect(assertDestinationAllowed('https://slow.example/hook', NO_ALLOWED_HOSTS, lookup)).rejects.toThrow('slow.example did not resolve within 50 ms');
    const failed = await new Promise<NodeJS.ErrnoException | null>((resolve) => guardedLookup(NO_ALLOWED_HOSTS, lookup)('slow.example', {}, (err) => resolve(err)));
    expect(failed).toBeInstanceOf(RefusedDestinationError);
  });

  test('at most so many run at once; the others wait for a turn within their own time limit', async () => {
    const calls: string[] = [];
    let answer: () => void = () => undefined;
    const gated: LookupAll = (host) => {
      calls.push(host);
      return host === 'hung.example' ? never(host) : new Promise((resolve) => (answer = () => resolve([{ address: '93.184.216.34', family: 4 }])));
    };
    const lookup = boundedLookup({ timeoutMs: 200, maxInFlight: 1 }, gated);
    const first = lookup('quick.example');
    const second = lookup('queued.example');
    expect(calls).toEqual(['quick.example']);
    answer();
    await expect(first).resolves.toEqual([{ address: '93.184.216.34', family: 4 }]);
    await new Promise((r) => setImmediate(r));
    expect(calls).toEqual(['quick.example', 'queued.example']);
    answer();
    await expect(second).resolves.toHaveLength(1);

    // A look-up that hangs keeps its turn (its thread is still busy) after its caller gave up: the next one times out waiting.
    await expect(lookup('hung.example')).rejects.toThrow('did not resolve within 200 ms');
    await expect(lookup('after.example')).rejects.toThrow('did not resolve within 200 ms');
    expect(calls).not.toContain('after.example');
  });
});
