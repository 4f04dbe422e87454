import net from 'node:net';
import { startWebhookReceiver, type WebhookReceiver } from '../src/notifications/test-helpers';
import { apiClient, eventually, settled, startStack, testEnv, type Stack } from './harness';
import { spawnWorker, type SpawnedProcess } from './processes';

/**
 * The generation worker runs as a real child process with the test-only fault FAULT_CRASH_IN_NOTIFY: on its first try,
 * the notify step exits the process at the point the prompt names. Another worker process then finishes the job, and the
 * user still sees exactly one notification and one webhook event. The GPU dispatcher stays in the test process.
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
        FAULT_CRASH_IN_NOTIFY: 'true',
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

  async function runCrashScenario(point: 'before_inbox' | 'after_inbox', api: ReturnType<typeof apiClient>, worker: SpawnedProcess) {
    const job = await api.submit({ prompt: `a glass of water tipping over [crash:${point}]` });
    expect(job.status).toBe(202);
    expect(await worker.exited).toEqual({ code: 1, signal: null });

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
