import type { z } from 'zod';
import { ApiError } from '../wire/errors';

/** Postgres text and jsonb can store neither a NUL nor an unpaired UTF-16 surrogate, so no input may carry one. */
const UNPAIRED_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const unstorable = (text: string) => text.includes('\u0000') || UNPAIRED_SURROGATE.test(text);

interface Visit {
  value: unknown;
  key?: string;
  parent?: Visit;
}

function pathOf(visit: Visit): string[] {
  const path: string[] = [];
  for (let at: Visit | undefined = visit; at?.parent; at = at.parent) path.push(at.key!);
  return path.reverse();
}

/** The path of the first string (key or value) in `input` that Postgres could not store, or undefined. Iterative: JSON may nest deep. */
function unstorableText(input: unknown): string[] | undefined {
  const pending: Visit[] = [{ value: input }];
  for (let visit = pending.pop(); visit; visit = pending.pop()) {
    const { value } = visit;
    if (typeof value === 'string' && unstorable(value)) return pathOf(visit).slice(0, 20);
    if (typeof value !== 'object' || value === null) continue;
    for (const [key, child] of Object.entries(value)) {
      if (unstorable(key)) return [...pathOf(visit), key].slice(0, 20);
      pending.push({ value: child, key, parent: visit });
    }
  }
  return undefined;
}

/** Parses input with a zod schema; a failure is a 400 whose message names the first offending field. */
export function parseOr400<S extends z.ZodType>(schema: S, input: unknown, code = 'invalid_request'): z.infer<S> {
  const badText = unstorableText(input);
  if (badText) {
    const field = badText.join('.') || '(body)';
    const message = 'must not contain NUL characters or unpaired UTF-16 surrogates';
    throw new ApiError(400, code, `${field}: ${message}`, { issues: [{ field, message }] });
  }
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const issues = result.error.issues.map((i) => ({ field: i.path.join('.') || '(body)', message: i.message }));
  const first = issues[0];
  throw new ApiError(400, code, `${first.field}: ${first.message}`, { issues });
}
