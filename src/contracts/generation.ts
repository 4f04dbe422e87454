import { defineQuery, defineSignal } from '@temporalio/workflow';
import type { GenerationState } from '../domain/generation';

/** The generation workflow's name, signals and query, shared by the workflow, the API, the activities and the tests. */

export type BackendEventType = 'accepted' | 'started' | 'succeeded' | 'failed' | 'canceled';

/** A backend job event for one generation attempt: from the backend's callback (via the API) or the GPU activity. */
export interface BackendEvent {
  /** The workflow run's tag (see runTag): events of an earlier run, reapplied after a reset, are ignored. */
  run: string;
  attempt: number;
  type: BackendEventType;
  backendJobId: string;
  videoUrl?: string | null;
  error?: { code: string; message: string } | null;
}

export const backendEventSignal = defineSignal<[BackendEvent]>('backendEvent');

/**
 * A GPU dispatcher's ask that attempt N, still waiting in the queue of backend `from`, leave it: that backend is paused or
 * down while another that can render the job is up (src/dispatch/queued-reroutes.ts). The workflow takes the task out of
 * the queue and routes a new attempt; an ask about another run, attempt or backend, or an attempt already accepted, is
 * ignored.
 */
export interface RerouteAsk {
  run: string;
  attempt: number;
  from: string;
}
export const rerouteQueuedSignal = defineSignal<[RerouteAsk]>('rerouteQueued');
export const cancelGenerationSignal = defineSignal<[{ reason?: string }]>('cancelGeneration');
export const generationStateQuery = defineQuery<GenerationState>('generationState');

export const GENERATION_WORKFLOW_TYPE = 'generationWorkflow';

/** The GPU activity's failure type when an attempt ran past its running deadline. */
export const GENERATION_TIMEOUT_FAILURE = 'GenerationTimeout';

/**
 * The GPU activity's failure type when the run it opens (a first run opens at its GPU slot:
 * GenerationSettings.opensAtSlot) finds no reservation and cannot make one: the job fails with insufficient_credits, as
 * a run's opening does.
 */
export const INSUFFICIENT_CREDITS_FAILURE = 'InsufficientCredits';

/**
 * The GPU activity's failure type when a routed attempt leaves its backend because it is down (health check or circuit)
 * while another that can render the job is up: the workflow routes a new attempt, which does not count as a retry.
 */
export const BACKEND_DOWN_FAILURE = 'BackendDown';
