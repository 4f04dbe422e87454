import { Client, WorkflowNotFoundError } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, Worker, type WorkflowBundleOption } from '@temporalio/worker';
import net from 'node:net';
import os from 'node:os';
import { createEndingActivities } from './activities/ending';
import { createLifecycleActivities, createRunOpener } from './activities/lifecycle';
import { createProjectionActivities } from './activities/projection';
import { createReconcileActivities } from './activities/reconcile';
import { createRetentionActivities, RETENTION_SESSION } from './activities/retention';
import { ensureReconcilerSchedule } from './reconciler-schedule';
import { ensureRetentionSchedule } from './retention/schedule';
import { createNotifyActivities } from './activities/notify';
import { createEmailActivities } from './activities/email';
import { createMailer } from './notifications/mailer';
import { createGpuActivities } from './activities/gpu';
import { BackendWakeups } from './dispatch/backend-wakeups';
import { startGpuDispatch, type GpuDispatch } from './dispatch';
import { startQueuedReroutes } from './dispatch/queued-reroutes';
import { rerouteQueuedSignal } from './contracts/generation';
import { createBackends } from './backend/registry';
import { BackendHealth, observedBackend, startCancelSweeper, startHealthChecks } from './dispatch/backend-health';
import type { GenerationBackend } from './backend/types';
import { ConfigError, configuredSecrets, isRelaxedEnv, loadConfig, type Config } from './config';
import { createDatabase, requireDatabaseUrl } from './db/client';
import { createLogger, type Logger } from './lib/logger';
import { startMetricsServer } from './lib/metrics-server';
import { startTracing, stopTracing, temporalClientInterceptors, workerTracing } from './lib/tracing';
import { runProcess } from './run-process';
import { deploymentOptions, makeVersionCurrent } from './worker-deployment';
import { serviceDataConverter } from './payload-keys';
import { bundleWorkflows, prebuiltBundle, type WorkflowEntry } from './workflow-bundle';

export interface WorkerDeps {
  config: Config;
  databaseUrl: string;
  logger: Logger;
  /**
   * Pre-built workflow code (tests bundle once per run: src/workflows, which declares no versioning behaviour, so a
   * versioned test worker runs every workflow with the default, PINNED); otherwise the bundle `npm run build` made
   * (src/workflow-bundle.ts), or — outside production, when there is none for the current sources — bundled at start.
   */
  workflowBundle?: WorkflowBundleOption;
  backend?: GenerationBackend;
  /** Overrides the process's Temporal worker identity (shown in the Web UI next to each activity). */
  identity?: string;
}

/**
 * The generation worker (workflows and projection activities) and the GPU dispatcher (the slot-holding activity on the
 * `gpu` task queue). WORKER_ROLE runs either or both in one process; each can run many times over.
 */
export async function createWorkers({ config, databaseUrl, logger, workflowBundle, backend, identity }: WorkerDeps) {
  const { role, generationTaskQueue, gpuTaskQueue } = config.worker;
  // Every worker of the process polls as one deployment version (src/worker-deployment.ts); none when versioning is off.
  const workerDeploymentOptions = deploymentOptions(config.worker.versioning);
  // Before any connection: a worker that may not run without a built bundle stops here, holding nothing.
  const code = role === 'all' || role === 'generation' ? await workflowCode(workflowBundle, workerDeploymentOptions ? 'versioned' : 'plain', { config, logger }) : undefined;
  const database = createDatabase(databaseUrl, { max: config.worker.databasePoolSize, statementTimeoutMs: config.database.statementTimeoutMs });
  // Retention's batches on a connection of their own, so they never take the pool the job activities use.
  const pruning = createDatabase(databaseUrl, { max: 1, settings: RETENTION_SESSION });
  const connection = await NativeConnection.connect({ address: config.temporal.address });
  // Every payload the workers write to Temporal is sealed, and every one they read opened (src/lib/payload-codec.ts).
  const dataConverter = serviceDataConverter(config);
  const client = new Client({ connection, namespace: config.temporal.namespace, dataConverter, interceptors: temporalClientInterceptors() });
  // Activity spans and the workflows' span sink; the workflow interceptors are in the bundle (src/workflow-bundle.ts).
  const tracing = workerTracing();
  const interceptors = { activity: tracing.activity };
  const wakeups = new BackendWakeups(database.sql);
  const workers: Worker[] = [];
  const workerIdentity = identity ?? `${process.pid}@${os.hostname()}`;
  // Every configured backend (BACKENDS; unset, the simulator at BACKEND_URL). With one, every job goes there; with
  // several, each attempt is routed (src/domain/routing.ts) and each backend has its own pool and `gpu` queue, and every
  // call's outcome feeds that backend's circuit (src/dispatch/backend-health.ts).
  const specs = config.backend.backends;
  const adapters = createBackends(specs, { publicUrl: config.api.publicUrl, timeoutMs: config.backend.timeoutMs });
  if (backend) adapters.set(specs[0].name, backend);
  const health = config.routing.enabled ? new BackendHealth(database.sql, config.dispatch.pools, config.routing) : undefined;
  const backends = health ? new Map([...adapters].map(([name, adapter]) => [name, observedBackend(name, adapter, health, logger.child({ component: 'backend-health' }))])) : adapters;
  const backendAdapter = backends.get(specs[0].name)!;
  const pools = config.routing.enabled ? config.dispatch.pools : [undefined];

  const mailer = role === 'all' || role === 'generation' ? createMailer(config.mail) : undefined;
  if (role === 'all' || role === 'generation') {
    const notify = createNotifyActivities({ db: database.db, client, config, logger: logger.child({ component: 'notify' }) });
    const ending = createEndingActivities({ db: database.db, notifyEnded: notify.notifyGenerationEnded, pricing: config.generation.pricing });
    workers.push(
      await Worker.create({
        connection,
        namespace: config.temporal.namespace,
        taskQueue: generationTaskQueue,
        identity: workerIdentity,
        workerDeploymentOptions,
        dataConverter,
        // A versioned worker runs the workflows with their versioning behaviours declared (src/workflows/versioned.ts).
        ...code,
        interceptors,
        sinks: tracing.sinks,
        activities: {
          ...createProjectionActivities({ db: database.db }),
          ...createLifecycleActivities({
            db: database.db,
            backend: backendAdapter,
            backends,
            routing: health ? { specs, pools: config.dispatch.pools, health } : undefined,
            specs,
            pricing: config.generation.pricing,
          }),
          ...notify,
          ...ending,
          ...createReconcileActivities({ db: database.db, client, config, logger: logger.child({ component: 'reconciler' }), endGeneration: ending.endGeneration }),
          ...createRetentionActivities({ sql: pruning.sql, config, logger: logger.child({ component: 'retention' }) }),
          ...createEmailActivities({ sql: database.sql, mailer: mailer!, config, logger: logger.child({ component: 'email' }) }),
        },
      }),
    );
    await ensureReconcilerSchedule(client, config);
    await ensureRetentionSchedule(client, config);
  }
  const gpuDispatches: GpuDispatch[] = [];
  const backgrounds: Array<{ stop(): void }> = [];
  if (role === 'all' || role === 'gpu') {
    await wakeups.start();
    const healthLogger = logger.child({ component: 'backend-health' });
    if (health) backgrounds.push(startHealthChecks({ backends, health, everyMs: config.routing.healthCheckMs, logger: healthLogger }));
    // Owed cancels come from failing over (several backends) and from provider jobs no attempt follows (a provider's
    // webhook for an unanswered submit's job: src/dispatch/backend-orphans.ts), which one provider backend can have.
    if (health || specs.some((spec) => spec.kind !== 'simulator')) {
      backgrounds.push(startCancelSweeper({ sql: database.sql, backends, everyMs: Math.min(2_000, config.routing.healthCheckMs), logger: healthLogger }));
    }
    if (health) {
      // Jobs waiting on a backend that is paused or down move to one that is up (src/dispatch/queued-reroutes.ts).
      backgrounds.push(
        startQueuedReroutes({
          sql: database.sql,
          states: () => health.states(),
          ask: ({ jobId, run, attempt, from }) => client.workflow.getHandle(jobId).signal(rerouteQueuedSignal, { run, attempt, from }).catch(ignoreEnded),
          everyMs: Math.min(2_000, config.routing.healthCheckMs),
          logger: healthLogger,
        }),
      );
    }
    // One GPU worker per backend pool: its own `gpu` task queue, slot leases and submission rate.
    for (const pool of pools) {
      const gpuDispatch = await startGpuDispatch({ sql: database.sql, config, identity: workerIdentity, logger: logger.child({ component: 'dispatch', ...(pool ? { backend: pool.backend } : {}) }), pool });
      gpuDispatches.push(gpuDispatch);
      workers.push(
        await Worker.create({
          connection,
          namespace: config.temporal.namespace,
          taskQueue: pool?.taskQueue ?? gpuTaskQueue,
          identity: workerIdentity,
          workerDeploymentOptions,
          dataConverter,
          activities: createGpuActivities({
            db: database.db,
            backend: backendAdapter,
            backends,
            health,
            failoverAfterMs: config.routing.failoverAfterMs,
            mode: config.backend.mode,
            dispatcherIdentity: workerIdentity,
            wakeups,
            client,
            logger: logger.child({ component: 'gpu' }),
            callbackUrl: `${config.api.publicUrl}/internal/backend/callbacks`,
            pollIntervalMs: config.generation.pollIntervalMs,
            openRun: createRunOpener({ db: database.db, specs, pricing: config.generation.pricing }).openAtSlot,
          }),
          // One activity slot is one GPU, granted only under a Postgres lease of the pool's live capacity (src/dispatch).
          ...gpuDispatch.workerOptions,
          // The activity's span outside the slot claim, so it spans the whole attempt.
          interceptors: { activity: [...tracing.activity, ...gpuDispatch.workerOptions.interceptors.activity] },
          // The backend's submission rate, enforced by the server across every dispatcher.
          maxTaskQueueActivitiesPerSecond: config.worker.gpuSubmitsPerSecond,
          // Heartbeats only keep an attempt alive (each is a billable action): the SDK sends one per 0.8 heartbeat timeout
          // at most. Cancels and deadlines reach the activity through its wake-up (src/dispatch/backend-wakeups.ts).
          maxHeartbeatThrottleInterval: config.worker.heartbeatThrottleMs,
          defaultHeartbeatThrottleInterval: config.worker.heartbeatThrottleMs,
        }),
      );
    }
  }

  let stopped = false;
  const stopping = new AbortController();
  return {
    workers,
    /** The deployment version the workers poll as, when versioning is on. */
    version: workerDeploymentOptions?.version,
    /** Runs until shutdown() (or a fatal worker error), then releases connections. */
    async run(): Promise<void> {
      const running = Promise.all(workers.map((w) => w.run()));
      // A brand-new deployment's first version makes itself current once the server has seen it poll.
      const firstVersion = workerDeploymentOptions
        ? makeVersionCurrent(client, { ...workerDeploymentOptions.version, identity: workerIdentity, logger, signal: stopping.signal }).then(
            (outcome) => outcome === 'gave-up' && !stopping.signal.aborted && logger.warn(workerDeploymentOptions.version, 'the server did not list this worker version in time: not made current'),
            (err: unknown) => logger.error({ err }, "could not read or set the worker deployment's current version"),
          )
        : undefined;
      try {
        await running;
      } finally {
        stopping.abort();
        await firstVersion;
        for (const background of backgrounds) background.stop();
        for (const gpuDispatch of gpuDispatches) await gpuDispatch.stop().catch((err: unknown) => logger.warn({ err }, 'GPU dispatch did not stop cleanly'));
        await wakeups.stop().catch(() => undefined);
        mailer?.close();
        await connection.close().catch(() => undefined);
        await pruning.close();
        await database.close();
      }
    },
    shutdown(): void {
      if (stopped) return;
      stopped = true;
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
    },
  };
}

/**
 * The workflow code a worker runs: the one given, else the built bundle of the current sources. Outside development and
 * tests a worker refuses to bundle at start (webpack at every start, on every replica, is most of a worker's start-up);
 * development and tests bundle at start with a warning.
 */
async function workflowCode(given: WorkflowBundleOption | undefined, entry: WorkflowEntry, { config, logger }: { config: Config; logger: Logger }) {
  if (given) return { workflowBundle: given };
  const built = prebuiltBundle(entry, config.worker.workflowBundleDir);
  if ('codePath' in built) return { workflowBundle: { codePath: built.codePath } };
  if (!isRelaxedEnv(config.env)) throw new ConfigError(`${built.missing}: run \`npm run build\` (the image does) before starting workers`);
  logger.warn({ reason: built.missing }, 'bundling the workflow code at start: `npm run build` makes workers start faster');
  // Bundled as `npm run build` bundles (src/workflow-bundle.ts: interceptors and preloaded modules included).
  return { workflowBundle: { code: await bundleWorkflows(entry) } };
}

/** A signal to a workflow that has ended since is not wanted any more. */
function ignoreEnded(err: unknown): void {
  if (!(err instanceof WorkflowNotFoundError)) throw err;
}

/** A loopback port free now (the SDK's core binds it a moment later). */
function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

async function main(): Promise<void> {
  const config = loadConfig();
  const databaseUrl = requireDatabaseUrl(config);
  const logger = createLogger(`worker-${config.worker.role}`, config.logLevel, { secrets: configuredSecrets(config) });
  await startTracing({ tracesUrl: config.tracing.tracesUrl, serviceName: `videogen-worker-${config.worker.role}` });
  // The SDK's own metrics (task slots, poll and schedule-to-start latencies, workflow task failures...) come from its
  // core, which serves them on a loopback port of its own: the worker's /metrics appends them to ours.
  const sdkMetricsPort = config.worker.metricsPort > 0 ? await freeLoopbackPort() : undefined;
  // The SDK's own logs go through pino too, so every line the process prints is JSON.
  Runtime.install({
    logger: new DefaultLogger('WARN', ({ level, message, meta }) => {
      const method = level.toLowerCase() as 'trace' | 'debug' | 'info' | 'warn' | 'error';
      // A workflow's or activity's line names its trace as the SDK does (trace_id): ours say traceId.
      const { trace_id: traceId, span_id: _span, trace_flags: _flags, ...rest } = meta ?? {};
      logger[method]({ ...rest, ...(traceId ? { traceId } : {}), sdk: true }, message);
    }),
    ...(sdkMetricsPort ? { telemetryOptions: { metrics: { prometheus: { bindAddress: `127.0.0.1:${sdkMetricsPort}`, useSecondsForDurations: true } } } } : {}),
  });
  const running = await createWorkers({ config, databaseUrl, logger });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      logger.info({ signal }, 'shutting down: finishing in-flight tasks');
      running.shutdown();
    });
  }
  const sdkMetrics = sdkMetricsPort ? () => fetch(`http://127.0.0.1:${sdkMetricsPort}/metrics`).then((res) => res.text()) : undefined;
  const metrics = config.worker.metricsPort > 0 ? await startMetricsServer(config.worker.metricsPort, { more: sdkMetrics }) : undefined;
  logger.info(
    { role: config.worker.role, gpuSlots: config.worker.gpuSlots, temporal: config.temporal.address, metricsPort: metrics?.port, deploymentVersion: running.version ?? 'unversioned' },
    'worker started',
  );
  await running.run();
  await metrics?.close();
  await stopTracing();
  logger.info('worker stopped');
}

if (require.main === module) runProcess('worker', main);
