/**
 * The compute interface the model is written against.
 *
 * `model/llama.ts` calls only these methods, so a layer's math exists once and every backend
 * (reference TypeScript, WASM SIMD, WebGPU) is interchangeable and testable against the
 * reference on the same inputs.
 *
 * Conventions:
 * - Activations live in backend-owned `Buf`s of float32 elements, row-major `[rows × cols]`.
 * - A weight of shape `[ne0, ne1]` (GGUF order) is a matrix of `ne1` rows, each `ne0` long;
 *   `matmul(w, x, out, rows)` computes `out[t, r] = Σ_c W[r, c] · x[t, c]` for each of `rows`
 *   activation rows `t`.
 * - Ops are enqueued and may run later (WebGPU) or at once (reference); `read` is the only
 *   point where results must be visible, so it is the only async method.
 * - Matmuls reproduce ggml's CPU numerics: activations are first converted to the weight type's
 *   "vec_dot type" (Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the K-quants, F16 for
 *   F16, BF16 for BF16) and the dot products are taken in that form. This is what makes our logits
 *   match llama.cpp's on quantized models (see ../shared/fixtures/README.md).
 */
import type { GGMLType } from "./quant/types.ts";

/** A weight tensor as it comes out of a GGUF file: raw block bytes plus shape. */
export interface WeightSpec {
  readonly name: string;
  readonly type: GGMLType;
  /** GGUF dimension order: `shape[0]` is the row length (ne0), `shape[1]` the row count (ne1). */
  readonly shape: readonly number[];
  /** Exactly the tensor's bytes (ggml block layout). */
  readonly data: Uint8Array;
}

/** A weight's name, type and shape, before its bytes arrive. */
export type WeightShape = Omit<WeightSpec, "data">;

/**
 * A weight being filled piece by piece. Loaders stream a tensor from disk through one small
 * reused buffer, so no whole-tensor copy ever exists outside the backend: an agent's memory is
 * its weights and KV caches, not those plus the file reads that brought them.
 */
export interface WeightWriter {
  /** Bytes the weight takes (ggml block layout). */
  readonly bytes: number;
  /** Copy `chunk` to byte `offset` of the weight; the caller may reuse `chunk` afterwards. */
  write(chunk: Uint8Array, offset: number): void;
  /** Every byte is written: check and return the usable weight. */
  finish(): Weight;
  /** Give the allocation back (the load failed part-way); the writer is unusable afterwards. */
  abort(): void;
}

/** A weight uploaded to a backend. Opaque: only the backend that made it may use it. */
export interface Weight {
  readonly name: string;
  readonly type: GGMLType;
  readonly shape: readonly number[];
}

/** A float32 activation buffer owned by a backend. Opaque handle; `length` is in elements. */
export interface Buf {
  readonly length: number;
}

/**
 * The backend has no memory left for an allocation (a KV cache, a buffer): nothing was
 * allocated, and the caller may free something and try again.
 */
export class BackendMemoryError extends Error {
  override name = "BackendMemoryError";
}

/** Element type of a KV cache. ggml's default for llama.cpp users is f16; goldens use f32. */
export type KVType = "f32" | "f16";

/** Keys and values of every layer of one sequence, `[nLayers][nCtx × kvDim]`. */
export interface KVCache {
  readonly nLayers: number;
  readonly nCtx: number;
  /** nKVHeads × headDim */
  readonly kvDim: number;
  readonly type: KVType;
}

/** Rotary position embedding parameters (ggml_rope_ext with ext_factor 0). */
export interface RopeParams {
  readonly nHeads: number;
  readonly headDim: number;
  /** Rotated dimensions per head (`rope.dimension_count`, ≤ headDim); the rest pass through. */
  readonly ropeDim: number;
  readonly freqBase: number;
  /** 1 / linear scaling factor. */
  readonly freqScale: number;
  /** NEOX ordering rotates (i, i + ropeDim/2) pairs; normal ordering rotates (2i, 2i+1). */
  readonly neox: boolean;
  /**
   * Per-frequency divisors of θ, ropeDim/2 of them (`rope_freqs.weight`: Llama 3.1's long
   * context scaling; LongRoPE's long or short set); absent: all 1.
   */
  readonly freqFactors?: Float32Array;
  /**
   * ggml_rope_ext's attn_factor (mscale): cos θ and sin θ are each multiplied by it in float
   * (`rope.scaling.attn_factor`, LongRoPE's √(1 + ln s / ln n)); absent: 1.
   */
  readonly attnFactor?: number;
}

/** One sequence of a batch in {@link Backend.attentionMany}: its cache, positions and rows. */
export interface AttentionSeq {
  readonly cache: KVCache;
  readonly pos0: number;
  readonly rows: number;
  readonly rowOffset: number;
}

/** Multi-head (grouped-query) attention parameters. */
export interface AttentionParams {
  readonly nHeads: number;
  readonly nKVHeads: number;
  readonly headDim: number;
  /** Usually 1/sqrt(headDim). */
  readonly scale: number;
  /**
   * Sliding window (0 or absent: none): the query at position p attends only to positions
   * p − window + 1 … p, masked as llama.cpp masks (the rest take probability 0).
   */
  readonly window?: number;
}

/**
 * Sampling candidates of one logit row ({@link Backend.topCandidates}): what a sampler needs to
 * pick a token and report log-probabilities, without the whole row.
 */
export interface TopCandidates {
  /** Ids of the k largest values outside the exclude list, largest first, ties to the lower id. */
  readonly ids: Int32Array;
  /** Their values. */
  readonly values: Float32Array;
  /** The values of the excluded ids, in the order they were given. */
  readonly excluded: Float32Array;
  /**
   * Largest value outside the exclude list; NaN when the row holds a NaN there (no NaN ever
   * ranks among the candidates, so this is how a caller learns the row is unusable).
   */
  readonly max: number;
  /** Σ e^(v − max) over the values outside the exclude list (float32 arithmetic). */
  readonly sumExp: number;
}

/** Words one row of candidates takes in a device buffer ({@link Backend.topCandidatesInto}). */
export function candidateWords(k: number): number {
  return 2 * k + 2;
}

/**
 * The candidates stored at word `o` of `words` (read back as floats) in the device layout: k ids (0xffffffff where
 * fewer values exist), k values, the excluded ids' values (`sorted`: the exclude list ascending,
 * as stored; `exclude`: the caller's order, as returned), the max and the softmax sum.
 */
export function candidatesAt(
  words: Float32Array,
  o: number,
  k: number,
  exclude: Int32Array = new Int32Array(),
  sorted: Uint32Array = new Uint32Array(),
): TopCandidates {
  const f = words;
  const u = new Uint32Array(f.buffer, f.byteOffset, f.length);
  const nEx = sorted.length;
  let have = 0;
  while (have < k && u[o + have] !== 0xffffffff) have++;
  // Back to the caller's order of excluded ids.
  const excluded = Float32Array.from(exclude, (id) => {
    let lo = 0, hi = nEx;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (sorted[mid] < id) lo = mid + 1;
      else hi = mid;
    }
    return f[o + 2 * k + lo];
  });
  return {
    ids: Int32Array.from(u.subarray(o, o + have)),
    values: f.slice(o + k, o + k + have),
    excluded,
    max: f[o + 2 * k + nEx],
    sumExp: f[o + 2 * k + nEx + 1],
  };
}

/** A compute backend. Every method but `read` may be asynchronous under the hood. */
export interface Backend {
  /** "reference", "wasm", "webgpu". */
  readonly name: string;
  /** Free-form description of the device (e.g. "llvmpipe (LLVM 15)", "2 threads, SIMD"). */
  readonly device: string;

  /**
   * Rows [first, first + count) of a weight as a weight of its own, sharing its memory (fused
   * q/k/v or gate/up tensors, one expert of a 3-D expert tensor). Freeing a view frees nothing;
   * freeing the weight ends its views.
   */
  weightRows(w: Weight, first: number, count: number): Weight;
  /** Copy a weight to the backend once; the returned handle is used by the ops below. */
  upload(spec: WeightSpec): Weight;
  /** Allocate a weight and return a writer that fills it in pieces (see {@link WeightWriter}). */
  beginUpload(shape: WeightShape): WeightWriter;
  /** Allocate a zeroed activation buffer of `length` float32 elements. */
  buffer(length: number): Buf;
  /** Copy `src` into `dst` starting at element `offset`. */
  write(dst: Buf, src: Float32Array, offset?: number): void;
  /** Wait for pending work and copy `length` elements of `src` from `offset` to the host. */
  read(src: Buf, offset?: number, length?: number): Promise<Float32Array>;
  /**
   * Allocate a KV cache for one sequence. `headDim` (kvDim when absent: one head): the size of
   * one KV head, which a backend may use to keep each head's entries together (the WASM backend
   * does: a long context's attention then streams each head's keys and values instead of
   * striding across every head's).
   */
  kvCache(nLayers: number, nCtx: number, kvDim: number, type: KVType, headDim?: number): KVCache;

  /** out[t, :] = dequantized row `ids[t]` of `table` (ggml_get_rows). */
  embed(table: Weight, ids: Int32Array, out: Buf): void;
  /** out[t, :] = x[t, :] / sqrt(mean(x[t, :]²) + eps) ⊙ weight, for `rows` rows of weight.shape[0]. */
  rmsNorm(x: Buf, weight: Weight, out: Buf, rows: number, eps: number): void;
  /** out[t, r] = Σ_c W[r, c] · x[t, c] with ggml's activation conversion (see file comment). */
  matmul(w: Weight, x: Buf, out: Buf, rows: number): void;
  /**
   * matmul(ws[i], x, outs[i], rows) for each i (optional): the same results, but a backend may
   * run weights that share the input as one job (q/k/v, gate/up: fewer thread hand-offs).
   */
  matmulMany?(ws: Weight[], x: Buf, outs: Buf[], rows: number): void;
  /** x[t, :] += bias, for `rows` rows of bias.shape[0]. */
  addBias(x: Buf, bias: Weight, rows: number): void;
  /** Rotate x `[positions.length × nHeads × headDim]` in place; row t is at `positions[t]`. */
  rope(x: Buf, positions: Int32Array, params: RopeParams): void;
  /**
   * Write `rows` rows of k and v (`[rows × kvDim]`, starting at row `rowOffset`) into `cache`'s
   * `layer` at positions `pos0 .. pos0 + rows - 1`.
   */
  storeKV(
    cache: KVCache,
    layer: number,
    k: Buf,
    v: Buf,
    pos0: number,
    rows: number,
    rowOffset?: number,
  ): void;
  /**
   * Causal attention of `rows` query rows (`q` `[rows × nHeads × headDim]` from `rowOffset`) at
   * positions `pos0 ..` over `cache`'s `layer` entries `0 .. pos0 + t`; writes `out` rows likewise.
   */
  attention(
    q: Buf,
    cache: KVCache,
    layer: number,
    out: Buf,
    pos0: number,
    rows: number,
    params: AttentionParams,
    rowOffset?: number,
  ): void;
  /**
   * attention(q, s.cache, layer, out, s.pos0, s.rows, params, s.rowOffset) for each sequence of a
   * batch (optional): the same results, but a backend may share the sequences out over its
   * threads as one job (a decode row's attention alone is too small to split). The sequences'
   * rows must not overlap (they run at once, not in order).
   */
  attentionMany?(
    q: Buf,
    layer: number,
    out: Buf,
    seqs: readonly AttentionSeq[],
    params: AttentionParams,
  ): void;
  /** out = silu(gate) ⊙ up over `n` elements. */
  swiglu(gate: Buf, up: Buf, out: Buf, n: number): void;
  /** a += b over `n` elements. */
  add(a: Buf, b: Buf, n: number): void;
  /** x *= s over `n` elements (ggml_scale; `s` is taken as a float32). */
  scale(x: Buf, s: number, n: number): void;
  /**
   * out = gelu(gate) ⊙ up over `n` elements, GELU with the tanh approximation read from ggml's
   * f16 table (input rounded to f16, exact outside ±10): see kernels/gelu.ts.
   */
  geglu(gate: Buf, up: Buf, out: Buf, n: number): void;
  /**
   * dst[dstRows[i], :] = src[srcRows[i], :] for each i, rows of `cols` floats (ggml_get_rows);
   * with `scales`, times scales[i] in float32 (ggml_mul by one weight per row). A mixture of
   * experts gathers each expert's input rows and scatters its weighted output rows with it.
   */
  copyRows(
    src: Buf,
    srcRows: Int32Array,
    dst: Buf,
    dstRows: Int32Array,
    cols: number,
    scales?: Float32Array,
  ): void;
  /**
   * dst[g, :] = ((src[g·k, :] + src[g·k + 1, :]) + …) + src[g·k + k − 1, :] for `groups` groups
   * of k rows of `cols` floats, added in float32 in that order (llama.cpp's sum of the experts).
   */
  sumRowGroups(src: Buf, dst: Buf, groups: number, k: number, cols: number): void;

  /**
   * Optional: the `k` (≤ 64) largest values of each of `rows` rows of `src` (`n` floats each,
   * `n` apart) whose ids are not in that row's `exclude` list (distinct ids, at most 256), plus
   * the excluded values and the row's softmax sum; a sampler then reads back a few hundred bytes
   * per step instead of `n` floats. Backends without it leave sampling to the host's full read.
   * `sums` false: the softmax sum is not wanted (no log-probabilities); a backend may skip it
   * and return NaN.
   */
  topCandidates?(
    src: Buf,
    rows: number,
    n: number,
    k: number,
    exclude: readonly Int32Array[],
    sums?: boolean,
  ): Promise<TopCandidates[]>;

  /**
   * Optional, for decoding several greedy steps with one read back: record the k (≤ 64)
   * candidates of one row of `n` logits of `src` (no exclude list) into `dst` from word `offset`
   * on ({@link candidateWords}(k) words, the layout {@link candidatesAt} reads), without waiting
   * for them. Backends that have it also have {@link Backend.embedAt}.
   */
  topCandidatesInto?(src: Buf, n: number, k: number, dst: Buf, offset: number): void;
  /**
   * Optional: `out[0, :] = table[id]` where `id` is the word at `offset` of `ids`, left there by
   * topCandidatesInto (the best candidate of a previous step), so the next step starts without
   * the id visiting the host. An id outside the table (none was found) embeds zeros.
   */
  embedAt?(table: Weight, ids: Buf, offset: number, out: Buf): void;

  /**
   * Optional: no op is coming soon, so threads waiting for the next one may sleep now rather
   * than spin (a pipeline stage calls it when its queue empties: its next frame is a network
   * round trip away, and a spinning thread would take a core from the stage computing
   * meanwhile). The next op wakes them.
   */
  park?(): void;

  /**
   * Optional: start the work recorded so far without waiting for it (a device backend that
   * records commands submits them), so the device runs while the host records what follows.
   */
  flush?(): void;

  /**
   * Optional: make room for about `bytes` of weights before they are uploaded and fault that
   * memory in on another thread, so a load after a fetch writes into pages that exist (first
   * touches of fresh memory are slow on virtual machines). Resolves when done; best effort.
   */
  prefault?(bytes: number): Promise<void>;

  /** Release one buffer, cache or weight (e.g. a finished session's KV cache). */
  free(handle: Buf | KVCache | Weight): void;
  /** Release every resource (weights, buffers, caches, workers, device). */
  dispose(): void;
}
