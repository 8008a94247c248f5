/**
 * Models of `deno task bench scale` and of the scale e2e test: llama files of real-model shapes
 * (Llama-3-8B, two layers of Llama-3-70B, a ~300M CI-sized one) with the real llama-bpe
 * vocabulary (`tokenizer.*` of ../shared/fixtures/vocab/ggml-vocab-llama-bpe.gguf, 128256 tokens)
 * and seeded random Q4_0 weights.
 *
 * The Q4_0 blocks are written directly from a seeded PRNG, one tensor at a time (never the file):
 * each block's 32 nibbles are random odd values 1..15 (so q − 8 is symmetric in −7..7, no bias
 * shared by a whole matrix), its f16 scale one of 16 values around `sigma / 4.58` (the standard
 * deviation of q − 8), so every weight matrix has about `sigma` standard deviation. 1-D norms are
 * F32 ones; `output.weight` has `outputSigma` (default: logits of standard deviation ~4). A 4.5 GB file takes about a minute on one core.
 *
 * @example
 * ```ts
 * const path = await scaleModel("ci_q4_0"); // bench/.cache/models/scale-ci_q4_0.gguf
 * ```
 * @module
 */
import { GGMLType } from "../../kernels/quant/types.ts";
import { f32ToF16 } from "../../kernels/quant/float.ts";
import {
  type GGUFMetadataEntry,
  type GGUFTensorHeader,
  meta,
  openGGUF,
  writeGGUFFile,
} from "../../model/gguf/mod.ts";
import { SHARED_FIXTURES } from "./shared.ts";
import { exists } from "./files.ts";
const CACHE_DIR = decodeURIComponent(new URL("../.cache/", import.meta.url).pathname);

/** A llama shape. */
export interface LlamaShape {
  nLayer: number;
  nEmbd: number;
  nHead: number;
  nHeadKv: number;
  nFF: number;
  ropeTheta: number;
  ctx: number;
  /**
   * Standard deviation of output.weight; default 4 / sqrt(nEmbd), logits of standard deviation
   * ~4 whatever the width, so greedy choices are rarely near-ties.
   */
  outputSigma?: number;
}

/** The scale models: name → shape. */
export const SCALE_SHAPES = {
  /** Llama-3-8B: 32 layers, 4096 wide, GQA 32/8, n_ff 14336, rope θ 500000 (~4.5 GB in Q4_0). */
  "8b_q4_0": {
    nLayer: 32,
    nEmbd: 4096,
    nHead: 32,
    nHeadKv: 8,
    nFF: 14336,
    ropeTheta: 500000,
    ctx: 8192,
    // As the file behind the README's figures was made: logits of standard deviation ~1.3, so
    // some greedy steps are near-ties (check-golden accepts a divergence only there).
    outputSigma: 0.02,
  },
  /** Two layers of Llama-3-70B: 8192 wide, 64 heads / 8 KV heads, n_ff 28672 (~2.1 GB). */
  "70b_slice_q4_0": {
    nLayer: 2,
    nEmbd: 8192,
    nHead: 64,
    nHeadKv: 8,
    nFF: 28672,
    ropeTheta: 500000,
    ctx: 8192,
  },
  /**
   * CI-sized (~300M parameters, ~180 MB): 6 layers, 1024 wide, GQA 16/4, n_ff 2816, the same
   * vocabulary (its 2 × 128256 × 1024 embedding and output are most of the parameters).
   */
  "ci_q4_0": {
    nLayer: 6,
    nEmbd: 1024,
    nHead: 16,
    nHeadKv: 4,
    nFF: 2816,
    ropeTheta: 500000,
    ctx: 8192,
  },
} as const satisfies Record<string, LlamaShape>;

/** One of the scale models. */
export type ScaleModel = keyof typeof SCALE_SHAPES;

const VOCAB = `${SHARED_FIXTURES}vocab/ggml-vocab-llama-bpe.gguf`;

/** Standard deviation of the weight matrices. */
const SIGMA = 0.02;

/** FNV-1a of a string, to seed each tensor apart. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * Q4_0 bytes of a `rows × cols` matrix from a seeded PRNG (xorshift32): random odd nibbles and
 * one of 16 scales around `sigma / 4.58` per block of 32.
 */
export function randomQ4_0(nElements: number, seed: number, sigma = SIGMA): Uint8Array {
  if (nElements % 32) throw new Error(`Q4_0 needs a multiple of 32 elements, not ${nElements}`);
  const blocks = nElements / 32;
  const nBytes = blocks * 18;
  const buf = new ArrayBuffer(Math.ceil(nBytes / 4) * 4);
  const words = new Uint32Array(buf);
  let x = seed >>> 0 || 0x9e3779b9;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = (x | 0x11111111) >>> 0; // every nibble odd: q − 8 in {−7, −5, …, 7}
  }
  const scales = new Uint16Array(16);
  for (let i = 0; i < 16; i++) scales[i] = f32ToF16((sigma / Math.sqrt(21)) * (0.75 + i / 30));
  const bytes = new Uint8Array(buf, 0, nBytes);
  const halves = new Uint16Array(buf, 0, nBytes / 2);
  for (let b = 0; b < blocks; b++) {
    // bits 1-3 and 5 of a random byte (bits 0 and 4 are the forced odd bits)
    const r = bytes[18 * b + 1];
    halves[9 * b] = scales[((r >> 1) & 7) | ((r >> 2) & 8)];
  }
  return bytes;
}

/** Tensor index of a llama of `shape` in Q4_0 (1-D norms F32), untied output. */
export function llamaTensors(shape: LlamaShape, nVocab: number): GGUFTensorHeader[] {
  const { nEmbd: E, nFF: F, nLayer: L } = shape;
  const kv = (E / shape.nHead) * shape.nHeadKv;
  const q = GGMLType.Q4_0;
  const t: GGUFTensorHeader[] = [
    { name: "token_embd.weight", dims: [E, nVocab], type: q },
    { name: "output_norm.weight", dims: [E], type: GGMLType.F32 },
    { name: "output.weight", dims: [E, nVocab], type: q },
  ];
  for (let l = 0; l < L; l++) {
    const p = `blk.${l}.`;
    t.push(
      { name: p + "attn_norm.weight", dims: [E], type: GGMLType.F32 },
      { name: p + "attn_q.weight", dims: [E, E], type: q },
      { name: p + "attn_k.weight", dims: [E, kv], type: q },
      { name: p + "attn_v.weight", dims: [E, kv], type: q },
      { name: p + "attn_output.weight", dims: [E, E], type: q },
      { name: p + "ffn_norm.weight", dims: [E], type: GGMLType.F32 },
      { name: p + "ffn_gate.weight", dims: [E, F], type: q },
      { name: p + "ffn_up.weight", dims: [E, F], type: q },
      { name: p + "ffn_down.weight", dims: [F, E], type: q },
    );
  }
  return t;
}

/** Metadata of a llama of `shape` with `tokenizer` entries (llama.cpp's keys, Q4_0 file type). */
export function llamaMetadata(
  name: string,
  shape: LlamaShape,
  nVocab: number,
  tokenizer: GGUFMetadataEntry[],
  seed: number,
): GGUFMetadataEntry[] {
  return [
    meta.string("general.architecture", "llama"),
    meta.string("general.name", name),
    meta.u32("general.file_type", 2), // LLAMA_FTYPE_MOSTLY_Q4_0
    meta.u32("general.quantization_version", 2),
    meta.u32("general.alignment", 32),
    meta.u32("llama.vocab_size", nVocab),
    meta.u32("llama.context_length", shape.ctx),
    meta.u32("llama.embedding_length", shape.nEmbd),
    meta.u32("llama.block_count", shape.nLayer),
    meta.u32("llama.feed_forward_length", shape.nFF),
    meta.u32("llama.attention.head_count", shape.nHead),
    meta.u32("llama.attention.head_count_kv", shape.nHeadKv),
    meta.u32("llama.rope.dimension_count", shape.nEmbd / shape.nHead),
    meta.f32("llama.rope.freq_base", shape.ropeTheta),
    meta.f32("llama.attention.layer_norm_rms_epsilon", 1e-5),
    ...tokenizer,
    meta.u32("bench.seed", seed),
    meta.string("bench.generator", "bench/lib/scale_models.ts (random Q4_0 blocks, xorshift32)"),
  ];
}

/** Write a random-weight Q4_0 llama of `shape` with the llama-bpe vocabulary to `path`. */
export async function writeScaleModel(
  path: string,
  name: string,
  shape: LlamaShape,
  seed = 1,
): Promise<number> {
  const vocab = await openGGUF(VOCAB);
  let tokenizer: GGUFMetadataEntry[];
  let nVocab: number;
  try {
    tokenizer = vocab.metadata.entries().filter((e) => e.key.startsWith("tokenizer."));
    nVocab = vocab.metadata.array("tokenizer.ggml.tokens").values.length;
  } finally {
    vocab.close();
  }
  const tensors = llamaTensors(shape, nVocab);
  const metadata = llamaMetadata(name, shape, nVocab, tokenizer, seed);
  function* data() {
    for (const t of tensors) {
      const n = t.dims.reduce((a, b) => a * b, 1);
      if (t.type === GGMLType.F32) {
        yield new Uint8Array(new Float32Array(n).fill(1).buffer);
      } else {
        const sigma = t.name === "output.weight"
          ? shape.outputSigma ?? 4 / Math.sqrt(shape.nEmbd)
          : SIGMA;
        yield randomQ4_0(n, (seed * 0x9e3779b1) ^ fnv1a(t.name), sigma);
      }
    }
  }
  return await writeGGUFFile(path, { metadata, tensors }, data());
}

/** Path of a scale model in bench/.cache/models/, generating it (once) if missing. */
export async function scaleModel(which: ScaleModel, dir = `${CACHE_DIR}models/`): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  const path = `${dir}scale-${which}.gguf`;
  if (await exists(path)) return path;
  const tmp = `${path}.${Deno.pid}.tmp`;
  const t0 = performance.now();
  console.error(`bench: generating ${which} (random Q4_0, llama-bpe vocabulary, once)…`);
  try {
    const size = await writeScaleModel(tmp, `scale-${which}`, SCALE_SHAPES[which]);
    await Deno.rename(tmp, path);
    console.error(
      `bench: ${path}: ${(size / 1e9).toFixed(2)} GB in ${
        ((performance.now() - t0) / 1000).toFixed(0)
      } s`,
    );
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  return path;
}
