import { z } from 'zod';
import { backendSpecsSchema, type BackendSpec } from './domain/backend-specs';
import { backendPools } from './domain/routing';
import { allowedHostsSetting } from './lib/ip-addresses';
import { isWebhookSecret } from './lib/webhook-signature';
import { parsePayloadKeys } from './lib/payload-codec';

/**
 * All configuration of the service, validated once at boot. Nothing else reads process.env: processes call loadConfig()
 * and pass the result (or the part they need) down; tests build one with overrides. The backend simulator, which is no
 * part of the service, has settings of its own (simulator/settings.ts) and shares only the process settings below.
 */
/** A whole number of at least 0, and a true/false setting (`true`, `false`, `1`, `0`); shared with the simulator's settings. */
export const int = (fallback: number) => z.coerce.number().int().min(0).default(fallback);
export const flag = (fallback: boolean) =>
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

/** An optional setting where an empty value counts as unset (compose's `${X:-}`; parseSettings also drops empty values). */
const emptyIsUnset = <S extends z.ZodType>(schema: S) => z.preprocess((v) => (v === '' ? undefined : v), schema.optional());
/** A secret setting: an empty value counts as unset, and no message ever repeats the value. */
const secretSetting = emptyIsUnset;
const adminKeySetting = z
  .string()
  .min(32, 'must be at least 32 characters')
  .max(256, 'must be at most 256 characters')
  .regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, 'must be printable ASCII without spaces, quotes or backslashes');
const webhookSecretSetting = z.string().refine(isWebhookSecret, 'must be whsec_ followed by the base64 of 24 to 64 random bytes');

/** Environments that may run without secrets of their own; every other NODE_ENV (production, staging...) needs them. */
const RELAXED_ENVS = ['development', 'test'];
/** development and test: the environments that may make their own secrets and cut corners a deployment may not. */
export const isRelaxedEnv = (env: string): boolean => RELAXED_ENVS.includes(env);

/**
 * The settings every process reads alike — the API, the workers, and the simulator (simulator/settings.ts): the
 * environment, the log level and the secrets, with the rules of processSettingProblems().
 */
export const processSettings = {
  /** development and test run with development secrets; any other value must set ADMIN_API_KEY and BACKEND_WEBHOOK_SECRET. */
  NODE_ENV: z.string().regex(/^[\w.-]{1,40}$/, 'must be a name such as production').default('development'),
  LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error', 'silent']).default('info'),
  ADMIN_API_KEY: secretSetting(adminKeySetting),
  BACKEND_WEBHOOK_SECRET: secretSetting(webhookSecretSetting),
  /** During a rotation, callbacks signed with the secret being retired are still accepted. */
  BACKEND_WEBHOOK_SECRET_PREVIOUS: secretSetting(webhookSecretSetting),
};

type ProcessSettings = z.infer<z.ZodObject<typeof processSettings>>;

const envSchema = z.object({
  NODE_ENV: processSettings.NODE_ENV,
  LOG_LEVEL: processSettings.LOG_LEVEL,
  PORT: int(3000),
  /** Base URL the backend uses to reach our callback endpoint. */
  PUBLIC_URL: z.string().url().optional(),
  DATABASE_URL: z.string().url().optional(),
  DATA_DIR: z.string().default('.data'),
  EMBEDDED_PG_PORT: int(5433),
  /** Unset: `npm start` runs a Temporal dev server at 127.0.0.1:7233. */
  TEMPORAL_ADDRESS: z.string().min(1).optional(),
  TEMPORAL_NAMESPACE: z.string().default('default'),
  /** The dev server `npm start` runs when TEMPORAL_ADDRESS is unset: its frontend and Web UI ports. */
  TEMPORAL_DEV_PORT: z.coerce.number().int().min(1).max(65_535).default(7233),
  TEMPORAL_DEV_UI_PORT: z.coerce.number().int().min(1).max(65_535).default(8233),
  ADMIN_API_KEY: processSettings.ADMIN_API_KEY,
  /**
   * The keys Temporal payloads (prompts, results, signals) are encrypted with: `id:base64,id:base64…`, each 32 random
   * bytes; the first encrypts, all decrypt (rotation: put a new key first, drop the old one once no history needs it).
   * Required outside development and test; there, unset, a key kept in DATA_DIR is used (src/payload-keys.ts).
   */
  PAYLOAD_KEYS: secretSetting(z.string().transform((value, ctx) => {
    try {
      return parsePayloadKeys(value);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
      return z.NEVER;
    }
  })),
  /**
   * false: payloads are opened but not sealed — the first step of turning encryption on in a running cluster, until
   * every worker that may read a job has PAYLOAD_KEYS (docs/runbook.md, "Read encrypted payloads").
   */
  PAYLOAD_ENCRYPT: flag(true),
  /** Unset: admin routes, /metrics and readiness details share the public port. Set: they are served only here (0: any free port). */
  ADMIN_PORT: z.coerce.number().int().min(0).max(65_535).optional(),
  ADMIN_HOST: z.string().min(1).default('127.0.0.1'),
  /** Origins whose pages may call the codec endpoint from a browser: the Temporal Web UI's (src/api/codec-routes.ts). */
  CODEC_CORS_ORIGINS: z
    .string()
    .default('http://127.0.0.1:8233,http://localhost:8233')
    .transform((v) => v.split(',').map((o) => o.trim()).filter(Boolean)),
  /** Unset: the simulator on SIMULATOR_PORT (what `npm start` runs). */
  BACKEND_URL: z.string().url().optional(),
  /** Submits kept while Temporal cannot be reached that one API process holds for its start relay; the reconciler starts the rest. */
  START_RELAY_MAX_JOBS: z.coerce.number().int().min(1).default(10_000),
  BACKEND_MODE: z.enum(['async', 'sync']).default('async'),
  /** The backends, as a JSON array (src/domain/backend-specs.ts, docs/backends.md). Unset: the simulator at BACKEND_URL. */
  BACKENDS: emptyIsUnset(
    z.string().transform((value, ctx): BackendSpec[] => {
      let json: unknown;
      try {
        json = JSON.parse(value);
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: `must be a JSON array of backends (${(err as Error).message})` });
        return z.NEVER;
      }
      const parsed = backendSpecsSchema.safeParse(json);
      if (parsed.success) return parsed.data;
      for (const issue of parsed.error.issues) {
        const where = issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('');
        ctx.addIssue({ code: 'custom', message: where ? `${where}: ${issue.message}` : issue.message });
      }
      return z.NEVER;
    }),
  ),
  BACKEND_WEBHOOK_SECRET: processSettings.BACKEND_WEBHOOK_SECRET,
  BACKEND_WEBHOOK_SECRET_PREVIOUS: processSettings.BACKEND_WEBHOOK_SECRET_PREVIOUS,
  BACKEND_TIMEOUT_MS: int(10_000),
  // Routing across several backends (src/domain/routing.ts, docs/backends.md "Routing and failover").
  /** How often each GPU dispatcher checks every backend's health. */
  BACKEND_HEALTH_CHECK_MS: z.coerce.number().int().min(100).default(5_000),
  /** Consecutive failed calls to a backend (from any process) that open its circuit. */
  BACKEND_CIRCUIT_FAILURES: z.coerce.number().int().min(1).default(5),
  /** How long an open circuit keeps new attempts away; then one call is let through, and a failure opens it again. */
  BACKEND_CIRCUIT_OPEN_MS: z.coerce.number().int().min(100).default(30_000),
  /** A running attempt whose backend has been down this long, with another backend up, is moved there (a new attempt). */
  BACKEND_FAILOVER_AFTER_MS: z.coerce.number().int().min(0).default(30_000),
  /** How long each process reuses what it read of the backends' health and pools (0: read at every routing decision). */
  BACKEND_STATE_CACHE_MS: z.coerce.number().int().min(0).max(60_000).default(500),
  WORKER_ROLE: z.enum(['all', 'generation', 'gpu']).default('all'),
  // Worker Deployment Versioning (src/worker-deployment.ts): a job ends on the code it began with.
  WORKER_VERSIONING: flag(true),
  /** Temporal forbids `.` and `:` in a deployment name, and a leading `__` in either part of a version. */
  WORKER_DEPLOYMENT_NAME: z.string().regex(/^(?!__)[A-Za-z0-9_-]{1,100}$/, 'must be 1-100 letters, digits, _ or -, not starting with __').default('videogen'),
  /** Unset: the package version and the code's git commit (BUILD_GIT_SHA, else `git rev-parse`, else "dev"). */
  WORKER_BUILD_ID: emptyIsUnset(z.string().regex(/^(?!__)[\x21-\x7e]{1,100}$/, 'must be 1-100 printable characters without spaces, not starting with __')),
  /** The commit an image was built from (the Dockerfile's GIT_SHA build argument), for machines without git. */
  BUILD_GIT_SHA: emptyIsUnset(z.string().regex(/^[0-9a-f]{7,40}$/, 'must be a git commit id (7-40 hex digits)')),
  /** Where `npm run build` put the workflow bundles (src/workflow-bundle.ts); unset: dist/workflows of this checkout. */
  WORKFLOW_BUNDLE_DIR: emptyIsUnset(z.string().min(1)),
  /** Postgres connections of a worker process's pool: during a rolling upgrade two versions' workers hold theirs at once. */
  WORKER_DATABASE_POOL_SIZE: z.coerce.number().int().min(2).max(100).default(10),
  /** The workers' Prometheus endpoint (/metrics, with the Temporal SDK's own metrics); 0 turns it off. */
  METRICS_PORT: int(9464),
  // Tracing (src/lib/tracing.ts), by the standard OpenTelemetry settings: off unless an OTLP/HTTP endpoint is set. The
  // exporter reads its other OTEL_EXPORTER_OTLP_* settings, and the resource OTEL_SERVICE_NAME, themselves.
  OTEL_SDK_DISABLED: flag(false),
  OTEL_TRACES_EXPORTER: emptyIsUnset(z.enum(['otlp', 'none'])),
  OTEL_EXPORTER_OTLP_ENDPOINT: emptyIsUnset(z.url({ protocol: /^https?$/ })),
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: emptyIsUnset(z.url({ protocol: /^https?$/ })),
  GENERATION_TASK_QUEUE: z.string().min(1).default('generation'),
  GPU_TASK_QUEUE: z.string().min(1).default('gpu'),
  /** The most the SDK holds back a heartbeat; it never waits past 0.8 of the activity's heartbeat timeout either. */
  HEARTBEAT_THROTTLE_MS: int(60_000),
  GPU_SLOTS: int(4),
  GPU_SUBMITS_PER_SECOND: z.coerce.number().positive().default(20),
  // GPU dispatch and admission (src/dispatch, src/api/admission.ts). GPU_SLOTS seeds the pool's live capacity.
  GPU_LEASE_TTL_MS: z.coerce.number().int().min(1_000).default(15_000),
  GPU_DISPATCH_POLLERS: z.coerce.number().int().min(1).max(10).default(2),
  GPU_CAPACITY_FROM_BACKEND: flag(false),
  GPU_CAPACITY_REFRESH_MS: z.coerce.number().int().min(100).default(5_000),
  RATE_LIMIT_BURST: z.coerce.number().int().min(1).default(20),
  RATE_LIMIT_PER_SECOND: z.coerce.number().positive().default(2),
  /** POST /v1/generations/estimate per user and API process (they take no submit token, but each costs an admission). */
  ESTIMATE_BURST: z.coerce.number().int().min(1).default(20),
  ESTIMATES_PER_SECOND: z.coerce.number().positive().default(5),
  TIER_MAX_ACTIVE_JOBS: tierNumbers('free:10,pro:50,enterprise:200', { min: 1 }),
  TIER_DAILY_QUOTA: tierNumbers('free:200,pro:5000,enterprise:50000', { min: 1 }),
  TIER_BACKLOG_PER_SLOT: tierNumbers('free:10,pro:50,enterprise:100', { min: 0.01 }),
  // The batch lane (priority: "batch"): its own active-job limits and backlog bound per tier, a lower price, a longer queue.
  TIER_MAX_ACTIVE_BATCH_JOBS: tierNumbers('free:50,pro:500,enterprise:2000', { min: 1 }),
  TIER_BATCH_BACKLOG_PER_SLOT: tierNumbers('free:100,pro:500,enterprise:1000', { min: 0.01 }),
  /** A batch job's price as a share of an interactive one's (rounded up, at least 1 credit). */
  BATCH_PRICE_FACTOR: z.coerce.number().gt(0).max(1).default(0.5),
  QUEUE_ETA_WINDOW_MS: z.coerce.number().int().min(1_000).default(10 * 60_000),
  POLL_INTERVAL_MS: int(5_000),
  /** A GPU dispatcher that stops heartbeating is given up after this; its job resumes on another (within a minute). */
  HEARTBEAT_TIMEOUT_MS: int(50_000),
  MAX_ATTEMPTS: int(3),
  RETRY_BACKOFF_MS: int(2_000),
  TIER_WEIGHTS: tierNumbers('free:1,pro:4,enterprise:8', { min: 0.001 }),
  /** A job admitted while its user has nothing else queued or running goes ahead of other users' backlogs. */
  FIRST_JOB_PRIORITY: flag(true),
  // Job lifecycle: credits, deadlines, reconciliation.
  CREDIT_GRANTS: tierNumbers('free:1000,pro:20000,enterprise:200000'),
  MAX_QUEUE_MS: int(30 * 60_000),
  /** The batch lane's MAX_QUEUE_MS: a batch job waits behind every interactive one, so it may wait longer. */
  MAX_BATCH_QUEUE_MS: int(24 * 60 * 60_000),
  /** Running-time limit of a 5 s 720p video; scaled by duration and resolution. */
  MAX_RUN_MS: int(15 * 60_000),
  /** Expected running time of a 5 s 720p video; past it (scaled) a running job is listed as stuck. */
  EXPECTED_RUN_MS: int(3 * 60_000),
  RECONCILE_INTERVAL_MS: int(60_000),
  /** The simulator's port (simulator/settings.ts reads it too): the backend's when BACKEND_URL is unset. */
  SIMULATOR_PORT: int(4000),
  // Notifications: SSE keep-alives, webhook delivery (SSRF allow-list, Svix-like retry schedule scaled for tests).
  SSE_KEEPALIVE_MS: z.coerce.number().int().min(100).default(15_000),
  SSE_POLL_MS: z.coerce.number().int().min(10).default(200),
  SSE_QUEUE_POSITION_MS: z.coerce.number().int().min(100).default(2_000),
  WEBHOOK_ALLOWED_HOSTS: allowedHostsSetting,
  WEBHOOK_RETRY_SCALE: z.coerce.number().positive().max(1).default(1),
  WEBHOOK_TIMEOUT_MS: z.coerce.number().int().min(100).default(15_000),
  // Retention (src/retention): how long finished things are kept, and how the pruning schedule deletes them.
  /** Finished jobs, with their idempotency keys, and change-feed events; at least a day, so a key lives at least 24 h. */
  RETENTION_JOBS_DAYS: z.coerce.number().int().min(1).default(30),
  RETENTION_NOTIFICATIONS_DAYS: z.coerce.number().int().min(1).default(30),
  /** Finished webhook deliveries and their attempts, and deleted endpoints once their deliveries are gone. */
  RETENTION_DELIVERIES_DAYS: z.coerce.number().int().min(1).default(30),
  /** Settled job entries of the credit ledger (grants are kept for good: they are what the accounts balance against). */
  RETENTION_LEDGER_DAYS: z.coerce.number().int().min(1).default(400),
  /** Revoked API keys, after their revocation. */
  RETENTION_API_KEYS_DAYS: z.coerce.number().int().min(1).default(30),
  RETENTION_INTERVAL_MS: z.coerce.number().int().min(1_000).default(60 * 60_000),
  /** Rows per delete statement (each batch its own short transaction); a batch of jobs takes a quarter as many jobs. */
  RETENTION_BATCH_SIZE: z.coerce.number().int().min(1).max(10_000).default(1_000),
  /** The share of its time a pruning run spends deleting: after each batch it rests the rest (at least the pause). */
  RETENTION_WORK_SHARE: z.coerce.number().gt(0).max(1).default(0.25),
  RETENTION_BATCH_PAUSE_MS: int(10),
  /** The Temporal namespace's retention of closed workflows, applied by the migrate step. */
  TEMPORAL_RETENTION_DAYS: z.coerce.number().int().min(1).default(7),
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
  PREFER_WAIT_MAX_PER_USER: z.coerce.number().int().min(1).default(20),
  PREFER_WAIT_MAX: z.coerce.number().int().min(1).default(2_000),
  SSE_RESUME_MAX_EVENTS: z.coerce.number().int().min(1).default(1_000),
  SSE_RESUME_MAX_AGE_MS: z.coerce.number().int().min(1_000).default(60 * 60_000),
  SSE_SLOW_CLIENT_MS: z.coerce.number().int().min(100).default(30_000),
  SSE_KEY_CHECK_MS: z.coerce.number().int().min(100).default(2_000),
  DATABASE_STATEMENT_TIMEOUT_MS: int(30_000),
  DNS_TIMEOUT_MS: z.coerce.number().int().min(10).default(3_000),
  INPUT_REFERENCE_TIMEOUT_MS: z.coerce.number().int().min(100).default(5_000),
  WEBHOOK_MAX_REPLAYS: z.coerce.number().int().min(0).default(10),
  WEBHOOK_REPLAYS_PER_MINUTE: z.coerce.number().positive().default(30),
  // Email (src/notifications/mailer.ts). Unset SMTP_URL: the Mailpit `npm start` runs on MAILPIT_SMTP_PORT.
  SMTP_URL: z
    .string()
    .url()
    .refine((v) => /^smtps?:$/.test(new URL(v).protocol), 'must be an smtp:// or smtps:// URL')
    .optional(),
  MAILPIT_SMTP_PORT: z.coerce.number().int().min(1).max(65_535).default(1025),
  MAILPIT_UI_PORT: z.coerce.number().int().min(1).max(65_535).default(8025),
  MAIL_FROM: z.string().min(3).max(200).default('Videogen <notifications@videogen.localhost>'),
});

/** The development-only callback secret: it is in the repository, so no other environment may use it. */
const DEV_BACKEND_WEBHOOK_SECRET = 'whsec_ZGV2ZWxvcG1lbnQtb25seS1iYWNrZW5kLXNlY3JldA==';

/** A configuration the process must not start with; its message is one line that names the settings and never their values. */
export class ConfigError extends Error {
  constructor(problems: string) {
    super(`invalid configuration: ${problems}`);
    this.name = 'ConfigError';
  }
}

/** Parses `env` with `schema`; a bad value is a ConfigError naming the setting (never repeating a secret's value). */
export function parseSettings<S extends z.ZodType>(schema: S, env: Record<string, string | undefined>): z.infer<S> {
  // An empty value counts as unset, for every setting (compose's `${X:-}`, an `export X=`): read as a number it was 0,
  // so `PORT=` served on a random port, `ADMIN_PORT=` moved /metrics to one, and `GPU_SLOTS=` paused dispatch.
  const parsed = schema.safeParse(Object.fromEntries(Object.entries(env).filter(([, value]) => value !== '')));
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
  }
  return parsed.data;
}

/** Rules across the process settings. Fails closed: outside development and test, a process starts only with secrets of its own. */
export function processSettingProblems(e: ProcessSettings): string[] {
  const problems: string[] = [];
  if (!isRelaxedEnv(e.NODE_ENV)) {
    const missing = (['BACKEND_WEBHOOK_SECRET', 'ADMIN_API_KEY'] as const).filter((name) => e[name] === undefined);
    if (missing.length > 0) problems.push(`${missing.join(' and ')} must be set when NODE_ENV=${e.NODE_ENV} (only development and test run without)`);
    for (const name of ['BACKEND_WEBHOOK_SECRET', 'BACKEND_WEBHOOK_SECRET_PREVIOUS'] as const) {
      if (e[name] === DEV_BACKEND_WEBHOOK_SECRET) problems.push(`${name}: the development secret is public and may not be used when NODE_ENV=${e.NODE_ENV}`);
    }
  }
  if (e.BACKEND_WEBHOOK_SECRET_PREVIOUS !== undefined && e.BACKEND_WEBHOOK_SECRET === undefined) {
    problems.push('BACKEND_WEBHOOK_SECRET_PREVIOUS: set only together with BACKEND_WEBHOOK_SECRET (the new secret)');
  }
  if (e.BACKEND_WEBHOOK_SECRET_PREVIOUS !== undefined && e.BACKEND_WEBHOOK_SECRET_PREVIOUS === e.BACKEND_WEBHOOK_SECRET) {
    problems.push('BACKEND_WEBHOOK_SECRET_PREVIOUS: must differ from BACKEND_WEBHOOK_SECRET');
  }
  return problems;
}

/** The secret the backend's callbacks are signed with: the configured one, or in development and test the public development one. */
export const backendWebhookSecretOf = (e: ProcessSettings): string => e.BACKEND_WEBHOOK_SECRET ?? DEV_BACKEND_WEBHOOK_SECRET;

/** Rules across settings: the process settings', and the service's own. */
function checkAcrossSettings(e: z.infer<typeof envSchema>): void {
  const problems = processSettingProblems(e);
  if (e.ADMIN_PORT !== undefined && e.ADMIN_PORT !== 0 && e.ADMIN_PORT === e.PORT) problems.push('ADMIN_PORT: must differ from PORT');
  if (!isRelaxedEnv(e.NODE_ENV) && e.PAYLOAD_KEYS === undefined) problems.push(`PAYLOAD_KEYS must be set when NODE_ENV=${e.NODE_ENV}: Temporal keeps prompts and results only encrypted (openssl rand -base64 32 makes a key)`);
  if (problems.length > 0) throw new ConfigError(problems.join('; '));
}

/** A configured backend with its secrets read from the variables it names. */
export type ConfiguredBackend = BackendSpec & { credentials?: string; webhookSecret?: string };

/**
 * The BACKENDS list with each backend's key read from its `credentials_env` (and a Replicate signing secret from its
 * `webhook_secret_env`); unset, today's one backend: the simulator at BACKEND_URL, with the pool's GPU_SLOTS.
 */
function configuredBackends(e: z.infer<typeof envSchema>, env: Record<string, string | undefined>, simulatorUrl: string): ConfiguredBackend[] {
  if (e.BACKENDS === undefined) {
    return [{ name: 'simulator', kind: 'simulator', base_url: simulatorUrl, capacity: e.GPU_SLOTS, cost_factor: 1, renders: { image_input: true, video_input: true } }];
  }
  const problems: string[] = [];
  const read = (i: number, field: string, name: string | undefined): string | undefined => {
    if (name === undefined) return undefined;
    const value = env[name];
    if (value === undefined || value === '') problems.push(`BACKENDS[${i}].${field}: ${name} is not set`);
    return value;
  };
  const backends = e.BACKENDS.map((spec, i) => ({
    ...spec,
    credentials: read(i, 'credentials_env', spec.credentials_env),
    webhookSecret: spec.kind === 'replicate' ? read(i, 'webhook_secret_env', spec.webhook_secret_env) : undefined,
  }));
  // The capacity watcher asks the simulator's /admin/config; a provider's pool is its `capacity`.
  if (e.GPU_CAPACITY_FROM_BACKEND && backends[0].kind !== 'simulator') {
    problems.push(`GPU_CAPACITY_FROM_BACKEND: only the simulator reports its capacity; ${backends[0].kind} backends set theirs in BACKENDS`);
  }
  if (problems.length > 0) throw new ConfigError(problems.join('; '));
  return backends;
}

/** Where spans go (OTLP/HTTP), or undefined: tracing off. The traces endpoint is used as is; the base one gets /v1/traces. */
function tracesUrlOf(e: z.infer<typeof envSchema>): string | undefined {
  if (e.OTEL_SDK_DISABLED || e.OTEL_TRACES_EXPORTER === 'none') return undefined;
  return e.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? (e.OTEL_EXPORTER_OTLP_ENDPOINT ? `${e.OTEL_EXPORTER_OTLP_ENDPOINT.replace(/\/+$/, '')}/v1/traces` : undefined);
}

export function loadConfig(env: Record<string, string | undefined> = process.env) {
  const e = parseSettings(envSchema, env);
  checkAcrossSettings(e);
  const backendWebhookSecret = backendWebhookSecretOf(e);
  checkRetention(e);
  const backendUrl = e.BACKEND_URL ?? `http://127.0.0.1:${e.SIMULATOR_PORT}`;
  const backends = configuredBackends(e, env, backendUrl);
  return {
    env: e.NODE_ENV,
    logLevel: e.LOG_LEVEL,
    api: {
      port: e.PORT,
      publicUrl: e.PUBLIC_URL ?? `http://127.0.0.1:${e.PORT}`,
      adminApiKey: e.ADMIN_API_KEY,
      codecCorsOrigins: e.CODEC_CORS_ORIGINS,
      /** The internal listener of admin routes, /metrics and readiness details; undefined: they share the public port. */
      adminListener: e.ADMIN_PORT === undefined ? undefined : { port: e.ADMIN_PORT, host: e.ADMIN_HOST },
      startRelayMaxJobs: e.START_RELAY_MAX_JOBS,
      /** How long a client may take to send its headers, and its whole request (a stream's response is not bounded). */
      headersTimeoutMs: e.HTTP_HEADERS_TIMEOUT_MS,
      requestTimeoutMs: Math.max(e.HTTP_REQUEST_TIMEOUT_MS, e.HTTP_HEADERS_TIMEOUT_MS),
      maxConnections: e.HTTP_MAX_CONNECTIONS,
      trustProxy: e.TRUST_PROXY,
      /** Failed authentications an address may make at once, and per second after that, before unknown keys are refused unread. */
      authFailureBurst: e.AUTH_FAILURE_BURST,
      authFailuresPerSecond: e.AUTH_FAILURES_PER_SECOND,
    },
    tracing: { tracesUrl: tracesUrlOf(e) },
    database: { url: e.DATABASE_URL, dataDir: e.DATA_DIR, embeddedPort: e.EMBEDDED_PG_PORT, statementTimeoutMs: e.DATABASE_STATEMENT_TIMEOUT_MS },
    temporal: {
      address: e.TEMPORAL_ADDRESS ?? `127.0.0.1:${e.TEMPORAL_DEV_PORT}`,
      external: e.TEMPORAL_ADDRESS !== undefined,
      namespace: e.TEMPORAL_NAMESPACE,
      devPort: e.TEMPORAL_DEV_PORT,
      devUiPort: e.TEMPORAL_DEV_UI_PORT,
      retentionDays: e.TEMPORAL_RETENTION_DAYS,
      /** Unset in development and test: src/payload-keys.ts keeps one in DATA_DIR. */
      payloadKeys: e.PAYLOAD_KEYS,
      sealPayloads: e.PAYLOAD_ENCRYPT,
    },
    backend: {
      url: backendUrl,
      mode: e.BACKEND_MODE,
      /** Every backend, in the operator's order (src/domain/routing.ts ranks them per job). */
      backends,
      /** Signs the simulator's callbacks. */
      webhookSecret: backendWebhookSecret,
      /** Verify the backend's callbacks: the current secret, and during a rotation the previous one. */
      webhookSecrets: e.BACKEND_WEBHOOK_SECRET_PREVIOUS ? [backendWebhookSecret, e.BACKEND_WEBHOOK_SECRET_PREVIOUS] : [backendWebhookSecret],
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
      /** Off: unversioned workers (a server without Worker Deployments). */
      versioning: { enabled: e.WORKER_VERSIONING, deploymentName: e.WORKER_DEPLOYMENT_NAME, buildId: e.WORKER_BUILD_ID, gitSha: e.BUILD_GIT_SHA },
      databasePoolSize: e.WORKER_DATABASE_POOL_SIZE,
      workflowBundleDir: e.WORKFLOW_BUNDLE_DIR,
    },
    routing: {
      /** More than one backend: each attempt is routed (a deployment with one runs exactly as before routing). */
      enabled: backends.length > 1,
      healthCheckMs: e.BACKEND_HEALTH_CHECK_MS,
      circuitFailures: e.BACKEND_CIRCUIT_FAILURES,
      circuitOpenMs: e.BACKEND_CIRCUIT_OPEN_MS,
      failoverAfterMs: e.BACKEND_FAILOVER_AFTER_MS,
      stateCacheMs: e.BACKEND_STATE_CACHE_MS,
    },
    dispatch: {
      /**
       * A pool is one `gpu` task queue: its live capacity and slot leases live in Postgres (src/dispatch). This one, the
       * first backend's, is the service's: admission's queue entries and PUT /admin/capacity without a backend name it.
       */
      pool: e.GPU_TASK_QUEUE,
      /** GPU_SLOTS, or with BACKENDS the capacity of the first backend. */
      initialCapacity: e.BACKENDS === undefined ? e.GPU_SLOTS : backends[0].capacity,
      /** One pool (and `gpu` task queue) per backend, the first being the one above. */
      pools: backendPools(backends, e.GPU_TASK_QUEUE, e.BACKENDS === undefined ? e.GPU_SLOTS : backends[0].capacity),
      leaseTtlMs: e.GPU_LEASE_TTL_MS,
      pollers: e.GPU_DISPATCH_POLLERS,
      capacityFromBackend: e.GPU_CAPACITY_FROM_BACKEND,
      capacityRefreshMs: e.GPU_CAPACITY_REFRESH_MS,
    },
    admission: {
      burst: e.RATE_LIMIT_BURST,
      refillPerSecond: e.RATE_LIMIT_PER_SECOND,
      estimates: { burst: e.ESTIMATE_BURST, perSecond: e.ESTIMATES_PER_SECOND },
      tiers: tierLimits(e),
      etaWindowMs: e.QUEUE_ETA_WINDOW_MS,
      /** The whole check of an input_reference image (look-up, HEAD or GET, redirects) before admission. */
      inputReferenceTimeoutMs: e.INPUT_REFERENCE_TIMEOUT_MS,
    },
    generation: {
      pollIntervalMs: e.POLL_INTERVAL_MS,
      heartbeatTimeoutMs: e.HEARTBEAT_TIMEOUT_MS,
      maxAttempts: Math.max(1, e.MAX_ATTEMPTS),
      retryBackoffMs: e.RETRY_BACKOFF_MS,
      maxRunMs: e.MAX_RUN_MS,
      maxQueueMs: e.MAX_QUEUE_MS,
      /** The batch lane's queue limit (its jobs' max_queue_seconds may be up to this). */
      maxBatchQueueMs: e.MAX_BATCH_QUEUE_MS,
      pricing: { batchPriceFactor: e.BATCH_PRICE_FACTOR },
      expectedRunMs: e.EXPECTED_RUN_MS,
      creditGrants: e.CREDIT_GRANTS,
      reconcileIntervalMs: e.RECONCILE_INTERVAL_MS,
      tierWeights: e.TIER_WEIGHTS,
      firstJobPriority: e.FIRST_JOB_PRIORITY,
    },
    notifications: {
      sseKeepAliveMs: e.SSE_KEEPALIVE_MS,
      /** How often an API process with open SSE streams looks for new change-feed events of their users. */
      ssePollMs: e.SSE_POLL_MS,
      /** How often an SSE stream with queued jobs re-reads their queue positions. */
      sseQueuePositionMs: e.SSE_QUEUE_POSITION_MS,
      webhookAllowedHosts: e.WEBHOOK_ALLOWED_HOSTS,
      webhookRetryScale: e.WEBHOOK_RETRY_SCALE,
      webhookTimeoutMs: e.WEBHOOK_TIMEOUT_MS,
      /** Open event streams one user may have on one API process, and all users together. */
      sseMaxStreamsPerUser: e.SSE_MAX_STREAMS_PER_USER,
      sseMaxStreams: e.SSE_MAX_STREAMS,
      /** Requests waiting under Prefer: wait one user may have on one API process, and all users together. */
      preferWaitMaxPerUser: e.PREFER_WAIT_MAX_PER_USER,
      preferWaitMax: e.PREFER_WAIT_MAX,
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
    mail: {
      smtpUrl: e.SMTP_URL ?? `smtp://127.0.0.1:${e.MAILPIT_SMTP_PORT}`,
      /** SMTP_URL names a mail server of its own: `npm start` then runs no Mailpit. */
      external: e.SMTP_URL !== undefined,
      mailpitSmtpPort: e.MAILPIT_SMTP_PORT,
      mailpitUiPort: e.MAILPIT_UI_PORT,
      from: e.MAIL_FROM,
    },
    retention: {
      jobsDays: e.RETENTION_JOBS_DAYS,
      notificationsDays: e.RETENTION_NOTIFICATIONS_DAYS,
      deliveriesDays: e.RETENTION_DELIVERIES_DAYS,
      ledgerDays: e.RETENTION_LEDGER_DAYS,
      apiKeysDays: e.RETENTION_API_KEYS_DAYS,
      intervalMs: e.RETENTION_INTERVAL_MS,
      batchSize: e.RETENTION_BATCH_SIZE,
      batchPauseMs: e.RETENTION_BATCH_PAUSE_MS,
      workShare: e.RETENTION_WORK_SHARE,
    },
  };
}

/**
 * A job's id derives from (user, Idempotency-Key), and so do its notification's and deliveries' keys: once its row and
 * key are pruned, a reused key names the same id again. Whatever else carries that id must be gone by then — the
 * closed workflow (REJECT_DUPLICATE would refuse the new run), the notification, the deliveries.
 */
function checkRetention(e: z.infer<typeof envSchema>): void {
  const problems: string[] = [];
  if (e.TEMPORAL_RETENTION_DAYS >= e.RETENTION_JOBS_DAYS) problems.push('TEMPORAL_RETENTION_DAYS must be less than RETENTION_JOBS_DAYS');
  if (e.RETENTION_NOTIFICATIONS_DAYS > e.RETENTION_JOBS_DAYS) problems.push('RETENTION_NOTIFICATIONS_DAYS may not exceed RETENTION_JOBS_DAYS');
  if (e.RETENTION_DELIVERIES_DAYS > e.RETENTION_JOBS_DAYS) problems.push('RETENTION_DELIVERIES_DAYS may not exceed RETENTION_JOBS_DAYS');
  if (e.RETENTION_LEDGER_DAYS < e.RETENTION_JOBS_DAYS) problems.push('RETENTION_LEDGER_DAYS may not be less than RETENTION_JOBS_DAYS');
  if (problems.length > 0) throw new Error(`invalid configuration: ${problems.join('; ')}`);
}

export type Config = ReturnType<typeof loadConfig>;

/** Every secret value in the configuration, for the log scrubber (src/lib/logger.ts). */
export function configuredSecrets(config: Config): string[] {
  const password = config.database.url ? new URL(config.database.url).password : '';
  let databasePassword = password;
  try {
    databasePassword = decodeURIComponent(password);
  } catch {
    // Not valid percent-encoding: the password is what the URL says.
  }
  const smtpPassword = config.mail.external ? new URL(config.mail.smtpUrl).password : '';
  const payloadKeys = (config.temporal.payloadKeys ?? []).map((k) => k.key.toString('base64'));
  const backendSecrets = config.backend.backends.flatMap((b) => [b.credentials ?? '', b.webhookSecret ?? '']);
  return [config.api.adminApiKey ?? '', ...config.backend.webhookSecrets, ...payloadKeys, ...backendSecrets, password, databasePassword, smtpPassword].filter(
    (secret) => secret.length > 0,
  );
}

export interface TierLimits {
  maxActiveJobs: number;
  dailyQuota: number;
  /** The tier's backlog bound is this many queued jobs per GPU slot of live capacity. */
  backlogPerSlot: number;
  /** The batch lane's: its jobs count against these instead (the daily quota is shared). */
  batch: { maxActiveJobs: number; backlogPerSlot: number };
}

/** Admission limits of every tier that has a fairness weight; a tier left out is a configuration error. */
function tierLimits(e: z.infer<typeof envSchema>): Record<string, TierLimits> {
  const limits: Record<string, TierLimits> = {};
  for (const tier of Object.keys(e.TIER_WEIGHTS)) {
    const [maxActiveJobs, dailyQuota, backlogPerSlot] = [e.TIER_MAX_ACTIVE_JOBS[tier], e.TIER_DAILY_QUOTA[tier], e.TIER_BACKLOG_PER_SLOT[tier]];
    const [batchActive, batchBacklog] = [e.TIER_MAX_ACTIVE_BATCH_JOBS[tier], e.TIER_BATCH_BACKLOG_PER_SLOT[tier]];
    if (maxActiveJobs === undefined || dailyQuota === undefined || backlogPerSlot === undefined || batchActive === undefined || batchBacklog === undefined) {
      throw new Error(
        `invalid configuration: tier "${tier}" needs TIER_MAX_ACTIVE_JOBS, TIER_DAILY_QUOTA, TIER_BACKLOG_PER_SLOT, TIER_MAX_ACTIVE_BATCH_JOBS and TIER_BATCH_BACKLOG_PER_SLOT entries`,
      );
    }
    limits[tier] = { maxActiveJobs, dailyQuota, backlogPerSlot, batch: { maxActiveJobs: batchActive, backlogPerSlot: batchBacklog } };
  }
  return limits;
}
