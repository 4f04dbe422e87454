import { randomBytes } from 'node:crypto';
import { WorkflowFailedError } from '@temporalio/client';
import { createReconcileActivities } from '../src/activities/reconcile';
import type { PruneReport } from '../src/activities/retention';
import { createLogger } from '../src/lib/logger';
import { creditBalance } from '../src/credits/ledger';
import { creditsFor } from '../src/domain/pricing';
import { startWebhookReceiver, type WebhookReceiver } from './notification-helpers';
import { retentionScheduleId } from '../src/retention/schedule';
import { capacityAdmin } from './fairness-helpers';
import { apiClient, eventually, startStack, type Stack } from './harness';

/**
 * Retention pruning, run through its real Temporal schedule and workflow against a database of its own. Jobs go through
 * the real service (keys, ledger, notifications, webhook deliveries, events, queue entries are what the code writes),
 * then their times are moved back to just inside or just outside each window.
 */
const WINDOWS = { jobs: 30, notifications: 10, deliveries: 20, ledger: 60, apiKeys: 5 };
const BATCH = 2;

/** Triggers the retention schedule and returns what the workflow it started reported. */
async function runRetention(stack: Stack): Promise<PruneReport> {
  const schedule = stack.client.schedule.getHandle(retentionScheduleId(stack.config));
  const before = (await schedule.describe()).info.recentActions.length;
  await schedule.trigger();
  const action = await eventually(async () => (await schedule.describe()).info.recentActions[before], { what: 'the schedule to start the retention workflow' });
  return stack.client.workflow.getHandle(action.action.workflow.workflowId, action.action.workflow.firstExecutionRunId).result() as Promise<PruneReport>;
}

/** Which of `ids` still have a row in `table` (matched on `column`). */
async function present(stack: Stack, table: string, column: string, ids: string[]): Promise<string[]> {
  const rows = await stack.database.sql<{ id: string }[]>`select ${stack.database.sql(column)}::text as id from ${stack.database.sql(table)} where ${stack.database.sql(column)}::text = any(${ids})`;
  return [...new Set(rows.map((r) => r.id))].sort();
}

const sorted = (ids: string[]) => [...ids].sort();

describe('retention pruning', () => {
  let stack: Stack;
  let receiver: WebhookReceiver;
  beforeAll(async () => {
    receiver = await startWebhookReceiver();
    stack = await startStack({
      ownDatabase: true,
      env: {
        RETENTION_JOBS_DAYS: String(WINDOWS.jobs),
        RETENTION_NOTIFICATIONS_DAYS: String(WINDOWS.notifications),
        RETENTION_DELIVERIES_DAYS: String(WINDOWS.deliveries),
        RETENTION_LEDGER_DAYS: String(WINDOWS.ledger),
        RETENTION_API_KEYS_DAYS: String(WINDOWS.apiKeys),
        RETENTION_BATCH_SIZE: String(BATCH),
        RETENTION_BATCH_PAUSE_MS: '0',
      },
    });
  });
  afterAll(async () => {
    await stack?.close();
    await receiver?.close();
  });

  test('the worker creates the schedule, which runs the retention workflow', async () => {
    const described = await stack.client.schedule.getHandle(retentionScheduleId(stack.config)).describe();
    expect(described.action).toMatchObject({ type: 'startWorkflow', workflowType: 'retentionWorkflow', taskQueue: stack.config.worker.generationTaskQueue });
    expect(described.spec.intervals?.[0]?.every).toBe(stack.config.retention.intervalMs);
    const report = await runRetention(stack);
    expect(report.batches.generations.count).toBeGreaterThanOrEqual(1);
  });

  test('every table keeps exactly its window; unfinished things stay; counts and the change feed are untouched; batches are bounded', async () => {
    const { userId, apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const sql = stack.database.sql;
    const body = (name: string) => ({ prompt: `retention ${name}`, webhook_url: `${receiver.url}/${name}` });

    // Jobs one after the other, oldest-to-be first, so the change feed's ids keep following its times once they are
    // moved back (as they do in production: an event's id is its commit order). Finished, each with an Idempotency-Key
    // and a per-request webhook: F and G past the ledger's window (F just outside, G just inside), A past the jobs'
    // window, B just inside it, E fresh. Unfinished: C running for good, D queued (no capacity left).
    const jobs: Record<string, string> = {};
    for (const name of ['F', 'G', 'C', 'A', 'B', 'E']) {
      const res = await api.submit(name === 'C' ? { prompt: 'retention C runs for good [hang]' } : body(name), `key-${name}-${userId}`);
      expect(res.status).toBe(202);
      jobs[name] = res.body.id;
      if (name === 'C') await eventually(async () => ((await api.get(jobs.C)).body.status === 'running' ? true : undefined), { what: 'C running' });
      else expect((await api.waitForTerminal(jobs[name])).status).toBe('succeeded');
    }
    const { A, B, C, E, F, G } = jobs;
    const finished = [A, B, E, F, G];
    await eventually(async () => ((await sql`select 1 from webhook_deliveries where job_id = any(${finished}) and status = 'succeeded'`).length === 5 ? true : undefined), {
      what: 'five delivered webhooks',
    });
    await capacityAdmin(stack).set(0);
    const D = (await api.submit({ prompt: 'retention D waits' }, `key-D-${userId}`)).body.id as string;
    expect((await api.get(D)).body.status).toBe('queued');

    // Move times back. Jobs (row, key, events, queue entry, ledger) by completion; the other tables on their own.
    const age = async (id: string, ago: string) => {
      await sql`update generations set created_at = now() - ${ago}::interval - interval '2 minutes', started_at = now() - ${ago}::interval - interval '1 minute',
                completed_at = case when completed_at is null then null else now() - ${ago}::interval end where id = ${id}`;
      await sql`update idempotency_keys set created_at = now() - ${ago}::interval - interval '2 minutes' where job_id = ${id}`;
      await sql`update generation_events set created_at = now() - ${ago}::interval where job_id = ${id}`;
      await sql`update gpu_queue_entries set admitted_at = now() - ${ago}::interval - interval '2 minutes' where job_id = ${id}`;
      await sql`update credit_ledger set created_at = now() - ${ago}::interval where job_id = ${id}`;
    };
    await age(A, '30 days 1 hour');
    await age(B, '30 days -1 hour');
    await age(F, '60 days 1 hour');
    await age(G, '60 days -1 hour');
    await age(C, '40 days');
    // B's first event is older than the window although B itself is not: events go by their own age.
    const [bQueued] = await sql<{ id: string }[]>`select id::text from generation_events where job_id = ${B} order by id limit 1`;
    await sql`update generation_events set created_at = now() - interval '30 days 2 hours' where id = ${bQueued.id}`;
    await sql`update credit_ledger set created_at = now() - interval '100 days' where user_id = ${userId} and kind = 'grant'`;
    // Notifications: B's past its window, E's just inside. Deliveries: B's past, E's just inside, and a pending one.
    await sql`update notifications set created_at = now() - interval '10 days 1 hour' where job_id = ${B}`;
    await sql`update notifications set created_at = now() - interval '10 days -1 hour' where job_id = ${E}`;
    // Endings queued for mail (the notifications' window): A's goes with its job, B's past the window, E's just inside.
    await sql`insert into email_notifications (user_id, job_id, event, status, created_at) values
              (${userId}, ${A}, 'generation.succeeded', 'sent', now() - interval '1 hour'),
              (${userId}, ${B}, 'generation.succeeded', 'sent', now() - interval '10 days 1 hour'),
              (${userId}, ${E}, 'generation.succeeded', 'pending', now() - interval '10 days -1 hour')`;
    await sql`update webhook_deliveries set updated_at = now() - interval '20 days 1 hour' where job_id = ${B}`;
    await sql`update webhook_deliveries set updated_at = now() - interval '20 days -1 hour' where job_id = ${E}`;
    const [bDelivery] = await sql<{ id: string }[]>`select id from webhook_deliveries where job_id = ${B}`;
    const [eDelivery] = await sql<{ id: string }[]>`select id from webhook_deliveries where job_id = ${E}`;
    const endpoint = (name: string) => `ep_fixture_${name}_${randomBytes(3).toString('hex')}`;
    const endpoints = { gone: endpoint('gone'), withDelivery: endpoint('with_delivery'), recent: endpoint('recent') };
    for (const [name, id] of Object.entries(endpoints)) {
      const deleted = name === 'recent' ? '20 days -1 hour' : '20 days 1 hour';
      await sql`insert into webhook_endpoints (id, user_id, url, secret, deleted_at) values (${id}, ${userId}, ${receiver.url}, 'whsec_x', now() - ${deleted}::interval)`;
    }
    const pendingDelivery = `dl_fixture_pending_${randomBytes(3).toString('hex')}`;
    await sql`insert into webhook_deliveries (id, user_id, job_id, endpoint_id, event_type, webhook_id, url, body, status, created_at, updated_at)
              values (${pendingDelivery}, ${userId}, ${C}, ${endpoints.withDelivery}, 'generation.succeeded', 'msg_fixture', ${receiver.url}, '{}', 'pending',
                      now() - interval '25 days', now() - interval '25 days')`;
    // The small tables.
    const fixture = randomBytes(3).toString('hex');
    await sql`insert into rate_limit_buckets (bucket_key, tokens, refilled_at, last_allowed) values
              (${`fixture:${fixture}:refilled`}, 3, now() - interval '5 minutes', true), (${`fixture:${fixture}:recent`}, 3, now() - interval '20 seconds', true)`;
    await sql`insert into user_job_counts (user_id, active, queued, day, today) values
              (${`fixture-${fixture}-idle`}, 0, 0, current_date - 3, 4), (${`fixture-${fixture}-today`}, 0, 0, (now() at time zone 'UTC')::date, 1),
              (${`fixture-${fixture}-active`}, 1, 0, current_date - 3, 1)`;
    await sql`insert into gpu_slot_leases (id, pool, dispatcher_id, expires_at) values
              (${`lease-${fixture}-dead`}, 'fixture', 'gone', now() - interval '1 hour'), (${`lease-${fixture}-lapsing`}, 'fixture', 'slow', now() - interval '2 seconds'),
              (${`lease-${fixture}-live`}, 'fixture', 'alive', now() + interval '1 minute')`;
    await sql`insert into api_keys (id, user_id, key_hash, key_prefix, revoked_at) values
              (${`key-${fixture}-old`}, ${userId}, ${`hash-${fixture}-old`}, 'vg_x', now() - interval '5 days 1 hour'),
              (${`key-${fixture}-recent`}, ${userId}, ${`hash-${fixture}-recent`}, 'vg_x', now() - interval '5 days -1 hour')`;

    // What pruning must not change.
    const counts = () => sql`select active, queued, day::text, today from user_job_counts where user_id = ${userId}`;
    const countsBefore = await counts();
    expect(countsBefore).toEqual([expect.objectContaining({ active: 2, queued: 1 })]);
    const [{ feedBefore }] = await sql<{ feedBefore: string }[]>`select max(id)::text as "feedBefore" from generation_events`;
    const balanceBefore = await creditBalance(stack.database.db, userId);

    const report = await runRetention(stack);

    expect(await present(stack, 'generations', 'id', [A, B, C, D, E, F, G])).toEqual(sorted([B, C, D, E]));
    expect(await present(stack, 'idempotency_keys', 'job_id', [A, B, C, D, E, F, G])).toEqual(sorted([B, C, D, E]));
    // Events: by their own age, never those of an unfinished job.
    expect(await present(stack, 'generation_events', 'job_id', [A, F, G, C])).toEqual([C]);
    expect(await present(stack, 'generation_events', 'id', [bQueued.id])).toEqual([]);
    expect((await sql`select 1 from generation_events where job_id = ${B}`).length).toBeGreaterThan(0);
    // Queue entries: the backlog (D), the running job (C) and a fresh completion the ETA still reads (E).
    expect(await present(stack, 'gpu_queue_entries', 'job_id', [A, B, C, D, E, F, G])).toEqual(sorted([C, D, E]));
    expect(await present(stack, 'notifications', 'job_id', [A, B, E, F, G])).toEqual([E]);
    expect(await present(stack, 'email_notifications', 'job_id', [A, B, E])).toEqual([E]);
    expect(await present(stack, 'webhook_deliveries', 'id', [bDelivery.id, eDelivery.id, pendingDelivery])).toEqual(sorted([eDelivery.id, pendingDelivery]));
    expect(await present(stack, 'webhook_delivery_attempts', 'delivery_id', [bDelivery.id, eDelivery.id])).toEqual([eDelivery.id]);
    expect(await present(stack, 'webhook_endpoints', 'id', Object.values(endpoints))).toEqual(sorted([endpoints.withDelivery, endpoints.recent]));
    // The ledger: F's reservation and settlement went; G's, A's (a pruned job's) and the grant stay, and so does C's
    // reservation, never settled.
    const ledger = await sql<{ job_id: string | null; kind: string; entry_key: string }[]>`select job_id, kind, entry_key from credit_ledger where user_id = ${userId}`;
    const kinds = (job: string | null) => ledger.filter((l) => l.job_id === job).map((l) => l.kind).sort();
    expect(kinds(F)).toEqual([]);
    expect(kinds(G)).toEqual(['capture', 'reserve']);
    expect(kinds(A)).toEqual(['capture', 'reserve']);
    expect(kinds(C)).toEqual(['reserve']);
    expect(kinds(null)).toEqual(['grant']);
    expect(await present(stack, 'rate_limit_buckets', 'bucket_key', [`fixture:${fixture}:refilled`, `fixture:${fixture}:recent`])).toEqual([`fixture:${fixture}:recent`]);
    expect(await present(stack, 'user_job_counts', 'user_id', [`fixture-${fixture}-idle`, `fixture-${fixture}-today`, `fixture-${fixture}-active`])).toEqual(
      sorted([`fixture-${fixture}-today`, `fixture-${fixture}-active`]),
    );
    expect(await present(stack, 'gpu_slot_leases', 'id', [`lease-${fixture}-dead`, `lease-${fixture}-lapsing`, `lease-${fixture}-live`])).toEqual(
      sorted([`lease-${fixture}-lapsing`, `lease-${fixture}-live`]),
    );
    expect(await present(stack, 'api_keys', 'id', [`key-${fixture}-old`, `key-${fixture}-recent`])).toEqual([`key-${fixture}-recent`]);

    // Counts, the change feed and the account: as they were.
    expect(await counts()).toEqual(countsBefore);
    const newEvents = await sql<{ job_id: string }[]>`select job_id from generation_events where id > ${feedBefore}::bigint`;
    expect(newEvents.filter((e) => e.job_id !== C)).toEqual([]);
    expect(await creditBalance(stack.database.db, userId)).toEqual(balanceBefore);
    const [balanced] = await sql<{ ok: boolean }[]>`
      select a.available + a.reserved + a.used = (select sum(amount) from credit_ledger where user_id = a.user_id and kind = 'grant') as ok
      from credit_accounts a where a.user_id = ${userId}`;
    expect(balanced.ok).toBe(true);

    // What the workflow reported, and that no batch deleted more than RETENTION_BATCH_SIZE rows of its table.
    expect(report.deleted.generations).toBe(3);
    expect(report.batches.generations.count).toBeGreaterThanOrEqual(2);
    for (const [table, batches] of Object.entries(report.batches)) expect([table, batches.largest <= BATCH]).toEqual([table, true]);

    // A's workflow gone, as the namespace's retention (shorter than the jobs') would have it. The reconciler takes the
    // settled reservation of a pruned job for what it is, not for a job that never started.
    await stack.client.connection.workflowService.deleteWorkflowExecution({ namespace: 'default', workflowExecution: { workflowId: A } });
    await eventually(async () => (await stack.client.workflow.getHandle(A).describe().then(() => false, () => true)) || undefined, {
      what: "A's workflow to be deleted",
      timeoutMs: 60_000,
    });
    const reconciler = createReconcileActivities({ db: stack.database.db, client: stack.client, config: stack.config, logger: createLogger('test', 'silent'), endGeneration: async () => false });
    expect((await reconciler.reconcileProjection({ quietForMs: 60_000, limit: 500 })).orphanReservationsReleased).toBe(0);
    expect(await creditBalance(stack.database.db, userId)).toEqual(balanceBefore);

    // A reused key: B's (its job kept) replays B; A's (its job pruned) makes a new job under the same id, charged and
    // notified on its own.
    await capacityAdmin(stack).set(null);
    const replayed = await api.submit(body('B'), `key-B-${userId}`);
    expect(replayed.status).toBe(202);
    expect(replayed.headers.get('idempotent-replayed')).toBe('true');
    expect(replayed.body.id).toBe(B);
    await api.waitForTerminal(D);
    const usedBefore = (await creditBalance(stack.database.db, userId)).used;
    const again = await api.submit({ prompt: 'retention A again, longer', duration_seconds: 10 }, `key-A-${userId}`);
    expect(again.status).toBe(202);
    expect(again.headers.get('idempotent-replayed')).toBeNull();
    expect(again.body.id).toBe(A);
    expect((await api.waitForTerminal(A)).status).toBe('succeeded');
    const price = creditsFor({ duration_seconds: 10, resolution: '720p' });
    await eventually(async () => ((await creditBalance(stack.database.db, userId)).used === usedBefore + price ? true : undefined), { what: 'the new job to be charged' });
    // The earlier job's entries stay as they were; the new one reserved and captured its own price once, under its run's key.
    const entries = await sql<{ kind: string; amount: number; entry_key: string; recent: boolean }[]>`
      select kind, amount, entry_key, created_at > now() - interval '1 day' as recent from credit_ledger where job_id = ${A} order by id`;
    expect(entries.filter((e) => !e.recent).map((e) => [e.kind, e.entry_key])).toEqual([
      ['reserve', `${A}:reserve`],
      ['capture', `${A}:reserve:settle`],
    ]);
    const fresh = entries.filter((e) => e.recent);
    expect(fresh.map((e) => [e.kind, e.amount])).toEqual([
      ['reserve', price],
      ['capture', price],
    ]);
    expect(fresh[1].entry_key).toBe(`${fresh[0].entry_key}:settle`);
    await eventually(async () => ((await sql`select 1 from notifications where job_id = ${A}`).length === 1 ? true : undefined), { what: "the new job's notification" });
  });
  test("pruning a user's old jobs never waits for their counts row, which each of their submits updates", async () => {
    const { userId, apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const job = (await api.submit({ prompt: 'retention: an old job' })).body.id as string;
    await api.waitForTerminal(job);
    await stack.database.sql`update generations set created_at = now() - interval '40 days', completed_at = now() - interval '40 days' where id = ${job}`;
    const holder = await stack.database.sql.reserve();
    try {
      await holder`begin`;
      await holder`select * from user_job_counts where user_id = ${userId} for update`;
      const report = await runRetention(stack);
      expect(report.deleted.generations).toBe(1);
    } finally {
      await holder`rollback`;
      holder.release();
    }
  });
});

describe('a retention run', () => {
  let stack: Stack;
  beforeAll(async () => {
    // One row per batch, with a rest between batches: a run over a few hundred rows lasts long enough to cancel.
    stack = await startStack({ ownDatabase: true, env: { RETENTION_BATCH_SIZE: '1', RETENTION_BATCH_PAUSE_MS: '100' } });
  });
  afterAll(async () => {
    await stack?.close();
  });

  test('stops between batches when cancelled, and the next run deletes the rest', async () => {
    const { userId } = await stack.createUser('pro');
    const sql = stack.database.sql;
    await sql`insert into notifications (id, user_id, job_id, event, title, message, data, created_at)
              select 'ntf_old_' || i, ${userId}, 'gen_old_' || i, 'generation.succeeded', 't', 'm', '{}', now() - interval '31 days'
              from generate_series(1, 300) as i`;
    const remaining = async () => (await sql<{ n: number }[]>`select count(*)::int as n from notifications where user_id = ${userId}`)[0].n;

    const schedule = stack.client.schedule.getHandle(retentionScheduleId(stack.config));
    await schedule.trigger();
    const action = await eventually(async () => (await schedule.describe()).info.recentActions[0], { what: 'the retention workflow to start' });
    const run = stack.client.workflow.getHandle(action.action.workflow.workflowId, action.action.workflow.firstExecutionRunId);
    await eventually(async () => ((await remaining()) < 300 ? true : undefined), { what: 'the first batches' });
    await run.cancel();
    await expect(run.result()).rejects.toBeInstanceOf(WorkflowFailedError);
    expect((await run.describe()).status.name).toBe('CANCELLED');
    // Nothing deletes once the run has ended: count after a settle window, not at once.
    const left = await remaining();
    await new Promise((r) => setTimeout(r, 1_000));
    expect(await remaining()).toBe(left);
    expect(left).toBeGreaterThan(0);

    const report = await runRetention(stack);
    expect(report.deleted.notifications).toBe(left);
    expect(await remaining()).toBe(0);
  }, 180_000);
});
