import { ConfigError, configuredSecrets, loadConfig } from './config';
import { createLogger } from './lib/logger';

/** sysexits' EX_CONFIG: a supervisor can tell "fix the settings" from a crash worth restarting. */
export const EXIT_CONFIG = 78;

/**
 * Runs a process entry point. A configuration it must not start with is one line on stderr naming the settings (never
 * their values), exit code 78, no stack trace; any other failure is one scrubbed JSON log line, exit code 1, scrubbed
 * of `secretsOf()` (by default the service's configured secrets; the simulator passes its own).
 */
export function runProcess(service: string, main: () => Promise<void>, secretsOf: () => string[] = () => configuredSecrets(loadConfig())): void {
  main().catch((err: unknown) => {
    if (err instanceof ConfigError) {
      process.stderr.write(`${service}: ${err.message}\n`);
      process.exit(EXIT_CONFIG);
    }
    let secrets: string[] = [];
    try {
      secrets = secretsOf();
    } catch {
      // The configuration was fine when main read it; if not, the shapes alone are scrubbed.
    }
    createLogger(service, 'info', { secrets }).fatal({ err }, `${service} failed`);
    process.exit(1);
  });
}
