import type { Server } from 'node:http';
import { serviceDataConverter } from '../payload-keys';
import { Client, Connection } from '@temporalio/client';
import { configuredSecrets, loadConfig, type Config } from '../config';
import { createDatabase } from '../db/client';
import { requireDatabaseUrl } from '../db/client';
import { createLogger, type Logger } from '../lib/logger';
import { runProcess } from '../run-process';
import { createAdminApp } from './admin-app';
import { resolveAdminApiKey } from './admin-key';
import { createPublicApi } from './app';
import { createApiServer } from './http-server';
import { earlyRefusals } from './early-refusals';
import { flushRefusals } from './request-log';
import { createServiceStartRelay } from './start-relay';
import { temporalCallsSettled } from '../lib/temporal-deadline';
import { startTracing, stopTracing, temporalClientInterceptors } from '../lib/tracing';

function listen(server: Server, port: number, host: string): Promise<{ server: Server; port: number }> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const address = server.address();
      resolve({ server, port: typeof address === 'object' && address ? address.port : port });
    });
  });
}

/** Stops taking requests, lets those in flight finish for up to `graceMs`, then cuts what is left (SSE streams). */
function closeServer(server: Server, graceMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
    setTimeout(() => server.closeAllConnections(), graceMs).unref();
  });
}

/** How long a starting API waits for its Temporal connection before it goes on without it. */
const TEMPORAL_WARM_UP_MS = 1_000;

/** Connects, or gives up waiting after `ms` (the connection is lazy: its calls connect when they can). */
async function connectedOrNot(connection: Connection, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([connection.ensureConnected().catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

/**
 * Starts the API on config.api.port (0 picks a free port), and its admin listener when ADMIN_PORT is set; resolves once
 * they listen. `adminUrl` is where admin routes, /metrics and readiness details are served (the public URL without one).
 * The database must be migrated already: the migrate step (`npm run migrate`, src/migrate.ts) runs before the services,
 * never on their boot.
 */
export async function startApi({
  config,
  databaseUrl,
  logger,
  adminApiKey,
  warmPool = false,
}: {
  config: Config;
  databaseUrl: string;
  logger: Logger;
  adminApiKey: string;
  /**
   * Opens the database pool's connections and the Temporal connection first (the service does; tests, which run many
   * APIs on one Postgres, do not).
   */
  warmPool?: boolean;
}) {
  const database = createDatabase(databaseUrl, { statementTimeoutMs: config.database.statementTimeoutMs });
  // An attack's first second (or any burst after a quiet spell) would otherwise wait for connections to be set up.
  if (warmPool) await database.warm();
  // Lazy: the API starts (and keeps submits for its relay) even while Temporal is down.
  const connection = Connection.lazy({ address: config.temporal.address });
  // The first call on a new connection sets up its channel and runs the client's code for the first time: about 90 ms
  // of CPU here, during which the requests beside a new process's first submit waited. The service makes it first, for
  // a moment at most (a Temporal that is down is not waited for: the lazy connection keeps trying).
  if (warmPool) await connectedOrNot(connection, TEMPORAL_WARM_UP_MS);
  const client = new Client({ connection, namespace: config.temporal.namespace, dataConverter: serviceDataConverter(config), interceptors: temporalClientInterceptors() });
  const relay = createServiceStartRelay({ client, config, sql: database.sql, logger: logger.child({ component: 'start-relay' }) });
  const deps = { config, database, client, logger, adminApiKey, relay };
  const servers: Server[] = [];
  try {
    const { app, admission } = createPublicApi(deps);
    const publicSide = await listen(createApiServer(app, config.api, earlyRefusals({ db: database.db, config, logger, admission })), config.api.port, '0.0.0.0');
    servers.push(publicSide.server);
    const listener = config.api.adminListener;
    const adminSide = listener ? await listen(createApiServer(createAdminApp(deps), config.api), listener.port, listener.host) : undefined;
    if (adminSide) servers.push(adminSide.server);
    const url = `http://127.0.0.1:${publicSide.port}`;
    const adminHost = !listener || listener.host === '0.0.0.0' || listener.host === '::' ? '127.0.0.1' : listener.host;
    return {
      port: publicSide.port,
      url,
      adminPort: adminSide?.port,
      adminUrl: adminSide ? `http://${adminHost.includes(':') ? `[${adminHost}]` : adminHost}:${adminSide.port}` : url,
      async close({ graceMs = 5_000 }: { graceMs?: number } = {}) {
        await Promise.all(servers.map((server) => closeServer(server, graceMs)));
        flushRefusals(logger);
        relay.close();
        // A request cut off by the close may still be waiting on Temporal (5 s at most): let it end first.
        await temporalCallsSettled(client);
        await connection.close().catch(() => undefined);
        await database.close();
      },
    };
  } catch (err) {
    // A port already taken: nothing is left listening or connected behind the failure.
    await Promise.all(servers.map((server) => closeServer(server, 0)));
    relay.close();
    await connection.close().catch(() => undefined);
    await database.close();
    throw err;
  }
}

async function main(): Promise<void> {
  const config = loadConfig();
  const databaseUrl = requireDatabaseUrl(config);
  const admin = resolveAdminApiKey(config);
  const logger = createLogger('api', config.logLevel, { secrets: [...configuredSecrets(config), admin.key] });
  await startTracing({ tracesUrl: config.tracing.tracesUrl, serviceName: 'videogen-api' });
  if (admin.file) logger.info({ file: admin.file }, 'ADMIN_API_KEY is not set: the admin key is in this file (development and test only)');
  const api = await startApi({ config, databaseUrl, logger, adminApiKey: admin.key, warmPool: true });
  logger.info({ url: api.url, adminUrl: api.adminUrl }, 'api listening');
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      logger.info({ signal }, 'shutting down');
      void api
        .close()
        .then(stopTracing)
        .then(() => process.exit(0));
    });
  }
}

if (require.main === module) runProcess('api', main);
