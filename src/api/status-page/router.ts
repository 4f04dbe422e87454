import path from 'node:path';
import { Router } from 'express';

/** The status page: three static files, served by name (never the folder, which also holds this module). */
const FILES: Record<string, string> = {
  '/': 'index.html',
  '/status-page/app.js': 'app.js',
  '/status-page/event-stream.js': 'event-stream.js',
  '/status-page/style.css': 'style.css',
};

// The page holds an API key: it runs only its own script, talks only to this origin, and cannot be framed.
const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export function statusPageRouter(): Router {
  const router = Router();
  for (const [route, file] of Object.entries(FILES)) {
    router.get(route, (_req, res) => {
      res.set({
        'Content-Security-Policy': CONTENT_SECURITY_POLICY,
        'Referrer-Policy': 'no-referrer',
        'X-Content-Type-Options': 'nosniff',
        'Cache-Control': 'no-cache',
      });
      res.sendFile(path.join(__dirname, file));
    });
  }
  return router;
}
