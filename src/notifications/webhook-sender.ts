import http from 'node:http';
import https from 'node:https';
import { signWebhook } from '../lib/webhook-signature';
import type { AllowedHosts } from '../lib/ip-addresses';
import { assertDestinationAllowed, guardedLookup, RefusedDestinationError, type LookupAll } from './destination-guard';

/** One signed webhook POST: no redirects followed, a hard deadline, and the SSRF guard applied at connect time. */

export interface WebhookRequest {
  url: string;
  webhookId: string;
  body: string;
  /** The current secret first; during a rotation's overlap the previous one adds a second signature. */
  secrets: string[];
  timeoutMs: number;
  allowedHosts: AllowedHosts;
  lookup?: LookupAll;
}

export interface WebhookResponse {
  /** The receiver's HTTP status, or null when no answer came (refused, unreachable, timed out). */
  status: number | null;
  body: string | null;
  error: string | null;
  durationMs: number;
}

const RESPONSE_BODY_LIMIT = 1024;
const USER_AGENT = 'videogen-webhooks/1';

/** The Standard Webhooks headers, one `v1,` signature per secret. */
export function signedHeaders(webhookId: string, body: string, secrets: string[], now: Date = new Date()): Record<string, string> {
  const signed = secrets.map((secret) => signWebhook(secret, webhookId, body, now));
  return {
    'webhook-id': webhookId,
    'webhook-timestamp': signed[0]['webhook-timestamp'],
    'webhook-signature': signed.map((s) => s['webhook-signature']).join(' '),
  };
}

export async function sendWebhook(request: WebhookRequest): Promise<WebhookResponse> {
  const started = Date.now();
  const done = (r: Omit<WebhookResponse, 'durationMs'>): WebhookResponse => ({ ...r, durationMs: Date.now() - started });
  try {
    // Refuses literal addresses (never looked up) and names that resolve privately; the lookup below re-checks at connect.
    await assertDestinationAllowed(request.url, request.allowedHosts, request.lookup);
    const { status, body } = await post(request);
    return done({ status, body, error: status >= 300 && status < 400 ? 'redirect not followed' : null });
  } catch (err) {
    const message = err instanceof RefusedDestinationError ? `refused destination: ${err.message}` : err instanceof Error ? err.message : String(err);
    return done({ status: null, body: null, error: message });
  }
}

function post({ url, webhookId, body, secrets, timeoutMs, allowedHosts, lookup }: WebhookRequest): Promise<{ status: number; body: string }> {
  const target = new URL(url);
  const transport = target.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = transport.request(target, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
        'user-agent': USER_AGENT,
        ...signedHeaders(webhookId, body, secrets),
      },
      lookup: guardedLookup(allowedHosts, lookup),
      // Each delivery opens its own connection: a pooled socket would skip the connect-time address check.
      agent: false,
    });
    const deadline = setTimeout(() => req.destroy(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
    req.on('error', (err) => {
      clearTimeout(deadline);
      reject(err);
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const finish = () => {
        clearTimeout(deadline);
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8').slice(0, RESPONSE_BODY_LIMIT) });
        res.destroy();
      };
      res.on('data', (chunk: Buffer) => {
        if (size < RESPONSE_BODY_LIMIT) chunks.push(chunk);
        size += chunk.length;
        if (size >= RESPONSE_BODY_LIMIT) finish();
      });
      res.on('end', finish);
      res.on('error', (err) => {
        clearTimeout(deadline);
        reject(err);
      });
    });
    req.end(body);
  });
}
