import { createHmac, timingSafeEqual } from 'node:crypto';
import express, { type Express, type RequestHandler } from 'express';
import type { Payload } from '@temporalio/common';
import type { Config } from '../config';
import { EncryptionCodec } from '../lib/payload-codec';
import { resolvePayloadKeys } from '../payload-keys';
import { ApiError } from '../wire/errors';
import { bearerToken, isAdminKey } from './auth';

/**
 * The codec endpoint (Temporal's codec server protocol: POST …/decode and …/encode with `{payloads: [...]}`), so operators
 * read encrypted prompts and results in the Temporal Web UI and CLI. It opens users' data: admin only, by the admin key
 * as a bearer token (`temporal workflow show --codec-endpoint … --codec-auth "Bearer <admin key>"`) or by a session
 * cookie set by signing in at /codec/login with that key (the Web UI sends cookies when its codec setting "include
 * cross-origin credentials" is on). Browsers may call it only from CODEC_CORS_ORIGINS (the Web UI's address).
 */
const COOKIE = 'vg_codec';
const SESSION_MS = 8 * 60 * 60_000;

interface JsonPayload {
  metadata?: Record<string, string>;
  data?: string;
}

const fromJson = (p: JsonPayload): Payload => ({
  metadata: Object.fromEntries(Object.entries(p.metadata ?? {}).map(([k, v]) => [k, new Uint8Array(Buffer.from(v, 'base64'))])),
  data: new Uint8Array(Buffer.from(p.data ?? '', 'base64')),
});
const toJson = (p: Payload): JsonPayload => ({
  metadata: Object.fromEntries(Object.entries(p.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v ?? new Uint8Array()).toString('base64')])),
  data: Buffer.from(p.data ?? new Uint8Array()).toString('base64'),
});

/** A session cookie's value: its expiry and an HMAC of it under the admin key (a new admin key ends every session). */
function sessionValue(adminApiKey: string, expiresAt: number): string {
  return `${expiresAt}.${createHmac('sha256', adminApiKey).update(`codec-session:${expiresAt}`).digest('base64url')}`;
}

function validSession(adminApiKey: string, cookieHeader: string | undefined): boolean {
  const value = cookieHeader?.split(';').map((c) => c.trim()).find((c) => c.startsWith(`${COOKIE}=`))?.slice(COOKIE.length + 1);
  const expiresAt = Number(value?.split('.')[0]);
  if (!value || !Number.isFinite(expiresAt) || expiresAt < Date.now()) return false;
  const expected = Buffer.from(sessionValue(adminApiKey, expiresAt));
  const given = Buffer.from(value);
  return given.length === expected.length && timingSafeEqual(given, expected);
}


/** Mounted before the app's JSON parser: a history's payloads may be larger than a request body elsewhere. */
export function mountCodecRoutes(app: Express, { config, adminApiKey }: { config: Config; adminApiKey: string }): void {
  const codec = new EncryptionCodec(resolvePayloadKeys(config));
  const origins = new Set(config.api.codecCorsOrigins);

  const cors: RequestHandler = (req, res, next) => {
    const origin = req.get('origin');
    if (origin && origins.has(origin)) {
      res.set({
        'Access-Control-Allow-Origin': origin,
        'Access-Control-Allow-Credentials': 'true',
        'Access-Control-Allow-Methods': 'POST, OPTIONS',
        'Access-Control-Allow-Headers': 'Content-Type, Authorization, X-Namespace',
        Vary: 'Origin',
      });
    }
    if (req.method === 'OPTIONS') {
      res.status(204).end();
      return;
    }
    next();
  };
  const admin: RequestHandler = (req, _res, next) => {
    if (isAdminKey(adminApiKey, bearerToken(req)) || validSession(adminApiKey, req.get('cookie'))) return next();
    throw new ApiError(401, 'unauthorized', 'the codec endpoint is for operators: Authorization: Bearer <admin key>, or sign in at /codec/login');
  };

  for (const [operation, run] of [
    ['decode', (p: Payload[]) => codec.decode(p)],
    ['encode', (p: Payload[]) => codec.encode(p)],
  ] as const) {
    // Also under a namespace segment: the CLI's --codec-endpoint may be templated with {namespace}. Any content type:
    // the CLI sends its JSON without one.
    const handle: RequestHandler = async (req, res) => {
      // No payloads is `{}` (protobuf's JSON leaves an empty list out): the CLI encodes a query without arguments so.
      const payloads = (req.body as { payloads?: unknown } | undefined)?.payloads ?? [];
      if (!Array.isArray(payloads)) throw new ApiError(400, 'invalid_request', 'body: {"payloads": [{"metadata": {...}, "data": "<base64>"}]}');
      let out: Payload[];
      try {
        out = await run((payloads as JsonPayload[]).map(fromJson));
      } catch (err) {
        throw new ApiError(400, 'codec_failed', (err as Error).message);
      }
      res.json({ payloads: out.map(toJson) });
    };
    for (const route of [`/codec/${operation}`, `/codec/:namespace/${operation}`]) {
      // The Web UI's preflight carries no credentials: it is answered before the admin check.
      app.options(route, cors);
      app.post(route, cors, admin, express.json({ limit: '8mb', type: () => true }), handle);
    }
  }

  app.get('/codec/login', (_req, res) => {
    res.type('html').send(`<!doctype html><meta charset="utf-8"><title>Codec sign-in</title>
<form method="post" action="/codec/login"><label>Admin key <input type="password" name="key" autocomplete="off" required></label>
<button>Sign in</button></form><p>Then turn on "include cross-origin credentials" in the Temporal Web UI's codec server settings.</p>`);
  });
  app.post('/codec/login', express.urlencoded({ extended: false, limit: '4kb' }), (req, res) => {
    const key = (req.body as { key?: unknown })?.key;
    if (typeof key !== 'string' || !isAdminKey(adminApiKey, key)) throw new ApiError(401, 'unauthorized', 'not the admin key');
    const expiresAt = Date.now() + SESSION_MS;
    // SameSite=Strict still reaches the Web UI's calls: another port of the same host is the same site.
    res.cookie(COOKIE, sessionValue(adminApiKey, expiresAt), { httpOnly: true, sameSite: 'strict', path: '/codec', maxAge: SESSION_MS, secure: req.secure });
    res.type('text').send(`signed in for ${SESSION_MS / 3_600_000} hours: the Temporal Web UI can now show this service's payloads\n`);
  });
}
