import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Router, type Response } from 'express';
import { ApiError } from '../../wire/errors';

/** The status page: static files, served by name (never the folder, which also holds this module). */
const FILES: Record<string, string> = {
  '/': 'index.html',
  '/status-page/app.js': 'app.js',
  '/status-page/style.css': 'style.css',
  // The page's icon; at /favicon.ico too, where a browser looks for one on the pages that name none (the reference,
  // the codec sign-in, the mails' links), so none of them logs a 404.
  '/favicon.svg': 'favicon.svg',
  '/favicon.ico': 'favicon.svg',
};

/**
 * The page talks to the API through the TypeScript client package (clients/typescript), built to ESM by
 * scripts/client-build.sh (npm start, npm test and the image run it): its modules are served at /client/, and openapi-fetch,
 * the one package it imports, at /client/openapi-fetch.js, which the page's import map names.
 */
const CLIENT_DIST = path.resolve(__dirname, '../../../clients/typescript/dist');
const CLIENT_MODULE = /^[a-z][a-z-]*\.js$/;

function openApiFetchModule(): string | undefined {
  try {
    return path.join(path.dirname(require.resolve('openapi-fetch/package.json')), 'dist/index.mjs');
  } catch {
    return undefined;
  }
}

/** The page's inline import map may run, and nothing else inline: CSP allows it by its hash. */
function importMapHash(): string {
  const html = fs.readFileSync(path.join(__dirname, 'index.html'), 'utf8');
  const map = /<script type="importmap">([\s\S]*?)<\/script>/.exec(html);
  if (!map) throw new Error('src/api/status-page/index.html has no import map');
  return `'sha256-${createHash('sha256').update(map[1]).digest('base64')}'`;
}

// The page holds an API key: it runs only its own scripts, talks only to this origin, and cannot be framed.
const contentSecurityPolicy = () =>
  [
    "default-src 'none'",
    `script-src 'self' ${importMapHash()}`,
    "style-src 'self'",
    "connect-src 'self'",
    "img-src 'self' data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');

export function statusPageRouter(): Router {
  const router = Router();
  const csp = contentSecurityPolicy();
  const headers = (res: Response) =>
    res.set({ 'Content-Security-Policy': csp, 'Referrer-Policy': 'no-referrer', 'X-Content-Type-Options': 'nosniff', 'Cache-Control': 'no-cache' });
  for (const [route, file] of Object.entries(FILES)) {
    router.get(route, (_req, res) => {
      headers(res);
      res.sendFile(path.join(__dirname, file));
    });
  }
  const openApiFetch = openApiFetchModule();
  router.get('/client/:file', (req, res, next) => {
    const file = req.params.file;
    const source = file === 'openapi-fetch.js' ? openApiFetch : CLIENT_MODULE.test(file) ? path.join(CLIENT_DIST, file) : undefined;
    if (!source || !fs.existsSync(source)) return next(new ApiError(404, 'not_found', `no client module ${file}${fs.existsSync(CLIENT_DIST) ? '' : ' (the client is not built: scripts/client-build.sh)'}`));
    headers(res);
    res.type('text/javascript').sendFile(source);
  });
  return router;
}
