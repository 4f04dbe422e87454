import postgres from 'postgres';

/** The machine's Postgres when DATABASE_URL is not set (trust auth, as a fresh Debian/Homebrew install has it). */
export const DEFAULT_POSTGRES_URL = 'postgres://postgres@127.0.0.1:5432/postgres';

/** A Postgres server the topology creates its databases on: where it is, and who connects. */
export interface PostgresServer {
  /** A URL of the server that may create and drop databases (its database part is only where to connect first). */
  adminUrl: string;
  host: string;
  port: number;
  user: string;
  password: string;
}

export function postgresServer(url: string): PostgresServer {
  const parsed = new URL(url);
  if (!['postgres:', 'postgresql:'].includes(parsed.protocol)) throw new Error(`DATABASE_URL must be a postgres:// URL, got ${parsed.protocol}`);
  return {
    adminUrl: url,
    host: parsed.hostname || '127.0.0.1',
    port: Number(parsed.port || 5432),
    user: decodeURIComponent(parsed.username || 'postgres'),
    password: decodeURIComponent(parsed.password),
  };
}

/** The server's URL with another database in it. */
export function databaseUrl(server: PostgresServer, database: string): string {
  const url = new URL(server.adminUrl);
  url.pathname = `/${database}`;
  return url.toString();
}

function connect(server: PostgresServer) {
  return postgres(server.adminUrl, { max: 1, connect_timeout: 5, onnotice: () => {}, connection: { application_name: 'videogen-topology' } });
}

/** Fails with what to do when nothing answers, or the user may not create databases. */
export async function checkPostgres(server: PostgresServer): Promise<string> {
  const sql = connect(server);
  try {
    const [row] = await sql<Array<{ version: string; can_create: boolean }>>`
      select current_setting('server_version') as version,
             (select rolcreatedb or rolsuper from pg_roles where rolname = current_user) as can_create`;
    if (!row.can_create) throw new Error(`user ${server.user} may not create databases on ${server.host}:${server.port}`);
    return row.version;
  } catch (err) {
    throw new Error(
      `no usable Postgres at ${server.host}:${server.port} as ${server.user} (${err instanceof Error ? err.message : String(err)}).\n` +
        `Start a Postgres server there, or set DATABASE_URL=postgres://user:password@host:port/postgres to a server where that user may create databases.`,
      { cause: err },
    );
  } finally {
    await sql.end({ timeout: 5 });
  }
}

const safeName = /^[a-z_][a-z0-9_]*$/;

export async function createDatabases(server: PostgresServer, names: string[]): Promise<void> {
  const sql = connect(server);
  try {
    for (const name of names) {
      if (!safeName.test(name)) throw new Error(`not a safe database name: ${name}`);
      await sql.unsafe(`create database ${name}`);
    }
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** Drops them even while something is still connected (Postgres 13+). */
export async function dropDatabases(server: PostgresServer, names: string[]): Promise<void> {
  const sql = connect(server);
  try {
    for (const name of names) {
      if (!safeName.test(name)) throw new Error(`not a safe database name: ${name}`);
      await sql.unsafe(`drop database if exists ${name} with (force)`);
    }
  } finally {
    await sql.end({ timeout: 5 });
  }
}
