import net from 'node:net';
import { startWebhookReceiver, type WebhookReceiver } from './notification-helpers';
import { apiClient, eventually, settled, startStack, testEnv, type Stack } from './harness';
import { spawnWorker, type SpawnedProcess } from './processes';

/**
 * The generation worker runs as a real child process, unchanged: the test holds a lock on the table the notify step is
 * about to write (the inbox, then the webhook deliveries), waits until the worker's write waits on it, and kills the
 * worker there (SIGKILL; the write it left waiting is ended with it, so it never lands). Another worker process then
 * finishes the job, and the user still sees exactly one notification and one webhook event. The GPU dispatcher stays in
 * the test process. No production code knows of the fault.
 */
describe('a worker that dies around the notify step', () => {
  let stack: Stack;
  let hooks: WebhookReceiver;
  const workers: SpawnedProcess[] = [];
  let metricsPortHolder: net.Server | undefined;

  beforeAll(async () => {
    // Something else on the workers' default metrics port must not matter: a test's worker binds no fixed port.
    metricsPortHolder = await holdPort(9464);
    stack = await startStack({ env: { WORKER_ROLE: 'gpu' } });
    hooks = await startWebhookReceiver();
  });
  afterAll(async () => {
    metricsPortHolder?.close();
    await Promise.all(workers.map((w) => w.stop()));
    await hooks?.close();
    await stack?.close();
  });

  async function startGenerationWorker(): Promise<SpawnedProcess> {
    const { config } = stack;
    const worker = spawnWorker(
      {
        NODE_ENV: 'test',
        LOG_LEVEL: 'info',
        WORKER_ROLE: 'generation',
        TEMPORAL_ADDRESS: config.temporal.address,
        DATABASE_URL: testEnv().databaseUrl,
        GENERATION_TASK_QUEUE: config.worker.generationTaskQueue,
        GPU_TASK_QUEUE: config.worker.gpuTaskQueue,
        PUBLIC_URL: config.api.publicUrl,
        BACKEND_URL: config.backend.url,
        WEBHOOK_ALLOWED_HOSTS: '127.0.0.0/8',
        WEBHOOK_RETRY_SCALE: String(config.notifications.webhookRetryScale),
      },
      `crash-notify-worker-${workers.length + 1}`,
    );
    workers.push(worker);
    await worker.waitForOutput(/worker started/);
    return worker;
  }

  async function inboxRows(jobId: string) {
    return stack.database.sql<{ id: string; event: string }[]>`select id, event from notifications where job_id = ${jobId}`;
  }

  /**
   * Holds a SHARE lock on `table` in a transaction of the test's own: reads go on, the first write to it waits. Returns
   * the server process of that write once it waits, and a way to let go.
   */
  async function holdWritesTo(table: 'notifications' | 'webhook_deliveries') {
    const holder = await stack.database.sql.reserve();
    await holder`begin`;
    await holder.unsafe(`lock table ${table} in share mode`);
    return {
      waitingWrite: () =>
        eventually(
          async () => {
            const [waiting] = await stack.database.sql<{ pid: number; query: string }[]>`
              select l.pid, a.query from pg_locks l join pg_stat_activity a on a.pid = l.pid
              where l.locktype = 'relation' and not l.granted
                and l.database = (select oid from pg_database where datname = current_database())
                and l.relation = ${table}::regclass`;
            return waiting;
          },
          { what: `a write to ${table} waiting for the lock`, timeoutMs: 60_000 },
        ),
      async release() {
        await holder`rollback`;
        holder.release();
      },
    };
  }

  /** Runs `start`, then kills the worker while its write to `table` waits, ends that write with it, and lets go of the table. */
  async function killWorkerWhileWriting<T>(worker: SpawnedProcess, table: 'notifications' | 'webhook_deliveries', start: () => Promise<T>): Promise<T> {
    const hold = await holdWritesTo(table);
    try {
      const started = await start();
      const waiting = await hold.waitingWrite();
      // Built by drizzle (quoted) or written as statement text (indented, unquoted): the insert into that table.
      expect(waiting.query).toMatch(new RegExp(`^\\s*insert into "?${table}"?\\s`));
      worker.kill('SIGKILL');
      expect(await worker.exited).toEqual({ code: null, signal: 'SIGKILL' });
      // Postgres would still carry out a dead client's waiting statement once the lock is free: end it with its client.
      await stack.database.sql`select pg_terminate_backend(pid, 10000) from pg_stat_activity where pid = ${waiting.pid}`;
      expect(await stack.database.sql`select 1 from pg_stat_activity where pid = ${waiting.pid}`).toHaveLength(0);
      return started;
    } finally {
      await hold.release();
    }
  }

  async function runCrashScenario(point: 'before_inbox' | 'after_inbox', api: ReturnType<typeof apiClient>, worker: SpawnedProcess) {
    const job = await killWorkerWhileWriting(worker, point === 'before_inbox' ? 'notifications' : 'webhook_deliveries', () =>
      api.submit({ prompt: 'a glass of water tipping over' }),
    );
    expect(job.status).toBe(202);

    // The worker died after the result was recorded: the projection is terminal whatever the inbox holds.
    expect((await api.get(job.body.id)).body.status).toBe('succeeded');
    expect(await inboxRows(job.body.id)).toHaveLength(point === 'before_inbox' ? 0 : 1);

    const next = await startGenerationWorker();
    const deliveries = () => hooks.received.filter((r) => JSON.parse(r.raw).data.id === job.body.id);
    await eventually(async () => (deliveries().length > 0 ? true : undefined), { what: `the webhook for ${job.body.id}`, timeoutMs: 60_000 });
    // Exactly once, counted after a settle window: a second notification or webhook from the retried step would be here by then.
    const seen = await settled(async () => {
      const inbox = await api.call('GET', '/v1/notifications');
      return {
        rows: await inboxRows(job.body.id),
        inbox: inbox.body.data.filter((n: { generation_id: string }) => n.generation_id === job.body.id).length,
        webhooks: deliveries().length,
      };
    });
    expect(seen).toEqual({ rows: [{ id: expect.stringMatching(/^ntf_/), event: 'generation.succeeded' }], inbox: 1, webhooks: 1 });
    return next;
  }

  test('killed before the inbox write, then after it but before the webhooks: each job has one notification and one webhook', async () => {
    const first = await startGenerationWorker();
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    expect((await api.call('POST', '/v1/webhook-endpoints', { url: hooks.url })).status).toBe(201);

    const second = await runCrashScenario('before_inbox', api, first);
    // Killed again, this time after the inbox write but before the webhooks: the retried step adds nothing.
    await runCrashScenario('after_inbox', api, second);
  });
});

/** Listens on `port` if it is free (if it is taken, something else already holds it, which is the point). */
function holdPort(port: number): Promise<net.Server | undefined> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(undefined));
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}
