import { Router } from 'express';
import { z } from 'zod';
import type { Db } from '../db/client';
import { issueApiKey, listApiKeys, MAX_ROTATION_GRACE_SECONDS, revokeApiKeys, rotateApiKey, toApiKeyResource } from './api-keys';
import { currentUser, requireUser } from './auth';
import { notFound } from '../wire/errors';
import { parseOr400 } from './validation';

export const rotateApiKeyBody = z
  .object({
    grace_seconds: z
      .number()
      .int()
      .min(0)
      .max(MAX_ROTATION_GRACE_SECONDS)
      .default(0)
      .meta({ description: `how long the key used for this call keeps working (0: it stops now; at most ${MAX_ROTATION_GRACE_SECONDS}, one day)` }),
  })
  .strict();

/** /v1/api-keys: a user's own keys — list them, rotate the one in use. */
export function apiKeysRouter({ db }: { db: Db }): Router {
  const router = Router();
  router.use(requireUser(db));

  router.get('/', async (req, res) => {
    const keys = (await listApiKeys(db, currentUser(req).id)) ?? [];
    res.json({ data: keys.map((key) => toApiKeyResource(key)) });
  });

  router.post('/rotate', async (req, res) => {
    const body = parseOr400(rotateApiKeyBody, req.body ?? {});
    const { apiKey, key, previous } = await rotateApiKey(db, currentUser(req).id, req.apiKeyId!, body.grace_seconds);
    res.status(201).json({ object: 'api_key_rotation', api_key: apiKey, key: toApiKeyResource(key), previous_key: toApiKeyResource(previous) });
  });

  return router;
}

/** /admin/users/:id/api-keys: an operator lists a user's keys, issues one, and revokes one or all of them. */
export function adminApiKeysRouter({ db }: { db: Db }): Router {
  const router = Router();
  const userKeys = async (userId: string) => {
    const keys = await listApiKeys(db, userId);
    if (!keys) throw notFound('user');
    return { data: keys.map((key) => toApiKeyResource(key)) };
  };

  router.get('/:id/api-keys', async (req, res) => {
    res.json(await userKeys(String(req.params.id)));
  });

  router.post('/:id/api-keys', async (req, res) => {
    const issued = await issueApiKey(db, String(req.params.id));
    if (!issued) throw notFound('user');
    res.status(201).json({ object: 'issued_api_key', api_key: issued.apiKey, key: toApiKeyResource(issued.key) });
  });

  router.post('/:id/api-keys/revoke', async (req, res) => {
    if (!(await revokeApiKeys(db, String(req.params.id)))) throw notFound('user');
    res.json(await userKeys(String(req.params.id)));
  });

  router.post('/:id/api-keys/:keyId/revoke', async (req, res) => {
    const [key] = (await revokeApiKeys(db, String(req.params.id), String(req.params.keyId))) ?? [];
    if (!key) throw notFound('API key');
    res.json(toApiKeyResource(key));
  });

  return router;
}
