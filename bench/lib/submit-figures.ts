import { randomBytes } from 'node:crypto';
import { SA_STATUS, SA_TIER, SA_USER_ID } from '../../src/domain/search-attributes';
import type { GenerationInput } from '../../src/domain/generation';
import { gpuBacklog } from '../../test/gpu-backlog';
import { GENERATION_WORKFLOW_TYPE } from '../../src/contracts/generation';
import { smallJob } from '../../test/fairness-helpers';
import { eventually, type Stack } from '../../test/harness';
import { cpuMsOfAll, postgresPids, temporalPids, waitForQuiet } from './costs';
import { callLoad, combine, httpLoad, type LoadFigures } from './load';

/**
 * Submit throughput: `POST /v1/generations` (autocannon) beside the bare `client.workflow.start` it makes, at the same
 * concurrency against the same Temporal server; and the API's submit rate with a deep GPU backlog against none.
 */
export interface SubmitTarget {
  apiUrl: string;
  /** Submits rotate over these users, as real traffic comes from many (the raw starts over the same users' ids). */
  apiKeys: string[];
  userIds: string[];
}

const BODY = JSON.stringify(smallJob('a benchmark submission'));

/** Submits through the API, each request with its own Idempotency-Key (as the contract asks of clients). */
export function apiSubmits(target: SubmitTarget, { connections, durationS, amount }: { connections: number; durationS?: number; amount?: number }): Promise<LoadFigures> {
  const run = randomBytes(4).toString('hex');
  return httpLoad({
    url: `${target.apiUrl}/v1/generations`,
    connections,
    durationS,
    amount,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: BODY,
    vary: (n) => ({ headers: { authorization: `Bearer ${target.apiKeys[n % target.apiKeys.length]}`, 'idempotency-key': `bench-${run}-${n}` } }),
    expect: 202,
  });
}

/** The workflow start the API makes for a submit (same type, queue, policies, fairness, search attributes, input), alone. */
function startLikeTheApi(stack: Stack, userId: string, jobId: string) {
  const { config } = stack;
  const input: GenerationInput = {
    jobId,
    userId,
    tier: 'pro',
    request: { ...smallJob('a benchmark submission'), aspect_ratio: '16:9', seed: null, webhook_url: null, metadata: {} } as GenerationInput['request'],
    acceptedAt: new Date().toISOString(),
    settings: {
      gpuTaskQueue: config.worker.gpuTaskQueue,
      fairnessWeight: config.generation.tierWeights.pro,
      heartbeatTimeoutMs: config.generation.heartbeatTimeoutMs,
      maxAttempts: config.generation.maxAttempts,
      retryBackoffMs: config.generation.retryBackoffMs,
      maxQueueMs: config.generation.maxQueueMs,
      maxRunMs: config.generation.maxRunMs,
      expectedRunMs: config.generation.expectedRunMs,
    },
  };
  return stack.client.workflow.start(GENERATION_WORKFLOW_TYPE, {
    taskQueue: config.worker.generationTaskQueue,
    workflowId: jobId,
    args: [input],
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowIdReusePolicy: 'REJECT_DUPLICATE',
    priority: { fairnessKey: userId, fairnessWeight: config.generation.tierWeights.pro },
    typedSearchAttributes: [
      { key: SA_USER_ID, value: userId },
      { key: SA_TIER, value: 'pro' },
      { key: SA_STATUS, value: 'queued' },
    ],
  });
}

const newJobId = () => `gen_${randomBytes(16).toString('hex')}`;

/**
 * Raw `client.workflow.start` at a fixed concurrency: the baseline of the API's submit. The starts rotate over the same
 * users as the API's submits, so Temporal files them under as many fairness keys and search-attribute values.
 */
export function rawStarts(stack: Stack, userIds: string[], { connections, durationMs }: { connections: number; durationMs: number }): Promise<LoadFigures> {
  let n = 0;
  return callLoad(() => startLikeTheApi(stack, userIds[n++ % userIds.length], newJobId()), { concurrency: connections, durationMs });
}

/**
 * `count` jobs waiting for a GPU slot, made quickly: the API's workflow starts (64 at a time) and its admission record
 * (gpu_queue_entries, written with SQL), so Temporal and Postgres hold what `count` API submits would leave. The stack's
 * generation worker then runs each to its GPU activity, which waits in the backlog (no dispatcher runs).
 */
async function fillGpuBacklog(stack: Stack, userIds: string[], count: number): Promise<void> {
  const jobs = Array.from({ length: count }, (_, i) => ({ jobId: newJobId(), userId: userIds[i % userIds.length] }));
  let next = 0;
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      for (let i = next++; i < jobs.length; i = next++) await startLikeTheApi(stack, jobs[i].userId, jobs[i].jobId);
    }),
  );
  const { pool } = stack.config.dispatch;
  const weight = stack.config.generation.tierWeights.pro;
  for (let i = 0; i < jobs.length; i += 5_000) {
    const chunk = jobs.slice(i, i + 5_000);
    await stack.database.sql`
      insert into gpu_queue_entries (job_id, pool, user_id, tier, fairness_weight)
      select job_id, ${pool}, user_id, 'pro', ${weight} from unnest(${chunk.map((j) => j.jobId)}::text[], ${chunk.map((j) => j.userId)}::text[]) as t(job_id, user_id)`;
  }
}

export interface BacklogFigures extends IntakeFigures {
  empty: LoadFigures;
  loaded: LoadFigures;
  /** The bare workflow start with the backlog full (rawEmpty: empty): Temporal's share of the slowdown. */
  rawLoaded: LoadFigures;
  /** How long the stack kept working after the backlog was full (Temporal writing the fill's visibility and transfer
   * tasks), waited out before measuring, s. */
  settleSeconds: number;
}

export interface IntakeFigures {
  /** The bare workflow start with the gpu backlog empty: the intake's baseline. */
  rawEmpty: LoadFigures;
  /** The fill's jobs. */
  filled: number;
  /** Tasks in the gpu queue's backlog (Temporal's count) once the fill was in, with the measurements' own jobs. */
  backlogAtStart: number;
  /** How long starting the fill's workflows took, s. */
  startSeconds: number;
  /** From the fill's first start until every one of its jobs was in the gpu backlog, s. */
  fillSeconds: number;
  /** Jobs per second reaching the gpu backlog during the fill, over raw starts per second with it empty. */
  intakeRatio: number;
  /** CPU used during the fill, ms per job: this process (with the stack's in-process generation worker and the
   * starts' client side), the Temporal server, Postgres. */
  fillCpuMsPerJob: { benchmark: number; temporal: number; postgres: number };
}

/**
 * The intake on a stack whose generation worker runs but no GPU dispatcher: raw starts per second with the gpu backlog
 * empty (`runs` of them), then how fast `backlog` jobs of other users (`fill`), started as the API starts them, reach
 * the gpu backlog through the generation worker.
 */
export async function gpuIntake(
  stack: Stack,
  measure: SubmitTarget,
  fill: string[],
  { backlog, connections, runs, log }: { backlog: number; connections: number; runs: (run: (seconds: number) => Promise<LoadFigures>) => Promise<LoadFigures>; log: (line: string) => void },
): Promise<IntakeFigures> {
  const queue = stack.config.worker.gpuTaskQueue;
  const rawEmpty = await runs((s) => rawStarts(stack, measure.userIds, { connections, durationMs: s * 1000 }));
  // The raw starts (and the API's submits before them) are real jobs too, which the generation worker takes to the gpu
  // backlog: the fill counts from once they all are there, and only its own jobs.
  await waitForQuiet(stack.database.sql);
  const before = await gpuBacklog(stack.client, queue);
  log(`  raw starts, empty backlog: ${rawEmpty.rps.toFixed(1)}/s; ${before} jobs of the measurements waiting; filling the gpu backlog with ${backlog} jobs…`);
  const began = Date.now();
  const [pgPids, temporal] = [await postgresPids(stack.database.sql), temporalPids()];
  const cpuBefore = { own: process.cpuUsage(), temporal: cpuMsOfAll(temporal), postgres: cpuMsOfAll(pgPids) };
  await fillGpuBacklog(stack, fill, backlog);
  const startSeconds = (Date.now() - began) / 1000;
  log(`  ${backlog} workflows started in ${startSeconds.toFixed(0)} s; waiting for them to reach the gpu backlog…`);
  const backlogAtStart = await eventually(
    async () => {
      const n = await gpuBacklog(stack.client, queue);
      return n >= before + backlog ? n : undefined;
    },
    { timeoutMs: 15 * 60_000, intervalMs: 1_000, what: `${backlog} jobs waiting in the gpu backlog` },
  );
  const fillSeconds = (Date.now() - began) / 1000;
  const own = process.cpuUsage(cpuBefore.own);
  const perJob = (ms: number) => Math.round((ms / backlog) * 10) / 10;
  const fillCpuMsPerJob = {
    benchmark: perJob((own.user + own.system) / 1000),
    temporal: perJob(cpuMsOfAll(temporal) - cpuBefore.temporal),
    // Postgres forks as it goes (autovacuum): its processes of now, against those it had before.
    postgres: perJob(cpuMsOfAll(await postgresPids(stack.database.sql)) - cpuBefore.postgres),
  };
  const intakeRatio = Math.round((backlog / fillSeconds / rawEmpty.rps) * 1000) / 1000;
  log(`  ${backlogAtStart} tasks in the gpu backlog after ${fillSeconds.toFixed(0)} s: ${(backlog / fillSeconds).toFixed(1)} jobs/s, intake ratio ${intakeRatio}`);
  log(`  CPU per job during the fill: benchmark process (generation worker, starts) ${fillCpuMsPerJob.benchmark} ms, Temporal ${fillCpuMsPerJob.temporal} ms, Postgres ${fillCpuMsPerJob.postgres} ms`);
  return { rawEmpty, filled: backlog, backlogAtStart, startSeconds, fillSeconds, intakeRatio, fillCpuMsPerJob };
}

/** A measurement's warm-up (2 s), then `rounds` turns of `seconds`, combined. */
export const turns =
  ({ rounds, seconds }: { rounds: number; seconds: number }) =>
  async (run: (seconds: number) => Promise<LoadFigures>): Promise<LoadFigures> => {
    await run(2); // warm-up
    const each: LoadFigures[] = [];
    for (let i = 0; i < rounds; i++) each.push(await run(seconds));
    return combine(each);
  };

/**
 * On a stack whose generation worker runs but no GPU dispatcher: submit rate with the gpu backlog empty; then `backlog`
 * more jobs of other users (`fill`) are left waiting for a slot (gpuIntake); then the submit rate again.
 */
export async function submitsUnderBacklog(
  stack: Stack,
  measure: SubmitTarget,
  fill: string[],
  { backlog, connections, rounds, seconds, log }: { backlog: number; connections: number; rounds: number; seconds: number; log: (line: string) => void },
): Promise<BacklogFigures> {
  const runs = turns({ rounds, seconds });
  const viaApi = (s: number) => apiSubmits(measure, { connections, durationS: s });
  const raw = (s: number) => rawStarts(stack, measure.userIds, { connections, durationMs: s * 1000 });
  await waitForQuiet(stack.database.sql);
  const empty = await runs(viaApi);
  log(`  empty backlog: ${empty.rps.toFixed(1)} submits/s`);
  const intake = await gpuIntake(stack, measure, fill, { backlog, connections, runs, log });
  log(`  waiting for the stack to finish the fill's work…`);
  // Temporal is still writing what the fill started (visibility, transfer tasks) for a while: that is the fill's cost,
  // not the steady cost of a deep backlog, so the second measurement starts once the stack is idle again.
  const settled = await waitForQuiet(stack.database.sql);
  log(`  ${settled.quiet ? 'idle' : 'still busy'} after ${(settled.waitedMs / 1000).toFixed(0)} s more (${settled.cpuMsPerS.toFixed(0)} ms of CPU per second); measuring again…`);
  const loaded = await runs(viaApi);
  const rawLoaded = await runs(raw);
  return { ...intake, empty, loaded, rawLoaded, settleSeconds: settled.waitedMs / 1000 };
}
