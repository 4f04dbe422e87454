import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { freePort } from '../scripts/lib/ports';
import type { Sql } from '../src/db/client';
import { startWebhookReceiver } from '../test/notification-helpers';
import { spawnTsProcess, type SpawnedProcess } from '../test/processes';
import type { Stack } from '../test/harness';
import { ATTACK_PARTS, type AttackPart, type AttackPlan, type NormalPlan } from './lib/abuse-child';
import { insertFinishedRows } from './lib/bulk-rows';
import { cpuMsOf, cpuMsOfAll, machineCpuMs, postgresPids, temporalPids, waitForQuiet } from './lib/costs';
import { runMain, startTestInfrastructure, withStack } from './lib/infra';
import type { PacedFigures } from './lib/paced-http';
import { formatMarkdown, formatTable, machineLine, writeOut, type Row } from './lib/report';
import { spawnService } from './lib/services';

/**
 * `npm run abuse`: one normal user's list and submit p99 at a steady rate, alone and then while hostile clients run on the
 * same API process — one user opening 2,000 event streams that resume from the start of its history, 16 connections of
 * bogus API keys, 300 sockets sending their headers slowly, one user flooding 5,000 submits and one flooding webhook
 * replays. The API runs as a child process with the default limits and log level; the normal user and the attackers
 * are processes of their own (bench/lib/abuse-child.ts). Writes bench/out/abuse.json and bench/out/abuse.md.
 */
const option = (name: string) => {
  const at = process.argv.indexOf(`--${name}`);
  return at < 0 ? undefined : process.argv[at + 1];
};
/** `--only streams,bogus,slow,flood,replay`: some hostile parts alone, to see what each costs. */
const PARTS = (option('only')?.split(',') ?? [...ATTACK_PARTS]) as AttackPart[];
/**
 * Where each process stands for the CPU. The API and what its requests wait on (Postgres for both, the Temporal server
 * for a submit's workflow start) are what is measured, the normal user's client is the instrument: they run at the
 * usual priority. The hostile clients are other people's machines, and the generation worker, which no request waits
 * on, is a host of its own in any deployment (docs/scaling.md): on this one machine they run at a lower priority, so the
 * figure is what the attack costs the API, not what the load generator and the worker's share of two cores cost it.
 * (The Temporal server ran at the worker's priority until 2026-12-06: at the attack's first second, with the machine at
 * 190 %, it was starved, and the normal user's submits waited up to 390 ms on a workflow start a server of its own
 * would have answered in milliseconds; docs/decisions.md, "Bounded under hostile clients".) `--shared-cpu` runs every
 * process at the same priority instead.
 */
const SHARED_CPU = process.argv.includes('--shared-cpu');
const NICENESS = SHARED_CPU ? { attackers: undefined, worker: undefined } : { attackers: 19, worker: 10 };
/** `--probe`: also read the API's event-loop delay from its /metrics every second (which costs it a few queries). */
const PROBE = process.argv.includes('--probe');
const PLAN = {
  /** The normal user's measurement, alone and under attack, the same length and rates (`--seconds`). */
  seconds: Number(option('seconds') ?? 60),
  listPerSecond: 20,
  submitsPerSecond: 4,
  /** The streaming user's history: events older than any resume window, so a resume from 0 asks for all of them. */
  historyEvents: 500,
  historyAgeHours: 2,
  streams: 2_000,
  streamsPerSecond: 200,
  bogusConnections: 16,
  bogusPerSecond: 400,
  slowSockets: 300,
  submitFlood: 5_000,
  submitFloodPerSecond: 200,
  replayPerSecond: 100,
};

/** Every user submits within a token bucket (burst 20, 5 per second); nothing else limits them here. */
const ADMISSION = {
  RATE_LIMIT_BURST: '20',
  RATE_LIMIT_PER_SECOND: '5',
  TIER_MAX_ACTIVE_JOBS: 'free:1000000,pro:1000000,enterprise:1000000',
  TIER_DAILY_QUOTA: 'free:1000000,pro:1000000,enterprise:1000000',
  TIER_BACKLOG_PER_SLOT: 'free:1000000,pro:1000000,enterprise:1000000',
  CREDIT_GRANTS: 'free:100000000,pro:100000000,enterprise:100000000',
};

const say = (line: string) => process.stdout.write(`${line}\n`);
const step = (line: string) => say(`\n▶ ${line}`);
const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;

/** Runs bench/lib/abuse-child.ts in `mode` with `plan`; its figures. */
async function runChild<T>(mode: 'normal' | 'attack', plan: object): Promise<T> {
  const child = spawnTsProcess({
    name: `abuse-${mode}`,
    script: 'bench/lib/abuse-child.ts',
    args: [mode],
    env: { ABUSE_PLAN: JSON.stringify(plan) },
    niceness: mode === 'attack' ? NICENESS.attackers : undefined,
  });
  const { code } = await child.exited;
  const result = /^RESULT (.*)$/m.exec(child.output());
  if (code !== 0 || !result) throw new Error(`abuse-${mode} exited ${code}; see ${child.logFile}\n${child.output().slice(-2000)}`);
  return JSON.parse(result[1]) as T;
}

/** Resident memory of a process, MiB (NaN once it is gone). */
function rssMib(pid: number): number {
  try {
    const kb = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kb ? Number(kb) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Connections the kernel dropped because a listening socket's accept queue was full (this whole machine: TcpExt). */
function listenOverflows(): number {
  const [names, values] = fs.readFileSync('/proc/net/netstat', 'utf8').split('\n').filter((line) => line.startsWith('TcpExt:'));
  const at = names.split(' ').indexOf('ListenOverflows');
  return at < 0 ? Number.NaN : Number(values.split(' ')[at]);
}

/**
 * How long the API itself took over the normal user's list requests (and every other GET of the route, e.g. bogus keys',
 * which are answered before the route), by its own histogram: cumulative counts per upper bound in seconds.
 */
async function listDurations(apiUrl: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${apiUrl}/metrics`)).text();
  const counts: Record<string, number> = {};
  for (const [, le, n] of text.matchAll(/^vg_http_request_duration_seconds_bucket\{le="([^"]+)",method="GET",route="\/v1\/generations\/",status="2xx"\} (\d+)$/gm)) {
    counts[le] = Number(n);
  }
  return counts;
}

/** Young (minor) and full (major) collections: how many, and the ms they paused the API for. */
const gcLine = (gc: Record<string, number>) =>
  `minor ${gc.minor_count ?? 0} (${gc.minor_ms ?? 0} ms), major ${gc.major_count ?? 0} (${gc.major_ms ?? 0} ms), incremental ${gc.incremental_count ?? 0} (${gc.incremental_ms ?? 0} ms)`;

/** The API's garbage-collection pauses so far, by kind (minor, major, incremental, weakcb): how many, and their total ms. */
async function gcPauses(apiUrl: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${apiUrl}/metrics`)).text();
  const totals: Record<string, number> = {};
  for (const [, what, kind, value] of text.matchAll(/^vg_process_nodejs_gc_duration_seconds_(count|sum)\{kind="([^"]+)"\} (\S+)$/gm)) {
    totals[`${kind}_${what === 'sum' ? 'ms' : 'count'}`] = what === 'sum' ? Math.round(Number(value) * 1000) : Number(value);
  }
  return totals;
}

const minus = (after: Record<string, number>, before: Record<string, number>) =>
  Object.fromEntries(Object.entries(after).map(([le, n]) => [le, n - (before[le] ?? 0)]));

async function transactions(sql: Sql): Promise<number> {
  const [row] = await sql<{ n: string }[]>`select xact_commit + xact_rollback as n from pg_stat_database where datname = current_database()`;
  return Number(row.n);
}

/** A user's event history, written straight into the change feed, `ageHours` old. */
async function seedHistory(sql: Sql, userId: string, events: number, ageHours: number): Promise<void> {
  await sql`
    insert into generation_events (user_id, job_id, type, payload, created_at)
    select ${userId}, 'gen_history_' || (i % 50), 'generation.updated',
           jsonb_build_object('generation_id', 'gen_history_' || (i % 50), 'status', 'running', 'progress', i::float8 / ${events},
                              'attempt', 1, 'queue_position', null, 'video_url', null, 'error', null, 'updated_at', now()),
           now() - ${ageHours} * interval '1 hour' + i * interval '1 second'
    from generate_series(1, ${events}::int) as i`;
}

/** Cancels the user's queued jobs through the API, eight at a time, and waits until none is queued; how many there were. */
async function cancelQueued(sql: Sql, apiUrl: string, user: { userId: string; apiKey: string }): Promise<number> {
  const queued = await sql<{ id: string }[]>`select id from generations where user_id = ${user.userId} and status_rank = 0`;
  const ids = queued.map((row) => row.id);
  const cancelOne = async (id: string) => {
    const res = await fetch(`${apiUrl}/v1/generations/${id}/cancel`, { method: 'POST', headers: { authorization: `Bearer ${user.apiKey}` } });
    if (res.status >= 300 && res.status !== 409) throw new Error(`cancel ${id}: ${res.status} ${await res.text()}`);
  };
  for (let i = 0; i < ids.length; i += 8) await Promise.all(ids.slice(i, i + 8).map(cancelOne));
  const deadline = Date.now() + 120_000;
  for (;;) {
    const [{ n }] = await sql<{ n: number }[]>`select count(*)::int as n from generations where user_id = ${user.userId} and status_rank = 0`;
    if (n === 0) return ids.length;
    if (Date.now() > deadline) throw new Error(`${n} of the normal user's jobs still queued 120 s after their cancel`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** A webhook endpoint of the user and one finished delivery to it: what the replay flood replays. */
async function seedDelivery(stack: Stack, apiUrl: string, apiKey: string, receiverUrl: string): Promise<string> {
  const res = await fetch(`${apiUrl}/v1/webhook-endpoints`, {
    method: 'POST',
    headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ url: receiverUrl }),
  });
  if (res.status !== 201) throw new Error(`create endpoint: ${res.status} ${await res.text()}`);
  const endpoint = (await res.json()) as { id: string };
  const [{ user_id: userId }] = await stack.database.sql<{ user_id: string }[]>`select user_id from webhook_endpoints where id = ${endpoint.id}`;
  const deliveryId = `whd_abuse_${randomBytes(6).toString('hex')}`;
  await stack.database.sql`
    insert into webhook_deliveries (id, user_id, job_id, endpoint_id, event_type, webhook_id, url, body, status, attempts)
    values (${deliveryId}, ${userId}, 'gen_abuse_replayed', ${endpoint.id}, 'generation.succeeded', ${`msg_${deliveryId}`}, ${receiverUrl},
            '{"type":"generation.succeeded","data":{}}', 'succeeded', 1)`;
  return `/v1/webhook-endpoints/${endpoint.id}/deliveries/${deliveryId}/replay`;
}

/** The client process's own event-loop delay over its run. */
interface LoopDelay {
  p99Ms: number;
  maxMs: number;
}
interface NormalFigures {
  list: PacedFigures;
  submit: PacedFigures;
  loopDelay: LoopDelay;
}
interface AttackFigures {
  streams: { outcomes: Record<string, number>; accepted: number; endedByServer: number; events: number; bytes: number; eventTypes: Record<string, number> };
  bogusTokens: PacedFigures;
  slowSockets: { opened: number; answers: Record<string, number>; openAfterCheck: number; firstClosedMs: number | null; lastClosedMs: number | null; connectErrors: number };
  submitFlood: PacedFigures;
  replayFlood: PacedFigures;
  loopDelay: LoopDelay;
}

/** Answers other than the expected success, dropped requests included. */
const failures = (f: PacedFigures, ok: string) => f.dropped + Object.entries(f.outcomes).reduce((n, [key, count]) => n + (key === ok ? 0 : count), 0);

/** Answers that are a 5xx other than 503 with an error code, or an error without a JSON error code. */
function badAnswers(outcomes: Record<string, number>): number {
  return Object.entries(outcomes).reduce((n, [key, count]) => {
    const status = Number(key.split(' ')[0]);
    const bare = key.includes('(');
    return n + ((status >= 500 && status !== 503) || (status >= 400 && bare) ? count : 0);
  }, 0);
}

async function main(): Promise<number> {
  const began = Date.now();
  say(machineLine());
  const infrastructure = await startTestInfrastructure();
  try {
    // The generation worker (the jobs the floods get admitted start there) is a process of its own, like the API.
    return await withStack({ env: { ...ADMISSION }, inProcessWorkers: false }, async (stack) => {
      const temporal = temporalPids(process.env.TEST_TEMPORAL_ADDRESS);
      const worker = await spawnService('generation', 'abuse-worker', { ...stack.env, LOG_LEVEL: 'warn' }, { niceness: NICENESS.worker });
      const receiver = await startWebhookReceiver();
      const port = await freePort();
      const apiUrl = `http://127.0.0.1:${port}`;
      // The stack's environment without the tests' own relaxation of the failed-authentication limit: the defaults apply.
      const { AUTH_FAILURE_BURST: _relaxed, ...env } = stack.env;
      // The API at the shipped log level: the lines it writes for each request, and for each refusal, are part of what an
      // attack costs it (and its log pipeline).
      const api: SpawnedProcess = await spawnService('api', 'abuse-api', { ...env, PORT: String(port), ADMIN_API_KEY: stack.adminApiKey, LOG_LEVEL: 'info' });
      const apiLogLines = () => api.output().split('\n').length - 1;
      let apiExit: string | undefined;
      void api.exited.then((e) => (apiExit = `exited with ${e.code ?? e.signal}`));
      try {
        step('setting up: a normal user with 2,000 finished jobs, a streaming user with an old history, a flooder, a replayer');
        const [normal, streamer, flooder, replayer] = [await stack.createUser('pro'), await stack.createUser('pro'), await stack.createUser('pro'), await stack.createUser('pro')];
        await insertFinishedRows(stack.database.sql, normal.userId, 0, 2_000);
        await seedHistory(stack.database.sql, streamer.userId, PLAN.historyEvents, PLAN.historyAgeHours);
        const replayPath = await seedDelivery(stack, apiUrl, replayer.apiKey, receiver.url);
        // Every user has used its key on this API before, as users of a service in production have.
        for (const { apiKey } of [normal, streamer, flooder, replayer]) {
          const res = await fetch(`${apiUrl}/v1/usage`, { headers: { authorization: `Bearer ${apiKey}` } });
          if (res.status !== 200) throw new Error(`usage: ${res.status} ${await res.text()}`);
        }
        const normalPlan = (startAt: number): NormalPlan & { startAt: number } => ({
          baseUrl: apiUrl,
          apiKey: normal.apiKey,
          seconds: PLAN.seconds,
          listPerSecond: PLAN.listPerSecond,
          submitsPerSecond: PLAN.submitsPerSecond,
          startAt,
        });

        await waitForQuiet(stack.database.sql);
        step(`baseline: the normal user alone, ${PLAN.listPerSecond} lists/s and ${PLAN.submitsPerSecond} submits/s for ${PLAN.seconds} s`);
        const xactsBefore = await transactions(stack.database.sql);
        const listsBefore = await listDurations(apiUrl);
        const gcBefore = await gcPauses(apiUrl);
        const linesBefore = apiLogLines();
        const baseline = await runChild<NormalFigures>('normal', normalPlan(Date.now() + 3_000));
        const baselineLines = apiLogLines() - linesBefore;
        const baselineLists = minus(await listDurations(apiUrl), listsBefore);
        const baselineGc = minus(await gcPauses(apiUrl), gcBefore);
        const baselineXacts = (await transactions(stack.database.sql)) - xactsBefore;
        const rssBaseline = rssMib(api.pid);
        say(`  list p99 ${baseline.list.p99Ms} ms, submit p99 ${baseline.submit.p99Ms} ms; API RSS ${rssBaseline.toFixed(0)} MiB`);

        // Nothing here runs the jobs (no GPU dispatcher): the baseline's stay queued, and a list's queue positions cost more
        // the longer the queue. Both phases start from the same empty queue: the baseline's jobs are canceled.
        const canceled = await cancelQueued(stack.database.sql, apiUrl, normal);
        say(`  canceled the baseline's ${canceled} queued jobs, so the attack starts on the same empty queue`);
        await waitForQuiet(stack.database.sql);
        step('under attack: the same normal user while every hostile client runs');
        const startAt = Date.now() + 3_000;
        const attackPlan: AttackPlan & { startAt: number } = {
          baseUrl: apiUrl,
          seconds: PLAN.seconds,
          startAt,
          parts: PARTS,
          streams: { apiKey: streamer.apiKey, count: PLAN.streams, perSecond: PLAN.streamsPerSecond, lastEventId: '0' },
          bogusTokens: { connections: PLAN.bogusConnections, perSecond: PLAN.bogusPerSecond },
          slowSockets: { count: PLAN.slowSockets, lineEveryMs: 1_000, checkAfterMs: 15_000 },
          submitFlood: { apiKey: flooder.apiKey, amount: PLAN.submitFlood, perSecond: PLAN.submitFloodPerSecond, connections: 16 },
          replayFlood: { apiKey: replayer.apiKey, path: replayPath, perSecond: PLAN.replayPerSecond, connections: 8 },
        };
        let rssPeak = rssBaseline;
        const sampler = setInterval(() => {
          const rss = rssMib(api.pid);
          if (rss > rssPeak) rssPeak = rss;
        }, 250);
        // Where the machine's CPU went, second by second, % of one core: the API process, Postgres, the Temporal server,
        // the generation worker, and the whole machine (the clients' processes are most of the rest).
        const pgPids = await postgresPids(stack.database.sql);
        const cpuTimeline: Array<{ api: number; postgres: number; temporal: number; worker: number; machine: number; api_loop_delay_max_ms?: number }> = [];
        const cpuNow = () => ({ api: cpuMsOf(api.pid), postgres: cpuMsOfAll(pgPids), temporal: cpuMsOfAll(temporal), worker: cpuMsOf(worker.pid), machine: machineCpuMs() });
        let lastCpu = cpuNow();
        const cpuSampler = setInterval(() => {
          const now = cpuNow();
          const percent = (key: keyof typeof now) => Math.round((now[key] - lastCpu[key]) / 10);
          const second: (typeof cpuTimeline)[number] = {
            api: percent('api'),
            postgres: percent('postgres'),
            temporal: percent('temporal'),
            worker: percent('worker'),
            machine: percent('machine'),
          };
          cpuTimeline.push(second);
          lastCpu = now;
          if (PROBE) {
            void fetch(`${apiUrl}/metrics`)
              .then((r) => r.text())
              .then((text) => {
                const lag = /^vg_process_nodejs_eventloop_lag_max_seconds (\S+)$/m.exec(text)?.[1];
                if (lag) second.api_loop_delay_max_ms = Math.round(Number(lag) * 1000);
              })
              .catch(() => undefined);
          }
        }, 1_000);
        const xactsAtAttack = await transactions(stack.database.sql);
        const listsAtAttack = await listDurations(apiUrl);
        const gcAtAttack = await gcPauses(apiUrl);
        const overflowsBefore = listenOverflows();
        const linesAtAttack = apiLogLines();
        const [attack, underAttack] = await Promise.all([runChild<AttackFigures>('attack', attackPlan), runChild<NormalFigures>('normal', normalPlan(startAt))]);
        const attackLines = apiLogLines() - linesAtAttack;
        clearInterval(sampler);
        clearInterval(cpuSampler);
        const attackXacts = (await transactions(stack.database.sql)) - xactsAtAttack;
        const overflows = listenOverflows() - overflowsBefore;
        const attackLists = minus(await listDurations(apiUrl), listsAtAttack);
        const attackGc = minus(await gcPauses(apiUrl), gcAtAttack);
        const deliveredReplays = receiver.received.length;

        const listRatio = underAttack.list.p99Ms / baseline.list.p99Ms;
        const submitRatio = underAttack.submit.p99Ms / baseline.submit.p99Ms;
        const hostile = {
          streams: attack.streams.outcomes,
          bogus_tokens: attack.bogusTokens.outcomes,
          slow_sockets: attack.slowSockets.answers,
          submit_flood: attack.submitFlood.outcomes,
          replay_flood: attack.replayFlood.outcomes,
        };
        const figures = {
          normal_p99_ratio: round(Math.max(listRatio, submitRatio)),
          normal_errors: failures(underAttack.list, '200') + failures(underAttack.submit, '202'),
          sse_accepted_per_user: attack.streams.accepted,
          slow_sockets_open_after_15s: attack.slowSockets.openAfterCheck,
          api_rss_mib: Math.round(rssPeak),
          api_log_lines: { alone: baselineLines, under_attack: attackLines },
          hostile,
          hostile_bad_answers: Object.values(hostile).reduce((n, outcomes) => n + badAnswers(outcomes), 0),
          api_alive: apiExit === undefined,
          details: {
            plan: { ...PLAN, parts: PARTS },
            niceness: SHARED_CPU ? 'every process at the same priority (--shared-cpu)' : { api_postgres_temporal_normal_client: 0, worker: NICENESS.worker, attackers: NICENESS.attackers },
            cpu_percent_per_second_from_3s_before_the_attack: cpuTimeline,
            normal_loop_delay_ms: { baseline: baseline.loopDelay, under_attack: underAttack.loopDelay },
            api_list_seconds_cumulative_by_bound: { baseline: baselineLists, under_attack: attackLists },
            api_gc_pauses: { baseline: baselineGc, under_attack: attackGc },
            list_p99_ratio: round(listRatio),
            submit_p99_ratio: round(submitRatio),
            baseline,
            under_attack: underAttack,
            baseline_errors: failures(baseline.list, '200') + failures(baseline.submit, '202'),
            streams: attack.streams,
            slow_sockets: attack.slowSockets,
            bogus_tokens: attack.bogusTokens,
            submit_flood: attack.submitFlood,
            replay_flood: attack.replayFlood,
            webhook_requests_received: deliveredReplays,
            api_rss_mib_baseline: Math.round(rssBaseline),
            postgres_xacts_per_s_baseline: Math.round(baselineXacts / PLAN.seconds),
            postgres_xacts_per_s_under_attack: Math.round(attackXacts / PLAN.seconds),
            api_exit: apiExit ?? null,
            attacker_loop_delay_ms: attack.loopDelay,
            listen_overflows_on_this_machine_during_the_attack: overflows,
          },
        };
        const outcomes = (o: Record<string, number>, dropped = 0) =>
          [...Object.entries(o).map(([k, n]) => `${k}: ${n}`), ...(dropped ? [`not sent (server too slow): ${dropped}`] : [])].join(', ');
        const rows: Row[] = [
          { section: 'normal', figure: 'list p99 alone → under attack', value: `${baseline.list.p99Ms} → ${underAttack.list.p99Ms} ms` },
          { section: 'normal', figure: 'submit p99 alone → under attack', value: `${baseline.submit.p99Ms} → ${underAttack.submit.p99Ms} ms` },
          { section: 'normal', figure: 'list p99 by 10 s window, alone | under attack', value: `${baseline.list.windows.map((w) => w.p99Ms).join(' ')} | ${underAttack.list.windows.map((w) => w.p99Ms).join(' ')} ms` },
          { section: 'normal', figure: 'p99 ratio (the worse of the two)', value: String(figures.normal_p99_ratio), goal: '≤ 2', met: figures.normal_p99_ratio <= 2 },
          { section: 'normal', figure: 'errors under attack', value: String(figures.normal_errors), goal: '0', met: figures.normal_errors === 0 },
          { section: 'streams', figure: `${PLAN.streams} streams of one user, resumed from 0`, value: outcomes(hostile.streams) },
          { section: 'streams', figure: 'accepted; events they got', value: `${figures.sse_accepted_per_user}; ${outcomes(attack.streams.eventTypes) || 'none'}` },
          { section: 'bogus keys', figure: `${PLAN.bogusConnections} connections, ${PLAN.bogusPerSecond}/s`, value: outcomes(hostile.bogus_tokens, attack.bogusTokens.dropped) },
          { section: 'slow headers', figure: `${PLAN.slowSockets} sockets, what they got`, value: outcomes(hostile.slow_sockets) },
          { section: 'slow headers', figure: 'open 15 s after connecting', value: String(figures.slow_sockets_open_after_15s), goal: '0', met: figures.slow_sockets_open_after_15s === 0 },
          { section: 'submit flood', figure: `${PLAN.submitFlood} submits at ${PLAN.submitFloodPerSecond}/s`, value: outcomes(hostile.submit_flood, attack.submitFlood.dropped) },
          { section: 'replay flood', figure: `${PLAN.replayPerSecond} replays/s`, value: outcomes(hostile.replay_flood, attack.replayFlood.dropped) },
          { section: 'replay flood', figure: 'webhook requests the receiver got', value: String(deliveredReplays) },
          { section: 'api', figure: 'RSS alone → peak under attack', value: `${figures.details.api_rss_mib_baseline} → ${figures.api_rss_mib} MiB` },
          { section: 'api', figure: `log lines written (info), ${PLAN.seconds} s alone → under attack`, value: `${baselineLines} → ${attackLines}` },
          { section: 'api', figure: `GC pauses, ${PLAN.seconds} s alone → under attack`, value: `${gcLine(baselineGc)} → ${gcLine(attackGc)}` },
          { section: 'api', figure: '5xx (other than 503) or errors without a JSON code', value: String(figures.hostile_bad_answers), goal: '0', met: figures.hostile_bad_answers === 0 },
        ];
        step(`figures after ${Math.round((Date.now() - began) / 1000)} s`);
        say(formatTable(rows));
        const json = writeOut('abuse.json', `${JSON.stringify(figures, null, 2)}\n`);
        const md = writeOut('abuse.md', formatMarkdown('Abuse', rows, [
          'Every client runs on this machine, from 127.0.0.1; the normal user and the attackers are separate processes, the API a child process with the default limits and log level (info).',
          SHARED_CPU
            ? 'Every process ran at the same CPU priority (--shared-cpu).'
            : `The API, Postgres, the Temporal server and the normal user ran at the usual CPU priority; the generation worker at nice ${NICENESS.worker}, the attackers at nice ${NICENESS.attackers} (hosts of their own in a deployment).`,
          `The normal user lists at ${PLAN.listPerSecond}/s and submits at ${PLAN.submitsPerSecond}/s (open loop; latency from when each request was due) for ${PLAN.seconds} s alone, then ${PLAN.seconds} s while the attack runs.`,
        ]));
        say(`\nwritten: ${json}, ${md}`);
        return 0;
      } finally {
        await Promise.all([api.stop(), worker.stop()]);
        await receiver.close();
      }
    });
  } finally {
    await infrastructure.stop();
  }
}

runMain(main);
