import { freePort } from '../scripts/lib/ports';
import { apiClient, eventually, startStack, type Stack } from './harness';
import { spawnTsProcess, spawnWorker, type SpawnedProcess } from './processes';

/** Metrics on the API and on a worker process, JSON logs that carry job ids and request ids and never API keys. */
describe('operability', () => {
  let stack: Stack;
  let dispatcher: SpawnedProcess;
  let metricsPort: number;
  beforeAll(async () => {
    stack = await startStack({ env: { WORKER_ROLE: 'generation' } });
    metricsPort = await freePort();
    dispatcher = spawnWorker({ ...stack.env, WORKER_ROLE: 'gpu', LOG_LEVEL: 'info', METRICS_PORT: String(metricsPort) }, 'observed-dispatcher');
    await dispatcher.waitForOutput(/worker started/, 60_000);
  });
  afterAll(async () => {
    await dispatcher?.stop();
    await stack?.close();
  });

  test('the API and the worker expose Prometheus metrics labelled by tier and reason, never by user', async () => {
    const { apiKey, userId } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const job = (await api.submit({ prompt: 'a metric-worthy sunset' })).body;
    expect((await api.submit({ prompt: '' })).status).toBe(400);
    await api.waitForTerminal(job.id);

    const apiMetrics = await (await fetch(`${stack.apiUrl}/metrics`)).text();
    expect(apiMetrics).toMatch(/vg_submissions_total\{tier="pro",outcome="accepted"\} [1-9]/);
    expect(apiMetrics).toMatch(/vg_submission_refusals_total\{tier="pro",reason="invalid_request"\} [1-9]/);
    expect(apiMetrics).toMatch(/vg_backend_callbacks_total\{outcome="signalled"\} [1-9]/);
    expect(apiMetrics).toMatch(/vg_backlog_jobs\{tier="free"\} \d+/);
    expect(apiMetrics).toMatch(/vg_gpu_capacity \d+/);
    expect(apiMetrics).toMatch(/vg_http_request_duration_seconds_count\{method="POST",route="\/v1\/generations\/",status="2xx"\} [1-9]/);
    expect(apiMetrics).not.toContain(userId);

    const workerMetrics = await eventually(async () => {
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      return /vg_time_in_queue_seconds_count\{tier="pro"\} [1-9]/.test(text) ? text : undefined;
    });
    expect(workerMetrics).not.toContain(userId);
  });

  test('log lines about a job carry its job, workflow and backend ids; requests carry a request id; keys never appear', async () => {
    const { apiKey } = await stack.createUser('pro');
    const port = await freePort();
    const apiProcess = spawnTsProcess({ name: 'observed-api', script: 'src/api/main.ts', env: { ...stack.env, PORT: String(port), LOG_LEVEL: 'info', ADMIN_API_KEY: stack.adminApiKey } });
    try {
      await apiProcess.waitForOutput(/api listening/, 60_000);
      const api = apiClient(`http://127.0.0.1:${port}`, apiKey);
      const submitted = await api.call('POST', '/v1/generations', { prompt: 'a logged lighthouse' }, { 'x-request-id': 'req-test-42' });
      expect(submitted.headers.get('x-request-id')).toBe('req-test-42');
      const done = await api.waitForTerminal(submitted.body.id);

      const apiLines = apiProcess.output().trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
      expect(apiLines).toContainEqual(expect.objectContaining({ requestId: 'req-test-42', method: 'POST', status: 202 }));
      // Every worker line that mentions the job or its backend job, found by text (not by the field under test).
      const workerLines = await eventually(async () => {
        const lines = dispatcher.output().trim().split('\n');
        const mine = lines.filter((line) => line.includes(done.id) || line.includes(done.backend_job_id)).map((line) => JSON.parse(line) as Record<string, unknown>);
        return mine.some((l) => l.msg === 'backend job ended') ? mine : undefined;
      });
      for (const line of workerLines) expect(line).toMatchObject({ jobId: done.id, workflowId: done.id });
      expect(workerLines.filter((l) => l.backendJobId === done.backend_job_id).length).toBeGreaterThanOrEqual(2);
      for (const output of [apiProcess.output(), dispatcher.output()]) {
        expect(output).not.toContain(apiKey);
        expect(output).not.toContain(stack.adminApiKey);
      }
    } finally {
      await apiProcess.stop();
    }
  });
});
