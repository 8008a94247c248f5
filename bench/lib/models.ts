/**
 * Benchmark models: the ~110M-parameter synthetic llama (12 layers, n_embd 768, 12 heads,
 * n_ff 2048, vocab 32000) in Q8_0, Q4_0 and a Q4_K/Q6_K mix, generated once into bench/.cache/.
 *
 * Q8_0 / Q4_0 / F32 come from `../shared/llamaref/make-gguf.mjs --preset 110m` (seeded weights,
 * bit-identical to `llama-quantize --pure`); the Q4_K/Q6_K mix is re-quantized from the F32 file
 * with our own writer and ggml-exact quantizers: Q6_K for output.weight and for attn_v / ffn_down
 * of every other layer (as llama.cpp's Q4_K_M gives some of them more bits), Q4_K elsewhere,
 * 1-D norms F32.
 *
 * The memory bench also uses `1b_q8_0`: a ~1.1B-parameter llama of TinyLlama's shape (22 layers,
 * n_embd 2048, 32 heads / 4 KV heads, n_ff 5632, vocab 32000) in Q8_0, 1.17 GB, from the same
 * generator — the size where a runtime's fixed memory stops dominating the ratio.
 */
import { GGMLType, quantizeRow } from "../../kernels/quant/mod.ts";
import { type GGUFFile, openGGUF, writeGGUFFile } from "../../model/gguf/mod.ts";
import { SHARED_FIXTURES, SHARED_LLAMAREF } from "./shared.ts";
import { exists } from "./files.ts";

/** Models the bench can generate. */
export const GENERATED = ["q8_0", "q4_0", "q4k_mix"] as const;
/**
 * ~1.1B-parameter models (TinyLlama's shape): Q8_0, Q4_0, and Q3_K_M, Q4_K_M and Q5_K_M mixes made
 * as llama-quantize makes them (see kmType, q3kmType); a ~1.1B-parameter qwen3moe (8 experts, 2 used) in
 * Q8_0; and a qwen2 of Qwen2.5-0.5B's shape and a gemma3 of Gemma 3 1B's in llama-quantize's
 * Q4_K_M, which their n_embd of 896 and 1152 (not multiples of 256) turn mostly into Q5_0 (see
 * kFallback). The CPU bench's `all` includes
 * them; the memory bench uses 1b_q8_0.
 */
export const GENERATED_LARGE = [
  "1b_q8_0",
  "1b_q4_0",
  "1b_q4k_m",
  "1b_q5k_m",
  "1b_q3k_m",
  "1b_qwen3moe_q8_0",
  "05b_qwen2_q4k_m",
  "1b_gemma3_q4k_m",
] as const;
/** One of GENERATED or GENERATED_LARGE. */
export type GeneratedModel = typeof GENERATED[number] | typeof GENERATED_LARGE[number];

/** make-gguf.mjs shape flags of each generated model family. */
const SHAPES: Record<"m110" | "m1b" | "m1bmoe" | "m05b" | "m1bgemma", string[]> = {
  // gemma3 of Gemma 3 1B's shape (4 query heads over 1 KV head of 256, sliding windows of 512 in 5
  // layers of 6, the output tied to the embeddings) but a 32000-token vocabulary (make-gguf.mjs
  // makes up no larger one, and llama.cpp's test vocabularies hold no Gemma one)
  m1bgemma: [
    "--arch",
    "gemma3",
    "--n-layer",
    "26",
    "--n-embd",
    "1152",
    "--n-head",
    "4",
    "--n-head-kv",
    "1",
    "--head-dim",
    "256",
    "--n-ff",
    "6912",
    "--n-vocab",
    "32000",
    "--swa",
    "512",
    "--swa-pattern",
    "6",
    "--rope-theta",
    "1000000",
    "--ctx",
    "2048",
    "--tie-embeddings",
  ],
  // qwen2 of Qwen2.5-0.5B's shape (the output tied to the embeddings) and tokenizer (llama.cpp's
  // test vocabulary of it)
  m05b: [
    "--arch",
    "qwen2",
    "--n-layer",
    "24",
    "--n-embd",
    "896",
    "--n-head",
    "14",
    "--n-head-kv",
    "2",
    "--n-ff",
    "4864",
    "--vocab-from",
    `${SHARED_FIXTURES}vocab/ggml-vocab-qwen2.gguf`,
    "--ctx",
    "2048",
    "--tie-embeddings",
  ],
  // qwen3moe, ~1.1B parameters in all (16 layers × 8 experts of n_ff 1024, 2 used per token:
  // ~0.3B active), head size 128, the 32000-token vocabulary
  m1bmoe: [
    "--arch",
    "qwen3moe",
    "--n-layer",
    "16",
    "--n-embd",
    "2048",
    "--n-head",
    "16",
    "--n-head-kv",
    "4",
    "--head-dim",
    "128",
    "--n-expert",
    "8",
    "--n-expert-used",
    "2",
    "--n-ff-exp",
    "1024",
    "--n-vocab",
    "32000",
    "--ctx",
    "2048",
  ],
  m110: ["--preset", "110m"],
  m1b: [
    "--n-layer",
    "22",
    "--n-embd",
    "2048",
    "--n-head",
    "32",
    "--n-head-kv",
    "4",
    "--n-ff",
    "5632",
    "--n-vocab",
    "32000",
    "--ctx",
    "2048",
  ],
};

const ROOT = new URL("../", import.meta.url);
/** Cache folder of the bench (git-ignored). */
export const CACHE_DIR: string = decodeURIComponent(new URL(".cache/", ROOT).pathname);

async function makeGGUF(type: string, out: string, shape = SHAPES.m110): Promise<void> {
  const r = await new Deno.Command("node", {
    args: [
      `${SHARED_LLAMAREF}make-gguf.mjs`,
      ...shape,
      "--type",
      type,
      "--out",
      out,
      "--quiet",
    ],
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!r.success) throw new Error(`make-gguf.mjs --type ${type} failed`);
}

function mixType(name: string): GGMLType {
  if (name === "output.weight") return GGMLType.Q6_K;
  const m = /^blk\.(\d+)\.(attn_v|ffn_down)\.weight$/.exec(name);
  if (m && Number(m[1]) % 2 === 0) return GGMLType.Q6_K;
  return GGMLType.Q4_K;
}

/**
 * llama-quantize's Q4_K_M (`base` Q4_K) or Q5_K_M (`base` Q5_K) choice for one tensor of an
 * nLayers model: Q6_K for output.weight and for attn_v / ffn_down of the layers `use_more_bits`
 * picks (the first and last eighth, and every third in between), `base` for every other matrix.
 */
export function kmType(base: GGMLType, name: string, nLayers: number): GGMLType {
  if (name === "output.weight") return GGMLType.Q6_K;
  const m = /^blk\.(\d+)\.(attn_v|ffn_down)\.weight$/.exec(name);
  if (m) {
    const i = Number(m[1]);
    const n8 = Math.floor(nLayers / 8);
    const more = i < n8 || i >= Math.floor((7 * nLayers) / 8) || (i - n8) % 3 === 2;
    if (more) return GGMLType.Q6_K;
  }
  return base;
}

/**
 * llama-quantize's Q3_K_M choice for one tensor of an nLayers llama: Q6_K for output.weight; attn_v
 * Q5_K in the first 2 layers, Q4_K after; ffn_down Q5_K in the first nLayers / 16, Q4_K after
 * (llama is not falcon); attn_output Q4_K; Q3_K for every other matrix.
 */
function q3kmType(name: string, nLayers: number): GGMLType {
  if (name === "output.weight") return GGMLType.Q6_K;
  const m = /^blk\.(\d+)\.(attn_v|ffn_down|attn_output)\.weight$/.exec(name);
  if (m) {
    const i = Number(m[1]);
    if (m[2] === "attn_output") return GGMLType.Q4_K;
    const first = m[2] === "attn_v" ? 2 : Math.floor(nLayers / 16);
    return i < first ? GGMLType.Q5_K : GGMLType.Q4_K;
  }
  return GGMLType.Q3_K;
}

/**
 * llama-quantize's replacement for a K-quant a matrix of rows of ne0 elements cannot hold (rows
 * not a multiple of 256, as Qwen2.5-0.5B's 896): Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0 (for the
 * output matrix too, whose own rule gives Q8_0 there).
 */
function kFallback(type: GGMLType, ne0: number): GGMLType {
  if (ne0 % 256 === 0) return type;
  if (type === GGMLType.Q4_K) return GGMLType.Q5_0;
  if (type === GGMLType.Q5_K) return GGMLType.Q5_1;
  if (type === GGMLType.Q6_K) return GGMLType.Q8_0;
  if (type === GGMLType.Q2_K || type === GGMLType.Q3_K) {
    throw new Error(`no fallback here for a ${ne0}-wide ${GGMLType[type]} matrix (IQ4_NL)`);
  }
  return type;
}

/**
 * Each tensor of a mix with its type: typeOf's choice for its role (a model without output.weight
 * reuses token_embd.weight for it, which then takes the output's type, as in llama-quantize), after
 * kFallback; 1-D tensors F32.
 */
export function mixTypes(
  src: readonly { name: string; dims: readonly number[] }[],
  nLayers: number,
  typeOf: (name: string, nLayers: number) => GGMLType,
): { name: string; dims: number[]; type: GGMLType }[] {
  const tied = !src.some((t) => t.name === "output.weight");
  const role = (name: string) => tied && name === "token_embd.weight" ? "output.weight" : name;
  return src.map((t) => ({
    name: t.name,
    dims: [...t.dims],
    type: t.dims.length >= 2 ? kFallback(typeOf(role(t.name), nLayers), t.dims[0]) : GGMLType.F32,
  }));
}

async function* requantized(
  src: GGUFFile,
  tensors: { type: GGMLType }[],
): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < tensors.length; i++) {
    const bytes = await src.readTensor(src.tensors[i]);
    if (tensors[i].type === GGMLType.F32) {
      yield bytes;
      continue;
    }
    const f = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
    yield quantizeRow(tensors[i].type, f, f.length);
  }
}

async function makeMix(
  f32Path: string,
  out: string,
  typeOf: (name: string, nLayers: number) => GGMLType,
  /** general.file_type (llama_ftype) of the mix */
  fileType: number,
): Promise<void> {
  const src = await openGGUF(f32Path);
  try {
    const arch = src.metadata.stringOr("general.architecture", "llama");
    const nLayers = Number(src.metadata.numberOr(`${arch}.block_count`, 0));
    const tensors = mixTypes(src.tensors, nLayers, typeOf);
    const metadata = src.metadata.entries().map((e) =>
      e.key === "general.file_type" ? { ...e, value: fileType } : e
    );
    await writeGGUFFile(
      out,
      { metadata, tensors, alignment: src.alignment },
      requantized(src, tensors),
    );
  } finally {
    src.close();
  }
}

/** The generated models of a popular model's shape: their F32 source file and shape. */
const SHAPED_Q4KM: Record<string, { f32: string; shape: keyof typeof SHAPES; what: string }> = {
  "05b_qwen2_q4k_m": {
    f32: "m05b-qwen2_f32.gguf",
    shape: "m05b",
    what: "Qwen2.5-0.5B-shaped (2 GB)",
  },
  "1b_gemma3_q4k_m": {
    f32: "m1b-gemma3_f32.gguf",
    shape: "m1bgemma",
    what: "Gemma-3-1B-shaped (2.9 GB)",
  },
};

/** Path of a generated bench model, generating it (once) if missing. */
export async function generatedModel(which: GeneratedModel): Promise<string> {
  const dir = `${CACHE_DIR}models/`;
  await Deno.mkdir(dir, { recursive: true });
  const large = which.startsWith("1b_") || which.startsWith("05b_");
  const [family, rest] = large ? which.split(/_(.*)/s) : ["110", which];
  const path = `${dir}m${family}-${rest}.gguf`;
  if (await exists(path)) return path;
  const tmp = `${path}.${Deno.pid}.tmp`;
  if (which === "1b_qwen3moe_q8_0") {
    console.error("bench: generating the ~1.1B-parameter qwen3moe Q8_0 model (once)…");
    await makeGGUF("q8_0", tmp, SHAPES.m1bmoe);
  } else if (which === "1b_q8_0" || which === "1b_q4_0") {
    console.error(`bench: generating the 1.1B-parameter ${which.slice(3)} model (once)…`);
    await makeGGUF(which.slice(3), tmp, SHAPES.m1b);
  } else if (which === "1b_q4k_m" || which === "1b_q5k_m" || which === "1b_q3k_m") {
    const f32 = `${dir}m1b-f32.gguf`;
    if (!(await exists(f32))) {
      console.error("bench: generating the 1.1B-parameter F32 model (4.4 GB, once)…");
      await makeGGUF("f32", f32, SHAPES.m1b);
    }
    const mix = which.slice(3).toUpperCase().replace("K_M", "_K_M");
    console.error(`bench: quantizing it to a ${mix} mix (once, a few minutes)…`);
    // llama_ftype: LLAMA_FTYPE_MOSTLY_Q3_K_M = 12, Q4_K_M = 15, Q5_K_M = 17
    if (which === "1b_q3k_m") await makeMix(f32, tmp, q3kmType, 12);
    else {
      const q5 = which === "1b_q5k_m";
      const base = q5 ? GGMLType.Q5_K : GGMLType.Q4_K;
      await makeMix(f32, tmp, (name, n) => kmType(base, name, n), q5 ? 17 : 15);
    }
  } else if (which in SHAPED_Q4KM) {
    // a popular model's shape in llama-quantize's Q4_K_M (llama_ftype 15)
    const { f32: name, shape, what } = SHAPED_Q4KM[which];
    const f32 = `${dir}${name}`;
    if (!(await exists(f32))) {
      console.error(`bench: generating the ${what} F32 model (once)…`);
      await makeGGUF("f32", f32, SHAPES[shape]);
    }
    console.error("bench: quantizing it to llama-quantize's Q4_K_M (once, a few minutes)…");
    await makeMix(f32, tmp, (name, n) => kmType(GGMLType.Q4_K, name, n), 15);
  } else if (which === "q4k_mix") {
    const f32 = `${dir}m110-f32.gguf`;
    if (!(await exists(f32))) await makeGGUF("f32", f32);
    await makeMix(f32, tmp, mixType, 15);
  } else {
    await makeGGUF(which, tmp);
  }
  await Deno.rename(tmp, path);
  return path;
}
