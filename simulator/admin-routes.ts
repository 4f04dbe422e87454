import { createHash, timingSafeEqual } from 'node:crypto';
import { Router, type RequestHandler } from 'express';
import type { SimulatorKnobs } from './knobs';
import { simulatorKnobsSchema } from './knobs';
import { describeIssues, sendError } from './http-errors';

/** Operator and test controls; never subject to the failure knobs. */
export interface AdminRouteDeps {
  knobs: () => SimulatorKnobs;
  updateKnobs: (next: SimulatorKnobs) => void;
  listJobs: (clientKeyPrefix: string) => unknown[];
  stats: () => Record<string, number>;
  resetStats: () => void;
  /** When set, changing the knobs or the stats takes `Authorization: Bearer <it>` (reading them stays open to the dispatcher). */
  adminApiKey?: string;
}

const digest = (text: string) => createHash('sha256').update(text).digest();

/** A failure knob (an outage, say) is a denial of service: outside development only the operator may turn one. */
function requireKeyFor(adminApiKey: string | undefined): RequestHandler {
  const expected = adminApiKey === undefined ? undefined : digest(`Bearer ${adminApiKey}`);
  return (req, res, next) => {
    if (!expected || timingSafeEqual(digest(req.get('authorization') ?? ''), expected)) return next();
    sendError(res, 401, 'unauthorized', 'the admin key is required: Authorization: Bearer <admin key>');
  };
}

// Unknown keys are refused so a typo in a benchmark does not silently change nothing.
const knobPatchSchema = simulatorKnobsSchema.partial().strict();

export function adminRoutes(deps: AdminRouteDeps): Router {
  const router = Router();
  const operator = requireKeyFor(deps.adminApiKey);

  router.get('/config', (_req, res) => {
    res.json(deps.knobs());
  });

  router.put('/config', operator, (req, res) => {
    const parsed = knobPatchSchema.safeParse(req.body);
    if (!parsed.success) return sendError(res, 400, 'invalid_request', describeIssues(parsed.error));
    const next = { ...deps.knobs(), ...parsed.data };
    if (next.p99Ms < next.p50Ms) return sendError(res, 400, 'invalid_request', 'p99Ms: must be at least p50Ms');
    deps.updateKnobs(next);
    res.json(deps.knobs());
  });

  router.get('/jobs', (req, res) => {
    const prefix = typeof req.query.client_key_prefix === 'string' ? req.query.client_key_prefix : '';
    res.json({ data: deps.listJobs(prefix) });
  });

  router.get('/stats', (_req, res) => {
    res.json(deps.stats());
  });

  router.post('/reset-stats', operator, (_req, res) => {
    deps.resetStats();
    res.json(deps.stats());
  });

  return router;
}
