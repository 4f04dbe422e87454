/**
 * RateLimit-Policy and RateLimit header fields (draft-ietf-httpapi-ratelimit-headers): Structured Field lists with one
 * item per quota policy, e.g. `RateLimit-Policy: "burst";q=20;w=10, "daily";q=200;w=86400` and
 * `RateLimit: "burst";r=19;t=1, "daily";r=150;t=3600`.
 */
export interface QuotaPolicyState {
  /** The policy's name, shared by both fields. */
  policy: string;
  /** q: the quota. */
  quota: number;
  /** w: the window in seconds, when the quota is per window. */
  windowSeconds?: number;
  /** qu: the quota unit, when not "requests". */
  unit?: 'concurrent-requests';
  /** r: what is left. */
  remaining: number;
  /** t: seconds until the quota is whole again. */
  resetSeconds?: number;
}

export function rateLimitHeaders(states: QuotaPolicyState[]): Record<string, string> {
  if (states.length === 0) return {};
  const policy = states.map((s) => {
    let item = `"${s.policy}";q=${s.quota}`;
    if (s.windowSeconds !== undefined) item += `;w=${s.windowSeconds}`;
    if (s.unit) item += `;qu="${s.unit}"`;
    return item;
  });
  const current = states.map((s) => {
    let item = `"${s.policy}";r=${Math.max(0, Math.floor(s.remaining))}`;
    if (s.resetSeconds !== undefined) item += `;t=${Math.max(0, Math.ceil(s.resetSeconds))}`;
    return item;
  });
  return { 'RateLimit-Policy': policy.join(', '), RateLimit: current.join(', ') };
}

/** Seconds from `now` to the next midnight UTC, when daily quotas start again. */
export function secondsUntilUtcMidnight(now: Date = new Date()): number {
  const midnight = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
  return Math.max(1, Math.ceil((midnight - now.getTime()) / 1000));
}
