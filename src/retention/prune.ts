import type { Sql } from '../db/client';
import { SETTLEMENT_KEY_SUFFIX } from '../db/ledger-keys';

/**
 * What retention deletes, table by table, as the SQL of one batch each (written once here, tested against real
 * Postgres). A batch is one statement in its own short transaction, bounded to about `limit` rows, found through
 * an index (or a primary-key range) and deleted by an array of their ids, so no plan hashes a whole table. Where a row
 * can become current again while the batch runs (a delivery replayed, a bucket taken from, a user submitting), the batch
 * locks it SKIP LOCKED or re-checks its condition as it deletes. Only finished things go: an unfinished job, its events
 * and queue entry, a pending delivery and an open reservation are never deleted.
 */
export interface RetentionWindows {
  /** Finished jobs (with their idempotency keys) and change-feed events. */
  jobsDays: number;
  notificationsDays: number;
  /** Finished webhook deliveries and their attempts; deleted endpoints once their deliveries are gone. */
  deliveriesDays: number;
  /** Settled job entries of the credit ledger. */
  ledgerDays: number;
  /** Revoked API keys. */
  apiKeysDays: number;
  /** How long the queue ETA reads a finished job's queue entry (QUEUE_ETA_WINDOW_MS). */
  etaWindowMs: number;
  /** A rate-limit bucket idle this long has refilled (burst / rate): deleting it changes nothing. */
  bucketRefillMs: number;
  /** A slot lease expired this long ago is dead for good (GPU_LEASE_TTL_MS). */
  leaseTtlMs: number;
}

/** What one batch did: rows deleted per table, and where the next batch starts (primary-key scans). */
export interface BatchOutcome {
  deleted: Record<string, number>;
  /** How many rows of the step's main table it deleted (never more than the limit). */
  rows: number;
  done: boolean;
  cursor?: string;
}

export interface PruneStep {
  /** The step's main table. */
  table: string;
  /** Where a primary-key scan starts; undefined for steps that read the oldest rows by an index each time. */
  start?: string;
  batch(sql: Sql, w: RetentionWindows, limit: number, cursor: string | undefined): Promise<BatchOutcome>;
}

/** The rows a job's batch deletes per job: the job, its key, queue entry and notification (and now and then a delivery). */
const JOB_ROWS = 4;

const days = (n: number) => `${n} days`;
const ms = (n: number) => `${n} milliseconds`;

/** A batch of an index-ordered step: done once it found fewer rows than it may take. */
const ordered = (table: string, rows: number, limit: number, deleted: Record<string, number> = {}): BatchOutcome => ({
  deleted: { [table]: rows, ...deleted },
  rows,
  done: rows < limit,
});

export const PRUNE_STEPS: PruneStep[] = [
  {
    // A finished job, oldest completion first, with what hangs off its id: its idempotency key (a key lives exactly as
    // long as its job: reused after, it names the same id, which is then free), queue entry, notification and finished
    // deliveries with their attempts. Its ledger entries stay for the ledger's window. Deleting it changes no count
    // (drizzle/routines/user_job_counts.sql) and writes no change-feed event (the feed's trigger is on insert and update).
    table: 'generations',
    async batch(sql, w, rowLimit) {
      // Each job goes with about four rows of other tables: a quarter as many jobs keeps the statement to its rows.
      const limit = Math.max(1, Math.floor(rowLimit / JOB_ROWS));
      const [r] = await sql<Record<'n' | 'keys' | 'entries' | 'inbox' | 'emails' | 'deliveries' | 'attempts', number>[]>`
        with doomed as (
          select id from generations
          where completed_at < now() - ${days(w.jobsDays)}::interval and status_rank = 2
          -- Nulls first, as generations_completed_idx (desc nulls last) reads backwards: no sort of the whole range.
          order by completed_at nulls first limit ${limit}
          for update skip locked
        ), ids as (
          select coalesce(array_agg(id), '{}') as ids from doomed
        ), keys as (
          delete from idempotency_keys where job_id = any((select ids from ids)::text[]) returning 1
        ), entries as (
          delete from gpu_queue_entries where job_id = any((select ids from ids)::text[]) returning 1
        ), inbox as (
          delete from notifications where job_id = any((select ids from ids)::text[]) returning 1
        ), emails as (
          delete from email_notifications where job_id = any((select ids from ids)::text[]) returning 1
        ), finished as (
          select coalesce(array_agg(id), '{}') as ids from webhook_deliveries where job_id = any((select ids from ids)::text[]) and status <> 'pending'
        ), attempts as (
          delete from webhook_delivery_attempts where delivery_id = any((select ids from finished)::text[]) returning 1
        ), deliveries as (
          delete from webhook_deliveries where id = any((select ids from finished)::text[]) and status <> 'pending' returning 1
        ), gone as (
          delete from generations where id = any((select ids from ids)::text[]) returning 1
        )
        select (select count(*) from gone)::int as n, (select count(*) from keys)::int as keys, (select count(*) from entries)::int as entries,
               (select count(*) from inbox)::int as inbox, (select count(*) from emails)::int as emails, (select count(*) from deliveries)::int as deliveries,
               (select count(*) from attempts)::int as attempts`;
      return ordered('generations', r.n, limit, {
        idempotency_keys: r.keys,
        gpu_queue_entries: r.entries,
        notifications: r.inbox,
        email_notifications: r.emails,
        webhook_deliveries: r.deliveries,
        webhook_delivery_attempts: r.attempts,
      });
    },
  },
  {
    table: 'notifications',
    async batch(sql, w, limit) {
      const [r] = await sql<{ n: number }[]>`
        with doomed as (
          select coalesce(array_agg(id), '{}') as ids from (
            select id from notifications where created_at < now() - ${days(w.notificationsDays)}::interval order by created_at limit ${limit}
          ) as oldest
        ), gone as (
          delete from notifications where id = any((select ids from doomed)::text[]) returning 1
        )
        select count(*)::int as n from gone`;
      return ordered('notifications', r.n, limit);
    },
  },
  {
    // Endings queued for mail, by when they were queued, whatever became of them (one still pending after the window is
    // not worth a mail any more). Within the jobs' window, and deleted with their job too: a reused Idempotency-Key's
    // job must find its (job, event) free. Settings stay: one row per user who set an address.
    table: 'email_notifications',
    async batch(sql, w, limit) {
      const [r] = await sql<{ n: number }[]>`
        with doomed as materialized (
          select job_id, event, user_id from email_notifications
          where created_at < now() - ${days(w.notificationsDays)}::interval order by created_at limit ${limit}
        ), gone as (
          delete from email_notifications e using doomed d
          where e.job_id = d.job_id and e.event = d.event and e.user_id = d.user_id returning 1
        )
        select count(*)::int as n from gone`;
      return ordered('email_notifications', r.n, limit);
    },
  },
  {
    // Finished deliveries by when they finished (a replay makes one pending again, and its window starts anew).
    table: 'webhook_deliveries',
    async batch(sql, w, rowLimit) {
      // A delivery goes with its attempts, one or two.
      const limit = Math.max(1, Math.floor(rowLimit / 2));
      const [r] = await sql<{ n: number; attempts: number }[]>`
        with doomed as (
          select coalesce(array_agg(id), '{}') as ids from (
            select id from webhook_deliveries
            where status <> 'pending' and updated_at < now() - ${days(w.deliveriesDays)}::interval
            order by updated_at limit ${limit}
            for update skip locked
          ) as oldest
        ), attempts as (
          delete from webhook_delivery_attempts where delivery_id = any((select ids from doomed)::text[]) returning 1
        ), gone as (
          delete from webhook_deliveries where id = any((select ids from doomed)::text[]) returning 1
        )
        select (select count(*) from gone)::int as n, (select count(*) from attempts)::int as attempts`;
      return ordered('webhook_deliveries', r.n, limit, { webhook_delivery_attempts: r.attempts });
    },
  },
  {
    // Events in id order, which is their commit order and so their time order (an event's created_at is its writer's
    // transaction time): the scan stops at the first batch with nothing old enough. An unfinished job's stay.
    table: 'generation_events',
    start: '0',
    async batch(sql, w, limit, cursor = '0') {
      const [r] = await sql<{ n: number; old: number; scanned: number; last: string | null }[]>`
        with batch as materialized (
          select id, job_id, created_at < now() - ${days(w.jobsDays)}::interval as old
          from generation_events where id > ${cursor}::bigint order by id limit ${limit}
        ), doomed as (
          select coalesce(array_agg(b.id), '{}') as ids from batch b
          where b.old and not exists (select 1 from generations g where g.id = b.job_id and g.status_rank < 2)
        ), gone as (
          delete from generation_events where id = any((select ids from doomed)::bigint[]) returning 1
        )
        select (select count(*) from gone)::int as n, (select count(*) filter (where old) from batch)::int as old,
               (select count(*) from batch)::int as scanned, (select max(id) from batch)::text as last`;
      return { deleted: { generation_events: r.n }, rows: r.n, done: r.scanned < limit || r.old === 0, cursor: r.last ?? cursor };
    },
  },
  {
    // The queue ETA reads the pool of recent completions from their entries: an entry goes once its job has been
    // finished for the ETA's window (or has no row: undone). Queued and running jobs keep theirs.
    table: 'gpu_queue_entries',
    start: '',
    async batch(sql, w, limit, cursor = '') {
      const [r] = await sql<{ n: number; scanned: number; last: string | null }[]>`
        with batch as materialized (
          select job_id from gpu_queue_entries where job_id > ${cursor} order by job_id limit ${limit}
        ), doomed as (
          select coalesce(array_agg(b.job_id), '{}') as ids from batch b
          where not exists (
            select 1 from generations g
            where g.id = b.job_id and (g.status_rank < 2 or g.completed_at >= now() - ${ms(w.etaWindowMs)}::interval)
          )
        ), gone as (
          delete from gpu_queue_entries where job_id = any((select ids from doomed)::text[]) returning 1
        )
        select (select count(*) from gone)::int as n, (select count(*) from batch)::int as scanned, (select max(job_id) from batch) as last`;
      return { deleted: { gpu_queue_entries: r.n }, rows: r.n, done: r.scanned < limit, cursor: r.last ?? cursor };
    },
  },
  {
    // A settlement and its reservation, once both are past the window; grants stay (the accounts balance against them),
    // and so does a reservation never settled.
    table: 'credit_ledger',
    async batch(sql, w, limit) {
      const [r] = await sql<{ n: number }[]>`
        with settled as materialized (
          select id, entry_key from credit_ledger
          where kind in ('capture', 'release') and created_at < now() - ${days(w.ledgerDays)}::interval
          order by created_at limit ${limit}
        ), reserves as (
          delete from credit_ledger
          where entry_key = any(array(select left(entry_key, -length(${SETTLEMENT_KEY_SUFFIX}::text)) from settled)) and kind = 'reserve' returning 1
        ), gone as (
          delete from credit_ledger where id = any(array(select id from settled)) returning 1
        )
        select ((select count(*) from gone) + (select count(*) from reserves))::int as n`;
      return { deleted: { credit_ledger: r.n }, rows: r.n, done: r.n < limit };
    },
  },
  {
    table: 'rate_limit_buckets',
    start: '',
    async batch(sql, w, limit, cursor = '') {
      const [r] = await sql<{ n: number; scanned: number; last: string | null }[]>`
        with batch as materialized (
          select bucket_key from rate_limit_buckets where bucket_key > ${cursor} order by bucket_key limit ${limit}
        ), gone as (
          delete from rate_limit_buckets
          where bucket_key = any(array(select bucket_key from batch)) and refilled_at < now() - ${ms(w.bucketRefillMs)}::interval
          returning 1
        )
        select (select count(*) from gone)::int as n, (select count(*) from batch)::int as scanned, (select max(bucket_key) from batch) as last`;
      return { deleted: { rate_limit_buckets: r.n }, rows: r.n, done: r.scanned < limit, cursor: r.last ?? cursor };
    },
  },
  {
    // A user with nothing active whose last job was before yesterday (UTC): no row reads as all zeros.
    table: 'user_job_counts',
    start: '',
    async batch(sql, _w, limit, cursor = '') {
      const [r] = await sql<{ n: number; scanned: number; last: string | null }[]>`
        with batch as materialized (
          select user_id from user_job_counts where user_id > ${cursor} order by user_id limit ${limit}
        ), gone as (
          delete from user_job_counts
          where user_id = any(array(select user_id from batch)) and active = 0 and queued = 0 and day < (now() at time zone 'UTC')::date - 1
          returning 1
        )
        select (select count(*) from gone)::int as n, (select count(*) from batch)::int as scanned, (select max(user_id) from batch) as last`;
      return { deleted: { user_job_counts: r.n }, rows: r.n, done: r.scanned < limit, cursor: r.last ?? cursor };
    },
  },
  {
    table: 'gpu_slot_leases',
    async batch(sql, w, limit) {
      const [r] = await sql<{ n: number }[]>`
        with gone as (
          delete from gpu_slot_leases where id = any(array(
            select id from gpu_slot_leases where expires_at < now() - ${ms(w.leaseTtlMs)}::interval limit ${limit}
          )) and expires_at < now() - ${ms(w.leaseTtlMs)}::interval
          returning 1
        )
        select count(*)::int as n from gone`;
      return ordered('gpu_slot_leases', r.n, limit);
    },
  },
  {
    table: 'api_keys',
    async batch(sql, w, limit) {
      const [r] = await sql<{ n: number }[]>`
        with gone as (
          delete from api_keys where id = any(array(
            select id from api_keys where revoked_at < now() - ${days(w.apiKeysDays)}::interval order by revoked_at limit ${limit}
          ))
          returning 1
        )
        select count(*)::int as n from gone`;
      return ordered('api_keys', r.n, limit);
    },
  },
  {
    // A deleted endpoint is kept while deliveries (its log) refer to it.
    table: 'webhook_endpoints',
    async batch(sql, w, limit) {
      const [r] = await sql<{ n: number }[]>`
        with gone as (
          delete from webhook_endpoints p where p.id = any(array(
            select id from webhook_endpoints q
            where deleted_at < now() - ${days(w.deliveriesDays)}::interval and not exists (select 1 from webhook_deliveries x where x.endpoint_id = q.id)
            order by deleted_at limit ${limit}
          )) and not exists (select 1 from webhook_deliveries x where x.endpoint_id = p.id)
          returning 1
        )
        select count(*)::int as n from gone`;
      return ordered('webhook_endpoints', r.n, limit);
    },
  },
  {
    // Last, so a resumed run's step numbers stay as they were. A completed batch, once past the jobs' window and once retention has taken its last item (items end before their
    // batch, so they go first): with its idempotency key (a reused key names the same batch and item ids, which must be
    // free), its batch.completed notification and its finished deliveries with their attempts.
    table: 'batches',
    async batch(sql, w, rowLimit) {
      const limit = Math.max(1, Math.floor(rowLimit / JOB_ROWS));
      const [r] = await sql<Record<'n' | 'keys' | 'inbox' | 'deliveries' | 'attempts', number>[]>`
        with doomed as (
          select b.id from batches b
          where b.completed_at < now() - ${days(w.jobsDays)}::interval
            and not exists (select 1 from generations g where g.batch_id = b.id)
          order by b.completed_at limit ${limit}
          for update skip locked
        ), ids as (
          select coalesce(array_agg(id), '{}') as ids from doomed
        ), keys as (
          delete from idempotency_keys where job_id = any((select ids from ids)::text[]) returning 1
        ), inbox as (
          delete from notifications where job_id = any((select ids from ids)::text[]) returning 1
        ), finished as (
          select coalesce(array_agg(id), '{}') as ids from webhook_deliveries where job_id = any((select ids from ids)::text[]) and status <> 'pending'
        ), attempts as (
          delete from webhook_delivery_attempts where delivery_id = any((select ids from finished)::text[]) returning 1
        ), deliveries as (
          delete from webhook_deliveries where id = any((select ids from finished)::text[]) and status <> 'pending' returning 1
        ), gone as (
          delete from batches where id = any((select ids from ids)::text[]) returning 1
        )
        select (select count(*) from gone)::int as n, (select count(*) from keys)::int as keys, (select count(*) from inbox)::int as inbox,
               (select count(*) from deliveries)::int as deliveries, (select count(*) from attempts)::int as attempts`;
      return ordered('batches', r.n, limit, {
        idempotency_keys: r.keys,
        notifications: r.inbox,
        webhook_deliveries: r.deliveries,
        webhook_delivery_attempts: r.attempts,
      });
    },
  },
];

/** The windows of a configuration. */
export function retentionWindows(config: {
  retention: { jobsDays: number; notificationsDays: number; deliveriesDays: number; ledgerDays: number; apiKeysDays: number };
  admission: { etaWindowMs: number; burst: number; refillPerSecond: number };
  dispatch: { leaseTtlMs: number };
}): RetentionWindows {
  const { jobsDays, notificationsDays, deliveriesDays, ledgerDays, apiKeysDays } = config.retention;
  return {
    jobsDays,
    notificationsDays,
    deliveriesDays,
    ledgerDays,
    apiKeysDays,
    etaWindowMs: config.admission.etaWindowMs,
    // At least a minute, whatever the rate: a bucket taken from within the last minute is never deleted.
    bucketRefillMs: Math.max(60_000, Math.ceil((config.admission.burst / config.admission.refillPerSecond) * 1000)),
    leaseTtlMs: config.dispatch.leaseTtlMs,
  };
}
