import type { GenerationEvent } from './event-hub';
import { QueuePositionWatch } from './queue-watch';

const event = (jobId: string, status: string): GenerationEvent => ({ id: 1, jobId, type: `generation.${status}`, payload: { status }, createdAt: new Date() });

describe('the queue-position watch of one stream', () => {
  test('reports a position only when it changes, and stops reading once nothing is queued', async () => {
    let table = new Map<string, { position: number; etaSeconds: number | null }>([['gen_a', { position: 2, etaSeconds: 10 }]]);
    const positionsOf = jest.fn(async () => table);
    const watch = new QueuePositionWatch(positionsOf, 'usr_1');

    expect(await watch.poll()).toEqual([{ jobId: 'gen_a', position: 2, etaSeconds: 10 }]);
    expect(await watch.poll()).toEqual([]);
    table = new Map([['gen_a', { position: 1, etaSeconds: 5 }]]);
    expect(await watch.poll()).toEqual([{ jobId: 'gen_a', position: 1, etaSeconds: 5 }]);

    watch.observe(event('gen_a', 'running'));
    table = new Map();
    expect(await watch.poll()).toEqual([]);
    const reads = positionsOf.mock.calls.length;
    expect(await watch.poll()).toEqual([]);
    expect(positionsOf.mock.calls.length).toBe(reads);

    watch.observe(event('gen_b', 'queued'));
    table = new Map([['gen_b', { position: 3, etaSeconds: null }]]);
    expect(await watch.poll()).toEqual([{ jobId: 'gen_b', position: 3, etaSeconds: null }]);
  });

  test('never shows a job queued after the feed showed it leaving the queue, and keeps to its own job', async () => {
    const positionsOf = async () =>
      new Map([
        ['gen_a', { position: 1, etaSeconds: 3 }],
        ['gen_b', { position: 2, etaSeconds: 6 }],
      ]);
    const watch = new QueuePositionWatch(positionsOf, 'usr_1', 'gen_b');
    watch.observe(event('gen_b', 'running'));
    expect(await watch.poll()).toEqual([]);
    const other = new QueuePositionWatch(positionsOf, 'usr_1', 'gen_a');
    expect(await other.poll()).toEqual([{ jobId: 'gen_a', position: 1, etaSeconds: 3 }]);
  });
});
