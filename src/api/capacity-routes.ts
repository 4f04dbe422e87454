import { Router } from 'express';
import { z } from 'zod';
import type { Config } from '../config';
import type { Sql } from '../db/client';
import { readCapacity, readSlotUse, setAdminCapacity, type PoolCapacity } from '../dispatch/capacity';
import { parseOr400 } from './validation';
import { ApiError } from '../wire/errors';

export // 0 pauses dispatch: in-flight jobs finish, nothing new starts, and every tier's backlog bound falls to its minimum.
const capacityBody = z
  .object({
    capacity: z.number().int().min(0).max(100_000).nullable(),
    backend: z.string().min(1).optional().meta({ description: "a backend's name (BACKENDS): its own pool; unset, the first backend's (the service's)" }),
  })
  .strict();

/** GET /admin/capacity?backend=: which backend's pool (unset, the first backend's). */
export const capacityQuery = z.object({ backend: capacityBody.shape.backend });

/**
 * /admin/capacity: the GPU pool's live capacity. PUT sets the operator's number (null clears it); the live number is the
 * smaller of it and what the backend reports, and dispatchers follow it at their next slot.
 */
export function capacityRouter({ sql, config }: { sql: Sql; config: Config }): Router {
  const router = Router();
  /** The pool of the named backend, else the first (the service's own); a name not configured is a 400. */
  function poolOf(backend: unknown): { pool: string; initialCapacity: number } {
    if (backend === undefined) return config.dispatch;
    const found = config.dispatch.pools.find((p) => p.backend === backend);
    if (!found) throw new ApiError(400, 'invalid_request', `backend: no backend named ${JSON.stringify(backend)} (configured: ${config.dispatch.pools.map((p) => p.backend).join(', ')})`);
    return found;
  }

  async function describe({ pool, initialCapacity }: { pool: string; initialCapacity: number }, saved?: PoolCapacity) {
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

  router.get('/', async (req, res) => {
    res.json(await describe(poolOf(parseOr400(capacityQuery, req.query).backend)));
  });

  router.put('/', async (req, res) => {
    const body = parseOr400(capacityBody, req.body ?? {});
    const target = poolOf(body.backend);
    res.json(await describe(target, await setAdminCapacity(sql, target.pool, body.capacity, target.initialCapacity)));
  });

  return router;
}
