/**
 * The error of every HTTP answer the service writes — the API's routes, its event streams — as `{error: {code, message,
 * details?}}` with its status and headers (src/api/errors.ts writes it; src/wire/resources.ts documents it). It is an
 * answer, not a fault: it carries no stack trace, whose capture cost each refusal some 50 µs in a flood of 429s.
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
    readonly headers: Record<string, string> = {},
  ) {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(message);
    Error.stackTraceLimit = limit;
    this.name = 'ApiError';
  }
}

export const notFound = (what = 'resource') => new ApiError(404, 'not_found', `${what} not found`);
