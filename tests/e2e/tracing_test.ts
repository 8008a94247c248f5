/**
 * Traces across agents: 2 agents run with Deno's built-in OpenTelemetry pointed at a tiny
 * OTLP/HTTP (JSON) receiver in this test; one generation yields one trace whose spans come from
 * both agents, every parent link resolving inside the trace: request → prefill/decode →
 * per-hop forward on the head, and the stage's rpc.server → llm.stage.step on the other agent.
 */
import { assert, assertEquals } from "../support/assert.ts";
import { generate, startAgent, stopAll, waitForPlacement } from "../support/agents.ts";
import { REPO } from "../support/paths.ts";

interface SpanRecord {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
}

// deno-lint-ignore no-explicit-any
function spansOf(body: any): SpanRecord[] {
  const out: SpanRecord[] = [];
  for (const rs of body.resourceSpans ?? []) {
    const service = rs.resource?.attributes?.find((a: { key: string }) =>
      a.key === "service.name"
    )?.value?.stringValue ?? "";
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        out.push({
          service,
          traceId: s.traceId,
          spanId: s.spanId,
          parentSpanId: s.parentSpanId ?? "",
          name: s.name,
        });
      }
    }
  }
  return out;
}

Deno.test({
  name: "one generation is one trace with spans from both agents and correct parent links",
  fn: async () => {
    const spans: SpanRecord[] = [];
    const receiver = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
      const body = await req.text();
      if (new URL(req.url).pathname === "/v1/traces") spans.push(...spansOf(JSON.parse(body)));
      return Response.json({});
    });
    const otel = (id: string) => ({
      OTEL_DENO: "true",
      OTEL_DENO_CONSOLE: "ignore",
      OTEL_SERVICE_NAME: `agent-${id}`,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${receiver.addr.port}`,
    });
    const opts = { model: `${REPO}/models/stories260K.gguf`, memoryBudget: "1.6MB" };
    const a = await startAgent({ ...opts, id: "ta", env: otel("ta") });
    const agents = [a];
    try {
      agents.push(await startAgent({ ...opts, id: "tb", seeds: [a.gossipAddr], env: otel("tb") }));
      const info = await waitForPlacement(a, 2);
      assertEquals(info.placement!.stages.length, 2, "the model is split over both agents");
      const out = await generate(a, "Once upon a time", 6);
      assertEquals(out.tokens.length, 6);
    } finally {
      // Agents flush their spans when they exit.
      await stopAll(agents);
    }
    await receiver.shutdown();

    const requests = spans.filter((s) => s.name === "llm.request");
    assertEquals(requests.length, 1, JSON.stringify(spans.map((s) => s.name)));
    const root = requests[0];
    assertEquals(root.service, "agent-ta", "agent ta is the head");
    const trace = spans.filter((s) => s.traceId === root.traceId);
    const byId = new Map(trace.map((s) => [s.spanId, s]));
    const services = new Set(trace.map((s) => s.service));
    assertEquals([...services].sort(), ["agent-ta", "agent-tb"], "spans from both agents");
    const parent = (s: SpanRecord) => byId.get(s.parentSpanId);
    // Every parent link resolves inside the trace, except the trace's one root.
    const roots = trace.filter((s) => !parent(s));
    assertEquals(roots.length, 1, JSON.stringify(roots));
    assertEquals(roots[0].name, "rpc.server distributed_llm.v1.InferenceService/Generate");
    assertEquals(parent(root)?.name, roots[0].name, "the request runs inside the Generate RPC");
    const named = (n: string) => trace.filter((s) => s.name === n);
    assertEquals(named("llm.prefill").length, 1);
    assertEquals(named("llm.decode").length, 1);
    for (const s of [...named("llm.prefill"), ...named("llm.decode")]) {
      assertEquals(parent(s)?.name, "llm.request");
    }
    // One llm.forward per hop per token: the head's own stage hands each frame to the next
    // stage (a chain), inside the step of prefill or decode.
    const forwards = named("llm.forward");
    assertEquals(forwards.length, 6, "1 hop × 6 tokens");
    for (const f of forwards) assert(["llm.prefill", "llm.decode"].includes(parent(f)!.name));
    // Stage side on the other agent: its Forward stream continues the head's trace (traceparent
    // header), and each step of the stage hangs below it.
    const stream = named("rpc.server distributed_llm.v1.InferenceService/Forward");
    assertEquals(stream.length, 1);
    assertEquals(stream[0].service, "agent-tb");
    assertEquals(
      parent(stream[0])?.service,
      "agent-ta",
      "the remote stage's parent is on the head",
    );
    const steps = named("llm.stage.step").filter((s) => s.service === "agent-tb");
    assertEquals(steps.length, 6, "the remote stage ran 6 steps");
    for (const s of steps) assertEquals(parent(s)?.spanId, stream[0].spanId);
  },
});
