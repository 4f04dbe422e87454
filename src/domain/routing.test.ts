import { backendPools, chooseBackend, rankBackends, reservedCredits, scaledCredits, type BackendCondition, type RoutableBackend } from './routing';

const request = { resolution: '720p', aspect_ratio: '16:9', duration_seconds: 5 };
const backend = (name: string, cost_factor = 1, renders: RoutableBackend['renders'] = { image_input: false, video_input: false }): RoutableBackend => ({ name, cost_factor, renders });
const up = (capacity = 4): BackendCondition => ({ down: false, capacity });

describe('routing across backends', () => {
  test('cheapest first, then the configured order; backends that cannot render the request are left out', () => {
    const backends = [backend('a', 1.5), backend('b', 1), backend('c', 1), backend('d', 0.5, { resolutions: ['480p'], image_input: false, video_input: false })];
    expect(rankBackends(backends, request).map((b) => b.name)).toEqual(['b', 'c', 'a']);
    expect(rankBackends(backends, { ...request, resolution: '480p' }).map((b) => b.name)).toEqual(['d', 'b', 'c', 'a']);
  });

  test('the first ranked backend that is up with a pool above zero; the others are its alternatives', () => {
    const backends = [backend('primary'), backend('secondary'), backend('third')];
    const all = new Map([['primary', up()], ['secondary', up()], ['third', up()]]);
    expect(chooseBackend(backends, all, request)).toEqual({ kind: 'routed', backend: 'primary', costFactor: 1, skipped: [], alternatives: ['secondary', 'third'] });
    const primaryDown = new Map(all).set('primary', { down: true, capacity: 4 });
    expect(chooseBackend(backends, primaryDown, request)).toMatchObject({ backend: 'secondary', skipped: ['primary'], alternatives: ['primary', 'third'] });
    const primaryPaused = new Map(all).set('primary', up(0));
    expect(chooseBackend(backends, primaryPaused, request)).toMatchObject({ backend: 'secondary', skipped: ['primary'] });
  });

  test('the backend an attempt left is avoided while another can take it, and used when it is the only one up', () => {
    const backends = [backend('primary'), backend('secondary')];
    const both = new Map([['primary', up()], ['secondary', up()]]);
    expect(chooseBackend(backends, both, request, ['primary'])).toMatchObject({ backend: 'secondary' });
    const secondaryDown = new Map(both).set('secondary', { down: true, capacity: 4 });
    expect(chooseBackend(backends, secondaryDown, request, ['primary'])).toMatchObject({ backend: 'primary' });
  });

  test('all down: the first ranked one (the job waits for it); none can render: no route, with the reasons', () => {
    const backends = [backend('primary', 1, { resolutions: ['720p'], image_input: false, video_input: false }), backend('secondary', 1, { resolutions: ['480p', '720p'], image_input: false, video_input: false })];
    const down = new Map([['primary', { down: true, capacity: 4 }], ['secondary', { down: true, capacity: 4 }]]);
    expect(chooseBackend(backends, down, request)).toMatchObject({ backend: 'primary', skipped: [] });
    expect(chooseBackend(backends, new Map(), { ...request, resolution: '480p' })).toMatchObject({ backend: 'secondary', alternatives: [] });
    const none = chooseBackend(backends, new Map(), { ...request, resolution: '1080p' });
    expect(none.kind).toBe('none');
    expect(none.kind === 'none' && none.reason).toMatch(/primary: resolution 1080p .*secondary: resolution 1080p/);
  });

  test('a reservation covers the dearest backend that can render the job; the charge is the one that ran it', () => {
    const backends = [backend('cheap', 1), backend('dear', 1.5), backend('only480', 3, { resolutions: ['480p'], image_input: false, video_input: false })];
    expect(reservedCredits(10, backends, request)).toBe(15);
    expect(reservedCredits(10, backends, { ...request, resolution: '480p' })).toBe(30);
    expect(reservedCredits(10, [backend('simulator')], request)).toBe(10);
    expect(scaledCredits(10, 1.2)).toBe(12);
    expect(scaledCredits(10, 1.25)).toBe(13);
    expect(scaledCredits(1, 0.1)).toBe(1);
  });

  test('one pool per backend; the first keeps the service queue and its starting capacity', () => {
    expect(backendPools([{ name: 'a', capacity: 8 }, { name: 'b', capacity: 2 }], 'gpu', 4)).toEqual([
      { backend: 'a', pool: 'gpu', taskQueue: 'gpu', initialCapacity: 4 },
      { backend: 'b', pool: 'gpu-b', taskQueue: 'gpu-b', initialCapacity: 2 },
    ]);
  });

  test('a job that starts from an image, or remixes a video, goes only to a backend that takes it', () => {
    const backends = [backend('text-only', 0.5), backend('images', 1, { image_input: true, video_input: false }), backend('both', 2, { image_input: true, video_input: true })];
    expect(rankBackends(backends, { ...request, image_input: true }).map((b) => b.name)).toEqual(['images', 'both']);
    expect(rankBackends(backends, { ...request, image_input: true, video_input: true }).map((b) => b.name)).toEqual(['both']);
    expect(rankBackends(backends, request).map((b) => b.name)).toEqual(['text-only', 'images', 'both']);
  });
});
