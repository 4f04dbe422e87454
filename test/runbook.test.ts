import { TEST_PAYLOAD_KEYS } from './payload-keys';
import { loadConfig } from '../src/config';
import { buildIdOf } from '../src/worker-deployment';
import { creditBalance } from '../src/credits/ledger';
import { apiClient, eventually, settled, startStack, type Stack } from './harness';
import { runbookEnv, runRunbook } from './runbook-commands';

/**
 * Runs the command blocks of docs/runbook.md, exactly as written, with the real `temporal` binary against the run's dev
 * server, and checks what each does to the projection, the credits and the notifications.
 */
describe('the operator runbook', () => {
  let stack: Stack;
  let env: Record<string, string>;
  const run = (name: string, jobId = '', more: Record<string, string> = {}) => runRunbook(name, env, jobId, more);

  beforeAll(async () => {
    // Versioned, as in production, with a deployment of its own on the run's shared server.
    const versioning = { WORKER_VERSIONING: 'true', WORKER_DEPLOYMENT_NAME: `runbook-${Date.now().toString(36)}` };
    stack = await startStack({ env: { MAX_ATTEMPTS: '1', EXPECTED_RUN_MS: '300', RECONCILE_INTERVAL_MS: '3600000', ...versioning }, ownDatabase: true });
    env = runbookEnv(stack);
  });
  afterAll(async () => {
    await stack?.close();
  });

  async function ledger(jobId: string) {
    const [row] = await stack.database.sql<{ reserves: number; captures: number; releases: number; notifications: number }[]>`
      select (select count(*)::int from credit_ledger where job_id = ${jobId} and kind = 'reserve') as reserves,
             (select count(*)::int from credit_ledger where job_id = ${jobId} and kind = 'capture') as captures,
             (select count(*)::int from credit_ledger where job_id = ${jobId} and kind = 'release') as releases,
             (select count(*)::int from notifications where job_id = ${jobId}) as notifications`;
    return row;
  }

  test('find, inspect and cancel a stuck job', async () => {
    const { apiKey, userId } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const job = (await api.submit({ prompt: 'wedged render [hang]' })).body;

    await eventually(async () => ((await run('stuck-api')).includes(job.id) ? true : undefined), { what: 'the stuck listing' });
    await eventually(async () => ((await run('list-running')).includes(job.id) ? true : undefined), { what: 'Temporal visibility' });
    expect(await run('describe', job.id)).toMatch(/Running/i);
    expect(await run('query', job.id)).toMatch(new RegExp(`"jobId":\\s*"${job.id}"[\\s\\S]*"status":\\s*"running"`));

    await run('cancel', job.id);
    expect(await api.waitForTerminal(job.id)).toMatchObject({ status: 'canceled', error: { code: 'canceled_by_user' } });
    await eventually(async () => ((await ledger(job.id)).notifications === 1 ? true : undefined));
    // Counted once a duplicate (a retried ending step) would have arrived, not at the first arrival.
    expect(await settled(() => ledger(job.id))).toEqual({ reserves: 1, captures: 0, releases: 1, notifications: 1 });
    expect((await creditBalance(stack.database.db, userId)).reserved).toBe(0);
  });

  test('terminate, then force a reconcile: the row ends failed, credits are released and the user is told once', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const job = (await api.submit({ prompt: 'a workflow to terminate [hang]' })).body;
    await eventually(async () => ((await api.get(job.id)).body.status === 'running' ? true : undefined));

    await run('terminate', job.id);
    // Stand in for time passing: the reconciler only looks at rows quiet for two intervals. Until the terminated run's GPU
    // activity notices it is gone, its progress writes may still touch the row, so age it and trigger until it is repaired.
    const ended = await eventually(async () => {
      await stack.database.sql`update generations set updated_at = now() - interval '3 hours' where id = ${job.id}`;
      await run('reconcile');
      const row = (await api.get(job.id)).body;
      return row.status === 'failed' ? row : undefined;
    }, { intervalMs: 1000, what: 'the reconciler to end the terminated job' });
    expect(ended).toMatchObject({ status: 'failed', error: { code: 'backend_unavailable' } });
    await eventually(async () => ((await ledger(job.id)).notifications === 1 ? true : undefined));
    // Counted once a duplicate (a retried ending step) would have arrived, not at the first arrival.
    expect(await settled(() => ledger(job.id))).toEqual({ reserves: 1, captures: 0, releases: 1, notifications: 1 });
  });

  test('prune now: the schedule runs retention, which deletes a job past its window', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const job = (await api.submit({ prompt: 'a job from last month' })).body;
    await api.waitForTerminal(job.id);
    await stack.database.sql`update generations set completed_at = now() - interval '31 days' where id = ${job.id}`;
    await run('prune');
    await eventually(async () => ((await api.get(job.id)).status === 404 ? true : undefined), { what: 'retention to delete the job' });
  });

  test('retry a job that failed during a backend outage: same id, charged once, the user hears both endings', async () => {
    const { apiKey, userId } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    stack.setKnobs({ transientFailureRate: 1 });
    let job;
    try {
      job = (await api.submit({ prompt: 'rendered during an outage' })).body;
      expect(await api.waitForTerminal(job.id)).toMatchObject({ status: 'failed', error: { retryable: true } });
    } finally {
      stack.setKnobs({ transientFailureRate: 0 });
    }
    await eventually(async () => ((await ledger(job.id)).notifications === 1 ? true : undefined));

    await run('retry', job.id);
    const retried = await eventually(async () => {
      const row = (await api.get(job.id)).body;
      return row.status === 'succeeded' ? row : undefined;
    }, { what: 'the retried job to succeed' });
    expect(retried).toMatchObject({ attempt: 1, error: null, video_url: expect.any(String) });
    await eventually(async () => ((await ledger(job.id)).notifications === 2 ? true : undefined));
    expect(await settled(() => ledger(job.id))).toEqual({ reserves: 2, captures: 1, releases: 1, notifications: 2 });
    expect(await creditBalance(stack.database.db, userId)).toMatchObject({ reserved: 0, used: 10 });
  });

  test("revoke a user's leaked keys and issue a new one: the old key gets 401 at once, the new one works", async () => {
    const { apiKey, userId } = await stack.createUser('pro');
    const usage = (key: string) => apiClient(stack.apiUrl, key).call('GET', '/v1/usage');
    expect((await usage(apiKey)).status).toBe(200);
    const listed = JSON.parse(await run('list-keys', '', { USER_ID: userId }));
    expect(listed.data).toEqual([expect.objectContaining({ prefix: apiKey.slice(0, 8), status: 'active' })]);
    expect(JSON.stringify(listed)).not.toContain(apiKey);

    await run('revoke-keys', '', { USER_ID: userId });
    expect((await usage(apiKey)).status).toBe(401);
    const issued = JSON.parse(await run('issue-key', '', { USER_ID: userId }));
    expect((await usage(issued.api_key)).status).toBe(200);
  });

  test("the rollout's commands read and set the deployment's versions (the whole upgrade: npm run topology:test)", async () => {
    const { versioning } = stack.config.worker;
    const version = { WORKER_DEPLOYMENT_NAME: versioning.deploymentName, OLD_BUILD_ID: buildIdOf(versioning), NEW_BUILD_ID: buildIdOf(versioning) };
    expect(await run('deployment-describe', '', version)).toMatch(new RegExp(`CurrentVersionBuildID\\s+${version.NEW_BUILD_ID.replace(/\./g, '\\.')}`));
    const described = await run('describe-new-version', '', version);
    for (const queue of [stack.config.worker.generationTaskQueue, stack.config.worker.gpuTaskQueue]) expect(described).toContain(queue);
    await run('set-current-version', '', version);
    expect(await run('old-version-open-jobs', '', version)).toMatch(/\d+/);
  });

  test('the new backend secret the runbook makes is one a production process accepts', async () => {
    const [secret, previous] = [(await run('new-backend-secret')).trim(), (await run('new-backend-secret')).trim()];
    expect(secret).not.toBe(previous);
    const config = loadConfig({ NODE_ENV: 'production', BACKEND_WEBHOOK_SECRET: secret, BACKEND_WEBHOOK_SECRET_PREVIOUS: previous, ADMIN_API_KEY: stack.adminApiKey, PAYLOAD_KEYS: TEST_PAYLOAD_KEYS });
    expect(config.backend.webhookSecrets).toEqual([secret, previous]);
  });
});
