import { admitSubmission } from '../src/api/admission-store';
import { createGenerationBody } from '../src/api/generation-schemas';
import { describeSubmission } from '../src/api/submit';
import { creditBalance, reserveCredits } from '../src/credits/ledger';
import { rowParams } from '../src/db/projection';
import { apiClient, eventually, startStack, type Stack } from './harness';

/**
 * The reconciler runs as a Temporal schedule (here every second). Temporal is the source of truth: a projection that
 * missed a write, a workflow ended from outside, a submit whose workflow never started and a reservation whose job never
 * started are all repaired.
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

  test('undoes a submit admitted by an API that died before starting its workflow; a retry in time starts it instead', async () => {
    const { userId, apiKey } = await stack.createUser('pro');
    const before = await creditBalance(stack.database.db, userId);
    /** What an API that dies between admission and the workflow start leaves behind: row, key, credits, queue entry. */
    const admittedThenDied = async (body: Record<string, unknown>, key: string) => {
      const parsed = createGenerationBody.parse(body);
      const request = { ...parsed, metadata: Object.fromEntries(Object.entries(parsed.metadata).sort()) };
      const submission = describeSubmission({ id: userId, name: 'test', tier: 'pro', createdAt: new Date() }, request, key);
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
        pool: stack.config.dispatch.pool,
        tier: 'pro',
        fairnessWeight: 1,
        prompt: request.prompt,
        params: rowParams(request),
      });
      expect(outcome.outcome).toBe('admitted');
      return submission.jobId;
    };

    // Nobody retries: once quiet for two reconciler intervals, it is undone as if it had never been submitted.
    const orphan = await admittedThenDied({ prompt: 'admitted, then the API died' }, 'died-1');
    expect((await creditBalance(stack.database.db, userId)).reserved).toBeGreaterThan(0);
    await stack.database.sql`update generations set updated_at = now() - interval '1 hour' where id = ${orphan}`;
    await eventually(async () => ((await stack.database.sql`select 1 from generations where id = ${orphan}`).length === 0 ? true : undefined), {
      what: 'the never-started submit to be undone',
    });
    expect(await stack.database.sql`select 1 from idempotency_keys where job_id = ${orphan}`).toHaveLength(0);
    expect(await stack.database.sql`select 1 from gpu_queue_entries where job_id = ${orphan}`).toHaveLength(0);
    expect(await creditBalance(stack.database.db, userId)).toEqual(before);

    // The client retries with the same key first: the replay finds the row no workflow has opened and starts the job.
    const body = { prompt: 'a retry after the API died', duration_seconds: 2 };
    const jobId = await admittedThenDied(body, 'died-2');
    const api = apiClient(stack.apiUrl, apiKey);
    const retried = await api.submit(body, 'died-2');
    expect(retried.status).toBe(202);
    expect(retried.headers.get('idempotent-replayed')).toBe('true');
    expect(retried.body.id).toBe(jobId);
    expect((await api.waitForTerminal(jobId)).status).toBe('succeeded');
    const balance = await creditBalance(stack.database.db, userId);
    expect(balance.reserved).toBe(0);
    expect(balance.used).toBeGreaterThan(before.used);
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
