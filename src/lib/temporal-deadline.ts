import type { Client } from '@temporalio/client';

/** How long an API request waits on Temporal before answering 503: clients and the backend retry sooner than the SDK would. */
export const TEMPORAL_CALL_DEADLINE_MS = 5_000;

export function withTemporalDeadline<T>(client: Client, call: () => Promise<T>): Promise<T> {
  return client.withDeadline(Date.now() + TEMPORAL_CALL_DEADLINE_MS, call);
}
