import { temporal } from '@temporalio/proto';
import type { Client } from '@temporalio/client';
import type { Sql } from '../../src/db/client';
import type { LoadFigures } from './load';

/**
 * What one request or one job costs the shared stores, measured rather than guessed, for docs/scaling.md: Postgres
 * transactions per API request (pg_stat_database), and Temporal history events per generation.
 */
async function transactions(sql: Sql): Promise<number> {
  // Backends flush their counters to the shared statistics about once a second.
  await new Promise((r) => setTimeout(r, 1_500));
  const [row] = await sql<{ n: string }[]>`select xact_commit + xact_rollback as n from pg_stat_database where datname = current_database()`;
  return Number(row.n);
}

/** Postgres transactions (each autocommit statement is one) per successful request of `run`. */
export async function transactionsPerRequest(sql: Sql, run: () => Promise<LoadFigures>): Promise<number> {
  const before = await transactions(sql);
  const figures = await run();
  const after = await transactions(sql);
  return (after - before) / Math.max(1, figures.ok);
}

export interface HistoryCost {
  jobs: number;
  /** Mean per job. */
  events: number;
  workflowTasks: number;
  activities: number;
  signals: number;
  timers: number;
}

/** The mean shape of the given (finished) workflows' histories. */
export async function historyCost(client: Client, workflowIds: string[]): Promise<HistoryCost> {
  const { EventType } = temporal.api.enums.v1;
  const totals = { events: 0, workflowTasks: 0, activities: 0, signals: 0, timers: 0 };
  for (const id of workflowIds) {
    const history = await client.workflow.getHandle(id).fetchHistory();
    for (const event of history.events ?? []) {
      totals.events++;
      if (event.eventType === EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) totals.workflowTasks++;
      else if (event.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) totals.activities++;
      else if (event.eventType === EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED) totals.signals++;
      else if (event.eventType === EventType.EVENT_TYPE_TIMER_STARTED) totals.timers++;
    }
  }
  const n = Math.max(1, workflowIds.length);
  const mean = (x: number) => Math.round((x / n) * 10) / 10;
  return { jobs: workflowIds.length, events: mean(totals.events), workflowTasks: mean(totals.workflowTasks), activities: mean(totals.activities), signals: mean(totals.signals), timers: mean(totals.timers) };
}
