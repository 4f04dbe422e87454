import postgres from 'postgres';
import { pageQuery } from '../../src/db/projection';
import type { Stack } from '../../test/harness';
import { insertFinishedRows } from './bulk-rows';
import { transactionsPerRequest } from './costs';
import { callLoad, httpLoad, takeTurns, type LoadFigures } from './load';

/**
 * Status reads: `GET /v1/generations?limit=20` (autocannon) beside the very SQL it runs, sent through postgres.js with the
 * same options drizzle uses and a pool as large as the API's; and the API's p99 at a steady 100 requests/s, with
 * `smallRows` in the projection and again with `largeRows`.
 */
export interface StatusFigures {
  api: LoadFigures;
  direct: LoadFigures;
  apiLarge: LoadFigures;
  directLarge: LoadFigures;
  /** The API at a fixed, unsaturated rate: its p99 is service time, not queueing behind other requests. */
  steady: LoadFigures;
  steadyLarge: LoadFigures;
  smallRows: number;
  largeRows: number;
  loadSeconds: number;
  /** Postgres transactions per list request. */
  transactionsPerList: number;
}

const API_POOL = 10; // createDatabase's default pool, which the API uses
const STEADY_RATE = 100; // requests per second, well below what one API process serves

export async function statusFigures(
  stack: Stack,
  apiUrl: string,
  { smallRows, largeRows, connections, rounds, seconds, log }: { smallRows: number; largeRows: number; connections: number; rounds: number; seconds: number; log: (line: string) => void },
): Promise<StatusFigures> {
  const { userId, apiKey } = await stack.createUser('pro');
  const direct = postgres(stack.env.DATABASE_URL, { max: API_POOL, onnotice: () => {} });
  const page = pageQuery(stack.database.db, userId, { limit: 20 }).toSQL();
  const listDirect = () => direct.unsafe(page.sql, page.params as never[], { prepare: false }).values();
  const listApi = (seconds: number) =>
    httpLoad({ url: `${apiUrl}/v1/generations?limit=20`, connections, durationS: seconds, headers: { authorization: `Bearer ${apiKey}` }, expect: 200 });
  const steadyList = (s: number) =>
    httpLoad({ url: `${apiUrl}/v1/generations?limit=20`, connections: 4, durationS: s, rate: STEADY_RATE, headers: { authorization: `Bearer ${apiKey}` }, expect: 200 });
  const measure = async () => {
    const [api, viaSql] = await takeTurns([listApi, (s) => callLoad(listDirect, { concurrency: connections, durationMs: s * 1000 })], { rounds, seconds });
    const [steady] = await takeTurns([steadyList], { rounds, seconds: seconds * 2 });
    return { api, direct: viaSql, steady };
  };
  try {
    await insertFinishedRows(stack.database.sql, userId, 0, smallRows);
    const small = await measure();
    const transactionsPerList = await transactionsPerRequest(stack.database.sql, () => listApi(3));
    log(`  ${smallRows} rows: API ${small.api.rps.toFixed(0)} req/s p99 ${small.api.p99Ms} ms; SQL ${small.direct.rps.toFixed(0)} q/s; loading to ${largeRows} rows…`);
    const began = Date.now();
    await insertFinishedRows(stack.database.sql, userId, smallRows, largeRows - smallRows);
    const loadSeconds = (Date.now() - began) / 1000;
    const large = await measure();
    return { api: small.api, direct: small.direct, apiLarge: large.api, directLarge: large.direct, steady: small.steady, steadyLarge: large.steady, smallRows, largeRows, loadSeconds, transactionsPerList };
  } finally {
    await direct.end({ timeout: 5 });
  }
}
