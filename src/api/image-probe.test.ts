import { allowedHostsSetting, NO_ALLOWED_HOSTS } from '../lib/ip-addresses';
import { PNG_BYTES, startImageServer, type ImageServer } from '../../test/image-server';
import { IMAGE_MAX_BYTES, probeImage, type ImageRefusalReason } from './image-probe';

const loopback = allowedHostsSetting.parse('127.0.0.0/8');

describe('checking an input image URL', () => {
  let images: ImageServer;
  // A small limit, so the body-reading case streams kilobytes rather than megabytes.
  const maxBytes = 64 * 1024;
  beforeAll(async () => {
    images = await startImageServer({ hugeBytes: maxBytes * 4 });
  });
  afterAll(async () => {
    await images.close();
  });

  const probe = (path: string, extra: Partial<Parameters<typeof probeImage>[1]> = {}) =>
    probeImage(`${images.url}${path}`, { allowedHosts: loopback, timeoutMs: 2_000, maxBytes, ...extra });
  const refusal = async (path: string, extra: Partial<Parameters<typeof probeImage>[1]> = {}): Promise<{ reason: ImageRefusalReason; message: string }> => {
    try {
      await probe(path, extra);
    } catch (err) {
      const { reason, message } = err as { reason: ImageRefusalReason; message: string };
      return { reason, message };
    }
    throw new Error(`${path} was accepted`);
  };

  test('an image is accepted on its HEAD alone, with its type and size', async () => {
    const before = images.requests.length;
    await expect(probe('/cat.png')).resolves.toEqual({ contentType: 'image/png', bytes: PNG_BYTES.length });
    await expect(probe('/photo.jpg')).resolves.toEqual({ contentType: 'image/jpeg', bytes: PNG_BYTES.length });
    expect(images.requests.slice(before).map((r) => r.method)).toEqual(['HEAD', 'HEAD']);
  });

  test('a server that refuses HEAD is asked for the first byte, and the size read from its range', async () => {
    const before = images.requests.length;
    await expect(probe('/no-head.png')).resolves.toEqual({ contentType: 'image/png', bytes: PNG_BYTES.length });
    expect(images.requests.slice(before)).toEqual([
      { method: 'HEAD', path: '/no-head.png', range: undefined },
      { method: 'GET', path: '/no-head.png', range: 'bytes=0-0' },
    ]);
  });

  test('what is not an image, too large, missing or silent is refused, saying which', async () => {
    expect(await refusal('/page.html')).toEqual({ reason: 'not_an_image', message: 'its content type is text/html, not image/*' });
    expect(await refusal('/huge.png')).toEqual({ reason: 'too_large', message: `it is ${maxBytes * 4} bytes; at most ${maxBytes} bytes are accepted` });
    expect(await refusal('/missing.png')).toEqual({ reason: 'unreachable', message: 'answered 404' });
    const started = Date.now();
    expect(await refusal('/hang.png', { timeoutMs: 300 })).toEqual({ reason: 'unreachable', message: 'no answer within 300 ms' });
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  test('without a length the body is read, and reading stops past the limit', async () => {
    expect(await refusal('/chunked.png')).toEqual({ reason: 'too_large', message: `it is over ${maxBytes} bytes; at most ${maxBytes} bytes are accepted` });
    // Within the limit, the body read is its size.
    await expect(probe('/chunked.png', { maxBytes: maxBytes * 8 })).resolves.toEqual({ contentType: 'image/png', bytes: maxBytes * 4 });
  });

  test('redirects are followed only to addresses the guard lets through', async () => {
    await expect(probe('/redirect-to-cat')).resolves.toEqual({ contentType: 'image/png', bytes: PNG_BYTES.length });
    const before = images.requests.length;
    expect(await refusal('/redirect-to-private')).toEqual({ reason: 'refused_address', message: '10.0.0.1 is not a public address' });
    expect(images.requests.slice(before).map((r) => r.path)).toEqual(['/redirect-to-private']);
  });

  test('private, loopback and link-local addresses are refused without a request, unless allow-listed', async () => {
    const before = images.requests.length;
    expect(await refusal('/cat.png', { allowedHosts: NO_ALLOWED_HOSTS })).toEqual({ reason: 'refused_address', message: '127.0.0.1 is not a public address' });
    for (const url of ['http://169.254.169.254/latest/meta-data', 'http://10.1.2.3/cat.png', 'http://[::1]/cat.png']) {
      await expect(probeImage(url, { allowedHosts: loopback, timeoutMs: 1_000 })).rejects.toMatchObject({ reason: 'refused_address' });
    }
    const resolvesPrivately = async () => [{ address: '192.168.1.20', family: 4 }];
    await expect(probeImage('http://images.example/cat.png', { allowedHosts: NO_ALLOWED_HOSTS, timeoutMs: 1_000, lookup: resolvesPrivately })).rejects.toMatchObject({
      reason: 'refused_address',
      message: 'images.example resolves to 192.168.1.20 is not a public address',
    });
    expect(images.requests.length).toBe(before);
  });

  test('the limit is 10 MB by default', () => {
    expect(IMAGE_MAX_BYTES).toBe(10 * 1024 * 1024);
  });
});
