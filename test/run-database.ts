import { createDatabase, type Database } from '../src/db/client';

/**
 * A connection pool on the run's database (made and migrated once per run by test/global-setup.ts), for the tests of the
 * `describe` block it is called in: opened before them, closed after them. Its `sql` and `db` are there once the block's
 * tests run.
 */
export function useRunDatabase({ max }: { max: number }): Pick<Database, 'sql' | 'db'> {
  let database: Database | undefined;
  beforeAll(() => {
    const url = process.env.TEST_DATABASE_URL;
    if (!url) throw new Error('run through jest (test/global-setup.ts)');
    database = createDatabase(url, { max });
  });
  afterAll(async () => {
    await database?.close();
  });
  const opened = (): Database => {
    if (!database) throw new Error('the run database is opened in beforeAll: use it inside a test');
    return database;
  };
  return {
    get sql() {
      return opened().sql;
    },
    get db() {
      return opened().db;
    },
  };
}
