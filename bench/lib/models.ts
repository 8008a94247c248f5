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

/** Models the bench can generate. */
export const GENERATED = ["q8_0", "q4_0", "q4k_mix"] as const;
/** Larger models the memory bench can generate (not part of `all`: slow on the CPU bench). */
export const GENERATED_LARGE = ["1b_q8_0"] as const;
/** One of GENERATED or GENERATED_LARGE. */
export type GeneratedModel = typeof GENERATED[number] | typeof GENERATED_LARGE[number];

/** make-gguf.mjs shape flags of each generated model family. */
const SHAPES: Record<"m110" | "m1b", string[]> = {
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
const SHARED_LLAMAREF = decodeURIComponent(new URL("../../shared/llamaref/", ROOT).pathname);

async function exists(p: string): Promise<boolean> {
  try {
    await Deno.stat(p);
    return true;
  } catch {
    return false;
  }
}

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

async function makeMix(f32Path: string, out: string): Promise<void> {
  const src = await openGGUF(f32Path);
  try {
    const tensors = src.tensors.map((t) => ({
      name: t.name,
      dims: t.dims,
      type: t.dims.length >= 2 ? mixType(t.name) : GGMLType.F32,
    }));
    const metadata = src.metadata.entries().map((e) =>
      e.key === "general.file_type" ? { ...e, value: 15 } : e // LLAMA_FTYPE_MOSTLY_Q4_K_M
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

/** Path of a generated bench model, generating it (once) if missing. */
export async function generatedModel(which: GeneratedModel): Promise<string> {
  const dir = `${CACHE_DIR}models/`;
  await Deno.mkdir(dir, { recursive: true });
  const path = which === "1b_q8_0" ? `${dir}m1b-q8_0.gguf` : `${dir}m110-${which}.gguf`;
  if (await exists(path)) return path;
  const tmp = `${path}.${Deno.pid}.tmp`;
  if (which === "1b_q8_0") {
    console.error("bench: generating the 1.1B-parameter Q8_0 model (1.17 GB, once)…");
    await makeGGUF("q8_0", tmp, SHAPES.m1b);
  } else if (which === "q4k_mix") {
    const f32 = `${dir}m110-f32.gguf`;
    if (!(await exists(f32))) await makeGGUF("f32", f32);
    await makeMix(f32, tmp);
  } else {
    await makeGGUF(which, tmp);
  }
  await Deno.rename(tmp, path);
  return path;
}
