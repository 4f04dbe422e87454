import { Connection } from '@temporalio/client';
import { loadConfig } from './config';
import { requireDatabaseUrl } from './db/client';
import { runMigrations } from './db/migrate';
import { createLogger, type Logger } from './lib/logger';
import { runProcess } from './run-process';
import { applyNamespaceRetention } from './retention/namespace';

export interface MigrateStep {
  databaseUrl: string;
  temporal: { address: string; namespace: string; retentionDays: number };
  logger: Logger;
}

/**
 * The migrate step (`npm run migrate`), run once before the services start — by `npm start`, the topology and the
 * `migrate` service of docker-compose.yml — never by the services themselves: applies every pending migration and every
 * SQL routine whose file changed (src/db/routines.ts), then sets the Temporal namespace's retention if Temporal answers (a Temporal that is down, or a namespace not there yet, is
 * a warning: it does not hold up the services, and the next run sets it).
 */
export async function migrate({ databaseUrl, temporal, logger }: MigrateStep): Promise<void> {
  const { migrations, routines } = await runMigrations(databaseUrl);
  logger.info({ applied: migrations }, migrations.length > 0 ? `applied ${migrations.length} migrations` : 'no migration pending');
  logger.info({ routines }, routines.length > 0 ? `applied ${routines.length} routines` : 'no routine changed');

  let connection: Connection;
  try {
    connection = await Connection.connect({ address: temporal.address, connectTimeout: '5s' });
  } catch (err) {
    logger.warn({ err, address: temporal.address }, "Temporal did not answer: the namespace's retention was left as it is");
    return;
  }
  try {
    const { before, updated } = await applyNamespaceRetention(connection, temporal.namespace, temporal.retentionDays);
    logger.info({ namespace: temporal.namespace, retentionDays: temporal.retentionDays, before }, updated ? 'namespace retention set' : 'namespace retention already set');
  } catch (err) {
    logger.warn({ err, namespace: temporal.namespace }, "the namespace's retention could not be set");
  } finally {
    await connection.close();
  }
}

async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger('migrate', config.logLevel);
  const { address, namespace, retentionDays } = config.temporal;
  await migrate({ databaseUrl: requireDatabaseUrl(config), temporal: { address, namespace, retentionDays }, logger });
}

// A bad setting is one line (exit 78); any other failure one scrubbed log line (exit 1), never a URL with its password.
if (require.main === module) runProcess('migrate', main);
