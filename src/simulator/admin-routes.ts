import { Router } from 'express';
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
}

// Unknown keys are refused so a typo in a benchmark does not silently change nothing.
const knobPatchSchema = simulatorKnobsSchema.partial().strict();

export function adminRoutes(deps: AdminRouteDeps): Router {
  const router = Router();

  router.get('/config', (_req, res) => {
    res.json(deps.knobs());
  });

  router.put('/config', (req, res) => {
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

  router.post('/reset-stats', (_req, res) => {
    deps.resetStats();
    res.json(deps.stats());
  });

  return router;
}
