/**
 * Every error answer of the API as one class: `{error: {code, message, details?}}` with its HTTP status and, on 429 and
 * 503, the seconds its Retry-After asks for. `code` is the API's machine-readable code; the ones it documents are named
 * in ApiErrorCode, and a code a newer server adds still arrives as a string.
 */

/** The codes the API documents (its OpenAPI document's error responses), by the status they come with. */
export type ApiErrorCode =
  // 400
  | 'invalid_request'
  | 'invalid_json'
  | 'invalid_cursor'
  | 'invalid_last_event_id'
  | 'invalid_webhook_url'
  | 'invalid_input_reference'
  | 'bad_request'
  // 401
  | 'unauthorized'
  // 402
  | 'insufficient_credits'
  // 404
  | 'not_found'
  | 'invalid_link'
  | 'remix_source_not_found'
  // 409
  | 'generation_already_finished'
  | 'remix_source_not_succeeded'
  | 'too_many_endpoints'
  | 'endpoint_disabled'
  | 'delivery_in_progress'
  | 'replay_limit_reached'
  | 'too_many_api_keys'
  | 'api_key_retiring'
  // 413, 415
  | 'payload_too_large'
  | 'unsupported_media_type'
  // 422
  | 'idempotency_key_reused'
  // 429
  | 'rate_limited'
  | 'too_many_active_jobs'
  | 'daily_quota_exceeded'
  | 'capacity_exhausted'
  | 'estimate_rate_limited'
  | 'too_many_streams'
  | 'stream_capacity_reached'
  | 'too_many_waits'
  | 'wait_capacity_reached'
  | 'too_many_input_checks'
  | 'input_check_capacity_reached'
  | 'replay_rate_limited'
  | 'too_many_failed_auth'
  // 500, 503
  | 'internal_error'
  | 'temporal_unavailable'
  | 'database_unavailable'
  | 'database_timeout'
  | 'mail_unavailable'
  | 'too_many_connections'
  // A code this client does not know yet; `(string & {})` keeps the named ones in editors' completions.
  | (string & {});

export class VideogenError extends Error {
  override readonly name = 'VideogenError';

  constructor(
    readonly status: number,
    readonly code: ApiErrorCode,
    message: string,
    /** Seconds the server asked to wait before retrying (Retry-After), when it did. */
    readonly retryAfter: number | undefined,
    readonly details?: unknown,
  ) {
    super(message);
  }

  /** Built from an error answer; a body that is not the API's error shape (a proxy's page) keeps the status. */
  static from(response: Response, body: unknown): VideogenError {
    const error = (body as { error?: { code?: unknown; message?: unknown; details?: unknown } } | undefined)?.error;
    const code = typeof error?.code === 'string' ? error.code : `http_${response.status}`;
    const message = typeof error?.message === 'string' ? error.message : `HTTP ${response.status} ${response.statusText}`.trim();
    return new VideogenError(response.status, code, message, retryAfterSeconds(response.headers), error?.details);
  }
}

/** Retry-After as seconds: a number of seconds or an HTTP date (RFC 9110); undefined when absent or unreadable. */
export function retryAfterSeconds(headers: Headers): number | undefined {
  const value = headers.get('retry-after');
  if (value === null || value.trim() === '') return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}
