import { loadConfig } from '../../src/config';
import { apiClient, eventually, type Stack } from '../../test/harness';
import { historyCost, waitForQuiet, type HistoryCost } from './costs';

/**
 * What a job costs the Temporal engine, in its own units: the server's `action` counter (what Temporal Cloud bills,
 * and what a self-hosted history service does: heartbeats, signals, timers, activities, search-attribute upserts,
 * starts), read from the dev server's metrics endpoint before and after a set of jobs of one length, per succeeded job.
 * The jobs run with the shipped settings for polling, heartbeats and retries (the tests' are faster), so the figure is
 * what a deployment pays.
 */
export interface EngineCost {
  generationSeconds: number;
  jobs: number;
  succeeded: number;
  /** Jobs by how they ended (status and error code). */
  endings: Record<string, number>;
  /** Billable actions per succeeded job, all types. */
  actionsPerJob: number;
  /** By the server's action_type label, per succeeded job, largest first. */
  byType: Record<string, number>;
  history: HistoryCost;
  wallSeconds: number;
}

/** The shipped defaults of the settings the tests' stacks shorten (test/harness.ts). */
export function shippedTimings(): Record<string, string> {
  const config = loadConfig({ NODE_ENV: 'test' });
  return {
    POLL_INTERVAL_MS: String(config.generation.pollIntervalMs),
    HEARTBEAT_TIMEOUT_MS: String(config.generation.heartbeatTimeoutMs),
    HEARTBEAT_THROTTLE_MS: String(config.worker.heartbeatThrottleMs),
    RETRY_BACKOFF_MS: String(config.generation.retryBackoffMs),
  };
}

/** The server's `action` counter in the default namespace, by action type. */
export async function readActions(metricsUrl: string): Promise<Map<string, number>> {
  const text = await (await fetch(metricsUrl)).text();
  const actions = new Map<string, number>();
  for (const [, labels, value] of text.matchAll(/^action\{([^}]*)\} (\S+)$/gm)) {
    if (!/namespace="default"/.test(labels)) continue;
    const type = /action_type="([^"]+)"/.exec(labels)?.[1] ?? 'unknown';
    actions.set(type, (actions.get(type) ?? 0) + Number(value));
  }
  return actions;
}

const total = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);

/** Polls the counter until it has not moved for `quietMs` (what the last jobs' ending steps do is counted), at most `maxMs`. */
async function actionsOnceStill(metricsUrl: string, { quietMs = 3_000, maxMs = 30_000 } = {}): Promise<Map<string, number>> {
  const began = Date.now();
  let last = await readActions(metricsUrl);
  let stillSince = Date.now();
  while (Date.now() - began < maxMs) {
    await new Promise((r) => setTimeout(r, 500));
    const now = await readActions(metricsUrl);
    if (total(now) !== total(last)) stillSince = Date.now();
    else if (Date.now() - stillSince >= quietMs) return now;
    last = now;
  }
  return last;
}

/**
 * `jobs` jobs of `generationSeconds` each on `stack` (which must run with shippedTimings() and enough GPU slots for all
 * of them at once), callbacks on: the engine's actions and history events per succeeded job.
 */
export async function engineCost(stack: Stack, metricsUrl: string, { jobs, generationSeconds }: { jobs: number; generationSeconds: number }): Promise<EngineCost> {
  const ms = generationSeconds * 1000;
  stack.setKnobs({ p50Ms: ms, p99Ms: Math.round(ms * 1.02), capacity: jobs * 2 });
  const users = 4;
  const clients = await Promise.all(Array.from({ length: users }, async () => apiClient(stack.apiUrl, (await stack.createUser('pro')).apiKey)));
  await waitForQuiet(stack.database.sql);
  const before = await actionsOnceStill(metricsUrl);
  const began = Date.now();
  // A request of the default size, whose run deadline (scaled to it) is the shipped one: 3 min fits.
  const ids = await Promise.all(
    Array.from({ length: jobs }, async (_, i) => {
      const res = await clients[i % users].submit({ prompt: `engine cost #${i}` });
      if (res.status !== 202) throw new Error(`submit ${i}: ${res.status} ${res.text}`);
      return res.body.id as string;
    }),
  );
  await eventually(
    async () => {
      const [row] = await stack.database.sql<{ n: number }[]>`select count(*)::int as n from generations where id = any(${ids}) and status_rank = 2`;
      return row.n === ids.length ? true : undefined;
    },
    { timeoutMs: ms * 3 + 120_000, intervalMs: 1_000, what: `${ids.length} jobs of ${generationSeconds} s to end` },
  );
  const wallSeconds = (Date.now() - began) / 1000;
  const after = await actionsOnceStill(metricsUrl);
  const endings = await stack.database.sql<{ ending: string; n: number }[]>`
    select status || coalesce(' ' || (error->>'code'), '') as ending, count(*)::int as n from generations where id = any(${ids}) group by 1`;
  const succeeded = endings.find((e) => e.ending === 'succeeded')?.n ?? 0;
  const per = (n: number) => Math.round((n / Math.max(1, succeeded)) * 10) / 10;
  const byType = [...after.entries()]
    .map(([type, n]) => [type, per(n - (before.get(type) ?? 0))] as const)
    .filter(([, n]) => n > 0)
    .sort((a, b) => b[1] - a[1]);
  return {
    generationSeconds,
    jobs: ids.length,
    succeeded,
    endings: Object.fromEntries(endings.map((e) => [e.ending, e.n])),
    actionsPerJob: per(total(after) - total(before)),
    byType: Object.fromEntries(byType),
    history: await historyCost(stack.client, ids),
    wallSeconds: Math.round(wallSeconds),
  };
}
