import os from 'node:os';
import { apiClient, eventually, startStack, type Stack } from './harness';
import { dispatcherProcesses } from './processes';

/**
 * GPU dispatchers run as real child processes; the generation worker stays in the test process. A dispatcher killed
 * mid-generation must hand the same backend job to another dispatcher after the heartbeat timeout — never a second one.
 */
describe('a GPU dispatcher that dies mid-generation', () => {
  let stack: Stack;
  const dispatchers = dispatcherProcesses(() => stack.env);

  beforeAll(async () => {
    stack = await startStack({ env: { WORKER_ROLE: 'generation', HEARTBEAT_TIMEOUT_MS: '2000' }, knobs: { p50Ms: 8_000, p99Ms: 9_000 } });
  });
  afterAll(async () => {
    await dispatchers.stopAll();
    await stack?.close();
  });
  const startDispatcher = (name: string) => dispatchers.start(name);

  test('the job resumes the same backend job on another dispatcher, and ends once', async () => {
    const first = await startDispatcher('dispatcher-a');
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const job = (await api.submit({ prompt: 'a long pan over mountains' })).body;

    const running = await eventually(async () => {
      const row = (await api.get(job.id)).body;
      return row.status === 'running' && row.backend_job_id ? row : undefined;
    });
    const [dispatcherA] = await stack.database.sql<{ dispatcher: string }[]>`select dispatcher from generations where id = ${job.id}`;
    expect(dispatcherA.dispatcher).toBe(`${first.pid}@${os.hostname()}`);

    first.kill('SIGKILL');
    await first.exited;
    const second = await startDispatcher('dispatcher-b');

    const done = await api.waitForTerminal(job.id, 60_000);
    expect(done).toMatchObject({ status: 'succeeded', attempt: 1, backend_job_id: running.backend_job_id });
    const backendJobs = stack.simulator.simulator.engine.list(`${job.id}:`);
    expect(backendJobs.map((j) => j.id)).toEqual([running.backend_job_id]);
    expect(second.output()).toMatch(/"resumed":true/);
    const [settled] = await stack.database.sql<{ n: number }[]>`
      select count(*)::int as n from credit_ledger where job_id = ${job.id} and kind in ('capture', 'release')`;
    expect(settled.n).toBe(1);
  });

  test('a dispatcher stopped with SIGTERM hands its job back at once; the next one resumes the same backend job', async () => {
    await dispatchers.stopAll(); // only the one we stop, then its successor, serve the GPU queue
    const leaving = await startDispatcher('dispatcher-leaving');
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const job = (await api.submit({ prompt: 'a slow dolly shot' })).body;
    const running = await eventually(async () => {
      const row = (await api.get(job.id)).body;
      return row.status === 'running' && row.backend_job_id ? row : undefined;
    });

    leaving.kill('SIGTERM');
    expect(await leaving.exited).toEqual({ code: 0, signal: null });
    expect(leaving.output()).toMatch(/worker stopped/);
    const next = await startDispatcher('dispatcher-next');

    const done = await api.waitForTerminal(job.id, 60_000);
    expect(done).toMatchObject({ status: 'succeeded', attempt: 1, backend_job_id: running.backend_job_id });
    expect(stack.simulator.simulator.engine.list(`${job.id}:`)).toHaveLength(1);
    expect(next.output()).toMatch(/"resumed":true/);
  });
});
