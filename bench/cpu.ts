/**
 * CPU benchmark: our WASM backend against llama.cpp's C API on the same GGUF file, threads and run.
 *
 * ```sh
 * deno task bench cpu --generate all                 # 110M Q8_0/Q4_0/Q4_K mix, 1.1B Q8_0/Q4_0/Q4_K_M
 * deno task bench cpu --model path/to/model.gguf --threads 2 --reps 3 --profile
 * ```
 *
 * The reference is `llamaref-bench` (../shared/llamaref/native/bench.cpp): one `llama_decode` of
 * `--pp` tokens, then `--tg` single-token decodes, f32 KV, flash attention off, the best CPU
 * variant for the machine, no JavaScript in the loop. It is built once into bench/.cache/llamaref
 * (`npm ci` for node-llama-cpp's prebuilt llama.cpp, then `sh native/build.sh`). Its decodes start
 * from an empty cache (llama-bench's way), so ours are timed that way for the ratios, and once more
 * after the prompt (`decode_after_prompt_tokens_per_second`: what a `--pp`-token context costs),
 * against llama.cpp's after the prompt from `llamaref-batched` (bench/native/batched.cpp) with one
 * sequence. Until 2026-12-06 the decode ratios set ours after the prompt against llamaref-bench's
 * from an empty cache.
 *
 * Each model runs in its own child process. Our stage is loaded once; then each of `--reps` rounds
 * runs llama.cpp (its own process, one timed rep after its warm-up), right after it our prefill +
 * decode with all threads, and then ours with 1 thread (`threads_scaling`). Shared machines drift
 * and llama.cpp's spinning threads collapse when a neighbour takes a core, so every run is printed
 * (stderr as it happens, `runs` in the JSON) and the ratios are given both as the median of the
 * per-round ratios and as best round against best round (each engine's undisturbed speed).
 *
 * Also printed, so the roofline is on the page: a memory-bandwidth probe (streaming reads of wasm
 * memory by the same threads, and a native memcpy-class copy), and the weight bytes both engines
 * stream per second while decoding. `--profile` adds the per-op time of one prefill and of one
 * decode step (kernels/profile.ts). Flags: `--pp N`, `--tg N`, `--kv f32|f16`, `--no-ref`,
 * `--no-scaling`, `--backend wasm|reference`.
 * @module
 */
import { Flags, runBench, UsageError } from "./lib/cli.ts";
import type { Backend, KVType } from "../kernels/backend.ts";
import { createReferenceBackend } from "../kernels/reference/mod.ts";
import { createWasmBackend, type WasmBackend } from "../kernels/wasm/mod.ts";
import { type OpTime, profileBackend } from "../kernels/profile.ts";
import { openGGUF } from "../model/gguf/mod.ts";
import { LlamaStage, type Session, type StageOutput } from "../model/llama.ts";
import { argmax } from "../model/sampler.ts";
import { GENERATED, GENERATED_LARGE, type GeneratedModel, generatedModel } from "./lib/models.ts";
import { ensureLlamaRef, LLAMAREF_BENCH, run } from "./lib/llamaref.ts";
import { ensureBatchedRef, refBatchedDecode } from "./lib/batched_ref.ts";
import { median, round } from "./lib/stats.ts";

/** Options of one CPU bench run. */
export interface CpuBenchOptions {
  model: string;
  threads: number;
  reps: number;
  pp: number;
  tg: number;
  kv: KVType;
  ref: boolean;
  scaling: boolean;
  profile: boolean;
  backend: "wasm" | "reference";
  /** WASM: Q8_0 weights against the activation's P/N planes, not the biased activation. */
  q8Planes?: boolean;
}

/** Per-op time of one pass, from kernels/profile.ts. */
export interface PassProfile {
  /** Wall time of the pass (one decode step, or the whole prefill). */
  ms: number;
  /** Time not inside any backend op (JS between ops, reads of results). */
  other_ms: number;
  ops: { op: string; ms: number; calls: number }[];
  /**
   * WASM: times per pass a worker slept between jobs (each wake costs ~0.1 ms here; see
   * WasmBackend.spinMicros).
   */
  worker_sleeps?: number;
}

/** The JSON line the bench prints per model. */
export interface CpuBenchResult {
  model: string;
  backend: string;
  /** WASM: the activation form Q8_0 weights were multiplied with (WasmBackendOptions.biasedQ8). */
  q8_activation?: "biased" | "planes";
  threads: number;
  ref: "llama.cpp C API" | null;
  /** Medians over rounds. */
  prefill_tokens_per_second: number;
  /** Decode from an empty cache, as llamaref-bench's (the ratios compare these). */
  decode_tokens_per_second: number;
  /** Decode continuing after the `n_prompt`-token prompt: what a context of that length costs. */
  decode_after_prompt_tokens_per_second: number;
  /** llama.cpp's, by llamaref-batched with one sequence (f32 KV only; else null). */
  ref_decode_after_prompt_tokens_per_second: number | null;
  /** Median of the per-round ratios of those two. */
  decode_after_prompt_ratio: number | null;
  ref_prefill_tokens_per_second: number | null;
  ref_decode_tokens_per_second: number | null;
  /** Median of the per-round ratios (ours / llama.cpp, same round). */
  decode_ratio: number | null;
  prefill_ratio: number | null;
  /** Best round against best round. */
  best: {
    prefill: number;
    decode: number;
    ref_prefill: number | null;
    ref_decode: number | null;
    prefill_ratio: number | null;
    decode_ratio: number | null;
  };
  /** Best all-threads round over best 1-thread round (null with 1 thread or --no-scaling). */
  threads_scaling: { prefill: number; decode: number } | null;
  /** Weight bytes streamed per second while decoding (best rounds). */
  weights_gb_per_s: number;
  ref_weights_gb_per_s: number | null;
  /** Streaming reads of wasm memory by the bench's threads (wasm backend only). */
  bandwidth_probe_gb_per_s: number | null;
  /** A native memcpy-class copy (TypedArray.set), bytes read + written per second. */
  native_copy_gb_per_s: number;
  rss_bytes: number;
  /** RSS before the model was loaded (Deno runtime, workers, compiled kernels). */
  rss_baseline_bytes: number;
  weights_bytes: number;
  kv_bytes: number;
  /** rss / (weights + KV): the whole process against the model's own bytes. */
  rss_ratio: number;
  /** (rss − baseline) / (weights + KV): what loading and serving the model added. */
  rss_model_ratio: number;
  runs: {
    prefill: number[];
    decode: number[];
    decode_after_prompt: number[];
    ref_decode_after_prompt: number[];
    ref_prefill: number[];
    ref_decode: number[];
    prefill_1_thread: number[];
    decode_1_thread: number[];
  };
  profile?: { prefill: PassProfile; decode_step: PassProfile };
  kv_type: KVType;
  n_prompt: number;
  n_decode: number;
  /** 1-minute load average before and after (other tenants make shared machines drift). */
  load_avg: [number, number] | null;
}

function loadAvg(): number | null {
  try {
    return Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]);
  } catch {
    return null;
  }
}

/** llama.cpp's prefill/decode tokens/s on `model`: one timed rep of llamaref-bench. */
export async function llamaCppBench(
  model: string,
  o: Pick<CpuBenchOptions, "threads" | "pp" | "tg" | "kv">,
): Promise<{ pp: number; tg: number }> {
  const text = await run(LLAMAREF_BENCH, [
    "--model",
    model,
    "--pp",
    String(o.pp),
    "--tg",
    String(o.tg),
    "--reps",
    "1",
    "--threads",
    String(o.threads),
    "--kv-type",
    o.kv,
  ]);
  const j = JSON.parse(text.slice(text.indexOf("{")));
  return { pp: median(j.pp.runs), tg: median(j.tg.runs) };
}

/** A native memcpy-class copy of 256 MiB: bytes read + written per second (best of 3). */
function nativeCopyGBs(): number {
  const n = 256 << 20;
  const src = new Uint8Array(n).fill(7);
  const dst = new Uint8Array(n).fill(1);
  let best = 0;
  for (let r = 0; r < 3; r++) {
    const t0 = performance.now();
    dst.set(src);
    best = Math.max(best, (2 * n) / ((performance.now() - t0) * 1e6));
  }
  return best;
}

function passProfile(ops: OpTime[], ms: number, steps: number): PassProfile {
  const inOps = ops.reduce((s, o) => s + o.ms, 0);
  return {
    ms: round(ms / steps, 3),
    other_ms: round((ms - inOps) / steps, 3),
    ops: ops.map((o) => ({
      op: o.op,
      ms: round(o.ms / steps, 3),
      calls: Math.round(o.calls / steps),
    })),
  };
}

/** One full comparison on one model (see the module doc for the round structure). */
export async function cpuBench(o: CpuBenchOptions): Promise<CpuBenchResult> {
  const wasm: WasmBackend | undefined = o.backend === "wasm"
    ? await createWasmBackend({ threads: o.threads, ...(o.q8Planes ? { biasedQ8: false } : {}) })
    : undefined;
  const inner: Backend = wasm ?? createReferenceBackend();
  // The profiler wraps the backend for the whole run but times calls only while enabled.
  const prof = profileBackend(inner);
  prof.enabled = false;
  const baseline = Deno.memoryUsage().rss;
  const load0 = loadAvg();
  const file = await openGGUF(o.model);
  let stage: LlamaStage;
  let weights = 0;
  try {
    stage = await LlamaStage.load(file, prof.backend, {
      maxBatch: o.pp,
      onTensor: (_n, bytes) => (weights += bytes),
    });
  } finally {
    file.close();
  }
  // Settle the heap before measuring (the child process runs with --expose-gc).
  (globalThis as { gc?: () => void }).gc?.();
  const V = stage.config.nVocab;
  const nCtx = o.pp + o.tg;
  let seed = 12345;
  const prompt = Int32Array.from({ length: o.pp }, () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return 1 + (seed % (V - 1));
  });
  // the reference for decode after the prompt (f32 KV only: llamaref-batched's default)
  const afterRef = o.ref && o.kv === "f32" ? await ensureBatchedRef() : undefined;
  const runs: CpuBenchResult["runs"] = {
    prefill: [],
    decode: [],
    decode_after_prompt: [],
    ref_decode_after_prompt: [],
    ref_prefill: [],
    ref_decode: [],
    prefill_1_thread: [],
    decode_1_thread: [],
  };
  let rss = 0;
  let kvBytes = 0;
  /** `steps` greedy decodes after `out` in `session`; tokens/s. */
  const decode = async (session: Session, out: StageOutput, steps: number): Promise<number> => {
    const t0 = performance.now();
    for (let i = 0; i < steps; i++) {
      if (!("logits" in out)) throw new Error("expected logits");
      out = await stage.forward(session, { tokens: Int32Array.of(argmax(out.logits)) });
    }
    return (steps / (performance.now() - t0)) * 1000;
  };
  /**
   * Prefill, then `steps` decodes twice, tokens/s of each: `tg` as llamaref-bench decodes (its
   * run_tg clears the cache and starts from the prompt's first token at position 0), the one
   * compared with llama.cpp's; `tgAfter` continuing after the prompt, at positions pp.., which is
   * what a long context costs (llamaref-bench has no such run to compare it with).
   */
  const ours = async (steps: number): Promise<{ pp: number; tg: number; tgAfter: number }> => {
    const session = stage.newSession(nCtx, o.kv);
    kvBytes = session.kv.nLayers * session.kv.nCtx * session.kv.kvDim * 2 *
      (o.kv === "f16" ? 2 : 4);
    let pp: number, tgAfter: number;
    try {
      const t0 = performance.now();
      const out = await stage.forward(session, { tokens: prompt });
      pp = (o.pp / (performance.now() - t0)) * 1000;
      tgAfter = await decode(session, out, steps);
    } finally {
      stage.endSession(session);
    }
    const fresh = stage.newSession(nCtx, o.kv);
    try {
      const out = await stage.forward(fresh, { tokens: prompt.subarray(0, 1) });
      const tg = await decode(fresh, out, steps);
      rss = Math.max(rss, Deno.memoryUsage().rss);
      return { pp, tg, tgAfter };
    } finally {
      stage.endSession(fresh);
    }
  };
  const scaling = o.scaling && wasm !== undefined && wasm.threads > 1;
  const name = o.model.split("/").pop();
  let profile: CpuBenchResult["profile"];
  let probe: number | null = null;
  try {
    await ours(4); // warm-up: kernels compiled, pages touched
    for (let rep = 0; rep < o.reps; rep++) {
      const line: string[] = [`bench cpu ${name} round ${rep + 1}/${o.reps}:`];
      if (o.ref) {
        const r = await llamaCppBench(o.model, o);
        runs.ref_prefill.push(r.pp);
        runs.ref_decode.push(r.tg);
        // llama.cpp's decode after the prompt: llamaref-batched with one sequence (its prompt
        // decoded untimed, then the timed steps), f32 KV as ours here
        const after = afterRef
          ? (await refBatchedDecode(afterRef, o.model, {
            seqs: [1],
            prompt: o.pp,
            tg: o.tg,
            threads: o.threads,
          })).get(1)!
          : NaN;
        if (afterRef) runs.ref_decode_after_prompt.push(after);
        line.push(
          `llama.cpp pp ${round(r.pp, 1)} tg ${round(r.tg, 1)}` +
            (afterRef ? ` (after the prompt ${round(after, 1)})` : ""),
        );
      }
      const r = await ours(o.tg);
      runs.prefill.push(r.pp);
      runs.decode.push(r.tg);
      runs.decode_after_prompt.push(r.tgAfter);
      line.push(
        `ours pp ${round(r.pp, 1)} tg ${round(r.tg, 1)} (after the prompt ${round(r.tgAfter, 1)})`,
      );
      if (scaling) {
        wasm!.setThreads(1);
        try {
          const r1 = await ours(o.tg);
          runs.prefill_1_thread.push(r1.pp);
          runs.decode_1_thread.push(r1.tg);
          line.push(`ours 1 thread pp ${round(r1.pp, 1)} tg ${round(r1.tg, 1)}`);
        } finally {
          wasm!.setThreads(wasm!.threads);
        }
      }
      console.error(line.join(" | "));
    }
    if (o.profile) {
      const session = stage.newSession(nCtx, o.kv);
      try {
        prof.reset();
        prof.enabled = true;
        const sleeps = () => wasm?.workerSleeps ?? 0;
        let s0 = sleeps();
        let t0 = performance.now();
        let out = await stage.forward(session, { tokens: prompt });
        const prefill = passProfile(prof.report(), performance.now() - t0, 1);
        if (wasm) prefill.worker_sleeps = sleeps() - s0;
        const steps = Math.min(16, o.tg);
        prof.reset();
        s0 = sleeps();
        t0 = performance.now();
        for (let i = 0; i < steps; i++) {
          if (!("logits" in out)) throw new Error("expected logits");
          out = await stage.forward(session, { tokens: Int32Array.of(argmax(out.logits)) });
        }
        const decodeStep = passProfile(prof.report(), performance.now() - t0, steps);
        if (wasm) decodeStep.worker_sleeps = round((sleeps() - s0) / steps, 1);
        profile = { prefill, decode_step: decodeStep };
      } finally {
        prof.enabled = false;
        stage.endSession(session);
      }
    }
    if (wasm) probe = wasm.probeReadBandwidth(512 << 20);
  } finally {
    inner.dispose();
  }
  const nativeCopy = nativeCopyGBs();
  const ratios = (a: number[], b: number[]) => a.map((x, i) => x / b[i]);
  const best = (xs: number[]) => Math.max(...xs);
  const refBest = (xs: number[]) => (o.ref ? round(best(xs)) : null);
  const bestRatio = (a: number[], b: number[]) => (o.ref ? round(best(a) / best(b), 3) : null);
  return {
    model: o.model,
    backend: o.backend,
    ...(wasm ? { q8_activation: wasm.biasedQ8 ? "biased" as const : "planes" as const } : {}),
    threads: o.threads,
    ref: o.ref ? "llama.cpp C API" : null,
    prefill_tokens_per_second: round(median(runs.prefill)),
    decode_tokens_per_second: round(median(runs.decode)),
    decode_after_prompt_tokens_per_second: round(median(runs.decode_after_prompt)),
    ref_decode_after_prompt_tokens_per_second: afterRef
      ? round(median(runs.ref_decode_after_prompt))
      : null,
    decode_after_prompt_ratio: afterRef
      ? round(median(ratios(runs.decode_after_prompt, runs.ref_decode_after_prompt)), 3)
      : null,
    ref_prefill_tokens_per_second: o.ref ? round(median(runs.ref_prefill)) : null,
    ref_decode_tokens_per_second: o.ref ? round(median(runs.ref_decode)) : null,
    decode_ratio: o.ref ? round(median(ratios(runs.decode, runs.ref_decode)), 3) : null,
    prefill_ratio: o.ref ? round(median(ratios(runs.prefill, runs.ref_prefill)), 3) : null,
    best: {
      prefill: round(best(runs.prefill)),
      decode: round(best(runs.decode)),
      ref_prefill: refBest(runs.ref_prefill),
      ref_decode: refBest(runs.ref_decode),
      prefill_ratio: bestRatio(runs.prefill, runs.ref_prefill),
      decode_ratio: bestRatio(runs.decode, runs.ref_decode),
    },
    threads_scaling: scaling
      ? {
        prefill: round(best(runs.prefill) / best(runs.prefill_1_thread), 3),
        decode: round(best(runs.decode) / best(runs.decode_1_thread), 3),
      }
      : null,
    weights_gb_per_s: round((weights * best(runs.decode)) / 1e9),
    ref_weights_gb_per_s: o.ref ? round((weights * best(runs.ref_decode)) / 1e9) : null,
    bandwidth_probe_gb_per_s: probe === null ? null : round(probe),
    native_copy_gb_per_s: round(nativeCopy),
    rss_bytes: rss,
    rss_baseline_bytes: baseline,
    weights_bytes: weights,
    kv_bytes: kvBytes,
    rss_ratio: round(rss / (weights + kvBytes), 3),
    rss_model_ratio: round((rss - baseline) / (weights + kvBytes), 3),
    runs: Object.fromEntries(
      Object.entries(runs).map(([k, v]) => [k, v.map((x) => round(x))]),
    ) as CpuBenchResult["runs"],
    ...(profile ? { profile } : {}),
    kv_type: o.kv,
    n_prompt: o.pp,
    n_decode: o.tg,
    load_avg: load0 === null ? null : [load0, loadAvg() ?? NaN],
  };
}

/** Every model `--generate` knows, in the order `all` runs them. */
const CPU_MODELS = [...GENERATED, ...GENERATED_LARGE] as readonly GeneratedModel[];

function parseArgs(
  args: string[],
): {
  models: string[];
  generate: GeneratedModel[];
  o: Omit<CpuBenchOptions, "model">;
  child: boolean;
} {
  const o: Omit<CpuBenchOptions, "model"> = {
    threads: navigator.hardwareConcurrency,
    reps: 3,
    pp: 128,
    tg: 128,
    kv: "f32",
    ref: true,
    scaling: true,
    profile: false,
    backend: "wasm",
  };
  const models: string[] = [];
  const generate: GeneratedModel[] = [];
  let child = false;
  const flags = new Flags(args);
  for (let a = flags.next(); a !== undefined; a = flags.next()) {
    if (a === "--model") models.push(flags.value());
    else if (a === "--generate") {
      for (const g of flags.value().split(",")) {
        if (g === "all") generate.push(...CPU_MODELS);
        else if ((CPU_MODELS as readonly string[]).includes(g)) generate.push(g as GeneratedModel);
        else throw new UsageError(`--generate ${g}: choose from ${CPU_MODELS.join(", ")}, all`);
      }
    } else if (a === "--threads") o.threads = flags.count();
    else if (a === "--reps") o.reps = flags.count();
    else if (a === "--pp") o.pp = flags.count();
    else if (a === "--tg") o.tg = flags.count();
    else if (a === "--kv") {
      const v = flags.value();
      if (v !== "f16" && v !== "f32") throw new UsageError("--kv takes f16 or f32");
      o.kv = v;
    } else if (a === "--no-ref") o.ref = false;
    else if (a === "--no-scaling") o.scaling = false;
    else if (a === "--profile") o.profile = true;
    else if (a === "--q8-planes") o.q8Planes = true;
    else if (a === "--child") child = true;
    else if (a === "--backend") {
      const v = flags.value();
      if (v !== "wasm" && v !== "reference") {
        throw new UsageError("--backend takes wasm or reference");
      }
      o.backend = v;
    } else throw new UsageError(`unknown flag ${a} (see --help)`);
  }
  if (!models.length && !generate.length) {
    throw new UsageError(`give --model FILE or --generate ${CPU_MODELS.join("|")}|all`);
  }
  return { models, generate, o, child };
}

/** CLI entry: `deno run -A bench/cpu.ts …` (also reachable as `deno task bench cpu …`). */
export async function main(args: string[]): Promise<void> {
  const { models, generate, o, child } = parseArgs(args);
  for (const g of generate) models.push(await generatedModel(g));
  if (child) {
    console.log(JSON.stringify(await cpuBench({ ...o, model: models[0] })));
    return;
  }
  if (o.ref) await ensureLlamaRef();
  // One process per model, so each RSS figure holds that model alone.
  const rest = args.filter((_, i) => !isModelArg(args, i));
  for (const model of models) {
    const r = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--v8-flags=--expose-gc",
        import.meta.filename!,
        "--child",
        "--model",
        model,
        ...rest,
      ],
      stdout: "inherit",
      stderr: "inherit",
    }).output();
    if (!r.success) throw new Error(`bench of ${model} failed`);
  }
}

function isModelArg(args: string[], i: number): boolean {
  const a = args[i];
  const prev = args[i - 1];
  return a === "--model" || a === "--generate" || prev === "--model" || prev === "--generate";
}

const USAGE = `usage: deno task bench cpu (--generate ${
  CPU_MODELS.join("|")
}|all | --model FILE.gguf)…
  [--threads N (default: all cores)] [--reps N (3)] [--pp N (128)] [--tg N (128)]
  [--kv f32|f16 (f32)] [--no-ref] [--no-scaling] [--profile] [--backend wasm|reference]
  [--q8-planes (Q8_0 against the activation's P/N planes, not the biased kernel)]
Prints one JSON object per model: our and llama.cpp's (C API, llamaref-bench) prefill/decode
tokens/s, ratios (median of rounds and best against best), 1 vs N threads, weight GB/s against a
bandwidth probe, RSS against weights + KV bytes, and with --profile the per-op time of a pass.
Every round is printed on stderr as it runs.`;

if (import.meta.main) await runBench("cpu", USAGE, main);
