import { execFile, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { Connection } from '@temporalio/client';
import { SEARCH_ATTRIBUTE_FLAGS } from '../../src/domain/search-attributes';
import { freePort, isPortFree } from './ports';
import type { PostgresServer } from './topology-postgres';

/**
 * The production Temporal server (`go.temporal.io/server`, not the CLI's dev server) on Postgres: its binaries, its SQL
 * schemas, its config rendered from deploy/temporal/server.yaml, and a namespace with the app's search attributes.
 */
const ROOT = path.resolve(__dirname, '../..');
const run = promisify(execFile);

export const SERVER_CONFIG_TEMPLATE = path.join(ROOT, 'deploy/temporal/server.yaml');
export const DYNAMIC_CONFIG = path.join(ROOT, 'deploy/temporal/dynamicconfig.yaml');

export interface TemporalServerTools {
  server: string;
  sqlTool: string;
  /** The server module's schema/ folder. */
  schemaDir: string;
}

/** Binaries and schemas, installed on first use by scripts/temporal-server.sh. */
export function temporalServerTools(): TemporalServerTools {
  const script = (command: string) =>
    execFileSync('bash', [path.join(ROOT, 'scripts/temporal-server.sh'), command], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  return { server: script('server'), sqlTool: script('sql-tool'), schemaDir: script('schema-dir') };
}

/** `setup-schema -v 0.0` then `update-schema` to the newest version: what the official images' auto-setup does. */
export async function setupSchema(tools: TemporalServerTools, pg: PostgresServer, database: string, kind: 'temporal' | 'visibility'): Promise<void> {
  const connection = ['--plugin', 'postgres12', '--endpoint', pg.host, '--port', String(pg.port), '--user', pg.user, '--database', database];
  // The password goes through the environment, not the command line.
  const options = { env: { ...process.env, SQL_PASSWORD: pg.password }, maxBuffer: 16 * 1024 * 1024 };
  try {
    await run(tools.sqlTool, [...connection, 'setup-schema', '-v', '0.0'], options);
    await run(tools.sqlTool, [...connection, 'update-schema', '-d', path.join(tools.schemaDir, 'postgresql/v12', kind, 'versioned')], options);
  } catch (err) {
    const { stderr, stdout } = err as { stderr?: string; stdout?: string };
    throw new Error(`temporal-sql-tool could not set up the ${kind} schema in ${database}: ${(stderr || stdout || String(err)).trim().slice(-2000)}`, { cause: err });
  }
}

/** Replaces each `${NAME}`; a string is written as a quoted YAML scalar. Every placeholder needs a value, every value a placeholder. */
export function renderServerConfig(template: string, values: Record<string, string | number>): string {
  const used = new Set<string>();
  const rendered = template.replace(/\$\{([A-Z0-9_]+)\}/g, (_match, name: string) => {
    if (!(name in values)) throw new Error(`${path.relative(ROOT, SERVER_CONFIG_TEMPLATE)}: no value for \${${name}}`);
    used.add(name);
    const value = values[name];
    return typeof value === 'number' ? String(value) : JSON.stringify(value);
  });
  const unused = Object.keys(values).filter((name) => !used.has(name));
  if (unused.length > 0) throw new Error(`${path.relative(ROOT, SERVER_CONFIG_TEMPLATE)} has no placeholder for ${unused.join(', ')}`);
  return rendered;
}

export interface TemporalServerOptions {
  tools: TemporalServerTools;
  pg: PostgresServer;
  database: string;
  visibilityDatabase: string;
  /** Holds the rendered config (config/topology.yaml) and the server's log. */
  runDir: string;
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
  /** Defaults to deploy/temporal/dynamicconfig.yaml (fairness on). */
  dynamicConfigFile?: string;
}

export interface RunningTemporalServer {
  address: string;
  configFile: string;
  logFile: string;
  pid: number;
  ports: Record<string, number>;
  stop(): Promise<void>;
}

/** Renders the config with free ports, starts every service in one process, and resolves once the frontend serves. */
export async function startTemporalServer(options: TemporalServerOptions, { timeoutMs = 90_000 } = {}): Promise<RunningTemporalServer> {
  const { tools, pg, runDir } = options;
  const portNames = [
    'FRONTEND_GRPC_PORT',
    'FRONTEND_HTTP_PORT',
    'FRONTEND_MEMBERSHIP_PORT',
    'HISTORY_GRPC_PORT',
    'HISTORY_MEMBERSHIP_PORT',
    'MATCHING_GRPC_PORT',
    'MATCHING_MEMBERSHIP_PORT',
    'WORKER_GRPC_PORT',
    'WORKER_MEMBERSHIP_PORT',
    'PPROF_PORT',
    'METRICS_PORT',
  ];
  const ports: Record<string, number> = {};
  for (const name of portNames) {
    // Temporal's SQL membership table keeps the port in a SMALLINT: membership ports must be below 32768, where the
    // OS's ephemeral ports (what freePort() gets) do not go.
    const pick = name.endsWith('_MEMBERSHIP_PORT') ? () => freePortBelow(32_768) : freePort;
    let port = await pick();
    while (Object.values(ports).includes(port)) port = await pick();
    ports[name] = port;
  }
  const configDir = path.join(runDir, 'config');
  fs.mkdirSync(configDir, { recursive: true });
  const configFile = path.join(configDir, 'topology.yaml');
  fs.writeFileSync(
    configFile,
    renderServerConfig(fs.readFileSync(SERVER_CONFIG_TEMPLATE, 'utf8'), {
      LOG_LEVEL: options.logLevel ?? 'warn',
      DB_NAME: options.database,
      VISIBILITY_DB_NAME: options.visibilityDatabase,
      DB_ADDRESS: `${pg.host}:${pg.port}`,
      DB_USER: pg.user,
      DB_PASSWORD: pg.password,
      DYNAMIC_CONFIG_FILE: options.dynamicConfigFile ?? DYNAMIC_CONFIG,
      ...ports,
    }),
    { mode: 0o600 },
  );

  const logFile = path.join(runDir, 'temporal-server.log');
  const log = fs.openSync(logFile, 'w');
  // Its own process group: Ctrl-C reaches the topology script, which stops the app first and the server last.
  // Every service binds to 127.0.0.1 only, hence no authorizer (--allow-no-auth).
  const child = spawn(tools.server, ['--root', runDir, '--config', 'config', '--env', 'topology', '--allow-no-auth', 'start'], {
    stdio: ['ignore', log, log],
    detached: true,
  });
  fs.closeSync(log);
  if (child.pid === undefined) throw new Error(`could not start ${tools.server}`);
  const pid = child.pid;
  let exited = false;
  child.once('exit', () => (exited = true));
  // Whatever happens to the script, the server does not outlive it.
  const killOnExit = () => !exited && child.kill('SIGKILL');
  process.once('exit', killOnExit);

  const address = `127.0.0.1:${ports.FRONTEND_GRPC_PORT}`;
  const stop = async () => {
    process.removeListener('exit', killOnExit);
    if (exited) return;
    const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await gone;
    clearTimeout(timer);
  };
  try {
    await waitUntil(timeoutMs, `the Temporal server's frontend at ${address}`, async () => {
      if (exited) throw new Fatal(`the Temporal server exited during start; last lines of ${logFile}:\n${tail(logFile)}`);
      const connection = await Connection.connect({ address, connectTimeout: 1_000 });
      try {
        const { status } = await connection.healthService.check({ service: 'temporal.api.workflowservice.v1.WorkflowService' });
        return status === 1 /* SERVING */ ? true : undefined;
      } finally {
        await connection.close();
      }
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return { address, configFile, logFile, pid, ports, stop };
}

/**
 * A bare server has no namespace and no custom search attributes: create both with the Temporal CLI (as the official
 * admin-tools image does), then wait until the frontend accepts queries on them.
 */
export async function provisionNamespace({ cli, address, namespace }: { cli: string; address: string; namespace: string }): Promise<void> {
  const temporal = (...args: string[]) => run(cli, [...args, '--address', address], { maxBuffer: 4 * 1024 * 1024 });
  await temporal('operator', 'namespace', 'create', '--namespace', namespace, '--retention', '1d');
  const byType = new Map<string, string[]>();
  for (const flag of SEARCH_ATTRIBUTE_FLAGS) {
    const [name, type] = flag.split('=');
    byType.set(type, [...(byType.get(type) ?? []), name]);
  }
  const names = [...byType.values()].flat();
  const connection = await Connection.connect({ address });
  try {
    // The new namespace reaches every service's namespace cache within seconds; until then it is "not found".
    await waitUntil(60_000, `search attributes ${names.join(', ')} in namespace ${namespace}`, async () => {
      const customAttributes = (await connection.operatorService.listSearchAttributes({ namespace })).customAttributes ?? {};
      for (const [type, attrs] of byType) {
        const missing = attrs.filter((n) => !(n in customAttributes));
        if (missing.length > 0) await temporal('operator', 'search-attribute', 'create', '--namespace', namespace, '--type', type, ...missing.flatMap((n) => ['--name', n]));
      }
      // A query on them fails until the frontend's namespace cache has them.
      await connection.workflowService.listWorkflowExecutions({ namespace, query: names.map((n) => `${n} = "probe"`).join(' AND ') });
      return true;
    });
  } finally {
    await connection.close();
  }
}

class Fatal extends Error {}

async function waitUntil<T>(timeoutMs: number, what: string, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      if (err instanceof Fatal) throw err;
      last = err;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  const detail = last instanceof Error ? ((last as { stderr?: string }).stderr || last.message) : String(last ?? '');
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail ? `: ${detail.trim()}` : ''}`);
}

/** A free port in [20000, below), tried at random. */
async function freePortBelow(below: number): Promise<number> {
  for (let tries = 0; tries < 200; tries++) {
    const port = 20_000 + Math.floor(Math.random() * (below - 20_000));
    if (await isPortFree(port)) return port;
  }
  throw new Error(`no free port found between 20000 and ${below}`);
}

/** The last lines of a log, each cut short (the server's lines carry whole stack traces). */
export function tail(file: string, lines = 12): string {
  try {
    const text = fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines);
    return text.map((line) => (line.length > 400 ? `${line.slice(0, 400)}…` : line)).join('\n');
  } catch {
    return '(no log)';
  }
}
