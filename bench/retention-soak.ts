import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { PruneReport } from '../src/activities/retention';
import type { Sql } from '../src/db/client';
import { percentile } from '../test/scheduling-metrics';
import { retentionScheduleId } from '../src/retention/schedule';
import { UNLIMITED_ADMISSION } from '../test/fairness-helpers';
import { eventually, type Stack } from '../test/harness';
import { freePort } from '../scripts/lib/ports';
import { waitForQuiet } from './lib/costs';
import { startDbTimeline, type Timed } from './lib/db-timeline';
import { requestOnce } from './lib/paced-http';
import { loadHistory } from './lib/history-rows';
import { runMain, startTestInfrastructure, withStack } from './lib/infra';
import { formatMarkdown, formatTable, machineLine, writeOut, type Row } from './lib/report';
import { spawnService } from './lib/services';

/**
 * `npm run soak:retention [-- --days 60 --per-day 50000]`: a year in production compressed into its retention. Starts its
 * own Temporal dev server and Postgres (as the tests do), loads `days` days of history (`per-day` finished jobs a day,
 * with everything they leave in every table: bench/lib/history-rows.ts), then puts a steady load on the API — list
 * pages and submits at fixed rates — first without pruning, then while the retention schedule's workflow prunes the
 * history with the default settings. Writes bench/out/retention.json and .md: rows left per table against its window
 * (`tables`), whether every table holds only its window (`within_window`), and `p99_ratio_during_prune`, the worse of
 * list and submit p99 while pruning against without (goal ≤ 1.5).
 */
const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
};
const PLAN = {
  days: arg('days', 60),
  perDay: arg('per-day', 50_000),
  historyUsers: 2_000,
  listUsers: 20,
  submitUsers: 20,
  listRate: 50,
  submitRate: 10,
  baselineSeconds: arg('baseline', 90),
};

const say = (line: string) => process.stdout.write(`${line}\n`);
const step = (line: string) => say(`\n▶ ${line}`);
const round = (n: number, digits = 3) => Math.round(n * 10 ** digits) / 10 ** digits;

interface Latencies {
  requests: number;
  failed: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
}

interface Stream {
  name: string;
  rate: number;
  send: (n: number) => Promise<boolean>;
}

/**
 * Requests at fixed rates (open loop: each is sent on time whether or not earlier ones have answered, so a slow phase
 * shows in the latencies rather than in a lower rate) until `until` settles; every latency is kept, with when it was sent.
 */
async function steadyLoad(streams: Stream[], until: Promise<unknown>): Promise<{ latencies: Record<string, Latencies>; timed: Record<string, Timed[]> }> {
  let stopped = false;
  const loadBegan = performance.now();
  void until.finally(() => (stopped = true)).catch(() => undefined);
  const results = await Promise.all(
    streams.map(async ({ name, rate, send }) => {
      const timed: Timed[] = [];
      let failed = 0;
      const inFlight = new Set<Promise<void>>();
      for (let n = 0; !stopped; n++) {
        const due = loadBegan + (n * 1000) / rate;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        if (stopped) break;
        const at = performance.now();
        const request = send(n).then(
          (ok) => (ok ? timed.push({ at: at - loadBegan, ms: performance.now() - at }) : failed++),
          () => failed++,
        );
        const tracked: Promise<void> = request.then(() => void inFlight.delete(tracked));
        inFlight.add(tracked);
      }
      await Promise.all(inFlight);
      const latencies = timed.map((t) => t.ms);
      const summary = { requests: latencies.length + failed, failed, p50_ms: round(percentile(latencies, 50), 1), p99_ms: round(percentile(latencies, 99), 1), max_ms: round(Math.max(0, ...latencies), 1) };
      return [name, summary, timed] as const;
    }),
  );
  return { latencies: Object.fromEntries(results.map(([name, summary]) => [name, summary])), timed: Object.fromEntries(results.map(([name, , timed]) => [name, timed])) };
}

/** A steady load with the database's and the machine's timeline beside it (bench/lib/db-timeline.ts). */
async function measuredLoad(sql: Sql, streams: Stream[], until: Promise<unknown>, processes: Record<string, number>) {
  const timeline = startDbTimeline(sql, processes);
  const { latencies, timed } = await steadyLoad(streams, until);
  return { latencies, windows: await timeline.stop(timed) };
}

const seconds = (s: number) => new Promise<void>((r) => setTimeout(r, s * 1000));

/** The tables, what retention keeps of each, and the rows that ought to be gone once a run that began at `since` ended. */
const TABLES: Array<{ table: string; window: string; outside: (sql: Sql, since: string) => Promise<number> }> = [
  { table: 'generations', window: 'finished: 30 days after completion; unfinished: kept', outside: (sql, since) => first(sql`select count(*)::int as n from generations where status_rank = 2 and completed_at < ${since}::timestamptz - interval '30 days'`) },
  {
    table: 'generation_events',
    window: '30 days (not those of an unfinished job)',
    outside: (sql, since) =>
      first(sql`select count(*)::int as n from generation_events e where created_at < ${since}::timestamptz - interval '30 days'
                     and not exists (select 1 from generations g where g.id = e.job_id and g.status_rank < 2)`),
  },
  { table: 'idempotency_keys', window: "as long as its job's row", outside: (sql) => first(sql`select count(*)::int as n from idempotency_keys k where not exists (select 1 from generations g where g.id = k.job_id)`) },
  {
    table: 'gpu_queue_entries',
    window: 'the backlog, running jobs, and completions of the ETA window (10 min)',
    outside: (sql, since) =>
      first(sql`select count(*)::int as n from gpu_queue_entries e where not exists (select 1 from generations g where g.id = e.job_id
                     and (g.status_rank < 2 or g.completed_at >= ${since}::timestamptz - interval '10 minutes'))`),
  },
  { table: 'notifications', window: '30 days', outside: (sql, since) => first(sql`select count(*)::int as n from notifications where created_at < ${since}::timestamptz - interval '30 days'`) },
  {
    table: 'webhook_deliveries',
    window: 'finished: 30 days; pending: kept',
    outside: (sql, since) => first(sql`select count(*)::int as n from webhook_deliveries where status <> 'pending' and updated_at < ${since}::timestamptz - interval '30 days'`),
  },
  {
    table: 'webhook_delivery_attempts',
    window: "as long as its delivery",
    outside: (sql, since) =>
      first(sql`select count(*)::int as n from webhook_delivery_attempts a join webhook_deliveries d on d.id = a.delivery_id
                     where d.status <> 'pending' and d.updated_at < ${since}::timestamptz - interval '30 days'`),
  },
  {
    table: 'credit_ledger',
    window: 'settled job entries: 400 days; grants and open reservations: kept',
    outside: (sql, since) => first(sql`select count(*)::int as n from credit_ledger where kind in ('capture', 'release') and created_at < ${since}::timestamptz - interval '400 days'`),
  },
  { table: 'rate_limit_buckets', window: 'until refilled (1 min at least)', outside: (sql, since) => first(sql`select count(*)::int as n from rate_limit_buckets where refilled_at < ${since}::timestamptz - interval '1 minute'`) },
  {
    table: 'user_job_counts',
    window: 'while the user has jobs active or made since yesterday',
    outside: (sql, since) => first(sql`select count(*)::int as n from user_job_counts where active = 0 and queued = 0 and day < (${since}::timestamptz at time zone 'UTC')::date - 1`),
  },
  { table: 'gpu_slot_leases', window: 'until expired for a lease TTL', outside: (sql, since) => first(sql`select count(*)::int as n from gpu_slot_leases where expires_at < ${since}::timestamptz - interval '15 seconds'`) },
  { table: 'api_keys', window: 'revoked: 30 days', outside: (sql, since) => first(sql`select count(*)::int as n from api_keys where revoked_at < ${since}::timestamptz - interval '30 days'`) },
  {
    table: 'webhook_endpoints',
    window: 'deleted: 30 days, once no delivery refers to it',
    outside: (sql, since) =>
      first(sql`select count(*)::int as n from webhook_endpoints p where deleted_at < ${since}::timestamptz - interval '30 days'
                     and not exists (select 1 from webhook_deliveries d where d.endpoint_id = p.id)`),
  },
];

async function first(query: Promise<readonly unknown[]>): Promise<number> {
  return ((await query)[0] as { n: number }).n;
}

async function rowCount(sql: Sql, table: string): Promise<number> {
  const [{ n }] = await sql<{ n: number }[]>`select count(*)::int as n from ${sql(table)}`;
  return n;
}

/** Triggers the retention schedule; the workflow run it started. */
async function triggerRetention(stack: Stack) {
  const schedule = stack.client.schedule.getHandle(retentionScheduleId(stack.config));
  const before = (await schedule.describe()).info.recentActions.length;
  await schedule.trigger();
  const action = await eventually(async () => (await schedule.describe()).info.recentActions[before], { what: 'the retention workflow to start' });
  return stack.client.workflow.getHandle(action.action.workflow.workflowId, action.action.workflow.firstExecutionRunId);
}

async function main(): Promise<number> {
  const began = Date.now();
  say(`${machineLine()}\n${PLAN.days} days × ${PLAN.perDay} jobs; list ${PLAN.listRate}/s and submit ${PLAN.submitRate}/s while measuring.`);
  const infrastructure = await startTestInfrastructure();
  try {
    // Retention with its defaults; the schedule is triggered by hand (it would first fire a week from now), and the
    // reconciler stays out of the way.
    const env = { ...UNLIMITED_ADMISSION, WORKER_ROLE: 'generation', RECONCILE_INTERVAL_MS: String(3_600_000), RETENTION_INTERVAL_MS: String(7 * 86_400_000) };
    // The generation worker, which runs the pruning, is a process of its own as deployed: in this one, its batches would
    // share an event loop with the load generator and delay the very latencies being measured.
    return await withStack({ env, inProcessWorkers: false }, async (stack) => {
      const sql = stack.database.sql;
      // A server sized for a bulk load: fewer checkpoints while 30 million rows go in.
      await sql`alter system set max_wal_size = '8GB'`;
      await sql`select pg_reload_conf()`;

      // The API as a child process, on a task queue no worker polls: a submit is admission and the workflow's start. It and
      // the worker start before the history goes in, so both have long settled (a process just started collects and
      // compiles for some seconds after) when the measuring begins.
      const port = await freePort();
      const api = await spawnService('api', 'soak-retention-api', {
        ...stack.env,
        PORT: String(port),
        ADMIN_API_KEY: stack.adminApiKey,
        LOG_LEVEL: 'warn',
        GENERATION_TASK_QUEUE: `soak-idle-${randomBytes(3).toString('hex')}`,
      });
      // It creates the retention schedule as it starts, which the measurement then triggers.
      const worker = await spawnService('generation', 'soak-retention-worker', { ...stack.env, LOG_LEVEL: 'warn' }).catch(async (err: unknown) => {
        await api.stop();
        throw err;
      });
      try {
        step(`history: ${PLAN.days} days of ${PLAN.perDay} jobs for ${PLAN.historyUsers} users (generate_series)`);
        const measured = await Promise.all(Array.from({ length: PLAN.listUsers + PLAN.submitUsers }, () => stack.createUser('pro')));
        const historyUsers = [...measured.map((u) => u.userId), ...Array.from({ length: PLAN.historyUsers - measured.length }, (_, i) => `usr_soak_${i}`)];
        const load = await loadHistory(sql, { days: PLAN.days, perDay: PLAN.perDay, userIds: historyUsers, pool: stack.config.dispatch.pool }, say);
        say(`  ${Object.values(load.rows).reduce((a, b) => a + b, 0).toLocaleString('en')} rows in ${load.seconds.toFixed(0)} s`);
        const vacuumBegan = Date.now();
        for (const table of Object.keys(load.rows)) await sql.unsafe(`vacuum (analyze) ${table}`);
        await sql`checkpoint`;
        const vacuumSeconds = (Date.now() - vacuumBegan) / 1000;
        say(`  vacuumed and checkpointed in ${vacuumSeconds.toFixed(0)} s`);

        // node:http on keep-alive connections, as the abuse benchmark's clients: fetch cost the load generator as much CPU
        // as the API spent serving it, and its own pauses land in the latencies it measures.
        const base = new URL(`http://127.0.0.1:${port}`);
        const agent = new http.Agent({ keepAlive: true });
        const watched = { api: api.pid, worker: worker.pid, soak: process.pid };
        const listers = measured.slice(0, PLAN.listUsers);
        const submitters = measured.slice(PLAN.listUsers);
        const run = randomBytes(3).toString('hex');
        const streams: Stream[] = [
          {
            name: 'list',
            rate: PLAN.listRate,
            send: async (n) => {
              const { status } = await requestOnce(agent, base, { path: '/v1/generations?limit=20', headers: { authorization: `Bearer ${listers[n % listers.length].apiKey}` } });
              return status === 200;
            },
          },
          {
            name: 'submit',
            rate: PLAN.submitRate,
            send: async (n) => {
              const { status } = await requestOnce(agent, base, {
                method: 'POST',
                path: '/v1/generations',
                headers: { authorization: `Bearer ${submitters[n % submitters.length].apiKey}`, 'idempotency-key': `soak-${run}-${n}-${Date.now()}` },
                body: JSON.stringify({ prompt: `a steady submit number ${n}` }),
              });
              return status === 202;
            },
          },
        ];

        step('steady load without pruning');
        await waitForQuiet(sql, { timeoutMs: 60_000 });
        await steadyLoad(streams, seconds(10)); // warm-up
        const { latencies: without, windows: baselineWindows } = await measuredLoad(sql, streams, seconds(PLAN.baselineSeconds), watched);
        say(`  list p99 ${without.list.p99_ms} ms (${without.list.requests} requests), submit p99 ${without.submit.p99_ms} ms (${without.submit.requests})`);

        step('the same load while the retention schedule prunes (the RETENTION_* settings at their defaults)');
        const [{ since }] = await sql<{ since: string }[]>`select now()::text as since`;
        const pruneBegan = Date.now();
        const handle = await triggerRetention(stack);
        const pruning = handle.result() as Promise<PruneReport>;
        const { latencies: during, windows } = await measuredLoad(sql, streams, pruning, watched);
        const report = await pruning;
        const pruneSeconds = (Date.now() - pruneBegan) / 1000;
        say(`  pruned in ${pruneSeconds.toFixed(0)} s: ${Object.entries(report.deleted).map(([t, n]) => `${t} ${n.toLocaleString('en')}`).join(', ')}`);
        say(`  time per step: ${Object.entries(report.batches).map(([t, b]) => `${t} ${(b.ms / 1000).toFixed(1)} s in ${b.count} batches`).join(', ')}`);
        say(`  list p99 ${during.list.p99_ms} ms (${during.list.requests} requests), submit p99 ${during.submit.p99_ms} ms (${during.submit.requests})`);

        step('rows left per table');
        const tables: Record<string, { window: string; rows_loaded: number; deleted: number; rows_left: number; outside_window: number }> = {};
        for (const { table, window, outside } of TABLES) {
          tables[table] = { window, rows_loaded: load.rows[table] ?? 0, deleted: report.deleted[table] ?? 0, rows_left: await rowCount(sql, table), outside_window: await outside(sql, since) };
          say(`  ${table}: ${tables[table].rows_left.toLocaleString('en')} left, ${tables[table].outside_window} outside its window`);
        }
        const [{ backlog }] = await sql<{ backlog: number }[]>`select count(*)::int as backlog from generations g join gpu_queue_entries e on e.job_id = g.id where g.status_rank = 0`;
        const [accounts] = await sql<{ unbalanced: number }[]>`
          select count(*)::int as unbalanced from credit_accounts a
          where a.available + a.reserved + a.used <> (select coalesce(sum(amount), 0) from credit_ledger l where l.user_id = a.user_id and l.kind = 'grant')`;

        const withinWindow = Object.values(tables).every((t) => t.outside_window === 0);
        const listRatio = during.list.p99_ms / without.list.p99_ms;
        const submitRatio = during.submit.p99_ms / without.submit.p99_ms;
        const ratio = round(Math.max(listRatio, submitRatio));
        const figures = {
          days: PLAN.days,
          jobs: PLAN.days * PLAN.perDay,
          tables,
          within_window: withinWindow,
          p99_ratio_during_prune: ratio,
          details: {
            list_rate_per_s: PLAN.listRate,
            submit_rate_per_s: PLAN.submitRate,
            without_pruning: without,
            during_pruning: during,
            list_p99_ratio: round(listRatio),
            submit_p99_ratio: round(submitRatio),
            prune: {
              seconds: round(pruneSeconds, 1),
              deleted: report.deleted,
              batches: report.batches,
              batch_size: stack.config.retention.batchSize,
              work_share: stack.config.retention.workShare,
              batch_pause_ms: stack.config.retention.batchPauseMs,
            },
            // Each 10 s of both phases: p99s beside the machine's and each process's CPU, checkpoints, WAL, vacuums, waits.
            timeline_without_pruning: baselineWindows,
            timeline_during_pruning: windows,
            backlog_kept: backlog,
            unbalanced_accounts: accounts.unbalanced,
            load_seconds: round(load.seconds, 1),
            vacuum_seconds: round(vacuumSeconds, 1),
            soak_seconds: round((Date.now() - began) / 1000, 1),
          },
        };
        const rows: Row[] = [
          { section: 'history', figure: `${PLAN.days} days × ${PLAN.perDay.toLocaleString('en')} jobs, all tables`, value: `${Object.values(load.rows).reduce((a, b) => a + b, 0).toLocaleString('en')} rows in ${load.seconds.toFixed(0)} s` },
          ...Object.entries(tables).map(([table, t]) => ({
            section: 'tables',
            figure: `${table} (${t.window})`,
            value: `${t.rows_left.toLocaleString('en')} left of ${(t.rows_loaded || t.rows_left + t.deleted).toLocaleString('en')}; ${t.outside_window} outside`,
          })),
          { section: 'retention', figure: 'every table holds only its window', value: String(withinWindow), goal: 'true', met: withinWindow },
          { section: 'retention', figure: 'pruning run', value: `${pruneSeconds.toFixed(0)} s, ${Object.values(report.deleted).reduce((a, b) => a + b, 0).toLocaleString('en')} rows` },
          { section: 'latency', figure: `list p99 at ${PLAN.listRate}/s, without / during pruning`, value: `${without.list.p99_ms} / ${during.list.p99_ms} ms (×${round(listRatio, 2)})` },
          { section: 'latency', figure: `submit p99 at ${PLAN.submitRate}/s, without / during pruning`, value: `${without.submit.p99_ms} / ${during.submit.p99_ms} ms (×${round(submitRatio, 2)})` },
          { section: 'latency', figure: 'p99 ratio during pruning (worse of the two)', value: String(ratio), goal: '≤ 1.5', met: ratio <= 1.5 },
          { section: 'invariants', figure: 'backlog jobs kept / unbalanced accounts', value: `${backlog} / ${accounts.unbalanced}` },
        ];
        say(`\n${formatTable(rows)}\n\ntook ${((Date.now() - began) / 1000).toFixed(0)} s`);
        writeOut('retention.json', `${JSON.stringify(figures, null, 2)}\n`);
        writeOut(
          'retention.md',
          formatMarkdown('Retention soak', rows, [
            `took ${((Date.now() - began) / 1000).toFixed(0)} s in all`,
            '"left" counts what the measurement added too: its submits are queued jobs (the backlog) with their keys, queue entries, events and reservations',
            '"outside": rows still there that their window says should have gone by the end of the run (reckoned from its start)',
          ]),
        );
        return withinWindow && ratio <= 1.5 ? 0 : 1;
      } finally {
        await Promise.all([api.stop(), worker.stop(20_000)]);
      }
    });
  } finally {
    await infrastructure.stop();
  }
}

runMain(main);
