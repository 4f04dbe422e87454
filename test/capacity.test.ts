import { inFlightAtSubmissions, maxInFlight } from './scheduling-metrics';
import { capacityAdmin, holdSlots, runsOf, submitMany, UNLIMITED_ADMISSION, waitForBackendEnds, waitForGpuTasks } from './fairness-helpers';
import { apiClient, eventually, startStack, type Stack } from './harness';
import { spawnWorker, type SpawnedProcess } from './processes';

/**
 * Live GPU capacity across dispatcher processes: slots are Postgres leases of the pool's live number, so several
 * dispatchers together never exceed it, a lowered number holds for every new dispatch, and a killed dispatcher's leases
 * expire instead of leaking. "In flight" is counted from the backend's own record: submission to end.
 */
const LEASE_TTL_MS = 2_000;

async function leasesOf(stack: Stack, dispatcherPid: number): Promise<number> {
  const [{ n }] = await stack.database.sql<{ n: number }[]>`
    select count(*)::int as n from gpu_slot_leases where pool = ${stack.config.dispatch.pool} and dispatcher_id like ${`${dispatcherPid}@%`}`;
  return n;
}

/** A GPU dispatcher in a process of its own (as `WORKER_ROLE=gpu npm run worker` runs it). */
async function startDispatcherProcess(stack: Stack, name: string): Promise<SpawnedProcess> {
  const dispatcher = spawnWorker({ ...stack.env, WORKER_ROLE: 'gpu', LOG_LEVEL: 'info' }, name);
  await dispatcher.waitForOutput(/worker started/, 60_000);
  return dispatcher;
}

describe('live GPU capacity, shared by every dispatcher through Postgres leases', () => {
  let stack: Stack;
  let other: SpawnedProcess | undefined;
  beforeAll(async () => {
    stack = await startStack({
      env: { ...UNLIMITED_ADMISSION, GPU_SLOTS: '3', GPU_LEASE_TTL_MS: String(LEASE_TTL_MS), SIM_P50_MS: '250', SIM_P99_MS: '600' },
      // The backend could run far more: only our own limit keeps it at the capacity.
      knobs: { capacity: 50 },
    });
  });
  afterAll(async () => {
    await other?.stop();
    await stack?.close();
  });

  test('two dispatcher processes together never have more jobs on the backend than the capacity', async () => {
    other = await startDispatcherProcess(stack, 'dispatcher-2');
    const [a, b] = await Promise.all(['pro', 'free'].map(async (tier) => apiClient(stack.apiUrl, (await stack.createUser(tier)).apiKey)));
    const jobs = [...(await submitMany(a, 12, { prompt: 'a' })), ...(await submitMany(b, 12, { prompt: 'b' }))];
    const runs = await waitForBackendEnds(stack, jobs);

    expect(maxInFlight(runs)).toBe(3);
    const [{ dispatchers }] = await stack.database.sql<{ dispatchers: number }[]>`
      select count(distinct dispatcher)::int as dispatchers from generations where id in ${stack.database.sql(jobs)}`;
    expect(dispatchers).toBe(2);

    await other.stop();
    // A dispatcher that stops gives its leases back.
    expect(await leasesOf(stack, other.pid)).toBe(0);
    other = undefined;
  });

  test('lowering the capacity mid-run: in-flight jobs finish, new dispatches follow the new number', async () => {
    const admin = capacityAdmin(stack);
    await admin.set(4);
    try {
      const { apiKey } = await stack.createUser('pro');
      const api = apiClient(stack.apiUrl, apiKey);
      // A backlog first (slots held shut), so all four slots are busy the moment they open.
      const gate = await holdSlots(stack, 4);
      const jobs = await submitMany(api, 30, { prompt: 'halving' });
      await waitForGpuTasks(stack, jobs);
      gate.release();
      // Lowered once more than the new number are on the backend at once (how soon depends on the machine's pace).
      await eventually(async () => (maxInFlight(runsOf(stack, jobs)) > 2 ? true : undefined), { what: 'more than two jobs in flight at once' });
      await admin.set(2);
      // Jobs put on a slot under the old number may reach the backend a moment after it changed: each still holds its
      // claim (a claim ends only after its backend job does), so the claims held now name every one of them.
      const claimedBefore = new Set(
        (await stack.database.sql<{ job_id: string }[]>`
          select job_id from gpu_slot_leases where pool = ${stack.config.dispatch.pool} and job_id is not null`).map((r) => r.job_id),
      );
      const loweredAt = Date.now();
      const runs = await waitForBackendEnds(stack, jobs);

      // Before: never more than 4. After: nothing claimed under the new number goes out while 2 or more are on the backend.
      expect(maxInFlight(runs.filter((r) => r.submittedAt < loweredAt))).toBeLessThanOrEqual(4);
      const afterwards = inFlightAtSubmissions(runs).filter(({ run }) => run.submittedAt > loweredAt && !claimedBefore.has(run.jobId));
      expect(afterwards.length).toBeGreaterThanOrEqual(10);
      expect(Math.max(...afterwards.map((s) => s.inFlight))).toBeLessThanOrEqual(2);
      const done = await Promise.all(jobs.map((id) => api.waitForTerminal(id)));
      expect(new Set(done.map((job) => job.status))).toEqual(new Set(['succeeded']));
    } finally {
      await admin.set(null);
    }
  });

  test('a dispatcher killed mid-run leaves no lease behind: its jobs are finished by the others, and every slot is usable again', async () => {
    const doomed = await startDispatcherProcess(stack, 'dispatcher-doomed');
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const jobs = await submitMany(api, 12, { prompt: 'crash [slow]' });
    await eventually(async () => ((await leasesOf(stack, doomed.pid)) > 0 ? true : undefined), { what: 'the doomed dispatcher to hold a lease' });

    doomed.kill('SIGKILL');
    await doomed.exited;
    await eventually(async () => ((await leasesOf(stack, doomed.pid)) === 0 ? true : undefined), {
      timeoutMs: LEASE_TTL_MS * 5,
      what: 'the dead dispatcher’s leases to be reclaimed',
    });
    const done = await Promise.all(jobs.map((id) => api.waitForTerminal(id, 120_000)));
    expect(new Set(done.map((job) => job.status))).toEqual(new Set(['succeeded']));
    // Every slot is usable again by the dispatcher left: three jobs run at once, each on a lease of its own.
    const gate = await holdSlots(stack, 3);
    expect(await capacityAdmin(stack).get()).toMatchObject({ leased_slots: 3, running_jobs: 3 });
    gate.release();
  });
});

describe('the backend’s own capacity', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({
      env: { ...UNLIMITED_ADMISSION, GPU_SLOTS: '4', GPU_CAPACITY_FROM_BACKEND: 'true', GPU_CAPACITY_REFRESH_MS: '200', SIM_P50_MS: '200', SIM_P99_MS: '400' },
      knobs: { capacity: 3 },
    });
  });
  afterAll(async () => {
    await stack?.close();
  });

  test('becomes the live capacity when the backend reports it, and an operator may only lower it', async () => {
    const admin = capacityAdmin(stack);
    expect(await eventually(async () => ((await admin.get()).capacity === 3 ? admin.get() : undefined))).toMatchObject({ backend_capacity: 3 });

    stack.setKnobs({ capacity: 1 });
    await eventually(async () => ((await admin.get()).capacity === 1 ? true : undefined), { what: 'the reported capacity of 1' });
    expect(await admin.set(3)).toMatchObject({ capacity: 1, admin_capacity: 3, backend_capacity: 1 });

    const { apiKey } = await stack.createUser('pro');
    const jobs = await submitMany(apiClient(stack.apiUrl, apiKey), 5, { prompt: 'one at a time' });
    expect(maxInFlight(await waitForBackendEnds(stack, jobs))).toBe(1);
    await admin.set(null);
  });
});
