import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import postgres from 'postgres';
import { temporalBinary } from '../../scripts/lib/temporal-dev-server';
import { eventually } from '../eventually';
import { apiClient } from '../harness';
import { runRunbook } from '../runbook-commands';
import { createUser, note, setting } from './topology-env';

/**
 * A rolling upgrade under load, with the runbook's own commands (docs/runbook.md, "Roll out new worker code"): v1 workers
 * (the code before the lean run) hold 60 jobs, queued and running; v2 workers (this checkout, the lean run) start beside
 * them and are made current; new jobs run on v2, v1's jobs end on v1, v1 drains and its workers are stopped. Every fact
 * is read from Temporal: each run's versioning info and every workflow task and activity of its history.
 * Run by scripts/topology.ts before the other topology suites, which then run on v2 alone.
 */
const [api1Url, api2Url] = setting('TOPOLOGY_API_URLS').split(',');
const namespace = setting('TOPOLOGY_TEMPORAL_NAMESPACE');
const deploymentName = setting('TOPOLOGY_DEPLOYMENT_NAME');
const v1 = { buildId: setting('TOPOLOGY_V1_BUILD_ID'), identities: setting('TOPOLOGY_V1_WORKER_IDENTITIES').split(',') };
const v2 = { buildId: setting('TOPOLOGY_V2_BUILD_ID'), identities: [] as string[] };
const adminKey = setting('TOPOLOGY_ADMIN_API_KEY');
const { VersionDrainageStatus, WorkflowTaskFailedCause } = temporal.api.enums.v1;
/**
 * The server refuses a completion that ends the run while a new event (a signal) waits, and the same worker runs the task
 * again with the event: no code failed, and a job's ending races its backend's callbacks by design. Counted, not failed;
 * every other cause (a nondeterminism error above all) fails the test.
 */
const UNHANDLED_COMMAND = WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND;
let unhandledCommands = 0;

const V1_JOBS_PER_USER = 20;
const V1_USERS = 3;
const V2_JOBS = 20;

let connection: Connection;
let client: Client;
let appDb: postgres.Sql;

beforeAll(async () => {
  connection = await Connection.connect({ address: setting('TOPOLOGY_TEMPORAL_ADDRESS') });
  client = new Client({ connection, namespace });
  appDb = postgres(setting('TOPOLOGY_DATABASE_URL'), { max: 1, onnotice: () => {} });
});

afterAll(async () => {
  // The other topology suites run with the defaults, whatever happened here.
  await setSimulator({ p50Ms: 400, p99Ms: 1_200 }).catch(() => undefined);
  await setCapacity(null).catch(() => undefined);
  await connection?.close();
  await appDb?.end({ timeout: 5 });
});

const runbookEnv = () => ({
  PATH: `${path.dirname(temporalBinary())}:${process.env.PATH}`,
  HOME: process.env.HOME ?? '/tmp',
  TEMPORAL_ADDRESS: setting('TOPOLOGY_TEMPORAL_ADDRESS'),
  GENERATION_TASK_QUEUE: 'generation',
  WORKER_DEPLOYMENT_NAME: deploymentName,
  OLD_BUILD_ID: v1.buildId,
  NEW_BUILD_ID: v2.buildId,
});
const runbook = (name: string) => runRunbook(name, runbookEnv());
/**
 * A describe of a version the server has just reported drained once answered `Worker Deployment Version not found` (the
 * server answers a describe with a query on the version's own system workflow and passes a NotFound there on as is); an
 * operator runs the step again, and so does the test, on that answer only and for at most 30 s.
 */
async function runbookAgainIfNotFound(name: string): Promise<string> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      return await runbook(name);
    } catch (err) {
      if (Date.now() > deadline || !String(err).includes('Worker Deployment Version not found')) throw err;
      note(`${name}: the server answered "Worker Deployment Version not found"; asking again`);
      await new Promise((r) => setTimeout(r, 1_000));
    }
  }
}

async function call(url: string, method: string, body?: unknown): Promise<unknown> {
  const res = await fetch(url, {
    method,
    headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${await res.text()}`);
  return res.json();
}
const setCapacity = (capacity: number | null) => call(`${api1Url}/admin/capacity`, 'PUT', { capacity });
const setSimulator = (knobs: { p50Ms: number; p99Ms: number }) => call(`${setting('TOPOLOGY_SIMULATOR_URL')}/admin/config`, 'PUT', knobs);
const control = (route: string) => call(`${setting('TOPOLOGY_CONTROL_URL')}${route}`, 'POST');

async function statuses(ids: string[]): Promise<Record<string, number>> {
  const rows = await appDb<Array<{ status: string; n: number }>>`select status, count(*)::int as n from generations where id = any(${ids}) group by status`;
  return Object.fromEntries(rows.map((r) => [r.status, r.n]));
}

const countOpenOn = async (buildId: string) =>
  Number(
    (
      await connection.workflowService.countWorkflowExecutions({
        namespace,
        query: `TemporalWorkerDeploymentVersion = '${deploymentName}:${buildId}' AND ExecutionStatus = 'Running'`,
      })
    ).count,
  );

/**
 * Where one run ran: its versioning info, and the builds and identities of every workflow task and activity of its
 * history, with the dispatcher its row names (a run that ends on a success heard by callback leaves its GPU activity
 * unreported: the history records no start, and so no identity, for it).
 */
async function whereRan(workflowId: string) {
  const handle = client.workflow.getHandle(workflowId);
  const described = (await handle.describe()).raw.workflowExecutionInfo;
  const info = described?.versioningInfo;
  const events = (await handle.fetchHistory()).events ?? [];
  const builds = new Set<string>();
  const identities = new Set<string>();
  const failedTasks: string[] = [];
  let raced = 0;
  for (const e of events) {
    if (e.workflowTaskCompletedEventAttributes) builds.add(e.workflowTaskCompletedEventAttributes.deploymentVersion?.buildId ?? '(unversioned)');
    if (e.workflowTaskStartedEventAttributes?.identity) identities.add(e.workflowTaskStartedEventAttributes.identity);
    if (e.activityTaskStartedEventAttributes?.identity) identities.add(e.activityTaskStartedEventAttributes.identity);
    const failed = e.workflowTaskFailedEventAttributes;
    if (failed?.cause === UNHANDLED_COMMAND) raced++;
    else if (failed) failedTasks.push(`${workflowId}: ${failed.cause} ${failed.failure?.message ?? ''} (${failed.identity})`.slice(0, 600));
  }
  unhandledCommands += raced;
  const [row] = await appDb<Array<{ dispatcher: string | null }>>`select dispatcher from generations where id = ${workflowId}`;
  if (row?.dispatcher) identities.add(row.dispatcher);
  return { status: described?.status, behavior: info?.behavior, buildId: info?.deploymentVersion?.buildId, builds: [...builds], identities: [...identities], failedTasks };
}

test('a rolling upgrade: v1 keeps its 60 jobs in flight to their end, new jobs run on v2, v1 drains and stops', async () => {
  // The server was brand new: v1's first worker made v1 current (src/worker-deployment.ts).
  expect(await runbook('deployment-describe')).toContain(v1.buildId);

  // 60 jobs on v1, queued and running: two GPU slots, held for a minute by the first two jobs (longer than v2 takes to
  // start on a busy machine), so the rest wait in the GPU queue across the switch.
  await setCapacity(2);
  await setSimulator({ p50Ms: 60_000, p99Ms: 65_000 });
  const users = await Promise.all(Array.from({ length: V1_USERS }, () => createUser(api1Url)));
  const v1Jobs = (
    await Promise.all(
      users.map(async ({ apiKey }, u) => {
        const api = apiClient(u % 2 ? api2Url : api1Url, apiKey);
        const ids: string[] = [];
        for (let i = 0; i < V1_JOBS_PER_USER; i++) {
          const res = await api.submit({ prompt: `v1 job ${i} of user ${u}`, duration_seconds: 2, resolution: '480p' });
          expect(res.status).toBe(202);
          ids.push(res.body.id as string);
        }
        return ids;
      }),
    )
  ).flat();
  // In flight on v1: each run's first workflow task done on v1 (from then on it is pinned there), two of them running.
  await eventually(async () => ((await countOpenOn(v1.buildId)) === v1Jobs.length ? true : undefined), { timeoutMs: 60_000, intervalMs: 500, what: `${v1Jobs.length} runs pinned to v1` });
  await eventually(async () => ((await statuses(v1Jobs)).running === 2 ? true : undefined), { timeoutMs: 60_000, intervalMs: 500, what: 'two v1 jobs running' });

  // v2 starts beside v1 and gets nothing until it is current.
  const v2StartedAt = Date.now();
  v2.identities = ((await control('/v2/start')) as { identities: string[] }).identities;
  const v2StartMs = Date.now() - v2StartedAt;
  // Every GPU slot is busy with v1's jobs, so v2's dispatchers cannot poll `gpu` yet: v2 lists `generation` only, and the
  // runbook's switch for a busy pool makes it current all the same.
  const version = await runbook('describe-new-version');
  expect(version).toContain('generation');
  const gpuJoinedBeforeSwitch = /\bgpu\b/.test(version);

  // The switch.
  const atSwitch = await statuses(v1Jobs);
  await runbook(gpuJoinedBeforeSwitch ? 'set-current-version' : 'set-current-version-busy-pool');
  const switchedAt = Date.now();
  expect(await runbook('deployment-describe')).toMatch(new RegExp(`CurrentVersionBuildID\\s+${v2.buildId.replace(/\./g, '\\.')}`));
  const inFlight = (atSwitch.queued ?? 0) + (atSwitch.running ?? 0);
  note(
    `at the switch: ${inFlight} v1 jobs in flight (${atSwitch.queued ?? 0} queued, ${atSwitch.running ?? 0} running, ${atSwitch.succeeded ?? 0} done); v2 workers took ${(v2StartMs / 1000).toFixed(1)} s to poll; v2 polled gpu before the switch: ${gpuJoinedBeforeSwitch}`,
  );
  expect(inFlight).toBeGreaterThanOrEqual(50);
  expect(atSwitch.running).toBeGreaterThanOrEqual(1);

  // New jobs, at full speed, and an auto-upgrading workflow (a reconciler pass) after the switch.
  await setSimulator({ p50Ms: 400, p99Ms: 1_200 });
  await setCapacity(6);
  const { apiKey } = await createUser(api2Url);
  const api = apiClient(api2Url, apiKey);
  const v2Jobs: string[] = [];
  for (let i = 0; i < V2_JOBS; i++) {
    const res = await api.submit({ prompt: `v2 job ${i}`, duration_seconds: 2, resolution: '480p' });
    expect(res.status).toBe(202);
    v2Jobs.push(res.body.id as string);
  }
  await runbook('reconcile');

  // Every job ends, and succeeds (read from the projection once all have ended, then each through the API).
  const all = [...v1Jobs, ...v2Jobs];
  await eventually(
    async () => {
      const { queued = 0, running = 0 } = await statuses(all);
      return queued + running === 0 ? true : undefined;
    },
    { timeoutMs: 240_000, intervalMs: 1_000, what: 'every job to end' },
  ).catch(async (err: unknown) => {
    throw new Error(`${String(err)}; v1 jobs ${JSON.stringify(await statuses(v1Jobs))}, v2 jobs ${JSON.stringify(await statuses(v2Jobs))}, open on v1 ${await countOpenOn(v1.buildId)}, on v2 ${await countOpenOn(v2.buildId)}; v2 describe: ${await runbook('describe-new-version').catch(String)}`);
  });
  const rows = await appDb<Array<{ id: string; status: string; video_url: string | null; error: unknown }>>`
    select id, status, video_url, error from generations where id = any(${all})`;
  expect(rows).toHaveLength(all.length);
  expect(rows.filter((r) => r.status !== 'succeeded' || !r.video_url).map((r) => `${r.id}: ${r.status} ${JSON.stringify(r.error)}`)).toEqual([]);

  // v1 drains: no open run pinned to it (visibility), then the server's drainage status says so (the runbook's view too).
  await eventually(async () => ((await countOpenOn(v1.buildId)) === 0 ? true : undefined), { timeoutMs: 120_000, intervalMs: 500, what: 'no open run on v1' });
  const emptyAt = Date.now();
  expect(await runbook('old-version-open-jobs')).toMatch(/\b0\b/);
  await eventually(
    async () => {
      const { workerDeploymentVersionInfo } = await connection.workflowService.describeWorkerDeploymentVersion({ namespace, deploymentVersion: { deploymentName, buildId: v1.buildId } });
      return workerDeploymentVersionInfo?.drainageInfo?.status === VersionDrainageStatus.VERSION_DRAINAGE_STATUS_DRAINED ? true : undefined;
    },
    { timeoutMs: 120_000, intervalMs: 1_000, what: 'the server to report v1 drained' },
  );
  const drainedAt = Date.now();
  expect((await runbookAgainIfNotFound('old-version-drainage')).toLowerCase()).toContain('drained');

  // Then v1's workers are stopped, and exit cleanly.
  const { exits } = (await control('/v1/stop')) as { exits: Array<{ code: number | null; signal: string | null }> };
  expect(exits).toEqual(v1.identities.map(() => ({ code: 0, signal: null })));

  // From Temporal: each v1 job pinned to v1 from its first task to its last, its GPU work on v1's dispatchers; each new
  // job the same on v2; the reconciler pass after the switch (auto-upgrade) on v2.
  const ran = async (ids: string[]) => Promise.all(ids.map(whereRan));
  const onV1 = await ran(v1Jobs);
  const onV2 = await ran(v2Jobs);
  const pinned = (build: { buildId: string; identities: string[] }) => ({
    status: temporal.api.enums.v1.WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_COMPLETED,
    behavior: temporal.api.enums.v1.VersioningBehavior.VERSIONING_BEHAVIOR_PINNED,
    buildId: build.buildId,
    builds: [build.buildId],
    identities: expect.arrayContaining([]),
    failedTasks: [],
  });
  for (const run of onV1) {
    expect(run).toEqual(pinned(v1));
    for (const identity of run.identities) expect(v1.identities).toContain(identity);
  }
  for (const run of onV2) {
    expect(run).toEqual(pinned(v2));
    for (const identity of run.identities) expect(v2.identities).toContain(identity);
  }
  const reconcilerRuns = [];
  for await (const wf of client.workflow.list({ query: `WorkflowType = 'reconcilerWorkflow' AND StartTime > '${new Date(switchedAt).toISOString()}'` })) reconcilerRuns.push(wf.workflowId);
  expect(reconcilerRuns.length).toBeGreaterThanOrEqual(1);
  for (const id of reconcilerRuns) expect(await whereRan(id)).toMatchObject({ behavior: temporal.api.enums.v1.VersioningBehavior.VERSIONING_BEHAVIOR_AUTO_UPGRADE, builds: [v2.buildId], failedTasks: [] });

  // No workflow task failed anywhere in the namespace (a nondeterminism error, a task v2 could not replay).
  let scanned = 0;
  const withFailedTasks: string[] = [];
  for await (const wf of client.workflow.list()) {
    scanned++;
    const events = (await client.workflow.getHandle(wf.workflowId, wf.runId).fetchHistory()).events ?? [];
    for (const e of events) {
      const failed = e.workflowTaskFailedEventAttributes;
      if (failed && failed.cause !== UNHANDLED_COMMAND) withFailedTasks.push(`${wf.workflowId} (${wf.type}): ${failed.cause} ${failed.failure?.message ?? ''}`.slice(0, 600));
    }
  }
  expect(withFailedTasks).toEqual([]);

  const lastV1End = Math.max(...(await appDb<Array<{ t: Date }>>`select completed_at as t from generations where id = any(${v1Jobs})`).map((r) => r.t.getTime()));
  note(`ended on v1: ${onV1.length} (all ${v1Jobs.length} in flight at the switch); ran on v2: ${onV2.length} new jobs; ${scanned} histories scanned, no WorkflowTaskFailed but ${unhandledCommands} UnhandledCommand retries (a signal racing the run's end)`);
  note(
    `drain: last v1 job ended ${((lastV1End - switchedAt) / 1000).toFixed(1)} s after the switch; no open run on v1 after ${((emptyAt - switchedAt) / 1000).toFixed(1)} s; the server reported v1 drained after ${((drainedAt - switchedAt) / 1000).toFixed(1)} s`,
  );
}, 480_000);
