/**
 * The last conversion of activations per vec_dot type (ops/quantize.ts makes them): kept apart
 * from quantize.ts so that the op context can name it without importing the op (an import
 * circle: context.ts ↔ quantize.ts).
 *
 * @module
 */
import type { Res } from "../handles.ts";
import type { GpuResources } from "../resources.ts";

/** The activation type a weight type's dot product reads (ggml's vec_dot_type). */
export type VecDot = "f32" | "f16" | "bf16" | "q8_0" | "q8_1" | "q8_k";

/** Converted activations: the buffer, and u32 offsets of block scales and sums in it. */
export interface Converted {
  key: string;
  res: Res;
  dOff: number;
  sOff: number;
}

/** The last conversion per vec_dot type; forgets one whose scratch buffer is destroyed. */
export class ConvertedActivations {
  readonly #last = new Map<VecDot, Converted>();

  constructor(gpu: GpuResources) {
    gpu.onDestroy((res) => {
      for (const [k, q] of this.#last) if (q.res === res) this.#last.delete(k);
    });
  }

  /** The conversion of `kind` made under `key`, if it is the last one. */
  get(kind: VecDot, key: string): Converted | undefined {
    const hit = this.#last.get(kind);
    return hit && hit.key === key ? hit : undefined;
  }

  /** Remember `q` as the last conversion of `kind`. */
  set(kind: VecDot, q: Converted): void {
    this.#last.set(kind, q);
  }
}
