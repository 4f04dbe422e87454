import { cannotRender, type BackendRenders, type RenderRequest } from './backend-specs';

/**
 * Routing across backends (issue 22): which backend an attempt goes to, and what it costs there. Pure: the facts it
 * decides on (each backend's health, circuit and pool) are read by an activity (src/activities/lifecycle.ts), whose
 * answer the workflow records.
 */

/** What routing needs to know of a configured backend. */
export interface RoutableBackend {
  name: string;
  cost_factor: number;
  renders: BackendRenders;
}

/** A backend's pool: its own `gpu` task queue and the Postgres pool of slot leases gating it (src/dispatch). */
export interface BackendPool {
  backend: string;
  /** The pool's name in gpu_capacity and gpu_slot_leases. */
  pool: string;
  /** The task queue its GPU activities are dispatched on. */
  taskQueue: string;
  /** The pool's starting live capacity. */
  initialCapacity: number;
}

/**
 * One pool per backend. The first keeps the service's own pool and queue (GPU_TASK_QUEUE): a deployment with one backend
 * has exactly the pool and queue it had before routing; every other backend's are `<GPU_TASK_QUEUE>-<name>`.
 */
export function backendPools(backends: Array<{ name: string; capacity: number }>, gpuTaskQueue: string, firstCapacity: number): BackendPool[] {
  return backends.map((b, i) => {
    const queue = i === 0 ? gpuTaskQueue : `${gpuTaskQueue}-${b.name}`;
    return { backend: b.name, pool: queue, taskQueue: queue, initialCapacity: i === 0 ? firstCapacity : b.capacity };
  });
}

/** A backend's state as routing sees it now. */
export interface BackendCondition {
  /** Its health check fails, or its circuit is open after consecutive failures. */
  down: boolean;
  /** Its pool's live capacity. */
  capacity: number;
}

export type RouteDecision =
  | {
      kind: 'routed';
      backend: string;
      costFactor: number;
      /** Backends that can render the job and rank before this one, passed over because down or of capacity 0. */
      skipped: string[];
      /** The other backends that can render the job, in rank order: where this attempt may fail over to. */
      alternatives: string[];
    }
  | { kind: 'none'; reason: string };

/** The backends that can render the request, ranked: cheapest first (cost_factor), then in the configured order. */
export function rankBackends<B extends RoutableBackend>(backends: B[], request: RenderRequest): B[] {
  return backends
    .map((b, index) => ({ b, index }))
    .filter(({ b }) => cannotRender(b.renders, request) === null)
    .sort((x, y) => x.b.cost_factor - y.b.cost_factor || x.index - y.index)
    .map(({ b }) => b);
}

/**
 * Where an attempt goes: the first ranked backend (rankBackends) that is up and has a pool above zero, passing over
 * `avoid` (the backend the previous attempt left because it was down) unless it is the only one left. When every
 * backend that can render the job is down or paused, the first of them: the job waits in its queue for it to come back.
 * None: no backend can render the request.
 */
export function chooseBackend(backends: RoutableBackend[], conditions: ReadonlyMap<string, BackendCondition>, request: RenderRequest, avoid: string[] = []): RouteDecision {
  const ranked = rankBackends(backends, request);
  if (ranked.length === 0) {
    const reasons = backends.map((b) => `${b.name}: ${cannotRender(b.renders, request)}`);
    return { kind: 'none', reason: `no backend can render this request (${reasons.join('; ')})` };
  }
  const usable = (b: RoutableBackend) => {
    const c = conditions.get(b.name);
    return c === undefined || (!c.down && c.capacity > 0);
  };
  const chosen = ranked.find((b) => usable(b) && !avoid.includes(b.name)) ?? ranked.find(usable) ?? ranked[0];
  const at = ranked.indexOf(chosen);
  return {
    kind: 'routed',
    backend: chosen.name,
    costFactor: chosen.cost_factor,
    skipped: ranked.slice(0, at).map((b) => b.name),
    alternatives: ranked.filter((b) => b !== chosen).map((b) => b.name),
  };
}

/** A price scaled by a cost factor, rounded up (a factor of 1 leaves it as it is; float noise does not round up). */
export function scaledCredits(credits: number, costFactor: number): number {
  return Math.max(credits === 0 ? 0 : 1, Math.ceil(credits * costFactor - 1e-9));
}

/**
 * What a submit reserves: the price on the dearest backend that can render the request, so whichever backend runs it
 * the job is covered; it is charged by the one that ran it (scaledCredits with that backend's factor) and the rest is
 * released in the same settlement. With one backend of factor 1 (BACKENDS unset) it is the price.
 */
export function reservedCredits(credits: number, backends: RoutableBackend[], request: RenderRequest): number {
  const ranked = rankBackends(backends, request);
  const factors = (ranked.length > 0 ? ranked : backends).map((b) => b.cost_factor);
  return scaledCredits(credits, Math.max(...factors));
}
