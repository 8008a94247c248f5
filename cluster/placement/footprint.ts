/** Compute a model's memory footprint per layer from its GGUF tensor index (no tensor bytes read). */
import type { GGUFTensorInfo } from "../../model/gguf/types.ts";
import type { ModelFootprint } from "./plan.ts";

/** The parts of an opened GGUF file the footprint needs. */
export interface TensorIndex {
  readonly tensors: readonly GGUFTensorInfo[];
}

/**
 * Bytes per layer (`blk.N.*`), head (`token_embd`) and tail (`output_norm`, `output`, or the
 * tied `token_embd` when `output.weight` is absent), plus a KV reservation per layer.
 */
export function footprintFromIndex(
  index: TensorIndex,
  nLayers: number,
  kvBytesPerLayer: number,
): ModelFootprint {
  const layerBytes = new Array<number>(nLayers).fill(0);
  let headBytes = 0;
  let tailBytes = 0;
  let hasOutput = false;
  let embdBytes = 0;
  for (const t of index.tensors) {
    const bytes = t.nBytes ?? 0;
    const m = /^blk\.(\d+)\./.exec(t.name);
    if (m) {
      const l = Number(m[1]);
      if (l < nLayers) layerBytes[l] += bytes;
    } else if (t.name === "token_embd.weight") {
      headBytes += bytes;
      embdBytes = bytes;
    } else if (t.name === "output.weight") {
      tailBytes += bytes;
      hasOutput = true;
    } else if (t.name.startsWith("output_norm.")) {
      tailBytes += bytes;
    }
  }
  if (!hasOutput) tailBytes += embdBytes;
  return {
    nLayers,
    layerBytes,
    headBytes,
    tailBytes,
    kvBytesPerLayer,
    sharedHeadTailBytes: hasOutput ? 0 : embdBytes,
  };
}
