import { Router } from 'express';
import type { Config } from '../config';
import type { Db } from '../db/client';
import { listStuckGenerations } from '../db/stuck';
import { adminApiKeysRouter } from './api-keys-routes';
import { createUser } from './auth';
import { ApiError } from '../wire/errors';
import { createUserBody } from '../wire/requests';
import { parseOr400 } from './validation';

/** /admin: operator endpoints, behind the admin key. */
export function adminRouter({ db, config }: { db: Db; config: Config }): Router {
  const router = Router();
  const tiers = Object.keys(config.generation.tierWeights);

  router.post('/users', async (req, res) => {
    const body = parseOr400(createUserBody, req.body ?? {});
    if (!tiers.includes(body.tier)) {
      throw new ApiError(400, 'invalid_request', `tier: must be one of ${tiers.join(', ')}`);
    }
    const { user, apiKey } = await createUser(db, { ...body, credits: config.generation.creditGrants[body.tier] ?? 0 });
    res.status(201).json({
      user: { id: user.id, name: user.name, tier: user.tier, created_at: user.createdAt.toISOString() },
      api_key: apiKey,
    });
  });
  router.use('/users', adminApiKeysRouter({ db }));

  router.get('/generations/stuck', async (_req, res) => {
    const now = Date.now();
    const stuck = await listStuckGenerations(db);
    res.json({
      data: stuck.map((job) => ({
        id: job.id,
        user_id: job.userId,
        tier: job.tier,
        attempt: job.attempt,
        backend_job_id: job.backendJobId,
        dispatcher: job.dispatcher,
        started_at: job.startedAt?.toISOString() ?? null,
        expected_done_at: job.expectedDoneAt?.toISOString() ?? null,
        overdue_seconds: job.expectedDoneAt ? Math.round((now - job.expectedDoneAt.getTime()) / 1000) : null,
      })),
    });
  });

  return router;
}
