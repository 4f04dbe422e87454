import { Router } from 'express';
import { z } from 'zod';
import type { Config } from '../config';
import type { Sql } from '../db/client';
import { readCapacity, readSlotUse, setAdminCapacity, type PoolCapacity } from '../dispatch/capacity';
import { parseOr400 } from './validation';

export // 0 pauses dispatch: in-flight jobs finish, nothing new starts, and every tier's backlog bound falls to its minimum.
const capacityBody = z.object({ capacity: z.number().int().min(0).max(100_000).nullable() }).strict();

/**
 * /admin/capacity: the GPU pool's live capacity. PUT sets the operator's number (null clears it); the live number is the
 * smaller of it and what the backend reports, and dispatchers follow it at their next slot.
 */
export function capacityRouter({ sql, config }: { sql: Sql; config: Config }): Router {
  const router = Router();
  const { pool, initialCapacity } = config.dispatch;

  async function describe(saved?: PoolCapacity) {
    const capacity = saved ?? (await readCapacity(sql, pool));
    const use = await readSlotUse(sql, pool);
    return {
      pool,
      capacity: capacity?.capacity ?? initialCapacity,
      admin_capacity: capacity?.adminCapacity ?? null,
      backend_capacity: capacity?.backendCapacity ?? null,
      default_capacity: capacity?.defaultCapacity ?? initialCapacity,
      leased_slots: use.leased,
      running_jobs: use.running,
      updated_at: capacity?.updatedAt.toISOString() ?? null,
    };
  }

  router.get('/', async (_req, res) => {
    res.json(await describe());
  });

  router.put('/', async (req, res) => {
    const body = parseOr400(capacityBody, req.body ?? {});
    res.json(await describe(await setAdminCapacity(sql, pool, body.capacity, initialCapacity)));
  });

  return router;
}
