import { createLogger } from '../src/lib/logger';
import { runProcess } from '../src/run-process';
import { startSimulator } from './app';
import { loadSimulatorSettings, simulatorSecrets } from './settings';

/** Process entry for the backend simulator: `npm run simulator`. It signs callbacks with BACKEND_WEBHOOK_SECRET. */
async function main(): Promise<void> {
  const settings = loadSimulatorSettings();
  const logger = createLogger('simulator', settings.logLevel, { secrets: simulatorSecrets(settings) });
  const running = await startSimulator({
    port: settings.port,
    host: settings.host,
    knobs: settings.knobs,
    webhookSecret: settings.webhookSecret,
    adminApiKey: settings.adminApiKey,
    logger,
  });
  logger.info({ url: running.url, knobs: settings.knobs }, 'backend simulator listening');

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

runProcess('simulator', main, () => simulatorSecrets(loadSimulatorSettings()));
