import { apiClient, eventually, startStack, type Stack } from './harness';

/** What the job's history holds of its GPU activity: the events after its scheduling that name it, by type. */
async function gpuActivityEvents(stack: Stack, jobId: string): Promise<string[]> {
  expect(await stack.client.workflow.getHandle(jobId).result()).toMatchObject({ status: 'succeeded' });
  const events = (await stack.client.workflow.getHandle(jobId).fetchHistory()).events ?? [];
  const scheduled = events.find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'runGeneration');
  expect(scheduled).toBeDefined();
  const id = scheduled!.eventId!.toString();
  return events
    .filter((e) => Object.entries(e).some(([key, value]) => key.startsWith('activityTask') && key !== 'activityTaskScheduledEventAttributes' && (value as { scheduledEventId?: { toString(): string } } | null)?.scheduledEventId?.toString() === id))
    .map((e) => Object.keys(e).find((key) => key.startsWith('activityTask'))!.replace(/EventAttributes$/, ''));
}

/** The GPU slot leases of this stack's pool still holding the job. */
async function leasesHolding(stack: Stack, jobId: string): Promise<number> {
  const [{ n }] = await stack.database.sql<Array<{ n: number }>>`select count(*)::int as n from gpu_slot_leases where job_id = ${jobId}`;
  return n;
}

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
      // Found by its own poll, the GPU activity reports the success: the run ended on its word.
      expect(await gpuActivityEvents(stack, done.id)).toEqual(['activityTaskStarted', 'activityTaskCompleted']);
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

describe('a success heard by callback', () => {
  let stack: Stack;
  beforeAll(async () => {
    // Polls a minute apart: within a job's few seconds only the callback can tell the GPU activity the job ended.
    stack = await startStack({ env: { POLL_INTERVAL_MS: '60000' } });
  });
  afterAll(async () => {
    await stack?.close();
  });

  test('ends the run at once: its GPU activity frees the slot and sends no report', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    // One after another, more jobs than the pool has slots (GPU_SLOTS 4): a slot left taken would stop the fifth.
    for (let i = 0; i < 5; i++) {
      const done = await api.waitForTerminal((await api.submit({ prompt: `a kite over the dunes, take ${i}` })).body.id);
      expect(done).toMatchObject({ status: 'succeeded', video_url: expect.any(String) });
      // Neither canceled by the run nor reported: the history holds its scheduling only.
      expect(await gpuActivityEvents(stack, done.id)).toEqual([]);
      await eventually(async () => ((await leasesHolding(stack, done.id)) === 0 ? true : undefined), { what: 'the GPU slot to be freed' });
    }
  });

  test('a run started today is lean by its input: no patch marker, no TemporalChangeVersion upsert', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const done = await api.waitForTerminal((await api.submit({ prompt: 'a lighthouse at dusk' })).body.id);
    expect(done).toMatchObject({ status: 'succeeded' });
    // The ending's local activity writes the row before its workflow task records the marker: read the closed run.
    const handle = stack.client.workflow.getHandle(done.id);
    await handle.result();
    const events = (await handle.fetchHistory()).events ?? [];
    const markers = events.flatMap((e) => (e.markerRecordedEventAttributes ? [e.markerRecordedEventAttributes.markerName] : []));
    const upserted = events.flatMap((e) => Object.keys(e.upsertWorkflowSearchAttributesEventAttributes?.searchAttributes?.indexedFields ?? {}));
    // The ending's local activity is the run's one marker; its search attributes are the service's own.
    expect(markers).toEqual(['core_local_activity']);
    expect(upserted).not.toContain('TemporalChangeVersion');
    expect(upserted).toEqual(expect.arrayContaining(['VgStatus', 'VgBackendJobId']));
  });
});
