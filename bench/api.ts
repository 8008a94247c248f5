/**
 * `deno task bench api` — the OpenAI-compatible HTTP API under load: N concurrent clients
 * (default 1, 16, 128) each issuing 8-token greedy completions back to back for a fixed time.
 * Prints one JSON object per N (requests/s, p50/p99 latency, tokens/s, and the rows and sequences
 * per pass the agent's stage ran meanwhile, read from its /metrics) and a summary with the
 * batching gain (tokens/s at N=16 over N=1, same run).
 *
 * By default it starts one agent serving stories260K; `--endpoint <url>` load-tests a running
 * cluster instead (any agent's HTTP API, e.g. http://10.0.0.1:8080, with `--api-key`).
 */
import { startLocalAgent, stopLocalAgents } from "../cli/local_cluster.ts";
import { Flags, runBench, UsageError } from "./lib/cli.ts";
import { interference, pct } from "./lib/stream_gaps.ts";
import { passStats, scrapePasses } from "./lib/pass_stats.ts";
import { ensureBatchedRef, refBatchedDecode } from "./lib/batched_ref.ts";

const USAGE = `usage: deno task bench api [flags]

  --endpoint <url>        load-test a running agent's HTTP API (e.g. http://10.0.0.1:8080)
                          instead of starting one; its cluster serves whatever model it serves
  --api-key <key>         bearer key for --endpoint (the agent's --api-key)
  --metrics <url>         the endpoint agent's /metrics (e.g. http://10.0.0.1:9090/metrics):
                          rows and sequences per pass are read there (default: the agent
                          this bench starts; with --endpoint and no --metrics, not printed)
  --backend <name>        auto|wasm|webgpu|reference for the agent it starts (default auto)
  --model <path.gguf>     model for the agent it starts (default models/stories260K.gguf)
  --seconds <s>           measured seconds per client count (default 5)
  --warmup <s>            unmeasured seconds first (default 1)
  --clients <list>        concurrent clients, comma-separated (default 1,16,128)
  --max-tokens <n>        tokens per completion (default 8)
  --no-ref                skip the reference: llama.cpp's C API decoding as many sequences
                          in one process (no HTTP), timed after the load (default: run it
                          when this bench starts the agent; built once, see bench batch)
  --prompt-load <n>       also stream 64 tokens alone and while another client sends
                          n-token prompts back to back: time between tokens, on the agent
                          it starts and on one started with --prefill-chunk 0 (default 0: no)

Prints one JSON object per client count and a summary.`;

interface Options {
  endpoint?: string;
  apiKey?: string;
  metrics?: string;
  backend: string;
  model: string;
  seconds: number;
  warmup: number;
  clients: number[];
  maxTokens: number;
  promptLoad: number;
  ref: boolean;
}

function parse(args: string[]): Options {
  const o: Options = {
    backend: "auto",
    model: new URL("../models/stories260K.gguf", import.meta.url).pathname,
    seconds: 5,
    warmup: 1,
    clients: [1, 16, 128],
    maxTokens: 8,
    promptLoad: 0,
    ref: true,
  };
  const f = new Flags(args);
  const seconds = (v: string, flag: string) => {
    const n = Number(v);
    if (!(n >= 0 && Number.isFinite(n))) throw new UsageError(`${flag} needs a number of seconds`);
    return n;
  };
  for (let flag = f.next(); flag !== undefined; flag = f.next()) {
    switch (flag) {
      case "--endpoint": {
        const v = f.value().replace(/\/+$/, "");
        const url = /^https?:\/\//.test(v) ? v : `http://${v}`;
        try {
          new URL(url);
        } catch {
          throw new UsageError(`--endpoint ${v} is not a URL (e.g. http://10.0.0.1:8080)`);
        }
        o.endpoint = url.replace(/\/v1$/, "");
        break;
      }
      case "--metrics":
        o.metrics = f.value();
        break;
      case "--api-key":
        o.apiKey = f.value();
        break;
      case "--backend":
        o.backend = f.value();
        break;
      case "--model":
        o.model = f.value();
        break;
      case "--seconds":
        o.seconds = seconds(f.value(), flag);
        if (o.seconds === 0) throw new UsageError("--seconds must be more than 0");
        break;
      case "--warmup":
        o.warmup = seconds(f.value(), flag);
        break;
      case "--clients":
        o.clients = f.value().split(",").map(Number);
        if (!o.clients.every((n) => Number.isInteger(n) && n > 0)) {
          throw new UsageError("--clients needs positive integers, e.g. 1,16,128");
        }
        break;
      case "--max-tokens":
        o.maxTokens = f.count();
        break;
      case "--no-ref":
        o.ref = false;
        break;
      case "--prompt-load":
        o.promptLoad = f.count();
        break;
      default:
        throw new UsageError(`unknown flag ${flag}\n${USAGE}`);
    }
  }
  return o;
}

const prompts = ["Once upon a time", "The little dog", "One day, a girl", "Tom and his mom"];

const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

/** The agent this bench starts (`extra`: more flags). */
function startAgent(o: Options, id: string, extra: string[] = []) {
  const maxClients = Math.max(...o.clients, 2);
  return startLocalAgent({
    id,
    args: [
      "--model",
      o.model,
      "--backend",
      o.backend,
      "--gossip-preset",
      "local",
      "--context-size",
      String(Math.max(256, o.promptLoad * 2 + 128)),
      "--max-sessions",
      String(maxClients),
      "--max-requests",
      String(maxClients),
      "--queue-size",
      String(maxClients * 4),
      "--log-level",
      "info",
      ...extra,
    ],
  });
}

async function main(args: string[]): Promise<void> {
  const o = parse(args);
  const agent = o.endpoint ? undefined : await startAgent(o, "bench-api");
  const base = o.endpoint ?? `http://127.0.0.1:${agent!.httpPort}`;
  const backend = agent
    ? String(agent.logs.find((l) => l.msg === "backend selected")?.backend ?? "?")
    : "remote";
  const metricsUrl = o.metrics ?? (agent && `http://127.0.0.1:${agent.metricsPort}/metrics`);
  /** The pass histograms at time `at` (performance.now()), if there is a /metrics to read. */
  const scrapeAt = (at: number) =>
    metricsUrl
      ? new Promise((r) => setTimeout(r, Math.max(0, at - performance.now())))
        .then(() => scrapePasses(metricsUrl))
      : Promise.resolve(undefined);
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (o.apiKey) headers.authorization = `Bearer ${o.apiKey}`;

  /** Wait until the agent at `url` serves (its /health says ok); the model id it serves. */
  const ready = async (url = base): Promise<string> => {
    let last = "";
    for (let i = 0; i < 300; i++) {
      try {
        const h = await (await fetch(`${url}/health`)).json();
        if (h.status === "ok") return h.model;
        last = `status ${h.status}${h.detail ? `: ${h.detail}` : ""}`;
      } catch (e) {
        last = (e as Error).message;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${url} did not become ready within 30 s (${last})`);
  };

  /** One client: completions back to back until `until`; latencies of those ending after `from`. */
  const client = async (
    model: string,
    k: number,
    from: number,
    until: number,
    out: { lat: number[]; tokens: number },
  ) => {
    let i = k;
    while (performance.now() < until) {
      const t0 = performance.now();
      const res = await fetch(`${base}/v1/completions`, {
        method: "POST",
        headers,
        body: JSON.stringify({
          model,
          prompt: prompts[i++ % prompts.length],
          max_tokens: o.maxTokens,
          temperature: 0,
        }),
      });
      const body = await res.json();
      if (!res.ok) throw new Error(`HTTP ${res.status}: ${JSON.stringify(body)}`);
      const t1 = performance.now();
      // Throughput is completions per second of the window: every request that ends inside
      // it counts, whenever it started. Counting only requests that also started inside it
      // dropped each client's first one, which biased tokens/s down by about latency / window
      // (half of it at 16 clients, whose requests take seconds).
      if (t1 > from && t1 <= until) {
        out.lat.push(t1 - t0);
        out.tokens += body.usage.completion_tokens;
      }
    }
  };

  const results: Record<number, { tokensPerSecond: number; requestsPerSecond: number }> = {};
  try {
    const model = await ready();
    for (const n of o.clients) {
      const out = { lat: [] as number[], tokens: 0 };
      const start = performance.now();
      const from = start + o.warmup * 1000;
      const until = from + o.seconds * 1000;
      const scrapes = Promise.all([scrapeAt(from), scrapeAt(until)]);
      await Promise.all(Array.from({ length: n }, (_, k) => client(model, k, from, until, out)));
      const [before, after] = await scrapes;
      const lat = out.lat.sort((a, b) => a - b);
      const rps = lat.length / o.seconds;
      const tps = out.tokens / o.seconds;
      results[n] = { tokensPerSecond: tps, requestsPerSecond: rps };
      console.log(JSON.stringify({
        bench: "api",
        endpoint: base,
        model,
        backend,
        clients: n,
        max_tokens: o.maxTokens,
        seconds: o.seconds,
        requests: lat.length,
        requests_per_second: round(rps),
        latency_ms: { p50: round(pct(lat, 50)), p99: round(pct(lat, 99)) },
        tokens_per_second: round(tps),
        // Rows and sequences per pass of the agent's stage in the window (null: no /metrics).
        passes: passStats(before, after),
      }));
    }
    const gain = results[16] && results[1]
      ? round(results[16].tokensPerSecond / results[1].tokensPerSecond, 2)
      : null;
    const at128 = results[128]?.requestsPerSecond ?? null;
    const ref = o.ref && !o.endpoint ? await batchedReference(o) : null;
    const refGain = ref?.[16] && ref[1] ? round(ref[16] / ref[1], 2) : null;
    console.log(JSON.stringify({
      bench: "api",
      summary: true,
      endpoint: base,
      backend,
      batching_gain_tokens_per_second_16_vs_1: gain,
      goal_batching_gain_4x: gain === null ? null : gain >= 4,
      // llama.cpp decoding the same numbers of sequences in one process, one token each per
      // llama_decode: what its own batching gains on this machine with no server around it.
      ref: ref && "llama.cpp C API, N sequences per llama_decode in one process (llamaref-batched)",
      ref_tokens_per_second: ref,
      ref_batching_gain_16_vs_1: refGain,
      tokens_per_second_16_vs_ref: ref?.[16] && results[16]
        ? round(results[16].tokensPerSecond / ref[16], 2)
        : null,
      requests_per_second_at_128: at128 === null ? null : round(at128),
      goal_1000_requests_per_second_at_128: at128 === null ? null : at128 >= 1000,
    }));
    if (o.promptLoad > 0) {
      const sliced = await interference({ base, headers, model }, o.promptLoad, 64);
      // The same on an agent whose prompts run whole (no slicing), for comparison.
      let whole = null;
      if (!o.endpoint) {
        const other = await startAgent(o, "bench-api-whole", ["--prefill-chunk", "0"]);
        try {
          const b = `http://127.0.0.1:${other.httpPort}`;
          await ready(b);
          whole = await interference({ base: b, headers, model }, o.promptLoad, 64);
        } finally {
          await stopLocalAgents([other]);
        }
      }
      console.log(JSON.stringify({
        bench: "api",
        part: "prompt_load",
        endpoint: base,
        backend,
        sliced,
        whole_prompts: whole,
        goal_p90_within_3x: sliced.p90_loaded_vs_p90_alone <= 3,
      }));
    }
  } finally {
    if (agent) await stopLocalAgents([agent]);
  }
}

/**
 * llama.cpp's decode tokens/s with as many sequences per pass as each client count (up to 64),
 * on the model and thread count the agent ran (all cores, like the agent's default).
 */
async function batchedReference(o: Options): Promise<Record<number, number>> {
  const seqs = o.clients.filter((n) => n <= 64);
  if (!seqs.length) return {};
  const bin = await ensureBatchedRef();
  const got = await refBatchedDecode(bin, o.model, {
    seqs,
    prompt: 8,
    tg: Math.max(8, o.maxTokens),
    threads: navigator.hardwareConcurrency,
  });
  return Object.fromEntries(seqs.map((n) => [n, round(got.get(n)!)]));
}

await runBench("api", USAGE, main);
