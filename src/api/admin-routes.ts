import type { Client } from '@temporalio/client';
import { Router } from 'express';
import type { Config } from '../config';
import type { Db } from '../db/client';
import { listStuckGenerations } from '../db/stuck';
import { adminApiKeysRouter } from './api-keys-routes';
import { createUser } from './auth';
import { ApiError } from '../wire/errors';
import { createUserBody } from '../wire/requests';
import { parseOr400 } from './validation';
import { withTemporalDeadline } from '../lib/temporal-deadline';
import { tracingOn, workflowTraceId } from '../lib/tracing';

/** /admin: operator endpoints, behind the admin key. */
export function adminRouter({ db, client, config }: { db: Db; client: Client; config: Config }): Router {
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
    const traceIds = await traceIdsOf(client, stuck.map((job) => job.id));
    res.json({
      data: stuck.map((job, i) => ({
        id: job.id,
        user_id: job.userId,
        tier: job.tier,
        attempt: job.attempt,
        backend_job_id: job.backendJobId,
        dispatcher: job.dispatcher,
        started_at: job.startedAt?.toISOString() ?? null,
        expected_done_at: job.expectedDoneAt?.toISOString() ?? null,
        overdue_seconds: job.expectedDoneAt ? Math.round((now - job.expectedDoneAt.getTime()) / 1000) : null,
        trace_id: traceIds[i] ?? null,
      })),
    });
  });

  return router;
}

/**
 * Each job's trace id (tracing on: src/lib/tracing.ts), read from its workflow's start in Temporal a few at a time; a
 * job whose start carried none, or that Temporal could not say in time, has none. Nothing is read with tracing off.
 */
async function traceIdsOf(client: Client, jobIds: string[]): Promise<Array<string | undefined>> {
  const traceIds: Array<string | undefined> = [];
  if (!tracingOn()) return traceIds;
  for (let i = 0; i < jobIds.length; i += 10) {
    const batch = jobIds.slice(i, i + 10).map((id) => withTemporalDeadline(client, () => workflowTraceId(client, id)).catch(() => undefined));
    traceIds.push(...(await Promise.all(batch)));
  }
  return traceIds;
}
