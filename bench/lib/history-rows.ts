import type { Sql } from '../../src/db/client';
import { RESERVATION_KEY_SUFFIX, SETTLEMENT_KEY_SUFFIX } from '../../src/db/ledger-keys';

/**
 * A service's history written straight into Postgres with generate_series, as `bulk-rows.ts` does for the projection:
 * `days` days of `perDay` finished jobs spread evenly over them, each with what the running service leaves behind — its
 * idempotency key, queue entry, three change-feed events (queued, running, ended; their ids follow their times, as
 * commit order makes them in production), notification, credit reservation and settlement, and for one user in ten an endpoint's webhook
 * delivery with its attempts (every fifth one took two). Plus the small tables: a rate-limit bucket and job counts per
 * user, revoked API keys, deleted endpoints, dead slot leases. Triggers are skipped (session_replication_role =
 * replica): the rows are written as the triggers would have left them.
 */
export interface HistoryPlan {
  days: number;
  perDay: number;
  /** Users the jobs go round (their ids); each is given a grant and an account that balances against it. */
  userIds: string[];
  pool: string;
}

export interface HistoryLoad {
  rows: Record<string, number>;
  seconds: number;
}

const PARAMS = JSON.stringify({ duration_seconds: 5, resolution: '720p', aspect_ratio: '16:9', seed: null, webhook_url: null, metadata: {} });
const CREDITS = 10;
const GRANT = 100_000_000;

export async function loadHistory(sql: Sql, plan: HistoryPlan, log: (line: string) => void): Promise<HistoryLoad> {
  const began = Date.now();
  const rows: Record<string, number> = {};
  const add = (table: string, n: number) => (rows[table] = (rows[table] ?? 0) + n);
  const total = plan.days * plan.perDay;
  const [{ t0 }] = await sql<{ t0: string }[]>`select (now() - ${`${plan.days} days`}::interval)::text as t0`;
  // The newest job ended an hour ago; seconds between one job and the next.
  const step = (plan.days * 86_400 - 3_600) / total;
  const users = plan.userIds;
  const soakUsers = users.filter((u) => u.startsWith('usr_soak_'));

  await sql.begin(async (tx) => {
    await tx`set local session_replication_role = replica`;
    add('users', (await tx`insert into users (id, name, tier, created_at) select u, u, 'pro', ${t0}::timestamptz from unnest(${soakUsers}::text[]) as u`).count);
    add('credit_accounts', (await tx`insert into credit_accounts (user_id, available) select u, ${GRANT}::int from unnest(${soakUsers}::text[]) as u`).count);
    add(
      'credit_ledger',
      (await tx`insert into credit_ledger (user_id, kind, amount, entry_key, created_at) select u, 'grant', ${GRANT}::int, u || ':signup', ${t0}::timestamptz from unnest(${soakUsers}::text[]) as u`)
        .count,
    );
    // One user in ten has a webhook endpoint.
    add(
      'webhook_endpoints',
      (
        await tx`insert into webhook_endpoints (id, user_id, url, secret, created_at)
                 select 'ep_soak_' || i, (${users}::text[])[i + 1], 'https://hooks.example.com/' || i, 'whsec_soak', ${t0}::timestamptz
                 from generate_series(0, ${users.length - 1}::int) as i where i % 10 = 0`
      ).count,
    );
  });

  // Two loaders, each a day at a time: the server's two backends share the work. Event ids are given, not drawn from
  // the sequence, so that whichever day commits first, ids follow event times as commit order does in production.
  let loaded = 0;
  const loadDay = async (day: number) => {
    const from = day * plan.perDay;
    const to = from + plan.perDay - 1;
    await sql.begin(async (tx) => {
      await tx`set local session_replication_role = replica`;
      await tx`set local synchronous_commit = off`;
      // The day's jobs, computed once: number, user (and whether it has an endpoint), status, creation time.
      await tx`
        create temp table day_jobs on commit drop as
        select k, 'gen_soak_' || k as id, (${users}::text[])[1 + k % ${users.length}::int] as user_id, (k % ${users.length}::int) % 10 = 0 as hooked,
               (k % ${users.length}::int) as user_index,
               case when k % 20 = 0 then 'failed' when k % 50 = 1 then 'canceled' else 'succeeded' end as status,
               ${t0}::timestamptz + k * ${step}::float8 * interval '1 second' as t
        from generate_series(${from}::int, ${to}::int) as k`;
      add(
        'generations',
        (
          await tx`
            insert into generations (id, user_id, tier, status, status_rank, prompt, params, attempt, progress, backend_job_id, video_url, error,
                                     created_at, started_at, completed_at, updated_at, run_opened_at)
            select id, user_id, 'pro', status, 2, 'a soak prompt number ' || k, ${PARAMS}::jsonb, 1, case when status = 'succeeded' then 1 else 0.4 end,
                   'job_soak_' || k, case when status = 'succeeded' then 'https://videos.sim.local/soak_' || k || '.mp4' end,
                   case status when 'failed' then '{"code":"backend_internal_error","message":"the backend failed","retryable":false}'::jsonb
                               when 'canceled' then '{"code":"canceled_by_user","message":"canceled","retryable":false}'::jsonb end,
                   t, t + interval '5 seconds', t + interval '65 seconds', t + interval '65 seconds', t
            from day_jobs`
        ).count,
      );
      add(
        'generation_events',
        (
          await tx`
            insert into generation_events (id, user_id, job_id, type, payload, created_at)
            select (round(extract(epoch from j.t + e.at - ${t0}::timestamptz) * 1000) * 4 + e.n + 1)::bigint,
                   j.user_id, j.id, e.type, jsonb_build_object('generation_id', j.id, 'status', e.status, 'progress', e.progress, 'attempt', 1,
                                                             'queue_position', null, 'video_url', null, 'error', null, 'updated_at', j.t + e.at),
                   j.t + e.at
            from day_jobs j
            cross join lateral (values (0, 'generation.queued', 'queued', 0, interval '0 seconds'), (1, 'generation.running', 'running', 0, interval '5 seconds'),
                                       (2, 'generation.' || j.status, j.status, 1, interval '65 seconds')) as e(n, type, status, progress, at)`
        ).count,
      );
      add(
        'idempotency_keys',
        (await tx`insert into idempotency_keys (user_id, key, request_hash, job_id, created_at) select user_id, 'soak-key-' || k, md5(id), id, t from day_jobs`).count,
      );
      add(
        'gpu_queue_entries',
        (await tx`insert into gpu_queue_entries (job_id, pool, user_id, tier, fairness_weight, admitted_at) select id, ${plan.pool}, user_id, 'pro', 4, t from day_jobs`)
          .count,
      );
      add(
        'notifications',
        (
          await tx`
            insert into notifications (id, user_id, job_id, event, title, message, data, created_at, read_at)
            select 'ntf_soak_' || k, user_id, id, 'generation.' || status, 'Your video is ' || status, 'a soak prompt number ' || k,
                   jsonb_build_object('generation_id', id, 'status', status), t + interval '65 seconds',
                   case when k % 3 = 0 then t + interval '1 hour' end
            from day_jobs`
        ).count,
      );
      add(
        'credit_ledger',
        (
          await tx`
            insert into credit_ledger (user_id, job_id, kind, amount, entry_key, created_at)
            select user_id, id, 'reserve', ${CREDITS}::int, id || ${RESERVATION_KEY_SUFFIX}::text, t from day_jobs
            union all
            select user_id, id, case when status = 'succeeded' then 'capture' else 'release' end, ${CREDITS}::int, id || ${RESERVATION_KEY_SUFFIX + SETTLEMENT_KEY_SUFFIX}::text, t + interval '65 seconds'
            from day_jobs`
        ).count,
      );
      add(
        'webhook_deliveries',
        (
          await tx`
            insert into webhook_deliveries (id, user_id, job_id, endpoint_id, event_type, webhook_id, url, body, status, attempts, last_response_status,
                                            created_at, updated_at)
            select 'dl_soak_' || k, user_id, id, 'ep_soak_' || user_index, 'generation.' || status, 'msg_soak_' || k,
                   'https://hooks.example.com/' || user_index,
                   jsonb_build_object('type', 'generation.' || status, 'timestamp', t + interval '65 seconds',
                                      'data', jsonb_build_object('id', id, 'status', status, 'prompt', 'a soak prompt number ' || k))::text,
                   'succeeded', case when k % 5 = 0 then 2 else 1 end, 200, t + interval '65 seconds', t + interval '71 seconds'
            from day_jobs where hooked`
        ).count,
      );
      add(
        'webhook_delivery_attempts',
        (
          await tx`
            insert into webhook_delivery_attempts (delivery_id, attempt, url, response_status, response_body, error, duration_ms, attempted_at)
            select 'dl_soak_' || k, a.n, 'https://hooks.example.com/' || user_index, a.status, a.body, null, 120, t + interval '65 seconds' + a.after
            from day_jobs cross join lateral (values (1, 200, 'ok', interval '1 second'), (2, 200, 'ok', interval '6 seconds')) as a(n, status, body, after)
            where hooked and (a.n = 1 or k % 5 = 0)`
        ).count,
      );
    });
    loaded += 1;
    if (loaded % 10 === 0 || loaded === plan.days) log(`  ${loaded} days of ${plan.days} loaded (${((Date.now() - began) / 1000).toFixed(0)} s)`);
  };
  await Promise.all(
    [0, 1].map(async (lane) => {
      for (let day = lane; day < plan.days; day += 2) await loadDay(day);
    }),
  );
  await sql`select setval(pg_get_serial_sequence('generation_events', 'id'), (select max(id) from generation_events))`;

  await sql.begin(async (tx) => {
    await tx`set local session_replication_role = replica`;
    // Each account as its ledger leaves it: the captures used, the rest available (it balances against its grant).
    await tx`
      update credit_accounts a set used = a.used + c.captured, available = a.available - c.captured
      from (select user_id, sum(amount) filter (where kind = 'capture')::int as captured from credit_ledger where kind = 'capture' group by user_id) as c
      where a.user_id = c.user_id`;
    // Each user's bucket and counts as their last job left them.
    add(
      'rate_limit_buckets',
      (
        await tx`
          insert into rate_limit_buckets (bucket_key, tokens, refilled_at, last_allowed)
          select 'user:' || user_id, 19, max(created_at), true from generations where id like 'gen_soak_%' group by user_id`
      ).count,
    );
    add(
      'user_job_counts',
      (
        await tx`
          insert into user_job_counts (user_id, active, queued, day, today)
          select user_id, 0, 0, (max(created_at) at time zone 'UTC')::date, 1 from generations where id like 'gen_soak_%' group by user_id
          on conflict (user_id) do nothing`
      ).count,
    );
    // Keys revoked over the period, endpoints deleted six weeks ago, slot leases of dispatchers that died ten days ago.
    add(
      'api_keys',
      (
        await tx`
          insert into api_keys (id, user_id, key_hash, key_prefix, created_at, revoked_at)
          select 'key_soak_revoked_' || i, (${users}::text[])[1 + i % ${users.length}::int], md5('soak revoked ' || i), 'vg_soak_',
                 ${t0}::timestamptz, ${t0}::timestamptz + i * interval '4 hours'
          from generate_series(1, 300) as i`
      ).count,
    );
    add(
      'webhook_endpoints',
      (
        await tx`
          insert into webhook_endpoints (id, user_id, url, secret, created_at, deleted_at)
          select 'ep_soak_deleted_' || i, (${users}::text[])[1 + i], 'https://gone.example.com/' || i, 'whsec_soak', ${t0}::timestamptz, now() - interval '45 days'
          from generate_series(1, 30) as i`
      ).count,
    );
    add(
      'gpu_slot_leases',
      (
        await tx`
          insert into gpu_slot_leases (id, pool, dispatcher_id, job_id, acquired_at, expires_at)
          select 'lease_soak_' || i, ${plan.pool}, 'dispatcher-gone', null, now() - interval '10 days', now() - interval '10 days'
          from generate_series(1, 20) as i`
      ).count,
    );
  });
  return { rows, seconds: (Date.now() - began) / 1000 };
}
