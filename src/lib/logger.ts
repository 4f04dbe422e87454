import { context, isSpanContextValid, trace } from '@opentelemetry/api';
import pino from 'pino';
import { CENSOR, secretScrubber } from './redact';


export type Logger = pino.Logger;

/** Fields that hold a secret by name, wherever a log call puts them (one level deep; the scrubber below catches the rest). */
const SECRET_FIELDS = ['authorization', 'cookie', 'apiKey', 'api_key', 'adminApiKey', 'secret', 'secrets', 'previousSecret', 'webhookSecret', 'password', 'databaseUrl'];

/**
 * JSON logs on every process; `service` names the process. Secrets are redacted twice: by field name, and in every
 * written line by value (`secrets`: what this process was configured with) and by shape (src/lib/redact.ts). With
 * tracing on, a line written inside a span (a request, an activity) carries its trace id.
 */
export function createLogger(
  service: string,
  level: string = 'info',
  { secrets = [], destination }: { secrets?: ReadonlyArray<string | undefined>; /** stdout unless given (tests). */ destination?: pino.DestinationStream } = {},
): Logger {
  const scrub = secretScrubber(secrets);
  const options: pino.LoggerOptions = {
    level,
    base: { service },
    redact: { paths: [...SECRET_FIELDS, ...SECRET_FIELDS.map((field) => `*.${field}`), '*.headers.authorization', '*.headers.cookie'], censor: CENSOR },
    hooks: { streamWrite: scrub },
    mixin: traceOfLine,
  };
  return destination ? pino(options, destination) : pino(options);
}

/**
 * Without tracing (src/lib/tracing.ts) there is no context manager, and no span: a lookup that finds nothing. A new
 * object each line: pino merges the line's fields into what the mixin returns, so a shared one would carry every
 * earlier line's fields into the next.
 */
function traceOfLine(): { traceId?: string } {
  const span = trace.getSpanContext(context.active());
  return span && isSpanContextValid(span) ? { traceId: span.traceId } : {};
}
