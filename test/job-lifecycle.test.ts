import { generationInput, startGeneration } from '../src/contracts/generation-start';
import { describeSubmission } from '../src/api/submit';
import { signWebhook } from '../src/lib/webhook-signature';
import { apiClient, eventually, settled, startStack, type Stack } from './harness';

/** Counts of what must happen exactly once per job: ledger settlements and in-app notifications. */
async function onceCounts(stack: Stack, jobId: string) {
  const { sql } = stack.database;
  const [ledger] = await sql`
    select count(*) filter (where kind = 'reserve')::int as reserves,
           count(*) filter (where kind = 'capture')::int as captures,
           count(*) filter (where kind = 'release')::int as releases
    from credit_ledger where job_id = ${jobId}`;
  const [inbox] = await sql`select count(*)::int as notifications from notifications where job_id = ${jobId}`;
  return { ...ledger, notifications: inbox.notifications } as { reserves: number; captures: number; releases: number; notifications: number };
}

describe('every job reaches one right ending', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ env: { MAX_ATTEMPTS: '3', EXPECTED_RUN_MS: '1500', MAX_RUN_MS: '3000' } });
  });
  afterAll(async () => {
    await stack?.close();
  });

  test('ten concurrent submits with one Idempotency-Key start one generation, charged and notified once', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const body = { prompt: 'a double-clicked submit', duration_seconds: 2 };
    const answers = await Promise.all(Array.from({ length: 10 }, () => api.submit(body, 'click-1')));
    expect(answers.map((a) => a.status)).toEqual(Array(10).fill(202));
    expect(new Set(answers.map((a) => a.body.id)).size).toBe(1);
    expect(answers.filter((a) => a.headers.get('idempotent-replayed') !== 'true')).toHaveLength(1);
    const jobId = answers[0].body.id;
    expect((await api.waitForTerminal(jobId)).status).toBe('succeeded');
    expect(stack.simulator.simulator.engine.list(`${jobId}:`)).toHaveLength(1);
    await eventually(async () => ((await onceCounts(stack, jobId)).notifications > 0 ? true : undefined));
    expect(await settled(() => onceCounts(stack, jobId))).toEqual({ reserves: 1, captures: 1, releases: 0, notifications: 1 });
  });

  test('duplicated and reordered callbacks change nothing; a late one is ignored; a forged one is refused', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    stack.setKnobs({ callbackDuplicateRate: 1, callbackReorderRate: 1 });
    let jobId: string;
    try {
      jobId = (await api.submit({ prompt: 'callbacks twice and out of order' })).body.id;
      const done = await api.waitForTerminal(jobId);
      expect(done).toMatchObject({ status: 'succeeded', attempt: 1 });
    } finally {
      stack.setKnobs({ callbackDuplicateRate: 0, callbackReorderRate: 0 });
    }
    await eventually(async () => (stack.simulator.simulator.stats().callbacks_duplicated >= 2 ? true : undefined));
    const before = (await api.get(jobId)).body;

    // Late: a signed "failed" callback after the job succeeded.
    const [backendJob] = stack.simulator.simulator.engine.list(`${jobId}:`);
    const late = JSON.stringify({
      event_id: 'evt_late',
      type: 'job.failed',
      sequence: 9,
      job: { ...backendJob, status: 'failed', error: { code: 'internal_error', message: 'late', retryable: true } },
    });
    const lateAnswer = await fetch(`${stack.apiUrl}/internal/backend/callbacks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...signWebhook(stack.config.backend.webhookSecret, 'evt_late', late) },
      body: late,
    });
    expect(lateAnswer.status).toBe(200);

    // Forged: signed with the wrong secret.
    const forged = await fetch(`${stack.apiUrl}/internal/backend/callbacks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...signWebhook('whsec_Zm9yZ2VkLXNlY3JldC1mb3JnZWQ=', 'evt_forged', late) },
      body: late,
    });
    expect(forged.status).toBe(401);
    expect(((await forged.json()) as { error: { code: string } }).error.code).toBe('invalid_signature');

    expect((await api.get(jobId)).body).toEqual(before);
    await eventually(async () => ((await onceCounts(stack, jobId)).notifications > 0 ? true : undefined));
    expect(await settled(() => onceCounts(stack, jobId))).toEqual({ reserves: 1, captures: 1, releases: 0, notifications: 1 });
  });

  test('a transient backend failure retries as a new attempt; a permanent one fails at once', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const transient = await api.submit({ prompt: 'flaky GPU [fail:transient]' });
    const permanent = await api.submit({ prompt: 'not allowed [fail:permanent]' });

    const t = await api.waitForTerminal(transient.body.id);
    expect(t).toMatchObject({ status: 'failed', attempt: 3, error: { retryable: true } });
    expect(['backend_internal_error', 'gpu_unavailable']).toContain(t.error.code);
    expect(stack.simulator.simulator.engine.list(`${transient.body.id}:`)).toHaveLength(3);

    const p = await api.waitForTerminal(permanent.body.id);
    expect(p).toMatchObject({ status: 'failed', attempt: 1, error: { retryable: false } });
    expect(['content_policy_violation', 'invalid_input']).toContain(p.error.code);
    for (const id of [transient.body.id, permanent.body.id]) {
      await eventually(async () => ((await onceCounts(stack, id)).releases > 0 ? true : undefined));
    }
    const counts = await settled(() => Promise.all([transient.body.id, permanent.body.id].map((id) => onceCounts(stack, id))));
    for (const count of counts) expect(count).toMatchObject({ reserves: 1, captures: 0, releases: 1 });
  });

  test('a backend that lost a running job (a restart that kept nothing) gets a new attempt; the job is charged once', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    // [slow] runs ten times the median (~3 s), as long as this stack's MAX_RUN_MS for a default request: a request four
    // times as large has four times the deadline, so neither attempt meets it.
    const { id } = (await api.submit({ prompt: 'a long take of a glacier [slow]', duration_seconds: 10, resolution: '1080p' })).body;
    await eventually(async () => ((await api.get(id)).body.status === 'running' ? true : undefined), { what: 'the job running' });
    expect(stack.simulator.simulator.engine.loseJobs()).toBeGreaterThanOrEqual(1);

    // Its next poll gets a 404 for the job: not the user's invalid input, the backend's loss.
    expect(await api.waitForTerminal(id)).toMatchObject({ status: 'succeeded', attempt: 2, error: null });
    expect(stack.simulator.simulator.engine.list(`${id}:`)).toHaveLength(1); // the second attempt's job; the first is gone
    await eventually(async () => ((await onceCounts(stack, id)).notifications > 0 ? true : undefined));
    expect(await settled(() => onceCounts(stack, id))).toEqual({ reserves: 1, captures: 1, releases: 0, notifications: 1 });
  });

  test('cancel works while running, twice harmlessly, and a finished job answers 409', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const job = (await api.submit({ prompt: 'never ends on its own [hang]' })).body;
    await eventually(async () => ((await api.get(job.id)).body.status === 'running' ? true : undefined));

    const first = await api.call('POST', `/v1/generations/${job.id}/cancel`);
    expect([200, 202]).toContain(first.status);
    const ended = await api.waitForTerminal(job.id);
    expect(ended).toMatchObject({ status: 'canceled', error: { code: 'canceled_by_user' } });
    await eventually(async () => (stack.simulator.simulator.engine.list(`${job.id}:`)[0]?.status === 'canceled' ? true : undefined), {
      what: 'the backend job to be aborted',
    });
    const second = await api.call('POST', `/v1/generations/${job.id}/cancel`);
    expect(second.status).toBe(200);
    expect(second.body.status).toBe('canceled');

    const finished = (await api.submit({ prompt: 'quick one' })).body;
    await api.waitForTerminal(finished.id);
    const late = await api.call('POST', `/v1/generations/${finished.id}/cancel`);
    expect(late.status).toBe(409);
    expect(late.body.error.code).toBe('generation_already_finished');
    await eventually(async () => ((await onceCounts(stack, job.id)).releases > 0 ? true : undefined));
    expect(await settled(() => onceCounts(stack, job.id))).toMatchObject({ reserves: 1, captures: 0, releases: 1 });
  });

  test('a stuck running job is listed, then ended by its deadline with one last poll, a backend cancel and a typed timeout', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const job = (await api.submit({ prompt: 'a render that hangs [hang]' })).body;
    const stuck = await eventually(
      async () => {
        const res = await fetch(`${stack.apiUrl}/admin/generations/stuck`, { headers: { authorization: `Bearer ${stack.adminApiKey}` } });
        const body = (await res.json()) as { data: Array<Record<string, unknown>> };
        return body.data.find((s) => s.id === job.id);
      },
      { what: 'the job to be listed as stuck' },
    );
    expect(stuck).toMatchObject({ attempt: 1, backend_job_id: expect.any(String), dispatcher: expect.any(String) });

    const ended = await api.waitForTerminal(job.id);
    expect(ended).toMatchObject({ status: 'failed', error: { code: 'generation_timeout', retryable: true } });
    expect(stack.simulator.simulator.engine.list(`${job.id}:`).map((j) => j.status)).toEqual(['canceled']);
    await eventually(async () => ((await onceCounts(stack, job.id)).notifications > 0 ? true : undefined));
    expect(await settled(() => onceCounts(stack, job.id))).toEqual({ reserves: 1, captures: 0, releases: 1, notifications: 1 });
  });

  test('a job that cannot be paid for is refused at submit; usage shows balance, reserved and used', async () => {
    const { apiKey, userId } = await stack.createUser('free');
    const api = apiClient(stack.apiUrl, apiKey);
    await stack.database.sql`update credit_accounts set available = 12 where user_id = ${userId}`;
    const ok = await api.submit({ prompt: 'ten credits', duration_seconds: 5, resolution: '720p' });
    expect(ok.status).toBe(202);
    const refused = await api.submit({ prompt: 'ten more', duration_seconds: 5, resolution: '720p' });
    expect(refused.status).toBe(402);
    expect(refused.body.error).toMatchObject({ code: 'insufficient_credits', details: { needed: 10, available: 2 } });
    expect((await api.call('GET', '/v1/usage')).body.credits).toEqual({ available: 2, reserved: 10, used: 0 });
    await api.waitForTerminal(ok.body.id);
    expect((await api.call('GET', '/v1/usage')).body.credits).toEqual({ available: 2, reserved: 0, used: 10 });
  });

  test('a job whose workflow started without its admission reserves its price itself, and is charged once', async () => {
    // No row, key or reservation: the submit was undone (an earlier build undid a start that only looked failed), yet
    // Temporal had started the workflow.
    const { apiKey, userId } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const before = (await api.call('GET', '/v1/usage')).body.credits;
    const request = { prompt: 'started after all', duration_seconds: 2, resolution: '720p' as const, aspect_ratio: '16:9' as const, seed: null, webhook_url: null, metadata: {} };
    const submission = describeSubmission(stack.config, { id: userId, name: 'test', tier: 'pro', createdAt: new Date() }, request, 'timed-out-1');
    const { jobId, request: req, acceptedAt } = submission;
    await startGeneration(stack.client, stack.config, generationInput(stack.config, { jobId, userId, tier: 'pro', request: req, acceptedAt }));

    expect((await api.waitForTerminal(submission.jobId)).status).toBe('succeeded');
    await eventually(async () => ((await onceCounts(stack, submission.jobId)).notifications > 0 ? true : undefined));
    expect(await settled(() => onceCounts(stack, submission.jobId))).toEqual({ reserves: 1, captures: 1, releases: 0, notifications: 1 });
    expect((await api.call('GET', '/v1/usage')).body.credits).toEqual({ ...before, available: before.available - submission.credits, used: submission.credits });
  });

  test('such a job whose user has no credits left fails with insufficient_credits at its GPU slot, before anything is submitted', async () => {
    // A first run opens when its GPU activity takes a slot: there it finds no reservation and none to be made.
    const { apiKey, userId } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    await stack.database.sql`update credit_accounts set available = 0 where user_id = ${userId}`;
    const request = { prompt: 'started without credits', duration_seconds: 2, resolution: '720p' as const, aspect_ratio: '16:9' as const, seed: null, webhook_url: null, metadata: {} };
    const submission = describeSubmission(stack.config, { id: userId, name: 'test', tier: 'pro', createdAt: new Date() }, request, 'no-credits-1');
    const { jobId, request: req, acceptedAt } = submission;
    await startGeneration(stack.client, stack.config, generationInput(stack.config, { jobId, userId, tier: 'pro', request: req, acceptedAt }));

    expect(await api.waitForTerminal(jobId)).toMatchObject({ status: 'failed', error: { code: 'insufficient_credits', retryable: false }, backend_job_id: null });
    expect(stack.simulator.simulator.engine.list(`${jobId}:`)).toHaveLength(0);
    expect(await settled(() => onceCounts(stack, jobId))).toMatchObject({ reserves: 0, captures: 0, releases: 0 });
    expect((await api.call('GET', '/v1/usage')).body.credits).toEqual({ available: 0, reserved: 0, used: 0 });
  });
});

describe('deadlines in the queue', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ env: { GPU_SLOTS: '1', MAX_QUEUE_MS: '1500' } });
  });
  afterAll(async () => {
    await stack?.close();
  });

  test('a job that waits for a slot past its queue deadline expires (queue_timeout); a queued cancel leaves the backlog', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const hog = (await api.submit({ prompt: 'holds the only GPU [hang]' })).body;
    await eventually(async () => ((await api.get(hog.id)).body.status === 'running' ? true : undefined));
    const waiting = (await api.submit({ prompt: 'waits for the GPU' })).body;
    const canceledInQueue = (await api.submit({ prompt: 'canceled while queued' })).body;
    const cancel = await api.call('POST', `/v1/generations/${canceledInQueue.id}/cancel`);
    expect(cancel.status).toBe(202);

    expect(await api.waitForTerminal(canceledInQueue.id)).toMatchObject({ status: 'canceled', attempt: 1, backend_job_id: null });
    expect(await api.waitForTerminal(waiting.id)).toMatchObject({ status: 'expired', error: { code: 'queue_timeout', retryable: true }, backend_job_id: null });
    expect(stack.simulator.simulator.engine.list(`${waiting.id}:`)).toHaveLength(0);
    expect(stack.simulator.simulator.engine.list(`${canceledInQueue.id}:`)).toHaveLength(0);
    await api.call('POST', `/v1/generations/${hog.id}/cancel`);
    expect((await api.waitForTerminal(hog.id)).status).toBe('canceled');
  });
});
