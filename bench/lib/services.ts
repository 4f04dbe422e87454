import path from 'node:path';
import { startTemporalDevServer } from '../../scripts/lib/temporal-dev-server';
import { startEmbeddedPostgres } from '../../scripts/lib/embedded-postgres';
import { createLogger } from '../../src/lib/logger';
import { spawnTsProcess, type SpawnedProcess } from '../../test/processes';

/**
 * The service's processes as real children (the same entry points `npm run api|worker|simulator` run), and a Temporal dev
 * server and an embedded Postgres that keep their state on disk, so each can be killed or restarted and come back with
 * everything it had. Child output goes to test/artifacts/<name>.log.
 */
export type ServiceRole = 'api' | 'generation' | 'gpu' | 'simulator';

const ENTRY: Record<ServiceRole, string> = {
  api: 'src/api/main.ts',
  generation: 'src/worker.ts',
  gpu: 'src/worker.ts',
  simulator: 'simulator/main.ts',
};

/** Starts one service process and resolves once it serves: HTTP ones answer /healthz, workers log that they started. */
export async function spawnService(
  role: ServiceRole,
  name: string,
  env: Record<string, string>,
  {
    timeoutMs = 90_000,
    root,
    niceness,
  }: { timeoutMs?: number; /** Another checkout's code (a baseline to compare with). */ root?: string; /** `nice -n` for the process. */ niceness?: number } = {},
): Promise<SpawnedProcess> {
  const child = spawnTsProcess({
    name,
    script: ENTRY[role],
    root,
    niceness,
    // Workers say they started at info level.
    env: { ...env, ...(role === 'generation' || role === 'gpu' ? { WORKER_ROLE: role, LOG_LEVEL: 'info' } : {}) },
  });
  try {
    if (role === 'generation' || role === 'gpu') await child.waitForOutput(/worker started/, timeoutMs);
    else await waitForHealth(role === 'api' ? `http://127.0.0.1:${env.PORT}` : `http://127.0.0.1:${env.SIMULATOR_PORT}`, child, timeoutMs);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return child;
}

async function waitForHealth(baseUrl: string, child: SpawnedProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  void child.exited.then(() => (exited = true));
  while (Date.now() < deadline) {
    if (exited) throw new Error(`${child.name} exited during start; see ${child.logFile}\n${child.output().slice(-2000)}`);
    const ok = await fetch(`${baseUrl}/healthz`, { signal: AbortSignal.timeout(1_000) }).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${child.name} did not answer ${baseUrl}/healthz within ${timeoutMs} ms; see ${child.logFile}`);
}

export interface Restartable {
  /** Stops it (SIGTERM, SIGKILL after a grace period) and starts it again on the same port with the same state. */
  restart(): Promise<{ downMs: number }>;
  stop(): Promise<void>;
}

/** `temporal server start-dev` with a SQLite file: everything it held survives a restart. */
export async function startDurableTemporal({ dir, port, logFile }: { dir: string; port: number; logFile: string }): Promise<Restartable & { address: string }> {
  const options = { port, dbFile: path.join(dir, 'temporal.db'), logFile };
  let server = await startTemporalDevServer(options);
  return {
    address: server.address,
    async restart() {
      const began = Date.now();
      await server.stop();
      server = await startTemporalDevServer(options);
      return { downMs: Date.now() - began };
    },
    stop: () => server.stop(),
  };
}

/** The embedded Postgres of `npm start` (scripts/lib/embedded-postgres.ts), in `dir`: a restart is a real server shutdown and start. */
export async function startDurablePostgres({ dir, port }: { dir: string; port: number }): Promise<Restartable & { url: string }> {
  const logger = createLogger('bench-postgres', 'warn');
  let pg = await startEmbeddedPostgres({ dataDir: dir, port, logger });
  return {
    url: pg.url,
    async restart() {
      const began = Date.now();
      await pg.stop();
      pg = await startEmbeddedPostgres({ dataDir: dir, port, logger });
      return { downMs: Date.now() - began };
    },
    stop: () => pg.stop(),
  };
}
