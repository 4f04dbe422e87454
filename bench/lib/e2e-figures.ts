import { parseBackendClientKey } from '../../src/domain/generation';
import { percentile } from '../../test/scheduling-metrics';
import { submitMany } from '../../test/fairness-helpers';
import { equalUsersContend } from '../../test/fairness-scenarios';
import { apiClient, eventually, type Stack } from '../../test/harness';
import { cpuMsOf, historyCost } from './costs';
import { spawnService } from './services';

/**
 * End to end with the backend simulator, time-scaled: how busy the GPU slots stay while a backlog waits, how fast a freed
 * slot is taken, and how long after the backend finishes a job its user can see it — the projection row terminal and the
 * in-app notification written — with callbacks, and with every callback lost (polling alone).
 */
export interface VisibleFigures {
  jobs: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/**
 * For every job that succeeded on the stack's backend: from the backend's end of it to the later of the terminal
 * projection write (its updated_at: a terminal row is never written again) and the notification's creation.
 */
export async function visibleAfterBackendDone(stack: Stack): Promise<VisibleFigures> {
  const ended = new Map<string, number>();
  for (const job of stack.simulator.simulator.engine.list()) {
    const owner = parseBackendClientKey(job.client_key);
    if (owner && job.status === 'succeeded' && job.completed_at) ended.set(owner.jobId, Date.parse(job.completed_at));
  }
  const ids = [...ended.keys()];
  const rows = await eventually(
    async () => {
      const found = await stack.database.sql<{ id: string; visible_ms: number; notified_ms: number }[]>`
        select g.id, (extract(epoch from g.updated_at) * 1000)::float8 as visible_ms, (extract(epoch from n.created_at) * 1000)::float8 as notified_ms
        from generations g join notifications n on n.job_id = g.id
        where g.id = any(${ids}) and g.status = 'succeeded'`;
      return found.length === ids.length ? found : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 250, what: `${ids.length} succeeded jobs visible and notified` },
  );
  const delays = rows.map((r) => Math.max(r.visible_ms, r.notified_ms) - ended.get(r.id)!);
  return { jobs: delays.length, p50Ms: percentile(delays, 50), p99Ms: percentile(delays, 99), maxMs: Math.max(...delays) };
}

/** Backlogged equal users on `capacity` slots (test/fairness-scenarios.ts), then the visibility delay of their jobs. */
export async function backloggedRun(stack: Stack, { users, jobsEach, capacity }: { users: number; jobsEach: number; capacity: number }) {
  const cpuBefore = process.cpuUsage();
  const contended = await equalUsersContend(stack, { users, jobsEach, capacity });
  const cpu = process.cpuUsage(cpuBefore);
  const visible = await visibleAfterBackendDone(stack);
  const succeeded = stack.simulator.simulator.engine.list().filter((job) => job.status === 'succeeded');
  const ids = succeeded.map((job) => parseBackendClientKey(job.client_key)?.jobId).filter((id): id is string => id !== undefined);
  // This process ran the API, the generation worker, the dispatcher and the simulator (and the scenario): an upper bound.
  const cpuMsPerJob = (cpu.user + cpu.system) / 1000 / Math.max(1, stack.simulator.simulator.engine.list().length);
  return { ...contended, visible, cpuMsPerJob, history: await historyCost(stack.client, ids.slice(0, 10)) };
}

/** Jobs on a stack whose backend loses every callback: each end is found by the GPU activity's poll. */
export async function pollingRun(stack: Stack, { users, jobsEach }: { users: number; jobsEach: number }): Promise<VisibleFigures> {
  const clients = await Promise.all(Array.from({ length: users }, async () => apiClient(stack.apiUrl, (await stack.createUser('pro')).apiKey)));
  const ids = (await Promise.all(clients.map((api, i) => submitMany(api, jobsEach, { prompt: `polled ${i}` })))).flat();
  // Watched from the database, so the watching adds no load to the API under measurement.
  await eventually(
    async () => {
      const [row] = await stack.database.sql<{ n: number }[]>`select count(*)::int as n from generations where id = any(${ids}) and status_rank = 2`;
      return row.n === ids.length ? true : undefined;
    },
    { timeoutMs: 5 * 60_000, intervalMs: 500, what: `${ids.length} polled jobs to end` },
  );
  return visibleAfterBackendDone(stack);
}

/** How long the workers' idle CPU is measured before a worker-CPU run's jobs. */
const IDLE_WINDOW_MS = 10_000;

/** A process has settled after start-up once a window of SETTLE_WINDOW_MS costs it less than SETTLED_MS_PER_SECOND. */
const SETTLE_WINDOW_MS = 5_000;
const SETTLED_MS_PER_SECOND = 12;

/** Waits (60 s at most) until every process has had two settled windows in a row; the seconds it took. */
async function settled(pids: number[]): Promise<number> {
  const began = Date.now();
  let last = pids.map(cpuMsOf);
  let quiet = 0;
  while (Date.now() - began < 60_000 && quiet < 2) {
    await new Promise((r) => setTimeout(r, SETTLE_WINDOW_MS));
    const now = pids.map(cpuMsOf);
    const busiest = Math.max(...now.map((ms, i) => ((ms - last[i]) / SETTLE_WINDOW_MS) * 1000));
    last = now;
    quiet = busiest < SETTLED_MS_PER_SECOND ? quiet + 1 : 0;
  }
  return Math.round((Date.now() - began) / 1000);
}

/**
 * The CPU the generation worker and the GPU dispatcher spend per succeeded job, each in a process of its own (the API
 * and the simulator stay in this process, apart): from /proc, from when both are polling until every job has ended.
 * Twice: a first round on the workers as they start (`cold`), then — once they have settled — the same round again,
 * which is the figure: a worker in service compiled its hot code and collected what start-up left long before.
 */
export async function workerCpuRun(stack: Stack, { users, jobsEach, root }: { users: number; jobsEach: number; /** The workers' code: another checkout (a baseline). */ root?: string }) {
  const env = { ...stack.env, LOG_LEVEL: 'warn' };
  const [generation, dispatcher] = [await spawnService('generation', 'bench-cpu-generation', env, { root }), await spawnService('gpu', 'bench-cpu-dispatcher', env, { root })];
  const cpu = () => ({ generation: cpuMsOf(generation.pid), dispatcher: cpuMsOf(dispatcher.pid) });
  /** One round: `users` new users submit `jobsEach` jobs each; CPU per succeeded job from `from` until all ended. */
  const round = async (name: string, from: { generation: number; dispatcher: number }) => {
    const began = Date.now();
    const clients = await Promise.all(Array.from({ length: users }, async () => apiClient(stack.apiUrl, (await stack.createUser('pro')).apiKey)));
    const ids = (await Promise.all(clients.map((api, i) => submitMany(api, jobsEach, { prompt: `cpu ${name} ${i}` })))).flat();
    const ended = await eventually(
      async () => {
        const rows = await stack.database.sql<{ status: string }[]>`select status from generations where id = any(${ids}) and status_rank = 2`;
        return rows.length === ids.length ? rows : undefined;
      },
      { timeoutMs: 10 * 60_000, intervalMs: 500, what: `${ids.length} jobs to end` },
    );
    const succeeded = ended.filter((r) => r.status === 'succeeded').length;
    const now = cpu();
    const per = (ms: number) => Math.round((ms / Math.max(1, succeeded)) * 10) / 10;
    return {
      jobs: ids.length,
      succeeded,
      generationMsPerJob: per(now.generation - from.generation),
      dispatcherMsPerJob: per(now.dispatcher - from.dispatcher),
      msPerJob: per(now.generation - from.generation + now.dispatcher - from.dispatcher),
      seconds: Math.round((Date.now() - began) / 100) / 10,
    };
  };
  try {
    const cold = await round('cold', cpu());
    // A worker that has just worked goes on for some seconds (V8 compiles and collects after it): the count begins once
    // both have settled.
    const settleSeconds = await settled([generation.pid, dispatcher.pid]);
    // What they spend with nothing to do (pollers, timers, the SDK's core and the collectors), over IDLE_WINDOW_MS first:
    // part of every job's figure at this load, and the reason it falls as the load grows.
    const idleFrom = cpu();
    await new Promise((r) => setTimeout(r, IDLE_WINDOW_MS));
    const before = cpu();
    const idlePerSecond = (ms: number) => Math.round((ms / IDLE_WINDOW_MS) * 1000 * 10) / 10;
    const warm = await round('warm', before);
    return {
      ...warm,
      cold: { msPerJob: cold.msPerJob, generationMsPerJob: cold.generationMsPerJob, dispatcherMsPerJob: cold.dispatcherMsPerJob },
      settleSeconds,
      idleMsPerSecond: { generation: idlePerSecond(before.generation - idleFrom.generation), dispatcher: idlePerSecond(before.dispatcher - idleFrom.dispatcher) },
    };
  } finally {
    await Promise.all([generation.stop(20_000), dispatcher.stop(20_000)]);
  }
}
