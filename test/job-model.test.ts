import fc from 'fast-check';
import { signWebhook } from '../src/lib/webhook-signature';
import { apiClient, eventually, startStack, type Stack } from './harness';
import { spawnWorker, type SpawnedProcess } from './processes';

/**
 * Model-based: random sequences of submit / duplicate submit / duplicate callback / cancel / dispatcher crash against
 * the real service (API, Temporal, Postgres, simulator, a GPU dispatcher in its own process). Whatever the sequence,
 * every job ends in exactly one terminal state, is charged at most once, and notifies exactly once.
 */
type PromptKind = 'ok' | 'transient' | 'permanent' | 'hang';
const PROMPTS: Record<PromptKind, string> = {
  ok: 'a calm lake at dawn',
  transient: 'a flaky render [fail:transient]',
  permanent: 'a forbidden scene [fail:permanent]',
  hang: 'a render that never ends [hang]',
};

interface Model {
  jobs: Array<{ id: string; key: string | null; body: { prompt: string; duration_seconds: number } }>;
}

interface Real {
  stack: Stack;
  api: ReturnType<typeof apiClient>;
  restartDispatcher(): Promise<void>;
}

class Submit implements fc.AsyncCommand<Model, Real> {
  constructor(readonly kind: PromptKind, readonly withKey: boolean, readonly seconds: number) {}
  check = () => true;
  async run(model: Model, real: Real) {
    const key = this.withKey ? `key-${model.jobs.length}-${Math.random().toString(36).slice(2)}` : null;
    const body = { prompt: PROMPTS[this.kind], duration_seconds: this.seconds };
    const res = await real.api.submit(body, key ?? undefined);
    expect(res.status).toBe(202);
    model.jobs.push({ id: res.body.id, key, body });
  }
  toString = () => `Submit(${this.kind}, key=${this.withKey})`;
}

class DuplicateSubmit implements fc.AsyncCommand<Model, Real> {
  constructor(readonly pick: number) {}
  check = (m: Readonly<Model>) => m.jobs.some((j) => j.key);
  async run(model: Model, real: Real) {
    const keyed = model.jobs.filter((j) => j.key);
    const job = keyed[this.pick % keyed.length];
    const res = await real.api.submit(job.body, job.key!);
    expect(res.status).toBe(202);
    expect(res.body.id).toBe(job.id);
    expect(res.headers.get('idempotent-replayed')).toBe('true');
  }
  toString = () => `DuplicateSubmit(${this.pick})`;
}

class DuplicateCallback implements fc.AsyncCommand<Model, Real> {
  constructor(readonly pick: number) {}
  check = (m: Readonly<Model>) => m.jobs.length > 0;
  async run(model: Model, real: Real) {
    const job = model.jobs[this.pick % model.jobs.length];
    const backendJobs = real.stack.simulator.simulator.engine.list(`${job.id}:`);
    const latest = backendJobs[backendJobs.length - 1];
    if (!latest || latest.status === 'queued') return;
    // Redeliver what the backend has already said about this job: a duplicate (or late) callback.
    const type = latest.status === 'running' ? 'job.started' : `job.${latest.status}`;
    const eventId = `evt_dup_${latest.id}_${latest.status}`;
    const body = JSON.stringify({ event_id: eventId, type, sequence: latest.status === 'running' ? 1 : 2, job: latest });
    const res = await fetch(`${real.stack.apiUrl}/internal/backend/callbacks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...signWebhook(real.stack.config.backend.webhookSecret, eventId, body) },
      body,
    });
    expect(res.status).toBe(200);
  }
  toString = () => `DuplicateCallback(${this.pick})`;
}

class Cancel implements fc.AsyncCommand<Model, Real> {
  constructor(readonly pick: number) {}
  check = (m: Readonly<Model>) => m.jobs.length > 0;
  async run(model: Model, real: Real) {
    const job = model.jobs[this.pick % model.jobs.length];
    const res = await real.api.call('POST', `/v1/generations/${job.id}/cancel`);
    expect([200, 202, 409]).toContain(res.status);
    if (res.status === 409) expect(['succeeded', 'failed']).toContain(res.body.error.details.status);
  }
  toString = () => `Cancel(${this.pick})`;
}

class CrashDispatcher implements fc.AsyncCommand<Model, Real> {
  check = () => true;
  async run(_model: Model, real: Real) {
    await real.restartDispatcher();
  }
  toString = () => 'CrashDispatcher';
}

describe('any sequence of client, backend and process events', () => {
  let stack: Stack;
  let dispatcher: SpawnedProcess | undefined;
  let restarts = 0;

  async function restartDispatcher(): Promise<void> {
    dispatcher?.kill('SIGKILL');
    await dispatcher?.exited;
    dispatcher = spawnWorker({ ...stack.env, WORKER_ROLE: 'gpu', LOG_LEVEL: 'info' }, `model-dispatcher-${restarts++}`);
    await dispatcher.waitForOutput(/worker started/, 60_000);
  }

  beforeAll(async () => {
    stack = await startStack({
      env: { WORKER_ROLE: 'generation', MAX_ATTEMPTS: '2', MAX_RUN_MS: '2500', HEARTBEAT_TIMEOUT_MS: '2000', GPU_SLOTS: '3' },
      knobs: { p50Ms: 400, p99Ms: 1_200 },
    });
    await restartDispatcher();
  });
  afterAll(async () => {
    await dispatcher?.stop();
    await stack?.close();
  });

  test('every job ends in exactly one terminal state, with balanced credits and one notification', async () => {
    const commands = [
      fc.tuple(fc.constantFrom<PromptKind>('ok', 'ok', 'transient', 'permanent', 'hang'), fc.boolean(), fc.integer({ min: 1, max: 4 })).map(
        ([kind, withKey, seconds]) => new Submit(kind, withKey, seconds),
      ),
      fc.nat().map((n) => new DuplicateSubmit(n)),
      fc.nat().map((n) => new DuplicateCallback(n)),
      fc.nat().map((n) => new Cancel(n)),
      fc.constant(new CrashDispatcher()),
    ];
    await fc.assert(
      fc.asyncProperty(fc.commands(commands, { maxCommands: 10 }), async (cmds) => {
        const { apiKey, userId } = await stack.createUser('pro');
        const api = apiClient(stack.apiUrl, apiKey);
        const model: Model = { jobs: [] };
        await fc.asyncModelRun(() => ({ model, real: { stack, api, restartDispatcher } }), cmds);

        const { sql } = stack.database;
        for (const job of model.jobs) {
          const ended = await api.waitForTerminal(job.id, 90_000);
          const result = await stack.client.workflow.getHandle(job.id).result();
          expect(ended.status).toBe(result.status); // the projection agrees with Temporal
          await eventually(async () => {
            const [n] = await sql<{ n: number }[]>`select count(*)::int as n from notifications where job_id = ${job.id}`;
            return n.n >= 1 ? true : undefined;
          });
          const [counts] = await sql<{ reserves: number; captures: number; releases: number; notifications: number }[]>`
            select (select count(*)::int from credit_ledger where job_id = ${job.id} and kind = 'reserve') as reserves,
                   (select count(*)::int from credit_ledger where job_id = ${job.id} and kind = 'capture') as captures,
                   (select count(*)::int from credit_ledger where job_id = ${job.id} and kind = 'release') as releases,
                   (select count(*)::int from notifications where job_id = ${job.id}) as notifications`;
          expect(counts).toEqual({
            reserves: 1,
            captures: ended.status === 'succeeded' ? 1 : 0,
            releases: ended.status === 'succeeded' ? 0 : 1,
            notifications: 1,
          });
        }
        const [account] = await sql<{ available: number; reserved: number; used: number }[]>`
          select available, reserved, used from credit_accounts where user_id = ${userId}`;
        const [granted] = await sql<{ total: number }[]>`
          select sum(amount)::int as total from credit_ledger where user_id = ${userId} and kind = 'grant'`;
        expect(account.reserved).toBe(0);
        expect(account.available + account.used).toBe(granted.total);
      }),
      { numRuns: 4, endOnFailure: true },
    );
  });
});
