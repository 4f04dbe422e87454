export { createVideogenClient, newIdempotencyKey } from './client.js';
export type { EventsOptions, RateLimitRetry, RequestOptions, SubmitOptions, VideogenClient, VideogenClientOptions, WaitOptions } from './client.js';
export { VideogenError, retryAfterSeconds, type ApiErrorCode } from './errors.js';
export { verifyWebhook, WebhookVerificationError, type VerifyOptions, type WebhookHeaders } from './webhooks.js';
export { isTerminal, TERMINAL_STATUSES } from './types.js';
export type * from './types.js';
export type { components, operations, paths } from './schema.js';
