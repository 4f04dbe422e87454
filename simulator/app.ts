import express, { type Express } from 'express';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../src/lib/logger';
import { adminRoutes } from './admin-routes';
import { apiRoutes } from './api-routes';
import { CallbackDispatcher, type CallbackStats } from './callbacks';
import { systemClock, TimerSet, type Clock, type Random } from './clock';
import { SimulatorEngine, type EngineStats } from './engine';
import { errorHandler, sendError } from './http-errors';
import type { SimulatorKnobs } from './knobs';

/** The backend simulator as an express app: the /v1 API, signed callbacks, and /admin controls. */
export interface SimulatorOptions {
  knobs: SimulatorKnobs;
  webhookSecret: string;
  logger: Logger;
  clock?: Clock;
  random?: Random;
  /** Used to deliver callbacks; defaults to global fetch. */
  fetch?: typeof fetch;
  /** When set, PUT /admin/config and POST /admin/reset-stats require it as a bearer key. */
  adminApiKey?: string;
}

export type SimulatorStats = EngineStats & CallbackStats;

export interface Simulator {
  app: Express;
  engine: SimulatorEngine;
  callbacks: CallbackDispatcher;
  stats(): SimulatorStats;
  resetStats(): void;
  /** Stops every timer and pending callback; the app answers 503 to anything still waiting. */
  close(): void;
}

export function createSimulator(options: SimulatorOptions): Simulator {
  const clock = options.clock ?? systemClock;
  const random = options.random ?? Math.random;
  const logger = options.logger;
  const engine = new SimulatorEngine({ knobs: options.knobs, clock, random, logger });
  const callbacks = new CallbackDispatcher({
    webhookSecret: options.webhookSecret,
    knobs: () => engine.knobs,
    logger,
    clock,
    random,
    fetch: options.fetch,
  });
  engine.onEvent(callbacks.handle);
  const timers = new TimerSet(clock);
  let closed = false;

  const stats = (): SimulatorStats => ({ ...engine.stats(), ...callbacks.stats() });
  const resetStats = () => {
    engine.resetStats();
    callbacks.resetStats();
  };

  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ limit: '1mb' }));
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.use('/v1', apiRoutes({ engine, random, timers, isClosed: () => closed }));
  app.use(
    '/admin',
    adminRoutes({
      knobs: () => engine.knobs,
      updateKnobs: (next) => {
        engine.updateKnobs(next);
        logger.info({ knobs: next }, 'simulator knobs changed');
      },
      listJobs: (prefix) => engine.list(prefix),
      stats: () => ({ ...stats() }),
      resetStats,
      adminApiKey: options.adminApiKey,
    }),
  );
  app.use((req, res) => sendError(res, 404, 'not_found', `no route ${req.method} ${req.path}`));
  app.use(errorHandler(logger));

  return {
    app,
    engine,
    callbacks,
    stats,
    resetStats,
    close() {
      closed = true;
      timers.clearAll();
      engine.close();
      callbacks.close();
    },
  };
}

export interface StartSimulatorOptions extends SimulatorOptions {
  /** 0 picks a free port. */
  port: number;
  /** Defaults to 127.0.0.1. */
  host?: string;
}

export interface RunningSimulator {
  url: string;
  port: number;
  simulator: Simulator;
  close(): Promise<void>;
}

export function startSimulator(options: StartSimulatorOptions): Promise<RunningSimulator> {
  const host = options.host ?? '127.0.0.1';
  const simulator = createSimulator(options);
  return new Promise((resolve, reject) => {
    const server = simulator.app.listen(options.port, host);
    server.once('error', reject);
    server.once('listening', () => {
      const { port } = server.address() as AddressInfo;
      const urlHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
      let closing: Promise<void> | undefined;
      const close = () =>
        (closing ??= new Promise<void>((done) => {
          simulator.close();
          server.close(() => done());
          // Long-poll generate calls and keep-alive sockets would otherwise hold the server open.
          server.closeAllConnections();
        }));
      resolve({ url: `http://${urlHost}:${port}`, port, simulator, close });
    });
  });
}
