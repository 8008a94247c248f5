/**
 * A synthetic llama GGUF of any size for transfer tests and the transfer bench: stories260K's
 * tokenizer and metadata with larger dimensions, F32 weights from a seeded generator (a small
 * random block reused at shifting offsets, so writing 500 MB takes seconds).
 *
 * @example
 * ```ts
 * const bytes = await writeSyntheticLlama("/tmp/m.gguf", { nEmbd: 512, nLayers: 4 });
 * ```
 *
 * @module
 */
import { openGGUF, writeGGUFFile } from "../../model/gguf/mod.ts";
import { GGUFValueType } from "../../model/gguf/mod.ts";
import type { GGUFMetadataEntry } from "../../model/gguf/mod.ts";

const STORIES = decodeURIComponent(
  new URL("../../models/stories260K.gguf", import.meta.url).pathname,
);

/** Shape of a synthetic model. */
export interface SyntheticShape {
  /** Embedding width; default 512. */
  nEmbd?: number;
  /** Feed-forward width; default 2.75 × nEmbd rounded to 32. */
  nFF?: number;
  /** Layers; default 4. */
  nLayers?: number;
  /** Seed of the weights; default 1. */
  seed?: number;
}

/** Write a synthetic F32 llama model to `path`; returns the file size. */
export async function writeSyntheticLlama(
  path: string,
  shape: SyntheticShape = {},
): Promise<number> {
  const E = shape.nEmbd ?? 512;
  const F = shape.nFF ?? Math.round((E * 2.75) / 32) * 32;
  const L = shape.nLayers ?? 4;
  const H = 8;
  const KV = (E / H) * 4;
  const src = await openGGUF(STORIES);
  const V = src.tensor("token_embd.weight")!.dims[1];
  const override: Record<string, number> = {
    "llama.embedding_length": E,
    "llama.feed_forward_length": F,
    "llama.block_count": L,
    "llama.attention.head_count": H,
    "llama.attention.head_count_kv": 4,
    "llama.rope.dimension_count": E / H,
  };
  const metadata: GGUFMetadataEntry[] = src.metadata.entries().map((e) =>
    e.key in override ? { key: e.key, type: GGUFValueType.UINT32, value: override[e.key] } : e
  );
  src.close();
  const tensors: { name: string; dims: number[]; type: number }[] = [
    { name: "token_embd.weight", dims: [E, V], type: 0 },
    { name: "output_norm.weight", dims: [E], type: 0 },
    { name: "output.weight", dims: [E, V], type: 0 },
  ];
  for (let l = 0; l < L; l++) {
    const p = `blk.${l}.`;
    tensors.push(
      { name: p + "attn_q.weight", dims: [E, E], type: 0 },
      { name: p + "attn_k.weight", dims: [E, KV], type: 0 },
      { name: p + "attn_v.weight", dims: [E, KV], type: 0 },
      { name: p + "attn_output.weight", dims: [E, E], type: 0 },
      { name: p + "attn_norm.weight", dims: [E], type: 0 },
      { name: p + "ffn_gate.weight", dims: [E, F], type: 0 },
      { name: p + "ffn_down.weight", dims: [F, E], type: 0 },
      { name: p + "ffn_up.weight", dims: [E, F], type: 0 },
      { name: p + "ffn_norm.weight", dims: [E], type: 0 },
    );
  }
  // One random block; each tensor reads it from a different offset.
  let x = (shape.seed ?? 1) * 2654435761 >>> 0 || 1;
  const block = new Float32Array(1 << 18);
  for (let i = 0; i < block.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    block[i] = ((x >>> 0) / 4294967296 - 0.5) * 0.1;
  }
  function* data() {
    let shift = 0;
    for (const t of tensors) {
      const n = t.dims.reduce((a, b) => a * b, 1);
      const out = new Float32Array(n);
      if (t.dims.length === 1) out.fill(1);
      else {
        for (let at = 0; at < n; at += block.length) {
          const len = Math.min(block.length, n - at);
          const from = (shift * 7919) % (block.length - len + 1);
          out.set(block.subarray(from, from + len), at);
        }
      }
      shift++;
      yield new Uint8Array(out.buffer);
    }
  }
  return await writeGGUFFile(path, { metadata, tensors }, data());
}
