/**
 * `deno task bench memory` — what a serving agent costs in memory: one real agent process
 * (cli/agent.ts) serving a model through its OpenAI API, its resident set sampled from
 * /proc/<pid>/status while `--sessions` completions run at once, against the bytes the model
 * needs (weights + the open sessions' KV caches, read from the agent's own
 * `distributed_llm_model_memory_bytes` gauge). The runtime's share is measured in the same run:
 * an agent started the same way without a model.
 *
 * ```sh
 * deno task bench memory                                  # 110M Q8_0 and 1.1B Q8_0
 * deno task bench memory --generate q8_0 --sessions 4
 * deno task bench memory --model path/to/model.gguf --context 4096
 * ```
 *
 * Prints one JSON object per model: `rss_bytes` (peak while serving), `weights_bytes`,
 * `kv_bytes`, `rss_ratio` = rss / (weights + KV), `overhead_bytes` = rss − weights − KV, and
 * `runtime_rss_bytes` (the idle agent without a model). Linux only (reads /proc).
 * @module
 */
import { Flags, runBench, UsageError } from "./lib/cli.ts";
import { type LocalAgent, startLocalAgent, stopLocalAgents } from "../cli/local_cluster.ts";
import { GENERATED, GENERATED_LARGE, type GeneratedModel, generatedModel } from "./lib/models.ts";

/** Options of one memory bench run. */
export interface MemoryBenchOptions {
  backend: string;
  threads: number;
  /** Completions served at once (each holds one session, i.e. one KV cache). */
  sessions: number;
  /** Positions per session (the agent's --context-size). */
  context: number;
  /** Tokens each completion generates. */
  tokens: number;
}

/** Resident set of a process, bytes (VmRSS). */
export function rssOf(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  if (!m) throw new Error(`/proc/${pid}/status has no VmRSS`);
  return Number(m[1]) * 1024;
}

/** The two series of `distributed_llm_model_memory_bytes{kind}` in a /metrics text. */
export function modelMemory(text: string): { weights: number; kvCache: number } {
  const get = (kind: string) => {
    const re = new RegExp(
      `^distributed_llm_model_memory_bytes\\{[^}]*kind="${kind}"[^}]*\\} (\\S+)`,
      "m",
    );
    const m = re.exec(text);
    return m ? Number(m[1]) : NaN;
  };
  return { weights: get("weights"), kvCache: get("kv_cache") };
}

function agentArgs(o: MemoryBenchOptions, model?: string): string[] {
  return [
    ...(model ? ["--model", model] : []),
    "--backend",
    o.backend,
    "--threads",
    String(o.threads),
    "--gossip-preset",
    "local",
    "--context-size",
    String(o.context),
    "--max-sessions",
    String(Math.max(4, o.sessions)),
    "--log-level",
    "warn",
  ];
}

/** Wait until the agent serves its model and has loaded its stage; returns the model id. */
async function waitServing(a: LocalAgent, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    try {
      const h = await (await fetch(`http://127.0.0.1:${a.httpPort}/health`)).json();
      const m = modelMemory(
        await (await fetch(`http://127.0.0.1:${a.metricsPort}/metrics`)).text(),
      );
      if (h.status === "ok" && h.model && m.weights > 0) return h.model;
      last = JSON.stringify({ health: h.status, weights: m.weights });
    } catch (e) {
      last = (e as Error).message;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`the agent did not serve its model within ${timeoutMs / 1000} s (${last})`);
}

/** Idle RSS of an agent without a model: the runtime, its libraries, servers and workers. */
async function runtimeRss(o: MemoryBenchOptions): Promise<number> {
  const a = await startLocalAgent({ id: "bench-mem-idle", args: agentArgs(o) });
  try {
    await new Promise((r) => setTimeout(r, 2000));
    return rssOf(a.child.pid);
  } finally {
    await stopLocalAgents([a]);
  }
}

const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;

/** Serve `model` with `o.sessions` concurrent completions and measure the agent's memory. */
export async function memoryBench(model: string, o: MemoryBenchOptions, runtime: number) {
  const a = await startLocalAgent({
    id: "bench-mem",
    args: agentArgs(o, model),
    startTimeoutMs: 120_000,
  });
  try {
    const id = await waitServing(a, 300_000);
    const base = `http://127.0.0.1:${a.httpPort}`;
    let rss = rssOf(a.child.pid);
    const loaded = rss;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        rss = Math.max(rss, rssOf(a.child.pid));
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    // Streamed completions: once every one has sent its first token, all sessions are open, and
    // the agent's own account of weights + KV bytes is read while they still run.
    let tokens = 0;
    let started = 0;
    let allStarted!: () => void;
    const whenStarted = new Promise<void>((r) => (allStarted = r));
    let memory = { weights: 0, kvCache: 0 };
    try {
      const requests = Array.from({ length: o.sessions }, async (_, i) => {
        const res = await fetch(`${base}/v1/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({
            model: id,
            prompt: `Once upon a time, in a town number ${i}, there was a`,
            max_tokens: o.tokens,
            temperature: 0,
            stream: true,
          }),
        });
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
        let first = true;
        for await (const chunk of res.body.pipeThrough(new TextDecoderStream())) {
          tokens += chunk.split("\n").filter((l) =>
            l.startsWith("data: {") && l.includes('"text"')
          ).length;
          if (first) {
            first = false;
            if (++started === o.sessions) allStarted();
          }
        }
      });
      await Promise.race([whenStarted, Promise.all(requests)]);
      const mt = await (await fetch(`http://127.0.0.1:${a.metricsPort}/metrics`)).text();
      memory = modelMemory(mt);
      await Promise.all(requests);
    } finally {
      sampling = false;
      await sampler;
    }
    rss = Math.max(rss, rssOf(a.child.pid));
    const weights = memory.weights;
    const kv = memory.kvCache;
    if (!(weights > 0)) throw new Error("the agent never reported its weight bytes");
    if (!(kv > 0)) {
      throw new Error("no KV cache was open at the scrape: raise --tokens so requests run longer");
    }
    return {
      bench: "memory",
      model,
      backend: o.backend,
      threads: o.threads,
      sessions: o.sessions,
      context: o.context,
      tokens_generated: tokens,
      weights_bytes: weights,
      kv_bytes: kv,
      rss_bytes: rss,
      rss_loaded_bytes: loaded,
      runtime_rss_bytes: runtime,
      rss_ratio: round(rss / (weights + kv)),
      overhead_bytes: rss - weights - kv,
    };
  } finally {
    await stopLocalAgents([a]);
  }
}

const USAGE = `usage: deno task bench memory [--generate ${
  [...GENERATED, ...GENERATED_LARGE].join("|")
}[,…] | --model FILE.gguf]…
  [--sessions N (1)] [--context N (2048)] [--tokens N (64)] [--threads N (all cores)]
  [--backend wasm|webgpu|reference|auto (wasm)]
Default models: q8_0 (110M) and 1b_q8_0 (1.1B). Prints one JSON object per model: agent RSS
while serving, weights + KV cache bytes, their ratio, and the idle runtime's RSS.`;

/** CLI entry. */
export async function main(args: string[]): Promise<void> {
  const o: MemoryBenchOptions = {
    backend: "wasm",
    threads: navigator.hardwareConcurrency,
    sessions: 1,
    context: 2048,
    tokens: 64,
  };
  const models: string[] = [];
  const generate: GeneratedModel[] = [];
  const all = [...GENERATED, ...GENERATED_LARGE] as readonly string[];
  const flags = new Flags(args);
  for (let a = flags.next(); a !== undefined; a = flags.next()) {
    if (a === "--model") models.push(flags.value());
    else if (a === "--generate") {
      for (const g of flags.value().split(",")) {
        if (!all.includes(g)) {
          throw new UsageError(`--generate ${g}: choose from ${all.join(", ")}`);
        }
        generate.push(g as GeneratedModel);
      }
    } else if (a === "--sessions") o.sessions = flags.count();
    else if (a === "--context") o.context = flags.count();
    else if (a === "--tokens") o.tokens = flags.count();
    else if (a === "--threads") o.threads = flags.count();
    else if (a === "--backend") o.backend = flags.value();
    else throw new UsageError(`unknown flag ${a}`);
  }
  if (!models.length && !generate.length) generate.push("q8_0", "1b_q8_0");
  for (const g of generate) models.push(await generatedModel(g));
  const runtime = await runtimeRss(o);
  for (const m of models) console.log(JSON.stringify(await memoryBench(m, o, runtime)));
}

if (import.meta.main) await runBench("memory", USAGE, main);
