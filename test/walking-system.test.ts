import { apiClient, eventually, startStack, type Stack } from './harness';

describe.each(['async', 'sync'] as const)('a prompt goes in and a video URL comes out, on real Temporal and Postgres (%s backend)', (mode) => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ env: { BACKEND_MODE: mode } });
  });
  afterAll(async () => {
    await stack?.close();
  });

  test('a prompt submitted over HTTP ends succeeded with its video URL', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);

    const submitted = await api.submit({ prompt: 'a red fox running through snow, cinematic' });
    expect(submitted.status).toBe(202);
    expect(submitted.headers.get('location')).toBe(`/v1/generations/${submitted.body.id}`);
    expect(submitted.body).toMatchObject({ status: 'queued', prompt: 'a red fox running through snow, cinematic', duration_seconds: 5 });

    const done = await api.waitForTerminal(submitted.body.id);
    expect(done).toMatchObject({ status: 'succeeded', progress: 1, attempt: 1, error: null });
    expect(done.video_url).toMatch(/^https:\/\/videos\.sim\.local\/.+\.mp4$/);
    expect(done.backend_job_id).toEqual(expect.any(String)); // in sync mode, known once the call returns
    expect(Date.parse(done.started_at)).toBeGreaterThanOrEqual(Date.parse(done.created_at));
    expect(Date.parse(done.completed_at)).toBeGreaterThanOrEqual(Date.parse(done.started_at));
    expect(stack.simulator.simulator.engine.list(`${submitted.body.id}:`)).toEqual([
      expect.objectContaining({ id: done.backend_job_id, status: 'succeeded', video_url: done.video_url }),
    ]);

    const listed = await api.list();
    expect(listed.body.data.map((g: { id: string }) => g.id)).toEqual([submitted.body.id]);
  });

  /** A job submitted while the simulator drops every callback: the job as it ended, and the simulator's callback counts. */
  async function withEveryCallbackLost() {
    const { apiKey } = await stack.createUser('free');
    const api = apiClient(stack.apiUrl, apiKey);
    stack.setKnobs({ callbackLossRate: 1 });
    stack.simulator.simulator.resetStats();
    try {
      const submitted = await api.submit({ prompt: 'a lighthouse in a storm' });
      const done = await api.waitForTerminal(submitted.body.id);
      return { done, stats: stack.simulator.simulator.stats() };
    } finally {
      stack.setKnobs({ callbackLossRate: 0 });
    }
  }

  if (mode === 'async') {
    test('a dropped callback is recovered by polling', async () => {
      const { done, stats } = await withEveryCallbackLost();
      expect(done.status).toBe('succeeded');
      expect(done.video_url).toEqual(expect.any(String));
      expect(stats.callbacks_sent).toBe(0);
      expect(stats.callbacks_dropped).toBeGreaterThanOrEqual(2); // started and succeeded both lost
    });
  } else {
    test('no callback is asked for: with every callback lost, the job ends by the call’s own answer', async () => {
      const { done, stats } = await withEveryCallbackLost();
      expect(done).toMatchObject({ status: 'succeeded', video_url: expect.any(String) });
      // Nothing was even attempted: the synchronous call carries no callback address.
      expect(stats).toMatchObject({ callbacks_sent: 0, callbacks_dropped: 0, callbacks_failed: 0 });
    });
  }

  test('a second submit with the same Idempotency-Key returns the same job, and Temporal holds one workflow', async () => {
    const { apiKey, userId } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const body = { prompt: 'a paper boat on a river', duration_seconds: 4 };

    const first = await api.submit(body, 'order-42');
    const second = await api.submit(body, 'order-42');
    expect(first.status).toBe(202);
    expect(second.status).toBe(202);
    expect(second.body.id).toBe(first.body.id);
    expect(first.headers.get('idempotent-replayed')).toBeNull();
    expect(second.headers.get('idempotent-replayed')).toBe('true');

    await api.waitForTerminal(first.body.id);
    const third = await api.submit(body, 'order-42');
    expect(third.body).toMatchObject({ id: first.body.id, status: 'succeeded' });

    const workflows = await eventually(
      async () => {
        const found = [];
        for await (const wf of stack.client.workflow.list({ query: `VgUserId = "${userId}"` })) found.push(wf);
        return found.length > 0 && found.every((wf) => wf.status.name === 'COMPLETED') ? found : undefined;
      },
      { what: 'the workflow to be visible' },
    );
    expect(workflows.map((wf) => wf.workflowId)).toEqual([first.body.id]);
    const backendJobs = stack.simulator.simulator.engine.list(`${first.body.id}:`);
    expect(backendJobs).toHaveLength(1);

    const changed = await api.submit({ ...body, prompt: 'something else' }, 'order-42');
    expect(changed.status).toBe(422);
    expect(changed.body.error.code).toBe('idempotency_key_reused');
  });

  test('bad input gets a 400 naming the field; no key gets a 401', async () => {
    const { apiKey } = await stack.createUser('free');
    const api = apiClient(stack.apiUrl, apiKey);
    const bad = await api.submit({ prompt: 'ok', duration_seconds: 'ten' });
    expect(bad.status).toBe(400);
    expect(bad.body.error).toMatchObject({ code: 'invalid_request', message: expect.stringContaining('duration_seconds') });
    const malformed = await api.submit('{"prompt": ');
    expect(malformed.status).toBe(400);
    expect(malformed.body.error.code).toBe('invalid_json');
    const anonymous = await apiClient(stack.apiUrl, 'vg_not-a-key').submit({ prompt: 'hello' });
    expect(anonymous.status).toBe(401);
    expect(anonymous.body.error.code).toBe('unauthorized');
  });
});

describe('the synchronous backend', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ env: { BACKEND_MODE: 'sync', MAX_ATTEMPTS: '2' } });
  });
  afterAll(async () => {
    await stack?.close();
  });

  test('retries a transient failure as a new attempt and cancels a running job', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const flaky = (await api.submit({ prompt: 'flaky [fail:transient]' })).body;
    const hanging = (await api.submit({ prompt: 'endless [hang]' })).body;
    expect(await api.waitForTerminal(flaky.id)).toMatchObject({ status: 'failed', attempt: 2 });
    expect(stack.simulator.simulator.engine.list(`${flaky.id}:`)).toHaveLength(2);

    await eventually(async () => ((await api.get(hanging.id)).body.status === 'running' ? true : undefined));
    expect((await api.call('POST', `/v1/generations/${hanging.id}/cancel`)).status).toBe(202);
    expect(await api.waitForTerminal(hanging.id)).toMatchObject({ status: 'canceled' });
  });
});
