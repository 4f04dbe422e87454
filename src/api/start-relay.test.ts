import type { GenerationInput } from '../domain/generation';
import { createLogger } from '../lib/logger';
import { createStartRelay } from './start-relay';

/** The relay's own logic against a fake Temporal that is down or up (the real one: test/temporal-down.test.ts). */
const unavailable = () => Object.assign(new Error('14 UNAVAILABLE: connection refused'), { code: 14, details: 'connection refused', metadata: {} });
const refused = () => Object.assign(new Error('5 NOT_FOUND: namespace not found'), { code: 5, details: 'namespace not found', metadata: {} });
const input = (jobId: string) => ({ jobId }) as GenerationInput;

function fakeTemporal() {
  const temporal = {
    up: false,
    attempts: 0,
    inFlight: 0,
    mostInFlightWhileDown: 0,
    started: new Map<string, number>(),
    refuse: new Set<string>(),
    async start({ jobId }: GenerationInput) {
      temporal.attempts++;
      temporal.inFlight++;
      if (!temporal.up) temporal.mostInFlightWhileDown = Math.max(temporal.mostInFlightWhileDown, temporal.inFlight);
      await new Promise((r) => setTimeout(r, 5));
      temporal.inFlight--;
      if (!temporal.up) throw unavailable();
      if (temporal.refuse.has(jobId)) throw refused();
      temporal.started.set(jobId, (temporal.started.get(jobId) ?? 0) + 1);
    },
  };
  return temporal;
}

const logger = createLogger('test', 'silent');

/** Polls until `probe` holds, or fails after `timeoutMs`. */
async function eventually(probe: () => Promise<true | undefined>, { what, timeoutMs = 10_000 }: { what: string; timeoutMs?: number }) {
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; await new Promise((r) => setTimeout(r, 20))) {
    if (await probe()) return;
  }
  throw new Error(`timed out waiting for ${what}`);
}

const relays: Array<ReturnType<typeof createStartRelay>> = [];
const relayOf = (deps: Parameters<typeof createStartRelay>[0]) => {
  const relay = createStartRelay(deps);
  relays.push(relay);
  return relay;
};

describe('the start relay', () => {
  afterEach(() => {
    for (const relay of relays.splice(0)) relay.close();
  });

  test('while Temporal is away one kept job probes it at a time; once it answers, each is started exactly once', async () => {
    const temporal = fakeTemporal();
    const relay = relayOf({ start: temporal.start, unstarted: async (ids) => new Set(ids), logger, maxJobs: 100 });
    const ids = Array.from({ length: 20 }, (_, i) => `gen_${i}`);
    relay.keep(input(ids[0]), { unreachable: true });
    for (const id of ids.slice(1)) relay.keep(input(id));
    relay.keep(input(ids[0])); // a replay of a kept submit
    expect(relay.temporalUnreachable).toBe(true);
    await eventually(async () => (temporal.attempts >= 3 ? true : undefined), { what: 'three probes' });
    expect(temporal.mostInFlightWhileDown).toBe(1);
    expect(relay.size).toBe(20);

    temporal.up = true;
    await eventually(async () => (relay.size === 0 ? true : undefined), { what: 'the relay to drain' });
    expect([...temporal.started.keys()].sort()).toEqual([...ids].sort());
    expect([...temporal.started.values()].every((n) => n === 1)).toBe(true);
    expect(relay.temporalUnreachable).toBe(false);
  });

  test('holds at most maxJobs (the reconciler starts the rest), and never grows while Temporal stays away', async () => {
    const temporal = fakeTemporal();
    const relay = relayOf({ start: temporal.start, unstarted: async (ids) => new Set(ids), logger, maxJobs: 2 });
    expect([relay.keep(input('a'), { unreachable: true }), relay.keep(input('b')), relay.keep(input('c'))]).toEqual([true, true, false]);
    await eventually(async () => (temporal.attempts >= 2 ? true : undefined), { what: 'two probes' });
    expect(relay.size).toBe(2);
    temporal.up = true;
    await eventually(async () => (relay.size === 0 ? true : undefined), { what: 'the relay to drain' });
    expect([...temporal.started.keys()].sort()).toEqual(['a', 'b']);
  });

  test('lets go, without a start, a job that started or ended meanwhile; a start Temporal refuses is left to the reconciler', async () => {
    const temporal = fakeTemporal();
    temporal.up = true;
    temporal.refuse.add('refused');
    const relay = relayOf({ start: temporal.start, unstarted: async (ids) => new Set(ids.filter((id) => id !== 'ended')), logger, maxJobs: 10 });
    for (const id of ['ended', 'refused', 'waiting']) relay.keep(input(id));
    await eventually(async () => (relay.size === 0 ? true : undefined), { what: 'the relay to drain' });
    expect(temporal.attempts).toBe(2);
    expect([...temporal.started.keys()]).toEqual(['waiting']);
  });
});
