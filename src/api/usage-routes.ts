import { Router } from 'express';
import { creditBalance } from '../credits/ledger';
import type { Db } from '../db/client';
import type { Admission } from './admission';
import { currentUser } from './auth';
import { usageByBackend } from '../db/projection';

/** GET /v1/usage: the caller's tier, credits (available, reserved by running jobs, used), and admission limits with what is left. */
export function usageRouter({ db, admission }: { db: Db; admission: Admission }): Router {
  const router = Router();
  router.get('/', async (req, res) => {
    const user = currentUser(req);
    const [credits, limits, backends] = await Promise.all([creditBalance(db, user.id), admission.usage(user), usageByBackend(db, user.id)]);
    res.json({ tier: user.tier, credits, ...limits, backends });
  });
  return router;
}
