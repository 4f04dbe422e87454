import type { Client } from '@temporalio/client';

/** How long an API request waits on Temporal before answering 503: clients and the backend retry sooner than the SDK would. */
export const TEMPORAL_CALL_DEADLINE_MS = 5_000;

/** Calls under way, per client: a connection closed under one makes the SDK's retry throw from a timer, uncaught. */
const inFlight = new WeakMap<Client, Set<Promise<unknown>>>();

export function withTemporalDeadline<T>(client: Client, call: () => Promise<T>): Promise<T> {
  const calls = inFlight.get(client) ?? new Set<Promise<unknown>>();
  inFlight.set(client, calls);
  const pending = client.withDeadline(Date.now() + TEMPORAL_CALL_DEADLINE_MS, call);
  const settled = pending.then(
    () => undefined,
    () => undefined,
  );
  calls.add(settled);
  void settled.then(() => calls.delete(settled));
  return pending;
}

/** Resolves once every call made through withTemporalDeadline on `client` has ended (each within its deadline). */
export async function temporalCallsSettled(client: Client): Promise<void> {
  await Promise.all([...(inFlight.get(client) ?? [])]);
}
