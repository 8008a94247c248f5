/**
 * `deno task bench serve` — serving many users, in two parts.
 *
 * Replicas: a cluster of agents (1 thread each) that can each hold the whole model, run once with
 * `--replicas 1` (one pipeline over every agent) and once with `--replicas auto` (as many
 * disjoint pipelines as fit), under the same closed-loop load: `--clients` concurrent clients,
 * each sending completions of `--max-tokens` tokens one after another for `--seconds`, spread
 * over every agent's RPC port (any agent heads a request and routes it). Tokens are counted as
 * they stream inside the window; requests/s counts those that finished in it. While it runs,
 * each replica's load (its first stage's open sessions plus queued frames, read from /metrics
 * every 200 ms) is sampled: the busiest replica's mean against the mean over replicas shows
 * whether routing spreads the load. Stories260K on 4 agents, then the generated 110M Q8_0 model
 * on 2 agents (16 clients by default: at ~60 tokens/s, 64 clients' first requests would not
 * even finish inside the window).
 *
 * Prefix cache: a long system prompt (1000 tokens by default) followed by varying 20-token user
 * turns, sent to two agents on the same model, one with `--prefix-cache` and one without,
 * interleaved request by request: time to first token of the first request and the next ones,
 * their ratio, and the hit rate (cached / prompt tokens from the usage object). Outputs are
 * compared token for token.
 */
import {
  type LocalAgent,
  splitModelArgs,
  startLocalAgent,
  startLocalCluster,
  stopLocalAgents,
  waitForPlacement,
} from "../cli/local_cluster.ts";
import { parseBytes } from "../cluster/agent_config.ts";
import { createClient } from "@connectrpc/connect";
import { createRpcTransport } from "../cluster/rpc/mod.ts";
import { DiscoveryService, type GetClusterInfoResponse, InferenceService } from "../proto/mod.ts";
import { fileURLToPath } from "node:url";
import { Flags, runBench, UsageError } from "./lib/cli.ts";
import { generatedModel } from "./lib/models.ts";
import { configFromFile } from "../model/config.ts";
import { openGGUF } from "../model/gguf/mod.ts";

const USAGE = `usage: deno task bench serve [flags]

  --part <name>           replicas, prefix or all (default all)
  --backend <name>        auto|wasm|webgpu|reference (default auto)

replicas:
  --clients <n>           concurrent clients (default 64)
  --seconds <n>           load window (default 10)
  --max-tokens <n>        tokens per completion (default 32)
  --small-agents <n>      agents serving stories260K (default 4; 0 skips it)
  --big-agents <n>        agents serving the 110M model (default 2; 0 skips it)
  --big-model <path>      the larger model (default: the generated 110M Q8_0 bench model)
  --big-clients <n>       concurrent clients on it (default 16: 64 sessions of 32 tokens at
                          ~60 tokens/s would not finish one request inside the window)

prefix cache:
  --model <path.gguf>     model both agents serve (default: the generated 110M Q8_0 bench model)
  --system <n>            tokens of the shared system prompt (default 1000)
  --turn <n>              tokens of each user turn (default 20)
  --requests <n>          requests after the first (default 10)
  --prefix-cache <bytes>  the cached agent's --prefix-cache (default 512MiB)
  --prefix-agents <n>     each side is a chain of n agents splitting the model (default 1:
                          one agent each); the cached chain's every agent has the cache

Prints JSON objects: per replica run (requests/s, tokens/s, per-replica load), the replica
ratios, and the prefix cache's (time to first token cached vs uncached, hit rate, outputs).`;

interface Options {
  part: "all" | "replicas" | "prefix";
  model?: string;
  system: number;
  turn: number;
  requests: number;
  prefixCache: string;
  prefixAgents: number;
  backend: string;
  clients: number;
  seconds: number;
  maxTokens: number;
  smallAgents: number;
  bigAgents: number;
  bigModel?: string;
  bigClients: number;
}

function parse(args: string[]): Options {
  const o: Options = {
    part: "all",
    system: 1000,
    turn: 20,
    requests: 10,
    prefixCache: "512MiB",
    prefixAgents: 1,
    backend: "auto",
    clients: 64,
    seconds: 10,
    maxTokens: 32,
    smallAgents: 4,
    bigAgents: 2,
    bigClients: 16,
  };
  const f = new Flags(args);
  for (let flag = f.next(); flag !== undefined; flag = f.next()) {
    switch (flag) {
      case "--part": {
        const v = f.value();
        if (v !== "all" && v !== "replicas" && v !== "prefix") {
          throw new UsageError(`--part must be replicas, prefix or all\n${USAGE}`);
        }
        o.part = v;
        break;
      }
      case "--model":
        o.model = f.value();
        break;
      case "--system":
        o.system = f.count();
        break;
      case "--turn":
        o.turn = f.count();
        break;
      case "--requests":
        o.requests = f.count();
        break;
      case "--prefix-cache":
        o.prefixCache = f.value();
        break;
      case "--prefix-agents":
        o.prefixAgents = f.count();
        if (o.prefixAgents < 1) throw new UsageError(`--prefix-agents needs at least 1\n${USAGE}`);
        break;
      case "--backend":
        o.backend = f.value();
        break;
      case "--clients":
        o.clients = f.count();
        break;
      case "--seconds":
        o.seconds = f.count();
        break;
      case "--max-tokens":
        o.maxTokens = f.count();
        break;
      case "--small-agents":
        o.smallAgents = Number(f.value());
        break;
      case "--big-agents":
        o.bigAgents = Number(f.value());
        break;
      case "--big-model":
        o.bigModel = f.value();
        break;
      case "--big-clients":
        o.bigClients = f.count();
        break;
      default:
        throw new UsageError(`unknown flag ${flag}\n${USAGE}`);
    }
  }
  return o;
}

/** Deterministic token ids in [1, vocab). */
function ids(n: number, seed: number, vocab: number): number[] {
  const out: number[] = [];
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    out.push(1 + (s >>> 8) % (vocab - 1));
  }
  return out;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

async function main(args: string[]): Promise<void> {
  const o = parse(args);
  if (o.part !== "prefix") await replicasPart(o);
  if (o.part !== "replicas") await prefixPart(o);
}

async function prefixPart(o: Options): Promise<void> {
  const model = o.model ?? await generatedModel("q8_0");
  const file = await openGGUF(model);
  const vocab = configFromFile(file).nVocab;
  file.close();
  const common = ["--model", model, "--backend", o.backend, "--gossip-preset", "local"];
  const context = Math.max(2048, o.system + o.turn + 16);
  const cacheArgs = ["--prefix-cache", o.prefixCache];
  let on: LocalAgent;
  let off: LocalAgent;
  const all: LocalAgent[] = [];
  if (o.prefixAgents === 1) {
    console.error(`bench serve: starting two agents on ${model}`);
    on = await startLocalAgent({
      id: "serve-cached",
      args: [...common, "--context-size", String(context), ...cacheArgs],
    });
    all.push(on);
    off = await startLocalAgent({
      id: "serve-plain",
      args: [...common, "--context-size", String(context)],
    });
    all.push(off);
  } else {
    // Two chains that split the model alike (the cached one's budgets grow by its cache).
    const n = o.prefixAgents;
    console.error(`bench serve: starting two chains of ${n} agents on ${model}`);
    const split = (extraBytes: number) =>
      splitModelArgs({
        model,
        agents: n,
        contextSize: context,
        maxSessions: 4,
        backend: o.backend,
        extraBytes,
      });
    const chain = async (name: string, args: string[]) => {
      const ids = Array.from({ length: n }, (_, i) => `serve-${name}-${i}`);
      const agents = await startLocalCluster(ids, { args, startTimeoutMs: 120_000 });
      all.push(...agents);
      const t = await createRpcTransport(`127.0.0.1:${agents[0].rpcPort}`, { gzip: false });
      try {
        await waitForPlacement(t, n, 120_000);
      } finally {
        t.close();
      }
      return agents[0];
    };
    on = await chain("cached", [...(await split(parseBytes(o.prefixCache))).args, ...cacheArgs]);
    off = await chain("plain", (await split(0)).args);
  }
  try {
    const ready = async (port: number): Promise<string> => {
      for (let i = 0; i < 600; i++) {
        try {
          const h = await (await fetch(`http://127.0.0.1:${port}/health`)).json();
          if (h.status === "ok") {
            const m = await (await fetch(`http://127.0.0.1:${port}/v1/models`)).json();
            return m.data[0].id;
          }
        } catch { /* not up yet */ }
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`the agent on port ${port} did not become ready within 60 s`);
    };
    const name = await ready(on.httpPort);
    await ready(off.httpPort);
    const system = ids(o.system, 1, vocab);
    /** One request: time to its only token, cached tokens, the token. */
    const ask = async (port: number, prompt: number[]) => {
      const t0 = performance.now();
      const r = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({ model: name, prompt, max_tokens: 1, temperature: 0 }),
      });
      const body = await r.json();
      if (!r.ok) throw new Error(`HTTP ${r.status}: ${JSON.stringify(body)}`);
      return {
        ms: performance.now() - t0,
        cached: body.usage.prompt_tokens_details?.cached_tokens ?? 0,
        prompt: body.usage.prompt_tokens as number,
        text: body.choices[0].text as string,
      };
    };
    const rows: { turn: number; cachedMs: number; plainMs: number; cached: number }[] = [];
    let same = true;
    let cachedTokens = 0;
    let promptTokens = 0;
    for (let k = 0; k <= o.requests; k++) {
      const prompt = [...system, ...ids(o.turn, 100 + k, vocab)];
      const a = await ask(on.httpPort, prompt);
      const b = await ask(off.httpPort, prompt);
      same &&= a.text === b.text;
      if (k > 0) {
        cachedTokens += a.cached;
        promptTokens += a.prompt;
      }
      rows.push({ turn: k, cachedMs: round(a.ms), plainMs: round(b.ms), cached: a.cached });
      console.error(
        `bench serve: request ${k}: cached agent ${a.ms.toFixed(0)} ms (${a.cached} of ` +
          `${a.prompt} tokens from the cache), plain agent ${b.ms.toFixed(0)} ms`,
      );
    }
    const later = rows.slice(1);
    const cachedTtft = median(later.map((r) => r.cachedMs));
    const plainTtft = median(later.map((r) => r.plainMs));
    console.log(JSON.stringify({
      bench: "serve",
      part: "prefix_cache",
      model,
      agents_per_side: o.prefixAgents,
      system_tokens: o.system,
      turn_tokens: o.turn,
      first_request_ms: { cached_agent: rows[0].cachedMs, plain_agent: rows[0].plainMs },
      ttft_median_ms: { cached: cachedTtft, uncached: plainTtft },
      ttft_ratio: round(cachedTtft / plainTtft, 3),
      hit_rate: round(cachedTokens / promptTokens, 3),
      same_outputs: same,
      requests: rows,
    }));
  } finally {
    await stopLocalAgents(all);
  }
}

const STORIES = fileURLToPath(new URL("../models/stories260K.gguf", import.meta.url));

/** Both replica comparisons: stories260K on the small cluster, the 110M model on the big one. */
async function replicasPart(o: Options): Promise<void> {
  const cases: { name: string; model: string; agents: number; clients: number }[] = [];
  if (o.smallAgents > 0) {
    cases.push({ name: "stories260K", model: STORIES, agents: o.smallAgents, clients: o.clients });
  }
  if (o.bigAgents > 0) {
    cases.push({
      name: "110M",
      model: o.bigModel ?? await generatedModel("q8_0"),
      agents: o.bigAgents,
      clients: o.bigClients,
    });
  }
  for (const c of cases) {
    const one = await replicaRun({ ...o, clients: c.clients }, c.model, c.agents, "1");
    const auto = await replicaRun({ ...o, clients: c.clients }, c.model, c.agents, "auto");
    console.log(JSON.stringify({
      bench: "serve",
      part: "replicas_ratio",
      model: c.name,
      agents: c.agents,
      clients: c.clients,
      replicas: { one: one.replicas, auto: auto.replicas },
      tokens_per_second: { one: one.tokensPerSecond, auto: auto.tokensPerSecond },
      requests_per_second: { one: one.requestsPerSecond, auto: auto.requestsPerSecond },
      tokens_ratio: round(auto.tokensPerSecond / one.tokensPerSecond, 2),
      requests_ratio: round(auto.requestsPerSecond / one.requestsPerSecond, 2),
      busiest_replica_over_mean: auto.busiestOverMean,
    }));
  }
}

/** One closed-loop load run on a fresh local cluster started with `--replicas setting`. */
async function replicaRun(o: Options, model: string, n: number, setting: string) {
  const ids = Array.from({ length: n }, (_, i) => `rep-${i}`);
  console.error(`bench serve: ${n} agents, --replicas ${setting}, ${model}`);
  const agents = await startLocalCluster(ids, {
    args: [
      ...["--model", model, "--backend", o.backend, "--gossip-preset", "local"],
      ...["--threads", "1", "--replicas", setting, "--context-size", "512"],
      ...["--max-sessions", String(Math.max(64, o.clients)), "--log-level", "warn"],
    ],
  });
  const transports = await Promise.all(
    agents.map((a) => createRpcTransport(`127.0.0.1:${a.rpcPort}`)),
  );
  try {
    const info = await formed(transports[0], n, setting);
    const replicas = info.placement!.replicas;
    const byId = new Map(agents.map((a) => [a.id, a]));
    console.error(
      `bench serve: ${replicas.length} replica(s): ` +
        replicas.map((r) => r.stages.map((s) => s.nodeId).join("→")).join(", "),
    );
    // Load sampler: each replica's first stage, open sessions + queued frames.
    const samples = new Map<string, number[]>(replicas.map((r) => [r.id, []]));
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        await Promise.all(replicas.map(async (r) => {
          const a = byId.get(r.id)!;
          try {
            samples.get(r.id)!.push(await stageLoad(a));
          } catch { /* a scrape that fails is no sample */ }
        }));
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
    const deadline = performance.now() + o.seconds * 1000;
    const abort = new AbortController();
    let tokens = 0;
    let done = 0;
    let failed = 0;
    const routed: Record<string, number> = {};
    const clients = Array.from({ length: o.clients }, async (_, i) => {
      const client = createClient(InferenceService, transports[i % transports.length]);
      for (let k = 0; performance.now() < deadline; k++) {
        try {
          for await (
            const m of client.generate({
              prompt: "Once upon a time",
              maxTokens: o.maxTokens,
              sampler: { temperature: 0.8, seed: BigInt(i * 100_000 + k) },
            }, { signal: abort.signal })
          ) {
            if (performance.now() >= deadline) break;
            if (!m.finishReason) {
              tokens++;
              continue;
            }
            done++;
            const first = m.placement?.stages[0]?.nodeId ?? "?";
            routed[first] = (routed[first] ?? 0) + 1;
          }
        } catch (e) {
          if (performance.now() < deadline) {
            failed++;
            console.error(`bench serve: client ${i}: ${(e as Error).message}`);
          }
        }
      }
    });
    const t0 = performance.now();
    const timer = setTimeout(() => abort.abort(), o.seconds * 1000 + 100);
    await Promise.all(clients);
    clearTimeout(timer);
    const secs = Math.min(performance.now() - t0, o.seconds * 1000) / 1000;
    sampling = false;
    await sampler;
    const means = replicas.map((r) => {
      const xs = samples.get(r.id)!;
      return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
    });
    const maxes = replicas.map((r) => Math.max(0, ...samples.get(r.id)!));
    const mean = means.reduce((a, b) => a + b, 0) / Math.max(1, means.length);
    const result = {
      bench: "serve",
      part: "replicas",
      model,
      agents: n,
      threads_per_agent: 1,
      replicas_setting: setting,
      replicas: replicas.length,
      clients: o.clients,
      max_tokens: o.maxTokens,
      seconds: round(secs, 2),
      requests_per_second: round(done / secs, 2),
      tokens_per_second: round(tokens / secs, 1),
      failed_requests: failed,
      routed_requests: routed,
      // Load = open sessions + queued frames on the replica's first stage, sampled every 200 ms.
      replica_load: replicas.map((r, i) => ({
        replica: r.id,
        mean: round(means[i], 1),
        max: maxes[i],
      })),
      replica_load_mean: round(mean, 1),
      busiest_replica_over_mean: mean > 0 ? round(Math.max(...means) / mean, 2) : null,
    };
    console.log(JSON.stringify(result));
    return {
      replicas: replicas.length,
      tokensPerSecond: result.tokens_per_second,
      requestsPerSecond: result.requests_per_second,
      busiestOverMean: result.busiest_replica_over_mean,
    };
  } finally {
    for (const t of transports) t.close();
    await stopLocalAgents(agents);
  }
}

/** Wait until the plan's replicas (1, or one per agent for auto) are all loaded. */
async function formed(
  transport: Parameters<typeof createClient>[1],
  n: number,
  setting: string,
): Promise<GetClusterInfoResponse> {
  const want = setting === "auto" ? n : Number(setting);
  const discovery = createClient(DiscoveryService, transport);
  let last = "";
  let stable = { epoch: -1n, since: 0 };
  for (let i = 0; i < 1200; i++) {
    try {
      const info = await discovery.getClusterInfo({});
      const hosted = new Map(info.nodes.filter((x) => x.hosted).map((x) => [x.id, x.hosted!]));
      const reps = info.placement?.replicas ?? [];
      last = JSON.stringify(reps.map((r) => r.stages.map((s) => s.nodeId)));
      const loaded = reps.every((r) =>
        r.stages.every((s) =>
          hosted.get(s.nodeId)?.fromLayer === s.fromLayer &&
          hosted.get(s.nodeId)?.toLayer === s.toLayer
        )
      );
      // Every agent planned in (a stage or a standby), and the epoch held for a second: a
      // cluster still joining would re-place stages under the load.
      const planned = new Set([
        ...reps.flatMap((r) => r.stages.map((s) => s.nodeId)),
        ...(info.placement?.standby ?? []),
      ]);
      const ok = reps.length === want && loaded && planned.size === n;
      const epoch = info.placement?.epoch ?? 0n;
      if (!ok || epoch !== stable.epoch) stable = { epoch, since: performance.now() };
      else if (performance.now() - stable.since >= 1000) return info;
    } catch (e) {
      last = (e as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${want} replica(s) did not form within 120 s (last: ${last})`);
}

/** Open sessions plus queued frames on `a`'s stage, from its /metrics. */
async function stageLoad(a: LocalAgent): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${a.metricsPort}/metrics`)).text();
  const read = (series: string) => {
    const line = text.split("\n").find((l) => l.startsWith(series + " "));
    return line ? Number(line.split(" ")[1]) : 0;
  };
  return read('distributed_llm_kv_cache_slots{state="used"}') +
    read("distributed_llm_queue_depth");
}

if (import.meta.main) await runBench("serve", USAGE, main);
