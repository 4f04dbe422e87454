/**
 * `npm run histories:record`: records one real workflow history per path into test/fixtures/histories/, which
 * test/replay.test.ts replays against the current workflow code on every `npm test`.
 *
 * It starts what the tests start (test/global-setup.ts: a Temporal dev server, a fresh Postgres database, the workflow
 * bundle) and one whole stack on it (test/harness.ts: simulator, API, worker), drives each path as a user or an operator
 * would (the public API, the simulator's knobs, the runbook's own commands), waits for each workflow to close, checks
 * that the path went the way it is named, and writes its history as JSON into a new recording's folder,
 * test/fixtures/histories/<date>-<commit>[-modified]/, with index.json saying when, from which commit and on which SDK
 * and server it was recorded. Older recordings are left as they are: they stay while runs of their code can be open.
 *
 * When to record, and when to remove an older recording: docs/decisions.md, "Replay safety".
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Client } from '@temporalio/client';
import { historyToJSON, type History } from '@temporalio/common/lib/proto-utils';
import { deliveryWorkflowId } from '../src/notifications/delivery-starter';
import { emailDigestWorkflowId } from '../src/contracts/email-digest';
import { mailTo, readMail } from '../test/mailpit';
import { startWebhookReceiver, type WebhookAnswer } from '../test/notification-helpers';
import { reconcilerScheduleId } from '../src/reconciler-schedule';
import { retentionScheduleId } from '../src/retention/schedule';
import globalSetup from '../test/global-setup';
import { testDataConverter } from '../test/payload-keys';
import { ENCRYPTED_ENCODING } from '../src/lib/payload-codec';
import globalTeardown from '../test/global-teardown';
import { apiClient, eventually, startStack, type Stack } from '../test/harness';
import { HISTORIES_DIR, recordingName, REPLAY_PATHS, writeRecording, type HistoriesIndex, type RecordedHistory, type ReplayPath } from '../test/replay-histories';
import { runbookEnv, runRunbook } from '../test/runbook-commands';
import { temporalBinary } from './lib/temporal-dev-server';
import { setPool, setSimKnobs, startTwoBackends, type TwoBackends } from '../test/two-backends';

const ROOT = path.resolve(__dirname, '..');
/** Longest wait for one path's job or workflow to end. */
const PATH_DEADLINE_MS = 60_000;

type Api = ReturnType<typeof apiClient>;
type Job = { id: string; status: string; attempt: number; backend_job_id: string | null; error: { code: string } | null };

/** Short generations and deadlines, so the histories stay small and the recording quick; one GPU, so a job can queue. */
const STACK_ENV = {
  GPU_SLOTS: '1',
  MAX_ATTEMPTS: '2',
  RETRY_BACKOFF_MS: '1000',
  MAX_QUEUE_MS: '3000',
  MAX_RUN_MS: '6000',
  EXPECTED_RUN_MS: '1500',
  // Reconciler passes only when the recording triggers one (as an operator does).
  RECONCILE_INTERVAL_MS: '3600000',
};

function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`recording went off its path: ${message}`);
}

class Recorder {
  readonly recorded = new Map<ReplayPath, { workflowId: string; check?: (history: History) => void }>();
  readonly secrets: string[] = [];
  private readonly runbook: Record<string, string>;

  constructor(readonly stack: Stack) {
    this.runbook = runbookEnv(stack);
    this.secrets.push(stack.adminApiKey, ...stack.config.backend.webhookSecrets);
  }

  get client(): Client {
    return this.stack.client;
  }

  async user(): Promise<{ api: Api; userId: string }> {
    const { apiKey, userId } = await this.stack.createUser('pro');
    this.secrets.push(apiKey);
    return { api: apiClient(this.stack.apiUrl, apiKey), userId };
  }

  record(name: ReplayPath, workflowId: string, check?: (history: History) => void): void {
    this.recorded.set(name, { workflowId, check });
  }

  operator(command: string, jobId = ''): Promise<string> {
    return runRunbook(command, this.runbook, jobId);
  }

  async submit(api: Api, body: Record<string, unknown>): Promise<string> {
    const res = await api.submit(body);
    check(res.status === 202, `submit answered ${res.status} ${res.text}`);
    return res.body.id as string;
  }

  job(api: Api, id: string, test: (job: Job) => boolean, what: string): Promise<Job> {
    return eventually(
      async () => {
        const job = (await api.get(id)).body as Job;
        return test(job) ? job : undefined;
      },
      { timeoutMs: PATH_DEADLINE_MS, what: `job ${id} ${what}` },
    );
  }

  ended(api: Api, id: string): Promise<Job> {
    return this.job(api, id, (j) => ['succeeded', 'failed', 'canceled', 'expired'].includes(j.status), 'to end');
  }

  backendJobs(id: string) {
    return this.stack.simulator.simulator.engine.list(`${id}:`);
  }

  async withKnobs<T>(knobs: Parameters<Stack['setKnobs']>[0], run: () => Promise<T>): Promise<T> {
    const before = { ...this.stack.simulator.simulator.engine.knobs };
    this.stack.setKnobs(knobs);
    try {
      return await run();
    } finally {
      this.stack.setKnobs(before);
    }
  }
}

/** The types of the backend events signalled to a generation workflow ('accepted' comes from the GPU activity itself). */
function signalledEvents(history: History): string[] {
  return (history.events ?? []).flatMap((e) => {
    const payload = e.workflowExecutionSignaledEventAttributes?.input?.payloads?.[0]?.data;
    return payload ? [(JSON.parse(Buffer.from(payload).toString('utf8')) as { type: string }).type] : [];
  });
}
const fromCallbacks = (history: History) => signalledEvents(history).filter((type) => type !== 'accepted');
/** The names of the signals a workflow received, in order. */
const signalNames = (history: History) => (history.events ?? []).flatMap((e) => (e.workflowExecutionSignaledEventAttributes?.signalName ? [e.workflowExecutionSignaledEventAttributes.signalName] : []));

async function generationPaths(r: Recorder): Promise<void> {
  {
    const { api } = await r.user();
    const id = await r.submit(api, { prompt: 'a red fox running through snow', duration_seconds: 2 });
    const job = await r.ended(api, id);
    check(job.status === 'succeeded' && job.attempt === 1, `success-by-callback ended ${job.status}`);
    r.record('success-by-callback', id, (h) => check(fromCallbacks(h).includes('succeeded'), `the callbacks that reached the workflow: ${fromCallbacks(h).join(', ')}`));
  }
  {
    const { api } = await r.user();
    const job = await r.withKnobs({ callbackLossRate: 1 }, async () => r.ended(api, await r.submit(api, { prompt: 'a lighthouse in fog', duration_seconds: 2 })));
    check(job.status === 'succeeded', `success-by-polling ended ${job.status}`);
    r.record('success-by-polling', job.id, (h) => check(fromCallbacks(h).length === 0, `callbacks reached the workflow: ${fromCallbacks(h).join(', ')}`));
  }
  {
    // The backend decides a job's outcome when it takes it: the first attempt's is a failure, the second's is not.
    const { api } = await r.user();
    const id = await r.withKnobs({ transientFailureRate: 1 }, async () => {
      const submitted = await r.submit(api, { prompt: 'a paper boat on a river', duration_seconds: 2 });
      await eventually(async () => (r.backendJobs(submitted).length >= 1 ? true : undefined), { what: 'the first attempt at the backend' });
      return submitted;
    });
    const job = await r.ended(api, id);
    check(job.status === 'succeeded' && job.attempt === 2, `transient-failure-then-success ended ${job.status} at attempt ${job.attempt}`);
    r.record('transient-failure-then-success', id);
  }
  {
    const { api } = await r.user();
    const job = await r.ended(api, await r.submit(api, { prompt: 'a prompt the backend refuses [fail:permanent]', duration_seconds: 2 }));
    check(job.status === 'failed' && job.attempt === 1 && job.error !== null, `permanent-failure ended ${job.status} at attempt ${job.attempt}`);
    r.record('permanent-failure', job.id);
  }
  {
    const { api } = await r.user();
    const id = await r.submit(api, { prompt: 'a render that never ends [hang]', duration_seconds: 2 });
    await r.job(api, id, (j) => j.status === 'running', 'to run');
    const cancel = await api.call('POST', `/v1/generations/${id}/cancel`);
    check([200, 202].includes(cancel.status), `cancel answered ${cancel.status}`);
    const job = await r.ended(api, id);
    check(job.status === 'canceled' && job.backend_job_id !== null, `cancel-while-running ended ${job.status}`);
    r.record('cancel-while-running', id);
  }
  {
    // One GPU: a hanging job holds it while one job is canceled in the queue and another waits past its queue deadline;
    // then the hanging job passes its running deadline.
    const { api } = await r.user();
    const hog = await r.submit(api, { prompt: 'holds the only GPU [hang]' });
    await r.job(api, hog, (j) => j.status === 'running', 'to run');
    const canceled = await r.submit(api, { prompt: 'canceled while it waits', duration_seconds: 2 });
    const cancel = await api.call('POST', `/v1/generations/${canceled}/cancel`);
    check(cancel.status === 202, `queued cancel answered ${cancel.status}`);
    const waiting = await r.submit(api, { prompt: 'waits for the GPU', duration_seconds: 2 });
    const c = await r.ended(api, canceled);
    check(c.status === 'canceled' && c.backend_job_id === null, `cancel-while-queued ended ${c.status} (backend job ${c.backend_job_id})`);
    const w = await r.ended(api, waiting);
    check(w.status === 'expired' && w.error?.code === 'queue_timeout', `queue-timeout ended ${w.status} ${w.error?.code}`);
    const h = await r.ended(api, hog);
    check(h.error?.code === 'generation_timeout', `run-timeout ended ${h.status} ${h.error?.code}`);
    r.record('cancel-while-queued', canceled);
    r.record('queue-timeout', waiting);
    r.record('run-timeout', hog);
  }
}

/** The routed stack's two backends (test/two-backends.ts): the primary cheaper and up to 720p, the secondary anything. */
const PRIMARY = 'primary';
const SECONDARY = 'secondary';

/**
 * Routing across two backends, on a stack of its own (its runs take the routed path from their start): a job only the
 * second backend renders, a running job whose backend goes down, and a queued job whose backend's pool is paused.
 */
async function routedPaths(r: Recorder): Promise<void> {
  let backends: TwoBackends | undefined;
  let routed: Stack | undefined;
  try {
    backends = await startTwoBackends({ names: { primary: PRIMARY, secondary: SECONDARY }, capacity: 2 });
    const { primary } = backends;
    routed = await startStack({ env: { ...STACK_ENV, MAX_QUEUE_MS: '30000', MAX_RUN_MS: '30000', ...backends.env } });
    const stack = routed;
    const rr = new Recorder(stack);
    const pool = async (backend: string, capacity: number | null) => {
      const res = await setPool(stack, { backend, capacity });
      check(res.status === 200, `PUT /admin/capacity answered ${res.status}`);
    };
    type RoutedJob = Job & { backend: string | null; failed_over_from: string | null };
    {
      const { api } = await rr.user();
      const job = (await rr.ended(api, await rr.submit(api, { prompt: 'a fox in 1080p', duration_seconds: 2, resolution: '1080p' }))) as RoutedJob;
      check(job.status === 'succeeded' && job.attempt === 1 && job.backend === SECONDARY, `routed-to-second-backend ended ${job.status} on ${job.backend}`);
      rr.record('routed-to-second-backend', job.id);
    }
    {
      // The primary's one slot held by a long job; a second job waits in its queue; the operator pauses the primary.
      const { api } = await rr.user();
      await pool(PRIMARY, 1);
      setSimKnobs(primary, { p50Ms: 3_000, p99Ms: 3_500 });
      try {
        const hog = await rr.submit(api, { prompt: 'holds the primary', duration_seconds: 2, resolution: '480p' });
        await rr.job(api, hog, (j) => j.status === 'running', 'to run');
        const waiting = await rr.submit(api, { prompt: 'waits on the primary', duration_seconds: 2, resolution: '480p' });
        await eventually(async () => ((await stack.database.sql`select 1 from generations where id = ${waiting} and queued_on = ${PRIMARY}`).length > 0 ? true : undefined), {
          what: 'the waiting job to be routed to the primary',
        });
        await pool(PRIMARY, 0);
        const job = (await rr.ended(api, waiting)) as RoutedJob;
        check(job.status === 'succeeded' && job.attempt === 2 && job.backend === SECONDARY && job.failed_over_from === PRIMARY, `rerouted-off-paused-pool ended ${job.status} on ${job.backend} at attempt ${job.attempt}`);
        rr.record('rerouted-off-paused-pool', waiting, (h) => check(signalNames(h).includes('rerouteQueued'), `the signals that reached the workflow: ${signalNames(h).join(', ')}`));
        await rr.ended(api, hog);
      } finally {
        setSimKnobs(primary, 'quick');
        await pool(PRIMARY, null);
      }
    }
    {
      const { api } = await rr.user();
      setSimKnobs(primary, { p50Ms: 20_000, p99Ms: 25_000 });
      try {
        const id = await rr.submit(api, { prompt: 'a long fox on the primary', duration_seconds: 2, resolution: '720p' });
        const running = (await rr.job(api, id, (j) => j.status === 'running', 'to run')) as RoutedJob;
        check(running.backend === PRIMARY, `failed-over-mid-run ran on ${running.backend}`);
        setSimKnobs(primary, { outage: true });
        const job = (await rr.ended(api, id)) as RoutedJob;
        check(job.status === 'succeeded' && job.attempt === 2 && job.backend === SECONDARY && job.failed_over_from === PRIMARY, `failed-over-mid-run ended ${job.status} on ${job.backend} at attempt ${job.attempt}`);
        rr.record('failed-over-mid-run', id);
      } finally {
        setSimKnobs(primary, { outage: false });
        setSimKnobs(primary, 'quick');
      }
    }
    for (const [name, entry] of rr.recorded) r.recorded.set(name, entry);
    r.secrets.push(...rr.secrets);
  } finally {
    await routed?.close();
    await backends?.close();
  }
}

/** A job that failed in a backend outage (every attempt), retried by the runbook's reset once the outage is over. */
async function operatorPaths(r: Recorder): Promise<void> {
  const failedInOutage = async (api: Api, prompt: string) => {
    const job = await r.withKnobs({ transientFailureRate: 1 }, async () => r.ended(api, await r.submit(api, { prompt, duration_seconds: 2 })));
    check(job.status === 'failed', `the outage's job ended ${job.status}`);
    return job.id;
  };
  {
    const { api } = await r.user();
    const id = await failedInOutage(api, 'rendered during an outage');
    await r.operator('retry', id);
    const job = await r.job(api, id, (j) => j.status === 'succeeded', 'to succeed after the reset');
    r.record('operator-reset', job.id);
  }
  {
    const { api, userId } = await r.user();
    const id = await failedInOutage(api, 'retried after the credits ran out');
    // Stands in for the user spending the rest of their balance before the operator retries.
    await r.stack.database.sql`update credit_accounts set available = 0 where user_id = ${userId}`;
    await r.operator('retry', id);
    const job = await r.job(api, id, (j) => j.error?.code === 'insufficient_credits', 'to fail for want of credits');
    r.record('insufficient-credits', job.id);
  }
}

async function webhookPaths(r: Recorder): Promise<void> {
  const receivers: Array<{ close(): Promise<void> }> = [];
  const deliver = async (name: ReplayPath, answer: (n: number) => WebhookAnswer, status: 'succeeded' | 'failed', attempts: number) => {
    const receiver = await startWebhookReceiver(answer);
    receivers.push(receiver);
    const { api } = await r.user();
    const endpoint = await api.call('POST', '/v1/webhook-endpoints', { url: receiver.url });
    check(endpoint.status === 201, `endpoint answered ${endpoint.status}`);
    r.secrets.push(endpoint.body.secret);
    await r.submit(api, { prompt: `a postcard for ${name}`, duration_seconds: 2 });
    const delivery = await eventually(
      async () => {
        const [d] = (await api.call('GET', `/v1/webhook-endpoints/${endpoint.body.id}/deliveries`)).body.data;
        return d?.status === status ? (d as { id: string; attempt_count: number }) : undefined;
      },
      { timeoutMs: PATH_DEADLINE_MS, what: `a ${status} delivery` },
    );
    check(delivery.attempt_count === attempts, `${name}: ${delivery.attempt_count} attempts, not ${attempts}`);
    r.record(name, deliveryWorkflowId(delivery.id));
  };
  try {
    await deliver('webhook-delivered', () => ({ status: 204 }), 'succeeded', 1);
    await deliver('webhook-retried', (n) => ({ status: n <= 2 ? 503 : 204 }), 'succeeded', 3);
    await deliver('webhook-exhausted', () => ({ status: 500 }), 'failed', 8);
  } finally {
    for (const receiver of receivers) await receiver.close();
  }
}

/** A user with a verified address and a 5 s digest window: two jobs end, one mail lists both, the run ends when idle. */
async function emailPaths(r: Recorder): Promise<void> {
  const { api, userId } = await r.user();
  const email = `recording-${Date.now()}@mail.test`;
  const put = await api.call('PUT', '/v1/notification-settings', { email, digest_seconds: 5 });
  check(put.status === 200, `notification settings answered ${put.status} ${put.text}`);
  const verification = await eventually(async () => (await mailTo(email))[0], { timeoutMs: PATH_DEADLINE_MS, what: 'the verification mail' });
  const link = /(http:\/\/\S+\/v1\/notification-settings\/verify\?token=\S+)/.exec((await readMail(verification.ID)).Text)?.[1];
  check(link && (await fetch(link)).status === 200, 'the verification link did not verify');
  const ids = [await r.submit(api, { prompt: 'a mailed postcard', duration_seconds: 2 }), await r.submit(api, { prompt: 'another mailed postcard', duration_seconds: 2 })];
  for (const id of ids) await r.ended(api, id);
  const digest = await eventually(async () => (await mailTo(email)).find((m) => m.ID !== verification.ID), { timeoutMs: PATH_DEADLINE_MS, what: 'the digest mail' });
  const text = (await readMail(digest.ID)).Text;
  check(ids.every((id) => text.includes(id)), 'the digest does not list both jobs');
  r.record('email-digest', emailDigestWorkflowId(userId));
}

/** The newest run a schedule started whose result passes `test`. */
async function scheduledRun(r: Recorder, scheduleId: string, test: (result: unknown) => boolean, what: string): Promise<string> {
  return eventually(
    async () => {
      const { info } = await r.client.schedule.getHandle(scheduleId).describe();
      for (const action of [...info.recentActions].reverse()) {
        const handle = r.client.workflow.getHandle(action.action.workflow.workflowId);
        if ((await handle.describe()).status.name === 'RUNNING') continue;
        if (test(await handle.result().catch(() => undefined))) return action.action.workflow.workflowId;
      }
      return undefined;
    },
    { timeoutMs: PATH_DEADLINE_MS, intervalMs: 500, what },
  );
}

async function operatorTerminateAndSchedules(r: Recorder): Promise<void> {
  const { api } = await r.user();
  const id = await r.submit(api, { prompt: 'a workflow an operator terminates [hang]', duration_seconds: 2 });
  await r.job(api, id, (j) => j.status === 'running', 'to run');
  await r.operator('terminate', id);
  // The reconciler looks only at rows quiet for two intervals: age the row (time passing), and trigger a pass as the
  // runbook says, until the pass has ended the job.
  await eventually(
    async () => {
      await r.stack.database.sql`update generations set updated_at = now() - interval '3 hours' where id = ${id}`;
      await r.operator('reconcile');
      return (await api.get(id)).body.status === 'failed' ? true : undefined;
    },
    { timeoutMs: PATH_DEADLINE_MS, intervalMs: 1000, what: 'the reconciler to end the terminated job' },
  );
  r.record('operator-terminate', id);
  const pass = await scheduledRun(r, reconcilerScheduleId(r.stack.config), (result) => ((result as { repaired?: number } | undefined)?.repaired ?? 0) > 0, 'a reconciler pass that repaired the job');
  r.record('reconciler-pass', pass);

  await r.operator('prune');
  r.record('retention-pass', await scheduledRun(r, retentionScheduleId(r.stack.config), (result) => result !== undefined, 'a retention pass'));
}

/** Waits for a workflow to close and returns its history. */
async function closedHistory(client: Client, workflowId: string): Promise<{ history: History; runId: string; closedAs: string; workflowType: string }> {
  const handle = client.workflow.getHandle(workflowId);
  const description = await eventually(
    async () => {
      const d = await handle.describe();
      return d.status.name === 'RUNNING' ? undefined : d;
    },
    { timeoutMs: PATH_DEADLINE_MS, what: `workflow ${workflowId} to close` },
  );
  return { history: await handle.fetchHistory(), runId: description.runId, closedAs: description.status.name, workflowType: description.type };
}

/** A copy of `history` with every sealed payload opened (the tests' payload key, test/payload-keys.ts). */
async function openedHistory(history: History): Promise<History> {
  const codec = testDataConverter().payloadCodecs![0];
  const open = async (value: unknown): Promise<unknown> => {
    if (!value || typeof value !== 'object' || value instanceof Uint8Array) return value;
    if (Array.isArray(value)) return Promise.all(value.map(open));
    const record = value as Record<string, unknown> & { metadata?: Record<string, Uint8Array>; data?: unknown };
    if (record.data instanceof Uint8Array && record.metadata?.encoding && Buffer.from(record.metadata.encoding).toString() === ENCRYPTED_ENCODING) {
      return (await codec.decode([record as never]))[0];
    }
    const copy: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(record)) copy[k] = await open(v);
    return copy;
  };
  return (await open(history)) as History;
}

/** Every string in a history, with each payload's data decoded: what a secret would show up in. */
function historyText(json: unknown): string {
  const parts: string[] = [];
  const walk = (value: unknown, key = ''): void => {
    if (typeof value === 'string') parts.push(key === 'data' ? Buffer.from(value, 'base64').toString('utf8') : value);
    else if (Array.isArray(value)) value.forEach((v) => walk(v));
    else if (value && typeof value === 'object') for (const [k, v] of Object.entries(value)) walk(v, k);
  };
  walk(json);
  return parts.join('\n');
}

function git(...args: string[]): string {
  return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8' }).trim();
}

async function main(): Promise<void> {
  const startedAt = Date.now();
  await globalSetup();
  let stack: Stack | undefined;
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      void (stack?.close() ?? Promise.resolve())
        .then(() => globalTeardown())
        .finally(() => process.exit(130));
    });
  }
  try {
    stack = await startStack({ env: STACK_ENV });
    const r = new Recorder(stack);
    await generationPaths(r);
    await operatorPaths(r);
    await webhookPaths(r);
    await emailPaths(r);
    await operatorTerminateAndSchedules(r);
    const routedFrom = Date.now();
    await routedPaths(r);
    console.log(`routed paths: ${((Date.now() - routedFrom) / 1000).toFixed(0)} s`);

    const missing = Object.keys(REPLAY_PATHS).filter((name) => !r.recorded.has(name as ReplayPath));
    check(missing.length === 0, `no history for ${missing.join(', ')}`);
    const histories: RecordedHistory[] = [];
    const files = new Map<string, string>();
    for (const name of Object.keys(REPLAY_PATHS) as ReplayPath[]) {
      const { workflowId, check: checkHistory } = r.recorded.get(name)!;
      const { history, runId, closedAs, workflowType } = await closedHistory(stack.client, workflowId);
      check(workflowType === REPLAY_PATHS[name].workflowType, `${name} recorded a ${workflowType}`);
      // The recording keeps the history as Temporal stores it (payloads sealed with the tests' key); the checks read it opened.
      const opened = await openedHistory(history);
      checkHistory?.(opened);
      const json = JSON.parse(historyToJSON(history)) as unknown;
      check(JSON.stringify(json).includes(Buffer.from(ENCRYPTED_ENCODING).toString('base64')), `${name}'s history holds no sealed payload`);
      const text = historyText(JSON.parse(JSON.stringify(opened, (_key, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('base64') : v))));
      const leaked = r.secrets.filter((secret) => secret && text.includes(secret));
      check(leaked.length === 0 && !text.includes('whsec_'), `${name}'s history holds a secret`);
      const file = `${name}.json`;
      files.set(file, `${JSON.stringify(json, null, 1)}\n`);
      histories.push({ path: name, file, workflowType, workflowId, runId, closedAs, events: history.events?.length ?? 0, what: REPLAY_PATHS[name].what });
      console.log(`${name}: ${workflowType} ${closedAs.toLowerCase()}, ${history.events?.length} events`);
    }

    const index: HistoriesIndex = {
      recordedAt: new Date().toISOString(),
      build: { commit: git('rev-parse', 'HEAD'), dirty: git('status', '--porcelain', '--', 'src').length > 0 },
      sdk: `@temporalio/worker ${(JSON.parse(fs.readFileSync(require.resolve('@temporalio/worker/package.json'), 'utf8')) as { version: string }).version}`,
      temporal: execFileSync(temporalBinary(), ['--version'], { encoding: 'utf8' }).trim(),
      histories,
    };
    const dir = path.join(HISTORIES_DIR, recordingName(index));
    writeRecording(dir, files, index);
    console.log(`${histories.length} histories in ${path.relative(ROOT, dir)}/ (${((Date.now() - startedAt) / 1000).toFixed(0)} s)`);
  } finally {
    await stack?.close();
    await globalTeardown();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
