import { TRACE_HEADER as OTEL_TRACE_HEADER } from '@temporalio/interceptors-opentelemetry/lib/instrumentation';
import { TRACE_HEADER } from './tracing';

describe('the workflow side of tracing', () => {
  test("tells a traced run by the header Temporal's OpenTelemetry interceptors write", () => {
    expect(TRACE_HEADER).toBe(OTEL_TRACE_HEADER);
  });
});
