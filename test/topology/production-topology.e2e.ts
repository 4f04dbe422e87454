import { randomBytes } from 'node:crypto';
import { Client, Connection } from '@temporalio/client';
import postgres from 'postgres';
import { readMigrations } from '../../src/db/migrate';
import { apiClient, eventually } from '../harness';
import { createUser, note, setting } from './topology-env';

/**
 * The production topology as one service: a Temporal server on Postgres with fairness on, two API processes and two
 * worker processes on one app database. Started by scripts/topology.ts (`npm run topology:test`), which passes where
 * everything is in TOPOLOGY_* variables; this file is not part of `npm test`.
 */
const apiUrls = setting('TOPOLOGY_API_URLS').split(',');
const workerIdentities = setting('TOPOLOGY_WORKER_IDENTITIES').split(',');
const namespace = setting('TOPOLOGY_TEMPORAL_NAMESPACE');
const VIDEO_URL = /^https:\/\/videos\.sim\.local\/.+\.mp4$/;

let connection: Connection;
let temporal: Client;
let appDb: postgres.Sql;
let temporalDb: postgres.Sql;

beforeAll(async () => {
  connection = await Connection.connect({ address: setting('TOPOLOGY_TEMPORAL_ADDRESS') });
  temporal = new Client({ connection, namespace });
  appDb = postgres(setting('TOPOLOGY_DATABASE_URL'), { max: 1, onnotice: () => {} });
  temporalDb = postgres(setting('TOPOLOGY_TEMPORAL_DATABASE_URL'), { max: 1, onnotice: () => {} });
});

afterAll(async () => {
  await connection?.close();
  await appDb?.end({ timeout: 5 });
  await temporalDb?.end({ timeout: 5 });
});

describe('the production topology works as one service', () => {
  const [api1Url, api2Url] = apiUrls;
  /** The ten jobs of the dispatch test, for the fairness test that follows it. */
  let dispatched: { userId: string; ids: string[] } | undefined;

  test('two APIs and two workers are up on one Temporal and one database', async () => {
    expect(apiUrls).toHaveLength(2);
    expect(workerIdentities).toHaveLength(2);
    for (const url of apiUrls) {
      const ready = await fetch(`${url}/readyz`);
      expect(ready.status).toBe(200);
    }
    // A user created through API #1 is known to API #2.
    const { apiKey } = await createUser(api1Url);
    const usage = await apiClient(api2Url, apiKey).call('GET', '/v1/usage');
    expect(usage.status).toBe(200);
  });

  test('the migrate step ran before the services: every migration recorded, the namespace retention set', async () => {
    const [{ n }] = await appDb<{ n: number }[]>`select count(*)::int as n from drizzle.__drizzle_migrations`;
    expect(n).toBe(readMigrations().length);
    const described = await connection.workflowService.describeNamespace({ namespace });
    const days = Number(described.config?.workflowExecutionRetentionTtl?.seconds?.toString()) / 86_400;
    expect(days).toBe(Number(setting('TOPOLOGY_TEMPORAL_RETENTION_DAYS')));
  });

  test('a job submitted through API #1 is read, listed and canceled through API #2', async () => {
    const { apiKey } = await createUser(api1Url);
    const api1 = apiClient(api1Url, apiKey);
    const api2 = apiClient(api2Url, apiKey);

    const submitted = await api1.submit({ prompt: 'a lighthouse that never finishes [hang]' });
    expect(submitted.status).toBe(202);
    const id = submitted.body.id as string;

    const read = await api2.get(id);
    expect(read.status).toBe(200);
    expect(read.body).toMatchObject({ id, prompt: 'a lighthouse that never finishes [hang]' });
    expect((await api2.list()).body.data.map((g: { id: string }) => g.id)).toEqual([id]);

    await eventually(async () => ((await api2.get(id)).body.status === 'running' ? true : undefined), { what: 'the job to run' });
    const canceled = await api2.call('POST', `/v1/generations/${id}/cancel`);
    expect([200, 202]).toContain(canceled.status);
    expect(await api1.waitForTerminal(id)).toMatchObject({ id, status: 'canceled' });
  });

  test('an idempotent replay through the other API returns the same job', async () => {
    const { apiKey } = await createUser(api1Url);
    const api1 = apiClient(api1Url, apiKey);
    const api2 = apiClient(api2Url, apiKey);
    const body = { prompt: 'a paper boat on a river', duration_seconds: 4 };
    const key = `order-${randomBytes(4).toString('hex')}`;

    const first = await api1.submit(body, key);
    const replay = await api2.submit(body, key);
    expect(first.status).toBe(202);
    expect(replay.status).toBe(202);
    expect(replay.body.id).toBe(first.body.id);
    expect(first.headers.get('idempotent-replayed')).toBeNull();
    expect(replay.headers.get('idempotent-replayed')).toBe('true');

    const done = await api2.waitForTerminal(first.body.id);
    expect(done).toMatchObject({ status: 'succeeded', video_url: expect.stringMatching(VIDEO_URL) });
    expect((await api1.submit(body, key)).body).toMatchObject({ id: first.body.id, status: 'succeeded' });
    expect((await api2.submit({ ...body, prompt: 'something else' }, key)).body.error.code).toBe('idempotency_key_reused');
    expect((await api1.list()).body.data).toHaveLength(1);
  });

  test('ten jobs through both APIs all succeed with a video URL, and both workers dispatch them', async () => {
    const { userId, apiKey } = await createUser(api1Url);
    const apis = [apiClient(api1Url, apiKey), apiClient(api2Url, apiKey)];
    const submitted = await Promise.all(
      Array.from({ length: 10 }, async (_, i) => {
        const res = await apis[i % 2].submit({ prompt: `a koi pond, shot ${i}`, duration_seconds: 2, resolution: '480p' });
        expect(res.status).toBe(202);
        return res.body.id as string;
      }),
    );
    const done = await Promise.all(submitted.map((id, i) => apis[(i + 1) % 2].waitForTerminal(id, 90_000)));
    for (const job of done) expect(job).toMatchObject({ status: 'succeeded', progress: 1, error: null, video_url: expect.stringMatching(VIDEO_URL) });
    dispatched = { userId, ids: submitted };

    // The projection names the GPU dispatcher that ran each job: both worker processes took some.
    const rows = await appDb<Array<{ dispatcher: string | null }>>`select dispatcher from generations where id = any(${submitted})`;
    const counts = new Map<string, number>();
    for (const { dispatcher } of rows) counts.set(String(dispatcher), (counts.get(String(dispatcher)) ?? 0) + 1);
    note(`GPU dispatchers of the ten jobs: ${[...counts].map(([d, n]) => `${d} ×${n}`).join(', ')}`);
    for (const identity of workerIdentities) expect([...counts.keys()].some((d) => d.startsWith(identity))).toBe(true);
  });

  test('fair dispatch is on: GPU tasks carry fairness keys, and the server keeps the gpu queue in its fair backlog, in one partition', async () => {
    expect(dispatched).toBeDefined();
    const { userId, ids } = dispatched!;

    // Each GPU activity was scheduled with the user as fairness key and the pro tier's weight (4 by default).
    for (const id of ids.slice(0, 3)) {
      const history = await temporal.workflow.getHandle(id).fetchHistory();
      const gpuTasks = (history.events ?? []).map((e) => e.activityTaskScheduledEventAttributes).filter((a) => a?.taskQueue?.name === 'gpu');
      expect(gpuTasks.length).toBeGreaterThanOrEqual(1);
      for (const task of gpuTasks) expect(task?.priority).toMatchObject({ fairnessKey: userId, fairnessWeight: 4 });
    }

    // matching.enableFairness (deploy/temporal/dynamicconfig.yaml) makes the matching service keep a queue's partitions
    // in the fair backlog's tables (task_queues_v2); without it they are in task_queues. A row's id is the 16-byte
    // namespace id, the partition's name, and one byte of task queue type (2: activity).
    const partitionsOf = async (table: 'task_queues' | 'task_queues_v2', queue: string, type: number) => {
      const rows = await temporalDb<Array<{ id: Buffer }>>`select task_queue_id as id from ${temporalDb(table)}`;
      const partitions = rows
        .filter(({ id }) => id[id.length - 1] === type)
        .map(({ id }) => id.subarray(16, id.length - 1).toString('utf8'))
        .filter((name) => name === queue || name.startsWith(`/_sys/${queue}/`));
      return [...new Set(partitions)].sort();
    };
    const fair = await eventually(async () => {
      const partitions = await partitionsOf('task_queues_v2', 'gpu', 2);
      return partitions.length > 0 ? partitions : undefined;
    }, { what: 'the gpu queue in task_queues_v2' });
    note(`gpu activity queue partitions in the fair backlog (task_queues_v2): ${fair.join(', ')}`);
    expect(await partitionsOf('task_queues', 'gpu', 2)).toEqual([]);
    // Fairness holds per partition: the gpu queue has one (a taskQueueName constraint in the dynamic config), while the
    // generation queue keeps the default four, which the workers poll. Each worker deployment version has a queue of its
    // own within that partition (`/_sys/gpu/<deployment>|<build id>#0`, base64), beside the unversioned one.
    expect(fair).toContain('gpu');
    for (const partition of fair.filter((p) => p !== 'gpu')) expect(partition).toMatch(/^\/_sys\/gpu\/[A-Za-z0-9+/=]+\|[A-Za-z0-9+/=]+#0$/);
    expect((await partitionsOf('task_queues_v2', 'generation', 1)).length).toBeGreaterThan(1);
  });
});
