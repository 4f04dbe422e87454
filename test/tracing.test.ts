import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { SpanKind } from '@opentelemetry/api';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import { bundleWorkflowCode, Worker } from '@temporalio/worker';
import { startTracing, stopTracing, workerTracing } from '../src/lib/tracing';
import { freePort } from '../scripts/lib/ports';
import { testDataConverter } from './payload-keys';
import { spawnTsProcess, spawnWorker, type SpawnedProcess } from './processes';
import { apiClient, eventually, startStack, testEnv, type Stack } from './harness';
import { traceOfJob, traceTree, type TraceSpan } from './trace-helpers';

const ARTIFACTS = path.resolve(__dirname, 'artifacts');
const quiet = { trace() {}, debug() {}, info() {}, warn() {}, error() {}, log() {} } as never;

/**
 * One job's OpenTelemetry trace through the real stack (API, Temporal, workers, the simulator over HTTP), its spans kept
 * in memory: from the API request to the notification, one tree.
 */
describe('tracing', () => {
  const exporter = new InMemorySpanExporter();
  let stack: Stack;
  let receiver: http.Server;
  let receiverUrl: string;
  let delivered = 0;

  beforeAll(async () => {
    await startTracing({ serviceName: 'videogen-test' }, exporter);
    // A job past 1.5 s of running is stuck (the admin view); a hung one ends at 20 s.
    stack = await startStack({ env: { EXPECTED_RUN_MS: '1500', MAX_RUN_MS: '20000' } });
    receiver = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        delivered += 1;
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;
  });
  afterAll(async () => {
    await stack?.close();
    await new Promise((resolve) => receiver?.close(resolve));
    await stopTracing();
  });

  /** Every span exported so far, in the shape the assertions read. */
  const exported = (): TraceSpan[] =>
    exporter.getFinishedSpans().map((span) => ({
      name: span.name,
      kind: span.kind,
      traceId: span.spanContext().traceId,
      spanId: span.spanContext().spanId,
      parentSpanId: span.parentSpanId,
      startMs: span.startTime[0] * 1000 + span.startTime[1] / 1e6,
      endMs: span.endTime[0] * 1000 + span.endTime[1] / 1e6,
      attributes: span.attributes,
    }));

  test('one trace links the API request, the workflow start, every activity, the backend call, the callback signal and the notification', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const submitted = await api.submit({ prompt: 'a traced comet over the sea', webhook_url: receiverUrl });
    expect(submitted.status).toBe(202);
    const jobId: string = submitted.body.id;
    expect((await api.waitForTerminal(jobId)).status).toBe('succeeded');

    // The run's own span is exported when the run completes; the delivery's when its attempt has answered.
    const spans = await eventually(
      async () => {
        const trace = traceOfJob(exported(), jobId);
        const complete = ['RunWorkflow:generationWorkflow', 'RunWorkflow:webhookDeliveryWorkflow', 'RunActivity:attemptWebhookDelivery'].every((name) => trace.some((s) => s.name === name));
        return complete && delivered > 0 ? trace : undefined;
      },
      { what: "the job's trace to be exported whole" },
    );

    // One tree: a root, the API request, and every other span a child of a span of the same trace.
    const ids = new Set(spans.map((s) => s.spanId));
    const roots = spans.filter((s) => !s.parentSpanId || !ids.has(s.parentSpanId));
    expect(roots.map((s) => s.name)).toEqual(['POST /v1/generations/']);
    expect(roots[0].kind).toBe(SpanKind.SERVER);

    /** A span named `name`, under `parent` (the first of that name when given several: another may be the one). */
    const one = (name: string, parent?: TraceSpan | TraceSpan[]): TraceSpan => {
      const parents = parent === undefined ? undefined : [parent].flat();
      const found = spans.find((s) => s.name === name && (!parents || parents.some((p) => s.parentSpanId === p.spanId)));
      if (!found) throw new Error(`no span ${name}${parents ? ` under ${parents[0].name}` : ''} in the trace:\n${traceTree(spans)}`);
      return found;
    };
    const start = one('StartWorkflow:generationWorkflow', roots[0]);
    const run = one('RunWorkflow:generationWorkflow', start);
    // A first run opens at its GPU slot (GenerationSettings.opensAtSlot): the GPU activity and the ending are its activities.
    for (const activity of ['runGeneration', 'endGeneration']) one(`RunActivity:${activity}`, one(`StartActivity:${activity}`, run));
    expect(spans.filter((s) => s.name.endsWith(':openFundedRun'))).toEqual([]);
    const gpu = one('RunActivity:runGeneration');
    // The backend's HTTP calls, made within the GPU activity: the submit at least.
    const backendCalls = spans.filter((s) => s.kind === SpanKind.CLIENT && s.parentSpanId === gpu.spanId && String(s.attributes['url.full']).startsWith(stack.simulator.url));
    expect(backendCalls.map((s) => `${s.name} ${new URL(String(s.attributes['url.full'])).pathname}`)).toContain('POST /v1/jobs');
    // The backend's callback came back on the URL the activity gave it: its request, its signal, the workflow's handling.
    // (job.started is acknowledged without a signal; the job's ending is signalled.)
    const callbacks = spans.filter((s) => s.name === 'POST /internal/backend/callbacks/' && s.parentSpanId === gpu.spanId);
    expect(callbacks.length).toBeGreaterThan(0);
    one('HandleSignal:backendEvent', one('SignalWorkflow:backendEvent', callbacks));
    // The notification: the ending started the webhook delivery, whose attempt reached the receiver.
    const delivery = one('StartWorkflow:webhookDeliveryWorkflow', one('RunActivity:endGeneration'));
    one('RunActivity:attemptWebhookDelivery', one('StartActivity:attemptWebhookDelivery', one('RunWorkflow:webhookDeliveryWorkflow', delivery)));

    // The traced run replays against the same code, with the tracing module and without (a bundle built before it):
    // its spans and headers change none of its commands.
    const history = await stack.client.workflow.getHandle(jobId).fetchHistory();
    const dataConverter = testDataConverter();
    await Worker.runReplayHistory({ workflowBundle: { codePath: testEnv().workflowBundle }, dataConverter, sinks: workerTracing().sinks, replayName: 'traced' }, history, jobId);
    const untracedBundle = await bundleWorkflowCode({ workflowsPath: require.resolve('../src/workflows'), logger: quiet });
    await Worker.runReplayHistory({ workflowBundle: untracedBundle, dataConverter, replayName: 'traced-on-untraced' }, history, jobId);

    const tree = traceTree(spans);
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    fs.writeFileSync(path.join(ARTIFACTS, 'trace-of-one-job.txt'), `${tree}\n`);
    console.log(`trace ${spans[0].traceId} of job ${jobId} (${spans.length} spans):\n${tree}`);
  });

  test("the admin view of a stuck job names the job's trace", async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const job = (await api.submit({ prompt: 'a render that hangs [hang]' })).body;
    const stuck = await eventually(
      async () => {
        const res = await fetch(`${stack.adminUrl}/admin/generations/stuck`, { headers: { authorization: `Bearer ${stack.adminApiKey}` } });
        const body = (await res.json()) as { data: Array<Record<string, unknown>> };
        return body.data.find((s) => s.id === job.id);
      },
      { what: 'the job to be listed as stuck' },
    );
    const traceId = traceOfJob(exported(), job.id)[0]?.traceId;
    expect(traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(stuck.trace_id).toBe(traceId);
    expect((await api.call('POST', `/v1/generations/${job.id}/cancel`)).status).toBe(202);
  });

  describe('an API and a GPU dispatcher in processes of their own, exporting over OTLP/HTTP', () => {
    let split: Stack;
    let dispatcher: SpawnedProcess;
    let apiProcess: SpawnedProcess;
    let apiUrl: string;
    let collector: http.Server;
    let metricsPort: number;
    /** Spans the processes exported (OTLP/JSON, as their exporter sends them). */
    const received: TraceSpan[] = [];

    beforeAll(async () => {
      collector = http.createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (chunk: Buffer) => chunks.push(chunk));
        req.on('end', () => {
          if (req.url === '/v1/traces') received.push(...otlpSpans(JSON.parse(Buffer.concat(chunks).toString('utf8'))));
          res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        });
      });
      await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve));
      split = await startStack({ env: { WORKER_ROLE: 'generation' } });
      metricsPort = await freePort();
      const otel = { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(collector.address() as AddressInfo).port}`, OTEL_BSP_SCHEDULE_DELAY: '100', LOG_LEVEL: 'info' };
      dispatcher = spawnWorker({ ...split.env, ...otel, WORKER_ROLE: 'gpu', METRICS_PORT: String(metricsPort), OTEL_SERVICE_NAME: 'dispatcher-under-test' }, 'traced-dispatcher');
      const port = await freePort();
      apiUrl = `http://127.0.0.1:${port}`;
      // Callbacks still reach the stack's own API (PUBLIC_URL): the job's trace crosses three processes and back.
      apiProcess = spawnTsProcess({ name: 'traced-api', script: 'src/api/main.ts', env: { ...split.env, ...otel, PORT: String(port), ADMIN_API_KEY: split.adminApiKey, OTEL_SERVICE_NAME: 'api-under-test' } });
      await Promise.all([dispatcher.waitForOutput(/worker started/, 60_000), apiProcess.waitForOutput(/api listening/, 60_000)]);
    });
    afterAll(async () => {
      await apiProcess?.stop();
      await dispatcher?.stop();
      await split?.close();
      await new Promise((resolve) => collector?.close(resolve));
    });

    test("the job's trace crosses processes; their log lines of the job carry its trace id; the dispatcher's /metrics carries the SDK's", async () => {
      const { apiKey } = await split.createUser('pro');
      const api = apiClient(apiUrl, apiKey);
      const submitted = await api.submit({ prompt: 'a traced lighthouse at dusk' });
      expect(submitted.status).toBe(202);
      const done = await api.waitForTerminal(submitted.body.id);
      expect(done.status).toBe('succeeded');

      // The API process began the trace: its request span and the workflow start came to the collector.
      const traceId = await eventually(async () => traceOfJob(received, done.id)[0]?.traceId, { what: "the API's spans of the job at the collector" });
      const request = received.find((s) => s.traceId === traceId && s.name === 'POST /v1/generations/');
      expect(request).toMatchObject({ service: 'api-under-test', parentSpanId: undefined });
      // The run, on this process's generation worker, is in the same trace.
      await eventually(async () => exported().find((s) => s.traceId === traceId && s.name === 'RunWorkflow:generationWorkflow'), { what: 'the run in the trace' });
      const remote = await eventually(
        async () => {
          const mine = received.filter((s) => s.traceId === traceId);
          return mine.some((s) => s.name === 'RunActivity:runGeneration') ? mine : undefined;
        },
        { what: "the dispatcher's spans of the job at the collector" },
      );
      const gpu = remote.find((s) => s.name === 'RunActivity:runGeneration')!;
      expect(gpu.service).toBe('dispatcher-under-test');
      // Its parent is the workflow's StartActivity span, exported by this process's generation worker.
      const parent = await eventually(async () => exported().find((s) => s.traceId === traceId && s.spanId === gpu.parentSpanId), { what: "the GPU activity's parent span" });
      expect(parent.name).toBe('StartActivity:runGeneration');
      expect(remote.filter((s) => s.parentSpanId === gpu.spanId && s.name === 'POST').length).toBeGreaterThan(0);

      // Every line the dispatcher wrote about the job, found by its text, names the job's trace; so does the API's
      // line of the submit.
      const lines = dispatcher
        .output()
        .trim()
        .split('\n')
        .filter((line) => line.includes(done.id) || line.includes(done.backend_job_id))
        .map((line) => JSON.parse(line) as Record<string, unknown>);
      expect(lines.map((l) => l.msg)).toEqual(expect.arrayContaining(['backend job accepted', 'backend job ended']));
      for (const line of lines) expect(line).toMatchObject({ jobId: done.id, traceId });
      const apiLines = apiProcess
        .output()
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as Record<string, unknown>);
      expect(apiLines).toContainEqual(expect.objectContaining({ msg: 'request', method: 'POST', route: '/v1/generations/', status: 202, traceId }));

      const merged = [...received.filter((s) => s.traceId === traceId), ...exported().filter((s) => s.traceId === traceId).map((s) => ({ ...s, service: 'test process: generation worker, callback API' }))];
      fs.writeFileSync(path.join(ARTIFACTS, 'trace-across-processes.txt'), `${traceTree(merged)}\n`);
      console.log(`trace ${traceId} of job ${done.id} across processes (${merged.length} spans):\n${traceTree(merged)}`);

      const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      expect(metrics).toMatch(/^vg_time_in_queue_seconds_count\{tier="pro"\} [1-9]/m);
      expect(metrics).toMatch(/^temporal_activity_execution_latency_count\{.*activity_type="runGeneration".*\} [1-9]/m);
      expect(metrics).toMatch(/^temporal_worker_task_slots_used\{.*worker_type="ActivityWorker"/m);
    });
  });
});

/** The spans of an OTLP/JSON export request (ids in hex, times in nanoseconds as strings). */
function otlpSpans(body: any): TraceSpan[] {
  return (body.resourceSpans ?? []).flatMap((resource: any) => {
    const service = resource.resource?.attributes?.find((a: any) => a.key === 'service.name')?.value?.stringValue;
    return (resource.scopeSpans ?? []).flatMap((scope: any) =>
      (scope.spans ?? []).map(
        (span: any): TraceSpan => ({
          name: span.name,
          // OTLP counts kinds from 1 (internal); the API from 0.
          kind: span.kind - 1,
          traceId: span.traceId,
          spanId: span.spanId,
          parentSpanId: span.parentSpanId || undefined,
          startMs: Number(BigInt(span.startTimeUnixNano) / 1000n) / 1000,
          endMs: Number(BigInt(span.endTimeUnixNano) / 1000n) / 1000,
          attributes: Object.fromEntries((span.attributes ?? []).map((a: any) => [a.key, a.value?.stringValue ?? a.value?.intValue])),
          service,
        }),
      ),
    );
  });
}
