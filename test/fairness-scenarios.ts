import { gpuBacklog } from './gpu-backlog';
import { handoffs, inFlightAtSubmissions, jainIndex, maxInFlight, percentile, utilisation } from './scheduling-metrics';
import { capacityAdmin, dispatchOrder, holdSlots, ownersOf, runsOf, smallJob, submitMany, waitForBackendEnds, waitForGpuTasks, type Api } from './fairness-helpers';
import { apiClient, eventually, type Stack } from './harness';

/**
 * GPU scheduling scenarios on a running stack, shared by the tests (small) and `npm run bench:fairness` (large). Each
 * returns its figures; the caller decides what to assert or print.
 */
const newApi = async (stack: Stack, tier: string) => apiClient(stack.apiUrl, (await stack.createUser(tier)).apiKey);

/** When the job's first GPU task entered the `gpu` queue (from its workflow history). */
async function gpuTaskScheduledAt(stack: Stack, jobId: string): Promise<number> {
  const history = await stack.client.workflow.getHandle(jobId).fetchHistory();
  const scheduled = history.events?.find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'runGeneration');
  if (!scheduled?.eventTime) throw new Error(`${jobId}: no GPU task scheduled`);
  const { seconds, nanos } = scheduled.eventTime;
  return Number(seconds) * 1000 + Math.floor((nanos ?? 0) / 1e6);
}

/**
 * Equal users, all backlogged behind held slots, then released together: Jain's index of their dispatch counts while all
 * still wait; plus how busy the slots were and how fast each freed slot was taken while the backlog lasted.
 */
export async function equalUsersContend(stack: Stack, { users, jobsEach, capacity }: { users: number; jobsEach: number; capacity: number }) {
  const clients = await Promise.all(Array.from({ length: users }, () => newApi(stack, 'pro')));
  const gate = await holdSlots(stack, capacity);
  const groups: Record<string, string[]> = {};
  for (const [i, api] of clients.entries()) groups[`user${i}`] = await submitMany(api, jobsEach, { prompt: `equal ${i}` });
  const all = Object.values(groups).flat();
  await waitForGpuTasks(stack, all);
  gate.release();
  const runs = await waitForBackendEnds(stack, all, 30 * 60_000);

  // Contention lasts while every user still has jobs waiting: the first users × (jobsEach − 1) dispatches.
  const contended = dispatchOrder(stack, ownersOf(groups)).slice(0, users * (jobsEach - 1));
  const counts = Object.keys(groups).map((user) => contended.filter((u) => u === user).length);
  // The backlog lasts until the last job is dispatched; the first dispatches fill the opened slots at once.
  const from = runs[capacity - 1].submittedAt;
  const to = runs[runs.length - 1].submittedAt;
  const gaps = handoffs(runs, from, to);
  return {
    jain: jainIndex(counts),
    counts,
    utilisation: utilisation(runs, capacity, from, to),
    handoffP99Ms: percentile(gaps, 99),
    handoffP50Ms: percentile(gaps, 50),
    handoffs: gaps.length,
    maxInFlight: maxInFlight(runs),
  };
}

/** A free user (weight w_free) and a paid one (w_paid), both backlogged: the paid-to-free ratio of dispatches. */
export async function weightedShare(stack: Stack, { freeJobs, paidJobs, paidTier, capacity }: { freeJobs: number; paidJobs: number; paidTier: string; capacity: number }) {
  const [free, paid] = [await newApi(stack, 'free'), await newApi(stack, paidTier)];
  const gate = await holdSlots(stack, capacity);
  const freeIds = await submitMany(free, freeJobs, { prompt: 'free' });
  const paidIds = await submitMany(paid, paidJobs, { prompt: 'paid' });
  await waitForGpuTasks(stack, [...freeIds, ...paidIds]);
  gate.release();
  await waitForBackendEnds(stack, [...freeIds, ...paidIds], 30 * 60_000);
  const { tierWeights } = stack.config.generation;
  const expected = tierWeights[paidTier] / tierWeights.free;
  // Both stay backlogged while neither has run out: a window of whole rounds (expected + 1 dispatches each).
  const rounds = Math.floor(Math.min(freeJobs - 1, (paidJobs - 1) / expected));
  const window = dispatchOrder(stack, ownersOf({ F: freeIds, P: paidIds })).slice(0, Math.floor(rounds * (expected + 1)));
  const observed = window.filter((u) => u === 'P').length / Math.max(1, window.filter((u) => u === 'F').length);
  return { expected, observed, window: window.length };
}

/**
 * User A floods the queue; once the flood is in, user B submits one job. B's wait in the gpu queue (its task scheduled →
 * on the backend) and end to end (accepted → on the backend), against a slot turnover (the mean GPU time divided by the
 * slots), and how many of A's jobs went out between B's task entering the queue and B's dispatch.
 */
export async function starvation(stack: Stack, { flood, concurrency = 8 }: { flood: number; concurrency?: number }) {
  const [a, b] = [await newApi(stack, 'pro'), await newApi(stack, 'pro')];
  const floodFrom = Date.now();
  const aJobs = await submitMany(a, flood, { prompt: 'flood', concurrency });
  const floodSubmitSeconds = (Date.now() - floodFrom) / 1000;
  // All of A's flood is in the gpu queue before B arrives: dispatched, or waiting in Temporal's backlog (its own count).
  // (Before that, B's workflow would wait behind A's on the generation queue, which is not what this measures.)
  await eventually(
    async () => {
      const backlog = await gpuBacklog(stack.client, stack.config.worker.gpuTaskQueue);
      return backlog + runsOf(stack, aJobs).length >= flood ? true : undefined;
    },
    { timeoutMs: 10 * 60_000, intervalMs: 500, what: 'the whole flood in the gpu queue' },
  );
  const submitted = await b.submit(smallJob('just one'));
  if (submitted.status !== 202) throw new Error(`B's submit: ${submitted.status} ${submitted.text}`);
  const bId: string = submitted.body.id;
  const acceptedAt = Date.parse(submitted.body.created_at);
  const [bRun] = await waitForBackendEnds(stack, [bId], 5 * 60_000);
  const queuedAt = await gpuTaskScheduledAt(stack, bId);
  const aRuns = runsOf(stack, aJobs);
  const completed = aRuns.filter((r) => r.completedAt !== null && r.startedAt !== null);
  const meanRunMs = completed.reduce((s, r) => s + (r.completedAt! - r.startedAt!), 0) / Math.max(1, completed.length);
  const capacity = (await capacityAdmin(stack).get()).capacity;
  return {
    waitSeconds: (bRun.submittedAt - acceptedAt) / 1000,
    gpuQueueWaitSeconds: (bRun.submittedAt - queuedAt) / 1000,
    slotTurnoverSeconds: meanRunMs / capacity / 1000,
    meanRunSeconds: meanRunMs / 1000,
    floodDispatchedBeforeB: aRuns.filter((r) => r.submittedAt > queuedAt && r.submittedAt < bRun.submittedAt).length,
    floodDispatched: aRuns.length,
    floodSubmitSeconds,
  };
}

interface Submission {
  id?: string;
  tier: string;
  status: number;
  code?: string;
  at: number;
}

/** Submits one job every `everyMs` until `until`, recording each answer. */
async function steadyLoad(api: Api, tier: string, everyMs: number, until: () => boolean, log: Submission[], prompt: string): Promise<void> {
  let next = Date.now();
  while (!until()) {
    const res = await api.submit(smallJob(prompt));
    log.push({ id: res.status === 202 ? res.body.id : undefined, tier, status: res.status, code: res.body?.error?.code, at: Date.now() });
    next += everyMs;
    await new Promise((r) => setTimeout(r, Math.max(0, next - Date.now())));
  }
}

/**
 * Capacity halves mid-run under load: free users submit more than the GPUs can take, a paid user submits steadily. Paid
 * queue waits before and after the drop, the most jobs on the backend after it, and what the free tier was told.
 */
export async function capacityHalved(
  stack: Stack,
  { capacity, phaseMs, paidEveryMs, freeEveryMs, freeUsers = 2 }: { capacity: number; phaseMs: number; paidEveryMs: number; freeEveryMs: number; freeUsers?: number },
) {
  const admin = capacityAdmin(stack);
  await admin.set(capacity);
  const paid = await newApi(stack, 'pro');
  const frees = await Promise.all(Array.from({ length: freeUsers }, () => newApi(stack, 'free')));
  const log: Submission[] = [];
  const startedAt = Date.now();
  let stop = false;
  const load = Promise.all([
    steadyLoad(paid, 'pro', paidEveryMs, () => stop, log, 'paid'),
    ...frees.map((api, i) => steadyLoad(api, 'free', freeEveryMs, () => stop, log, `free ${i}`)),
  ]);
  await new Promise((r) => setTimeout(r, phaseMs));
  await admin.set(Math.floor(capacity / 2));
  const halvedAt = Date.now();
  await new Promise((r) => setTimeout(r, phaseMs));
  stop = true;
  await load;

  const accepted = log.filter((s) => s.id !== undefined);
  const runs = await waitForBackendEnds(stack, accepted.map((s) => s.id!), 10 * 60_000);
  const backendAt = new Map(runs.map((r) => [r.jobId, r.submittedAt]));
  const waits = await Promise.all(
    accepted.filter((s) => s.tier === 'pro').map(async (s) => {
      const job = (await paid.get(s.id!)).body;
      // The part spent in the gpu queue itself (task scheduled → on the backend), the rest being the way there.
      const gpuQueueMs = backendAt.get(s.id!)! - (await gpuTaskScheduledAt(stack, s.id!));
      return { at: s.at, waitMs: Date.parse(job.started_at) - Date.parse(job.created_at), gpuQueueMs };
    }),
  );
  // Steady state only: the first seconds of each phase fill (or drain) the GPUs.
  const settle = Math.min(3_000, phaseMs / 3);
  const before = waits.filter((w) => w.at > startedAt + settle && w.at < halvedAt);
  const after = waits.filter((w) => w.at > halvedAt + settle);
  // A dispatch already past its claim when the number fell reaches the backend within milliseconds; later ones obey.
  const submittedAfter = inFlightAtSubmissions(runs).filter(({ run }) => run.submittedAt > halvedAt + 250);
  const freeAfter = log.filter((s) => s.tier === 'free' && s.at > halvedAt);
  await admin.set(null);
  return {
    capacityBefore: capacity,
    capacityAfter: Math.floor(capacity / 2),
    paidP50WaitBeforeMs: percentile(before.map((w) => w.waitMs), 50),
    paidP50WaitAfterMs: percentile(after.map((w) => w.waitMs), 50),
    paidP95WaitBeforeMs: percentile(before.map((w) => w.waitMs), 95),
    paidP95WaitAfterMs: percentile(after.map((w) => w.waitMs), 95),
    paidP95GpuQueueWaitBeforeMs: percentile(before.map((w) => w.gpuQueueMs), 95),
    paidP95GpuQueueWaitAfterMs: percentile(after.map((w) => w.gpuQueueMs), 95),
    paidSamples: [before.length, after.length],
    maxInFlightBefore: maxInFlight(runs.filter((r) => r.submittedAt < halvedAt)),
    maxInFlightAfter: Math.max(0, ...submittedAfter.map((s) => s.inFlight)),
    paidRefused: log.filter((s) => s.tier === 'pro' && s.status !== 202).length,
    freeRefusedBefore: log.filter((s) => s.tier === 'free' && s.at < halvedAt && s.code === 'capacity_exhausted').length,
    freeRefusedAfter: freeAfter.filter((s) => s.code === 'capacity_exhausted').length,
    freeAcceptedAfter: freeAfter.filter((s) => s.status === 202).length,
    otherRefusals: log.filter((s) => s.status !== 202 && s.code !== 'capacity_exhausted').map((s) => `${s.status} ${s.code}`),
  };
}

/**
 * Priority lanes on a busy pool: users A and C fill the batch lane (A first, C once A's backlog waits), the GPUs busy
 * with it, then user B submits interactive jobs one after another. Where B's jobs started among the dispatches that
 * followed its first submit (1 is the next free slot), how many batch jobs went out while one of B's waited in the gpu
 * queue (0 under strict lanes), how A and C shared the batch lane while both waited, and how long the batch backlog
 * took to finish once B's jobs were out, against its ideal (what was left × mean GPU time ÷ slots).
 */
export async function lanes(stack: Stack, { batchJobs, interactiveJobs, capacity }: { batchJobs: number; interactiveJobs: number; capacity: number }) {
  const [a, c, b] = [await newApi(stack, 'pro'), await newApi(stack, 'pro'), await newApi(stack, 'pro')];
  const aJobs = await submitMany(a, batchJobs, { prompt: 'batch A', priority: 'batch', concurrency: 8 });
  const cJobs = await submitMany(c, batchJobs / 2, { prompt: 'batch C', priority: 'batch', concurrency: 8 });
  const batch = [...aJobs, ...cJobs];
  await eventually(
    async () => {
      const backlog = await gpuBacklog(stack.client, stack.config.worker.gpuTaskQueue);
      return backlog + runsOf(stack, batch).length >= batch.length ? true : undefined;
    },
    { timeoutMs: 10 * 60_000, intervalMs: 500, what: 'the whole batch backlog in the gpu queue' },
  );
  const interactiveFrom = Date.now();
  const interactive = await submitMany(b, interactiveJobs, { prompt: 'interactive', concurrency: 1 });
  const iRuns = await waitForBackendEnds(stack, interactive, 10 * 60_000);
  const bRuns = await waitForBackendEnds(stack, batch, 60 * 60_000);
  const queuedAt = await Promise.all(interactive.map((id) => gpuTaskScheduledAt(stack, id)));
  const dispatchedAt = new Map(iRuns.map((r) => [r.jobId, r.submittedAt]));

  const after = runsOf(stack, [...batch, ...interactive]).filter((r) => r.submittedAt >= interactiveFrom);
  const startPositions = interactive.map((id) => after.findIndex((r) => r.jobId === id) + 1);
  const batchAhead = interactive.map((id, i) => bRuns.filter((r) => r.submittedAt > queuedAt[i] && r.submittedAt < dispatchedAt.get(id)!).length);
  const gpuQueueWaits = interactive.map((id, i) => dispatchedAt.get(id)! - queuedAt[i]);

  // The batch lane's share while both batch users waited: the dispatches from C's first to C's last (A, with twice as
  // many, waited throughout).
  const owners = ownersOf({ A: aJobs, C: cJobs });
  const cDispatches = bRuns.filter((r) => owners.get(r.jobId) === 'C').map((r) => r.submittedAt);
  const [cFirst, cLast] = [Math.min(...cDispatches), Math.max(...cDispatches)];
  const contended = bRuns.filter((r) => r.submittedAt >= cFirst && r.submittedAt <= cLast).map((r) => owners.get(r.jobId)!);
  const share = ['A', 'C'].map((u) => contended.filter((x) => x === u).length);

  const lastInteractive = Math.max(...iRuns.map((r) => r.submittedAt));
  const left = bRuns.filter((r) => r.submittedAt > lastInteractive);
  const done = bRuns.filter((r) => r.completedAt !== null && r.startedAt !== null);
  const meanRunMs = done.reduce((s, r) => s + (r.completedAt! - r.startedAt!), 0) / Math.max(1, done.length);
  const batchEnd = Math.max(...bRuns.map((r) => r.completedAt ?? 0));
  const cSet = new Set(cJobs);
  const statuses = await Promise.all(batch.map(async (id) => (await (cSet.has(id) ? c : a).get(id)).body.status as string));
  return {
    interactiveStartPositions: startPositions,
    batchDispatchedWhileInteractiveWaited: batchAhead.reduce((s, n) => s + n, 0),
    interactiveGpuQueueWaitP95Ms: percentile(gpuQueueWaits, 95),
    slotTurnoverMs: meanRunMs / capacity,
    batchLaneShare: { A: share[0], C: share[1], jain: jainIndex(share) },
    batchLeftAfterInteractive: left.length,
    batchFinishSeconds: (batchEnd - lastInteractive) / 1000,
    batchFinishIdealSeconds: (left.length * meanRunMs) / capacity / 1000,
    batchSucceeded: statuses.filter((s) => s === 'succeeded').length,
    batchJobs: batch.length,
  };
}
