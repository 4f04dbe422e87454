import { testDataConverter } from './payload-keys';
import { admitSubmission } from '../src/api/admission-store';
import { createGenerationBody } from '../src/wire/requests';
import { describeSubmission } from '../src/api/submit';
import { creditBalance, reserveCredits, undoReservation } from '../src/credits/ledger';
import { rowParams } from '../src/db/projection';
import { endToEndTime } from '../src/lib/metrics';
import { startWebhookReceiver } from './notification-helpers';
import { apiClient, eventually, settled, startStack, type Stack } from './harness';

/** What an API that dies between admission and the workflow start leaves behind: row, key, credits, queue entry. */
async function admitWithoutStart(stack: Stack, userId: string, body: Record<string, unknown>, key: string, pool = stack.config.dispatch.pool) {
  const parsed = createGenerationBody.parse(body);
  const request = { ...parsed, metadata: Object.fromEntries(Object.entries(parsed.metadata).sort()) };
  const submission = describeSubmission(stack.config, { id: userId, name: 'test', tier: 'pro', createdAt: new Date() }, request, key);
  const outcome = await admitSubmission(stack.database.sql, {
    userId,
    bucketKey: `user:${userId}`,
    rate: { burst: 10, perSecond: 1 },
    maxActive: 10,
    dailyQuota: 10,
    backlogFull: false,
    idempotencyKey: key,
    requestHash: submission.requestHash,
    jobId: submission.jobId,
    credits: submission.credits,
    acceptedAt: submission.acceptedAt,
    pool,
    tier: 'pro',
    fairnessWeight: 1,
    prompt: request.prompt,
    params: rowParams(request),
  });
  expect(outcome.outcome).toBe('admitted');
  return submission;
}

/**
 * The reconciler runs as a Temporal schedule (here every second). Temporal is the source of truth: a projection that
 * missed a write, a workflow ended from outside, a submit whose workflow never started (it is started) and a reservation
 * whose job never started are all repaired.
 */
describe('the reconciler', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ env: { RECONCILE_INTERVAL_MS: '1000' }, ownDatabase: true });
  });
  afterAll(async () => {
    await stack?.close();
  });

  test('repairs a projection row that missed its terminal write', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const job = (await api.submit({ prompt: 'a write that goes missing' })).body;
    const done = await api.waitForTerminal(job.id);
    // As if the terminal write had never landed, and nothing had touched the row since.
    await stack.database.sql`
      update generations set status = 'running', status_rank = 1, video_url = null, completed_at = null,
        updated_at = now() - interval '1 hour'
      where id = ${job.id}`;
    expect((await api.get(job.id)).body.status).toBe('running');

    const repaired = await eventually(async () => {
      const row = (await api.get(job.id)).body;
      return row.status === 'succeeded' ? row : undefined;
    }, { what: 'the reconciler to repair the row' });
    expect(repaired.video_url).toBe(done.video_url);
  });

  test('ends the row and releases the credits of a workflow an operator terminated', async () => {
    const { apiKey, userId } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const job = (await api.submit({ prompt: 'stuck for good [hang]' })).body;
    await eventually(async () => ((await api.get(job.id)).body.status === 'running' ? true : undefined));
    await stack.client.workflow.getHandle(job.id).terminate('operator: backend wedged');
    await stack.database.sql`update generations set updated_at = now() - interval '1 hour' where id = ${job.id}`;

    const ended = await api.waitForTerminal(job.id);
    expect(ended).toMatchObject({ status: 'failed', error: { code: 'backend_unavailable' } });
    expect(await creditBalance(stack.database.db, userId)).toMatchObject({ reserved: 0, used: 0 });
    const [entries] = await stack.database.sql<{ n: number }[]>`
      select count(*)::int as n from credit_ledger where job_id = ${job.id} and kind = 'release'`;
    expect(entries.n).toBe(1);
  });

  test('ends a terminated workflow’s job through the ending a workflow runs itself: same credits, row, notification, webhook and metrics', async () => {
    const hooks = await startWebhookReceiver();
    try {
      // A tier of its own, so the duration metric's counts are this test's alone.
      const { apiKey } = await stack.createUser('enterprise');
      const api = apiClient(stack.apiUrl, apiKey);
      expect((await api.call('POST', '/v1/webhook-endpoints', { url: hooks.url })).status).toBe(201);
      const running = async (prompt: string) => {
        const { id } = (await api.submit({ prompt })).body as { id: string };
        await eventually(async () => ((await api.get(id)).body.status === 'running' ? true : undefined), { what: `${id} running` });
        return id;
      };
      const observed = async (status: string) =>
        (await endToEndTime.get()).values.find((v) => v.metricName === 'vg_end_to_end_seconds_count' && v.labels.tier === 'enterprise' && v.labels.status === status)?.value ?? 0;
      const [canceledBefore, failedBefore] = [await observed('canceled'), await observed('failed')];

      // Ended by its workflow: canceled by its user.
      const byWorkflow = await running('canceled: its workflow ends it [hang]');
      expect((await api.call('POST', `/v1/generations/${byWorkflow}/cancel`)).status).toBe(202);
      // Ended by the reconciler: an operator terminated its workflow, which will never end it.
      const byReconciler = await running('terminated: the reconciler ends it [hang]');
      await stack.client.workflow.getHandle(byReconciler).terminate('operator: backend wedged');
      await stack.database.sql`update generations set updated_at = now() - interval '1 hour' where id = ${byReconciler}`;
      expect(await api.waitForTerminal(byWorkflow)).toMatchObject({ status: 'canceled' });
      expect(await api.waitForTerminal(byReconciler)).toMatchObject({ status: 'failed', error: { code: 'backend_unavailable' } });

      /** What a job's ending leaves, its terminal status written as `ended`. */
      const endingOf = async (jobId: string, metricBefore: number) => {
        const [row] = await stack.database.sql<{ status: string; completed: boolean; error: boolean }[]>`
          select status, completed_at is not null as completed, error is not null as error from generations where id = ${jobId}`;
        const ended = (text: string) => text.replace(row.status, 'ended');
        const ledger = await stack.database.sql<{ kind: string }[]>`select kind from credit_ledger where job_id = ${jobId} order by kind`;
        const inbox = await stack.database.sql<{ event: string }[]>`select event from notifications where job_id = ${jobId}`;
        const deliveries = await stack.database.sql<{ event_type: string; status: string }[]>`
          select event_type, status from webhook_deliveries where job_id = ${jobId}`;
        const webhooks = hooks.received.map((r) => JSON.parse(r.raw) as { type: string; data: { id: string } }).filter((e) => e.data.id === jobId);
        return {
          row: { completed: row.completed, error: row.error },
          ledger: ledger.map((e) => e.kind),
          notifications: inbox.map((n) => ended(n.event)),
          deliveries: deliveries.map((d) => `${ended(d.event_type)} ${d.status}`),
          webhooks: webhooks.map((e) => ended(e.type)),
          durationsObserved: (await observed(row.status)) - metricBefore,
        };
      };
      await hooks.waitFor((received) => received.length >= 2);
      const workflowEnding = await settled(() => endingOf(byWorkflow, canceledBefore));
      expect(workflowEnding).toEqual({
        row: { completed: true, error: true },
        ledger: ['release', 'reserve'],
        notifications: ['generation.ended'],
        deliveries: ['generation.ended succeeded'],
        webhooks: ['generation.ended'],
        durationsObserved: 1,
      });
      expect(await endingOf(byReconciler, failedBefore)).toEqual(workflowEnding);
    } finally {
      await hooks.close();
    }
  });

  test('starts the workflow of a submit admitted by an API that died before starting it; a retry in time starts it instead', async () => {
    const { userId, apiKey } = await stack.createUser('pro');
    const before = await creditBalance(stack.database.db, userId);
    const admittedThenDied = (body: Record<string, unknown>, key: string) => admitWithoutStart(stack, userId, body, key);
    const api = apiClient(stack.apiUrl, apiKey);

    // Nobody retries: once quiet for two reconciler intervals, its workflow is started from what the row holds.
    const orphan = await admittedThenDied({ prompt: 'admitted, then the API died', duration_seconds: 3, metadata: { b: '2', a: '1' } }, 'died-1');
    // Another deployment's job on the same database is its reconciler's to start, not this one's.
    const elsewhere = await admitWithoutStart(stack, userId, { prompt: "another pool's job" }, 'died-elsewhere', 'gpu-elsewhere');
    expect((await creditBalance(stack.database.db, userId)).reserved).toBe(orphan.credits + elsewhere.credits);
    await stack.database.sql`update generations set updated_at = now() - interval '1 hour' where id in ${stack.database.sql([orphan.jobId, elsewhere.jobId])}`;
    expect((await api.waitForTerminal(orphan.jobId)).status).toBe('succeeded');
    await new Promise((r) => setTimeout(r, 3_000)); // three more passes
    expect((await api.get(elsewhere.jobId)).body.status).toBe('queued');
    await expect(stack.client.workflow.getHandle(elsewhere.jobId).describe()).rejects.toThrow(/not found/i);
    await stack.database.sql`delete from generations where id = ${elsewhere.jobId}`;
    await stack.database.db.transaction((tx) => undoReservation(tx, elsewhere.jobId));
    // The same input the API would have started it with: the request, the acceptance time, the admitted weight.
    const started = await stack.client.workflow.getHandle(orphan.jobId).fetchHistory();
    const [sealed] = started.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads ?? [];
    // Stored sealed (the payload codec): opened with the tests' key.
    const [input] = await testDataConverter().payloadCodecs![0].decode([sealed as never]);
    expect(JSON.parse(Buffer.from(input.data!).toString())).toMatchObject({
      jobId: orphan.jobId,
      request: orphan.request,
      acceptedAt: orphan.acceptedAt.toISOString(),
      settings: { fairnessWeight: 1, gpuTaskQueue: stack.config.dispatch.pool },
    });
    const [ledger] = await stack.database.sql<{ reserves: number; captures: number }[]>`
      select count(*) filter (where kind = 'reserve')::int as reserves, count(*) filter (where kind = 'capture')::int as captures
      from credit_ledger where job_id = ${orphan.jobId}`;
    expect(ledger).toEqual({ reserves: 1, captures: 1 });
    expect(await creditBalance(stack.database.db, userId)).toEqual({ available: before.available - orphan.credits, reserved: 0, used: before.used + orphan.credits });
    const afterOrphan = await creditBalance(stack.database.db, userId);

    // The client retries with the same key first: the replay finds the row no workflow has opened and starts the job.
    const body = { prompt: 'a retry after the API died', duration_seconds: 2 };
    const { jobId } = await admittedThenDied(body, 'died-2');
    const retried = await api.submit(body, 'died-2');
    expect(retried.status).toBe(202);
    expect(retried.headers.get('idempotent-replayed')).toBe('true');
    expect(retried.body.id).toBe(jobId);
    expect((await api.waitForTerminal(jobId)).status).toBe('succeeded');
    const balance = await creditBalance(stack.database.db, userId);
    expect(balance.reserved).toBe(0);
    expect(balance.used).toBeGreaterThan(afterOrphan.used);
  });

  test('a kept submit canceled before its workflow started is started and canceled, its credits released', async () => {
    const { userId, apiKey } = await stack.createUser('pro');
    const before = await creditBalance(stack.database.db, userId);
    const kept = await admitWithoutStart(stack, userId, { prompt: 'canceled before it ever started' }, 'kept-then-canceled');
    const api = apiClient(stack.apiUrl, apiKey);
    const cancel = await api.call('POST', `/v1/generations/${kept.jobId}/cancel`);
    expect([200, 202]).toContain(cancel.status);
    expect(await api.waitForTerminal(kept.jobId)).toMatchObject({ status: 'canceled', error: { code: 'canceled_by_user' } });
    await eventually(async () => ((await creditBalance(stack.database.db, userId)).reserved === 0 ? true : undefined), { what: 'the reservation to be released' });
    expect(await creditBalance(stack.database.db, userId)).toEqual(before);
  });

  test('undoes a reservation whose job never started', async () => {
    const { userId } = await stack.createUser('pro');
    const before = await creditBalance(stack.database.db, userId);
    await stack.database.db.transaction((tx) => reserveCredits(tx, userId, 'gen_never_started', 10));
    await stack.database.sql`update credit_ledger set created_at = now() - interval '1 hour' where job_id = 'gen_never_started'`;
    expect((await creditBalance(stack.database.db, userId)).reserved).toBe(10);

    await eventually(async () => ((await creditBalance(stack.database.db, userId)).reserved === 0 ? true : undefined), {
      what: 'the orphan reservation to be undone',
    });
    expect(await creditBalance(stack.database.db, userId)).toEqual(before);
  });
});
