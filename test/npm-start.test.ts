import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { freePort, isPortFree } from '../scripts/lib/ports';
import { commandLine, isLive, processIds, procStat } from '../scripts/lib/procfs';
import { apiClient, eventually } from './harness';

/**
 * `npm start` as a person runs it: in a terminal's foreground process group, on its own defaults (Temporal dev server,
 * embedded Postgres, GPU capacity and pollers, fairness settings), stopped with Ctrl-C — which the terminal sends to the
 * whole group. Only ports and the data folder are its own, so it never meets another start on this machine; the
 * simulator runs fast so jobs take seconds.
 */
const ROOT = path.resolve(__dirname, '..');
const ARTIFACTS = path.join(ROOT, 'test', 'artifacts');
const ADMIN_API_KEY = `vgadmin_${'npmstart'.repeat(4)}`;
const SAME_MOMENT_MS = 1_000;

interface Start {
  npm: ChildProcess;
  output: () => string;
  exited: Promise<void>;
}

describe('npm start, as a person runs it', () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vg-npm-start-'));
  let env: Record<string, string>;
  let ports: number[];
  let running: Start | undefined;

  beforeAll(async () => {
    ports = await Promise.all(Array.from({ length: 8 }, () => freePort()));
    const [api, simulator, temporal, temporalUi, postgres, metrics, smtp, mailUi] = ports;
    env = {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      DATA_DIR: dataDir,
      PORT: String(api),
      SIMULATOR_PORT: String(simulator),
      TEMPORAL_DEV_PORT: String(temporal),
      TEMPORAL_DEV_UI_PORT: String(temporalUi),
      EMBEDDED_PG_PORT: String(postgres),
      METRICS_PORT: String(metrics),
      MAILPIT_SMTP_PORT: String(smtp),
      MAILPIT_UI_PORT: String(mailUi),
      ADMIN_API_KEY,
      // Generation takes a tenth of its real time: seconds, not minutes.
      SIM_TIME_SCALE: '0.1',
      ...(process.env.TEMPORAL_BIN ? { TEMPORAL_BIN: process.env.TEMPORAL_BIN } : {}),
      ...(process.env.MAILPIT_BIN ? { MAILPIT_BIN: process.env.MAILPIT_BIN } : {}),
    };
  });

  afterAll(async () => {
    // A failed test must not leave the group running.
    if (running && running.npm.exitCode === null) {
      for (const { pid } of descendants(running.npm.pid!)) process.kill(pid, 'SIGKILL');
      running.npm.kill('SIGKILL');
      await running.exited;
    }
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  function start(name: string): Start {
    const log = fs.createWriteStream(path.join(ARTIFACTS, `${name}.log`));
    // A process group of its own, as a terminal gives its foreground job.
    const npm = spawn('npm', ['start'], { cwd: ROOT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      log.write(chunk);
    };
    npm.stdout!.on('data', onData);
    npm.stderr!.on('data', onData);
    const exited = new Promise<void>((resolve) => npm.once('exit', () => resolve()));
    void exited.then(() => log.end());
    running = { npm, output: () => output, exited };
    return running;
  }

  const ready = (s: Start) =>
    eventually(async () => (/Ready in/.test(s.output()) ? true : /start failed|exited unexpectedly/.test(s.output()) ? Promise.reject(new Error(s.output())) : undefined), {
      timeoutMs: 180_000,
      intervalMs: 250,
      what: `npm start to be ready:\n${s.output()}`,
    });

  /** Ctrl-C in the terminal: SIGINT to every process of the foreground group. Resolves once npm has returned. */
  async function ctrlC(s: Start): Promise<void> {
    process.kill(-s.npm.pid!, 'SIGINT');
    await Promise.race([s.exited, new Promise((_, reject) => setTimeout(() => reject(new Error(`npm start did not return after Ctrl-C:\n${s.output()}`)), 60_000))]);
  }

  test('a user who submits after another user’s flood gets the next free GPU slot', async () => {
    const s = start('npm-start-1');
    await ready(s);
    const apiUrl = `http://127.0.0.1:${env.PORT}`;
    const admin = apiClient(apiUrl, ADMIN_API_KEY);
    // One GPU slot, lowered from the shipped four at runtime, as an operator would.
    expect((await admin.call('PUT', '/admin/capacity', { capacity: 1 })).status).toBe(200);
    const newUser = async () => apiClient(apiUrl, (await admin.call('POST', '/admin/users', { name: 'user', tier: 'pro' })).body.api_key as string);
    const [a, b] = [await newUser(), await newUser()];

    const submitted = await Promise.all(Array.from({ length: 10 }, (_, i) => a.submit({ prompt: `A${i}` })));
    expect(submitted.map((r) => r.status)).toEqual(Array(10).fill(202));
    const aJobs = submitted.map((r) => r.body.id as string);
    await new Promise((r) => setTimeout(r, 500)); // the scenario's half second, not a synchronisation
    const bJob = (await b.submit({ prompt: 'B' })).body.id as string;
    await b.waitForTerminal(bJob, 120_000);

    const connection = await Connection.connect({ address: `127.0.0.1:${env.TEMPORAL_DEV_PORT}` });
    try {
      const client = new Client({ connection });
      const bTimes = await gpuTimes(client, b, bJob);
      const aStarts = (await Promise.all(aJobs.map((id) => gpuTimes(client, a, id)))).map((t) => t.started).filter((t): t is number => t !== undefined);
      // Dispatched after B's GPU task was waiting and before B: none. The A job that had the slot when B arrived finishes
      // first; a start recorded within a second of B's arrival was decided at the same moment (a job's start is recorded
      // when the backend accepts it, a little after the match, later still on a loaded machine).
      expect(bTimes.started).toBeDefined();
      const jumpedAhead = aStarts.filter((t) => t > bTimes.scheduled + SAME_MOMENT_MS && t < bTimes.started!);
      if (jumpedAhead.length > 0) throw new Error(`A's jobs started after B's task was queued and before B:\n${await timeline(client, [...aJobs.map((id) => ({ who: 'A', api: a, id })), { who: 'B', api: b, id: bJob }])}`);
      expect(jumpedAhead).toEqual([]);
    } finally {
      await connection.close();
    }
  });

  test('Ctrl-C stops every process it started, in order, and frees every port', async () => {
    const s = running!;
    const processes = descendants(s.npm.pid!);
    expect(processes.map((p) => p.comm)).toEqual(expect.arrayContaining(['temporal', 'postgres', 'mailpit', 'node']));
    // The banner names Mailpit's web UI, and it answers there.
    const mailUi = `http://127.0.0.1:${env.MAILPIT_UI_PORT}`;
    expect(s.output()).toContain(`Mailpit       ${mailUi}`);
    expect((await fetch(`${mailUi}/api/v1/info`)).status).toBe(200);
    await ctrlC(s);
    expect(s.output()).toMatch(/api stopped\s+worker stopped\s+simulator stopped\s+mailpit stopped\s+postgres stopped\s+temporal stopped/);
    const survivors = processes.filter((p) => isLive(p.pid));
    expect(survivors).toEqual([]);
    for (const port of ports) expect({ port, free: await isPortFree(port) }).toEqual({ port, free: true });
  });

  test('a start that fails half-way stops what it had started: the Temporal dev server is gone, npm exits non-zero', async () => {
    // A data folder whose Postgres cannot start: the failure comes after the Temporal dev server is up.
    const broken = fs.mkdtempSync(path.join(os.tmpdir(), 'vg-npm-start-broken-'));
    fs.mkdirSync(path.join(broken, 'postgres'));
    fs.writeFileSync(path.join(broken, 'postgres', 'PG_VERSION'), '17\n');
    const saved = env.DATA_DIR;
    env.DATA_DIR = broken;
    try {
      const s = start('npm-start-broken');
      const processes: ProcessInfo[] = [];
      // Everything it starts, seen while it runs (it stops them before it exits).
      const watching = setInterval(() => {
        for (const p of descendants(s.npm.pid!)) if (!processes.some((q) => q.pid === p.pid)) processes.push(p);
      }, 50);
      await Promise.race([s.exited, new Promise((_, reject) => setTimeout(() => reject(new Error(`npm start did not end:\n${s.output()}`)), 120_000))]);
      clearInterval(watching);
      expect(s.npm.exitCode).not.toBe(0);
      expect(s.output()).toMatch(/Temporal: starting the dev server[\s\S]*start failed: Postgres exited during its start[\s\S]*temporal stopped/);
      // The dev server ran: it made its state file. Nothing it or Postgres ran is left, whether or not the sampling above
      // caught it alive (every one of them names the data folder on its command line).
      expect(fs.existsSync(path.join(broken, 'temporal.db'))).toBe(true);
      expect(processes.filter((p) => isLive(p.pid))).toEqual([]);
      expect(processesNaming(broken)).toEqual([]);
      expect(await isPortFree(Number(env.TEMPORAL_DEV_PORT))).toBe(true);
    } finally {
      env.DATA_DIR = saved;
      fs.rmSync(broken, { recursive: true, force: true });
    }
  });

  test('a second start on the same data comes up, and stops the same way', async () => {
    const s = start('npm-start-2');
    await ready(s);
    expect(s.output()).not.toMatch(/port \d+ is taken/);
    const processes = descendants(s.npm.pid!);
    await ctrlC(s);
    expect(processes.filter((p) => isLive(p.pid))).toEqual([]);
  });

  test('a part that dies while it runs stops everything, saying which and why: nothing is left half-running', async () => {
    const s = start('npm-start-part-died');
    await ready(s);
    const processes = descendants(s.npm.pid!);
    const temporal = processes.find((p) => p.comm === 'temporal');
    expect(temporal).toBeDefined();
    // As the kernel's OOM killer would.
    process.kill(temporal!.pid, 'SIGKILL');
    await Promise.race([s.exited, new Promise((_, reject) => setTimeout(() => reject(new Error(`npm start did not end after the Temporal dev server died:\n${s.output()}`)), 60_000))]);
    expect(s.npm.exitCode).not.toBe(0);
    expect(s.output()).toMatch(/temporal exited unexpectedly \(code null, signal SIGKILL\); last lines of its log[\s\S]*api stopped\s+worker stopped\s+simulator stopped\s+mailpit stopped\s+postgres stopped\s+temporal stopped/);
    expect(processes.filter((p) => isLive(p.pid))).toEqual([]);
    for (const port of ports) expect({ port, free: await isPortFree(port) }).toEqual({ port, free: true });
  });
});

type Api = ReturnType<typeof apiClient>;

/** Each job's GPU task: when it was queued and started (ms after the first was queued), its priority and attempts. */
async function timeline(client: Client, jobs: Array<{ who: string; api: Api; id: string }>): Promise<string> {
  const all = await Promise.all(jobs.map(async ({ who, api, id }) => ({ who, ...(await gpuTimes(client, api, id)) })));
  const t0 = Math.min(...all.map((x) => x.scheduled));
  return all
    .sort((x, y) => (x.started ?? Infinity) - (y.started ?? Infinity))
    .map((x) => `${x.who} queued +${x.scheduled - t0} ms, started ${x.started === undefined ? '-' : `+${x.started - t0} ms`}, ${x.info}`)
    .join('\n');
}

/**
 * When the job's GPU task was queued (its workflow history) and when the job started on the GPU (its `started_at`, set
 * when the backend accepted it: a run that ends on a success heard by callback never records its GPU activity's start in
 * the history), in ms.
 */
async function gpuTimes(client: Client, api: Api, jobId: string): Promise<{ scheduled: number; started?: number; info?: string }> {
  const events = (await client.workflow.getHandle(jobId).fetchHistory()).events ?? [];
  const ms = (t: { seconds?: unknown; nanos?: number | null } | null | undefined) => Number(t?.seconds ?? 0) * 1000 + Math.floor((t?.nanos ?? 0) / 1e6);
  const scheduled = events.find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'runGeneration');
  if (!scheduled) throw new Error(`${jobId}: no GPU task was scheduled`);
  const job = (await api.get(jobId)).body as { started_at: string | null; attempt: number };
  return {
    scheduled: ms(scheduled.eventTime),
    started: job.started_at ? Date.parse(job.started_at) : undefined,
    info: `priority ${scheduled.activityTaskScheduledEventAttributes?.priority?.priorityKey}, attempt ${job.attempt}`,
  };
}

interface ProcessInfo {
  pid: number;
  comm: string;
}

/** Every process below `root` now, however deep (detached children keep their parent link until it exits). */
function descendants(root: number): ProcessInfo[] {
  const stats = processIds().flatMap((pid) => {
    const stat = procStat(pid);
    return stat ? [{ pid, ...stat }] : [];
  });
  const found: ProcessInfo[] = [];
  const walk = (parent: number) => {
    for (const { pid, ppid, comm } of stats) {
      if (ppid !== parent) continue;
      found.push({ pid, comm });
      walk(pid);
    }
  };
  walk(root);
  return found;
}

/** Live processes whose command line mentions `text` (a data folder). */
function processesNaming(text: string): Array<{ pid: number; cmdline: string }> {
  return processIds().flatMap((pid) => {
    const cmdline = commandLine(pid)?.split('\0').join(' ');
    return cmdline?.includes(text) && isLive(pid) ? [{ pid, cmdline }] : [];
  });
}
