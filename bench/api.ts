/**
 * `deno task bench api` — the OpenAI-compatible HTTP API under load: one agent serving
 * stories260K, N concurrent clients (default 1, 16, 128) each issuing 8-token greedy completions
 * back to back for a fixed time. Prints one JSON object per N (requests/s, p50/p99 latency,
 * tokens/s) and a summary with the batching gain (tokens/s at N=16 over N=1, same run).
 *
 * Flags: --backend <auto|wasm|webgpu|reference> (passed to the agent), --seconds <s> per N,
 * --clients <list>, --max-tokens <n>, --model <path>.
 */
import { startLocalAgent, stopLocalAgents } from "../cli/local_cluster.ts";

const args: Record<string, string> = {
  backend: "auto",
  seconds: "5",
  warmup: "1",
  clients: "1,16,128",
  "max-tokens": "8",
  model: new URL("../models/stories260K.gguf", import.meta.url).pathname,
};
for (let i = 0; i < Deno.args.length; i++) {
  const key = Deno.args[i].replace(/^--/, "");
  if (key === "help" || !(key in args) || Deno.args[i + 1] === undefined) {
    console.error(
      "usage: deno task bench api [--backend auto|wasm|webgpu|reference] [--seconds 5] " +
        "[--warmup 1] [--clients 1,16,128] [--max-tokens 8] [--model path.gguf]",
    );
    Deno.exit(key === "help" ? 0 : 2);
  }
  args[key] = Deno.args[++i];
}
const clients = args.clients.split(",").map(Number);
const maxClients = Math.max(...clients);
const seconds = Number(args.seconds);
const warmup = Number(args.warmup);
const maxTokens = Number(args["max-tokens"]);

const agent = await startLocalAgent({
  id: "bench-api",
  args: [
    "--model",
    args.model,
    "--backend",
    args.backend,
    "--gossip-preset",
    "local",
    "--context-size",
    "256",
    "--max-sessions",
    String(maxClients),
    "--max-requests",
    String(maxClients),
    "--queue-size",
    String(maxClients * 4),
    "--log-level",
    "info",
  ],
});
const backend = String(agent.logs.find((l) => l.msg === "backend selected")?.backend ?? "?");
const base = `http://127.0.0.1:${agent.httpPort}`;

/** Wait until the agent has placed the model on itself. */
async function ready(): Promise<string> {
  for (let i = 0; i < 300; i++) {
    try {
      const h = await (await fetch(`${base}/health`)).json();
      if (h.status === "ok") return h.model;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("the agent did not place the model within 30 s");
}

const prompts = ["Once upon a time", "The little dog", "One day, a girl", "Tom and his mom"];

/** One client: completions back to back until `until`; latencies of those started after `from`. */
async function client(
  model: string,
  k: number,
  from: number,
  until: number,
  out: { lat: number[]; tokens: number },
) {
  let i = k;
  while (performance.now() < until) {
    const t0 = performance.now();
    const res = await fetch(`${base}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model,
        prompt: prompts[i++ % prompts.length],
        max_tokens: maxTokens,
        temperature: 0,
      }),
    });
    const body = await res.json();
    if (!res.ok) throw new Error(`HTTP ${res.status}: ${JSON.stringify(body)}`);
    const t1 = performance.now();
    if (t0 >= from && t1 <= until) {
      out.lat.push(t1 - t0);
      out.tokens += body.usage.completion_tokens;
    }
  }
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
const results: Record<number, { tokensPerSecond: number; requestsPerSecond: number }> = {};
try {
  const model = await ready();
  for (const n of clients) {
    const out = { lat: [] as number[], tokens: 0 };
    const start = performance.now();
    const from = start + warmup * 1000;
    const until = from + seconds * 1000;
    await Promise.all(Array.from({ length: n }, (_, k) => client(model, k, from, until, out)));
    const lat = out.lat.sort((a, b) => a - b);
    const rps = lat.length / seconds;
    const tps = out.tokens / seconds;
    results[n] = { tokensPerSecond: tps, requestsPerSecond: rps };
    console.log(JSON.stringify({
      bench: "api",
      model,
      backend,
      clients: n,
      max_tokens: maxTokens,
      seconds,
      requests: lat.length,
      requests_per_second: round(rps),
      latency_ms: { p50: round(pct(lat, 50)), p99: round(pct(lat, 99)) },
      tokens_per_second: round(tps),
    }));
  }
  const gain = results[16] && results[1]
    ? round(results[16].tokensPerSecond / results[1].tokensPerSecond, 2)
    : null;
  const at128 = results[128]?.requestsPerSecond ?? null;
  console.log(JSON.stringify({
    bench: "api",
    summary: true,
    backend,
    batching_gain_tokens_per_second_16_vs_1: gain,
    goal_batching_gain_3x: gain === null ? null : gain >= 3,
    requests_per_second_at_128: at128 === null ? null : round(at128),
    goal_1000_requests_per_second_at_128: at128 === null ? null : at128 >= 1000,
  }));
} finally {
  await stopLocalAgents([agent]);
}
