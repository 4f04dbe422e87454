import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import { Client, Connection } from '@temporalio/client';
import { loadConfig, type Config } from '../config';
import { createDatabase } from '../db/client';
import { runMigrations } from '../db/migrate';
import { requireDatabaseUrl } from '../db/client';
import { createLogger, type Logger } from '../lib/logger';
import { createApp } from './app';
import { createApiServer } from './http-server';

/**
 * Starts the API on config.api.port (0 picks a free port); resolves once it listens. `warmPool` opens the database pool's
 * connections first (the service does; tests, which run many APIs on one Postgres, do not).
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
  warmPool?: boolean;
}) {
  await runMigrations(databaseUrl);
  const database = createDatabase(databaseUrl, { statementTimeoutMs: config.database.statementTimeoutMs });
  // An attack's first second (or any burst after a quiet spell) would otherwise wait for connections to be set up.
  if (warmPool) await database.warm();
  // Lazy: the API starts (and answers 503 on submit) even while Temporal is down.
  const connection = Connection.lazy({ address: config.temporal.address });
  const client = new Client({ connection, namespace: config.temporal.namespace });
  const app = createApp({ config, database, client, logger, adminApiKey });
  const server = await new Promise<Server>((resolve) => {
    const s = createApiServer(app, config.api).listen(config.api.port, '0.0.0.0', () => resolve(s));
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.api.port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    /** Stops taking requests, lets those in flight finish for up to `graceMs`, then cuts what is left (SSE streams). */
    async close({ graceMs = 5_000 }: { graceMs?: number } = {}) {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        setTimeout(() => server.closeAllConnections(), graceMs).unref();
      });
      await connection.close().catch(() => undefined);
      await database.close();
    },
  };
}

async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger('api', config.logLevel);
  let adminApiKey = config.api.adminApiKey;
  if (!adminApiKey) {
    adminApiKey = `vgadmin_${randomBytes(24).toString('base64url')}`;
    // Printed once so an operator can create users; set ADMIN_API_KEY to keep one across restarts.
    process.stdout.write(`ADMIN_API_KEY was not set; this run's admin key is: ${adminApiKey}\n`);
  }
  const api = await startApi({ config, databaseUrl: requireDatabaseUrl(config), logger, adminApiKey, warmPool: true });
  logger.info({ url: api.url }, 'api listening');
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      logger.info({ signal }, 'shutting down');
      void api.close().then(() => process.exit(0));
    });
  }
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
