import { z } from 'zod';
import { allowedHostsSetting } from './notifications/destination-guard';
import { defaultSimulatorKnobs, simulatorKnobsSchema, type SimulatorKnobs } from './simulator/knobs';

/**
 * All configuration, validated once at boot. Nothing else reads process.env: processes call loadConfig() and pass the
 * result (or the part they need) down; tests build one with overrides.
 */
const int = (fallback: number) => z.coerce.number().int().min(0).default(fallback);
const rate = (fallback: number) => z.coerce.number().min(0).max(1).default(fallback);
const flag = (fallback: boolean) =>
  z
    .enum(['true', 'false', '1', '0'])
    .default(fallback ? 'true' : 'false')
    .transform((v) => v === 'true' || v === '1');

/** `tier:number` pairs, e.g. `free:1,pro:4,enterprise:8`. */
const tierNumbers = (fallback: string, { min = 0 } = {}) =>
  z
    .string()
    .default(fallback)
    .transform((value, ctx) => {
      const numbers: Record<string, number> = {};
      for (const pair of value.split(',')) {
        const [tier, raw] = pair.split(':').map((s) => s.trim());
        const n = Number(raw);
        if (!tier || !Number.isFinite(n) || n < min) {
          ctx.addIssue({ code: 'custom', message: `expected tier:number pairs like ${fallback}, got "${pair}"` });
          return z.NEVER;
        }
        numbers[tier] = n;
      }
      return numbers;
    });

const envSchema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error', 'silent']).default('info'),
  PORT: int(3000),
  /** Base URL the backend uses to reach our callback endpoint. */
  PUBLIC_URL: z.string().url().optional(),
  DATABASE_URL: z.string().url().optional(),
  DATA_DIR: z.string().default('.data'),
  EMBEDDED_PG_PORT: int(5433),
  /** Unset: `npm start` runs a Temporal dev server at 127.0.0.1:7233. */
  TEMPORAL_ADDRESS: z.string().min(1).optional(),
  TEMPORAL_NAMESPACE: z.string().default('default'),
  ADMIN_API_KEY: z.string().min(16).optional(),
  BACKEND_URL: z.string().url().default('http://127.0.0.1:4000'),
  BACKEND_MODE: z.enum(['async', 'sync']).default('async'),
  BACKEND_WEBHOOK_SECRET: z.string().startsWith('whsec_').optional(),
  BACKEND_TIMEOUT_MS: int(10_000),
  WORKER_ROLE: z.enum(['all', 'generation', 'gpu']).default('all'),
  /** The workers' Prometheus endpoint (/metrics); 0 turns it off. */
  METRICS_PORT: int(9464),
  GENERATION_TASK_QUEUE: z.string().min(1).default('generation'),
  GPU_TASK_QUEUE: z.string().min(1).default('gpu'),
  HEARTBEAT_THROTTLE_MS: int(1_000),
  GPU_SLOTS: int(4),
  GPU_SUBMITS_PER_SECOND: z.coerce.number().positive().default(20),
  // GPU dispatch and admission (src/dispatch, src/api/admission.ts). GPU_SLOTS seeds the pool's live capacity.
  GPU_LEASE_TTL_MS: z.coerce.number().int().min(1_000).default(15_000),
  GPU_DISPATCH_POLLERS: z.coerce.number().int().min(1).max(10).default(2),
  GPU_CAPACITY_FROM_BACKEND: flag(false),
  GPU_CAPACITY_REFRESH_MS: z.coerce.number().int().min(100).default(5_000),
  RATE_LIMIT_BURST: z.coerce.number().int().min(1).default(20),
  RATE_LIMIT_PER_SECOND: z.coerce.number().positive().default(2),
  TIER_MAX_ACTIVE_JOBS: tierNumbers('free:10,pro:50,enterprise:200', { min: 1 }),
  TIER_DAILY_QUOTA: tierNumbers('free:200,pro:5000,enterprise:50000', { min: 1 }),
  TIER_BACKLOG_PER_SLOT: tierNumbers('free:10,pro:50,enterprise:100', { min: 0.01 }),
  QUEUE_ETA_WINDOW_MS: z.coerce.number().int().min(1_000).default(10 * 60_000),
  POLL_INTERVAL_MS: int(5_000),
  HEARTBEAT_TIMEOUT_MS: int(10_000),
  MAX_ATTEMPTS: int(3),
  RETRY_BACKOFF_MS: int(2_000),
  TIER_WEIGHTS: tierNumbers('free:1,pro:4,enterprise:8', { min: 0.001 }),
  // Job lifecycle: credits, deadlines, reconciliation.
  CREDIT_GRANTS: tierNumbers('free:1000,pro:20000,enterprise:200000'),
  MAX_QUEUE_MS: int(30 * 60_000),
  /** Running-time limit of a 5 s 720p video; scaled by duration and resolution. */
  MAX_RUN_MS: int(15 * 60_000),
  /** Expected running time of a 5 s 720p video; past it (scaled) a running job is listed as stuck. */
  EXPECTED_RUN_MS: int(3 * 60_000),
  RECONCILE_INTERVAL_MS: int(60_000),
  SIMULATOR_PORT: int(4000),
  SIMULATOR_HOST: z.string().default('127.0.0.1'),
  SIM_CAPACITY: int(defaultSimulatorKnobs.capacity),
  SIM_P50_MS: int(defaultSimulatorKnobs.p50Ms),
  SIM_P99_MS: int(defaultSimulatorKnobs.p99Ms),
  SIM_TIME_SCALE: z.coerce.number().positive().default(defaultSimulatorKnobs.timeScale),
  SIM_TRANSIENT_FAILURE_RATE: rate(0),
  SIM_PERMANENT_FAILURE_RATE: rate(0),
  SIM_CALLBACK_LOSS_RATE: rate(0),
  SIM_CALLBACK_DUPLICATE_RATE: rate(0),
  SIM_CALLBACK_DELAY_MS: int(0),
  SIM_CALLBACK_REORDER_RATE: rate(0),
  SIM_ERROR_RATE: rate(0),
  SIM_SLOW_RESPONSE_RATE: rate(0),
  SIM_SLOW_RESPONSE_MS: int(0),
  SIM_OUTAGE: flag(false),
  // Notifications: SSE keep-alives, webhook delivery (SSRF allow-list, Svix-like retry schedule scaled for tests).
  SSE_KEEPALIVE_MS: z.coerce.number().int().min(100).default(15_000),
  SSE_POLL_MS: z.coerce.number().int().min(10).default(200),
  SSE_QUEUE_POSITION_MS: z.coerce.number().int().min(100).default(2_000),
  WEBHOOK_ALLOWED_HOSTS: allowedHostsSetting,
  WEBHOOK_RETRY_SCALE: z.coerce.number().positive().max(1).default(1),
  WEBHOOK_TIMEOUT_MS: z.coerce.number().int().min(100).default(15_000),
  /** Test-only fault: the notify activity exits the process on its first attempt for a prompt marked [crash:<point>]. */
  FAULT_CRASH_IN_NOTIFY: flag(false),
  // Hostile clients: HTTP timeouts and caps, bounded SSE, failed authentication, Postgres and DNS time limits.
  HTTP_HEADERS_TIMEOUT_MS: z.coerce.number().int().min(100).default(10_000),
  HTTP_REQUEST_TIMEOUT_MS: z.coerce.number().int().min(100).default(30_000),
  HTTP_MAX_CONNECTIONS: z.coerce.number().int().min(1).default(10_000),
  /** Express's `trust proxy`: unset, a client's address is the socket's; behind a load balancer, e.g. `loopback` or a hop count. */
  TRUST_PROXY: z.string().min(1).optional(),
  AUTH_FAILURE_BURST: z.coerce.number().int().min(1).default(20),
  AUTH_FAILURES_PER_SECOND: z.coerce.number().positive().default(1),
  SSE_MAX_STREAMS_PER_USER: z.coerce.number().int().min(1).default(20),
  SSE_MAX_STREAMS: z.coerce.number().int().min(1).default(5_000),
  SSE_RESUME_MAX_EVENTS: z.coerce.number().int().min(1).default(1_000),
  SSE_RESUME_MAX_AGE_MS: z.coerce.number().int().min(1_000).default(60 * 60_000),
  SSE_SLOW_CLIENT_MS: z.coerce.number().int().min(100).default(30_000),
  SSE_KEY_CHECK_MS: z.coerce.number().int().min(100).default(2_000),
  DATABASE_STATEMENT_TIMEOUT_MS: int(30_000),
  DNS_TIMEOUT_MS: z.coerce.number().int().min(10).default(3_000),
  WEBHOOK_MAX_REPLAYS: z.coerce.number().int().min(0).default(10),
  WEBHOOK_REPLAYS_PER_MINUTE: z.coerce.number().positive().default(30),
});

/** The development-only callback secret; production must set BACKEND_WEBHOOK_SECRET. */
const DEV_BACKEND_WEBHOOK_SECRET = 'whsec_ZGV2ZWxvcG1lbnQtb25seS1iYWNrZW5kLXNlY3JldA==';

export function loadConfig(env: Record<string, string | undefined> = process.env) {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new Error(`invalid configuration: ${problems}`);
  }
  const e = parsed.data;
  if (e.NODE_ENV === 'production' && !e.BACKEND_WEBHOOK_SECRET) {
    throw new Error('invalid configuration: BACKEND_WEBHOOK_SECRET is required in production');
  }
  const simulator: SimulatorKnobs = simulatorKnobsSchema.parse({
    capacity: Math.max(1, e.SIM_CAPACITY),
    p50Ms: e.SIM_P50_MS,
    p99Ms: Math.max(e.SIM_P99_MS, e.SIM_P50_MS),
    timeScale: e.SIM_TIME_SCALE,
    transientFailureRate: e.SIM_TRANSIENT_FAILURE_RATE,
    permanentFailureRate: e.SIM_PERMANENT_FAILURE_RATE,
    callbackLossRate: e.SIM_CALLBACK_LOSS_RATE,
    callbackDuplicateRate: e.SIM_CALLBACK_DUPLICATE_RATE,
    callbackDelayMs: e.SIM_CALLBACK_DELAY_MS,
    callbackReorderRate: e.SIM_CALLBACK_REORDER_RATE,
    errorRate: e.SIM_ERROR_RATE,
    slowResponseRate: e.SIM_SLOW_RESPONSE_RATE,
    slowResponseMs: e.SIM_SLOW_RESPONSE_MS,
    outage: e.SIM_OUTAGE,
  });
  return {
    env: e.NODE_ENV,
    logLevel: e.LOG_LEVEL,
    api: {
      port: e.PORT,
      publicUrl: e.PUBLIC_URL ?? `http://127.0.0.1:${e.PORT}`,
      adminApiKey: e.ADMIN_API_KEY,
      /** How long a client may take to send its headers, and its whole request (a stream's response is not bounded). */
      headersTimeoutMs: e.HTTP_HEADERS_TIMEOUT_MS,
      requestTimeoutMs: Math.max(e.HTTP_REQUEST_TIMEOUT_MS, e.HTTP_HEADERS_TIMEOUT_MS),
      maxConnections: e.HTTP_MAX_CONNECTIONS,
      trustProxy: e.TRUST_PROXY,
      /** Failed authentications an address may make at once, and per second after that, before unknown keys are refused unread. */
      authFailureBurst: e.AUTH_FAILURE_BURST,
      authFailuresPerSecond: e.AUTH_FAILURES_PER_SECOND,
    },
    database: { url: e.DATABASE_URL, dataDir: e.DATA_DIR, embeddedPort: e.EMBEDDED_PG_PORT, statementTimeoutMs: e.DATABASE_STATEMENT_TIMEOUT_MS },
    temporal: { address: e.TEMPORAL_ADDRESS ?? '127.0.0.1:7233', external: e.TEMPORAL_ADDRESS !== undefined, namespace: e.TEMPORAL_NAMESPACE },
    backend: {
      url: e.BACKEND_URL,
      mode: e.BACKEND_MODE,
      webhookSecret: e.BACKEND_WEBHOOK_SECRET ?? DEV_BACKEND_WEBHOOK_SECRET,
      timeoutMs: e.BACKEND_TIMEOUT_MS,
    },
    worker: {
      role: e.WORKER_ROLE,
      metricsPort: e.METRICS_PORT,
      generationTaskQueue: e.GENERATION_TASK_QUEUE,
      gpuTaskQueue: e.GPU_TASK_QUEUE,
      heartbeatThrottleMs: e.HEARTBEAT_THROTTLE_MS,
      gpuSlots: e.GPU_SLOTS,
      gpuSubmitsPerSecond: e.GPU_SUBMITS_PER_SECOND,
    },
    dispatch: {
      /** A pool is one `gpu` task queue: its live capacity and slot leases live in Postgres (src/dispatch). */
      pool: e.GPU_TASK_QUEUE,
      initialCapacity: e.GPU_SLOTS,
      leaseTtlMs: e.GPU_LEASE_TTL_MS,
      pollers: e.GPU_DISPATCH_POLLERS,
      capacityFromBackend: e.GPU_CAPACITY_FROM_BACKEND,
      capacityRefreshMs: e.GPU_CAPACITY_REFRESH_MS,
    },
    admission: {
      burst: e.RATE_LIMIT_BURST,
      refillPerSecond: e.RATE_LIMIT_PER_SECOND,
      tiers: tierLimits(e),
      etaWindowMs: e.QUEUE_ETA_WINDOW_MS,
    },
    generation: {
      pollIntervalMs: e.POLL_INTERVAL_MS,
      heartbeatTimeoutMs: e.HEARTBEAT_TIMEOUT_MS,
      maxAttempts: Math.max(1, e.MAX_ATTEMPTS),
      retryBackoffMs: e.RETRY_BACKOFF_MS,
      maxRunMs: e.MAX_RUN_MS,
      maxQueueMs: e.MAX_QUEUE_MS,
      expectedRunMs: e.EXPECTED_RUN_MS,
      creditGrants: e.CREDIT_GRANTS,
      reconcileIntervalMs: e.RECONCILE_INTERVAL_MS,
      tierWeights: e.TIER_WEIGHTS,
    },
    simulator: { port: e.SIMULATOR_PORT, host: e.SIMULATOR_HOST, knobs: simulator },
    notifications: {
      sseKeepAliveMs: e.SSE_KEEPALIVE_MS,
      /** How often an API process with open SSE streams looks for new change-feed events of their users. */
      ssePollMs: e.SSE_POLL_MS,
      /** How often an SSE stream with queued jobs re-reads their queue positions. */
      sseQueuePositionMs: e.SSE_QUEUE_POSITION_MS,
      webhookAllowedHosts: e.WEBHOOK_ALLOWED_HOSTS,
      webhookRetryScale: e.WEBHOOK_RETRY_SCALE,
      webhookTimeoutMs: e.WEBHOOK_TIMEOUT_MS,
      crashInNotify: e.FAULT_CRASH_IN_NOTIFY && e.NODE_ENV !== 'production',
      /** Open event streams one user may have on one API process, and all users together. */
      sseMaxStreamsPerUser: e.SSE_MAX_STREAMS_PER_USER,
      sseMaxStreams: e.SSE_MAX_STREAMS,
      /** A Last-Event-ID further back than this many events, or than this age, is not replayed: the client re-lists. */
      sseResumeMaxEvents: e.SSE_RESUME_MAX_EVENTS,
      sseResumeMaxAgeMs: e.SSE_RESUME_MAX_AGE_MS,
      /** A stream whose client reads nothing for this long while events wait is closed. */
      sseSlowClientMs: e.SSE_SLOW_CLIENT_MS,
      /** How often an API process checks whether the keys of its open streams were revoked. */
      sseKeyCheckMs: e.SSE_KEY_CHECK_MS,
      dnsTimeoutMs: e.DNS_TIMEOUT_MS,
      webhookMaxReplays: e.WEBHOOK_MAX_REPLAYS,
      webhookReplaysPerMinute: e.WEBHOOK_REPLAYS_PER_MINUTE,
    },
  };
}

export type Config = ReturnType<typeof loadConfig>;

export interface TierLimits {
  maxActiveJobs: number;
  dailyQuota: number;
  /** The tier's backlog bound is this many queued jobs per GPU slot of live capacity. */
  backlogPerSlot: number;
}

/** Admission limits of every tier that has a fairness weight; a tier left out is a configuration error. */
function tierLimits(e: z.infer<typeof envSchema>): Record<string, TierLimits> {
  const limits: Record<string, TierLimits> = {};
  for (const tier of Object.keys(e.TIER_WEIGHTS)) {
    const [maxActiveJobs, dailyQuota, backlogPerSlot] = [e.TIER_MAX_ACTIVE_JOBS[tier], e.TIER_DAILY_QUOTA[tier], e.TIER_BACKLOG_PER_SLOT[tier]];
    if (maxActiveJobs === undefined || dailyQuota === undefined || backlogPerSlot === undefined) {
      throw new Error(`invalid configuration: tier "${tier}" needs TIER_MAX_ACTIVE_JOBS, TIER_DAILY_QUOTA and TIER_BACKLOG_PER_SLOT entries`);
    }
    limits[tier] = { maxActiveJobs, dailyQuota, backlogPerSlot };
  }
  return limits;
}
