import type { Headers } from '@temporalio/common';
import { TRACE_HEADER } from '@temporalio/interceptors-opentelemetry/lib/instrumentation';
import { OpenTelemetryInboundInterceptor, OpenTelemetryInternalsInterceptor, OpenTelemetryOutboundInterceptor } from '@temporalio/interceptors-opentelemetry/lib/workflow';
import type { WorkflowInterceptorsFactory } from '@temporalio/workflow';

/**
 * The workflow side of tracing (src/lib/tracing.ts), bundled with the workflows as an interceptor module: Temporal's
 * OpenTelemetry interceptors, for the runs a traced client started only. A run whose start carries no trace context
 * (tracing off, a schedule's run, every run recorded before tracing) makes no span and calls no sink, and its commands
 * are the ones it always had: the header is in the history, so a replay takes the same branch.
 */
export const interceptors: WorkflowInterceptorsFactory = () => {
  const traced = (headers: Headers) => TRACE_HEADER in headers;
  let inbound: OpenTelemetryInboundInterceptor | undefined;
  /** Set once the run's start is known traced: then its activities, signals and continuations carry the context on. */
  let outbound: OpenTelemetryOutboundInterceptor | undefined;
  return {
    inbound: [
      {
        execute(input, next) {
          if (!traced(input.headers)) return next(input);
          outbound = new OpenTelemetryOutboundInterceptor();
          return (inbound ??= new OpenTelemetryInboundInterceptor()).execute(input, next);
        },
        // A traced signal (a backend callback through a traced API) gets its span whatever the run's start carried.
        handleSignal(input, next) {
          if (!traced(input.headers)) return next(input);
          return (inbound ??= new OpenTelemetryInboundInterceptor()).handleSignal(input, next);
        },
      },
    ],
    outbound: [
      {
        scheduleActivity: (input, next) => (outbound ? outbound.scheduleActivity(input, next) : next(input)),
        scheduleLocalActivity: (input, next) => (outbound ? outbound.scheduleLocalActivity(input, next) : next(input)),
        startChildWorkflowExecution: (input, next) => (outbound ? outbound.startChildWorkflowExecution(input, next) : next(input)),
        continueAsNew: (input, next) => (outbound ? outbound.continueAsNew(input, next) : next(input)),
        signalWorkflow: (input, next) => (outbound ? outbound.signalWorkflow(input, next) : next(input)),
        getLogAttributes: (input, next) => (outbound ? outbound.getLogAttributes(input, next) : next(input)),
      },
    ],
    internals: [new OpenTelemetryInternalsInterceptor()],
  };
};
