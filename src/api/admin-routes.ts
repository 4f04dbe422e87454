import { Router } from 'express';
import type { Config } from '../config';
import type { Db } from '../db/client';
import { createUser } from './auth';
import { ApiError } from './errors';
import { createUserBody } from './generation-schemas';
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
    const { user, apiKey } = await createUser(db, body);
    res.status(201).json({
      user: { id: user.id, name: user.name, tier: user.tier, created_at: user.createdAt.toISOString() },
      api_key: apiKey,
    });
  });

  return router;
}
