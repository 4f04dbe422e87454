import client from 'prom-client';

/**
 * Every Prometheus metric of the service, defined once. Labels are tiers, reasons and outcomes — never user ids, whose
 * cardinality would grow with the user base. Each process exposes the registry at /metrics.
 */
export const registry = new client.Registry();
/**
 * How often the event-loop delay is sampled. prom-client's default, 10 ms, wakes the loop 100 times a second in every
 * process, busy or idle: some 3 ms of CPU a second each on this project's 2-core machines, most of an idle worker's
 * cost. At 100 ms the lag figures still show any stall a scrape apart (docs/decisions.md, "Worker CPU per job").
 */
const EVENT_LOOP_SAMPLE_MS = 100;
client.collectDefaultMetrics({ register: registry, prefix: 'vg_process_', eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });

const seconds = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800];

export const submissions = new client.Counter({
  name: 'vg_submissions_total',
  help: 'Generation submissions accepted, by tier and outcome (accepted, replayed)',
  labelNames: ['tier', 'outcome'] as const,
  registers: [registry],
});

export const refusals = new client.Counter({
  name: 'vg_submission_refusals_total',
  help: 'Generation submissions refused, by tier and reason (the error code)',
  labelNames: ['tier', 'reason'] as const,
  registers: [registry],
});

export const keptSubmits = new client.Counter({
  name: 'vg_submits_kept_total',
  help: 'Submits answered while Temporal could not be reached: kept, their workflow started later by the relay or the reconciler',
  registers: [registry],
});

export const relayWaiting = new client.Gauge({
  name: 'vg_start_relay_waiting_jobs',
  help: "Kept jobs waiting in this API process's start relay for Temporal to answer",
  registers: [registry],
});

export const callbacks = new client.Counter({
  name: 'vg_backend_callbacks_total',
  help: 'Backend callbacks received, by outcome (signalled, ignored, disowned, invalid_signature, invalid, unavailable)',
  labelNames: ['outcome'] as const,
  registers: [registry],
});

export const callbacksSignedWithPrevious = new client.Counter({
  name: 'vg_backend_callbacks_previous_secret_total',
  help: 'Backend callbacks whose signature matched only BACKEND_WEBHOOK_SECRET_PREVIOUS (a rotation is under way)',
  registers: [registry],
});

export const timeInQueue = new client.Histogram({
  name: 'vg_time_in_queue_seconds',
  help: 'From acceptance to the backend accepting the job, by tier',
  labelNames: ['tier'] as const,
  buckets: seconds,
  registers: [registry],
});

export const generationTime = new client.Histogram({
  name: 'vg_generation_seconds',
  help: 'From the backend accepting the job to its end, by tier and status',
  labelNames: ['tier', 'status'] as const,
  buckets: seconds,
  registers: [registry],
});

export const endToEndTime = new client.Histogram({
  name: 'vg_end_to_end_seconds',
  help: 'From acceptance to the terminal state, by tier and status',
  labelNames: ['tier', 'status'] as const,
  buckets: seconds,
  registers: [registry],
});

export const webhookDeliveries = new client.Counter({
  name: 'vg_webhook_delivery_attempts_total',
  help: 'Webhook delivery attempts, by outcome (succeeded, retry, failed)',
  labelNames: ['outcome'] as const,
  registers: [registry],
});

export const httpDuration = new client.Histogram({
  name: 'vg_http_request_duration_seconds',
  help: 'API request duration, by method, route pattern and status class',
  labelNames: ['method', 'route', 'status'] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
  registers: [registry],
});

/** Gauges read from Postgres at scrape time (the projection is shared by every process, so any API instance can say). */
export const backlog = new client.Gauge({ name: 'vg_backlog_jobs', help: 'Queued jobs, by tier', labelNames: ['tier'] as const, registers: [registry] });
export const inFlight = new client.Gauge({ name: 'vg_in_flight_jobs', help: 'Running jobs, by tier', labelNames: ['tier'] as const, registers: [registry] });
export const stuckJobs = new client.Gauge({ name: 'vg_stuck_jobs', help: 'Running jobs past their expected end', registers: [registry] });
export const gpuSlotsInUse = new client.Gauge({ name: 'vg_gpu_slots_in_use', help: 'GPU slots leased by dispatchers', registers: [registry] });
export const gpuCapacity = new client.Gauge({ name: 'vg_gpu_capacity', help: 'Live GPU capacity (slots)', registers: [registry] });

/** What hostile or careless clients cost, and where they were stopped. */
export const apiKeyLookups = new client.Counter({
  name: 'vg_api_key_lookups_total',
  help: 'API keys looked up in Postgres (keys not remembered by this process), by result (found, unknown)',
  labelNames: ['result'] as const,
  registers: [registry],
});
export const clientRefusals = new client.Counter({
  name: 'vg_client_refusals_total',
  help: 'Requests refused to bound what one client costs, by code (too_many_failed_auth, too_many_streams, replay_rate_limited, ...)',
  labelNames: ['code'] as const,
  registers: [registry],
});
export const sseStreamsOpen = new client.Gauge({ name: 'vg_sse_streams_open', help: 'Event streams open on this process', registers: [registry] });
export const sseStreamsClosed = new client.Counter({
  name: 'vg_sse_streams_closed_total',
  help: 'Event streams ended, by reason (client_gone, slow_client, api_key_revoked)',
  labelNames: ['reason'] as const,
  registers: [registry],
});
export const queuePositionReads = new client.Counter({
  name: 'vg_sse_queue_position_reads_total',
  help: "Reads of a user's queue positions for event streams (one per user per interval, however many streams)",
  registers: [registry],
});
