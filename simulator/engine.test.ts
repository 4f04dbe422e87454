import type { BackendSubmitRequest } from '../src/backend/types';
import { seededRandom, type Clock, type TimerHandle } from './clock';
import { EngineClosedError, SimulatorEngine, type JobEvent } from './engine';
import { defaultSimulatorKnobs, type SimulatorKnobs } from './knobs';
import { planRun, sampleGenerationMs } from './outcome';

/** Hand-stepped time: timers fire in order as advance() moves the clock. */
class ManualClock implements Clock {
  private time = 0;
  private next = 0;
  private readonly timers = new Map<number, { at: number; fn: () => void }>();

  now = () => this.time;
  setTimer = (fn: () => void, ms: number): TimerHandle => {
    const id = ++this.next;
    this.timers.set(id, { at: this.time + Math.max(0, ms), fn });
    return id;
  };
  clearTimer = (handle: TimerHandle) => {
    this.timers.delete(handle as number);
  };
  get pending() {
    return this.timers.size;
  }

  advance(ms: number): void {
    const target = this.time + ms;
    for (;;) {
      const due = [...this.timers.entries()].filter(([, t]) => t.at <= target).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.time = due[1].at;
      due[1].fn();
    }
    this.time = target;
  }
}

// p50 = p99 makes every run last exactly p50Ms * timeScale, so progress is exact.
const fixed: SimulatorKnobs = { ...defaultSimulatorKnobs, capacity: 2, p50Ms: 1_000, p99Ms: 1_000, timeScale: 1 };

let counter = 0;
const request = (prompt = 'a red fox', key = `key-${++counter}`): BackendSubmitRequest => ({
  client_key: key,
  prompt,
  duration_seconds: 5,
  resolution: '720p',
  aspect_ratio: '16:9',
  seed: null,
  callback_url: 'http://127.0.0.1:1/cb',
});

function setup(knobs: SimulatorKnobs = fixed) {
  const clock = new ManualClock();
  const engine = new SimulatorEngine({ knobs, clock, random: seededRandom(42) });
  const events: JobEvent[] = [];
  engine.onEvent((e) => events.push(e));
  return { clock, engine, events };
}

describe('generation time', () => {
  it('is lognormal with the configured median and 99th percentile', () => {
    const random = seededRandom(7);
    const samples = Array.from({ length: 50_000 }, () => sampleGenerationMs(30_000, 180_000, random)).sort((a, b) => a - b);
    const median = samples[Math.floor(samples.length * 0.5)];
    const p99 = samples[Math.floor(samples.length * 0.99)];
    expect(median / 30_000).toBeGreaterThan(0.97);
    expect(median / 30_000).toBeLessThan(1.03);
    expect(p99 / 180_000).toBeGreaterThan(0.9);
    expect(p99 / 180_000).toBeLessThan(1.1);
  });

  it('is scaled by timeScale, and [slow] multiplies it by 10', () => {
    const knobs = { ...fixed, timeScale: 0.01 };
    expect(planRun('fox', knobs, seededRandom(1)).durationMs).toBeCloseTo(10);
    expect(planRun('fox [slow]', knobs, seededRandom(1)).durationMs).toBeCloseTo(100);
  });
});

describe('outcome plan', () => {
  const random = seededRandom(3);
  it('obeys the prompt markers regardless of rates', () => {
    const always = { ...fixed, permanentFailureRate: 1 };
    expect(planRun('x [fail:transient]', always, random).error).toMatchObject({ retryable: true });
    expect(planRun('x [fail:permanent]', fixed, random).error).toMatchObject({ retryable: false });
    expect(planRun('x [hang]', always, random)).toMatchObject({ endAtMs: null, error: null });
  });

  it('draws failures from the rates, with the right codes, part-way through the run', () => {
    for (let i = 0; i < 50; i++) {
      const permanent = planRun('x', { ...fixed, permanentFailureRate: 1 }, random);
      expect(['content_policy_violation', 'invalid_input']).toContain(permanent.error?.code);
      expect(permanent.error?.retryable).toBe(false);
      expect(permanent.endAtMs).toBeLessThanOrEqual(permanent.durationMs);
      const transient = planRun('x', { ...fixed, transientFailureRate: 1 }, random);
      expect(['internal_error', 'gpu_unavailable']).toContain(transient.error?.code);
      expect(transient.error?.retryable).toBe(true);
    }
    expect(planRun('x', fixed, random).error).toBeNull();
  });
});

describe('SimulatorEngine', () => {
  it('runs a job with linear progress to a video, and is idempotent by client_key', () => {
    const { clock, engine, events } = setup();
    const { job, created } = engine.submit(request('fox', 'same'));
    expect(created).toBe(true);
    expect(engine.submit(request('fox', 'same'))).toEqual({ job: expect.objectContaining({ id: job.id }), created: false });
    expect(engine.get(job.id)?.status).toBe('running');
    clock.advance(250);
    expect(engine.get(job.id)?.progress).toBeCloseTo(0.25);
    clock.advance(750);
    expect(engine.get(job.id)).toMatchObject({ status: 'succeeded', progress: 1, video_url: `https://videos.sim.local/${job.id}.mp4` });
    expect(events.map((e) => `${e.kind}:${e.job.status}`)).toEqual(['started:running', 'ended:succeeded']);
    expect(engine.stats()).toMatchObject({ submitted: 1, succeeded: 1, running: 0 });
  });

  it('never runs more than capacity at once and starts queued jobs in FIFO order', () => {
    const { clock, engine } = setup();
    const ids = [1, 2, 3, 4, 5].map(() => engine.submit(request()).job.id);
    expect(engine.stats()).toMatchObject({ running: 2, queued: 3 });
    clock.advance(1_000);
    expect(ids.map((id) => engine.get(id)?.status)).toEqual(['succeeded', 'succeeded', 'running', 'running', 'queued']);
    clock.advance(2_000);
    expect(ids.every((id) => engine.get(id)?.status === 'succeeded')).toBe(true);
    expect(engine.stats().max_running_observed).toBe(2);
  });

  it('ends a failing job part-way with its error', () => {
    const { clock, engine } = setup();
    const { job } = engine.submit(request('x [fail:permanent]'));
    clock.advance(1_000);
    const ended = engine.get(job.id);
    expect(ended).toMatchObject({ status: 'failed', video_url: null, error: { retryable: false } });
    expect(ended?.progress).toBeGreaterThanOrEqual(0.1);
    expect(ended?.progress).toBeLessThanOrEqual(1);
  });

  it('freezes running jobs during an outage and resumes them after', () => {
    const { clock, engine } = setup({ ...fixed, capacity: 1 });
    const first = engine.submit(request()).job.id;
    const second = engine.submit(request()).job.id;
    clock.advance(500);
    engine.updateKnobs({ ...engine.knobs, outage: true });
    clock.advance(60_000);
    expect(engine.get(first)).toMatchObject({ status: 'running', progress: 0.5 });
    expect(engine.get(second)?.status).toBe('queued');
    engine.updateKnobs({ ...engine.knobs, outage: false });
    clock.advance(499);
    expect(engine.get(first)?.status).toBe('running');
    clock.advance(1);
    expect(engine.get(first)?.status).toBe('succeeded');
    expect(engine.get(second)?.status).toBe('running');
  });

  it('lets running jobs finish when capacity drops, starting none until below it', () => {
    const { engine } = setup({ ...fixed, capacity: 3 });
    const hung = [1, 2, 3].map(() => engine.submit(request('x [hang]')).job.id);
    engine.updateKnobs({ ...engine.knobs, capacity: 1 });
    const waiting = engine.submit(request()).job.id;
    engine.cancel(hung[0]);
    expect(engine.get(waiting)?.status).toBe('queued');
    engine.cancel(hung[1]);
    expect(engine.get(waiting)?.status).toBe('queued');
    engine.cancel(hung[2]);
    expect(engine.get(waiting)?.status).toBe('running');
  });

  it('cancels queued and running jobs, frees the GPU, and leaves terminal jobs unchanged', () => {
    const { clock, engine, events } = setup({ ...fixed, capacity: 1 });
    const hung = engine.submit(request('x [hang]')).job.id;
    const queued = engine.submit(request()).job.id;
    clock.advance(100_000);
    expect(engine.get(hung)).toMatchObject({ status: 'running', progress: 0.99 });
    expect(engine.cancel(queued)).toMatchObject({ status: 'canceled', started_at: null });
    const canceled = engine.cancel(hung);
    expect(canceled?.status).toBe('canceled');
    expect(engine.cancel(hung)).toEqual(canceled);
    expect(engine.cancel('nope')).toBeUndefined();
    expect(engine.stats()).toMatchObject({ running: 0, queued: 0, canceled: 2 });
    expect(events.filter((e) => e.kind === 'ended')).toHaveLength(2);
    expect(clock.pending).toBe(0);
  });

  it('resolves waiters at the end, honours abort, and fails them at close', async () => {
    const { clock, engine } = setup();
    const done = engine.submit(request()).job.id;
    const ending = engine.waitForEnd(done);
    clock.advance(1_000);
    await expect(ending).resolves.toMatchObject({ id: done, status: 'succeeded' });

    const hung = engine.submit(request('x [hang]')).job.id;
    const abort = new AbortController();
    const aborted = engine.waitForEnd(hung, abort.signal);
    abort.abort(new Error('client went away'));
    await expect(aborted).rejects.toThrow('client went away');
    expect(engine.get(hung)?.status).toBe('running');

    const closing = engine.waitForEnd(hung);
    engine.close();
    await expect(closing).rejects.toBeInstanceOf(EngineClosedError);
    expect(clock.pending).toBe(0);
    expect(() => engine.submit(request())).toThrow(EngineClosedError);
  });

  it('lists jobs by client_key prefix and resets counters', () => {
    const { clock, engine } = setup();
    engine.submit(request('x', 'a-1'));
    engine.submit(request('x', 'a-2'));
    engine.submit(request('x', 'b-1'));
    expect(engine.list('a-').map((j) => j.client_key)).toEqual(['a-1', 'a-2']);
    clock.advance(1_000);
    engine.resetStats();
    expect(engine.stats()).toEqual({ submitted: 0, running: 1, queued: 0, max_running_observed: 1, succeeded: 0, failed: 0, canceled: 0 });
  });
});
