/**
 * Observability of an agent: the Prometheus registry and its metric names, the `/metrics` +
 * `/health` listener, and OpenTelemetry spans with W3C trace context across RPC.
 *
 * @example
 * ```ts
 * import { AgentMetrics, startMetricsServer } from "./mod.ts";
 * const metrics = new AgentMetrics(source);
 * const server = await startMetricsServer({
 *   port: 9090,
 *   metrics: async () => ({ text: await metrics.text(), contentType: metrics.contentType }),
 *   readiness: () => ({ serving: true }),
 * });
 * ```
 *
 * @module
 */
export { AgentMetrics, MEMBER_STATES, METRIC_NAMES, type MetricsSource } from "./metrics.ts";
export {
  DEFAULT_METRICS_PORT,
  type MetricsServer,
  type MetricsServerOptions,
  startMetricsServer,
} from "./server.ts";
export {
  type OpenSpan,
  openSpan,
  setTraceAttributes,
  SpanKind,
  spanUntil,
  traceClientInterceptor,
  traceServerInterceptor,
  tracingEnabled,
  withSpan,
} from "./tracing.ts";
