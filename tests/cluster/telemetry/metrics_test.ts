/**
 * cluster/telemetry: the registry exports every promised name with bounded labels and real
 * values from its source; the /metrics + /health listener; tracing helpers when tracing is off.
 */
import { createClient, createRouterTransport } from "@connectrpc/connect";
import {
  AgentMetrics,
  MEMBER_STATES,
  METRIC_NAMES,
  type MetricsSource,
  openSpan,
  spanUntil,
  startMetricsServer,
  traceClientInterceptor,
  traceServerInterceptor,
  tracingEnabled,
  withSpan,
} from "../../../cluster/telemetry/mod.ts";
import { NodeService } from "../../../proto/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";

function fakeSource(over: Partial<MetricsSource> = {}): MetricsSource {
  return {
    layersHosted: () => 3,
    requestsActive: () => 2,
    queueDepth: () => 5,
    kvCacheSlots: () => ({ used: 1, free: 7 }),
    gossipMembers: () => ({ alive: 3, suspect: 1 }),
    gossipProbeRttMs: () => 2.5,
    gossipDropped: () => ({ decrypt: 4, malformed: 0 }),
    modelMemory: () => ({ weights: 142_543_872, kvCache: 18_874_368 }),
    ...over,
  };
}

/** Value of one series in exposition text, e.g. `name{label="x"}`. */
function value(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  assert(line, `no series ${series}`);
  return Number(line.split(" ")[1]);
}

Deno.test("every promised metric is exported, state read from the source on scrape", async () => {
  const m = new AgentMetrics(fakeSource());
  const text = await m.text();
  for (const name of Object.values(METRIC_NAMES)) {
    assert(text.includes(`# TYPE ${name} `), `missing ${name}`);
  }
  assert(text.includes("process_resident_memory_bytes"), "process defaults");
  assertEquals(value(text, "distributed_llm_layers_hosted"), 3);
  assertEquals(value(text, "distributed_llm_requests_active"), 2);
  assertEquals(value(text, "distributed_llm_queue_depth"), 5);
  assertEquals(value(text, 'distributed_llm_kv_cache_slots{state="free"}'), 7);
  assertEquals(value(text, 'distributed_llm_model_memory_bytes{kind="weights"}'), 142_543_872);
  assertEquals(value(text, 'distributed_llm_model_memory_bytes{kind="kv_cache"}'), 18_874_368);
  assertEquals(value(text, 'distributed_llm_gossip_members{state="suspect"}'), 1);
  assertEquals(value(text, 'distributed_llm_gossip_members{state="dead"}'), 0);
  assertEquals(value(text, "distributed_llm_gossip_probe_rtt_seconds"), 0.0025);
  const cpu = value(text, "distributed_llm_node_cpu_percent");
  assert(cpu >= 0 && cpu <= 100, `cpu ${cpu}`);
  const mem = value(text, "distributed_llm_node_memory_percent");
  assert(mem > 0 && mem < 100, `memory ${mem}`);
});

Deno.test("event hooks: tokens, request and step histograms, activation bytes, load time", async () => {
  const m = new AgentMetrics(fakeSource());
  m.onToken();
  m.onToken();
  m.onRequest(0.3);
  m.onStageStep({ computeMs: 12, rows: 7, sequences: 3 });
  m.onStageStep({ computeMs: 0.4, rows: 1, sequences: 1 });
  m.onFrame({ bytesIn: 1024, bytesOut: 256 });
  m.onModelLoad(1.5);
  m.onResumed({ waitMs: 9100, replayMs: 2390 });
  const text = await m.text();
  assertEquals(value(text, 'distributed_llm_recovery_duration_seconds_sum{part="wait"}'), 9.1);
  assertEquals(value(text, 'distributed_llm_recovery_duration_seconds_sum{part="replay"}'), 2.39);
  assertEquals(
    value(text, 'distributed_llm_recovery_duration_seconds_bucket{le="5",part="replay"}'),
    1,
  );
  assertEquals(
    value(text, 'distributed_llm_recovery_duration_seconds_bucket{le="5",part="wait"}'),
    0,
  );
  assertEquals(value(text, "distributed_llm_tokens_generated_total"), 2);
  assertEquals(value(text, "distributed_llm_inference_duration_seconds_count"), 1);
  assertEquals(value(text, 'distributed_llm_inference_duration_seconds_bucket{le="0.5"}'), 1);
  assertEquals(value(text, 'distributed_llm_inference_duration_seconds_bucket{le="0.25"}'), 0);
  assertEquals(
    value(text, 'distributed_llm_stage_forward_duration_seconds_sum{phase="prefill"}'),
    0.012,
  );
  assertEquals(
    value(text, 'distributed_llm_stage_forward_duration_seconds_count{phase="decode"}'),
    1,
  );
  // Batching: rows and sequences per pass.
  assertEquals(value(text, "distributed_llm_stage_pass_rows_count"), 2);
  assertEquals(value(text, "distributed_llm_stage_pass_rows_sum"), 8);
  assertEquals(value(text, 'distributed_llm_stage_pass_rows_bucket{le="4"}'), 1);
  assertEquals(value(text, 'distributed_llm_stage_pass_rows_bucket{le="8"}'), 2);
  assertEquals(value(text, "distributed_llm_stage_pass_sequences_sum"), 4);
  assertEquals(value(text, 'distributed_llm_stage_pass_sequences_bucket{le="2"}'), 1);
  assertEquals(value(text, 'distributed_llm_activation_bytes_total{direction="in"}'), 1024);
  assertEquals(value(text, 'distributed_llm_activation_bytes_total{direction="out"}'), 256);
  assertEquals(value(text, "distributed_llm_model_load_seconds"), 1.5);
});

Deno.test("gossip drops: cumulative counters become a Prometheus counter that only grows", async () => {
  let decrypt = 4;
  const m = new AgentMetrics(fakeSource({ gossipDropped: () => ({ decrypt, stream: 1 }) }));
  const reason = 'distributed_llm_gossip_packets_dropped_total{reason="decrypt"}';
  assertEquals(value(await m.text(), reason), 4);
  decrypt = 10;
  assertEquals(value(await m.text(), reason), 10);
  assertEquals(value(await m.text(), reason), 10, "a scrape without new drops adds nothing");
});

Deno.test("labels are bounded: only fixed label values appear", async () => {
  const m = new AgentMetrics(fakeSource());
  for (let i = 0; i < 50; i++) m.onStageStep({ computeMs: i, rows: 1 + (i % 3), sequences: 1 });
  m.onForwarded("http");
  const text = await m.text();
  const values = new Map<string, Set<string>>();
  for (const line of text.split("\n")) {
    if (!line.startsWith("distributed_llm_")) continue;
    for (const [, k, v] of line.matchAll(/(\w+)="([^"]*)"/g)) {
      if (k === "le") continue;
      if (!values.has(k)) values.set(k, new Set());
      values.get(k)!.add(v);
    }
  }
  assertEquals([...values.get("phase")!].sort(), ["decode", "prefill"]);
  assertEquals([...values.get("direction")!].sort(), ["in", "out"]);
  assertEquals([...values.get("state")!].sort(), [...MEMBER_STATES, "free", "used"].sort());
  assertEquals([...values.get("kind")!].sort(), ["kv_cache", "looked_up", "restored", "weights"]);
  assertEquals([...values.get("part")!].sort(), ["replay", "wait"]);
  // Requests a --no-model agent forwarded, by the API they came in on.
  assertEquals([...values.get("api")!].sort(), ["grpc", "http"]);
  assertEquals([...values.keys()].sort(), [
    "api",
    "direction",
    "kind",
    "part",
    "phase",
    "reason",
    "state",
  ]);
});

Deno.test("metrics server: /metrics, /health, readiness 503, 404, port 0", async () => {
  let serving = false;
  const m = new AgentMetrics(fakeSource());
  const server = await startMetricsServer({
    port: 0,
    metrics: async () => ({ text: await m.text(), contentType: m.contentType }),
    readiness: () => ({ serving, detail: serving ? undefined : "no placement yet" }),
  });
  try {
    assert(server.port > 0);
    const base = `http://127.0.0.1:${server.port}`;
    const res = await fetch(`${base}/metrics`);
    assertEquals(res.status, 200);
    assert(res.headers.get("content-type")!.startsWith("text/plain"));
    assert((await res.text()).includes("distributed_llm_queue_depth 5"));
    const live = await fetch(`${base}/health`);
    assertEquals(live.status, 200, "liveness does not depend on placement");
    assertEquals((await live.json()).status, "not_serving");
    const notReady = await fetch(`${base}/health?ready=1`);
    assertEquals(notReady.status, 503);
    assertEquals((await notReady.json()).detail, "no placement yet");
    serving = true;
    const ready = await fetch(`${base}/health?ready=1`);
    assertEquals(ready.status, 200);
    await ready.body?.cancel();
    const missing = await fetch(`${base}/nope`);
    assertEquals(missing.status, 404);
    await missing.body?.cancel();
  } finally {
    await server.close();
  }
});

Deno.test("metrics server: a taken port is a clear error", async () => {
  const first = await startMetricsServer({
    port: 0,
    metrics: () => Promise.resolve({ text: "", contentType: "text/plain" }),
    readiness: () => ({ serving: true }),
  });
  try {
    let message = "";
    try {
      await startMetricsServer({
        port: first.port,
        metrics: () => Promise.resolve({ text: "", contentType: "text/plain" }),
        readiness: () => ({ serving: true }),
      });
    } catch (e) {
      message = (e as Error).message;
    }
    assert(message.includes("already in use") && message.includes("--metrics-port"), message);
  } finally {
    await first.close();
  }
});

Deno.test({
  name: "tracing off (the default): helpers call straight through, no trace headers",
  ignore: tracingEnabled, // the suite was started with OTEL_DENO=true
}, async () => {
  assertEquals(await withSpan("x", {}, () => Promise.resolve(42)), 42);
  const p = Promise.resolve("same");
  assert(spanUntil("x", {}, p) === p, "the promise itself, nothing wrapped");
  const span = openSpan("x");
  assertEquals(await span.run(() => Promise.resolve(1)), 1);
  span.end();
  // A client call through both interceptors carries no traceparent.
  let seen: string | null = "unset";
  const transport = createRouterTransport(
    (r) =>
      r.service(NodeService, {
        healthCheck: (_req, ctx) => {
          seen = ctx.requestHeader.get("traceparent");
          return {};
        },
      }),
    {
      transport: { interceptors: [traceClientInterceptor] },
      router: { interceptors: [traceServerInterceptor] },
    },
  );
  await createClient(NodeService, transport).healthCheck({});
  assertEquals(seen, null);
});

Deno.test("prefix cache: bytes held, tokens looked up and restored, evictions; a new stage counts on", async () => {
  let stats = { bytes: 4096, lookupTokens: 100, hitTokens: 64, evictions: 1 };
  const m = new AgentMetrics(fakeSource({ prefixCache: () => stats }));
  let text = await m.text();
  assertEquals(value(text, "distributed_llm_prefix_cache_bytes"), 4096);
  assertEquals(value(text, 'distributed_llm_prefix_cache_tokens_total{kind="looked_up"}'), 100);
  assertEquals(value(text, 'distributed_llm_prefix_cache_tokens_total{kind="restored"}'), 64);
  assertEquals(value(text, "distributed_llm_prefix_cache_evictions_total"), 1);
  // The stage was replaced: its cache's counters start again, the exported ones keep growing.
  stats = { bytes: 0, lookupTokens: 30, hitTokens: 0, evictions: 0 };
  text = await m.text();
  assertEquals(value(text, "distributed_llm_prefix_cache_bytes"), 0);
  assertEquals(value(text, 'distributed_llm_prefix_cache_tokens_total{kind="looked_up"}'), 130);
  assertEquals(value(text, 'distributed_llm_prefix_cache_tokens_total{kind="restored"}'), 64);
});

Deno.test("stage refusals: sessions refused as busy by reason; a new stage counts on", async () => {
  let refusals: Record<string, number> | undefined = { sessions: 2, kv_bytes: 5, memory: 0 };
  const m = new AgentMetrics(fakeSource({ sessionRefusals: () => refusals }));
  let text = await m.text();
  const refused = (reason: string) =>
    value(text, `distributed_llm_stage_sessions_refused_total{reason="${reason}"}`);
  assertEquals([refused("sessions"), refused("kv_bytes"), refused("memory")], [2, 5, 0]);
  // No stage for a while, then a new one whose counts start again.
  refusals = undefined;
  text = await m.text();
  assertEquals(refused("kv_bytes"), 5);
  refusals = { sessions: 0, kv_bytes: 1, memory: 0 };
  text = await m.text();
  assertEquals(refused("kv_bytes"), 6);
});
