import { openEventStream, type EventStreamClient } from './notification-helpers';
import { waitForGpuTasks } from './fairness-helpers';
import { apiClient, startStack, type Stack } from './harness';

/** Queue positions are computed on read, not stored: the stream polls them and sends each change as it happens. */
describe('queue positions over SSE', () => {
  let stack: Stack;
  const streams: EventStreamClient[] = [];

  beforeAll(async () => {
    stack = await startStack({ env: { GPU_SLOTS: '1', SSE_QUEUE_POSITION_MS: '100' }, knobs: { p50Ms: 800, p99Ms: 1000 } });
  });
  afterAll(async () => {
    for (const s of streams) s.close();
    await stack?.close();
  });

  test("a queued job's stream shows its position falling as the jobs ahead leave, and none once it runs", async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const jobs: string[] = [];
    // One user's jobs reach the GPU queue in the order their workflows schedule the GPU task, which for submits made
    // milliseconds apart need not be the order of submission; each is in the queue before the next is submitted, so
    // the jobs ahead are the ones submitted earlier.
    for (const prompt of ['first in line', 'second in line', 'third in line', 'fourth in line']) {
      const id = (await api.submit({ prompt })).body.id as string;
      await waitForGpuTasks(stack, [id]);
      jobs.push(id);
    }
    const last = jobs[jobs.length - 1];
    const stream = await openEventStream(`${stack.apiUrl}/v1/generations/${last}/events`, apiKey);
    streams.push(stream);
    const events = await stream.waitFor((seen) => seen.some((e) => e.event === 'generation.succeeded'), 60_000);

    // What the client saw, in order: "3", "2", "1" for positions, event names for the feed.
    const seen = events.map((e) => (e.event === 'generation.queue_position' ? String(e.data.queue_position) : e.event));
    const positions = events.filter((e) => e.event === 'generation.queue_position');
    expect(positions.every((e) => e.id === undefined && e.data.generation_id === last)).toBe(true);
    const shown = positions.map((e) => e.data.queue_position as number);
    // An ETA change alone is sent too (same position), so positions fall but need not fall at every event.
    const falling = shown.length >= 2 && shown[0] > shown[shown.length - 1] && shown.every((p, i) => i === 0 || p <= shown[i - 1]);
    const noneAfterRunning = seen.indexOf('generation.running') > seen.lastIndexOf(String(shown[shown.length - 1]));
    expect({ falling, noneAfterRunning, seen }).toEqual({ falling: true, noneAfterRunning: true, seen });
  });
});
