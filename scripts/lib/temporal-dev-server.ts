import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { SEARCH_ATTRIBUTE_FLAGS } from '../../src/domain/search-attributes';
import { startTool } from './supervisor';

const ROOT = path.resolve(__dirname, '../..');

/** The Temporal CLI binary, built on first use by scripts/temporal.sh. */
export function temporalBinary(): string {
  return execFileSync('bash', [path.join(ROOT, 'scripts/temporal.sh'), 'path'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
}

export interface TemporalDevServerOptions {
  port: number;
  /** Web UI port; omit for a headless server. */
  uiPort?: number;
  /** SQLite file that keeps state across restarts; omit for an in-memory server. */
  dbFile?: string;
  /** Where the server's own log goes. */
  logFile: string;
  /** Serves the server's Prometheus metrics (its `action` counter among them) on this port; omit for none. */
  metricsPort?: number;
  /**
   * One read/write partition per task queue. Fairness holds within a partition, and the `gpu` queue dispatches at the
   * GPUs' pace; the dev server's flags cannot name a queue, so every queue of the dev server gets one.
   */
  singlePartition?: boolean;
  /** The codec endpoint the Web UI decodes payloads with (src/api/codec-routes.ts); omit for none. */
  uiCodecEndpoint?: string;
  /** Called as soon as the server process exists, so a caller can stop it even if the start then fails. */
  onSpawn?: (pid: number | undefined, stop: () => Promise<void>) => void;
}

/** Dynamic config that switches on the matcher with priority and fairness (the `gpu` queue's weighted fair dispatch). */
export function devServerArgs(options: TemporalDevServerOptions): string[] {
  const dynamic = ['matching.useNewMatcher=true', 'matching.enableFairness=true'];
  if (options.singlePartition) dynamic.push('matching.numTaskqueueReadPartitions=1', 'matching.numTaskqueueWritePartitions=1');
  return [
    'server',
    'start-dev',
    '--ip',
    '127.0.0.1',
    '--port',
    String(options.port),
    ...(options.uiPort ? ['--ui-port', String(options.uiPort)] : ['--headless']),
    ...(options.uiPort && options.uiCodecEndpoint ? ['--ui-codec-endpoint', options.uiCodecEndpoint] : []),
    ...(options.dbFile ? ['--db-filename', options.dbFile] : []),
    ...(options.metricsPort ? ['--metrics-port', String(options.metricsPort)] : []),
    '--log-level',
    'warn',
    ...dynamic.flatMap((v) => ['--dynamic-config-value', v]),
    ...SEARCH_ATTRIBUTE_FLAGS.flatMap((v) => ['--search-attribute', v]),
  ];
}

/** Starts `temporal server start-dev` and resolves once its frontend answers and the default namespace exists. */
export async function startTemporalDevServer(options: TemporalDevServerOptions, { timeoutMs = 60_000 } = {}) {
  const address = `127.0.0.1:${options.port}`;
  const { pid, stop, exited } = await startTool(
    { name: 'temporal server', bin: temporalBinary(), args: devServerArgs(options), logFile: options.logFile, dbFile: options.dbFile, onSpawn: options.onSpawn },
    (alive) => waitForTemporal(address, timeoutMs, alive),
  );
  return { address, uiUrl: options.uiPort ? `http://127.0.0.1:${options.uiPort}` : undefined, pid, stop, exited };
}

export async function waitForTemporal(address: string, timeoutMs: number, check: () => void = () => {}): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    check();
    try {
      const connection = await Connection.connect({ address, connectTimeout: 1_000 });
      try {
        await connection.workflowService.describeNamespace({ namespace: 'default' });
        return;
      } finally {
        await connection.close();
      }
    } catch (err) {
      lastError = err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  throw new Error(`Temporal at ${address} not ready after ${timeoutMs} ms: ${String(lastError)}`);
}
