import http from 'node:http';
import https from 'node:https';
import type { AllowedHosts } from '../lib/ip-addresses';
import { assertDestinationAllowed, guardedLookup, RefusedDestinationError, type LookupAll } from '../notifications/destination-guard';

/**
 * Checks an image URL before a job that starts from it is admitted: the destination through the SSRF guard (at the
 * check and again at connect, as webhook deliveries are), then a HEAD — a GET for the first byte when HEAD is refused —
 * for an `image/*` content type and a size of at most `maxBytes`. Without a length, the body is read, `maxBytes + 1`
 * bytes at most. Redirects are followed a few hops, each checked like the first. One deadline covers the whole check.
 */

export const IMAGE_MAX_BYTES = 10 * 1024 * 1024;
const MAX_REDIRECTS = 3;
const USER_AGENT = 'videogen-input-check/1';

export type ImageRefusalReason = 'refused_address' | 'unreachable' | 'not_an_image' | 'too_large';

export class ImageRefusedError extends Error {
  override name = 'ImageRefusedError';
  constructor(
    readonly reason: ImageRefusalReason,
    message: string,
  ) {
    super(message);
  }
}

export interface ImageProbeOptions {
  allowedHosts: AllowedHosts;
  timeoutMs: number;
  maxBytes?: number;
  lookup?: LookupAll;
}

export interface ProbedImage {
  /** The final URL's content type, without parameters, lower-case. */
  contentType: string;
  bytes: number;
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** Bytes of the body read (GET without a length only). */
  bodyBytes?: number;
}

/** The image's type and size, or an ImageRefusedError saying why it will not do. */
export async function probeImage(rawUrl: string, options: ImageProbeOptions): Promise<ProbedImage> {
  const deadline = AbortSignal.timeout(options.timeoutMs);
  try {
    return await probe(rawUrl, { ...options, maxBytes: options.maxBytes ?? IMAGE_MAX_BYTES }, deadline);
  } catch (err) {
    if (err instanceof ImageRefusedError) throw err;
    if (err instanceof RefusedDestinationError) throw new ImageRefusedError('refused_address', err.message);
    if (deadline.aborted) throw new ImageRefusedError('unreachable', `no answer within ${options.timeoutMs} ms`);
    const cause = (err as { cause?: unknown }).cause;
    if (cause instanceof RefusedDestinationError) throw new ImageRefusedError('refused_address', cause.message);
    throw new ImageRefusedError('unreachable', `could not be fetched: ${(err as Error).message ?? String(err)}`);
  }
}

async function probe(rawUrl: string, options: Required<Omit<ImageProbeOptions, 'lookup'>> & Pick<ImageProbeOptions, 'lookup'>, signal: AbortSignal): Promise<ProbedImage> {
  let url = rawUrl;
  for (let hop = 0; ; hop++) {
    // Literal addresses are refused here (never looked up); names are checked again at connect (guardedLookup).
    await assertDestinationAllowed(url, options.allowedHosts, options.lookup);
    let answer = await send(url, 'HEAD', options, signal);
    // Some servers (and URLs signed for GET only) refuse HEAD: ask for the first byte instead.
    if (answer.status >= 400 && answer.status !== 404 && answer.status !== 410) answer = await send(url, 'GET', options, signal, { range: true });
    if (isRedirect(answer.status)) {
      const location = answer.headers.location;
      if (!location) throw new ImageRefusedError('unreachable', `answered ${answer.status} without a Location`);
      if (hop >= MAX_REDIRECTS) throw new ImageRefusedError('unreachable', `more than ${MAX_REDIRECTS} redirects`);
      url = new URL(location, url).toString();
      continue;
    }
    if (answer.status < 200 || answer.status >= 300) throw new ImageRefusedError('unreachable', `answered ${answer.status}`);
    const contentType = mediaType(answer.headers['content-type']);
    if (!contentType.startsWith('image/')) throw new ImageRefusedError('not_an_image', `its content type is ${contentType || 'not given'}, not image/*`);
    const declared = declaredSize(answer);
    // No size said: read the body, stopping past the limit.
    const bytes = declared ?? (await send(url, 'GET', options, signal, { count: true })).bodyBytes ?? 0;
    if (bytes > options.maxBytes) {
      const size = declared === undefined ? `over ${options.maxBytes} bytes` : `${declared} bytes`;
      throw new ImageRefusedError('too_large', `it is ${size}; at most ${options.maxBytes} bytes are accepted`);
    }
    return { contentType, bytes };
  }
}

const isRedirect = (status: number) => status === 301 || status === 302 || status === 303 || status === 307 || status === 308;

function mediaType(header: string | undefined): string {
  return (header ?? '').split(';')[0].trim().toLowerCase();
}

/** The whole resource's size, as the answer says it: a range's total, or the length of a full answer. */
function declaredSize(answer: Answer): number | undefined {
  if (answer.bodyBytes !== undefined) return answer.bodyBytes;
  if (answer.status === 206) {
    const total = /\/(\d+)\s*$/.exec(answer.headers['content-range'] ?? '');
    return total ? Number(total[1]) : undefined;
  }
  const length = answer.headers['content-length'];
  return length !== undefined && /^\d+$/.test(length) ? Number(length) : undefined;
}

function send(
  url: string,
  method: 'HEAD' | 'GET',
  { allowedHosts, lookup, maxBytes }: { allowedHosts: AllowedHosts; lookup?: LookupAll; maxBytes: number },
  signal: AbortSignal,
  { range = false, count = false }: { range?: boolean; count?: boolean } = {},
): Promise<Answer> {
  const target = new URL(url);
  const transport = target.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = transport.request(target, {
      method,
      headers: { 'user-agent': USER_AGENT, accept: 'image/*', ...(range ? { range: 'bytes=0-0' } : {}) },
      lookup: guardedLookup(allowedHosts, lookup),
      // Its own connection each time: a pooled socket would skip the connect-time address check.
      agent: false,
      signal,
    });
    req.on('error', reject);
    req.on('response', (res) => {
      const answer: Answer = { status: res.statusCode ?? 0, headers: res.headers };
      if (!count || answer.status < 200 || answer.status >= 300) {
        res.destroy();
        return resolve(answer);
      }
      // A length given after all decides without the body.
      const length = declaredSize(answer);
      if (length !== undefined) {
        res.destroy();
        return resolve({ ...answer, bodyBytes: length });
      }
      let bytes = 0;
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        if (bytes > maxBytes) {
          res.destroy();
          resolve({ ...answer, bodyBytes: bytes });
        }
      });
      res.on('end', () => resolve({ ...answer, bodyBytes: bytes }));
      res.on('error', reject);
    });
    req.end();
  });
}
