/**
 * Whether an error means Postgres could not be reached or is going away (refused or dropped connections, a server shutting
 * down or starting up), as opposed to a query that failed: the API answers those 503 with Retry-After, not 500.
 */
const NETWORK = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
// postgres.js's own connection errors.
const CLIENT = new Set(['CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT']);

export function isDatabaseUnavailable(err: unknown): boolean {
  return unavailableCode(err) !== undefined;
}

/** The code that says Postgres could not be reached (see isDatabaseUnavailable), or undefined for any other error. */
export function unavailableCode(err: unknown): string | undefined {
  // drizzle wraps the driver's error as its cause.
  for (let e: unknown = err, depth = 0; e && depth < 3; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code !== 'string') continue;
    // SQLSTATE class 08 (connection exception), 57P01-57P03 (admin or crash shutdown, cannot connect now).
    if (NETWORK.has(code) || CLIENT.has(code) || code.startsWith('08') || /^57P0[123]$/.test(code)) return code;
  }
  return undefined;
}
