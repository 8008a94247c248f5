/**
 * `deno task bench scale` — a model no single agent can hold: Llama-3-8B's shape in Q4_0
 * (4.5 GB, the real llama-bpe vocabulary, seeded random weights) split over 3 agents on loopback
 * whose --memory-budget each hold at most 40% of it, plus a standby agent; and two layers of
 * Llama-3-70B's shape (8192 wide) on one agent. Everything is compared with llama.cpp in the
 * same run.
 *
 * ```sh
 * deno task bench scale                          # 8b_q4_0, then 70b_slice_q4_0
 * deno task bench scale --only 8b_q4_0 --rounds 2 --no-rpc
 * ```
 *
 * For 8b_q4_0: agent `a` holds the file, `b` and `c` hold nothing; `models deploy` (from a, to b
 * and c) makes each fetch the header and its layers' tensors, and the agents load their stages.
 * Then:
 *  1. correctness: 2 prompts × (top-5 next-token logits + 16 greedy ids) through the 3 stages,
 *     judged against `ref.mjs eval --kv-type f32 --cpu-variant x64` on the same file by the
 *     fixtures' `check-golden.mjs` (quantized tolerances);
 *  2. speed, `--rounds` rounds, each: llama.cpp's C API (`llamaref-bench --pp 256 --tg 64`, default
 *     CPU variant), ours (a 256-token prompt + 64 greedy tokens through agent a as the head:
 *     time to first token, decode tok/s), and llama.cpp's RPC mode over 3 `ggml-rpc-server`s
 *     (`llama-bench -ngl 99 --rpc …`, when `native/build-llama-tools.sh` has been run in
 *     bench/.cache/llamaref);
 *  3. memory: each agent's peak RSS (VmHWM) against its weights + KV (its own gauge) and the idle
 *     baseline (the standby's RSS before it holds anything);
 *  4. distribution: bytes each agent fetched against its layers' bytes, aggregate MB/s, deploy to
 *     ready seconds;
 *  5. failure: `kill -9` of the middle stage at token 20 of a greedy generation; once gossip
 *     declares it dead, `models deploy` to the standby `b2` (which sorts into b's slot) makes it
 *     fetch b's layers from peers; the generation must finish with the undisturbed run's ids.
 *
 * For 70b_slice_q4_0: check 1 and memory on a single agent.
 *
 * One JSON object per model on stdout; progress (every round) on stderr.
 * @module
 */
import { Flags, runBench, UsageError } from "./lib/cli.ts";
import { ensureLlamaRef } from "./lib/llamaref.ts";
import { SCALE_SHAPES, type ScaleModel, scaleModel } from "./lib/scale_models.ts";
import { type GenerateResult, rssOf, ScaleCluster } from "./lib/scale_cluster.ts";
import { openModelFile } from "../model/engine.ts";
import { agentFootprint } from "../cluster/agent.ts";
import { modelBytes, stageBytes } from "../cluster/placement/mod.ts";
import { tokenizerFromMetadata } from "../model/tokenizer/mod.ts";
import { checkAgainstLlamaCpp, llamaCppEval, SCALE_PROMPTS } from "./lib/scale_check.ts";
import { haveLlamaTools, LlamaRpcServers } from "./lib/llama_rpc.ts";

const log = (s: string) => console.error(`bench scale: ${s}`);
const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
const median = (xs: number[]) => {
  const s = [...xs].filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

interface Options {
  only: ScaleModel[];
  rounds: number;
  threads: number;
  rpc: boolean;
  budgetFraction: number;
}

const CONTEXT = 512;
const SESSIONS = 2;

async function run(cmd: string, args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed (${out.code}):\n${
        new TextDecoder().decode(out.stderr).slice(-2000)
      }`,
    );
  }
  return new TextDecoder().decode(out.stdout);
}

/** A prompt of exactly `n` tokens (BOS included) under the model's tokenizer. */
async function promptOfTokens(model: string, n: number): Promise<string> {
  const file = await openModelFile(model);
  try {
    const tok = tokenizerFromMetadata(file.metadata);
    const words = (
      "the engine loads weights then reads every prompt and predicts one token at a time " +
      "while agents pass activations along a chain of stages over loopback sockets and " +
      "gossip keeps each member informed about who holds which layers of the model"
    ).split(" ");
    let text = "Once upon a time";
    for (let i = 0; tok.encode(text, { addBos: tok.addBos }).length < n; i++) {
      const next = `${text} ${words[i % words.length]}`;
      if (tok.encode(next, { addBos: tok.addBos }).length > n) break;
      text = next;
    }
    const got = tok.encode(text, { addBos: tok.addBos }).length;
    if (got !== n) log(`the long prompt has ${got} tokens (asked for ${n})`);
    return text;
  } finally {
    file.close();
  }
}

/** llama.cpp's C API: prefill of `pp` tokens and `tg` decodes, one timed rep. */
async function llamaCppSpeed(dir: string, model: string, threads: number) {
  const text = await run(`${dir}native/build/llamaref-bench`, [
    ...["--model", model, "--pp", "256", "--tg", "64", "--reps", "1"],
    ...["--threads", String(threads), "--kv-type", "f32"],
  ]);
  const j = JSON.parse(text.slice(text.indexOf("{")));
  return { pp: median(j.pp.runs), tg: median(j.tg.runs) };
}

/** llama.cpp's RPC mode: 3 ggml-rpc-servers on loopback and llama-bench -ngl 99 --rpc. */
async function llamaCppRpc(dir: string, model: string, threads: number) {
  const servers = await LlamaRpcServers.start(dir, 3, threads);
  try {
    return await servers.bench(model, { pp: 256, tg: 64, threads, rpc: true });
  } finally {
    await servers.stop();
  }
}

/** The 8B flow: 3 agents + standby, checks 1–5. */
async function bench8b(o: Options, llamaref: string) {
  const name: ScaleModel = "8b_q4_0";
  const model = await scaleModel(name);
  const fileBytes = (await Deno.stat(model)).size;
  const file = await openModelFile(model);
  let need: number;
  let footprint;
  try {
    footprint = agentFootprint(file, CONTEXT, SESSIONS);
    need = modelBytes(footprint);
  } finally {
    file.close();
  }
  const budget = Math.floor(o.budgetFraction * need);
  log(
    `${name}: ${(fileBytes / 1e9).toFixed(2)} GB file, needs ${(need / 1e9).toFixed(2)} GB ` +
      `(weights + KV); budget per agent ${(budget / 1e9).toFixed(2)} GB (${o.budgetFraction})`,
  );

  // 1 (reference side first: llama.cpp alone on the machine).
  const refs = [];
  for (const p of SCALE_PROMPTS) {
    log(`llama.cpp eval (x64, f32 KV) of prompt ${p.id}…`);
    refs.push(await llamaCppEval(llamaref, model, p.text, 16));
  }

  // BENCH_SCALE_CACHE=DIR keeps the agents' caches there between runs (a rerun's deploy then
  // fetches nothing: for debugging the later checks, not for distribution figures).
  const keep = Deno.env.get("BENCH_SCALE_CACHE");
  const dir = keep ?? await Deno.makeTempDir({ prefix: "dllm-bench-scale-" });
  const c = await ScaleCluster.start({
    model,
    budgetBytes: budget,
    dir,
    keepDir: keep !== undefined,
    gossipPreset: "lan",
    // Prompt chunks of 32 rows: a CPU pass holds the agent's thread between yields for one
    // matmul, and a 128-row gate/up matmul of this model took seconds on a busy 2-core machine.
    extra: ["--batch-size", "32"],
    threads: o.threads,
    contextSize: CONTEXT,
    maxSessions: SESSIONS,
    log,
  });
  try {
    const idle = rssOf(c.agent("b2").child.pid).rss;
    // 4. distribution
    const distribution = await c.deploy(["b", "c"]);
    log(`deployed: ${JSON.stringify(distribution)}`);
    // Peak RSS per phase: deploying (the source serves the others' layers while it loads its
    // own), answering requests, and the failure (the standby's deploy is served again).
    const peaks: Record<string, Record<string, number>> = {};
    let lastMemory: Awaited<ReturnType<ScaleCluster["memory"]>> = {};
    const closePhase = async (phase: string) => {
      lastMemory = await c.memory();
      for (const [id, m] of Object.entries(lastMemory)) (peaks[id] ??= {})[phase] = m.peak;
      c.resetPeaks();
    };
    await closePhase("deploy");
    const info = await c.waitReady(60_000);
    const stages = info.placement!.stages.map((s) => ({
      node: s.nodeId,
      from: s.fromLayer,
      to: s.toLayer,
    }));

    // 1. correctness through the cluster
    const correctness = [];
    for (let i = 0; i < SCALE_PROMPTS.length; i++) {
      const p = SCALE_PROMPTS[i];
      const r = await checkAgainstLlamaCpp(c, model, p, refs[i], 16);
      log(`prompt ${p.id}: ${r.pass ? "PASS" : "FAIL"} ${r.checker.split("\n")[0]}`);
      correctness.push(r);
    }

    // 2. speed, interleaved rounds; 3. memory sampled during our generation
    const long = await promptOfTokens(model, 256);
    const ours: GenerateResult[] = [];
    const ref: { pp: number; tg: number }[] = [];
    const rpc: { pp: number; tg: number }[] = [];
    const haveRpc = o.rpc && haveLlamaTools(llamaref);
    let memDuring: Awaited<ReturnType<ScaleCluster["memory"]>> = {};
    for (let r = 0; r < o.rounds; r++) {
      const lr = await llamaCppSpeed(llamaref, model, o.threads);
      ref.push(lr);
      log(`round ${r + 1} llama.cpp: pp ${lr.pp.toFixed(2)} tg ${lr.tg.toFixed(2)} tok/s`);
      let sampled = false;
      const g = await c.generate(long, 64, {
        onToken: (i) => {
          if (i === 2 && !sampled) {
            sampled = true;
            c.memory().then((m) => (memDuring = m));
          }
        },
      });
      ours.push(g);
      log(
        `round ${
          r + 1
        } ours: ttft ${g.time_to_first_token_ms} ms, decode ${g.decode_tokens_per_second} tok/s (${g.tokens.length} tokens)`,
      );
      if (haveRpc) {
        const rr = await llamaCppRpc(llamaref, model, o.threads).catch((e) => {
          log(`llama.cpp RPC failed: ${(e as Error).message}`);
          return { pp: NaN, tg: NaN };
        });
        rpc.push(rr);
        log(`round ${r + 1} llama.cpp RPC: pp ${rr.pp.toFixed(2)} tg ${rr.tg.toFixed(2)} tok/s`);
      }
    }
    const decode = median(ours.map((g) => g.decode_tokens_per_second));
    const refTg = median(ref.map((x) => x.tg));
    const rpcTg = median(rpc.map((x) => x.tg));
    const speed = {
      threads: o.threads,
      rounds: o.rounds,
      decode_tokens_per_second: round(decode),
      ref_decode_tokens_per_second: round(refTg),
      rpc_decode_tokens_per_second: haveRpc ? round(rpcTg) : null,
      decode_ratio: round(median(ours.map((g, i) => g.decode_tokens_per_second / ref[i].tg))),
      rpc_decode_ratio: haveRpc
        ? round(median(ours.map((g, i) => g.decode_tokens_per_second / rpc[i].tg)))
        : null,
      best_decode_ratio: round(
        Math.max(...ours.map((g) => g.decode_tokens_per_second)) /
          Math.max(...ref.map((x) => x.tg)),
      ),
      time_to_first_token_ms: round(median(ours.map((g) => g.time_to_first_token_ms)), 0),
      ref_time_to_first_token_ms: round(median(ref.map((x) => 256_000 / x.pp)), 0),
      rpc_time_to_first_token_ms: haveRpc ? round(median(rpc.map((x) => 256_000 / x.pp)), 0) : null,
      runs: {
        ours_decode: ours.map((g) => g.decode_tokens_per_second),
        ours_ttft_ms: ours.map((g) => g.time_to_first_token_ms),
        ref_decode: ref.map((x) => round(x.tg)),
        ref_prefill: ref.map((x) => round(x.pp)),
        rpc_decode: rpc.map((x) => round(x.tg)),
        rpc_prefill: rpc.map((x) => round(x.pp)),
      },
      rpc_note: haveRpc
        ? undefined
        : !o.rpc
        ? "skipped (--no-rpc)"
        : "llama.cpp tools not built (native/build-llama-tools.sh)",
    };

    // 5. failure
    log("failure: kill -9 of the middle stage at token 20…");
    const middle = stages[1].node;
    const undisturbed = await c.generate(SCALE_PROMPTS[0].text, 32);
    await closePhase("inference");
    const killed = await c.killDuring(SCALE_PROMPTS[0].text, 32, middle, 20, "b2");
    const failure = {
      victim: middle,
      standby: "b2",
      identical_ids: JSON.stringify(killed.generation.tokens) ===
        JSON.stringify(undisturbed.tokens),
      tokens: killed.generation.tokens.length,
      recoveries: killed.generation.recoveries,
      recovery_seconds: killed.recovery_seconds,
      until_replay_seconds: killed.until_replay_seconds,
      replay_seconds: killed.replay_seconds,
      standby_fetched_bytes: killed.standby_deploy?.bytes_fetched.b2 ?? null,
      standby_needed_bytes: killed.standby_deploy?.bytes_needed.b2 ?? null,
      standby_fetch_MBps: killed.standby_deploy?.aggregate_MBps ?? null,
      standby_deploy_to_ready_seconds: killed.standby_deploy?.deploy_to_ready_seconds ?? null,
      placement_after: killed.standby_deploy?.placement ?? null,
    };
    log(`failure: ${JSON.stringify(failure)}`);

    // 3. memory: peaks over the whole run, and of each phase
    await closePhase("failure");
    const memory: Record<string, unknown> = {};
    for (const s of stages) {
      const m = memDuring[s.node];
      const phase = peaks[s.node] ?? {};
      const peak = Math.max(...Object.values(phase), ...(m ? [m.peak] : []));
      const share = stageBytes(footprint, s.from, s.to);
      const weightsKv = (m?.weights ?? NaN) + (m?.kv ?? NaN);
      const limit = 1.15 * weightsKv + idle;
      memory[s.node] = {
        layers: `[${s.from},${s.to})`,
        rss_bytes: m?.rss ?? null,
        peak_rss_bytes: peak,
        peak_rss_by_phase_bytes: phase,
        within_limit_by_phase: Object.fromEntries(
          Object.entries(phase).map(([k, v]) => [k, v <= limit]),
        ),
        weights_bytes: m?.weights ?? null,
        kv_bytes: m?.kv ?? null,
        planned_share_bytes: share,
        limit_bytes: Math.round(limit),
        within_limit: peak <= limit,
        holds_whole_file: peak >= fileBytes,
      };
    }
    // The standby, which holds the lost stage's layers after the failure.
    const sb = lastMemory.b2;
    if (sb) {
      // Its KV as held during the resumed generation (like the stages' during theirs); by now
      // the session is closed and the gauge reads 0.
      sb.kv = killed.memory_after_recovery?.b2?.kv ?? sb.kv;
      const limit = 1.15 * (sb.weights + sb.kv) + idle;
      memory.b2 = {
        layers: failure.placement_after?.find((p: string) => p.startsWith("b2:"))?.slice(3) ?? null,
        rss_bytes: sb.rss,
        peak_rss_bytes: sb.peak,
        weights_bytes: sb.weights,
        kv_bytes: sb.kv,
        limit_bytes: Math.round(limit),
        within_limit: sb.peak <= limit,
        holds_whole_file: sb.peak >= fileBytes,
      };
    }
    return {
      bench: "scale",
      model: name,
      file_bytes: fileBytes,
      shape: SCALE_SHAPES[name],
      agents: 3,
      standby: 1,
      budget_bytes: budget,
      budget_fraction_of_model: round(budget / need),
      need_bytes: need,
      placement: stages.map((s) => `${s.node}:[${s.from},${s.to})`),
      correctness: {
        pass: correctness.every((r) => r.pass),
        prompts: correctness.map((r) => ({ ...r, checker: r.checker.split("\n").slice(0, 3) })),
      },
      speed,
      memory: { idle_baseline_rss_bytes: idle, agents: memory },
      distribution: {
        ...distribution,
        only_own_layers: Object.entries(distribution.bytes_fetched).every(([n, b]) =>
          b <= (distribution.bytes_needed[n] ?? 0)
        ),
      },
      failure,
      calibration_gflops: c.calibration,
      load_avg: Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).map(Number),
    };
  } finally {
    await c.stop();
  }
}

/** The 70B slice on one agent: check 1 and memory. */
async function bench70bSlice(o: Options, llamaref: string) {
  const name: ScaleModel = "70b_slice_q4_0";
  const model = await scaleModel(name);
  const fileBytes = (await Deno.stat(model)).size;
  const refs = [];
  for (const p of SCALE_PROMPTS) {
    log(`${name}: llama.cpp eval (x64, f32 KV) of prompt ${p.id}…`);
    refs.push(await llamaCppEval(llamaref, model, p.text, 16));
  }
  const dir = await Deno.makeTempDir({ prefix: "dllm-bench-scale70-" });
  const c = await ScaleCluster.start({
    model,
    budgetBytes: Math.ceil(fileBytes * 1.5),
    dir,
    ids: ["a"],
    standby: ["idle"],
    threads: o.threads,
    contextSize: CONTEXT,
    maxSessions: SESSIONS,
    log,
  });
  try {
    const idle = rssOf(c.agent("idle").child.pid).rss;
    const t0 = performance.now();
    await c.waitReady(600_000);
    const loadSeconds = (performance.now() - t0) / 1000;
    const correctness = [];
    let memDuring: Awaited<ReturnType<ScaleCluster["memory"]>> = {};
    for (let i = 0; i < SCALE_PROMPTS.length; i++) {
      const p = SCALE_PROMPTS[i];
      const r = await checkAgainstLlamaCpp(c, model, p, refs[i], 16);
      log(`${name} prompt ${p.id}: ${r.pass ? "PASS" : "FAIL"} ${r.checker.split("\n")[0]}`);
      correctness.push(r);
    }
    let sampled = false;
    await c.generate(SCALE_PROMPTS[1].text, 8, {
      onToken: (i) => {
        if (i === 2 && !sampled) {
          sampled = true;
          c.memory().then((m) => (memDuring = m));
        }
      },
    });
    const after = await c.memory();
    const m = memDuring.a;
    const weightsKv = (m?.weights ?? NaN) + (m?.kv ?? NaN);
    return {
      bench: "scale",
      model: name,
      file_bytes: fileBytes,
      shape: SCALE_SHAPES[name],
      agents: 1,
      load_seconds: round(loadSeconds, 1),
      correctness: {
        pass: correctness.every((r) => r.pass),
        prompts: correctness.map((r) => ({ ...r, checker: r.checker.split("\n").slice(0, 3) })),
      },
      memory: {
        idle_baseline_rss_bytes: idle,
        rss_bytes: m?.rss ?? null,
        peak_rss_bytes: after.a?.peak ?? null,
        weights_bytes: m?.weights ?? null,
        kv_bytes: m?.kv ?? null,
        limit_bytes: Math.round(1.15 * weightsKv + idle),
        within_limit: (after.a?.peak ?? Infinity) <= 1.15 * weightsKv + idle,
      },
    };
  } finally {
    await c.stop();
  }
}

const USAGE = `usage: deno task bench scale [--only 8b_q4_0|70b_slice_q4_0[,…]] [--rounds N (2)]
  [--threads N (all cores)] [--no-rpc] [--budget-fraction F (0.4)]
8b_q4_0 (Llama-3-8B shape, Q4_0, 4.5 GB) over 3 agents with at most 40% of the model each plus
a standby: correctness against llama.cpp, decode and TTFT against llama.cpp (C API and RPC
mode), memory, distribution, kill -9 recovery; 70b_slice_q4_0 (2 layers of Llama-3-70B) on one
agent: correctness and memory. One JSON object per model on stdout, progress on stderr.`;

/** CLI entry. */
export async function main(args: string[]): Promise<void> {
  const o: Options = {
    only: ["8b_q4_0", "70b_slice_q4_0"],
    rounds: 2,
    threads: navigator.hardwareConcurrency,
    rpc: true,
    budgetFraction: 0.4,
  };
  const flags = new Flags(args);
  for (let a = flags.next(); a !== undefined; a = flags.next()) {
    if (a === "--only") {
      o.only = flags.value().split(",") as ScaleModel[];
      for (const m of o.only) {
        if (m !== "8b_q4_0" && m !== "70b_slice_q4_0") {
          throw new UsageError(`--only ${m}: choose 8b_q4_0 or 70b_slice_q4_0`);
        }
      }
    } else if (a === "--rounds") o.rounds = flags.count();
    else if (a === "--threads") o.threads = flags.count();
    else if (a === "--no-rpc") o.rpc = false;
    else if (a === "--budget-fraction") o.budgetFraction = Number(flags.value());
    else throw new UsageError(`unknown flag ${a}`);
  }
  const llamaref = await ensureLlamaRef();
  for (const m of o.only) {
    try {
      const r = m === "8b_q4_0" ? await bench8b(o, llamaref) : await bench70bSlice(o, llamaref);
      console.log(JSON.stringify(r));
    } catch (e) {
      log(`${m} failed: ${(e as Error).stack}`);
      throw e;
    }
  }
}

if (import.meta.main) await runBench("scale", USAGE, main);
