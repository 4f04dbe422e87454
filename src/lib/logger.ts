import pino from 'pino';

export type Logger = pino.Logger;

/** JSON logs on every process; `service` names the process. API keys and secrets are redacted wherever they appear. */
export function createLogger(service: string, level: string = 'info'): Logger {
  return pino({
    level,
    base: { service },
    redact: {
      paths: ['*.authorization', '*.Authorization', 'apiKey', 'api_key', '*.apiKey', '*.api_key', 'secret', '*.secret'],
      censor: '[redacted]',
    },
  });
}
