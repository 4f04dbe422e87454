import { BackendUnavailableError, isJobNotFound, TERMINAL_BACKEND_STATUSES, type BackendJob, type GenerationBackend } from '../backend/types';
import type { Db, Sql } from '../db/client';
import { backendCancels } from '../db/schema';
import type { BackendCondition, BackendPool } from '../domain/routing';
import type { Logger } from '../lib/logger';
import { everyInTurn } from '../lib/periodic';
import { RefreshingValue } from '../lib/refreshing-value';
import { EFFECTIVE_CAPACITY } from './capacity';

/**
 * Each backend's health as routing sees it, shared by every process through Postgres (table backend_health):
 * - a health check, run by every GPU dispatcher every BACKEND_HEALTH_CHECK_MS on backends that have one: two failed in a
 *   row mark the backend down, one that answers marks it up;
 * - a circuit: BACKEND_CIRCUIT_FAILURES consecutive failed calls (submit, poll, cancel: unreachable, timeout, 5xx), from
 *   any process, open it for BACKEND_CIRCUIT_OPEN_MS; then calls are let through again, and the next failure opens it at
 *   once, the next success closes it.
 * A backend is down while either says so. Capacity is its pool's live capacity (gpu_capacity).
 */
export const PROBE_FAILURES_DOWN = 2;

export interface BackendState extends BackendCondition {
  callFailures: number;
}

export interface BackendHealthOptions {
  circuitFailures: number;
  circuitOpenMs: number;
  /** How long a process keeps what it read of the backends' health before reading it again (BACKEND_STATE_CACHE_MS). */
  stateCacheMs: number;
}

export class BackendHealth {
  /** Read at most every stateCacheMs per process; a caller past that age waits for the read. */
  private readonly cached: RefreshingValue<Map<string, BackendState>>;

  constructor(
    private readonly sql: Sql,
    private readonly pools: BackendPool[],
    private readonly options: BackendHealthOptions,
  ) {
    this.cached = new RefreshingValue(() => this.read(), { freshMs: options.stateCacheMs, maxAgeMs: options.stateCacheMs });
  }

  /** Every backend's state now (read at most every stateCacheMs per process). */
  states(): Promise<Map<string, BackendState>> {
    return this.cached.get();
  }

  private async read(): Promise<Map<string, BackendState>> {
    const rows = await this.sql<{ backend: string; down: boolean; call_failures: number; capacity: number | null }[]>`
      select p.backend,
             coalesce(h.probe_failures >= ${PROBE_FAILURES_DOWN} or h.circuit_open_until > now(), false) as down,
             coalesce(h.call_failures, 0)::int as call_failures,
             (select ${this.sql.unsafe(EFFECTIVE_CAPACITY)} from gpu_capacity c where c.pool = p.pool) as capacity
      from unnest(${this.pools.map((p) => p.backend)}::text[], ${this.pools.map((p) => p.pool)}::text[]) as p(backend, pool)
      left join backend_health h on h.backend = p.backend`;
    const initial = new Map(this.pools.map((p) => [p.backend, p.initialCapacity]));
    return new Map(rows.map((r) => [r.backend, { down: r.down, capacity: r.capacity ?? initial.get(r.backend) ?? 0, callFailures: r.call_failures }]));
  }

  /** A failed call: counts towards the circuit, and opens it at the threshold (again, once its open time has passed). */
  async callFailed(backend: string): Promise<void> {
    const { circuitFailures, circuitOpenMs } = this.options;
    await this.sql`
      insert into backend_health as h (backend, call_failures, circuit_open_until)
      values (${backend}, 1, case when 1 >= ${circuitFailures}::int then now() + ${circuitOpenMs}::int * interval '1 millisecond' end)
      on conflict (backend) do update set
        call_failures = h.call_failures + 1,
        circuit_open_until = case
          when h.call_failures + 1 >= ${circuitFailures}::int and (h.circuit_open_until is null or h.circuit_open_until <= now())
          then now() + ${circuitOpenMs}::int * interval '1 millisecond'
          else h.circuit_open_until end,
        updated_at = now()`;
    this.cached.forget();
  }

  /** A call that got an answer: closes the circuit (a write only when the state, read at most every stateCacheMs, counts failures). */
  async callSucceeded(backend: string): Promise<void> {
    const known = (await this.states()).get(backend);
    if (known !== undefined && known.callFailures === 0) return;
    await this.sql`
      update backend_health set call_failures = 0, circuit_open_until = null, updated_at = now()
      where backend = ${backend} and (call_failures > 0 or circuit_open_until is not null)`;
    if (known) known.callFailures = 0;
  }

  /** A health check's result. */
  async probed(backend: string, ok: boolean): Promise<void> {
    await this.sql`
      insert into backend_health as h (backend, probe_failures, probed_at) values (${backend}, ${ok ? 0 : 1}, now())
      on conflict (backend) do update set
        probe_failures = case when ${ok} then 0 else h.probe_failures + 1 end, probed_at = now(),
        updated_at = case when (h.probe_failures = 0) = ${ok} then h.updated_at else now() end`;
  }
}

/**
 * The adapter, with each call's outcome counted by the circuit: a BackendUnavailableError is a failure, an answer
 * (including a 4xx: the backend is there) a success.
 */
export function observedBackend(name: string, backend: GenerationBackend, health: BackendHealth, logger: Logger): GenerationBackend {
  const note = async <T>(call: () => Promise<T>): Promise<T> => {
    try {
      const value = await call();
      await health.callSucceeded(name).catch((err: unknown) => logger.debug({ err, backend: name }, 'could not record a backend success'));
      return value;
    } catch (err) {
      const unavailable = err instanceof BackendUnavailableError;
      await (unavailable ? health.callFailed(name) : health.callSucceeded(name)).catch((e: unknown) => logger.debug({ err: e, backend: name }, 'could not record a backend call'));
      throw err;
    }
  };
  const observed: GenerationBackend = {
    submit: (request) => note(() => backend.submit(request)),
    getJob: (id) => note(() => backend.getJob(id)),
    cancel: (id) => note(() => backend.cancel(id)),
    cancelStopsWork: backend.cancelStopsWork,
  };
  if (backend.findSubmitted) observed.findSubmitted = (request, since) => note(() => backend.findSubmitted!(request, since));
  if (backend.generate) observed.generate = (request, signal) => note(() => backend.generate!(request, signal));
  if (backend.verifyCallback) observed.verifyCallback = (callback) => backend.verifyCallback!(callback);
  if (backend.health) observed.health = () => backend.health!();
  return observed;
}

/** Health-checks every backend that has a check, every `everyMs`. */
export function startHealthChecks({ backends, health, everyMs, logger }: { backends: Map<string, GenerationBackend>; health: BackendHealth; everyMs: number; logger: Logger }) {
  return everyInTurn(
    everyMs,
    async () => {
      await Promise.all(
        [...backends].map(async ([name, backend]) => {
          if (!backend.health) return;
          let ok = true;
          try {
            await backend.health();
          } catch (err) {
            ok = false;
            logger.debug({ backend: name, err: err instanceof Error ? err.message : String(err) }, 'backend health check failed');
          }
          await health.probed(name, ok);
        }),
      );
    },
    { now: true, onError: (err) => logger.debug({ err }, 'could not record backend health') },
  );
}

/**
 * Backend jobs an attempt abandoned when it failed over (its backend down): the cancel is owed, and is sent once the
 * backend answers (startCancelSweeper). Until then the job is the backend's only: no attempt follows it any more.
 */
export async function abandonBackendJob(db: Db, { backend, backendJobId, jobId }: { backend: string; backendJobId: string; jobId: string }): Promise<void> {
  await db.insert(backendCancels).values({ backend, backendJobId, jobId }).onConflictDoNothing();
}

/** Abandoned backend jobs not canceled yet (the chaos run's convergence waits for none). */
export async function owedCancels(sql: Sql): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from backend_cancels`;
  return row.n;
}

/** How long an owed cancel is tried for before it is given up (logged): nothing is kept without bound. */
const CANCEL_GIVE_UP_MS = 24 * 60 * 60_000;

/**
 * Sends the owed cancels, every `everyMs`: each row is claimed by pushing its next try back (so two dispatchers never send
 * the same one at once), then deleted once the backend answers the job terminal or no longer knows it. Tries back off to
 * one every 5 s, so a cancel lands within seconds of its backend coming back; there are at most as many rows per backend
 * as attempts that were running there when it went down.
 */
export function startCancelSweeper({ sql, backends, everyMs, logger }: { sql: Sql; backends: Map<string, GenerationBackend>; everyMs: number; logger: Logger }) {
  return everyInTurn(
    everyMs,
    async () => {
      const due = await sql<{ backend: string; backend_job_id: string; job_id: string; created_at: Date }[]>`
        update backend_cancels c set tries = c.tries + 1, next_at = now() + least(5000, 500 * power(2, least(c.tries, 15)))::int * interval '1 millisecond'
        from (select backend, backend_job_id from backend_cancels where next_at <= now() order by next_at limit 50 for update skip locked) due
        where c.backend = due.backend and c.backend_job_id = due.backend_job_id
        returning c.backend, c.backend_job_id, c.job_id, c.created_at`;
      await Promise.all(
        due.map(async (row) => {
          const backend = backends.get(row.backend);
          let done = backend === undefined;
          if (backend) {
            try {
              const job: BackendJob = await backend.cancel(row.backend_job_id);
              done = TERMINAL_BACKEND_STATUSES.has(job.status);
            } catch (err) {
              done = isJobNotFound(err);
            }
          }
          if (!done && Date.now() - new Date(row.created_at).getTime() > CANCEL_GIVE_UP_MS) {
            logger.error({ backend: row.backend, backendJobId: row.backend_job_id, jobId: row.job_id }, 'gave up canceling an abandoned backend job');
            done = true;
          }
          if (done) {
            await sql`delete from backend_cancels where backend = ${row.backend} and backend_job_id = ${row.backend_job_id}`;
            logger.info({ backend: row.backend, backendJobId: row.backend_job_id, jobId: row.job_id }, 'abandoned backend job canceled');
          }
        }),
      );
    },
    { onError: (err) => logger.warn({ err }, 'could not send owed backend cancels') },
  );
}
