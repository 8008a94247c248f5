/**
 * CPU benchmark: our WASM backend against llama.cpp on the same GGUF file, threads and run.
 *
 * ```sh
 * deno run -A bench/cpu.ts --generate q8_0            # or q4_0, q4k_mix, all
 * deno run -A bench/cpu.ts --model path/to/model.gguf --threads 2 --reps 3
 * ```
 *
 * Prints one JSON object per model: prefill (128-token prompt in one pass) and decode (128 single
 * tokens) tokens/s for us and for llama.cpp (node-llama-cpp 3.21.1, `ref.mjs bench`, installed
 * once into bench/.cache/llamaref), their ratios (median of `--reps` interleaved rounds), and the
 * process RSS while serving against weights + KV cache bytes. Each model runs in its own child
 * process (`--child`, with `--expose-gc`, see main()). The serving agent's own memory is measured
 * by `bench/memory.ts`. Flags: `--pp N`, `--tg N`, `--kv f32|f16`
 * (KV cache type of both engines; default f32, our engine's default), `--no-ref` (skip
 * llama.cpp), `--backend wasm|reference`.
 * @module
 */
import { Flags, runBench, UsageError } from "./lib/cli.ts";
import type { Backend, KVType } from "../kernels/backend.ts";
import { createReferenceBackend } from "../kernels/reference/mod.ts";
import { createWasmBackend } from "../kernels/wasm/mod.ts";
import { openGGUF } from "../model/gguf/mod.ts";
import { LlamaStage } from "../model/llama.ts";
import { argmax } from "../model/sampler.ts";
import { CACHE_DIR, GENERATED, type GeneratedModel, generatedModel } from "./lib/models.ts";

/** Options of one CPU bench run. */
export interface CpuBenchOptions {
  model: string;
  threads: number;
  reps: number;
  pp: number;
  tg: number;
  kv: KVType;
  ref: boolean;
  backend: "wasm" | "reference";
}

/** The JSON line the bench prints per model. */
export interface CpuBenchResult {
  model: string;
  backend: string;
  threads: number;
  prefill_tokens_per_second: number;
  decode_tokens_per_second: number;
  ref_prefill_tokens_per_second: number | null;
  ref_decode_tokens_per_second: number | null;
  decode_ratio: number | null;
  prefill_ratio: number | null;
  rss_bytes: number;
  /** RSS before the model was loaded (Deno runtime, workers, compiled kernels). */
  rss_baseline_bytes: number;
  weights_bytes: number;
  kv_bytes: number;
  /** rss / (weights + KV): the whole process against the model's own bytes. */
  rss_ratio: number;
  /** (rss − baseline) / (weights + KV): what loading and serving the model added. */
  rss_model_ratio: number;
  runs: { prefill: number[]; decode: number[]; ref_prefill: number[]; ref_decode: number[] };
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

const LLAMAREF_SRC = decodeURIComponent(
  new URL("../../shared/llamaref/", import.meta.url).pathname,
);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

async function run(cmd: string, args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed (${out.code}):\n${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return text;
}

/** Copy ../shared/llamaref to bench/.cache/llamaref and `npm ci` there (once). */
export async function ensureLlamaRef(): Promise<string> {
  const dir = `${CACHE_DIR}llamaref/`;
  try {
    await Deno.stat(`${dir}node_modules/node-llama-cpp/package.json`);
    return dir;
  } catch {
    // install below
  }
  await Deno.mkdir(CACHE_DIR, { recursive: true });
  await run("cp", ["-r", LLAMAREF_SRC.replace(/\/$/, ""), CACHE_DIR]);
  await run("chmod", ["-R", "u+w", dir]);
  console.error("bench: installing node-llama-cpp 3.21.1 into bench/.cache/llamaref (npm ci)…");
  await run("npm", ["ci", "--no-audit", "--no-fund"], dir);
  return dir;
}

/** llama.cpp's prefill/decode tokens/s on `model` (mean of ref.mjs's timed reps). */
export async function llamaCppBench(
  model: string,
  o: Pick<CpuBenchOptions, "threads" | "reps" | "pp" | "tg" | "kv">,
): Promise<{ pp: number; tg: number }> {
  const dir = await ensureLlamaRef();
  const text = await run("node", [
    "ref.mjs",
    "bench",
    "--model",
    model,
    "--pp",
    String(o.pp),
    "--tg",
    String(o.tg),
    "--reps",
    String(o.reps),
    "--threads",
    String(o.threads),
    "--kv-type",
    o.kv,
  ], dir);
  const j = JSON.parse(text.slice(text.indexOf("{")));
  const pick = (x: { tokens_per_s: { mean: number; runs?: number[] } }) =>
    x.tokens_per_s.runs?.length ? median(x.tokens_per_s.runs) : x.tokens_per_s.mean;
  return { pp: pick(j.pp), tg: pick(j.tg) };
}

/**
 * One full comparison on one model. Our stage is loaded once; then each of `reps` rounds runs
 * llama.cpp (its own process, 1 timed rep after its warm-up) and right after it our prefill +
 * decode, so each ratio compares two measurements taken under the same machine load (shared
 * machines drift by 2× within minutes). Reported speeds are medians over rounds; ratios are the
 * medians of the per-round ratios.
 */
export async function cpuBench(o: CpuBenchOptions): Promise<CpuBenchResult> {
  const backend: Backend = o.backend === "wasm"
    ? await createWasmBackend({ threads: o.threads })
    : createReferenceBackend();
  const baseline = Deno.memoryUsage().rss;
  const load0 = loadAvg();
  const file = await openGGUF(o.model);
  let stage: LlamaStage;
  let weights = 0;
  try {
    stage = await LlamaStage.load(file, backend, {
      maxBatch: o.pp,
      onTensor: (_n, bytes) => (weights += bytes),
    });
  } finally {
    file.close();
  }
  // Settle the heap before measuring (the child process runs with --expose-gc); weights were
  // streamed into the backend, so there are no tensor-sized buffers left to collect.
  (globalThis as { gc?: () => void }).gc?.();
  const V = stage.config.nVocab;
  const nCtx = o.pp + o.tg;
  let seed = 12345;
  const prompt = Int32Array.from({ length: o.pp }, () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return 1 + (seed % (V - 1));
  });
  const prefill: number[] = [];
  const decode: number[] = [];
  const refPrefill: number[] = [];
  const refDecode: number[] = [];
  let rss = 0;
  let kvBytes = 0;
  try {
    for (let rep = -1; rep < o.reps; rep++) {
      if (rep >= 0 && o.ref) {
        const r = await llamaCppBench(o.model, { ...o, reps: 1 });
        refPrefill.push(r.pp);
        refDecode.push(r.tg);
      }
      const session = stage.newSession(nCtx, o.kv);
      kvBytes = session.kv.nLayers * session.kv.nCtx * session.kv.kvDim * 2 *
        (o.kv === "f16" ? 2 : 4);
      const t0 = performance.now();
      let out = await stage.forward(session, { tokens: prompt });
      const t1 = performance.now();
      const steps = rep < 0 ? 4 : o.tg;
      for (let i = 0; i < steps; i++) {
        if (!("logits" in out)) throw new Error("expected logits");
        out = await stage.forward(session, { tokens: Int32Array.of(argmax(out.logits)) });
      }
      const t2 = performance.now();
      rss = Math.max(rss, Deno.memoryUsage().rss);
      stage.endSession(session);
      if (rep >= 0) {
        prefill.push((o.pp / (t1 - t0)) * 1000);
        decode.push((o.tg / (t2 - t1)) * 1000);
      }
    }
  } finally {
    backend.dispose();
  }
  const ratios = (a: number[], b: number[]) => a.map((x, i) => x / b[i]);
  return {
    model: o.model,
    backend: o.backend,
    threads: o.threads,
    prefill_tokens_per_second: round(median(prefill)),
    decode_tokens_per_second: round(median(decode)),
    ref_prefill_tokens_per_second: o.ref ? round(median(refPrefill)) : null,
    ref_decode_tokens_per_second: o.ref ? round(median(refDecode)) : null,
    decode_ratio: o.ref ? round(median(ratios(decode, refDecode)), 3) : null,
    prefill_ratio: o.ref ? round(median(ratios(prefill, refPrefill)), 3) : null,
    rss_bytes: rss,
    rss_baseline_bytes: baseline,
    weights_bytes: weights,
    kv_bytes: kvBytes,
    rss_ratio: round(rss / (weights + kvBytes), 3),
    rss_model_ratio: round((rss - baseline) / (weights + kvBytes), 3),
    runs: {
      prefill: prefill.map((x) => round(x)),
      decode: decode.map((x) => round(x)),
      ref_prefill: refPrefill.map((x) => round(x)),
      ref_decode: refDecode.map((x) => round(x)),
    },
    kv_type: o.kv,
    n_prompt: o.pp,
    n_decode: o.tg,
    load_avg: load0 === null ? null : [load0, loadAvg() ?? NaN],
  };
}

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
        if (g === "all") generate.push(...GENERATED);
        else if ((GENERATED as readonly string[]).includes(g)) generate.push(g as GeneratedModel);
        else throw new UsageError(`--generate ${g}: choose from ${GENERATED.join(", ")}, all`);
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
    else if (a === "--child") child = true;
    else if (a === "--backend") {
      const v = flags.value();
      if (v !== "wasm" && v !== "reference") {
        throw new UsageError("--backend takes wasm or reference");
      }
      o.backend = v;
    } else throw new UsageError(`unknown flag ${a} (see bench/cpu.ts)`);
  }
  if (!models.length && !generate.length) {
    throw new UsageError("give --model FILE or --generate q8_0|q4_0|q4k_mix|all");
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

const USAGE = `usage: deno task bench cpu (--generate q8_0|q4_0|q4k_mix|all | --model FILE.gguf)…
  [--threads N (default: all cores)] [--reps N (3)] [--pp N (128)] [--tg N (128)]
  [--kv f32|f16 (f32)] [--no-ref] [--backend wasm|reference]
Prints one JSON object per model: our and llama.cpp's prefill/decode tokens/s, their ratios,
and RSS against weights + KV cache bytes.`;

if (import.meta.main) await runBench("cpu", USAGE, main);
