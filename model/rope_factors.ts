/**
 * RoPE frequency factors, read as llama.cpp reads them and chosen per session as it chooses them.
 *
 * - Llama 3.1+ (`rope_freqs.weight`): one set, θ of pair i divided by factor i, for every
 *   session. llama.cpp reads it for the llama architecture only (and refuses other files that
 *   hold it), and so do we: run without it, a Llama 3.1 model gives other logits than
 *   llama.cpp's, more so the longer the context.
 * - LongRoPE (phi3's `rope_factors_long.weight` and `rope_factors_short.weight`: Phi-3 mini 128k,
 *   Phi-3.5 mini, Phi-4 mini): two sets, and llama.cpp picks one per context
 *   (`llama_model::get_rope_factors`): the long set when the context per sequence exceeds
 *   `rope.scaling.original_context_length` (n_ctx_orig_yarn), else the short set. Its context
 *   per sequence is the context asked for rounded up to a multiple of 256 (llama-context.cpp
 *   pads n_ctx: a 100-position context is 256 there). Here the context is the session's
 *   (`LlamaStage.newSession(nCtx)`, which every stage of a pipeline opens with the same nCtx),
 *   rounded the same way, so a session gets the factors llama.cpp would use for a context of
 *   its size, and every stage of a chain picks the same set. With the original contexts of the
 *   published checkpoints (4096, a multiple of 256), the rounding changes no choice: a session
 *   of at most 4096 positions uses the short set, a longer one the long set.
 *
 * The file's `rope.scaling.attn_factor` (LongRoPE's √(1 + ln s / ln n), 1.19 for Phi-3 mini 128k)
 * scales cos and sin whichever set is used (config.ropeAttnFactor, RopeParams.attnFactor).
 *
 * @module
 */
import { GGMLType, typeName } from "../kernels/quant/types.ts";
import { type LlamaConfig, LONG_ROPE_TENSORS, ModelConfigError } from "./config.ts";
import type { GGUFTensorInfo } from "./gguf/types.ts";

/** What reading the factors needs of a model file (LlamaStage's TensorSource has it). */
export interface FactorSource {
  tensor(name: string): GGUFTensorInfo | undefined;
  readTensor(info: GGUFTensorInfo): Promise<Uint8Array>;
}

/** The frequency factors a model file carries, checked (see the module comment). */
export type RopeFactorSets =
  | { readonly kind: "none" }
  | { readonly kind: "freqs"; readonly freqs: Float32Array }
  | { readonly kind: "longrope"; readonly long: Float32Array; readonly short: Float32Array };

/** The factors one session rotates with: `set` names them (the prefix cache keeps sets apart). */
export interface SessionRopeFactors {
  readonly set: "none" | "freqs" | "long" | "short";
  readonly factors?: Float32Array;
}

/** llama.cpp rounds a context up to a multiple of this before it compares (GGML_PAD(n_ctx, 256)). */
const LLAMA_CTX_PAD = 256;

/**
 * Read and check a file's RoPE frequency factors: `rope_freqs.weight` (llama only: configFromFile
 * refuses it elsewhere), or LongRoPE's two sets (phi3: configFromFile refuses one without the
 * other). Each must be F32 with rope.dimension_count / 2 finite, positive values.
 */
export async function readRopeFactors(
  src: FactorSource,
  config: LlamaConfig,
): Promise<RopeFactorSets> {
  if (config.longRope) {
    const [long, short] = await Promise.all(
      LONG_ROPE_TENSORS.map((n) => readFactors(src, config, n)),
    );
    return { kind: "longrope", long: long!, short: short! };
  }
  const freqs = await readFactors(src, config, "rope_freqs.weight");
  return freqs ? { kind: "freqs", freqs } : { kind: "none" };
}

/** One factor tensor, checked; undefined when the file lacks it. */
async function readFactors(
  src: FactorSource,
  config: LlamaConfig,
  name: string,
): Promise<Float32Array | undefined> {
  const info = src.tensor(name);
  if (!info) return undefined;
  const n = config.ropeDim / 2;
  const count = info.dims.reduce((a, d) => a * d, 1);
  if (info.type !== GGMLType.F32 || count !== n || info.dims[0] !== n) {
    throw new ModelConfigError(
      `tensor ${name} is ${typeName(info.type)} [${info.dims.join(", ")}], expected ` +
        `F32 [${n}] (rope.dimension_count / 2)`,
    );
  }
  const bytes = await src.readTensor(info);
  const factors = new Float32Array(bytes.slice().buffer, 0, n);
  const bad = factors.findIndex((f) => !(f > 0 && Number.isFinite(f)));
  if (bad >= 0) {
    throw new ModelConfigError(
      `${name}[${bad}] is ${factors[bad]}; a frequency factor must be finite and > 0`,
    );
  }
  return factors;
}

/**
 * Whether a LongRoPE session of `nCtx` positions uses the long factors: llama.cpp's choice for a
 * context of that size (rounded up to a multiple of 256, then compared with the original
 * context).
 */
export function usesLongFactors(config: LlamaConfig, nCtx: number): boolean {
  return Math.ceil(nCtx / LLAMA_CTX_PAD) * LLAMA_CTX_PAD > config.ropeOrigContext;
}

/** The factors a session of `nCtx` positions rotates with. */
export function sessionRopeFactors(
  sets: RopeFactorSets,
  config: LlamaConfig,
  nCtx: number,
): SessionRopeFactors {
  switch (sets.kind) {
    case "none":
      return { set: "none" };
    case "freqs":
      return { set: "freqs", factors: sets.freqs };
    case "longrope":
      return usesLongFactors(config, nCtx)
        ? { set: "long", factors: sets.long }
        : { set: "short", factors: sets.short };
  }
}
