import type { Sql } from '../../src/db/client';

/**
 * Finished generations written straight into the projection with SQL (generate_series), for measuring how listing cost
 * grows with the table. The change-feed trigger is skipped for these rows (session_replication_role = replica): it would
 * queue one NOTIFY and one generation_events row per row, which no client of a finished job ever reads.
 */
const PARAMS = JSON.stringify({ duration_seconds: 5, resolution: '720p', aspect_ratio: '16:9', seed: null, webhook_url: null, metadata: {} });
const CHUNK = 100_000;

/** Adds rows number `from` .. `from + count - 1` for the user, created at random times over the past year. */
export async function insertFinishedRows(sql: Sql, userId: string, from: number, count: number): Promise<void> {
  for (let start = from; start < from + count; start += CHUNK) {
    const end = Math.min(from + count, start + CHUNK) - 1;
    await sql.begin(async (tx) => {
      await tx`set local session_replication_role = replica`;
      await tx`
        insert into generations (id, user_id, tier, status, status_rank, prompt, params, attempt, progress, backend_job_id,
                                 video_url, created_at, started_at, completed_at, updated_at)
        select 'gen_bulk_' || ${userId} || '_' || i, ${userId}, 'pro', 'succeeded', 2, 'a bulk-loaded prompt number ' || i,
               ${PARAMS}::jsonb, 1, 1, 'job_bulk_' || i, 'https://videos.sim.local/bulk_' || i || '.mp4',
               t, t + interval '5 seconds', t + interval '65 seconds', t + interval '65 seconds'
        from (select i, now() - random() * interval '365 days' as t from generate_series(${start}::int, ${end}::int) as i) as s`;
    });
  }
  // As a table that grew over a year would be: vacuumed (visibility map and hint bits set, so the first reads of the new
  // rows do not write them again) and checkpointed, so none of that runs during the measurement that follows.
  await sql`vacuum (analyze) generations`;
  await sql`checkpoint`.catch(() => undefined); // needs a superuser (or pg_checkpoint): skipped without one
}
