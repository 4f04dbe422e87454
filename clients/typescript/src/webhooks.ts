import type { WebhookEvent } from './types.js';

/**
 * Verifies a webhook delivery as the service signs it (Standard Webhooks): `webhook-signature` holds one or more
 * space-separated `v1,<base64 HMAC-SHA256>` entries (two during an endpoint's secret rotation), each over
 * `<webhook-id>.<webhook-timestamp>.<raw body>` keyed with the base64 bytes after the secret's `whsec_`; the timestamp must
 * be within the tolerance of now. WebCrypto only, so it runs in Node 20+ and in browsers alike.
 */

export class WebhookVerificationError extends Error {
  override readonly name = 'WebhookVerificationError';
}

export type WebhookHeaders = Headers | Record<string, string | string[] | undefined>;

export interface VerifyOptions {
  /** How far the webhook-timestamp may be from now, in seconds (default 300, as the service's own check). */
  toleranceSeconds?: number;
  now?: Date;
}

const SECRET_PREFIX = 'whsec_';
const encoder = new TextEncoder();

function header(headers: WebhookHeaders, name: string): string | undefined {
  if (typeof (headers as Headers).get === 'function') return (headers as Headers).get(name) ?? undefined;
  const record = headers as Record<string, string | string[] | undefined>;
  const key = Object.keys(record).find((k) => k.toLowerCase() === name);
  const value = key === undefined ? undefined : record[key];
  return Array.isArray(value) ? value[0] : value;
}

function base64Bytes(text: string): Uint8Array | undefined {
  try {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    return undefined;
  }
}

function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/**
 * Resolves to the delivered event when one of the signatures is the secret's and the timestamp is fresh; rejects with
 * WebhookVerificationError otherwise. Pass the body exactly as received (a string or its bytes), before any JSON parsing.
 */
export async function verifyWebhook(body: string | Uint8Array, headers: WebhookHeaders, secret: string, options: VerifyOptions = {}): Promise<WebhookEvent> {
  const id = header(headers, 'webhook-id');
  const timestamp = header(headers, 'webhook-timestamp');
  const signatures = header(headers, 'webhook-signature');
  if (!id || !timestamp || !signatures) throw new WebhookVerificationError('missing webhook-id, webhook-timestamp or webhook-signature');
  const seconds = Number(timestamp);
  const now = (options.now ?? new Date()).getTime() / 1000;
  if (!/^\d+$/.test(timestamp) || Math.abs(now - seconds) > (options.toleranceSeconds ?? 300)) throw new WebhookVerificationError('webhook-timestamp is outside the tolerance');
  const keyBytes = base64Bytes(secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret);
  if (!keyBytes || keyBytes.length === 0) throw new WebhookVerificationError('the secret is not a whsec_ secret');
  const key = await crypto.subtle.importKey('raw', concat(keyBytes), { name: 'HMAC', hash: 'SHA-256' }, false, ['verify']);
  const bodyBytes = typeof body === 'string' ? encoder.encode(body) : body;
  const signed = concat(encoder.encode(`${id}.${timestamp}.`), bodyBytes);
  for (const entry of signatures.split(' ')) {
    if (!entry.startsWith('v1,')) continue;
    const signature = base64Bytes(entry.slice(3));
    // crypto.subtle.verify compares in constant time.
    if (signature && (await crypto.subtle.verify('HMAC', key, concat(signature), signed))) {
      const text = typeof body === 'string' ? body : new TextDecoder().decode(body);
      return JSON.parse(text) as WebhookEvent;
    }
  }
  throw new WebhookVerificationError('no signature matches the secret');
}
