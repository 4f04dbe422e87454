import { configuredSecrets, loadConfig } from '../config';
import { createLogger } from '../lib/logger';
import { runProcess } from '../lib/run-process';
import { startSimulator } from './app';

/** Process entry for the backend simulator: `npm run simulator`. It signs callbacks with BACKEND_WEBHOOK_SECRET. */
async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger('simulator', config.logLevel, { secrets: configuredSecrets(config) });
  const running = await startSimulator({
    port: config.simulator.port,
    host: config.simulator.host,
    knobs: config.simulator.knobs,
    webhookSecret: config.backend.webhookSecret,
    adminApiKey: config.api.adminApiKey,
    logger,
  });
  logger.info({ url: running.url, knobs: config.simulator.knobs }, 'backend simulator listening');

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'backend simulator shutting down');
    running.close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'backend simulator shutdown failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}

runProcess('simulator', main);
