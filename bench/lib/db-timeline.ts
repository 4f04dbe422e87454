import { readFileSync } from 'node:fs';
import { cpuMsOf, postgresPids, temporalPids } from './costs';
import { RETENTION_SESSION } from '../../src/activities/retention';
import type { Sql } from '../../src/db/client';
import { percentile } from '../../test/scheduling-metrics';

/** One request of a steady load: when it was sent (ms since the load began) and how long it took. */
export interface Timed {
  at: number;
  ms: number;
}

interface Sample {
  at: number;
  /** Tables an autovacuum (or a manual vacuum) was working on. */
  vacuuming: string[];
  /** Active backends by what they waited on (`cpu` when on none). */
  waits: Record<string, number>;
  checkpoints: number;
  /** Buffers the checkpointer wrote, and the WAL's position in bytes (both cumulative). */
  checkpointBuffers: number;
  walBytes: number;
  cpuBusy: number;
  cpuTotal: number;
  /** CPU ms by process group (cumulative). */
  byProcess: Record<string, number>;
  /** The table of the retention step whose batch was running, or null between batches. */
  pruning: string | null;
}

/**
 * The table a retention batch prunes: the first it reads from (src/retention/prune.ts's steps each begin by choosing their
 * table's rows; the text `pg_stat_activity` keeps is cut at `track_activity_query_size`, 1 kB by default, before the
 * jobs step's last delete).
 */
function prunedTable(query: string | undefined): string | null {
  if (!query) return null;
  return /\bfrom (\w+)/i.exec(query)?.[1] ?? 'unknown';
}

/** The machine's CPU counters (jiffies): busy and total, all cores. */
function cpuJiffies(): { busy: number; total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  const idle = fields[3] + (fields[4] ?? 0);
  return { busy: total - idle, total };
}

/** CPU ms used so far: the benchmark's Postgres (all its processes), the Temporal dev server(s), and each named process (one gone counts 0). */
async function cpuByProcess(sql: Sql, named: Record<string, number>): Promise<Record<string, number>> {
  const used = (pids: number[]) => pids.reduce((sum, pid) => sum + (cpuMsOf(pid) || 0), 0);
  return {
    postgres: used(await postgresPids(sql)),
    temporal: used(temporalPids()),
    ...Object.fromEntries(Object.entries(named).map(([name, pid]) => [name, used([pid])])),
  };
}

/**
 * What Postgres and the machine were doing while a steady load ran, once a second: which tables a vacuum was on, what
 * active backends waited for, checkpoints, WAL written, the machine's CPU and the `processes`'. `stop` then sets each
 * window's p99 beside them, so a slow window names what ran in it.
 */
export function startDbTimeline(sql: Sql, processes: Record<string, number> = {}, everyMs = 1_000) {
  const began = performance.now();
  const samples: Sample[] = [];
  let stopped = false;
  const loop = (async () => {
    // Postgres 17 (the embedded server's) moved the checkpointer's counters from pg_stat_bgwriter to pg_stat_checkpointer.
    const [{ version }] = await sql<{ version: number }[]>`select current_setting('server_version_num')::int as version`;
    const counters =
      version >= 170000
        ? { view: 'pg_stat_checkpointer', checkpoints: 'num_timed + num_requested', buffers: 'buffers_written' }
        : { view: 'pg_stat_bgwriter', checkpoints: 'checkpoints_timed + checkpoints_req', buffers: 'buffers_checkpoint' };
    const checkpointer = `select (${counters.checkpoints})::int as checkpoints, ${counters.buffers}::float8 as buffers, (pg_current_wal_lsn() - '0/0'::pg_lsn)::float8 as wal from ${counters.view}`;
    while (!stopped) {
      const at = performance.now() - began;
      // One after another: a statement of this sampler in flight would count among the active backends.
      const vacuums = await sql<{ rel: string }[]>`select relid::regclass::text as rel from pg_stat_progress_vacuum`;
      const waits = await sql<{ wait: string; n: number }[]>`
        select coalesce(wait_event_type || ':' || wait_event, 'cpu') as wait, count(*)::int as n
        from pg_stat_activity where state = 'active' and pid <> pg_backend_pid() and backend_type = 'client backend' group by 1`;
      const [bgwriter] = await sql.unsafe<{ checkpoints: number; buffers: number; wal: number }[]>(checkpointer);
      const [pruner] = await sql<{ query: string }[]>`
        select query from pg_stat_activity where application_name = ${RETENTION_SESSION.application_name} and state = 'active' limit 1`;
      const cpu = cpuJiffies();
      samples.push({ at, vacuuming: vacuums.map((v) => v.rel), waits: Object.fromEntries(waits.map((w) => [w.wait, w.n])), checkpoints: bgwriter.checkpoints, checkpointBuffers: bgwriter.buffers, walBytes: bgwriter.wal, cpuBusy: cpu.busy, cpuTotal: cpu.total, byProcess: await cpuByProcess(sql, processes), pruning: prunedTable(pruner?.query) });
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    /** Stops sampling; then each `windowMs` window's p99 per stream beside what the samples in it saw. */
    async stop(streams: Record<string, Timed[]>, windowMs = 10_000) {
      stopped = true;
      await loop;
      const windows: Array<Record<string, unknown>> = [];
      const end = Math.max(0, ...samples.map((s) => s.at));
      for (let from = 0; from < end; from += windowMs) {
        const inWindow = samples.filter((s) => s.at >= from && s.at < from + windowMs);
        if (inWindow.length < 2) continue;
        const [a, b] = [inWindow[0], inWindow[inWindow.length - 1]];
        const waits: Record<string, number> = {};
        for (const s of inWindow) for (const [w, n] of Object.entries(s.waits)) waits[w] = (waits[w] ?? 0) + n;
        windows.push({
          t_s: from / 1000,
          ...Object.fromEntries(Object.entries(streams).map(([name, timed]) => [`${name}_p99_ms`, Math.round(percentile(timed.filter((r) => r.at >= from && r.at < from + windowMs).map((r) => r.ms), 99) * 10) / 10])),
          cpu_busy_pct: Math.round(((b.cpuBusy - a.cpuBusy) / Math.max(1, b.cpuTotal - a.cpuTotal)) * 100),
          // ms of CPU a second, by process.
          cpu_ms_per_s: Object.fromEntries(Object.keys(b.byProcess).map((name) => [name, Math.round(((b.byProcess[name] - (a.byProcess[name] ?? 0)) * 1000) / Math.max(1, b.at - a.at))])),
          checkpoints: b.checkpoints - a.checkpoints,
          checkpoint_buffers: b.checkpointBuffers - a.checkpointBuffers,
          wal_mib: Math.round((b.walBytes - a.walBytes) / 1024 / 102.4) / 10,
          vacuuming: [...new Set(inWindow.flatMap((s) => s.vacuuming))],
          // What retention was deleting, and in how many of the window's samples a batch was running.
          pruning: [...new Set(inWindow.flatMap((s) => (s.pruning ? [s.pruning] : [])))],
          pruning_samples: `${inWindow.filter((s) => s.pruning).length}/${inWindow.length}`,
          waits,
        });
      }
      return windows;
    },
  };
}
