/**
 * Hyperparameters of a llama-family model, read from GGUF metadata the way llama.cpp reads them.
 */
import type { GGUFValue } from "./gguf/types.ts";
import { typeInfo, typeName } from "../kernels/quant/types.ts";
import type { KVType } from "../kernels/backend.ts";

/**
 * Architectures we run. All are the llama block: qwen2 adds q/k/v biases and NEOX RoPE; qwen3
 * per-head q/k norms; qwen3moe a mixture-of-experts FFN; gemma3 sliding-window layers, GELU and
 * post-norms; phi3 fused q/k/v and gate/up weights.
 */
export const SUPPORTED_ARCHITECTURES = [
  "llama",
  "qwen2",
  "qwen3",
  "qwen3moe",
  "gemma3",
  "phi3",
] as const;
/** One of SUPPORTED_ARCHITECTURES. */
export type Architecture = typeof SUPPORTED_ARCHITECTURES[number];

/** Everything the forward pass needs to know about a model's shape. */
export interface LlamaConfig {
  readonly arch: Architecture;
  readonly name: string;
  readonly nLayers: number;
  readonly nEmbd: number;
  readonly nFF: number;
  readonly nHeads: number;
  readonly nKVHeads: number;
  readonly headDim: number;
  readonly nVocab: number;
  readonly contextLength: number;
  readonly rmsEps: number;
  readonly ropeDim: number;
  readonly ropeFreqBase: number;
  /** 1 / linear scaling factor (1 when the model is not rope-scaled). */
  readonly ropeFreqScale: number;
  /** NEOX ordering (qwen2) rotates (i, i+d/2); normal ordering (llama) rotates (2i, 2i+1). */
  readonly ropeNeox: boolean;
  /**
   * `rope.scaling.attn_factor` (1 when absent): llama.cpp multiplies RoPE's cos and sin by it
   * (ggml_rope_ext's attn_factor, ext_factor 0), in every architecture's graph. LongRoPE files
   * carry √(1 + ln(context / original) / ln(original)): 1.19 for Phi-3 mini 128k.
   */
  readonly ropeAttnFactor: number;
  /**
   * LongRoPE (phi3 with `rope_factors_long.weight` and `rope_factors_short.weight`: Phi-3 mini
   * 128k, Phi-3.5 mini, Phi-4 mini): a session whose context exceeds `ropeOrigContext` rotates
   * with the long factors, any other with the short ones (model/rope_factors.ts).
   */
  readonly longRope: boolean;
  /**
   * `rope.scaling.original_context_length`, llama.cpp's n_ctx_orig_yarn (context_length when
   * absent): the context LongRoPE's short factors serve.
   */
  readonly ropeOrigContext: number;
  /** RMSNorm of each head's q and k (attn_q_norm, attn_k_norm) before RoPE. */
  readonly qkNorm: boolean;
  /** Experts per layer (0: dense FFN), experts used per token, FFN size of one expert. */
  readonly nExperts: number;
  readonly nExpertsUsed: number;
  readonly nFFExpert: number;
  /** Sliding-window attention (0: none): layer il slides when il % pattern < pattern − 1. */
  readonly slidingWindow: number;
  readonly slidingPattern: number;
  /** RoPE base of the sliding layers. */
  readonly ropeFreqBaseSwa: number;
  /** gemma3: embeddings × √n_embd, GELU(tanh) FFN, norms after attention and FFN. */
  readonly gemma: boolean;
}

/**
 * Bytes the KV cache of one session of `nCtx` positions takes over `layers` layers: K and V of
 * every KV head, in `kvType`. Stages allocate by it, and placement reserves by it.
 */
export function kvCacheBytes(
  config: Pick<LlamaConfig, "nKVHeads" | "headDim">,
  layers: number,
  nCtx: number,
  kvType: KVType = "f32",
): number {
  return 2 * layers * nCtx * config.nKVHeads * config.headDim * (kvType === "f32" ? 4 : 2);
}

/** The minimal metadata view the config reader needs (GGUFMetadata satisfies it). */
export interface MetadataView {
  get(key: string): GGUFValue | undefined;
}

/** Thrown when the metadata does not describe a model we can run; the message says what is missing. */
export class ModelConfigError extends Error {
  override name = "ModelConfigError";
}

function num(md: MetadataView, key: string): number | undefined {
  const v = md.get(key);
  if (v === undefined) return undefined;
  if (typeof v === "number") return v;
  if (typeof v === "bigint" && v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= 0n) return Number(v);
  throw new ModelConfigError(`metadata key ${key} should be a number, found ${typeof v}`);
}

function required(md: MetadataView, key: string): number {
  const v = num(md, key);
  if (v === undefined) throw new ModelConfigError(`model metadata lacks required key ${key}`);
  return v;
}

function positiveInt(key: string, v: number): number {
  if (!Number.isInteger(v) || v <= 0) {
    throw new ModelConfigError(`metadata key ${key} must be a positive integer, found ${v}`);
  }
  return v;
}

/**
 * Read a LlamaConfig from metadata; `nVocab` comes from token_embd's shape because
 * `<arch>.vocab_size` is optional (convert_hf_to_gguf omits it for qwen2).
 */
export function readConfig(md: MetadataView, nVocab: number): LlamaConfig {
  const archValue = md.get("general.architecture");
  if (typeof archValue !== "string") {
    throw new ModelConfigError("model metadata lacks general.architecture");
  }
  if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(archValue)) {
    throw new ModelConfigError(
      `unsupported architecture "${archValue}" (supported: ${SUPPORTED_ARCHITECTURES.join(", ")})`,
    );
  }
  const arch = archValue as Architecture;
  const k = (s: string) => `${arch}.${s}`;
  const nEmbd = positiveInt(k("embedding_length"), required(md, k("embedding_length")));
  const nHeads = positiveInt(k("attention.head_count"), required(md, k("attention.head_count")));
  const nKVHeads = positiveInt(
    k("attention.head_count_kv"),
    num(md, k("attention.head_count_kv")) ?? nHeads,
  );
  if (nHeads % nKVHeads !== 0) {
    throw new ModelConfigError(
      `head_count ${nHeads} is not a multiple of head_count_kv ${nKVHeads}`,
    );
  }
  const headDim = positiveInt(
    k("attention.key_length"),
    num(md, k("attention.key_length")) ?? nEmbd / nHeads,
  );
  const ropeDim = positiveInt(
    k("rope.dimension_count"),
    num(md, k("rope.dimension_count")) ?? headDim,
  );
  if (ropeDim > headDim || ropeDim % 2 !== 0) {
    throw new ModelConfigError(
      `rope.dimension_count ${ropeDim} must be even and ≤ head size ${headDim}`,
    );
  }
  // Partial rotary is phi3's and gemma3's; llama.cpp refuses it for llama at load and asserts
  // n_rot == head size in the qwen graphs.
  if (ropeDim !== headDim && arch !== "phi3" && arch !== "gemma3") {
    throw new ModelConfigError(
      `rope.dimension_count ${ropeDim} differs from the head size ${headDim}: partial rotary ` +
        `is not part of the ${arch} architecture (llama.cpp refuses it too)`,
    );
  }
  // llama.cpp reads it for every architecture (hparams.rope_attn_factor) and every graph here
  // passes it to ggml_rope_ext; a value that is no scale at all is refused rather than run.
  const ropeAttnFactor = num(md, k("rope.scaling.attn_factor")) ?? 1;
  if (!(Number.isFinite(ropeAttnFactor) && ropeAttnFactor > 0)) {
    throw new ModelConfigError(
      `rope.scaling.attn_factor ${ropeAttnFactor} is not a positive number`,
    );
  }
  // Keys llama.cpp honours that change the math this code does not do: refused, not ignored.
  if (md.get(k("attention.causal")) === false) {
    throw new ModelConfigError(
      `attention.causal is false (an embedding model's non-causal attention is not supported)`,
    );
  }
  const softcap = num(md, k("final_logit_softcapping"));
  if (arch === "gemma3" && softcap !== undefined && softcap !== 0) {
    throw new ModelConfigError(
      `final_logit_softcapping ${softcap} is not supported (llama.cpp caps gemma3's logits ` +
        `with it; only 0, no cap, runs here)`,
    );
  }
  // Linear RoPE scaling: the modern key pair, or the legacy scale_linear key.
  let ropeFreqScale = 1;
  const scalingType = md.get(k("rope.scaling.type"));
  const factor = num(md, k("rope.scaling.factor")) ?? num(md, k("rope.scale_linear"));
  if (
    factor !== undefined && factor > 0 && (scalingType === undefined || scalingType === "linear")
  ) {
    ropeFreqScale = 1 / factor;
  } else if (
    typeof scalingType === "string" && scalingType !== "none" && scalingType !== "linear"
  ) {
    throw new ModelConfigError(
      `unsupported rope scaling type "${scalingType}" (supported: linear)`,
    );
  }
  const valueDim = num(md, k("attention.value_length")) ?? headDim;
  if (valueDim !== headDim) {
    throw new ModelConfigError(
      `attention.value_length ${valueDim} differs from key_length ${headDim} (not supported)`,
    );
  }
  const moe = readExperts(md, arch);
  const swa = readSlidingWindow(md, arch);
  const name = md.get("general.name");
  // Required, as llama.cpp requires it and the rms epsilon (llama-model.cpp reads both without a
  // default): a default would run a file llama.cpp refuses, with other numbers than its author
  // meant.
  const contextLength = positiveInt(k("context_length"), required(md, k("context_length")));
  return {
    arch,
    name: typeof name === "string" ? name : arch,
    nLayers: positiveInt(k("block_count"), required(md, k("block_count"))),
    nEmbd,
    nFF: positiveInt(k("feed_forward_length"), required(md, k("feed_forward_length"))),
    nHeads,
    nKVHeads,
    headDim,
    nVocab,
    contextLength,
    rmsEps: required(md, k("attention.layer_norm_rms_epsilon")),
    ropeDim,
    ropeFreqBase: num(md, k("rope.freq_base")) ?? 10000,
    ropeFreqScale,
    ropeNeox: arch !== "llama",
    ropeAttnFactor,
    // Set by configFromFile, which sees the tensors.
    longRope: false,
    ropeOrigContext: positiveInt(
      k("rope.scaling.original_context_length"),
      num(md, k("rope.scaling.original_context_length")) ?? contextLength,
    ),
    qkNorm: arch === "qwen3" || arch === "qwen3moe" || arch === "gemma3",
    ...moe,
    ...swa,
    gemma: arch === "gemma3",
  };
}

/** qwen3moe's expert counts and expert FFN size. */
function readExperts(
  md: MetadataView,
  arch: Architecture,
): { nExperts: number; nExpertsUsed: number; nFFExpert: number } {
  if (arch !== "qwen3moe") return { nExperts: 0, nExpertsUsed: 0, nFFExpert: 0 };
  const k = (s: string) => `${arch}.${s}`;
  const nExperts = positiveInt(k("expert_count"), required(md, k("expert_count")));
  const nExpertsUsed = positiveInt(k("expert_used_count"), required(md, k("expert_used_count")));
  if (nExpertsUsed > nExperts) {
    throw new ModelConfigError(
      `expert_used_count ${nExpertsUsed} exceeds expert_count ${nExperts}`,
    );
  }
  const nFFExpert = positiveInt(
    k("expert_feed_forward_length"),
    required(md, k("expert_feed_forward_length")),
  );
  return { nExperts, nExpertsUsed, nFFExpert };
}

/** gemma3's sliding window, its layer pattern and the sliding layers' RoPE base. */
function readSlidingWindow(
  md: MetadataView,
  arch: Architecture,
): { slidingWindow: number; slidingPattern: number; ropeFreqBaseSwa: number } {
  const k = (s: string) => `${arch}.${s}`;
  const base = num(md, k("rope.freq_base")) ?? 10000;
  if (arch !== "gemma3") return { slidingWindow: 0, slidingPattern: 0, ropeFreqBaseSwa: base };
  // Optional, as in llama.cpp: absent or 0, every layer attends globally.
  const window = num(md, k("attention.sliding_window"));
  // (NaN, falsy too, turned the window off silently: positiveInt refuses it below)
  if (window === undefined || window === 0) {
    return { slidingWindow: 0, slidingPattern: 0, ropeFreqBaseSwa: base };
  }
  return {
    slidingWindow: positiveInt(k("attention.sliding_window"), window),
    // llama.cpp's default for gemma3 when the key is absent: 5 sliding layers, then a global one.
    slidingPattern: positiveInt(
      k("attention.sliding_window_pattern"),
      num(md, k("attention.sliding_window_pattern")) ?? 6,
    ),
    // llama.cpp's gemma3 default for the sliding layers' RoPE base.
    ropeFreqBaseSwa: num(md, k("rope.freq_base_swa")) ?? 10000,
  };
}

/**
 * Refuse a file whose tokenizer lists another number of tokens than token_embd has rows, as
 * llama.cpp does: sampled ids past the tokenizer's end had no text, and a generation failed
 * mid-stream.
 */
export function checkVocabulary(c: LlamaConfig, tokenizerSize: number): void {
  if (tokenizerSize !== c.nVocab) {
    throw new ModelConfigError(
      `the tokenizer lists ${tokenizerSize} tokens but token_embd.weight has ${c.nVocab} rows`,
    );
  }
}

/** True when layer `il` of a model with this config uses sliding-window attention. */
export function isSlidingLayer(c: LlamaConfig, il: number): boolean {
  return c.slidingWindow > 0 && il % c.slidingPattern < c.slidingPattern - 1;
}

/** What `configFromFile` needs of a GGUF file: metadata and the tensor index. */
export interface ConfigSource {
  readonly metadata: MetadataView;
  /** Every tensor the file holds (GGUFFile's index), with its GGML type where known. */
  readonly tensors: readonly { readonly name: string; readonly type?: number }[];
  tensor(name: string): { readonly dims: readonly number[] } | undefined;
}

/** The config of a model file; the vocabulary size comes from token_embd's shape. */
export function configFromFile(src: ConfigSource): LlamaConfig {
  const embd = src.tensor("token_embd.weight");
  if (!embd) throw new ModelConfigError("model has no tensor token_embd.weight");
  let config = readConfig(src.metadata, embd.dims[1] ?? 0);
  checkAgainstTensors(config, src);
  checkTensorNames(config, src);
  if (config.arch === "phi3" && src.tensor(LONG_ROPE_TENSORS[0])) {
    config = { ...config, longRope: true };
  }
  return config;
}

/** LongRoPE's factor tensors (phi3): the long set, then the short one. */
export const LONG_ROPE_TENSORS = ["rope_factors_long.weight", "rope_factors_short.weight"] as const;

/** Per-block tensors each architecture's llama.cpp graph reads (`blk.N.` + name). */
function blockTensors(c: LlamaConfig): Set<string> {
  const names = ["attn_norm.weight", "attn_output.weight", "ffn_norm.weight"];
  if (c.arch === "phi3") names.push("attn_qkv.weight");
  else names.push("attn_q.weight", "attn_k.weight", "attn_v.weight");
  // q/k/v biases: qwen2 always has them, llama may (llama.cpp loads them as optional there).
  if (c.arch === "qwen2" || c.arch === "llama") {
    names.push("attn_q.bias", "attn_k.bias", "attn_v.bias");
  }
  if (c.qkNorm) names.push("attn_q_norm.weight", "attn_k_norm.weight");
  if (c.gemma) names.push("post_attention_norm.weight", "post_ffw_norm.weight");
  if (c.nExperts > 0) {
    names.push(
      "ffn_gate_inp.weight",
      "ffn_gate_exps.weight",
      "ffn_up_exps.weight",
      "ffn_down_exps.weight",
    );
  } else if (c.arch === "phi3") names.push("ffn_up.weight", "ffn_down.weight");
  else names.push("ffn_gate.weight", "ffn_up.weight", "ffn_down.weight");
  return new Set(names);
}

/**
 * Refuse a file holding a tensor this code does not read, as llama.cpp refuses one holding a
 * tensor its graph does not create ("wrong number of tensors"). Without this, an output or FFN
 * bias, a fused q/k/v bias or anything else a converter added was silently left out of the
 * math, and the logits were not the file's (2.0–2.4 off llama.cpp's, another argmax). Checked
 * on the whole index, so every stage refuses, not only the one holding the odd layer.
 */
function checkTensorNames(c: LlamaConfig, src: ConfigSource): void {
  const perBlock = blockTensors(c);
  const global = new Set(["token_embd.weight", "output_norm.weight", "output.weight"]);
  // Llama 3.1+'s RoPE frequency factors: only llama's graph reads them.
  if (c.arch === "llama") global.add("rope_freqs.weight");
  // LongRoPE's two sets (Phi-3 mini 128k, Phi-3.5 mini, Phi-4 mini): phi3's graph reads them.
  if (c.arch === "phi3") {
    const [long, short] = LONG_ROPE_TENSORS;
    for (const [has, lacks] of [[long, short], [short, long]]) {
      if (src.tensor(has) && !src.tensor(lacks)) {
        throw new ModelConfigError(
          `tensor ${has} is present but ${lacks} is not: LongRoPE needs both (llama.cpp picks ` +
            `one of them by the session's context length)`,
        );
      }
    }
    for (const name of LONG_ROPE_TENSORS) global.add(name);
  }
  for (const { name } of src.tensors) {
    if (global.has(name)) continue;
    const m = /^blk\.(\d+)\.(.+)$/.exec(name);
    // The block number as the code reads it ("blk.01." names a tensor nothing reads).
    if (m && String(Number(m[1])) === m[1] && Number(m[1]) < c.nLayers && perBlock.has(m[2])) {
      continue;
    }
    throw new ModelConfigError(
      `tensor ${name.slice(0, 96)} is not used by the ${c.arch} architecture as this ` +
        `code runs it (llama.cpp refuses such a file too, or reads it where this code would ` +
        `leave it out)`,
    );
  }
  // Every block holds what block 0 holds, in the same shape: `models inspect` called a file
  // without blk.1.ffn_gate.weight supported, and only the stage holding block 1 failed to load.
  for (const name of perBlock) {
    const first = src.tensor(`blk.0.${name}`);
    if (!first) continue;
    for (let b = 1; b < c.nLayers; b++) {
      const t = src.tensor(`blk.${b}.${name}`);
      if (!t) throw new ModelConfigError(`tensor blk.${b}.${name} is missing (blk.0 has it)`);
      if (t.dims.length !== first.dims.length || t.dims.some((d, i) => d !== first.dims[i])) {
        throw new ModelConfigError(
          `tensor blk.${b}.${name} is [${t.dims.join(", ")}] where blk.0's is ` +
            `[${first.dims.join(", ")}]`,
        );
      }
    }
  }
}

/**
 * Check the hyperparameters against the tensor table, so a corrupt value (block_count = 10^9)
 * is refused in microseconds instead of sizing arrays, placements and caches by it.
 */
export function checkAgainstTensors(c: LlamaConfig, src: ConfigSource): void {
  const bad = (what: string) => {
    throw new ModelConfigError(`model metadata disagrees with its tensors: ${what}`);
  };
  for (const [key, v] of [["context_length", c.contextLength], ["vocab size", c.nVocab]] as const) {
    if (!Number.isSafeInteger(v) || v <= 0) bad(`${key} ${v} is not a positive integer`);
  }
  for (
    const [key, v] of [
      ["rms epsilon", c.rmsEps],
      ["rope.freq_base", c.ropeFreqBase],
      // (0 or NaN there loaded, and every request failed "its weights hold NaN or Inf")
      ["rope.freq_base_swa", c.ropeFreqBaseSwa],
    ] as const
  ) {
    if (!Number.isFinite(v) || v <= 0) bad(`${key} ${v} is not a positive number`);
  }
  const dims = (name: string, want: readonly number[]) => {
    const t = src.tensor(name);
    if (!t) return;
    const got = t.dims.slice(0, want.length);
    if (got.some((d, i) => d !== want[i])) {
      bad(`${name} has shape [${t.dims.join(", ")}], the metadata implies [${want.join(", ")}]`);
    }
  };
  // Every architecture has one attn_norm per block: the block count is the count of those.
  if (!src.tensor(`blk.${c.nLayers - 1}.attn_norm.weight`)) {
    bad(
      `${c.arch}.block_count is ${c.nLayers} but blk.${c.nLayers - 1}.attn_norm.weight is absent`,
    );
  }
  if (src.tensor(`blk.${c.nLayers}.attn_norm.weight`)) {
    bad(`${c.arch}.block_count is ${c.nLayers} but the file has more blocks`);
  }
  const q = c.nHeads * c.headDim;
  const kv = c.nKVHeads * c.headDim;
  dims("token_embd.weight", [c.nEmbd]);
  dims("output.weight", [c.nEmbd, c.nVocab]);
  dims("blk.0.attn_norm.weight", [c.nEmbd]);
  dims("blk.0.attn_output.weight", [q, c.nEmbd]);
  dims("blk.0.attn_k.weight", [c.nEmbd, kv]);
  dims("blk.0.attn_qkv.weight", [c.nEmbd, q + 2 * kv]);
  dims("blk.0.ffn_down.weight", [c.nFF, c.nEmbd]);
  dims("blk.0.ffn_gate_inp.weight", [c.nEmbd, c.nExperts]);
  dims("blk.0.ffn_down_exps.weight", [c.nFFExpert, c.nEmbd, c.nExperts]);
}

/** A model file's architecture as `llmctl models inspect` reports it (snake_case for JSON). */
export interface ModelSummary {
  readonly architecture: string;
  readonly supported: boolean;
  /** Why the model cannot run (unsupported architecture, missing key …). */
  readonly error?: string;
  readonly layers?: number;
  /** Experts per layer and used per token (mixture-of-experts models). */
  readonly experts?: number;
  readonly experts_used?: number;
  /** Sliding-window size and layer pattern (layer il slides when il % pattern < pattern − 1). */
  readonly sliding_window?: number;
  readonly sliding_window_pattern?: number;
  /**
   * LongRoPE: the original context (a session with more positions uses the long factors, one
   * with at most this many the short ones) and the attention factor scaling cos and sin.
   */
  readonly long_rope?: { readonly original_context: number; readonly attn_factor: number };
}

/**
 * Summarise a model file's architecture; never throws (an unusable file says why).
 * `tokenizerSize` builds its tokenizer (a failure or another size makes it unsupported).
 */
export function summarizeModel(src: ConfigSource, tokenizerSize?: () => number): ModelSummary {
  const arch = src.metadata.get("general.architecture");
  const architecture = typeof arch === "string" ? arch : "unknown";
  let c: LlamaConfig;
  try {
    c = configFromFile(src);
  } catch (e) {
    return { architecture, supported: false, error: (e as Error).message };
  }
  // The tokenizer as every load builds it (a caller that has one passes its size): a broken
  // tokenizer, or one of another vocabulary size, fails every load.
  if (tokenizerSize) {
    try {
      checkVocabulary(c, tokenizerSize());
    } catch (e) {
      return { architecture, supported: false, error: `tokenizer: ${(e as Error).message}` };
    }
  }
  // A tensor of a type no backend runs fails the load (as "unsupported tensor type"): said here,
  // where `models inspect` called such a file supported.
  const odd = src.tensors.find((t) => t.type !== undefined && !typeInfo(t.type)?.weight);
  if (odd) {
    return {
      architecture,
      supported: false,
      error: `tensor ${odd.name}: ${typeName(odd.type!)} is a type this engine does not run`,
    };
  }
  return {
    architecture,
    supported: true,
    layers: c.nLayers,
    ...(c.nExperts > 0 ? { experts: c.nExperts, experts_used: c.nExpertsUsed } : {}),
    ...(c.slidingWindow > 0
      ? { sliding_window: c.slidingWindow, sliding_window_pattern: c.slidingPattern }
      : {}),
    ...(c.longRope
      ? { long_rope: { original_context: c.ropeOrigContext, attn_factor: c.ropeAttnFactor } }
      : {}),
  };
}

/** One line for people: "qwen3moe, 48 layers, 128 experts (8 used per token)". */
export function formatModelSummary(s: ModelSummary): string {
  if (!s.supported) return `${s.architecture}: cannot run: ${s.error}`;
  const parts = [s.architecture, `${s.layers} layers`];
  if (s.experts) parts.push(`${s.experts} experts (${s.experts_used} used per token)`);
  if (s.sliding_window) {
    parts.push(
      `sliding window ${s.sliding_window} (pattern ${s.sliding_window_pattern}: ` +
        `${s.sliding_window_pattern! - 1} of ${s.sliding_window_pattern} layers slide)`,
    );
  }
  if (s.long_rope) {
    const { original_context: orig, attn_factor: f } = s.long_rope;
    parts.push(`LongRoPE (original context ${orig}, attn factor ${Number(f.toPrecision(6))})`);
  }
  return parts.join(", ");
}
