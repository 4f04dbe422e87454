import { randomBytes } from 'node:crypto';
import { SA_STATUS, SA_TIER, SA_USER_ID } from '../../src/domain/search-attributes';
import type { GenerationInput } from '../../src/domain/generation';
import { gpuBacklog } from '../../src/dispatch/gpu-backlog';
import { GENERATION_WORKFLOW_TYPE } from '../../src/workflows/messages';
import { smallJob } from '../../test/fairness-helpers';
import { eventually, type Stack } from '../../test/harness';
import { callLoad, httpLoad, type LoadFigures } from './load';

/**
 * Submit throughput: `POST /v1/generations` (autocannon) beside the bare `client.workflow.start` it makes, at the same
 * concurrency against the same Temporal server; and the API's submit rate with a deep GPU backlog against none.
 */
export interface SubmitTarget {
  apiUrl: string;
  /** Submits rotate over these users, as real traffic comes from many. */
  apiKeys: string[];
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

/** The same workflow start the API makes (same type, queue, policies, search attributes, input), with nothing around it. */
export function rawStarts(stack: Stack, userId: string, { connections, durationMs }: { connections: number; durationMs: number }): Promise<LoadFigures> {
  const { config } = stack;
  const request = { ...smallJob('a benchmark submission'), aspect_ratio: '16:9', seed: null, webhook_url: null, metadata: {} } as GenerationInput['request'];
  return callLoad(
    () => {
      const jobId = `gen_${randomBytes(16).toString('hex')}`;
      const input: GenerationInput = {
        jobId,
        userId,
        tier: 'pro',
        request,
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
        typedSearchAttributes: [
          { key: SA_USER_ID, value: userId },
          { key: SA_TIER, value: 'pro' },
          { key: SA_STATUS, value: 'queued' },
        ],
      });
    },
    { concurrency: connections, durationMs },
  );
}

export interface BacklogFigures {
  empty: LoadFigures;
  loaded: LoadFigures;
  /** Tasks in the gpu queue's backlog (Temporal's count) when the loaded run began. */
  backlogAtStart: number;
  fillSeconds: number;
}

/**
 * On a stack whose generation worker runs but no GPU dispatcher: submit rate with the gpu backlog empty; then `backlog`
 * more jobs are submitted (by other users) and left waiting for a slot; then the submit rate again.
 */
export async function submitsUnderBacklog(
  stack: Stack,
  measure: SubmitTarget,
  fill: SubmitTarget,
  { backlog, connections, durationS, log }: { backlog: number; connections: number; durationS: number; log: (line: string) => void },
): Promise<BacklogFigures> {
  const queue = stack.config.worker.gpuTaskQueue;
  await apiSubmits(measure, { connections, durationS: 2 }); // warm-up
  const empty = await apiSubmits(measure, { connections, durationS });
  log(`  empty backlog: ${empty.rps.toFixed(1)} submits/s; filling the gpu backlog with ${backlog} jobs…`);
  const began = Date.now();
  const filled = await apiSubmits(fill, { connections: 32, amount: backlog });
  if (filled.ok < backlog) log(`  warning: ${backlog - filled.ok} of the fill submits were refused (${JSON.stringify(filled.statuses)})`);
  const backlogAtStart = await eventually(
    async () => {
      const n = await gpuBacklog(stack.client, queue);
      return n >= filled.ok ? n : undefined;
    },
    { timeoutMs: 15 * 60_000, intervalMs: 1_000, what: `${filled.ok} jobs waiting in the gpu backlog` },
  );
  const fillSeconds = (Date.now() - began) / 1000;
  log(`  ${backlogAtStart} tasks in the gpu backlog after ${fillSeconds.toFixed(0)} s; measuring again…`);
  const loaded = await apiSubmits(measure, { connections, durationS });
  return { empty, loaded, backlogAtStart, fillSeconds };
}
