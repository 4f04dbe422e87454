import express, { type Express } from 'express';
import type { Client } from '@temporalio/client';
import type { Config } from '../config';
import type { Database, Db, Sql } from '../db/client';
import type { Logger } from '../lib/logger';
import { adminRouter } from './admin-routes';
import { mountCodecRoutes } from './codec-routes';
import { requireAdmin } from './auth';
import { capacityRouter } from './capacity-routes';
import { errorMiddleware } from './errors';
import { ApiError } from '../wire/errors';
import { useLeanJson } from './json-response';
import { opsRouter } from './ops-routes';
import { requestLog } from './request-log';
import { requestTracing, tracingOn } from '../lib/tracing';

/** /admin/capacity and /admin/*, behind the admin key, on whichever app serves them. */
export function mountAdminRoutes(app: Express, { db, sql, client, config, adminApiKey }: { db: Db; sql: Sql; client: Client; config: Config; adminApiKey: string }): void {
  app.use('/admin/capacity', requireAdmin(adminApiKey), capacityRouter({ sql, config }));
  app.use('/admin', requireAdmin(adminApiKey), adminRouter({ db, client, config }));
}

/** What the admin listener needs; the public app (app.ts ApiDeps) needs this and more. */
export interface AdminAppDeps {
  config: Config;
  database: Database;
  client: Client;
  logger: Logger;
  /** The admin bearer key (configured, or in development kept in DATA_DIR). */
  adminApiKey: string;
}

/**
 * The internal listener (ADMIN_PORT on ADMIN_HOST): admin routes (still behind the admin key), /metrics, and /readyz
 * with its check details. Operators and Prometheus reach it; clients never do.
 */
export function createAdminApp({ config, database, client, logger, adminApiKey }: AdminAppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  app.set('etag', false);
  useLeanJson(app);
  if (tracingOn()) app.use(requestTracing());
  app.use(requestLog(logger));
  mountCodecRoutes(app, { config, adminApiKey });
  app.use(express.json({ limit: '64kb' }));
  mountAdminRoutes(app, { db: database.db, sql: database.sql, client, config, adminApiKey });
  app.use(opsRouter({ database, client, config, internal: true }));
  app.use((req, _res, next) => next(new ApiError(404, 'not_found', `no route for ${req.method} ${req.path}`)));
  app.use(errorMiddleware(logger));
  return app;
}
