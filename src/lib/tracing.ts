import { context, isSpanContextValid, propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import type { Resource } from '@opentelemetry/resources';
import type { SpanExporter, SpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import type { Client, ClientInterceptors } from '@temporalio/client';
import type { Headers } from '@temporalio/common';
import type * as temporalTracing from '@temporalio/interceptors-opentelemetry';
import type * as instrumentation from '@temporalio/interceptors-opentelemetry/lib/instrumentation';
import type { OpenTelemetryWorkflowExporter } from '@temporalio/interceptors-opentelemetry/lib/workflow/definitions';
import type { ActivityInterceptorsFactory, InjectedSinks } from '@temporalio/worker';
import type { RequestHandler } from 'express';

/**
 * OpenTelemetry for one process: a job's trace runs from its API request through the workflow start, the workflow and
 * every activity (Temporal's interceptors), the backend's HTTP calls (undici's request, through its diagnostics
 * channel), the backend's callback and its signal, to the notification. Off unless an OTLP endpoint is configured (the standard
 * OTEL_* settings, src/config.ts): then nothing here is installed, and every hook below returns at its first check.
 */

interface Tracing {
  provider: NodeTracerProvider;
  processor: SpanProcessor;
  resource: Resource;
  stopInstrumentations: () => void;
  interceptors: typeof temporalTracing;
  /** Reads the trace context Temporal's interceptors put in a header. */
  extractContextFromHeaders: typeof instrumentation.extractContextFromHeaders;
}

let active: Tracing | undefined;

export interface TracingSettings {
  /** The OTLP/HTTP traces URL (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces); unset: off. */
  tracesUrl?: string;
  /** The resource's service.name unless OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES) names another. */
  serviceName: string;
}

/**
 * Installs tracing for the process, once: the global tracer provider, context manager (AsyncLocalStorage) and W3C
 * propagator, and the undici instrumentation (the backends' HTTP). `exporter` replaces OTLP (tests keep spans in
 * memory) and exports each span as it ends. Resolves to whether tracing is on. The SDK is loaded only then: it would add
 * most of a second to every process's start.
 */
export async function startTracing({ tracesUrl, serviceName }: TracingSettings, exporter?: SpanExporter): Promise<boolean> {
  if (active) return true;
  if (!exporter && !tracesUrl) return false;
  const [{ BatchSpanProcessor, SimpleSpanProcessor }, { NodeTracerProvider }, { OTLPTraceExporter }, resources, { registerInstrumentations }, { UndiciInstrumentation }, interceptors] =
    await Promise.all([
      import('@opentelemetry/sdk-trace-base'),
      import('@opentelemetry/sdk-trace-node'),
      import('@opentelemetry/exporter-trace-otlp-http'),
      import('@opentelemetry/resources'),
      import('@opentelemetry/instrumentation'),
      import('@opentelemetry/instrumentation-undici'),
      import('@temporalio/interceptors-opentelemetry'),
    ]);
  const { extractContextFromHeaders } = await import('@temporalio/interceptors-opentelemetry/lib/instrumentation.js');
  if (active) return true;
  // The exporter reads the rest of its settings (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION...) itself.
  const processor = exporter ? new SimpleSpanProcessor(exporter) : new BatchSpanProcessor(new OTLPTraceExporter({ url: tracesUrl }));
  const resource = new resources.Resource({ 'service.name': serviceName }).merge(resources.detectResourcesSync({ detectors: [resources.envDetectorSync] }));
  const provider = new NodeTracerProvider({ resource, spanProcessors: [processor] });
  provider.register();
  // Only calls made within a trace (an activity's, a request's): a metrics scrape or a capacity poll makes no trace.
  const stopInstrumentations = registerInstrumentations({ tracerProvider: provider, instrumentations: [new UndiciInstrumentation({ requireParentforSpans: true })] });
  active = { provider, processor, resource, stopInstrumentations, interceptors, extractContextFromHeaders };
  return true;
}

/** Exports what is left and uninstalls tracing (a test's process goes on after its stack). */
export async function stopTracing(): Promise<void> {
  const tracing = active;
  if (!tracing) return;
  active = undefined;
  tracing.stopInstrumentations();
  await tracing.provider.shutdown();
  trace.disable();
  context.disable();
  propagation.disable();
}

export function tracingOn(): boolean {
  return active !== undefined;
}

/** The trace id of the span the caller runs in (a log line's, an activity's), if tracing is on and there is one. */
export function activeTraceId(): string | undefined {
  if (!active) return undefined;
  const spanContext = trace.getSpanContext(context.active());
  return spanContext && isSpanContextValid(spanContext) ? spanContext.traceId : undefined;
}

/** The Temporal client's interceptors: each start, signal and query carries the caller's trace to the workflow. */
export function temporalClientInterceptors(): ClientInterceptors | undefined {
  return active ? { workflow: [new active.interceptors.OpenTelemetryWorkflowClientInterceptor()] } : undefined;
}

/**
 * What a worker needs: an activity span per activity (local ones too), child of the workflow's span that scheduled it,
 * and the sink through which the workflow sandbox hands its spans out. The sink is there even with tracing off: a
 * workflow started by a traced client makes spans in the sandbox (src/workflows/tracing.ts), and an unregistered sink
 * would be logged as an error at each of them.
 */
export function workerTracing(): { activity: ActivityInterceptorsFactory[]; sinks: InjectedSinks<{ exporter: OpenTelemetryWorkflowExporter }> } {
  if (!active) return { activity: [], sinks: { exporter: { export: { fn: () => undefined } } } };
  const { OpenTelemetryActivityInboundInterceptor, OpenTelemetryActivityOutboundInterceptor, makeWorkflowExporter } = active.interceptors;
  return {
    activity: [(ctx) => ({ inbound: new OpenTelemetryActivityInboundInterceptor(ctx), outbound: new OpenTelemetryActivityOutboundInterceptor(ctx) })],
    sinks: { exporter: makeWorkflowExporter(active.processor, active.resource) },
  };
}

/**
 * `url` with the caller's trace context as a `traceparent` query parameter: the backend calls back the URL it was given,
 * so its callback (and the signal it becomes) joins the job's trace without the backend knowing of tracing.
 */
export function urlWithTraceContext(url: string): string {
  if (!active) return url;
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  if (!carrier.traceparent) return url;
  const withContext = new URL(url);
  withContext.searchParams.set('traceparent', carrier.traceparent);
  return withContext.toString();
}

/**
 * A server span per API request, child of the caller's trace context: a `traceparent` query parameter (a callback URL
 * handed out by urlWithTraceContext) or else the W3C headers. The request's events and everything it calls run in the
 * span's context, so its log lines carry the trace id (src/lib/logger.ts). Mount it before the request log.
 */
export function requestTracing(): RequestHandler {
  const tracer = trace.getTracer('videogen-api');
  return (req, res, next) => {
    const fromQuery = typeof req.query.traceparent === 'string' ? { traceparent: req.query.traceparent } : undefined;
    const parent = propagation.extract(ROOT_CONTEXT, fromQuery ?? req.headers);
    const span = tracer.startSpan(req.method, { kind: SpanKind.SERVER, attributes: { 'http.request.method': req.method, 'url.path': req.path } }, parent);
    const spanContext = trace.setSpan(parent, span);
    // Body parsers call on from stream events and the request log from `finish`: bound, they run in the span's context.
    context.bind(spanContext, req);
    context.bind(spanContext, res);
    res.once('close', () => {
      const route = req.route ? `${req.baseUrl}${String(req.route.path)}` : undefined;
      if (route) span.updateName(`${req.method} ${route}`).setAttribute('http.route', route);
      span.setAttribute('http.response.status_code', res.statusCode);
      if (res.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
    });
    context.with(spanContext, next);
  };
}

/**
 * The trace a job's workflow was started in (its start event's header), for operators: the admin view of stuck jobs.
 * Undefined when tracing is off here or the start carried none.
 */
export async function workflowTraceId(client: Client, workflowId: string): Promise<string | undefined> {
  const tracing = active;
  if (!tracing) return undefined;
  const { history } = await client.workflowService.getWorkflowExecutionHistory({
    namespace: client.options.namespace,
    execution: { workflowId },
    maximumPageSize: 1,
  });
  const fields = history?.events?.[0]?.workflowExecutionStartedEventAttributes?.header?.fields;
  const started = fields ? tracing.extractContextFromHeaders(fields as Headers) : undefined;
  const spanContext = started ? trace.getSpanContext(started) : undefined;
  return spanContext && isSpanContextValid(spanContext) ? spanContext.traceId : undefined;
}
