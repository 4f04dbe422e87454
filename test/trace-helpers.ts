import type { Attributes, SpanKind } from '@opentelemetry/api';

/** A finished span as the tracing tests read it, from the in-memory exporter or from OTLP/JSON. */
export interface TraceSpan {
  name: string;
  kind: SpanKind;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  startMs: number;
  endMs: number;
  attributes: Attributes;
  /** The process that exported it, when spans of several are merged. */
  service?: string;
}

/** The spans of the trace a job's workflow was started in (its start span names the workflow, whose id is the job's). */
export function traceOfJob(spans: TraceSpan[], jobId: string): TraceSpan[] {
  const start = spans.find((s) => s.name === 'StartWorkflow:generationWorkflow' && s.attributes.temporalWorkflowId === jobId);
  return start ? spans.filter((s) => s.traceId === start.traceId) : [];
}

/** The trace as an indented tree, children in start order: name, duration, and when it began after the root. */
export function traceTree(spans: TraceSpan[]): string {
  const ids = new Set(spans.map((s) => s.spanId));
  const children = new Map<string | undefined, TraceSpan[]>();
  for (const span of [...spans].sort((a, b) => a.startMs - b.startMs)) {
    const parent = span.parentSpanId && ids.has(span.parentSpanId) ? span.parentSpanId : undefined;
    children.set(parent, [...(children.get(parent) ?? []), span]);
  }
  const origin = Math.min(...spans.map((s) => s.startMs));
  const lines: string[] = [];
  const walk = (span: TraceSpan, depth: number) => {
    const url = span.attributes['url.full'] ? ` ${new URL(String(span.attributes['url.full'])).pathname}` : '';
    const where = span.service ? `  [${span.service}]` : '';
    lines.push(`${'  '.repeat(depth)}${span.name}${url}  ${(span.endMs - span.startMs).toFixed(1)} ms  (+${(span.startMs - origin).toFixed(1)} ms)${where}`);
    for (const child of children.get(span.spanId) ?? []) walk(child, depth + 1);
  };
  for (const root of children.get(undefined) ?? []) walk(root, 0);
  return lines.join('\n');
}
