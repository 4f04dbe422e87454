import type { Client } from '@temporalio/client';
import { Router } from 'express';
import type { Config } from '../config';
import type { Database } from '../db/client';
import { registry } from '../lib/metrics';
import { refreshSharedGauges } from './ops-gauges';

const READY_CHECK_MS = 2_000;

function within<T>(ms: number, work: Promise<T>): Promise<T> {
  return Promise.race([work, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms).unref())]);
}

/**
 * /healthz (the process is alive), /readyz (Postgres answers: ready, or degraded while Temporal does not), /metrics (Prometheus). On the public port of
 * an API with an admin listener (`internal: false`), /readyz says only ready or not and /metrics is not served: check
 * details name hosts and errors, and metrics describe the whole service.
 */
export function opsRouter({ database, client, config, internal = true }: { database: Database; client: Client; config: Config; internal?: boolean }): Router {
  const router = Router();
  const tiers = Object.keys(config.generation.tierWeights);

  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  router.get('/readyz', async (_req, res) => {
    const check = (work: Promise<unknown>) => within(READY_CHECK_MS, work).then(() => 'ok', (err: unknown) => `unavailable: ${err instanceof Error ? err.message : String(err)}`);
    const [postgres, temporal] = await Promise.all([
      check(database.sql`select 1`),
      check(client.withDeadline(Date.now() + READY_CHECK_MS, () => client.workflowService.getSystemInfo({}))),
    ]);
    // Postgres is what every request needs. Without Temporal the API still reads, lists and accepts submits (they are kept
    // and started once it answers), so a load balancer must not take it out of service: degraded, not unready.
    const status = postgres !== 'ok' ? 'not_ready' : temporal !== 'ok' ? 'degraded' : 'ready';
    res.status(status === 'not_ready' ? 503 : 200).json(internal ? { status, checks: { postgres, temporal } } : { status });
  });

  if (internal) {
    router.get('/metrics', async (_req, res) => {
      await refreshSharedGauges(database.sql, tiers);
      res.type(registry.contentType).send(await registry.metrics());
    });
  }

  return router;
}
