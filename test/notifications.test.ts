import { notificationIdFor } from '../src/notifications/events';
import { recordNotification } from '../src/notifications/inbox';
import { apiClient, eventually, startStack, type Stack } from './harness';

type Api = ReturnType<typeof apiClient>;

describe('the in-app inbox', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack();
  });
  afterAll(async () => {
    await stack?.close();
  });

  const inbox = async (api: Api, query = '') => (await api.call('GET', `/v1/notifications${query}`)).body;
  const notifiedOf = (api: Api, jobId: string) =>
    eventually(async () => (await inbox(api)).data.find((n: { generation_id: string }) => n.generation_id === jobId), { what: `the notification of ${jobId}` });

  test('every finished job, succeeded or failed, leaves exactly one notification; read marks stick', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const ok = await api.submit({ prompt: 'a dragon made of origami' });
    await api.waitForTerminal(ok.body.id);
    const succeeded = await notifiedOf(api, ok.body.id);
    stack.setKnobs({ permanentFailureRate: 1 });
    let failedJob;
    try {
      failedJob = await api.submit({ prompt: 'a prompt the backend refuses' });
      await api.waitForTerminal(failedJob.body.id);
    } finally {
      stack.setKnobs({ permanentFailureRate: 0 });
    }
    const failed = await notifiedOf(api, failedJob.body.id);

    expect(succeeded).toMatchObject({
      object: 'notification',
      event: 'generation.succeeded',
      title: 'Your video is ready',
      read: false,
      read_at: null,
      data: { generation_id: ok.body.id, status: 'succeeded', video_url: expect.any(String) },
    });
    expect(failed).toMatchObject({ event: 'generation.failed', title: 'Your video could not be generated', data: { status: 'failed', error: { code: expect.any(String) } } });
    const all = await inbox(api);
    expect(all.data.map((n: { id: string }) => n.id)).toEqual([failed.id, succeeded.id]);
    expect(all).toMatchObject({ has_more: false, next_cursor: null });

    const page1 = await inbox(api, '?limit=1');
    expect(page1.data.map((n: { id: string }) => n.id)).toEqual([failed.id]);
    expect(page1.has_more).toBe(true);
    const page2 = await inbox(api, `?limit=1&cursor=${page1.next_cursor}`);
    expect(page2.data.map((n: { id: string }) => n.id)).toEqual([succeeded.id]);
    expect(page2.has_more).toBe(false);

    const read = await api.call('POST', `/v1/notifications/${succeeded.id}/read`);
    expect(read.status).toBe(200);
    expect(read.body).toMatchObject({ id: succeeded.id, read: true, read_at: expect.any(String) });
    const readAgain = await api.call('POST', `/v1/notifications/${succeeded.id}/read`);
    expect(readAgain.body.read_at).toBe(read.body.read_at);
    expect((await inbox(api, '?unread=true')).data.map((n: { id: string }) => n.id)).toEqual([failed.id]);
    expect((await inbox(api, '?unread=false')).data).toHaveLength(2);
  });

  test('writing the same notification again changes nothing (unique on job and event)', async () => {
    const { apiKey, userId } = await stack.createUser('free');
    const api = apiClient(stack.apiUrl, apiKey);
    const job = await api.submit({ prompt: 'a quiet library' });
    await api.waitForTerminal(job.body.id);
    const original = await notifiedOf(api, job.body.id);
    const again = await recordNotification(stack.database.db, {
      id: notificationIdFor(job.body.id, 'generation.succeeded'),
      userId,
      jobId: job.body.id,
      event: 'generation.succeeded',
      title: 'a duplicate',
      message: 'a duplicate',
      data: {},
    });
    expect(again).toBe(false);
    const entries = (await inbox(api)).data;
    expect(entries).toHaveLength(1);
    expect(entries[0]).toEqual(original);
  });

  test("notifications are private: another user's are not found, bad input is a 400", async () => {
    const owner = apiClient(stack.apiUrl, (await stack.createUser('pro')).apiKey);
    const stranger = apiClient(stack.apiUrl, (await stack.createUser('pro')).apiKey);
    const job = await owner.submit({ prompt: 'a secret garden' });
    const mine = await notifiedOf(owner, job.body.id);
    expect((await stranger.call('POST', `/v1/notifications/${mine.id}/read`)).status).toBe(404);
    expect((await inbox(stranger)).data).toEqual([]);
    expect((await stranger.call('GET', '/v1/notifications?limit=0')).status).toBe(400);
    expect((await stranger.call('GET', '/v1/notifications?cursor=nonsense')).body.error.code).toBe('invalid_cursor');
    expect((await apiClient(stack.apiUrl, 'vg_nobody').call('GET', '/v1/notifications')).status).toBe(401);
  });
});
