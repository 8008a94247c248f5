/**
 * Pipeline benchmark, one run: decode speed of the same greedy request in-process (the local
 * Engine: a head over one in-process stage), through 1 agent, and through 3 agents (a chain:
 * each stage forwards its rows to the next, the tail samples), their ratios, and the latency
 * each hop adds.
 *
 * ```sh
 * deno task bench pipeline                        # the generated 110M Q8_0 model
 * deno task bench pipeline --model models/stories260K.gguf --tokens 64 --backend reference
 * ```
 *
 * Served decode is what a client sees: InferenceService.Generate on the first agent (the head,
 * hosting stage 0 in-process), its usage.decode_tokens_per_second. Per-hop overhead: the bench
 * opens a chain session on the first stage itself, as a head whose stages are all remote does,
 * and times each decode step; the stages report their compute (summed along the chain; the tail's
 * sampling counts as compute), so (round trip − compute) / stages is the time one hop adds (send,
 * receive, encode, decode of one frame, and a share of the token's way back). The token comes
 * back as a head's does: straight from the tail over a reply stream where the tail offers one
 * (`hop_path: "direct"`; the TCP data plane, no TLS: stages + 1 crossings per token). The same
 * figure with the token relayed back stage by stage (2 × stages crossings, the path under mTLS)
 * is `hop_ms_p50_relayed`; before 2026-12-05 that was the only path timed. As a head does, the
 * bench sends each frame without waiting for the chain's answer to the last one, and reads the
 * answers (their summed compute) at the end. The time between tokens as the bench's client reads
 * them (p10 / p50 / p90) shows whether tokens reach a client as they are made or in bursts. Prints
 * JSON.
 *
 * `--prefill N` also times the first token of an N-token prompt (one token asked for) through 1
 * agent, through the 3-agent chain (its stages hand each 64-row chunk on while running the next,
 * so the chunks overlap across stages), and through a second 3-agent chain started with
 * `--prefill-chunk 0` (the prompt goes down whole), each round.
 *
 * Where llama.cpp's own tools are built (bench/.cache/llamaref, `sh native/build-llama-tools.sh`),
 * each round also times llama.cpp's distributed mode on the same model and threads: llama-bench
 * with the layers over 3 `ggml-rpc-server`s on loopback, against llama-bench in one process
 * (`llama_cpp_rpc`; `--no-ref` skips it). Its 3 / 1 is a yardstick for ours, not a like for like:
 * its client drives every server op by op (a star), where our stages hand rows on (a chain).
 *
 * `--endpoint host:7950` (with `--tls-ca/--tls-cert/--tls-key` under mTLS) measures a running
 * cluster instead: served decode through its head and per-hop overhead over its chain, read from
 * GetClusterInfo's placement; the in-process and 1-agent comparisons are then not run (null).
 * @module
 */
import { Command } from "@commander-js/extra-typings";
import { createClient } from "@connectrpc/connect";
import { Engine, RemoteStageLink, type StageResult } from "../cluster/pipeline/mod.ts";
import { createRpcTransport, type RpcTransport } from "../cluster/rpc/mod.ts";
import { parseBackendName, selectBackend } from "../kernels/select.ts";
import { DiscoveryService, type GetClusterInfoResponse, InferenceService } from "../proto/mod.ts";
import type { ClientTls } from "../cluster/tls/files.ts";
import {
  splitModelArgs,
  startLocalCluster,
  stopLocalAgents,
  waitForPlacement,
} from "../cli/local_cluster.ts";
import { CACHE_DIR, generatedModel } from "./lib/models.ts";
import { haveLlamaTools, LlamaRpcServers } from "./lib/llama_rpc.ts";

const CONTEXT = 1024;
const SESSIONS = 2;
const PROMPT = "Once upon a time there was a little robot who wanted to learn to paint.";

/** `x` rounded to 3 decimals, for the JSON. */
function r3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
}

interface Opts {
  tokens: number;
  /** Prompt tokens of the time-to-first-token rounds (0: none). */
  prefill: number;
  backend: string;
  threads?: number;
  reps: number;
}

/** How a hop measurement's tokens came back: from the tail directly, or along the chain. */
type HopPath = "direct" | "relayed";

/**
 * One timed decode: tokens/s after the first token, the ids, and (served rounds) the ms between
 * consecutive tokens as the client read them.
 */
interface Round {
  tps: number;
  ids: number[];
  gaps?: number[];
}

/** The local Engine (a head over one in-process stage), ready to run rounds. */
async function inProcess(model: string, o: Opts) {
  const { backend } = await selectBackend(parseBackendName(o.backend), { threads: o.threads });
  const engine = await Engine.open(model, backend, { nCtx: CONTEXT });
  const run = async (): Promise<Round> => {
    const res = await engine.generate({
      prompt: PROMPT,
      maxTokens: o.tokens,
      stopAtEog: false,
      sampler: { temperature: 0 },
    });
    return { tps: (res.tokens.length - 1) / (res.decodeMs / 1000), ids: res.tokens };
  };
  return { run, stop: () => Promise.resolve(engine.close()) };
}

/**
 * Rounds over a placed cluster reached through its head (`headTransport`): served decode via
 * Generate, and per-hop overhead over a chain session the bench opens on the first stage.
 */
function chainRounds(
  info: GetClusterInfoResponse,
  headTransport: RpcTransport,
  o: Opts,
  prefix: string,
) {
  const stages = info.placement!.stages;
  const client = createClient(InferenceService, headTransport);
  /** Served decode: Generate on the agent hosting stage 0, as a client sees it. */
  const run = async (): Promise<Round> => {
    const out: number[] = [];
    const gaps: number[] = [];
    let last = NaN;
    let tps = 0;
    for await (
      const m of client.generate({
        prompt: PROMPT,
        maxTokens: o.tokens,
        sampler: { temperature: 0 },
      })
    ) {
      if (m.usage) tps = m.usage.decodeTokensPerSecond;
      else {
        const now = performance.now();
        if (out.length) gaps.push(now - last);
        last = now;
        out.push(m.tokenId);
      }
    }
    return { tps, ids: out, gaps };
  };
  /**
   * Per hop: a chain session opened by the bench on the first stage, timed per decode step, on
   * the path a head's tokens take: straight from the tail over a reply stream where the tail
   * offers one (head.ts: the TCP data plane, no TLS), else along the chain (`path`). With
   * `relayed`, always along the chain (the path under mTLS).
   */
  const hops = async (relayed = false): Promise<{ ms: number[]; path: HopPath }> => {
    const out: number[] = [];
    const link = (s: typeof stages[number]) =>
      new RemoteStageLink(s.nodeId, s.fromLayer, s.toLayer, headTransport, {
        // The first hop too goes over the TCP data plane when the stage runs one (no TLS).
        dataEndpoint: s.dataEndpoint || undefined,
      });
    const sessionId = `${prefix}-hops-${crypto.randomUUID()}`;
    const replies = relayed || stages.length < 2
      ? undefined
      : await link(stages[stages.length - 1]).openReplies(sessionId);
    const session = await link(stages[0]).openSession({
      sessionId,
      maxContext: CONTEXT,
      model: info.placement!.model,
      epoch: info.placement!.epoch,
      sampling: { temperature: 0 },
      downstream: stages.slice(1).map((s) => ({
        nodeId: s.nodeId,
        from: s.fromLayer,
        to: s.toLayer,
      })),
      ...(replies ? { replyDirect: true } : {}),
    }).catch((e) => {
      replies?.close();
      throw e;
    });
    /**
     * One frame: the round trip to its token. The chain's answer to it sums the compute of every
     * stage on the way; with a reply stream that answer follows the token, off its path, and
     * (as a head does) the next frame goes without waiting for it: it is read at the end.
     */
    const answers: Promise<StageResult>[] = [];
    const step = async (tokens: Int32Array) => {
      const t0 = performance.now();
      const answer = session.step({ tokens });
      answer.catch(() => {}); // read below
      answers.push(answer);
      // A failure down the chain comes as the answer, and no token follows it.
      const token = replies
        ? await Promise.race([
          replies.next(),
          answer.then((a) => a.kind === "replied" ? new Promise<never>(() => {}) : a),
        ])
        : await answer;
      if (token.kind !== "token") throw new Error(`expected a token, got ${token.kind}`);
      return { id: token.token.id, ms: performance.now() - t0 };
    };
    try {
      let { id } = await step(Int32Array.from([1, 5, 7]));
      const rtt: number[] = [];
      for (let i = 0; i < o.tokens; i++) {
        const r = await step(Int32Array.of(id));
        rtt.push(r.ms);
        id = r.id;
      }
      const answered = await Promise.all(answers);
      for (const [i, ms] of rtt.entries()) {
        out.push((ms - answered[i + 1].computeMs) / stages.length);
      }
    } finally {
      await session.close("done");
      replies?.close();
    }
    return { ms: out, path: replies ? "direct" : "relayed" };
  };
  /** Time to the first token of a `prefill`-token prompt, as the head measured it. */
  const ttft = async (): Promise<{ ms: number; promptTokens: number }> => {
    // The sentence is about 38 tokens of the 110M model's vocabulary; the head reports how
    // many the prompt really was.
    const prompt = Array(Math.ceil(o.prefill / 38)).fill(PROMPT).join(" ");
    for await (
      const m of client.generate({ prompt, maxTokens: 1, sampler: { temperature: 0 } })
    ) {
      if (m.usage) {
        return { ms: m.usage.timeToFirstTokenMs, promptTokens: m.usage.promptTokens };
      }
    }
    throw new Error("the generation ended without usage");
  };
  return { run, hops, ttft };
}

/** `nAgents` agent processes, ready to run served rounds and to time hops. */
async function served(
  model: string,
  nAgents: number,
  o: Opts,
  prefix: string,
  extra: string[] = [],
) {
  const { args: split } = await splitModelArgs({
    model,
    agents: nAgents,
    contextSize: CONTEXT,
    maxSessions: SESSIONS,
    backend: o.backend,
    threads: o.threads,
  });
  const args = [...split, ...extra];
  const ids = Array.from({ length: nAgents }, (_, i) => `${prefix}-${i}`);
  const agents = await startLocalCluster(ids, { args, startTimeoutMs: 120_000 });
  const transport = await createRpcTransport(`127.0.0.1:${agents[0].rpcPort}`, { gzip: false });
  const info = await waitForPlacement(transport, nAgents, 120_000);
  transport.close();
  const stages = info.placement!.stages;
  const head = agents.find((a) => a.id === stages[0].nodeId)!;
  const headTransport = await createRpcTransport(`127.0.0.1:${head.rpcPort}`, { gzip: false });
  const { run, hops, ttft } = chainRounds(info, headTransport, o, prefix);
  const stop = async () => {
    headTransport.close();
    await stopLocalAgents(agents);
  };
  return {
    run,
    hops,
    ttft,
    stop,
    stages: stages.map((s) => `${s.nodeId}:[${s.fromLayer},${s.toLayer})`),
  };
}

/** A running cluster reached at `endpoint` (any agent's RPC port): its head and its chain. */
async function attached(endpoint: string, tls: ClientTls | undefined, o: Opts) {
  const probe = await createRpcTransport(endpoint, { tls, gzip: false });
  let info;
  try {
    info = await createClient(DiscoveryService, probe).getClusterInfo({});
  } finally {
    probe.close();
  }
  const stages = info.placement?.stages ?? [];
  if (!stages.length) throw new Error(`${endpoint}: the cluster has no placement yet`);
  const missing = stages.find((s) => !s.rpcEndpoint);
  if (missing) throw new Error(`${endpoint}: stage ${missing.nodeId} has no RPC endpoint`);
  const headTransport = await createRpcTransport(stages[0].rpcEndpoint, { tls, gzip: false });
  const { run, hops } = chainRounds(info, headTransport, o, "bench");
  return {
    run,
    hops,
    stop: () => Promise.resolve(headTransport.close()),
    model: info.placement!.model,
    stages: stages.map((s) => `${s.nodeId}:[${s.fromLayer},${s.toLayer})`),
  };
}

/** Per-hop times of every round, on a head's path and along the chain. */
class HopTimes {
  path: HopPath = "relayed";
  readonly ms: number[] = [];
  readonly relayed: number[] = [];

  add(head: { ms: number[]; path: HopPath }, relayed: { ms: number[] }): void {
    this.path = head.path;
    this.ms.push(...head.ms);
    this.relayed.push(...relayed.ms);
  }

  json() {
    return {
      hop_ms_p50: r3(quantile(this.ms, 0.5)),
      hop_ms_p99: r3(quantile(this.ms, 0.99)),
      // "direct": tokens came from the tail over a reply stream, as a head's do without TLS.
      hop_path: this.path,
      hops_measured: this.ms.length,
      hop_ms_p50_relayed: r3(quantile(this.relayed, 0.5)),
      hop_ms_p99_relayed: r3(quantile(this.relayed, 0.99)),
    };
  }
}

function median(xs: number[]): number {
  return quantile(xs, 0.5);
}

/** p10 / p50 / p90 of the time between tokens as the client read them, over served rounds. */
function gapStats(rounds: Round[]): { p10: number; p50: number; p90: number } {
  const gaps = rounds.flatMap((r) => r.gaps ?? []);
  return {
    p10: r3(quantile(gaps, 0.1)),
    p50: r3(quantile(gaps, 0.5)),
    p90: r3(quantile(gaps, 0.9)),
  };
}

if (import.meta.main) {
  const opts = new Command("bench pipeline")
    .description("decode in-process vs through 1 and 3 agents (a chain), and per-hop overhead")
    .option("--model <path>", "GGUF model (default: the generated 110M Q8_0 model)")
    .option("--tokens <n>", "tokens to decode", "64")
    .option("--reps <n>", "rounds (each runs every configuration once)", "5")
    .option("--backend <name>", "backend of the engine and every agent", "auto")
    .option("--threads <n>", "threads per engine/agent")
    .option("--prefill <n>", "also time the first token of an n-token prompt (0: no)", "0")
    .option(
      "--no-ref",
      "skip llama.cpp's RPC mode over 3 servers against llama.cpp alone (when its tools are built)",
    )
    .option("--endpoint <host:port>", "measure a running cluster through this agent's RPC port")
    .option("--tls-ca <path>", "CA of the cluster's mTLS (with --endpoint)")
    .option("--tls-cert <path>", "client certificate (with --endpoint)")
    .option("--tls-key <path>", "client key (with --endpoint)")
    .parse(Deno.args, { from: "user" })
    .opts();
  const o: Opts = {
    tokens: Number(opts.tokens),
    prefill: Number(opts.prefill),
    reps: Number(opts.reps),
    backend: opts.backend,
    threads: opts.threads ? Number(opts.threads) : undefined,
  };
  if (opts.endpoint) {
    const tls = opts.tlsCa ? { ca: opts.tlsCa, cert: opts.tlsCert, key: opts.tlsKey } : undefined;
    const remote = await attached(opts.endpoint, tls, o);
    const rounds: Round[] = [];
    const hops = new HopTimes();
    try {
      await remote.run(); // warm-up
      for (let r = 0; r < o.reps; r++) {
        rounds.push(await remote.run());
        hops.add(await remote.hops(), await remote.hops(true));
      }
    } finally {
      await remote.stop();
    }
    console.log(JSON.stringify({
      bench: "pipeline",
      endpoint: opts.endpoint,
      model: remote.model,
      tokens: o.tokens,
      reps: o.reps,
      in_process_decode_tokens_per_second: null,
      one_agent_decode_tokens_per_second: null,
      served_decode_tokens_per_second: r3(Math.max(...rounds.map((r) => r.tps))),
      median_served_decode_tokens_per_second: r3(median(rounds.map((r) => r.tps))),
      ...hops.json(),
      client_gap_ms: gapStats(rounds),
      same_ids: rounds.every((r) => r.ids.join() === rounds[0].ids.join()),
      rounds: rounds.map((r) => r3(r.tps)),
      stages: remote.stages,
    }));
    Deno.exit(0);
  }
  const model = opts.model ?? await generatedModel("q8_0");
  // All three stay up and take turns round by round: on a shared machine a neighbour's load
  // then hits every configuration alike (best round and median of per-round ratios reported).
  const local = await inProcess(model, o);
  const one = await served(model, 1, o, "solo");
  const three = await served(model, 3, o, "chain");
  // The same chain with its prompts sent down whole, for the prefill comparison.
  const whole = o.prefill > 0 ? await served(model, 3, o, "whole", ["--prefill-chunk", "0"]) : null;
  const rounds: { local: Round; one: Round; three: Round }[] = [];
  const hops = new HopTimes();
  // llama.cpp's own split over three processes, against itself in one, as a yardstick for 3 / 1.
  const llamaref = `${CACHE_DIR}llamaref/`;
  const refThreads = o.threads ?? navigator.hardwareConcurrency;
  const rpc = opts.ref && haveLlamaTools(llamaref)
    ? await LlamaRpcServers.start(llamaref, 3, refThreads)
    : null;
  const refRounds: { single: number; rpc: number }[] = [];
  const ttfts: { one: number; three: number; whole: number; promptTokens: number }[] = [];
  try {
    // Warm-up: JIT, connections, buffers.
    await local.run();
    await one.run();
    await three.run();
    for (let r = 0; r < o.reps; r++) {
      rounds.push({ local: await local.run(), one: await one.run(), three: await three.run() });
      hops.add(await three.hops(), await three.hops(true));
      if (rpc) {
        const b = { pp: 0, tg: o.tokens, threads: refThreads };
        const single = (await rpc.bench(model, { ...b, rpc: false })).tg;
        refRounds.push({ single, rpc: (await rpc.bench(model, { ...b, rpc: true })).tg });
      }
      if (whole) {
        if (r === 0) await Promise.all([one.ttft(), three.ttft(), whole.ttft()]); // warm-up
        const t1 = await one.ttft();
        const t3 = await three.ttft();
        const tw = await whole.ttft();
        ttfts.push({ one: t1.ms, three: t3.ms, whole: tw.ms, promptTokens: t1.promptTokens });
      }
    }
  } finally {
    await local.stop();
    await one.stop();
    await three.stop();
    await whole?.stop();
    await rpc?.stop();
  }
  const bestMs = (k: "one" | "three" | "whole") => Math.min(...ttfts.map((t) => t[k]));
  const best = (k: "local" | "one" | "three") => Math.max(...rounds.map((r) => r[k].tps));
  const same = (a: number[], b: number[]) => a.length === b.length && a.every((x, i) => x === b[i]);
  console.log(JSON.stringify({
    bench: "pipeline",
    model: model.split("/").pop(),
    backend: opts.backend,
    tokens: o.tokens,
    reps: o.reps,
    in_process_decode_tokens_per_second: r3(best("local")),
    one_agent_decode_tokens_per_second: r3(best("one")),
    three_agents_decode_tokens_per_second: r3(best("three")),
    one_agent_vs_in_process: r3(best("one") / best("local")),
    three_vs_one_agent: r3(best("three") / best("one")),
    median_round_one_vs_in_process: r3(median(rounds.map((r) => r.one.tps / r.local.tps))),
    median_round_three_vs_one: r3(median(rounds.map((r) => r.three.tps / r.one.tps))),
    ...hops.json(),
    // Steady tokens give p10 ≈ p50 ≈ p90; tokens held back a pass and sent in pairs, a low p10.
    client_gap_ms_one_agent: gapStats(rounds.map((r) => r.one)),
    client_gap_ms_three_agents: gapStats(rounds.map((r) => r.three)),
    same_ids: rounds.every((r) => same(r.local.ids, r.one.ids) && same(r.one.ids, r.three.ids)),
    rounds: rounds.map((r) => [r3(r.local.tps), r3(r.one.tps), r3(r.three.tps)]),
    stages: three.stages,
    llama_cpp_rpc: refRounds.length
      ? {
        what: "llama-bench over 3 ggml-rpc-servers on loopback against llama-bench alone, " +
          `${refThreads} thread(s) each, decode tok/s`,
        single_process: r3(Math.max(...refRounds.map((r) => r.single))),
        three_servers: r3(Math.max(...refRounds.map((r) => r.rpc))),
        three_vs_single: r3(
          Math.max(...refRounds.map((r) => r.rpc)) / Math.max(...refRounds.map((r) => r.single)),
        ),
        median_round_three_vs_single: r3(median(refRounds.map((r) => r.rpc / r.single))),
        rounds: refRounds.map((r) => [r3(r.single), r3(r.rpc)]),
      }
      : opts.ref
      ? "not run: llama.cpp's tools are not built (sh native/build-llama-tools.sh in " +
        "bench/.cache/llamaref, ~25 min)"
      : "skipped (--no-ref)",
    ...(ttfts.length
      ? {
        prefill_tokens: ttfts[0].promptTokens,
        ttft_ms_one_agent: r3(bestMs("one")),
        ttft_ms_three_agents: r3(bestMs("three")),
        ttft_ms_three_agents_whole_prompt: r3(bestMs("whole")),
        three_pipelined_vs_whole: r3(bestMs("whole") / bestMs("three")),
        median_round_three_pipelined_vs_whole: r3(median(ttfts.map((t) => t.whole / t.three))),
        ttft_rounds: ttfts.map((t) => [r3(t.one), r3(t.three), r3(t.whole)]),
      }
      : {}),
  }));
}
