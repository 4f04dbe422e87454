import type { Client } from '@temporalio/client';
import express, { type Express } from 'express';
import type { Config } from '../config';
import type { Database } from '../db/client';
import type { Logger } from '../lib/logger';
import { adminRouter } from './admin-routes';
import { requireAdmin, requireUser } from './auth';
import { callbacksRouter } from './callbacks-routes';
import { ApiError, errorMiddleware } from './errors';
import { generationsRouter } from './generations-routes';

export interface ApiDeps {
  config: Config;
  database: Database;
  client: Client;
  logger: Logger;
  /** The admin bearer key (configured, or generated at start). */
  adminApiKey: string;
}

export function createApp({ config, database, client, logger, adminApiKey }: ApiDeps): Express {
  const { db, sql } = database;
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  // Raw body for signature verification: mounted before the JSON parser.
  app.use('/internal/backend/callbacks', callbacksRouter({ client, sql, webhookSecret: config.backend.webhookSecret, logger }));

  app.use(express.json({ limit: '64kb' }));
  app.use('/admin', requireAdmin(adminApiKey), adminRouter({ db, config }));
  app.use('/v1/generations', requireUser(db), generationsRouter({ db, client, config }));

  app.use((req, _res, next) => next(new ApiError(404, 'not_found', `no route for ${req.method} ${req.path}`)));
  app.use(errorMiddleware(logger));
  return app;
}
