import { creditBalance, reserveCredits } from '../src/credits/ledger';
import { apiClient, eventually, startStack, type Stack } from './harness';

/**
 * The reconciler runs as a Temporal schedule (here every second). Temporal is the source of truth: a projection that
 * missed a write, a workflow ended from outside, and a reservation whose job never started are all repaired.
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
