import { randomBytes } from 'node:crypto';
import type { WorkerOptions } from '@temporalio/worker';
import type { Config } from '../config';
import type { Sql } from '../db/client';
import type { BackendPool } from '../domain/routing';
import type { Logger } from '../lib/logger';
import { HttpBackendCapacity, watchBackendCapacity, type BackendCapacitySource } from './backend-capacity';
import { ensurePool } from './capacity';
import { gpuSlotClaims } from './claim-interceptor';
import { GpuSlots } from './gpu-slots';

export interface GpuDispatchDeps {
  sql: Sql;
  config: Config;
  /** The worker's Temporal identity; the lease owner adds a per-start suffix. */
  identity: string;
  logger: Logger;
  capacitySource?: BackendCapacitySource;
  /** The backend pool this dispatcher serves (one GPU worker per backend); unset, the first (the service's own). */
  pool?: BackendPool;
}

export type GpuDispatch = Awaited<ReturnType<typeof startGpuDispatch>>;

// The GPU worker runs activities only; the other slot kinds need a supplier but are never used.
const unused = { type: 'fixed-size', numSlots: 1 } as const;

/**
 * Live GPU capacity for one dispatcher: the pool's row, the lease-gated slot supplier, the claim around each activity,
 * and (optionally) the backend's own capacity. Spread `workerOptions` into the GPU worker; stop() after it has run.
 */
export async function startGpuDispatch({ sql, config, identity, logger, capacitySource, pool: served }: GpuDispatchDeps) {
  const { leaseTtlMs, pollers, capacityRefreshMs } = config.dispatch;
  const { pool, initialCapacity } = served ?? config.dispatch;
  // The capacity the simulator reports is the first backend's (GPU_CAPACITY_FROM_BACKEND asks BACKEND_URL).
  const capacityFromBackend = config.dispatch.capacityFromBackend && pool === config.dispatch.pool;
  await ensurePool(sql, pool, initialCapacity);
  const dispatcherId = `${identity}/${randomBytes(4).toString('hex')}`;
  const slots = new GpuSlots(sql, { pool, dispatcherId, leaseTtlMs, logger, maxIdle: pollers });
  await slots.start();
  const watcher = capacityFromBackend
    ? watchBackendCapacity({
        sql,
        pool,
        source: capacitySource ?? new HttpBackendCapacity(config.backend.url, config.backend.timeoutMs),
        everyMs: capacityRefreshMs,
        logger,
      })
    : undefined;

  const workerOptions = {
    tuner: { activityTaskSlotSupplier: slots, workflowTaskSlotSupplier: unused, localActivityTaskSlotSupplier: unused, nexusTaskSlotSupplier: unused },
    // Each poller holds a lease while it waits for a task: a few are enough to hand a freed slot on at once.
    activityTaskPollerBehavior: { type: 'simple-maximum', maximum: pollers },
    interceptors: { activity: [gpuSlotClaims(slots)] },
  } satisfies Partial<WorkerOptions>;

  return {
    dispatcherId,
    slots,
    workerOptions,
    async stop(): Promise<void> {
      watcher?.stop();
      await slots.stop();
    },
  };
}
