/**
 * `deno task bench serve` — serving many users. Measured here: the prefix KV cache. A long
 * system prompt (1000 tokens by default) followed by varying 20-token user turns, sent to two
 * agents on the same model, one with `--prefix-cache` and one without, interleaved request by
 * request: time to first token of the first request and the next ones, their ratio, and the hit
 * rate (cached / prompt tokens from the usage object). Outputs are compared token for token.
 *
 * The replica half of the bench (k pipelines vs 1 under load) needs the agent to form replicas;
 * their planning exists (cluster/placement/replicas.ts) but the agent does not use it yet, so
 * that part prints what is missing instead of a figure.
 */
import { startLocalAgent, stopLocalAgents } from "../cli/local_cluster.ts";
import { Flags, runBench, UsageError } from "./lib/cli.ts";
import { generatedModel } from "./lib/models.ts";
import { configFromFile } from "../model/config.ts";
import { openGGUF } from "../model/gguf/mod.ts";

const USAGE = `usage: deno task bench serve [flags]

  --model <path.gguf>     model both agents serve (default: the generated 110M Q8_0 bench model)
  --system <n>            tokens of the shared system prompt (default 1000)
  --turn <n>              tokens of each user turn (default 20)
  --requests <n>          requests after the first (default 10)
  --prefix-cache <bytes>  the cached agent's --prefix-cache (default 512MiB)
  --backend <name>        auto|wasm|webgpu|reference (default auto)

Prints one JSON object (time to first token cached vs uncached, hit rate, outputs compared).`;

interface Options {
  model?: string;
  system: number;
  turn: number;
  requests: number;
  prefixCache: string;
  backend: string;
}

function parse(args: string[]): Options {
  const o: Options = {
    system: 1000,
    turn: 20,
    requests: 10,
    prefixCache: "512MiB",
    backend: "auto",
  };
  const f = new Flags(args);
  for (let flag = f.next(); flag !== undefined; flag = f.next()) {
    switch (flag) {
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
      case "--backend":
        o.backend = f.value();
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
  const model = o.model ?? await generatedModel("q8_0");
  const file = await openGGUF(model);
  const vocab = configFromFile(file).nVocab;
  file.close();
  const common = ["--model", model, "--backend", o.backend, "--gossip-preset", "local"];
  const context = String(Math.max(2048, o.system + o.turn + 16));
  console.error(`bench serve: starting two agents on ${model}`);
  const on = await startLocalAgent({
    id: "serve-cached",
    args: [...common, "--context-size", context, "--prefix-cache", o.prefixCache],
  });
  const off = await startLocalAgent({
    id: "serve-plain",
    args: [...common, "--context-size", context],
  });
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
      system_tokens: o.system,
      turn_tokens: o.turn,
      first_request_ms: { cached_agent: rows[0].cachedMs, plain_agent: rows[0].plainMs },
      ttft_median_ms: { cached: cachedTtft, uncached: plainTtft },
      ttft_ratio: round(cachedTtft / plainTtft, 3),
      hit_rate: round(cachedTokens / promptTokens, 3),
      same_outputs: same,
      requests: rows,
    }));
    console.log(JSON.stringify({
      bench: "serve",
      part: "replicas",
      status: "not measured: replicas are planned (cluster/placement/replicas.ts, planReplicas) " +
        "but the agent does not form or route to them yet",
    }));
  } finally {
    await stopLocalAgents([on, off]);
  }
}

if (import.meta.main) await runBench("serve", USAGE, main);
