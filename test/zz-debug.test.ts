import { apiClient, eventually, startStack, type Stack } from './harness';
import { spawnWorker, type SpawnedProcess } from './processes';

describe('debug crash', () => {
  let stack: Stack;
  const dispatchers: SpawnedProcess[] = [];
  beforeAll(async () => {
    stack = await startStack({ env: { WORKER_ROLE: 'generation', HEARTBEAT_TIMEOUT_MS: '2000' }, knobs: { p50Ms: 8_000, p99Ms: 9_000 } });
  });
  afterAll(async () => {
    await Promise.all(dispatchers.map((d) => d.stop()));
    await stack?.close();
  });
  async function startDispatcher(name: string): Promise<SpawnedProcess> {
    const dispatcher = spawnWorker({ ...stack.env, WORKER_ROLE: 'gpu', LOG_LEVEL: 'debug' }, name);
    dispatchers.push(dispatcher);
    await dispatcher.waitForOutput(/worker started/, 60_000);
    return dispatcher;
  }
  test('x', async () => {
    const t0 = Date.now();
    const log = (...a: unknown[]) => console.log(Date.now() - t0, ...a);
    const first = await startDispatcher('dbg-a');
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const job = (await api.submit({ prompt: 'a long pan over mountains' })).body;
    await eventually(async () => ((await api.get(job.id)).body.status === 'running' ? true : undefined));
    log('running');
    first.kill('SIGKILL');
    await first.exited;
    log('killed');
    await startDispatcher('dbg-b');
    log('b started');
    for (let i = 0; i < 40; i++) {
      const leases = await stack.database.sql`select dispatcher_id, job_id, expires_at > now() as live from gpu_slot_leases where pool = ${stack.config.dispatch.pool}`;
      const d = await stack.client.workflow.getHandle(job.id).describe();
      const pa = (d.raw.pendingActivities ?? []).map((p) => ({ state: p.state, attempt: p.attempt, id: p.lastWorkerIdentity, hb: p.lastHeartbeatTime?.seconds?.toString() }));
      log(JSON.stringify(leases.map((l) => [String(l.dispatcher_id).slice(0, 12), l.job_id ? 'job' : '-', l.live])), JSON.stringify(pa), (await api.get(job.id)).body.status);
      if ((await api.get(job.id)).body.status === 'succeeded') break;
      await new Promise((r) => setTimeout(r, 500));
    }
  }, 120000);
});
