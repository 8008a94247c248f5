/**
 * GPU benchmark: the WebGPU backend against the WASM backend in the same run, plus kernel-level
 * matrix×vector bandwidth.
 *
 * ```sh
 * deno task bench gpu --generate q8_0                  # the 110M synthetic llama, Q8_0
 * deno task bench gpu --model path/to/model.gguf --pp 64 --tg 32
 * deno task bench gpu --kernels-only                   # just the Q8_0 / Q4_K matvec GB/s
 * ```
 *
 * Prints one JSON object per model: `backend`, `adapter`, WebGPU prefill (`--pp` tokens in one
 * pass) and decode (`--tg` single tokens) tokens/s, the WASM backend's figures on the same model
 * in the same process (`--no-wasm` skips them), and `kernels`: GB/s of the Q8_0 and Q4_K
 * matvec (`--dim` × `--dim` weights, default 4096) on both backends. Speeds are medians of
 * `--reps` rounds. Without a model it prints the kernel figures alone.
 * `webgpu_round_trips`: reads, submissions and bytes read back per decode token and per prefill
 * (and per token of the --multistep decode).
 * Greedy decode samples on the GPU (two candidates back per step); `--legacy-read` reads the whole
 * logit row instead, as before. `first_difference` gives both backends' two best logits where
 * their greedy ids first differ (null when they agree).
 * `--adapter-info` prints the adapter probe (description, features, WGSL features, limits) and
 * `shader_features` alone: which of `shader-f16` / `subgroups` the device was granted and whether
 * the startup self-check enabled them (every bench line carries `shader_features` too);
 * `--features none|f16|subgroups|all` (default `DLLM_WEBGPU_FEATURES`, else all) narrows them.
 * `multistep_decode_tokens_per_second`: the same greedy decode as LlamaStage.decodeGreedy runs it
 * where the backend keeps the ids on the device, `--multistep K` tokens (default 16, 0: off) per
 * read back; `multistep_same_ids` says its ids equal the step-by-step ones.
 * `--wait-probe` prints how long the host waits for the GPU (bench/lib/gpu_wait.ts): Deno's
 * ~10 ms floor per awaited GPU promise next to a small pass's own time, and k passes per read.
 * `--generate` also takes the ~1.1B models (1b_q8_0, …; bench/lib/models.ts).
 * Flags: `--threads N` (WASM), `--kv f32|f16`, `--matmul-lanes auto|single|shared`,
 * `--tiled-prefill on|off` (default: on for hardware adapters, see kernels/webgpu/backend.ts),
 * `--cpu-kernels on|off` (matmul_cpu.wgsl, attention_cpu.wgsl; default: on for software fallback
 * adapters such as llvmpipe; `--legacy-read --tiled-prefill off --cpu-kernels off` is the path
 * before GPU sampling and these kernels).
 * @module
 */
import type { Backend, KVType } from "../kernels/backend.ts";
import { GGMLType, quantizeRow, typeName } from "../kernels/quant/mod.ts";
import { createWasmBackend } from "../kernels/wasm/mod.ts";
import {
  createWebGPUBackend,
  describeFeatures,
  type FeatureMode,
  probeAdapter,
  WebGPUBackend,
} from "../kernels/webgpu/mod.ts";
import { openGGUF } from "../model/gguf/mod.ts";
import { waitProbe } from "./lib/gpu_wait.ts";
import { LlamaStage, type Session } from "../model/llama.ts";
import { argmax } from "../model/sampler.ts";
import { GENERATED, GENERATED_LARGE, type GeneratedModel, generatedModel } from "./lib/models.ts";
import { median, round } from "./lib/stats.ts";

interface Options {
  models: string[];
  generate: GeneratedModel[];
  pp: number;
  tg: number;
  reps: number;
  kv: KVType;
  threads: number;
  wasm: boolean;
  dim: number;
  kernelsOnly: boolean;
  lanes: "auto" | "single" | "shared";
  legacyRead: boolean;
  adapterInfo: boolean;
  waitProbe: boolean;
  multistep: number;
  tiled: boolean | undefined;
  cpuKernels: boolean | undefined;
  features: FeatureMode | undefined;
}

/** Tokens/s of one backend on one model. */
export interface ModelFigures {
  prefill_tokens_per_second: number;
  decode_tokens_per_second: number;
  /** Greedy decode with the ids on the device (null: off, or the backend cannot). */
  multistep_decode_tokens_per_second: number | null;
  /** Whether those ids equal the step-by-step ones (null when not run). */
  multistep_same_ids: boolean | null;
  runs: { prefill: number[]; decode: number[]; multistep_decode: number[] };
}

/** One matvec kernel figure. */
export interface KernelFigure {
  type: string;
  rows: number;
  cols: number;
  weight_bytes: number;
  webgpu_gb_per_s: number;
  webgpu_us_per_matvec: number;
  wasm_gb_per_s: number | null;
  wasm_us_per_matvec: number | null;
}

/** One greedy step's two best tokens: the pick and the runner-up, with their logits. */
type TopTwo = { id: number; logit: number }[];

/** Host round trips per token of a WebGPU run (absent on other backends). */
export interface RoundTrips {
  reads_per_decode_token: number;
  submissions_per_decode_token: number;
  bytes_read_per_decode_token: number;
  reads_per_prefill: number;
  submissions_per_prefill: number;
  bytes_read_per_prefill: number;
  /** The same with the ids kept on the device (--multistep; null when not run). */
  multistep_reads_per_decode_token: number | null;
  multistep_submissions_per_decode_token: number | null;
}

/** The two best entries of a logit row (ties to the lower id). */
function topTwo(logits: Float32Array): TopTwo {
  const a = argmax(logits);
  let b = a === 0 ? 1 : 0;
  for (let i = 0; i < logits.length; i++) if (i !== a && logits[i] > logits[b]) b = i;
  return [{ id: a, logit: logits[a] }, { id: b, logit: logits[b] }];
}

/**
 * Prefill + decode speed of `backend` on `model` (stage loaded once, `reps` timed rounds). Greedy
 * decode reads back the two best candidates per step where the backend computes them
 * (Backend.topCandidates) unless `legacyRead`, else the whole logit row.
 */
export async function modelFigures(backend: Backend, model: string, o: Options) {
  const file = await openGGUF(model);
  let stage: LlamaStage;
  try {
    stage = await LlamaStage.load(file, backend, { maxBatch: o.pp });
  } finally {
    file.close();
  }
  const V = stage.config.nVocab;
  let seed = 12345;
  const prompt = Int32Array.from({ length: o.pp }, () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return 1 + (seed % (V - 1));
  });
  const stats = backend instanceof WebGPUBackend ? backend.stats : null;
  const want = { k: 2, exclude: new Int32Array() };
  const step = async (session: Session, tokens: Int32Array): Promise<TopTwo> => {
    const out = o.legacyRead
      ? await stage.forward(session, { tokens })
      : await stage.forwardCandidates(session, { tokens }, want);
    if ("candidates" in out) {
      const c = out.candidates;
      return [0, 1].map((i) => ({ id: c.ids[i], logit: c.values[i] }));
    }
    if (!("logits" in out)) throw new Error("expected logits");
    return topTwo(out.logits);
  };
  const prefill: number[] = [];
  const decode: number[] = [];
  let firstSteps: TopTwo[] = [];
  const trips = { reads: 0, submissions: 0, bytes: 0, pReads: 0, pSubs: 0, pBytes: 0, passes: 0 };
  for (let rep = -1; rep < o.reps; rep++) {
    const session = stage.newSession(o.pp + o.tg, o.kv);
    const s0 = stats ? { ...stats } : null;
    const t0 = performance.now();
    let top = await step(session, prompt);
    const t1 = performance.now();
    const s1 = stats ? { ...stats } : null;
    const steps = rep < 0 ? 2 : o.tg;
    const tops: TopTwo[] = [];
    for (let i = 0; i < steps; i++) {
      tops.push(top);
      top = await step(session, Int32Array.of(top[0].id));
    }
    const t2 = performance.now();
    stage.endSession(session);
    if (rep >= 0) {
      prefill.push((o.pp / (t1 - t0)) * 1000);
      decode.push((o.tg / (t2 - t1)) * 1000);
      firstSteps = tops.slice(0, 8);
      if (stats && s0 && s1) {
        trips.pReads += s1.reads - s0.reads;
        trips.pSubs += s1.submissions - s0.submissions;
        trips.pBytes += s1.bytesRead - s0.bytesRead;
        trips.reads += stats.reads - s1.reads;
        trips.submissions += stats.submissions - s1.submissions;
        trips.bytes += stats.bytesRead - s1.bytesRead;
        trips.passes++;
      }
    }
  }
  // Greedy decode with the ids kept on the device, K tokens per read back (decodeGreedy).
  const multi: number[] = [];
  let multiSame: boolean | null = null;
  const multiTrips = { reads: 0, submissions: 0, tokens: 0 };
  if (o.multistep > 0 && !o.legacyRead && backend.topCandidatesInto && backend.embedAt) {
    for (let rep = -1; rep < o.reps; rep++) {
      const session = stage.newSession(o.pp + o.tg, o.kv);
      let id = (await step(session, prompt))[0].id;
      const ids: number[] = [];
      const s1 = stats ? { ...stats } : null;
      const t1 = performance.now();
      while (ids.length < o.tg) {
        const run = await stage.decodeGreedy(
          session,
          id,
          Math.min(o.multistep, o.tg - ids.length),
          2,
        );
        for (const c of run) ids.push(c.ids[0]);
        id = ids[ids.length - 1];
      }
      const t2 = performance.now();
      stage.endSession(session);
      if (rep < 0) continue;
      multi.push((o.tg / (t2 - t1)) * 1000);
      if (stats && s1) {
        multiTrips.reads += stats.reads - s1.reads;
        multiTrips.submissions += stats.submissions - s1.submissions;
        multiTrips.tokens += o.tg;
      }
      // firstSteps[i + 1] is the step-by-step best after i + 1 decoded tokens.
      multiSame = firstSteps.slice(1).every((t, i) => t[0].id === ids[i]);
    }
  }
  const tokens = trips.passes * o.tg;
  const roundTrips: RoundTrips | null = stats
    ? {
      reads_per_decode_token: round(trips.reads / tokens),
      submissions_per_decode_token: round(trips.submissions / tokens),
      bytes_read_per_decode_token: round(trips.bytes / tokens),
      reads_per_prefill: round(trips.pReads / trips.passes),
      submissions_per_prefill: round(trips.pSubs / trips.passes),
      bytes_read_per_prefill: round(trips.pBytes / trips.passes),
      multistep_reads_per_decode_token: multiTrips.tokens
        ? round(multiTrips.reads / multiTrips.tokens)
        : null,
      multistep_submissions_per_decode_token: multiTrips.tokens
        ? round(multiTrips.submissions / multiTrips.tokens)
        : null,
    }
    : null;
  return {
    figures: {
      prefill_tokens_per_second: round(median(prefill)),
      decode_tokens_per_second: round(median(decode)),
      runs: {
        prefill: prefill.map((x) => round(x)),
        decode: decode.map((x) => round(x)),
        multistep_decode: multi.map((x) => round(x)),
      },
      multistep_decode_tokens_per_second: multi.length ? round(median(multi)) : null,
      multistep_same_ids: multiSame,
    } satisfies ModelFigures,
    firstSteps,
    roundTrips,
  };
}

/**
 * Where two backends' greedy ids first differ, with each one's two best logits there: a gap of
 * a few 1e-6 is a near-tie that float order decides; a larger one is a real divergence.
 */
export function firstDifference(a: TopTwo[], b: TopTwo[]) {
  const step = a.findIndex((t, i) => b[i] && t[0].id !== b[i][0].id);
  if (step < 0) return null;
  const gap = (t: TopTwo) => round(t[0].logit - t[1].logit, 7);
  return {
    step,
    webgpu: a[step],
    wasm: b[step],
    webgpu_gap: gap(a[step]),
    wasm_gap: gap(b[step]),
  };
}

/** Seconds per matvec of a `dim × dim` weight of `type` on `backend` (batched, one readback). */
async function matvecSeconds(backend: Backend, type: GGMLType, dim: number, reps: number) {
  const n = dim * dim;
  let s = 7;
  const w = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    w[i] = (s / 4294967296 - 0.5) * 0.1;
  }
  const data = quantizeRow(type, w, n);
  const weight = backend.upload({ name: `bench.${typeName(type)}`, type, shape: [dim, dim], data });
  const x = backend.buffer(dim);
  backend.write(x, new Float32Array(dim).map((_, i) => Math.sin(i)));
  const out = backend.buffer(dim);
  const time = async (count: number) => {
    const t0 = performance.now();
    for (let i = 0; i < count; i++) backend.matmul(weight, x, out, 1);
    await backend.read(out, 0, 1);
    return (performance.now() - t0) / 1000;
  };
  await time(2);
  const few = 2, many = 12;
  const per: number[] = [];
  for (let r = 0; r < reps; r++) {
    const a = await time(few);
    const b = await time(many);
    per.push(Math.max(1e-9, (b - a) / (many - few)));
  }
  backend.free(weight);
  backend.free(x);
  backend.free(out);
  return { seconds: median(per), bytes: data.byteLength };
}

async function kernelFigures(gpu: Backend, wasm: Backend | null, o: Options) {
  const out: KernelFigure[] = [];
  for (const type of [GGMLType.Q8_0, GGMLType.Q4_K]) {
    const g = await matvecSeconds(gpu, type, o.dim, o.reps);
    const c = wasm ? await matvecSeconds(wasm, type, o.dim, o.reps) : null;
    out.push({
      type: typeName(type),
      rows: o.dim,
      cols: o.dim,
      weight_bytes: g.bytes,
      webgpu_gb_per_s: round(g.bytes / g.seconds / 1e9, 3),
      webgpu_us_per_matvec: round(g.seconds * 1e6, 1),
      wasm_gb_per_s: c ? round(c.bytes / c.seconds / 1e9, 3) : null,
      wasm_us_per_matvec: c ? round(c.seconds * 1e6, 1) : null,
    });
  }
  return out;
}

function parseArgs(args: string[]): Options {
  const o: Options = {
    models: [],
    generate: [],
    pp: 64,
    tg: 32,
    reps: 3,
    kv: "f32",
    threads: navigator.hardwareConcurrency,
    wasm: true,
    dim: 4096,
    kernelsOnly: false,
    lanes: "auto",
    legacyRead: false,
    adapterInfo: false,
    waitProbe: false,
    multistep: 16,
    tiled: undefined,
    cpuKernels: undefined,
    features: undefined,
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const val = () => {
      const v = args[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    const num = () => {
      const v = Number(val());
      if (!Number.isInteger(v) || v <= 0) throw new Error(`${a} needs a positive integer`);
      return v;
    };
    if (a === "--model") o.models.push(val());
    else if (a === "--generate") {
      const known: readonly string[] = [...GENERATED, ...GENERATED_LARGE];
      for (const g of val().split(",")) {
        if (g === "all") o.generate.push(...GENERATED);
        else if (known.includes(g)) o.generate.push(g as GeneratedModel);
        else throw new Error(`--generate ${g}: choose from ${known.join(", ")}, all`);
      }
    } else if (a === "--pp") o.pp = num();
    else if (a === "--tg") o.tg = num();
    else if (a === "--reps") o.reps = num();
    else if (a === "--threads") o.threads = num();
    else if (a === "--dim") o.dim = num();
    else if (a === "--no-wasm") o.wasm = false;
    else if (a === "--kernels-only") o.kernelsOnly = true;
    else if (a === "--legacy-read") o.legacyRead = true;
    else if (a === "--adapter-info") o.adapterInfo = true;
    else if (a === "--wait-probe") o.waitProbe = true;
    else if (a === "--multistep") {
      const v = Number(val());
      if (!Number.isInteger(v) || v < 0) throw new Error("--multistep takes a count (0: off)");
      o.multistep = v;
    } else if (a === "--tiled-prefill") {
      const v = val();
      if (v !== "on" && v !== "off") throw new Error("--tiled-prefill takes on or off");
      o.tiled = v === "on";
    } else if (a === "--cpu-kernels") {
      const v = val();
      if (v !== "on" && v !== "off") throw new Error("--cpu-kernels takes on or off");
      o.cpuKernels = v === "on";
    } else if (a === "--features") {
      const v = val();
      if (!["none", "f16", "subgroups", "all"].includes(v)) {
        throw new Error("--features takes none, f16, subgroups or all");
      }
      o.features = v as FeatureMode;
    } else if (a === "--kv") {
      const v = val();
      if (v !== "f16" && v !== "f32") throw new Error("--kv takes f16 or f32");
      o.kv = v;
    } else if (a === "--matmul-lanes") {
      const v = val();
      if (v !== "auto" && v !== "single" && v !== "shared") {
        throw new Error("--matmul-lanes takes auto, single or shared");
      }
      o.lanes = v;
    } else if (a === "--help") {
      console.log("see the header of bench/gpu.ts");
      Deno.exit(0);
    } else throw new Error(`unknown flag ${a} (see bench/gpu.ts)`);
  }
  if (o.dim % 256 !== 0) throw new Error("--dim must be a multiple of 256 (Q4_K blocks)");
  return o;
}

/** One line: mode, granted, and each feature's outcome (what the device report summarises). */
function featureLine(f: WebGPUBackend["info"]["shaderFeatures"]): string {
  return `mode ${f.mode}; granted ${f.granted.length ? f.granted.join(", ") : "none"}; ` +
    `active ${f.active.length ? f.active.join(", ") : "none"}; ${describeFeatures(f)}`;
}

/** CLI entry: `deno run -A bench/gpu.ts …` (also `deno task bench gpu …`). */
export async function main(args: string[]): Promise<void> {
  const o = parseArgs(args);
  const probe = await probeAdapter();
  if (o.waitProbe) {
    if (!probe.available) throw new Error("--wait-probe needs a WebGPU adapter");
    console.log(JSON.stringify({ bench: "gpu", wait_probe: await waitProbe(o.reps * 7) }));
    return;
  }
  if (o.adapterInfo) {
    // What the device report starts with: which adapter, what it offers, its limits, and which
    // optional shader paths a backend on it gets (granted, self-checked).
    if (!probe.available) {
      console.log(JSON.stringify({ bench: "gpu", adapter_info: probe }));
      Deno.exit(1);
    }
    const be = await createWebGPUBackend({ features: o.features });
    const f = be.info.shaderFeatures;
    be.dispose();
    console.log(JSON.stringify({ bench: "gpu", adapter_info: probe, shader_features: f }));
    console.error(`webgpu shader features: ${featureLine(f)}`);
    return;
  }
  if (!probe.available) {
    console.log(JSON.stringify({ bench: "gpu", backend: "webgpu", error: probe.reason }));
    Deno.exit(1);
  }
  for (const g of o.generate) o.models.push(await generatedModel(g));
  const gpu: WebGPUBackend = await createWebGPUBackend({
    matmulLanes: o.lanes,
    tiledPrefill: o.tiled,
    cpuKernels: o.cpuKernels,
    features: o.features,
  });
  console.error(`webgpu shader features: ${featureLine(gpu.info.shaderFeatures)}`);
  const wasm = o.wasm ? await createWasmBackend({ threads: o.threads }) : null;
  const common = {
    bench: "gpu",
    backend: "webgpu",
    adapter: probe.description,
    adapter_is_fallback: probe.isFallback,
    webgpu_using: gpu.info.using,
    matmul_lanes: gpu.info.matmulLanes,
    tiled_prefill: gpu.info.tiledPrefill,
    cpu_kernels: gpu.info.cpuKernels,
    cpu_kernels_check: gpu.info.cpuKernelsCheck,
    shader_features: gpu.info.shaderFeatures,
    wasm_threads: wasm ? o.threads : null,
  };
  try {
    const kernels = await kernelFigures(gpu, wasm, o);
    if (o.kernelsOnly || !o.models.length) {
      console.log(JSON.stringify({ ...common, kernels }));
      return;
    }
    for (const model of o.models) {
      const g = await modelFigures(gpu, model, o);
      const w = wasm ? await modelFigures(wasm, model, o) : null;
      console.log(JSON.stringify({
        ...common,
        model,
        prefill_tokens_per_second: g.figures.prefill_tokens_per_second,
        decode_tokens_per_second: g.figures.decode_tokens_per_second,
        multistep_decode_tokens_per_second: g.figures.multistep_decode_tokens_per_second,
        multistep_k: g.figures.multistep_decode_tokens_per_second === null ? null : o.multistep,
        multistep_same_ids: g.figures.multistep_same_ids,
        wasm_prefill_tokens_per_second: w?.figures.prefill_tokens_per_second ?? null,
        wasm_decode_tokens_per_second: w?.figures.decode_tokens_per_second ?? null,
        decode_read_back: o.legacyRead ? "logits" : "candidates",
        webgpu_round_trips: g.roundTrips,
        // Greedy ids after the prompt: the two backends should agree (same numerics); where they
        // do not, the logit gaps at the first differing step tell a near-tie from a divergence.
        same_first_tokens: w
          ? g.firstSteps.every((t, i) => t[0].id === w.firstSteps[i]?.[0].id)
          : null,
        first_difference: w ? firstDifference(g.firstSteps, w.firstSteps) : null,
        runs: { webgpu: g.figures.runs, wasm: w?.figures.runs ?? null },
        kernels,
        kv_type: o.kv,
        n_prompt: o.pp,
        n_decode: o.tg,
      }));
    }
  } finally {
    gpu.dispose();
    wasm?.dispose();
  }
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    console.error(`bench gpu: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
