import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Standard Webhooks signatures (webhook-id, webhook-timestamp, webhook-signature; `whsec_` secrets).
 * Used for the backend's callbacks to us and for our deliveries to users' endpoints.
 */
export interface SignedHeaders {
  'webhook-id': string;
  'webhook-timestamp': string;
  'webhook-signature': string;
}

const PREFIX = 'whsec_';
const DEFAULT_TOLERANCE_SECONDS = 5 * 60;

export function generateWebhookSecret(): string {
  return PREFIX + randomBytes(24).toString('base64');
}

/** `whsec_` and the canonical base64 of 24 to 64 bytes (the Standard Webhooks range). */
export function isWebhookSecret(value: string): boolean {
  const key = value.slice(PREFIX.length);
  if (!value.startsWith(PREFIX) || !/^[A-Za-z0-9+/]+={0,2}$/.test(key) || key.length % 4 !== 0) return false;
  const bytes = Buffer.from(key, 'base64');
  return bytes.length >= 24 && bytes.length <= 64 && bytes.toString('base64') === key;
}

function secretKey(secret: string): Buffer {
  return Buffer.from(secret.startsWith(PREFIX) ? secret.slice(PREFIX.length) : secret, 'base64');
}

function signature(secret: string, id: string, timestamp: string, body: string): string {
  return createHmac('sha256', secretKey(secret)).update(`${id}.${timestamp}.${body}`).digest('base64');
}

export function signWebhook(secret: string, id: string, body: string, now: Date = new Date()): SignedHeaders {
  const timestamp = String(Math.floor(now.getTime() / 1000));
  return { 'webhook-id': id, 'webhook-timestamp': timestamp, 'webhook-signature': `v1,${signature(secret, id, timestamp, body)}` };
}

export class WebhookVerificationError extends Error {}

/**
 * Throws WebhookVerificationError unless one of the v1 signatures matches and the timestamp is fresh; returns the index
 * in `secrets` of the secret that matched (during a rotation, 1 says the sender still signs with the old one).
 */
export function verifyWebhook(
  secrets: string | string[],
  headers: Record<string, string | string[] | undefined>,
  body: string,
  { now = new Date(), toleranceSeconds = DEFAULT_TOLERANCE_SECONDS } = {},
): number {
  const header = (name: keyof SignedHeaders) => {
    const value = headers[name];
    return Array.isArray(value) ? value[0] : value;
  };
  const id = header('webhook-id');
  const timestamp = header('webhook-timestamp');
  const signatures = header('webhook-signature');
  if (!id || !timestamp || !signatures) throw new WebhookVerificationError('missing signature headers');
  const seconds = Number(timestamp);
  if (!Number.isInteger(seconds) || Math.abs(now.getTime() / 1000 - seconds) > toleranceSeconds) {
    throw new WebhookVerificationError('timestamp outside tolerance');
  }
  const candidates = signatures
    .split(' ')
    .filter((s) => s.startsWith('v1,'))
    .map((s) => Buffer.from(s.slice(3), 'base64'));
  const all = Array.isArray(secrets) ? secrets : [secrets];
  for (const [index, secret] of all.entries()) {
    const expected = Buffer.from(signature(secret, id, timestamp, body), 'base64');
    if (candidates.some((c) => c.length === expected.length && timingSafeEqual(c, expected))) return index;
  }
  throw new WebhookVerificationError('no matching signature');
}
