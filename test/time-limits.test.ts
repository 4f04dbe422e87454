import { apiClient, eventually, startStack, type Stack } from './harness';

/**
 * Per-request time limits (`max_queue_seconds`, `max_run_seconds`), within the server's: a job that found no GPU slot
 * in time ends `expired` (queue_timeout), never charged and notified like any ending; one that ran too long fails with
 * generation_timeout; a limit above the server's is a 400 that names it.
 */
describe('per-request time limits', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({ env: { GPU_SLOTS: '1', MAX_QUEUE_MS: '600000' } });
  });
  afterAll(async () => {
    await stack?.close();
  });

  async function ledgerKinds(jobId: string): Promise<string[]> {
    const rows = await stack.database.sql<{ kind: string }[]>`select kind from credit_ledger where job_id = ${jobId} order by id`;
    return rows.map((r) => r.kind);
  }

  test('a job whose own queue limit passes expires: queue_timeout, never charged, notified, listed by status', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const hog = (await api.submit({ prompt: 'holds the only GPU [hang]' })).body;
    await eventually(async () => ((await api.get(hog.id)).body.status === 'running' ? true : undefined));

    const impatient = await api.submit({ prompt: 'will not wait long', max_queue_seconds: 1 });
    expect(impatient.status).toBe(202);
    const patient = (await api.submit({ prompt: 'waits as long as the server lets it' })).body;
    const ended = await api.waitForTerminal(impatient.body.id, 30_000);
    expect(ended).toMatchObject({ status: 'expired', error: { code: 'queue_timeout', retryable: true }, backend_job_id: null });
    // The server's own limit (10 min) still holds the other one in the queue.
    expect((await api.get(patient.id)).body.status).toBe('queued');
    expect(stack.simulator.simulator.engine.list(`${impatient.body.id}:`)).toHaveLength(0);

    await eventually(async () => ((await ledgerKinds(impatient.body.id)).length === 2 ? true : undefined), { what: 'the reservation to be released' });
    expect(await ledgerKinds(impatient.body.id)).toEqual(['reserve', 'release']);
    const notified = await eventually(async () => {
      const list = (await api.call('GET', '/v1/notifications')).body as { data: Array<{ generation_id?: string; event: string; data?: { generation_id: string } }> };
      return list.data.find((n) => n.data?.generation_id === impatient.body.id);
    }, { what: 'the expired notification' });
    expect(notified.event).toBe('generation.expired');
    const listed = (await api.call('GET', '/v1/generations?status=expired')).body as { data: Array<{ id: string }> };
    expect(listed.data.map((g) => g.id)).toEqual([impatient.body.id]);

    for (const id of [patient.id, hog.id]) await api.call('POST', `/v1/generations/${id}/cancel`);
    for (const id of [patient.id, hog.id]) expect((await api.waitForTerminal(id)).status).toBe('canceled');
  });

  test('a job that runs past its own run limit fails with generation_timeout and its backend job is canceled', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const job = (await api.submit({ prompt: 'never ends on its own [hang]', max_run_seconds: 2 })).body;
    const ended = await api.waitForTerminal(job.id, 30_000);
    expect(ended).toMatchObject({ status: 'failed', error: { code: 'generation_timeout' } });
    await eventually(async () => (stack.simulator.simulator.engine.list(`${job.id}:`)[0]?.status === 'canceled' ? true : undefined), {
      what: 'the backend job to be canceled',
    });
    await eventually(async () => ((await ledgerKinds(job.id)).length === 2 ? true : undefined), { what: 'the reservation to be released' });
    expect(await ledgerKinds(job.id)).toEqual(['reserve', 'release']);
  });

  test("limits above the server's, or not positive integers, are a 400 that names the field", async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const tooLong = await api.call('POST', '/v1/generations', { prompt: 'x', max_queue_seconds: 601 });
    expect(tooLong.status).toBe(400);
    expect(tooLong.body.error).toMatchObject({ code: 'invalid_request', message: expect.stringContaining('max_queue_seconds: at most 600') });
    const runTooLong = await api.call('POST', '/v1/generations', { prompt: 'x', max_run_seconds: 10 ** 6 });
    expect(runTooLong.status).toBe(400);
    expect(runTooLong.body.error.message).toMatch(/^max_run_seconds: at most \d+/);
    for (const bad of [0, -1, 1.5, '10']) {
      const res = await api.call('POST', '/v1/generations', { prompt: 'x', max_queue_seconds: bad });
      expect([bad, res.status, res.body.error?.code]).toEqual([bad, 400, 'invalid_request']);
    }
    const estimate = await api.call('POST', '/v1/generations/estimate', { prompt: 'x', max_queue_seconds: 601 });
    expect(estimate.status).toBe(400);
  });
});
