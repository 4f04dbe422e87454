import postgres from 'postgres';
import { pageStatement } from '../../src/db/projection';
import type { Stack } from '../../test/harness';
import { insertFinishedRows } from './bulk-rows';
import { costPerRequest, waitForQuiet, type RequestCost } from './costs';
import { callLoad, httpLoad, takeTurns, type LoadFigures } from './load';

/**
 * Status reads: `GET /v1/generations?limit=20` (autocannon) beside the very statement it runs (pageStatement), sent through
 * postgres.js as the API sends it (prepared, rows as objects) and with a pool as large as the API's; and the API's p99 at a steady 100 requests/s, with
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
  /** What one list request costs Postgres and the API process. */
  listCost: RequestCost;
  /** The same for the query sent straight through postgres.js. */
  directCost: RequestCost;
}

const API_POOL = 10; // createDatabase's default pool, which the API uses
const STEADY_RATE = 100; // requests per second, well below what one API process serves

export async function statusFigures(
  stack: Stack,
  apiUrl: string,
  apiPid: number,
  { smallRows, largeRows, connections, rounds, seconds, log }: { smallRows: number; largeRows: number; connections: number; rounds: number; seconds: number; log: (line: string) => void },
): Promise<StatusFigures> {
  const { userId, apiKey } = await stack.createUser('pro');
  const direct = postgres(stack.env.DATABASE_URL, { max: API_POOL, onnotice: () => {} });
  const page = pageStatement(userId, { limit: 20 });
  const listDirect = () => direct.unsafe(page.text, page.params, { prepare: true });
  const listApi = (seconds: number) =>
    httpLoad({ url: `${apiUrl}/v1/generations?limit=20`, connections, durationS: seconds, headers: { authorization: `Bearer ${apiKey}` }, expect: 200 });
  const steadyList = (s: number) =>
    httpLoad({ url: `${apiUrl}/v1/generations?limit=20`, connections: 4, durationS: s, rate: STEADY_RATE, headers: { authorization: `Bearer ${apiKey}` }, expect: 200 });
  const measure = async () => {
    // What ran before (the submit benchmark's workflow starts, the bulk load) must not be measured as the list's cost.
    await waitForQuiet(stack.database.sql);
    // The steady run first, on the idle stack (after a saturated run the API and Postgres are still catching up), and
    // twice as long as a throughput turn: a p99 of a few hundred requests is decided by two or three of them.
    const [steady] = await takeTurns([steadyList], { rounds, seconds: seconds * 2 });
    const [api, viaSql] = await takeTurns([listApi, (s) => callLoad(listDirect, { concurrency: connections, durationMs: s * 1000 })], { rounds, seconds });
    return { api, direct: viaSql, steady };
  };
  try {
    await insertFinishedRows(stack.database.sql, userId, 0, smallRows);
    const small = await measure();
    const listCost = await costPerRequest(stack.database.sql, apiPid, () => listApi(3));
    const directCost = await costPerRequest(stack.database.sql, undefined, () => callLoad(listDirect, { concurrency: connections, durationMs: 3_000 }));
    log(`  ${smallRows} rows: API ${small.api.rps.toFixed(0)} req/s p99 ${small.api.p99Ms} ms; SQL ${small.direct.rps.toFixed(0)} q/s; loading to ${largeRows} rows…`);
    const began = Date.now();
    await insertFinishedRows(stack.database.sql, userId, smallRows, largeRows - smallRows);
    const loadSeconds = (Date.now() - began) / 1000;
    const large = await measure();
    return { api: small.api, direct: small.direct, apiLarge: large.api, directLarge: large.direct, steady: small.steady, steadyLarge: large.steady, smallRows, largeRows, loadSeconds, listCost, directCost };
  } finally {
    await direct.end({ timeout: 5 });
  }
}
