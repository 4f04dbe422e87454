import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { freePort } from '../../scripts/lib/ports';
import { startMailpit, type RunningMailpit } from '../../scripts/lib/mailpit';
import { runMigrations } from '../../src/db/migrate';
import { newPayloadKey } from '../../src/lib/payload-codec';
import { buildWorkflowBundles } from '../../src/workflow-bundle';
import type { SpawnedProcess } from '../../test/processes';
import { spawnService, startDurablePostgres, startDurableTemporal, type ServiceRole } from './services';

/**
 * The whole service as real processes on this machine, for the chaos campaign: a Temporal dev server on a SQLite file and
 * an embedded Postgres (each restartable with its state), the backend simulator, one API, and several generation workers
 * and GPU dispatchers. Any process that dies without being killed on purpose is started again (and counted).
 */
export interface ClusterOptions {
  generationWorkers: number;
  dispatchers: number;
  /** Settings every process gets (on top of addresses, ports and keys, which the cluster sets). */
  env: Record<string, string>;
  /**
   * Two simulator processes as two backends (BACKENDS): `primary` (cost factor 1) at BACKEND_URL and `secondary` (cost
   * factor 1.5), each with a pool of `capacity` slots. Unset: one simulator, BACKENDS unset (as deployed by default).
   */
  twoBackends?: { capacity: number };
  log: (line: string) => void;
}

interface Slot {
  role: ServiceRole;
  name: string;
  /** Settings of this process only (the second simulator's port). */
  env?: Record<string, string>;
  starts: number;
  process?: SpawnedProcess;
  /** Set while the cluster itself stops or kills it: its exit is expected. */
  expectingExit: boolean;
  /** A start in progress: a second caller waits for it rather than starting a twin. */
  launching?: Promise<void>;
}

export interface ChaosEvent {
  atMs: number;
  what: string;
}

export class ChaosCluster {
  readonly events: ChaosEvent[] = [];
  /** Each Temporal restart, from the instant it was stopped to the instant it answered again (epoch ms). */
  readonly temporalOutages: Array<{ from: number; to: number }> = [];
  unexpectedExits = 0;
  private readonly began = Date.now();
  private readonly slots: Slot[] = [];
  private stopping = false;
  private readonly comebacks = new Set<Promise<void>>();
  private constructor(
    private readonly options: ClusterOptions,
    readonly dir: string,
    readonly env: Record<string, string>,
    readonly temporal: Awaited<ReturnType<typeof startDurableTemporal>>,
    readonly postgres: Awaited<ReturnType<typeof startDurablePostgres>>,
    /** The users' mail server: never killed (it is theirs, not the service's); its API shows what was mailed. */
    readonly mailpit: RunningMailpit,
  ) {}

  static async start(options: ClusterOptions): Promise<ChaosCluster> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vg-chaos-'));
    if (process.getuid?.() === 0) fs.chmodSync(dir, 0o755); // embedded Postgres runs as its own system user
    const logFile = path.resolve(__dirname, '../../test/artifacts/chaos-temporal.log');
    const [temporalPort, pgPort, apiPort, simulatorPort, secondaryPort] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];
    const temporal = await startDurableTemporal({ dir, port: temporalPort, logFile });
    const postgres = await startDurablePostgres({ dir: path.join(dir, 'pg'), port: pgPort });
    await runMigrations(postgres.url);
    // Workers load a built bundle, as deployed ones do: a killed one is back in seconds, not after bundling again.
    const bundleDir = path.join(dir, 'workflows');
    await buildWorkflowBundles(bundleDir);
    const mailpit = await startMailpit({ smtpPort: await freePort(), uiPort: await freePort(), logFile: path.resolve(__dirname, '../../test/artifacts/chaos-mailpit.log') });
    const env = {
      ...options.env,
      TEMPORAL_ADDRESS: temporal.address,
      DATABASE_URL: postgres.url,
      PORT: String(apiPort),
      PUBLIC_URL: `http://127.0.0.1:${apiPort}`,
      SIMULATOR_PORT: String(simulatorPort),
      BACKEND_URL: `http://127.0.0.1:${simulatorPort}`,
      ADMIN_API_KEY: `chaos-admin-${randomBytes(12).toString('hex')}`,
      PAYLOAD_KEYS: newPayloadKey('chaos1'),
      METRICS_PORT: '0',
      SMTP_URL: mailpit.smtpUrl,
      WORKFLOW_BUNDLE_DIR: bundleDir,
      ...(options.twoBackends
        ? {
            BACKENDS: JSON.stringify([
              { name: 'primary', kind: 'simulator', base_url: `http://127.0.0.1:${simulatorPort}`, capacity: options.twoBackends.capacity, cost_factor: 1 },
              { name: 'secondary', kind: 'simulator', base_url: `http://127.0.0.1:${secondaryPort}`, capacity: options.twoBackends.capacity, cost_factor: 1.5 },
            ]),
            SECONDARY_BACKEND_URL: `http://127.0.0.1:${secondaryPort}`,
          }
        : {}),
    };
    const cluster = new ChaosCluster(options, dir, env, temporal, postgres, mailpit);
    cluster.slots.push({ role: 'simulator', name: 'chaos-simulator', starts: 0, expectingExit: false });
    if (options.twoBackends) cluster.slots.push({ role: 'simulator', name: 'chaos-simulator-secondary', env: { SIMULATOR_PORT: String(secondaryPort) }, starts: 0, expectingExit: false });
    cluster.slots.push({ role: 'api', name: 'chaos-api', starts: 0, expectingExit: false });
    for (let i = 1; i <= options.generationWorkers; i++) cluster.slots.push({ role: 'generation', name: `chaos-worker-${i}`, starts: 0, expectingExit: false });
    for (let i = 1; i <= options.dispatchers; i++) cluster.slots.push({ role: 'gpu', name: `chaos-dispatcher-${i}`, starts: 0, expectingExit: false });
    try {
      for (const slot of cluster.slots) await cluster.launch(slot);
    } catch (err) {
      await cluster.stop(); // nothing left running behind a failed start
      throw err;
    }
    return cluster;
  }

  get apiUrl(): string {
    return this.env.PUBLIC_URL;
  }

  get adminApiKey(): string {
    return this.env.ADMIN_API_KEY;
  }

  /** The processes chaos may kill now: generation workers and GPU dispatchers that are running. */
  get killable(): string[] {
    return this.slots.filter((s) => (s.role === 'generation' || s.role === 'gpu') && s.process && !s.launching).map((s) => s.name);
  }

  record(what: string): void {
    const atMs = Date.now() - this.began;
    this.events.push({ atMs, what });
    this.options.log(`  [${(atMs / 1000).toFixed(1).padStart(6)} s] ${what}`);
  }

  /** SIGKILLs the named process; it is started again `downMs` later, in the background (heal() waits for that). */
  async kill(name: string, downMs: number): Promise<void> {
    const slot = this.slot(name);
    const victim = slot.process;
    if (!victim) return;
    slot.expectingExit = true;
    victim.kill('SIGKILL');
    await victim.exited;
    this.record(`SIGKILL ${name} (pid ${victim.pid}); back in ${(downMs / 1000).toFixed(1)} s`);
    const comeback = new Promise((r) => setTimeout(r, downMs)).then(() => this.launch(slot));
    this.comebacks.add(comeback);
    void comeback.finally(() => this.comebacks.delete(comeback));
  }

  async restartTemporal(): Promise<void> {
    this.record('Temporal server: stopping');
    const from = Date.now();
    const { downMs } = await this.temporal.restart();
    this.temporalOutages.push({ from, to: Date.now() });
    this.record(`Temporal server: back after ${downMs} ms`);
  }

  async restartPostgres(): Promise<void> {
    this.record('Postgres: stopping');
    const { downMs } = await this.postgres.restart();
    this.record(`Postgres: back after ${downMs} ms`);
  }

  /** Starts every process that is not running (after chaos, so the service can converge). */
  async heal(): Promise<void> {
    await Promise.all([...this.comebacks]);
    for (const slot of this.slots) if (!slot.process) await this.launch(slot);
  }

  /** Stops the processes (gracefully), then Temporal and Postgres, and removes the state directory. */
  async stop({ keepState = false } = {}): Promise<void> {
    this.stopping = true;
    for (const slot of [...this.slots].reverse()) {
      slot.expectingExit = true;
      await slot.process?.stop(10_000);
    }
    await this.temporal.stop().catch((err: unknown) => this.options.log(`  Temporal stop: ${String(err)}`));
    await this.postgres.stop().catch((err: unknown) => this.options.log(`  Postgres stop: ${String(err)}`));
    await this.mailpit.stop().catch((err: unknown) => this.options.log(`  Mailpit stop: ${String(err)}`));
    if (!keepState) fs.rmSync(this.dir, { recursive: true, force: true });
  }

  private slot(name: string): Slot {
    const slot = this.slots.find((s) => s.name === name);
    if (!slot) throw new Error(`no process ${name}`);
    return slot;
  }

  private launch(slot: Slot): Promise<void> {
    slot.launching ??= this.startProcess(slot).finally(() => (slot.launching = undefined));
    return slot.launching;
  }

  /** Starts the slot's process (retrying while a dependency is down) and watches for an exit nobody asked for. */
  private async startProcess(slot: Slot): Promise<void> {
    slot.process = undefined;
    for (let tries = 1; ; tries++) {
      if (this.stopping) return;
      try {
        slot.starts++;
        const child = await spawnService(slot.role, `${slot.name}-${slot.starts}`, { ...this.env, ...slot.env });
        slot.process = child;
        slot.expectingExit = false;
        void child.exited.then(({ code, signal }) => {
          if (slot.process !== child) return;
          slot.process = undefined;
          if (slot.expectingExit || this.stopping) return;
          this.unexpectedExits++;
          this.record(`${slot.name} exited by itself (code ${code}, signal ${signal}); starting it again — see ${child.logFile}`);
          setTimeout(() => void this.launch(slot), 1_000);
        });
        return;
      } catch (err) {
        if (tries >= 20) throw err;
        this.record(`${slot.name} failed to start (${String(err).split('\n')[0]}); trying again`);
        await new Promise((r) => setTimeout(r, 2_000));
      }
    }
  }
}
