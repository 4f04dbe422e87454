import { randomBytes } from 'node:crypto';
import { Client, Connection } from '@temporalio/client';
import { createDatabase } from '../src/db/client';
import { startWebhookReceiver } from '../test/notification-helpers';
import { UNLIMITED_ADMISSION } from '../test/fairness-helpers';
import { testDataConverter } from '../test/payload-keys';
import { ChaosCluster } from './lib/chaos-cluster';
import { createUsers, newClientStats, submitUntilAnswered, type Submission } from './lib/chaos-clients';
import { checkInvariants, checkMail, countTerminal, pendingDeliveries, pendingMail, unfinishedWorkflows, type InvariantCounts, type MailCounts } from './lib/chaos-invariants';
import { runMain, stopOnSignal } from './lib/infra';
import { formatMarkdown, formatTable, machineLine, writeOut, type Row } from './lib/report';

/**
 * `npm run chaos [-- --jobs N] [--short] [--keep] [--two-backends]`: the chaos campaign. The whole service runs as real processes (Temporal
 * dev server on a SQLite file, embedded Postgres, simulator, API, 2 generation workers, 2 GPU dispatchers). Clients
 * submit N jobs (500; --short: 60 over a shorter timeline) while workers and dispatchers are SIGKILLed over and over, the
 * Temporal server is restarted once and Postgres once, and the simulator drops 30% of callbacks, duplicates 30% and fails
 * 10% of generations transiently. Then it waits for convergence and checks, from Postgres and Temporal, that nothing was
 * lost, notified twice, mailed twice (each user has a verified address and a 2 s digest, on a Mailpit of the run's own),
 * delivered under two webhook ids, charged twice or left diverged, and that no submit answered 5xx
 * from Temporal's stop until it answered again. Exits 1 if anything was.
 *
 * `--two-backends`: two simulator processes are the service's backends (BACKENDS: `primary`, cost 1; `secondary`, cost
 * 1.5), and the primary goes down (an outage: every call 503, its jobs frozen) from about half the submit window for
 * PRIMARY_DOWN_MS, then comes back. On top of every invariant above: jobs must have failed over to the secondary
 * (`failover_jobs` > 0: finished there after an attempt on the primary or being routed away from it), and once every job
 * has ended and every owed cancel was sent, no backend job may still be queued or running on either simulator
 * (`orphan_backend_jobs` = 0).
 */
const argv = process.argv.slice(2);
const short = argv.includes('--short');
const twoBackends = argv.includes('--two-backends');
const jobsFlag = argv.indexOf('--jobs');
const JOBS = jobsFlag >= 0 ? Number(argv[jobsFlag + 1]) : short ? 60 : 500;
if (!Number.isInteger(JOBS) || JOBS < 1) throw new Error('--jobs: a positive whole number');
const USERS = 8;
// The timeline, in ms from the first submit.
const PLAN = short
  ? { submitWindowMs: 20_000, killEveryMs: [2_500, 4_500], chaosUntilMs: 24_000, temporalAtMs: 5_000, postgresAtMs: 13_000, convergeMs: 150_000 }
  : { submitWindowMs: Math.max(60_000, (JOBS / 8) * 1000), killEveryMs: [3_000, 6_000], chaosUntilMs: 0, temporalAtMs: 20_000, postgresAtMs: 42_000, convergeMs: 360_000 };
PLAN.chaosUntilMs ||= PLAN.submitWindowMs + 15_000;
/**
 * --two-backends: when the primary goes down (from the first submit) and for how long: after the Temporal restart is over
 * (while Temporal is away no job starts, so none would be running on the primary to fail over), with submits still coming.
 */
const PRIMARY_DOWN_AT_MS = Math.max(Math.round(PLAN.submitWindowMs * 0.45), PLAN.temporalAtMs + 5_000);
const PRIMARY_DOWN_MS = short ? 15_000 : 30_000;

/** Routing's settings for --two-backends: health checked every second, failover after 3 s of a down backend. */
const ROUTING_ENV: Record<string, string> = {
  BACKEND_HEALTH_CHECK_MS: '1000',
  BACKEND_CIRCUIT_FAILURES: '5',
  BACKEND_CIRCUIT_OPEN_MS: '5000',
  BACKEND_FAILOVER_AFTER_MS: '3000',
};

const SERVICE_ENV: Record<string, string> = {
  ...UNLIMITED_ADMISSION,
  LOG_LEVEL: 'warn',
  GPU_SLOTS: '16',
  GPU_SUBMITS_PER_SECOND: '200',
  // A killed dispatcher's slots come back within seconds.
  GPU_LEASE_TTL_MS: '4000',
  POLL_INTERVAL_MS: '1000',
  HEARTBEAT_TIMEOUT_MS: '3000',
  HEARTBEAT_THROTTLE_MS: '300',
  RETRY_BACKOFF_MS: '200',
  MAX_ATTEMPTS: '3',
  MAX_RUN_MS: '300000',
  RECONCILE_INTERVAL_MS: '5000',
  SIM_CAPACITY: '100',
  SIM_P50_MS: '800',
  SIM_P99_MS: '2500',
  SIM_CALLBACK_LOSS_RATE: '0.3',
  SIM_CALLBACK_DUPLICATE_RATE: '0.3',
  SIM_TRANSIENT_FAILURE_RATE: '0.1',
  WEBHOOK_ALLOWED_HOSTS: '127.0.0.0/8',
  WEBHOOK_RETRY_SCALE: '0.0002',
  WEBHOOK_TIMEOUT_MS: '2000',
  // One worker version for the whole run: a process restarted after a commit made meanwhile would otherwise poll as a
  // new version (the build id names the commit), and the jobs pinned to the old one would have no worker left.
  WORKER_BUILD_ID: 'chaos',
};

const say = (line: string) => process.stdout.write(`${line}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const between = ([lo, hi]: number[]) => lo + Math.random() * (hi - lo);

async function main(): Promise<number> {
  const began = Date.now();
  say(`${machineLine()}\nChaos: ${JOBS} jobs${short ? ' (short timeline)' : ''}; submits over ${PLAN.submitWindowMs / 1000} s, kills until ${PLAN.chaosUntilMs / 1000} s, Temporal restart at ${PLAN.temporalAtMs / 1000} s, Postgres restart at ${PLAN.postgresAtMs / 1000} s.`);
  if (twoBackends) say(`Two backends: the primary is down from ${PRIMARY_DOWN_AT_MS / 1000} s for ${PRIMARY_DOWN_MS / 1000} s.`);
  const receiver = await startWebhookReceiver((n) => ({ status: n % 7 === 0 ? 503 : 204 }));
  const cluster = await ChaosCluster.start({
    generationWorkers: 2,
    dispatchers: 2,
    env: twoBackends ? { ...SERVICE_ENV, ...ROUTING_ENV } : SERVICE_ENV,
    ...(twoBackends ? { twoBackends: { capacity: Number(SERVICE_ENV.GPU_SLOTS) } } : {}),
    log: say,
  });
  stopOnSignal(() => cluster.stop());
  say(`• started in ${((Date.now() - began) / 1000).toFixed(0)} s (state in ${cluster.dir})`);
  try {
    const users = await createUsers(cluster.apiUrl, cluster.adminApiKey, USERS, receiver.url, cluster.mailpit.uiUrl);
    const stats = newClientStats();
    const run = randomBytes(3).toString('hex');
    const t0 = Date.now();
    cluster.record(`submitting ${JOBS} jobs`);

    const submits = Promise.all(
      Array.from({ length: JOBS }, async (_, index) => {
        await sleep((index * PLAN.submitWindowMs) / JOBS);
        const body = { prompt: `chaos job ${index}`, duration_seconds: 1, resolution: '480p' };
        return submitUntilAnswered(cluster.apiUrl, { index, key: `chaos-${run}-${index}`, user: users[index % USERS] }, body, { deadline: Date.now() + 240_000, stats });
      }),
    );
    let kills = 0;
    const monkey = (async () => {
      await sleep(1_000);
      while (Date.now() - t0 < PLAN.chaosUntilMs) {
        const victims = cluster.killable;
        if (victims.length > 0) {
          await cluster.kill(victims[Math.floor(Math.random() * victims.length)], between([500, 3_000]));
          kills++;
        }
        await sleep(between(PLAN.killEveryMs));
      }
    })();
    const infrastructure = (async () => {
      await sleep(PLAN.temporalAtMs);
      await cluster.restartTemporal();
      await sleep(Math.max(0, PLAN.postgresAtMs - (Date.now() - t0)));
      await cluster.restartPostgres();
    })();
    const primaryOutage = twoBackends
      ? (async () => {
          await sleep(PRIMARY_DOWN_AT_MS);
          await setOutage(cluster, true);
          cluster.record('primary backend: down (outage: every call 503, its jobs frozen)');
          await sleep(PRIMARY_DOWN_MS);
          await setOutage(cluster, false);
          cluster.record('primary backend: back');
        })()
      : undefined;
    const [submissions] = await Promise.all([submits, monkey, infrastructure, primaryOutage]);
    cluster.record(`chaos over: ${kills} kills; every client done submitting`);
    await cluster.heal();

    const accepted = submissions.filter((s) => s.outcome === 'accepted');
    const ids = [...new Set(accepted.map((s) => s.id!))];
    const database = createDatabase(cluster.postgres.url, { max: 4 });
    const connection = await Connection.connect({ address: cluster.temporal.address });
    // The jobs' results are sealed with the cluster's payload key.
    const client = new Client({ connection, dataConverter: testDataConverter(cluster.env.PAYLOAD_KEYS) });
    try {
      const convergedIn = await converge(database.sql, client, ids);
      cluster.record(convergedIn === null ? `NOT converged within ${PLAN.convergeMs / 1000} s` : `converged: every accepted job terminal after ${(convergedIn / 1000).toFixed(0)} s`);
      const routing = twoBackends ? await routingFigures(database.sql, cluster, ids) : undefined;
      const replayMismatches = await replayEverySubmit(cluster.apiUrl, accepted);
      const counts = await checkInvariants(database.sql, client, ids, users.map((u) => u.userId), receiver.received);
      const mail = await checkMail(database.sql, ids, cluster.mailpit.uiUrl);
      const simulator = (await (await fetch(`${cluster.env.BACKEND_URL}/admin/stats`)).json()) as Record<string, number>;
      const kept = await keptSubmits(cluster.apiUrl);
      return report({ counts, mail, submissions, replayMismatches, stats, kills, cluster, simulator, kept, convergedIn, routing, webhooks: receiver.received.length, seconds: (Date.now() - began) / 1000 });
    } finally {
      await connection.close();
      await database.close();
    }
  } finally {
    await cluster.stop({ keepState: argv.includes('--keep') });
    await receiver.close();
  }
}

/**
 * Waits until every accepted job's row is terminal, its workflow has completed and its webhooks are settled; the ms it
 * took, or null at the deadline (what is still missing is then counted by the invariants).
 */
async function converge(sql: ReturnType<typeof createDatabase>['sql'], client: Client, ids: string[]): Promise<number | null> {
  const from = Date.now();
  let lastSaid = 0;
  while (Date.now() - from < PLAN.convergeMs) {
    const [terminal, pending, mailing] = [await countTerminal(sql, ids), await pendingDeliveries(sql, ids), await pendingMail(sql, ids)];
    const unfinished = terminal === ids.length && pending === 0 && mailing === 0 ? await unfinishedWorkflows(client, ids) : undefined;
    if (unfinished === 0) return Date.now() - from;
    if (Date.now() - lastSaid > 10_000) {
      say(`  … ${terminal} of ${ids.length} jobs terminal, ${pending} webhook deliveries pending, ${mailing} endings waiting for mail${unfinished ? `, ${unfinished} workflows still open` : ''}`);
      lastSaid = Date.now();
    }
    await sleep(1_000);
  }
  return null;
}

/** Every accepted submit sent once more, as a client that never saw its answer would: the same job, replayed, no charge. */
async function replayEverySubmit(apiUrl: string, accepted: Submission[]): Promise<number> {
  let mismatches = 0;
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      for (let i = next++; i < accepted.length; i = next++) {
        const s = accepted[i];
        const body = { prompt: `chaos job ${s.index}`, duration_seconds: 1, resolution: '480p' };
        const again = await submitUntilAnswered(apiUrl, s, body, { deadline: Date.now() + 30_000, stats: newClientStats() });
        if (again.id !== s.id || s.conflictingIds > 0) mismatches++;
      }
    }),
  );
  return mismatches;
}

/** Turns the primary simulator's outage knob (the operator's key: it is a failure knob). */
async function setOutage(cluster: ChaosCluster, outage: boolean): Promise<void> {
  const res = await fetch(`${cluster.env.BACKEND_URL}/admin/config`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${cluster.adminApiKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ outage }),
  });
  if (!res.ok) throw new Error(`the primary's outage knob: ${res.status} ${await res.text()}`);
}

interface RoutingFigures {
  /** Jobs that succeeded on the secondary after an attempt on the primary, or being routed away from it. */
  failover_jobs: number;
  /** Of those, the ones that had a backend job on the primary (they left it mid-attempt, or after it failed there). */
  failover_jobs_started_on_primary: number;
  /** Jobs by the backend that ran them (their last attempt to reach one). */
  jobs_by_backend: Record<string, number>;
  /** Backend jobs still queued or running on either simulator once every job ended and every owed cancel was sent. */
  orphan_backend_jobs: number;
  /** Cancels owed to the primary for jobs abandoned when they failed over, still unsent at the end (should be 0). */
  owed_cancels: number;
  primary: Record<string, number>;
  secondary: Record<string, number>;
}

/**
 * After convergence: how many jobs failed over, and how many backend jobs no job owns are still live. Every job has ended
 * by now, so any backend job queued or running on either simulator belongs to nobody; cancels owed for jobs abandoned on
 * the primary are given until the deadline to be sent (the sweeper tries each with backoff up to 30 s).
 */
async function routingFigures(sql: ReturnType<typeof createDatabase>['sql'], cluster: ChaosCluster, ids: string[]): Promise<RoutingFigures> {
  const stats = async (url: string) => (await (await fetch(`${url}/admin/stats`)).json()) as Record<string, number>;
  const live = (s: Record<string, number>) => (s.running ?? 0) + (s.queued ?? 0);
  const deadline = Date.now() + 90_000;
  const read = async () => {
    const [{ owed }] = await sql<{ owed: number }[]>`select count(*)::int as owed from backend_cancels`;
    return { owed, primary: await stats(cluster.env.BACKEND_URL), secondary: await stats(cluster.env.SECONDARY_BACKEND_URL) };
  };
  let seen = await read();
  while ((seen.owed > 0 || live(seen.primary) + live(seen.secondary) > 0) && Date.now() < deadline) {
    await sleep(1_000);
    seen = await read();
  }
  const { owed, primary, secondary } = seen;
  const failedOver = await sql<{ id: string }[]>`
    select id from generations
    where id = any(${ids}) and status = 'succeeded' and backend = 'secondary' and failed_over_from = 'primary'`;
  // The primary's own record of the jobs it was given, by our job id (the client key's first part).
  const onPrimary = (await (await fetch(`${cluster.env.BACKEND_URL}/admin/jobs`)).json()) as { data: Array<{ client_key: string }> };
  const startedOnPrimary = new Set(onPrimary.data.map((j) => j.client_key.split(':run:')[0]));
  const byBackend = await sql<{ backend: string | null; n: number }[]>`
    select backend, count(*)::int as n from generations where id = any(${ids}) group by backend order by backend`;
  return {
    failover_jobs: failedOver.length,
    failover_jobs_started_on_primary: failedOver.filter((r) => startedOnPrimary.has(r.id)).length,
    jobs_by_backend: Object.fromEntries(byBackend.map((r) => [r.backend ?? 'none', r.n])),
    orphan_backend_jobs: live(primary) + live(secondary),
    owed_cancels: owed,
    primary,
    secondary,
  };
}

/** Submits the API kept while Temporal could not be reached (its vg_submits_kept_total); null if it cannot say. */
async function keptSubmits(apiUrl: string): Promise<number | null> {
  const metrics = await fetch(`${apiUrl}/metrics`).then((r) => r.text(), () => '');
  const value = /^vg_submits_kept_total (\S+)$/m.exec(metrics)?.[1];
  return value === undefined ? null : Number(value);
}

interface Outcome {
  counts: InvariantCounts;
  mail: MailCounts;
  submissions: Submission[];
  replayMismatches: number;
  stats: ReturnType<typeof newClientStats>;
  kills: number;
  cluster: ChaosCluster;
  simulator: Record<string, number>;
  kept: number | null;
  convergedIn: number | null;
  /** --two-backends only. */
  routing?: RoutingFigures;
  webhooks: number;
  seconds: number;
}

function report({ counts, mail, submissions, replayMismatches, stats, kills, cluster, simulator, kept, convergedIn, routing, webhooks, seconds }: Outcome): number {
  const notAccepted = submissions.filter((s) => s.outcome !== 'accepted');
  // A submit whose admission committed is kept while Temporal is away: no 5xx from its stop until it answers again.
  const { serverErrorSpans, ...clientStats } = stats;
  const duringTemporalRestart = serverErrorSpans.filter((e) => cluster.temporalOutages.some((o) => e.answeredAt >= o.from && e.sentAt <= o.to)).length;
  const must = (figure: string, value: number, zero = true): Row => ({ section: 'invariant', figure, value: String(value), goal: zero ? '0' : '', met: value === 0 });
  const info = (section: string, figure: string, value: string | number): Row => ({ section, figure, value: String(value) });
  const rows: Row[] = [
    info('jobs', 'submitted (distinct Idempotency-Keys)', submissions.length),
    info('jobs', 'accepted (202)', counts.accepted),
    { section: 'jobs', figure: 'terminal', value: String(counts.terminal), goal: `= ${counts.accepted}`, met: counts.terminal === counts.accepted },
    must('jobs lost', counts.lost),
    must('submits never accepted', notAccepted.length),
    must('duplicate in-app notifications', counts.duplicate_notifications),
    must('terminal jobs without a notification', counts.missing_notifications),
    must('endings mailed more than once', mail.endings_mailed_twice),
    must('endings recorded as mailed that never arrived', mail.sent_not_arrived),
    must('endings left claimed by a send without an outcome', mail.queued.sending ?? 0),
    must('webhook events with more than one id', counts.multi_id_webhook_events),
    must('double charges', counts.double_charges),
    must('unsettled reservations', counts.unsettled_charges),
    must('unbalanced credit accounts', counts.unbalanced_accounts),
    must('projection rows that disagree with Temporal', counts.diverged_rows),
    must('replayed submits answered with another job', replayMismatches),
    must('submit 5xx answers during the Temporal restart', duringTemporalRestart),
    ...(routing
      ? [
          { section: 'routing', figure: 'failover_jobs: finished on the secondary after the primary', value: String(routing.failover_jobs), goal: '> 0', met: routing.failover_jobs > 0 },
          must('orphan_backend_jobs: backend jobs live that no job owns', routing.orphan_backend_jobs),
          must('cancels still owed to the primary', routing.owed_cancels),
          info('routing', 'jobs by backend', Object.entries(routing.jobs_by_backend).map(([b, n]) => `${b} ${n}`).join(', ')),
          info('routing', 'of which had a job on the primary first (left it mid-attempt or after it failed)', routing.failover_jobs_started_on_primary),
          info('routing', "primary's jobs canceled (owed cancels that landed before the job ended there)", routing.primary.canceled ?? '?'),
          info('routing', 'primary: submitted / succeeded / canceled', `${routing.primary.submitted ?? '?'} / ${routing.primary.succeeded ?? '?'} / ${routing.primary.canceled ?? '?'}`),
          info('routing', 'secondary: submitted / succeeded / canceled', `${routing.secondary.submitted ?? '?'} / ${routing.secondary.succeeded ?? '?'} / ${routing.secondary.canceled ?? '?'}`),
        ]
      : []),
    info('chaos', 'SIGKILLs of workers and dispatchers', kills),
    info('chaos', 'Temporal server restarts', 1),
    info('chaos', 'Postgres restarts', 1),
    info('chaos', 'processes that exited by themselves (restarted)', cluster.unexpectedExits),
    info('chaos', 'callbacks dropped / duplicated by the backend', `${simulator.callbacks_dropped ?? '?'} / ${simulator.callbacks_duplicated ?? '?'}`),
    info('chaos', 'backend generations failed (transient) / succeeded', `${simulator.failed ?? '?'} / ${simulator.succeeded ?? '?'}`),
    info('clients', 'submit requests (5xx / connection errors / 429)', `${stats.requests} (${stats.serverErrors} / ${stats.connectionErrors} / ${stats.throttled})`),
    info('clients', 'submits kept while Temporal was away (started later)', kept ?? '?'),
    info('clients', 'webhook requests received', webhooks),
    info('mail', 'digest mails received / endings in them', `${mail.mails} / ${mail.endings_mailed}`),
    info('mail', 'endings queued for mail, by outcome', Object.entries(mail.queued).map(([status, n]) => `${status} ${n}`).join(', ') || 'none'),
    info('time', 'convergence after chaos', convergedIn === null ? 'not within the deadline' : `${(convergedIn / 1000).toFixed(0)} s`),
    info('time', 'whole run', `${seconds.toFixed(0)} s`),
  ];
  const failed = rows.filter((r) => r.met === false);
  say(`\n▶ chaos after ${seconds.toFixed(0)} s — ${failed.length === 0 ? 'every invariant held' : `${failed.length} invariant(s) FAILED`}`);
  say(formatTable(rows));
  const figures = {
    ...counts,
    jobs_requested: submissions.length,
    not_accepted: notAccepted.length,
    not_accepted_problems: notAccepted.slice(0, 10).map((s) => s.problem ?? s.outcome),
    idempotency_mismatches: replayMismatches,
    submit_5xx_during_temporal_restart: duringTemporalRestart,
    submits_kept_while_temporal_away: kept,
    kills,
    temporal_restarts: 1,
    postgres_restarts: 1,
    unexpected_exits: cluster.unexpectedExits,
    client: clientStats,
    simulator,
    webhook_requests_received: webhooks,
    mail,
    converged_after_ms: convergedIn,
    seconds: Math.round(seconds),
    short,
    two_backends: twoBackends,
    ...(routing ? { failover_jobs: routing.failover_jobs, failover_jobs_started_on_primary: routing.failover_jobs_started_on_primary, orphan_backend_jobs: routing.orphan_backend_jobs, routing } : {}),
    events: cluster.events,
  };
  const json = writeOut('chaos.json', `${JSON.stringify(figures, null, 2)}\n`);
  const md = writeOut('chaos.md', formatMarkdown(`Chaos campaign${short ? ' (short)' : ''}${twoBackends ? ', two backends' : ''}`, rows, cluster.events.map((e) => `${(e.atMs / 1000).toFixed(1)} s: ${e.what}`)));
  say(`\nwritten: ${json}, ${md}`);
  return failed.length === 0 ? 0 : 1;
}

runMain(main);
