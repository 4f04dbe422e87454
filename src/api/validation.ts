import type { z } from 'zod';
import { ApiError } from './errors';

/** Parses input with a zod schema; a failure is a 400 whose message names the first offending field. */
export function parseOr400<S extends z.ZodType>(schema: S, input: unknown, code = 'invalid_request'): z.infer<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const issues = result.error.issues.map((i) => ({ field: i.path.join('.') || '(body)', message: i.message }));
  const first = issues[0];
  throw new ApiError(400, code, `${first.field}: ${first.message}`, { issues });
}
