import type { Headers } from '@temporalio/common';
import type * as OtelWorkflow from '@temporalio/interceptors-opentelemetry/lib/workflow';
import type { WorkflowInterceptorsFactory } from '@temporalio/workflow';

/**
 * The workflow side of tracing (src/lib/tracing.ts), bundled with the workflows as an interceptor module: Temporal's
 * OpenTelemetry interceptors, for the runs a traced client started only. A run whose start carries no trace context
 * (tracing off, a schedule's run, every run recorded before tracing) makes no span and calls no sink, and its commands
 * are the ones it always had: the header is in the history, so a replay takes the same branch.
 */

/** The header Temporal's OpenTelemetry interceptors carry the context in (its TRACE_HEADER; a unit test holds them equal). */
export const TRACE_HEADER = '_tracer-data';

/**
 * Temporal's OpenTelemetry workflow interceptors, loaded at the first traced start or signal of a run. The sandbox
 * evaluates a bundle's modules again for every run, and these bring the OpenTelemetry SDK: evaluated at each run, they
 * were a fifth of the workflow thread's CPU while the generation worker took a backlog of untraced jobs to the GPU queue.
 */
function otel(): typeof OtelWorkflow {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- evaluated on first use only (see above); webpack bundles it all the same
  return require('@temporalio/interceptors-opentelemetry/lib/workflow') as typeof OtelWorkflow;
}

/**
 * A GPU activity that may end without a report (GpuAttemptInput.quietOnHeardSuccess): its run ends on the callback's
 * word and leaves it. Temporal's interceptor ends an activity's start span when the activity settles, which such a one
 * may never do in the run: its span would stay open and never be exported, and the activity's own span, on the
 * dispatcher, would lose its parent. Its start span covers the scheduling instead.
 */
function mayEndUnreported(input: { args: unknown[] }): boolean {
  const first = input.args[0] as { quietOnHeardSuccess?: unknown } | undefined;
  return first?.quietOnHeardSuccess === true;
}

export const interceptors: WorkflowInterceptorsFactory = () => {
  const traced = (headers: Headers) => TRACE_HEADER in headers;
  let inbound: OtelWorkflow.OpenTelemetryInboundInterceptor | undefined;
  /** Set once the run's start is known traced: then its activities, signals and continuations carry the context on. */
  let outbound: OtelWorkflow.OpenTelemetryOutboundInterceptor | undefined;
  /** Set once the interceptors are loaded: on disposal it lets go of the run's context manager. */
  let internals: OtelWorkflow.OpenTelemetryInternalsInterceptor | undefined;
  const traceInbound = () => {
    const module = otel();
    internals ??= new module.OpenTelemetryInternalsInterceptor();
    return (inbound ??= new module.OpenTelemetryInboundInterceptor());
  };
  return {
    inbound: [
      {
        execute(input, next) {
          if (!traced(input.headers)) return next(input);
          const traceRun = traceInbound();
          outbound = new (otel().OpenTelemetryOutboundInterceptor)();
          return traceRun.execute(input, next);
        },
        // A traced signal (a backend callback through a traced API) gets its span whatever the run's start carried.
        handleSignal(input, next) {
          if (!traced(input.headers)) return next(input);
          return traceInbound().handleSignal(input, next);
        },
      },
    ],
    outbound: [
      {
        scheduleActivity: (input, next) => {
          if (!outbound) return next(input);
          if (!mayEndUnreported(input)) return outbound.scheduleActivity(input, next);
          let running: Promise<unknown> | undefined;
          const scheduled = outbound.scheduleActivity(input, (withContext) => {
            running = next(withContext);
            return Promise.resolve(undefined);
          });
          return scheduled.then(() => running!);
        },
        scheduleLocalActivity: (input, next) => (outbound ? outbound.scheduleLocalActivity(input, next) : next(input)),
        startChildWorkflowExecution: (input, next) => (outbound ? outbound.startChildWorkflowExecution(input, next) : next(input)),
        continueAsNew: (input, next) => (outbound ? outbound.continueAsNew(input, next) : next(input)),
        signalWorkflow: (input, next) => (outbound ? outbound.signalWorkflow(input, next) : next(input)),
        getLogAttributes: (input, next) => (outbound ? outbound.getLogAttributes(input, next) : next(input)),
      },
    ],
    internals: [
      {
        dispose: (input, next) => (internals ? internals.dispose(input, next) : next(input)),
      },
    ],
  };
};
