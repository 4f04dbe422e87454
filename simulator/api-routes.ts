import { Router, type RequestHandler, type Response } from 'express';
import { z } from 'zod';
import type { BackendSubmitRequest } from '../src/backend/types';
import type { Random, TimerSet } from './clock';
import { EngineClosedError, type SimulatorEngine } from './engine';
import { describeIssues, sendError } from './http-errors';

/** The backend's public API (/v1): submit, poll, cancel, and the synchronous generate call. */
export const submitRequestSchema = z.object({
  client_key: z.string().min(1).max(256),
  prompt: z.string().min(1).max(20_000),
  duration_seconds: z.number().positive().max(3_600),
  resolution: z.string().min(1).max(32),
  aspect_ratio: z.string().min(1).max(32),
  seed: z.number().int().nullable().default(null),
  input_reference: z.url({ protocol: /^https?$/ }).max(4096).optional(),
  remix_of: z.object({ job_id: z.string().min(1).max(256), video_url: z.url({ protocol: /^https?$/ }).max(4096) }).strict().optional(),
  callback_url: z.url({ protocol: /^https?$/ }).optional(),
});

/** The synchronous call has nowhere to call back. */
const generateRequestSchema = submitRequestSchema.omit({ callback_url: true });

export interface ApiRouteDeps {
  engine: SimulatorEngine;
  random: Random;
  timers: TimerSet;
  isClosed: () => boolean;
}

/** Injects the API failure knobs before any real work: outage, random 503s, slow answers. */
function faultInjection({ engine, random, timers, isClosed }: ApiRouteDeps): RequestHandler {
  return (_req, res, next) => {
    const knobs = engine.knobs;
    if (knobs.outage) return sendError(res, 503, 'unavailable', 'the backend is in an outage');
    if (random() < knobs.errorRate) return sendError(res, 503, 'unavailable', 'the backend is temporarily unavailable');
    if (knobs.slowResponseMs > 0 && random() < knobs.slowResponseRate) delayAnswer(res, knobs.slowResponseMs, timers, isClosed);
    next();
  };
}

/** The work happens now but the answer comes late, so a client that times out must retry idempotently. */
function delayAnswer(res: Response, ms: number, timers: TimerSet, isClosed: () => boolean): void {
  const send = res.json.bind(res);
  res.json = (body: unknown) => {
    void timers.sleep(ms).then(() => {
      if (!isClosed() && !res.destroyed && !res.writableEnded) send(body);
    });
    return res;
  };
}

function parse<T extends z.ZodType>(schema: T, body: unknown, res: Response): z.infer<T> | undefined {
  const parsed = schema.safeParse(body);
  if (parsed.success) return parsed.data;
  sendError(res, 400, 'invalid_request', describeIssues(parsed.error));
  return undefined;
}

export function apiRoutes(deps: ApiRouteDeps): Router {
  const { engine } = deps;
  const router = Router();
  router.use(faultInjection(deps));

  router.post('/jobs', (req, res) => {
    const request = parse(submitRequestSchema, req.body, res);
    if (!request) return;
    const { job, created } = engine.submit(request as BackendSubmitRequest);
    res.status(created ? 201 : 200).json(job);
  });

  router.get('/jobs/:id', (req, res) => {
    const job = engine.get(req.params.id);
    if (!job) return sendError(res, 404, 'not_found', `no job ${req.params.id}`);
    res.json(job);
  });

  router.post('/jobs/:id/cancel', (req, res) => {
    const job = engine.cancel(req.params.id);
    if (!job) return sendError(res, 404, 'not_found', `no job ${req.params.id}`);
    res.json(job);
  });

  router.post('/generate', async (req, res) => {
    const request = parse(generateRequestSchema, req.body, res);
    if (!request) return;
    const { job } = engine.submit(request as BackendSubmitRequest);
    // A client that hangs up stops waiting, but the job runs on; the same client_key attaches to it later.
    const hangUp = new AbortController();
    res.on('close', () => hangUp.abort());
    try {
      res.json(await engine.waitForEnd(job.id, hangUp.signal));
    } catch (err) {
      if (hangUp.signal.aborted) return;
      if (err instanceof EngineClosedError) return sendError(res, 503, 'unavailable', err.message);
      throw err;
    }
  });

  return router;
}
