import fs from 'node:fs';
import { temporal } from '@temporalio/proto';
import type { Client } from '@temporalio/client';
import type { Sql } from '../../src/db/client';
import type { LoadFigures } from './load';
import { commandLine, processIds, procStat } from '../../scripts/lib/procfs';

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

/** CPU time (user + system) a process has used so far, in ms, from /proc (Linux); NaN where unreadable. */
export function cpuMsOf(pid: number): number {
  const stat = procStat(pid);
  return stat ? ((stat.utimeTicks + stat.stimeTicks) * 1000) / CLOCK_TICKS_PER_SECOND : Number.NaN;
}

const CLOCK_TICKS_PER_SECOND = 100; // USER_HZ on Linux

const parentOf = (pid: number) => procStat(pid)?.ppid;

/** The benchmark's Postgres: its postmaster (the parent of this connection's backend) and every process it forked. */
export async function postgresPids(sql: Sql): Promise<number[]> {
  const [{ pid }] = await sql<{ pid: number }[]>`select pg_backend_pid() as pid`;
  const postmaster = parentOf(pid);
  return postmaster === undefined ? [] : [postmaster, ...processIds().filter((p) => parentOf(p) === postmaster)];
}

/** The Temporal dev server(s) of this machine; only the one listening on `address`'s port when given. */
export function temporalPids(address?: string): number[] {
  const port = address?.split(':').pop();
  return processIds().filter((pid) => {
    const command = `${(commandLine(pid) ?? '').replace(/\0/g, ' ')} `;
    return command.includes('server start-dev') && (port === undefined || command.includes(` --port ${port} `));
  });
}

/** CPU time every core of this machine has spent busy so far (not idle, not waiting for I/O), in ms, from /proc/stat. */
export function machineCpuMs(): number {
  const [, ...ticks] = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/);
  const [user, nice, system, , , irq, softirq, steal] = ticks.map(Number);
  return ((user + nice + system + irq + softirq + steal) * 1000) / CLOCK_TICKS_PER_SECOND;
}

export const cpuMsOfAll = (pids: number[]) => pids.reduce((sum, pid) => sum + (cpuMsOf(pid) || 0), 0);

export interface RequestCost {
  /** Postgres transactions (each autocommit statement is one) per successful request. */
  transactions: number;
  /** CPU per successful request, ms: of the API process (0 for a path without one), of all Postgres processes, of the
   * Temporal server, and of this (load-generating) process. */
  apiCpuMs: number;
  postgresCpuMs: number;
  temporalCpuMs: number;
  loadCpuMs: number;
}

/** What each successful request of `run` cost Postgres, Temporal, the API process `apiPid` and the load generator. */
export async function costPerRequest(sql: Sql, apiPid: number | undefined, run: () => Promise<LoadFigures>): Promise<RequestCost> {
  const [pgPids, temporal] = [await postgresPids(sql), temporalPids()];
  const xacts = await transactions(sql);
  const before = { api: apiPid ? cpuMsOf(apiPid) : 0, pg: cpuMsOfAll(pgPids), temporal: cpuMsOfAll(temporal), load: process.cpuUsage() };
  const figures = await run();
  const load = process.cpuUsage(before.load);
  const [api, pg, temporalMs] = [apiPid ? cpuMsOf(apiPid) : 0, cpuMsOfAll(await postgresPids(sql)), cpuMsOfAll(temporal)];
  const after = await transactions(sql);
  const ok = Math.max(1, figures.ok);
  return {
    transactions: (after - xacts) / ok,
    apiCpuMs: (api - before.api) / ok,
    postgresCpuMs: (pg - before.pg) / ok,
    temporalCpuMs: (temporalMs - before.temporal) / ok,
    loadCpuMs: (load.user + load.system) / 1000 / ok,
  };
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

export interface Quiet {
  /** How long the stack took to go quiet, ms. */
  waitedMs: number;
  /** CPU the stack used per second in the last window, ms (1000 is one core busy). */
  cpuMsPerS: number;
  /** False when it was still busier than asked at the deadline (the measurement then goes ahead anyway). */
  quiet: boolean;
}

/**
 * Waits until the stack is idle: Temporal, Postgres and this process (its workers) together use less than `maxCpuMsPerS`
 * of CPU per second over a whole `windowMs`. Work a previous step left behind (a Temporal server still writing the
 * visibility and transfer tasks of thousands of just-started workflows, say) would otherwise be measured as the cost
 * of the next step. Gives up (quiet: false) after `timeoutMs`.
 */
export async function waitForQuiet(sql: Sql, { maxCpuMsPerS = 100, windowMs = 3_000, timeoutMs = 10 * 60_000 } = {}): Promise<Quiet> {
  const began = Date.now();
  const temporal = temporalPids();
  for (;;) {
    // Postgres forks workers (autovacuum) as it goes: its processes are listed again for each window.
    const pgPids = await postgresPids(sql);
    const used = () => {
      const own = process.cpuUsage();
      return cpuMsOfAll(pgPids) + cpuMsOfAll(temporal) + (own.user + own.system) / 1000;
    };
    const [before, at] = [used(), Date.now()];
    await new Promise((r) => setTimeout(r, windowMs));
    const cpuMsPerS = ((used() - before) * 1000) / (Date.now() - at);
    const quiet = cpuMsPerS < maxCpuMsPerS;
    if (quiet || Date.now() - began > timeoutMs) return { waitedMs: Date.now() - began, cpuMsPerS, quiet };
  }
}
