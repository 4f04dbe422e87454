import type { GenerationEvent } from './event-hub';
import { QueuePositionPoller, QueuePositionWatch, type QueuePositionChange } from './queue-watch';

const event = (jobId: string, status: string): GenerationEvent => ({ id: 1, jobId, type: `generation.${status}`, payload: { status }, createdAt: new Date() });
type Positions = Map<string, { position: number; etaSeconds: number | null }>;

describe('the queue-position watch of one stream', () => {
  test('reports a position only when it changes, and wants no reads once nothing is queued', () => {
    const watch = new QueuePositionWatch();
    expect(watch.wantsPositions()).toBe(true);
    expect(watch.apply(new Map([['gen_a', { position: 2, etaSeconds: 10 }]]))).toEqual([{ jobId: 'gen_a', position: 2, etaSeconds: 10 }]);
    expect(watch.apply(new Map([['gen_a', { position: 2, etaSeconds: 10 }]]))).toEqual([]);
    expect(watch.apply(new Map([['gen_a', { position: 1, etaSeconds: 5 }]]))).toEqual([{ jobId: 'gen_a', position: 1, etaSeconds: 5 }]);

    watch.observe(event('gen_a', 'running'));
    expect(watch.apply(new Map())).toEqual([]);
    expect(watch.wantsPositions()).toBe(false);

    watch.observe(event('gen_b', 'queued'));
    expect(watch.wantsPositions()).toBe(true);
    expect(watch.apply(new Map([['gen_b', { position: 3, etaSeconds: null }]]))).toEqual([{ jobId: 'gen_b', position: 3, etaSeconds: null }]);
  });

  test('never shows a job queued after the feed showed it leaving the queue, and keeps to its own job', () => {
    const positions: Positions = new Map([
      ['gen_a', { position: 1, etaSeconds: 3 }],
      ['gen_b', { position: 2, etaSeconds: 6 }],
    ]);
    const watch = new QueuePositionWatch('gen_b');
    watch.observe(event('gen_b', 'running'));
    expect(watch.apply(positions)).toEqual([]);
    expect(new QueuePositionWatch('gen_a').apply(positions)).toEqual([{ jobId: 'gen_a', position: 1, etaSeconds: 3 }]);
  });
});

describe("the poller of a process's queue positions", () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());
  const settle = async () => {
    for (let i = 0; i < 5; i++) await Promise.resolve();
  };

  test("reads a user's positions once per interval for all of the user's streams, and gives each stream its changes", async () => {
    const reads: string[] = [];
    const positionsOf = async (userId: string): Promise<Positions> => {
      reads.push(userId);
      return new Map([[`gen_${userId}`, { position: reads.length, etaSeconds: null }]]);
    };
    const poller = new QueuePositionPoller(positionsOf, 1_000);
    const seen: QueuePositionChange[][] = [];
    const stops = Array.from({ length: 5 }, (_, i) => poller.watch('usr_1', new QueuePositionWatch(), (c) => (seen[i] ??= []).push(...c), () => true));
    stops.push(poller.watch('usr_2', new QueuePositionWatch(), () => undefined, () => true));
    await settle();
    expect(reads).toEqual(['usr_1', 'usr_2']);
    // The first read reached only the stream that opened first; the later ones get the next.
    await jest.advanceTimersByTimeAsync(1_000);
    expect(reads.filter((u) => u === 'usr_1')).toHaveLength(2);
    expect(seen.map((changes) => changes.length)).toEqual([2, 1, 1, 1, 1]);

    for (const stop of stops) stop();
    await jest.advanceTimersByTimeAsync(5_000);
    expect(reads).toHaveLength(4);
  });

  test('skips a stream whose client is behind, which then gets the positions of a later read', async () => {
    const poller = new QueuePositionPoller(async () => new Map([['gen_a', { position: 4, etaSeconds: 8 }]]), 1_000);
    let ready = false;
    const seen: QueuePositionChange[] = [];
    const stop = poller.watch('usr_1', new QueuePositionWatch(), (c) => seen.push(...c), () => ready);
    await settle();
    expect(seen).toEqual([]);
    ready = true;
    await jest.advanceTimersByTimeAsync(1_000);
    expect(seen).toEqual([{ jobId: 'gen_a', position: 4, etaSeconds: 8 }]);
    stop();
  });
});
