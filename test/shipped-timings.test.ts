import { loadConfig } from '../src/config';
import { apiClient, eventually, startStack, type Stack } from './harness';
import { dispatcherProcesses } from './processes';

/**
 * The lean run on the shipped heartbeat and poll settings (the other tests shorten them): a GPU activity heartbeats about
 * once every 40 s, so what must be fast cannot wait for a heartbeat's answer. A user's cancel reaches the running backend
 * job within 2 s, and frees its GPU slot; a dispatcher that dies mid-generation hands the same backend job to another
 * within 60 s.
 */
const shipped = loadConfig({ NODE_ENV: 'test' });
const SHIPPED_TIMINGS = {
  HEARTBEAT_TIMEOUT_MS: String(shipped.generation.heartbeatTimeoutMs),
  HEARTBEAT_THROTTLE_MS: String(shipped.worker.heartbeatThrottleMs),
  POLL_INTERVAL_MS: String(shipped.generation.pollIntervalMs),
};

describe('on the shipped heartbeat timings', () => {
  let stack: Stack;
  const dispatchers = dispatcherProcesses(() => stack.env);

  beforeAll(async () => {
    stack = await startStack({ env: { ...SHIPPED_TIMINGS, WORKER_ROLE: 'generation', GPU_SLOTS: '1' }, knobs: { p50Ms: 45_000, p99Ms: 46_000 } });
  });
  afterAll(async () => {
    await dispatchers.stopAll();
    await stack?.close();
  });
  const startDispatcher = (name: string) => dispatchers.start(name);

  test('a cancel reaches the running backend job within 2 s and frees its GPU slot', async () => {
    expect(shipped.generation.heartbeatTimeoutMs).toBeGreaterThanOrEqual(30_000); // what makes this test mean anything
    await startDispatcher('dispatcher-cancel');
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const job = (await api.submit({ prompt: 'a long crane shot over a harbour' })).body;
    await eventually(async () => ((await api.get(job.id)).body.status === 'running' ? true : undefined), { timeoutMs: 60_000 });
    const waiting = (await api.submit({ prompt: 'the next in line' })).body;

    const asked = Date.now();
    expect([200, 202]).toContain((await api.call('POST', `/v1/generations/${job.id}/cancel`)).status);
    await eventually(async () => (stack.simulator.simulator.engine.list(`${job.id}:`)[0]?.status === 'canceled' ? true : undefined), {
      timeoutMs: 2_000,
      intervalMs: 20,
      what: 'the backend job to be canceled within 2 s',
    });
    const reachedMs = Date.now() - asked;
    // The one slot is free again: the next job runs long before any heartbeat could have carried the cancel.
    await eventually(async () => (stack.simulator.simulator.engine.list(`${waiting.id}:`).length > 0 ? true : undefined), {
      timeoutMs: 10_000,
      what: 'the next job to take the freed slot',
    });
    expect(await api.waitForTerminal(job.id)).toMatchObject({ status: 'canceled', error: { code: 'canceled_by_user' } });
    console.log(`cancel reached the backend job in ${reachedMs} ms; the slot went to the next job ${Date.now() - asked} ms after the cancel`);
    await api.call('POST', `/v1/generations/${waiting.id}/cancel`);
    await api.waitForTerminal(waiting.id);
    await dispatchers.stopAll();
  });

  test('a dispatcher killed mid-generation: another resumes the same backend job within 60 s, and it succeeds once', async () => {
    // Longer than the heartbeat timeout, so the job cannot end before its attempt is given up.
    stack.setKnobs({ p50Ms: 75_000, p99Ms: 76_000 });
    const first = await startDispatcher('dispatcher-doomed');
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const job = (await api.submit({ prompt: 'a slow tracking shot through a forest' })).body;
    const running = await eventually(async () => {
      const row = (await api.get(job.id)).body;
      return row.status === 'running' && row.backend_job_id ? row : undefined;
    }, { timeoutMs: 60_000 });

    first.kill('SIGKILL');
    await first.exited;
    const killedAt = Date.now();
    const second = await startDispatcher('dispatcher-heir');
    await second.waitForOutput(/"resumed":true/, 70_000);
    const resumedMs = Date.now() - killedAt;
    expect(resumedMs).toBeLessThan(60_000);

    const done = await api.waitForTerminal(job.id, 60_000);
    expect(done).toMatchObject({ status: 'succeeded', attempt: 1, backend_job_id: running.backend_job_id });
    expect(stack.simulator.simulator.engine.list(`${job.id}:`).map((j) => j.id)).toEqual([running.backend_job_id]);
    const [settled] = await stack.database.sql<{ n: number }[]>`
      select count(*)::int as n from credit_ledger where job_id = ${job.id} and kind in ('capture', 'release')`;
    expect(settled.n).toBe(1);
    console.log(`the job resumed on another dispatcher ${resumedMs} ms after its first was killed`);
  });
});
