import { startApi } from '../src/api/main';
import { loadConfig } from '../src/config';
import { createLogger } from '../src/lib/logger';
import { apiClient, startStack, testEnv, type Stack } from './harness';
import { startImageServer, TEN_MB, type ImageServer } from './image-server';

/**
 * Inputs beyond the text, against the real service: an `input_reference` image checked before admission (the SSRF guard,
 * its type and size, served by a local HTTP server), a `remix_of` of the user's own succeeded job, both kept on the job,
 * both handed to the backend (the simulator echoes them in its job), and refusals that name what was wrong.
 */
describe('inputs beyond text: input_reference and remix_of', () => {
  let stack: Stack;
  let images: ImageServer;

  beforeAll(async () => {
    images = await startImageServer();
    stack = await startStack();
  });
  afterAll(async () => {
    await stack?.close();
    await images?.close();
  });

  type Api = ReturnType<typeof apiClient>;
  const newUser = async () => {
    const { userId, apiKey } = await stack.createUser('pro');
    return { userId, apiKey, api: apiClient(stack.apiUrl, apiKey) };
  };
  const small = (prompt: string, extra: Record<string, unknown> = {}) => ({ prompt, duration_seconds: 1, resolution: '480p', ...extra });
  /** The simulator's own view of the backend job a generation ran as. */
  const simulatorJob = async (backendJobId: string): Promise<{ inputs?: unknown }> => (await fetch(`${stack.simulator.url}/v1/jobs/${backendJobId}`)).json() as Promise<{ inputs?: unknown }>;
  const jobCount = async (userId: string) => (await stack.database.sql`select count(*)::int as n from generations where user_id = ${userId}`)[0].n as number;
  const succeededJob = async (api: Api, prompt: string) => {
    const submitted = await api.submit(small(prompt));
    expect(submitted.status).toBe(202);
    const done = await api.waitForTerminal(submitted.body.id);
    expect(done.status).toBe('succeeded');
    return done;
  };

  test('an image/png reference is checked by a HEAD, kept on the job, and reaches the simulator, which echoes it', async () => {
    const { api } = await newUser();
    const image = `${images.url}/cat.png`;
    const before = images.requests.length;
    const submitted = await api.submit(small('a cat that starts to dance', { input_reference: image }));
    expect(submitted.status).toBe(202);
    expect(submitted.body).toMatchObject({ status: 'queued', input_reference: image, remix_of: null });
    expect(images.requests.slice(before)).toEqual([{ method: 'HEAD', path: '/cat.png', range: undefined }]);

    const done = await api.waitForTerminal(submitted.body.id);
    expect(done).toMatchObject({ status: 'succeeded', input_reference: image, remix_of: null });
    expect((await simulatorJob(done.backend_job_id)).inputs).toEqual({ input_reference: image, remix_of: null });
    // A text-only job is as it was: nothing extra at the backend.
    const plain = await succeededJob(api, 'text only');
    expect(plain).toMatchObject({ input_reference: null, remix_of: null });
    expect((await simulatorJob(plain.backend_job_id)).inputs).toBeUndefined();
  });

  test('a refused image is a 400 saying which — not an image, too large (said or read), unreachable, a refused address — and admits nothing', async () => {
    const { userId, api } = await newUser();
    const cases: Array<[string, string, string]> = [
      [`${images.url}/page.html`, 'not_an_image', 'input_reference: its content type is text/html, not image/*'],
      [`${images.url}/huge.png`, 'too_large', `input_reference: it is ${TEN_MB + 1024} bytes; at most ${TEN_MB} bytes are accepted`],
      // No length given: the check reads the body and stops past 10 MB.
      [`${images.url}/chunked.png`, 'too_large', `input_reference: it is over ${TEN_MB} bytes; at most ${TEN_MB} bytes are accepted`],
      [`${images.url}/missing.png`, 'unreachable', 'input_reference: answered 404'],
      ['http://169.254.169.254/latest/meta-data/iam', 'refused_address', 'input_reference: 169.254.169.254 is not a public address'],
      ['http://10.0.0.7/cat.png', 'refused_address', 'input_reference: 10.0.0.7 is not a public address'],
      [`${images.url}/redirect-to-private`, 'refused_address', 'input_reference: 10.0.0.1 is not a public address'],
    ];
    for (const [url, reason, message] of cases) {
      const refused = await api.submit(small('from a bad image', { input_reference: url }), `bad-${reason}-${url.length}`);
      expect({ url, status: refused.status, body: refused.body }).toEqual({ url, status: 400, body: { error: { code: 'invalid_input_reference', message, details: { reason } } } });
    }
    // The schema refuses what is not an http(s) URL before anything is fetched.
    const notHttp = await api.submit(small('from a file', { input_reference: 'file:///etc/passwd' }));
    expect(notHttp.status).toBe(400);
    expect(notHttp.body.error).toMatchObject({ code: 'invalid_request', message: 'input_reference: must be an http or https URL' });
    expect(await jobCount(userId)).toBe(0);
    // An estimate checks it as a submit would.
    const estimate = await api.call('POST', '/v1/generations/estimate', small('from a page', { input_reference: `${images.url}/page.html` }));
    expect(estimate.status).toBe(400);
    expect(estimate.body.error.details).toEqual({ reason: 'not_an_image' });
  });

  test('a server that refuses HEAD is asked for the first byte with a ranged GET', async () => {
    const { api } = await newUser();
    const before = images.requests.length;
    const submitted = await api.submit(small('from a GET-only server', { input_reference: `${images.url}/no-head.png` }));
    expect(submitted.status).toBe(202);
    expect(images.requests.slice(before).map((r) => `${r.method} ${r.range ?? ''}`.trim())).toEqual(['HEAD', 'GET bytes=0-0']);
  });

  test('without the development allowance (WEBHOOK_ALLOWED_HOSTS), a loopback image is a refused address', async () => {
    const { apiKey } = await newUser();
    const strict = await startApi({
      config: loadConfig({ ...stack.env, PORT: '0', WEBHOOK_ALLOWED_HOSTS: '' }),
      databaseUrl: testEnv().databaseUrl,
      logger: createLogger('strict-api', 'warn'),
      adminApiKey: stack.adminApiKey,
    });
    try {
      const before = images.requests.length;
      const refused = await apiClient(strict.url, apiKey).submit(small('from my own machine', { input_reference: `${images.url}/cat.png` }));
      expect(refused.status).toBe(400);
      expect(refused.body.error).toEqual({ code: 'invalid_input_reference', message: 'input_reference: 127.0.0.1 is not a public address', details: { reason: 'refused_address' } });
      expect(images.requests.length).toBe(before);
    } finally {
      await strict.close({ graceMs: 0 });
    }
  });

  test('a remix of my succeeded job starts from its video: the simulator shows the remixed job and its video', async () => {
    const { api } = await newUser();
    const source = await succeededJob(api, 'a lighthouse at dusk');
    const submitted = await api.submit(small('the same lighthouse, in a storm', { remix_of: source.id }));
    expect(submitted.status).toBe(202);
    expect(submitted.body).toMatchObject({ remix_of: source.id, input_reference: null });
    const done = await api.waitForTerminal(submitted.body.id);
    expect(done).toMatchObject({ status: 'succeeded', remix_of: source.id });
    expect((await simulatorJob(done.backend_job_id)).inputs).toEqual({ input_reference: null, remix_of: { job_id: source.id, video_url: source.video_url } });

    // Both at once: a remix that also starts from an image.
    const image = `${images.url}/photo.jpg`;
    const both = await api.submit(small('the lighthouse from a photo', { remix_of: source.id, input_reference: image }));
    expect(both.status).toBe(202);
    const bothDone = await api.waitForTerminal(both.body.id);
    expect((await simulatorJob(bothDone.backend_job_id)).inputs).toEqual({ input_reference: image, remix_of: { job_id: source.id, video_url: source.video_url } });
  });

  test("a remix of another user's job answers as one of a job that does not exist; of a failed job, 409", async () => {
    const owner = await newUser();
    const { userId, api } = await newUser();
    const theirs = await succeededJob(owner.api, 'not yours to remix');
    const missing = 'gen_00000000000000000000000000000000';
    const refusedTheirs = await api.submit(small('borrowing', { remix_of: theirs.id }));
    const refusedMissing = await api.submit(small('borrowing', { remix_of: missing }));
    expect(refusedTheirs.status).toBe(404);
    expect(refusedMissing.status).toBe(404);
    expect(refusedTheirs.body).toEqual({ error: { code: 'remix_source_not_found', message: `remix_of: no generation ${theirs.id} of yours` } });
    // The same answer but for the id it names: nothing tells the other user's job exists.
    expect(JSON.stringify(refusedMissing.body).replace(missing, 'ID')).toBe(JSON.stringify(refusedTheirs.body).replace(theirs.id, 'ID'));

    const failed = await api.submit(small('a forbidden scene [fail:permanent]'));
    expect((await api.waitForTerminal(failed.body.id)).status).toBe('failed');
    const refusedFailed = await api.submit(small('remixing a failure', { remix_of: failed.body.id }));
    expect(refusedFailed.status).toBe(409);
    expect(refusedFailed.body).toEqual({
      error: { code: 'remix_source_not_succeeded', message: `remix_of: generation ${failed.body.id} is failed; only a succeeded generation can be remixed`, details: { status: 'failed' } },
    });
    // Only the failed job was admitted.
    expect(await jobCount(userId)).toBe(1);
  });

  test("the Idempotency-Key's request hash covers both fields, and a replay is not checked again", async () => {
    const { api } = await newUser();
    const source = await succeededJob(api, 'a source for the key test');
    const body = small('keyed', { input_reference: `${images.url}/cat.png`, remix_of: source.id });
    const first = await api.submit(body, 'inputs-key-1');
    expect(first.status).toBe(202);
    const before = images.requests.length;
    const replay = await api.submit(body, 'inputs-key-1');
    expect(replay.status).toBe(202);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(replay.body.id).toBe(first.body.id);
    expect(images.requests.length).toBe(before);
    for (const changed of [{ ...body, input_reference: `${images.url}/photo.jpg` }, small('keyed', { input_reference: `${images.url}/cat.png` }), small('keyed', { remix_of: source.id })]) {
      const reused = await api.submit(changed, 'inputs-key-1');
      expect({ changed, status: reused.status, code: reused.body.error?.code }).toEqual({ changed, status: 422, code: 'idempotency_key_reused' });
    }
  });

  test('a rerun repeats both inputs; a batch checks each distinct image once, not again on replay, and a refused one names its item', async () => {
    const { api } = await newUser();
    const source = await succeededJob(api, 'a source for the rerun');
    const submitted = await api.submit(small('rerun me', { input_reference: `${images.url}/cat.png`, remix_of: source.id }));
    const rerun = await api.call('POST', `/v1/generations/${submitted.body.id}/retry`);
    expect(rerun.status).toBe(202);
    expect(rerun.body).toMatchObject({ retry_of: submitted.body.id, input_reference: `${images.url}/cat.png`, remix_of: source.id });

    // Each distinct image once; the replay of a keyed batch is not checked again.
    const items = [small('one', { input_reference: `${images.url}/cat.png` }), small('two', { input_reference: `${images.url}/cat.png`, remix_of: source.id })];
    let before = images.requests.length;
    const admitted = await api.call('POST', '/v1/batches', { items }, { 'idempotency-key': 'inputs-batch-1' });
    expect(admitted.status).toBe(202);
    expect(images.requests.length - before).toBe(1);
    before = images.requests.length;
    const replayed = await api.call('POST', '/v1/batches', { items }, { 'idempotency-key': 'inputs-batch-1' });
    expect(replayed.status).toBe(202);
    expect(replayed.headers.get('idempotent-replayed')).toBe('true');
    expect(images.requests.length).toBe(before);
    const listed = await api.list(`?batch_id=${admitted.body.id}`);
    expect(listed.body.data.map((g: { input_reference: string; remix_of: string | null }) => [g.input_reference, g.remix_of]).sort()).toEqual(
      [[`${images.url}/cat.png`, null], [`${images.url}/cat.png`, source.id]].sort(),
    );

    const batch = await api.call('POST', '/v1/batches', { items: [small('fine', { input_reference: `${images.url}/cat.png` }), small('not fine', { input_reference: `${images.url}/page.html` })] });
    expect(batch.status).toBe(400);
    expect(batch.body.error).toEqual({
      code: 'invalid_batch_item',
      message: 'items[1].input_reference: its content type is text/html, not image/*',
      details: { index: 1, reason: 'not_an_image', code: 'invalid_input_reference' },
    });
  });
});
