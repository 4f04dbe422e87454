import { randomBytes } from 'node:crypto';
import { eq } from 'drizzle-orm';
import { createUser } from '../api/auth';
import { endingWrite, type GenerationInput } from '../domain/generation';
import { createDatabase, type Database } from './client';
import { applyWrite, insertQueued, openRun } from './projection';
import { undoSubmission } from '../api/admission-store';
import { generations } from './schema';

/** The projection writer's guard against the run's real Postgres: what lands on a row, and what does not. */
describe('projection writes', () => {
  let database: Database;
  let userId: string;
  beforeAll(async () => {
    const url = process.env.TEST_DATABASE_URL;
    if (!url) throw new Error('run through jest (test/global-setup.ts)');
    database = createDatabase(url, { max: 4 });
    ({ user: { id: userId } } = await createUser(database.db, { name: 'projection', tier: 'pro', credits: 0 }));
  });
  afterAll(async () => {
    await database?.close();
  });

  const input = (): GenerationInput => ({
    jobId: `gen_proj_${randomBytes(6).toString('hex')}`,
    userId,
    tier: 'pro',
    acceptedAt: new Date().toISOString(),
    request: { prompt: 'a test', duration_seconds: 4, resolution: '720p', aspect_ratio: '16:9', seed: null, webhook_url: null, metadata: {} },
    settings: { gpuTaskQueue: 'gpu-test', fairnessWeight: 1, heartbeatTimeoutMs: 1000, maxAttempts: 3, retryBackoffMs: 10, maxQueueMs: 60_000, maxRunMs: 60_000, expectedRunMs: 1000 },
  });
  const row = async (jobId: string) => (await database.db.select().from(generations).where(eq(generations.id, jobId)))[0];
  const succeeded = (jobId: string, runOpenedAt: string) =>
    endingWrite({ jobId, runOpenedAt, status: 'succeeded', attempt: 1, backendJobId: 'bk_1', videoUrl: 'https://videos.test/1.mp4', error: null }, new Date().toISOString());

  test("a row whose running write was lost still takes the workflow's ending write", async () => {
    // The GPU activity's process died before its running write, and the backend's callback ended the job.
    const job = input();
    const runOpenedAt = new Date().toISOString();
    await openRun(database.db, job, runOpenedAt);
    expect((await row(job.jobId)).status).toBe('queued');

    expect(await applyWrite(database.db, succeeded(job.jobId, runOpenedAt))).toBe(true);
    const ended = await row(job.jobId);
    expect(ended.status).toBe('succeeded');
    expect(ended.videoUrl).toBe('https://videos.test/1.mp4');
    expect(ended.completedAt).not.toBeNull();
  });

  test('an ended row takes nothing more, a write never lowers a row, and writes of an older run do not land', async () => {
    const job = input();
    const firstRun = new Date(Date.now() - 60_000).toISOString();
    await openRun(database.db, job, firstRun);
    expect(await applyWrite(database.db, { jobId: job.jobId, runOpenedAt: firstRun, status: 'running', attempt: 1, progress: 0.5 })).toBe(true);
    expect(await applyWrite(database.db, { jobId: job.jobId, runOpenedAt: firstRun, status: 'running', attempt: 1, progress: 0.2 })).toBe(false);
    expect(await applyWrite(database.db, { jobId: job.jobId, runOpenedAt: firstRun, status: 'queued', attempt: 2, progress: 0 })).toBe(false);

    // An operator's reset opens a newer run: the older run's ending no longer lands.
    const secondRun = new Date().toISOString();
    expect(await openRun(database.db, job, secondRun)).toBe(true);
    expect(await applyWrite(database.db, succeeded(job.jobId, firstRun))).toBe(false);
    expect((await row(job.jobId)).status).toBe('queued');

    expect(await applyWrite(database.db, succeeded(job.jobId, secondRun))).toBe(true);
    const failed = { ...succeeded(job.jobId, secondRun), status: 'failed' as const, attempt: 2 };
    expect(await applyWrite(database.db, failed)).toBe(false);
    expect((await row(job.jobId)).status).toBe('succeeded');
  });

  test("a first run's write opens a row no run has opened (its job ended in the queue), and a later run's open reopens it", async () => {
    // A first run opens at its GPU slot; one canceled or timed out in the queue never got there: its ending is its first write.
    const job = input();
    await insertQueued(database.db, job);
    expect((await row(job.jobId)).runOpenedAt).toBeNull();
    const firstRun = new Date(Date.now() - 60_000).toISOString();
    const expired = { ...succeeded(job.jobId, firstRun), status: 'expired' as const, attempt: 1, videoUrl: null, backendJobId: null };
    expect(await applyWrite(database.db, expired)).toBe(true);
    expect(await row(job.jobId)).toMatchObject({ status: 'expired', runOpenedAt: new Date(firstRun) });
    // An operator's reset opens a newer run, which then owns the row; the first run's writes no longer land.
    const secondRun = new Date().toISOString();
    expect(await openRun(database.db, job, secondRun)).toBe(true);
    expect(await row(job.jobId)).toMatchObject({ status: 'queued', runOpenedAt: new Date(secondRun) });
    expect(await applyWrite(database.db, { jobId: job.jobId, runOpenedAt: firstRun, status: 'running', attempt: 1, progress: 0.5 })).toBe(false);
    expect(await applyWrite(database.db, succeeded(job.jobId, secondRun))).toBe(true);
  });

  test("a run opening after its submit was undone (the start looked failed, yet the workflow started) makes the row again", async () => {
    const job = input();
    await insertQueued(database.db, job);
    expect(await undoSubmission(database.db, job.jobId)).toBe(true);
    const runOpenedAt = new Date().toISOString();
    expect(await openRun(database.db, job, runOpenedAt)).toBe(true);
    const opened = await row(job.jobId);
    expect(opened).toMatchObject({ status: 'queued', prompt: 'a test' });
    expect(opened.runOpenedAt?.toISOString()).toBe(runOpenedAt);
    // An undo now finds the row opened by a run, and leaves it.
    expect(await undoSubmission(database.db, job.jobId)).toBe(false);
    expect(await openRun(database.db, job, runOpenedAt)).toBe(false);
  });
});
