/**
 * OpenTelemetry spans of a request — `llm.request` → `llm.prefill` / `llm.decode` →
 * `llm.forward` per stage — and W3C trace context (`traceparent`) carried in RPC headers, so the
 * stage side's `rpc.server` and `llm.stage.step` spans join the head's trace on every agent.
 *
 * Spans are exported by Deno's built-in OpenTelemetry: run with `OTEL_DENO=true` and the
 * standard `OTEL_*` variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, …). Off by
 * default; when off every helper here calls straight through (no span objects, no headers).
 *
 * @module
 */
import {
  type Attributes,
  type Context,
  context,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import type { Interceptor } from "@connectrpc/connect";

/** Whether spans are recorded: Deno's OTel is on (`OTEL_DENO=true`). Read once at startup. */
export const tracingEnabled: boolean = (() => {
  try {
    return /^(1|true)$/i.test(Deno.env.get("OTEL_DENO") ?? "");
  } catch {
    return false; // no env permission: no tracing
  }
})();

const tracer = trace.getTracer("distributed-llm");
const common: Attributes = {};

/** Attributes put on every span of this process (the agent's node id). */
export function setTraceAttributes(attrs: Attributes): void {
  Object.assign(common, attrs);
}

function finish(span: Span, error?: unknown): void {
  if (error !== undefined) {
    span.recordException(error as Error);
    span.setStatus({ code: SpanStatusCode.ERROR, message: String((error as Error)?.message) });
  }
  span.end();
}

/**
 * Run `fn` inside a new active span (a child of the active one); ends it when `fn` settles.
 *
 * @example
 * ```ts
 * const token = await withSpan("llm.prefill", { "llm.tokens": 12 }, () => pass());
 * ```
 */
export function withSpan<T>(
  name: string,
  attributes: Attributes,
  fn: () => Promise<T>,
  kind: SpanKind = SpanKind.INTERNAL,
): Promise<T> {
  if (!tracingEnabled) return fn();
  return tracer.startActiveSpan(
    name,
    { kind, attributes: { ...common, ...attributes } },
    async (span) => {
      try {
        const out = await fn();
        finish(span);
        return out;
      } catch (e) {
        finish(span, e);
        throw e;
      }
    },
  );
}

/** A span started now and ended later; `run` makes it the parent of what `fn` starts. */
export interface OpenSpan {
  /** Run `fn` with this span active. */
  run<T>(fn: () => Promise<T>): Promise<T>;
  /** Add attributes. */
  set(attributes: Attributes): void;
  /** End the span (recording `error` when given); later calls do nothing. */
  end(error?: unknown): void;
}

const NOOP_SPAN: OpenSpan = { run: (fn) => fn(), set() {}, end() {} };

/** Start a span (child of the active one) to be ended explicitly, e.g. across a decode loop. */
export function openSpan(name: string, attributes: Attributes = {}): OpenSpan {
  if (!tracingEnabled) return NOOP_SPAN;
  const span = tracer.startSpan(name, { attributes: { ...common, ...attributes } });
  const ctx = trace.setSpan(context.active(), span);
  let ended = false;
  return {
    run: (fn) => context.with(ctx, fn),
    set: (a) => span.setAttributes(a),
    end(error) {
      if (ended) return;
      ended = true;
      finish(span, error);
    },
  };
}

/**
 * A span (child of the active one) from now until `promise` settles, e.g. a frame's time in a
 * stage's queue and pass; returns `promise` itself.
 */
export function spanUntil<T>(
  name: string,
  attributes: Attributes,
  promise: Promise<T>,
): Promise<T> {
  if (!tracingEnabled) return promise;
  const span = tracer.startSpan(name, { attributes: { ...common, ...attributes } });
  promise.then(() => finish(span), (e) => finish(span, e));
  return promise;
}

/** Client side: write the active trace context into the request headers (`traceparent`). */
export const traceClientInterceptor: Interceptor = (next) => (req) => {
  if (tracingEnabled) {
    propagation.inject(context.active(), req.header, {
      set: (h: Headers, k: string, v: string) => h.set(k, v),
    });
  }
  return next(req);
};

/**
 * Server side: continue the caller's trace from the request headers with an `rpc.server` span
 * that stays active while the handler runs — for streams, until the response stream ends.
 */
export const traceServerInterceptor: Interceptor = (next) => async (req) => {
  if (!tracingEnabled) return next(req);
  const parent = propagation.extract(ROOT_CONTEXT, req.header, {
    get: (h: Headers, k: string) => h.get(k) ?? undefined,
    keys: (h: Headers) => [...h.keys()],
  });
  const method = `${req.service.typeName}/${req.method.name}`;
  const span = tracer.startSpan(`rpc.server ${method}`, {
    kind: SpanKind.SERVER,
    attributes: { ...common, "rpc.system": "connect_rpc", "rpc.method": method },
  }, parent);
  const ctx = trace.setSpan(parent, span);
  let res;
  try {
    res = await context.with(ctx, () => next(req));
  } catch (e) {
    finish(span, e);
    throw e;
  }
  if (!res.stream) {
    finish(span);
    return res;
  }
  return { ...res, message: bindIterable(res.message, ctx, (e) => finish(span, e)) };
};

/** Pull `it` inside `ctx` (so a generator handler's body runs there); `onEnd` once at the end. */
function bindIterable<T>(
  it: AsyncIterable<T>,
  ctx: Context,
  onEnd: (error?: unknown) => void,
): AsyncIterable<T> {
  let ended = false;
  const end = (e?: unknown) => {
    if (!ended) {
      ended = true;
      onEnd(e);
    }
  };
  return {
    [Symbol.asyncIterator]() {
      const inner = it[Symbol.asyncIterator]();
      return {
        next: async () => {
          try {
            const r = await context.with(ctx, () => inner.next());
            if (r.done) end();
            return r;
          } catch (e) {
            end(e);
            throw e;
          }
        },
        return: async (v?: unknown) => {
          end();
          return await (inner.return?.(v) ?? { done: true as const, value: undefined });
        },
        throw: async (e?: unknown) => {
          end(e);
          if (inner.throw) return await inner.throw(e);
          throw e;
        },
      };
    },
  };
}

export { SpanKind };
