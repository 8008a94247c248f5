/**
 * Check 1 of the scale flow: the cluster's next-token logits and greedy ids against llama.cpp on
 * the same file, judged by the fixtures' own checker (../shared/fixtures/check-golden.mjs, the
 * quantized tolerances: logits within 2e-2, greedy ids equal up to a near-tie of the reference).
 *
 * The reference is `ref.mjs eval --kv-type f32 --cpu-variant x64` (the fixtures' convention:
 * ggml's plain C kernels, f32 KV cache, whole prompt in one decode), cached per model file and
 * prompt in bench/.cache/scale/ (keyed by the file's last MiB, so a regenerated file is run again).
 * @module
 */
import type { ScaleCluster } from "./scale_cluster.ts";
import { openModelFile } from "../../model/engine.ts";
import { tokenizerFromMetadata } from "../../model/tokenizer/mod.ts";
import { SHARED_FIXTURES } from "./shared.ts";

const FIXTURES = SHARED_FIXTURES;
const CACHE = decodeURIComponent(new URL("../.cache/scale/", import.meta.url).pathname);

/** The two prompts of check 1 (the second is the fixtures' ARCH prompt a2). */
export const SCALE_PROMPTS = [
  { id: "p1", text: "The capital of France is" },
  {
    id: "p2",
    text:
      "In the beginning the engine loads the weights, then it reads the prompt and predicts the next token, one step at a time.",
  },
] as const;

/** A prompt of check 1. */
export type ScalePrompt = typeof SCALE_PROMPTS[number];

/** A golden in check-golden.mjs's format, made from one llama.cpp eval. */
export interface ScaleGolden {
  model: string;
  prompt: string;
  add_bos: boolean;
  prompt_tokens: number[];
  top5: { id: number; logit: number; logprob: number }[];
  greedy_ids: number[];
  greedy_margins: number[];
  n_predict: number;
  n_vocab: number;
  first_eos_step: null;
  kv_type: "f32";
  cpu_variant: "x64";
  weight_types: Record<string, number>;
  tolerances: { class: string; logit_abs: number; logprob_abs: number; greedy_margin: number };
  llama_cpp: string;
  /** llama.cpp's own spread across CPU variants on this golden (see variantSpread). */
  llama_cpp_cpu_variant_spread?: {
    what: string;
    reference: string;
    max_abs_diff_top5: number;
    greedy_same_prefix_min: number;
  };
}

/** What check 1 reports per prompt. */
export interface CheckResult {
  prompt: string;
  /** check-golden.mjs's verdict with the fixtures' quantized tolerances. */
  pass: boolean;
  /** The same with --spread-aware: tolerances widened to llama.cpp's own CPU-variant spread. */
  pass_spread_aware: boolean;
  checker_spread_aware: string;
  llama_cpp_cpu_variant_spread: ScaleGolden["llama_cpp_cpu_variant_spread"] | null;
  prompt_tokens: number;
  top5_ours: { id: number; logit: number }[];
  top5_ref: { id: number; logit: number }[];
  max_top5_logit_diff: number;
  greedy_equal_steps: number;
  /** The cluster's greedy ids. */
  greedy_ids: number[];
  /** Where the ids first differ: both ids' logits in our step and llama.cpp's margin there. */
  first_difference: {
    step: number;
    ref_id: number;
    our_id: number;
    our_logit_ref_id: number;
    our_logit_our_id: number;
    ref_margin: number;
  } | null;
  stages: string[];
  checker: string;
}

async function run(cmd: string, args: string[], cwd?: string): Promise<[number, string, string]> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  return [out.code, new TextDecoder().decode(out.stdout), new TextDecoder().decode(out.stderr)];
}

/**
 * llama.cpp's golden for `prompt` on `model` (ref.mjs eval in the llamaref folder `dir`),
 * cached in bench/.cache/scale/ (see refCacheKey).
 */
export async function llamaCppEval(
  dir: string,
  model: string,
  prompt: string,
  nPredict: number,
): Promise<ScaleGolden> {
  const key = await refCacheKey(model, prompt, nPredict);
  let g: ScaleGolden;
  try {
    g = JSON.parse(await Deno.readTextFile(CACHE + key));
  } catch {
    g = await cacheRef(dir, model, prompt, nPredict, key);
  }
  if (!g.llama_cpp_cpu_variant_spread) {
    g.llama_cpp_cpu_variant_spread = await variantSpread(dir, model, g);
    await Deno.writeTextFile(CACHE + key, JSON.stringify(g));
  }
  return g;
}

/**
 * How far llama.cpp itself moves on this golden when only its CPU backend changes: the same
 * tokens through llamaref-logits on the machine's default (best) variant instead of x64, in the
 * fixtures' `llama_cpp_cpu_variant_spread` format (check-golden.mjs --spread-aware reads it).
 */
async function variantSpread(
  dir: string,
  model: string,
  g: ScaleGolden,
): Promise<NonNullable<ScaleGolden["llama_cpp_cpu_variant_spread"]>> {
  const [code, out, err] = await run(`${dir}native/build/llamaref-logits`, [
    ...["--model", model, "--threads", "2", "--ctx", "256", "--kv-type", "f32"],
    ...["--n-predict", String(g.n_predict), "--top-k", "100", "--flash-attn", "0"],
    ...["--tokens", g.prompt_tokens.join(",")],
  ]);
  if (code !== 0) throw new Error(`llamaref-logits failed (${code}): ${err.slice(-1000)}`);
  const r = JSON.parse(out.slice(out.indexOf("{")));
  const byId = new Map<number, number>(
    r.top.map((t: { id: number; logit: number }) => [t.id, t.logit]),
  );
  const diff = Math.max(...g.top5.map((t) => Math.abs((byId.get(t.id) ?? -Infinity) - t.logit)));
  let same = 0;
  while (same < g.greedy_ids.length && r.greedy[same] === g.greedy_ids[same]) same++;
  return {
    what: "same tokens through llamaref-logits on the default (best) CPU variant instead of x64",
    reference: "x64",
    max_abs_diff_top5: Math.round(diff * 1e6) / 1e6,
    greedy_same_prefix_min: same,
  };
}

/**
 * File name of a cached reference: the model's name and last MiB (output.weight of these
 * models: a regenerated file is run again), the prompt's hash and the step count.
 */
export async function refCacheKey(
  model: string,
  prompt: string,
  nPredict: number,
): Promise<string> {
  const f = await Deno.open(model);
  let tail: Uint8Array<ArrayBuffer>;
  try {
    const size = (await f.stat()).size;
    tail = new Uint8Array(Math.min(size, 1 << 20));
    await f.seek(size - tail.length, Deno.SeekMode.Start);
    for (let got = 0; got < tail.length;) {
      const n = await f.read(tail.subarray(got));
      if (n === null) throw new Error(`${model} ended early`);
      got += n;
    }
  } finally {
    f.close();
  }
  const hash = async (b: Uint8Array<ArrayBuffer>) =>
    Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", b))).slice(0, 6)
      .map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${model.split("/").pop()}-${await hash(tail)}-${nPredict}-${await hash(
    new TextEncoder().encode(prompt),
  )}.json`;
}

async function cacheRef(
  dir: string,
  model: string,
  prompt: string,
  nPredict: number,
  key: string,
): Promise<ScaleGolden> {
  const [code, out, err] = await run("node", [
    `${dir}ref.mjs`,
    "eval",
    ...["--model", model, "--prompt", prompt, "--n-predict", String(nPredict), "--top-k", "5"],
    ...["--kv-type", "f32", "--cpu-variant", "x64", "--threads", "2", "--ctx", "256"],
  ], dir);
  if (code !== 0) throw new Error(`ref.mjs eval failed (${code}): ${err.slice(-2000)}`);
  const r = JSON.parse(out);
  if (!r.raw) throw new Error("ref.mjs eval gave no raw logits: build native/build.sh first");
  const file = await openModelFile(model);
  const types: Record<string, number> = {};
  try {
    for (const t of file.tensors) {
      const n = t.type === 2 ? "q4_0" : t.type === 0 ? "f32" : `type${t.type}`;
      types[n] = (types[n] ?? 0) + 1;
    }
  } finally {
    file.close();
  }
  const g: ScaleGolden = {
    model,
    prompt,
    add_bos: r.add_bos,
    prompt_tokens: r.tokens,
    top5: r.raw.top,
    greedy_ids: r.raw.greedy,
    greedy_margins: r.raw.greedy_margins,
    n_predict: nPredict,
    n_vocab: r.n_vocab,
    first_eos_step: null,
    kv_type: "f32",
    cpu_variant: "x64",
    weight_types: types,
    tolerances: { class: "quantized", logit_abs: 2e-2, logprob_abs: 4e-2, greedy_margin: 4e-2 },
    llama_cpp: `node-llama-cpp ${r.node_llama_cpp} / ${r.llama_cpp_release}`,
  };
  await Deno.mkdir(CACHE, { recursive: true });
  await Deno.writeTextFile(CACHE + key, JSON.stringify(g));
  return g;
}

/** Judge a candidate with check-golden.mjs: [passed, its output]. */
export async function judge(
  golden: ScaleGolden,
  candidate: { prompt_tokens: number[]; logits: number[]; greedy_ids: number[] },
  spreadAware = false,
): Promise<[boolean, string]> {
  const dir = await Deno.makeTempDir({ prefix: "dllm-scale-check-" });
  try {
    await Deno.writeTextFile(`${dir}/golden.json`, JSON.stringify(golden));
    await Deno.writeTextFile(`${dir}/candidate.json`, JSON.stringify(candidate));
    const [code, out, err] = await run("node", [
      `${FIXTURES}check-golden.mjs`,
      `${dir}/golden.json`,
      `${dir}/candidate.json`,
      ...(spreadAware ? ["--spread-aware"] : []),
    ]);
    return [code === 0, (out + err).trim()];
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function top5(logits: Float32Array): { id: number; logit: number }[] {
  const ids = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]).slice(0, 5);
  return ids.map((id) => ({ id, logit: Math.round(logits[id] * 1e5) / 1e5 }));
}

/** Check 1 for one prompt: the cluster's logits + greedy ids against `golden`. */
export async function checkAgainstLlamaCpp(
  c: ScaleCluster,
  model: string,
  prompt: ScalePrompt,
  golden: ScaleGolden,
  nPredict: number,
): Promise<CheckResult> {
  const file = await openModelFile(model);
  let tokens: number[];
  try {
    const tok = tokenizerFromMetadata(file.metadata);
    tokens = Array.from(tok.encode(prompt.text, { addBos: tok.addBos }));
  } finally {
    file.close();
  }
  const out = await c.evalThrough(tokens, nPredict);
  const candidate = {
    prompt_tokens: tokens,
    logits: Array.from(out.logits),
    greedy_ids: out.greedy,
  };
  const [pass, checker] = await judge(golden, candidate);
  const [passSpread, checkerSpread] = golden.llama_cpp_cpu_variant_spread
    ? await judge(golden, candidate, true)
    : [pass, checker];
  let equal = 0;
  while (equal < nPredict && out.greedy[equal] === golden.greedy_ids[equal]) equal++;
  const r5 = (x: number) => Math.round(x * 1e5) / 1e5;
  const first_difference = equal < nPredict
    ? {
      step: equal,
      ref_id: golden.greedy_ids[equal],
      our_id: out.greedy[equal],
      our_logit_ref_id: r5(out.steps[equal][golden.greedy_ids[equal]]),
      our_logit_our_id: r5(out.steps[equal][out.greedy[equal]]),
      ref_margin: r5(golden.greedy_margins[equal]),
    }
    : null;
  return {
    prompt: prompt.id,
    pass,
    pass_spread_aware: passSpread,
    checker_spread_aware: checkerSpread,
    llama_cpp_cpu_variant_spread: golden.llama_cpp_cpu_variant_spread ?? null,
    prompt_tokens: tokens.length,
    top5_ours: top5(out.logits),
    top5_ref: golden.top5.map((t) => ({ id: t.id, logit: t.logit })),
    max_top5_logit_diff: Math.max(
      ...golden.top5.map((t) => Math.abs(out.logits[t.id] - t.logit)),
    ),
    greedy_equal_steps: equal,
    greedy_ids: out.greedy,
    first_difference,
    stages: out.stages,
    checker,
  };
}
