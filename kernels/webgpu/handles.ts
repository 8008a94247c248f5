/**
 * The handles the WebGPU backend gives out ({@link Buf}, {@link Weight}, {@link KVCache}) and the
 * GPU buffers behind them, with the checks that a handle belongs to this backend and is large
 * enough for an op.
 *
 * @module
 */
import type { Buf, KVCache, KVType, Weight } from "../backend.ts";
import type { GGMLType } from "../quant/types.ts";
import { needElements } from "../checks.ts";

let lastId = 0;

/** A fresh id for cache keys (bind groups are keyed by buffer ids, conversions by Buf ids). */
export function newId(): number {
  return ++lastId;
}

/** A GPU buffer with an id for cache keys. */
export interface Res {
  readonly buffer: GPUBuffer;
  readonly id: number;
  readonly bytes: number;
  /** A texture view instead of the buffer (bound as `texture_2d<u32>`). */
  readonly view?: GPUTextureView;
}

/** An activation buffer; `version` counts writes, so a conversion of its data can be reused. */
export class GBuf implements Buf {
  readonly id = newId();
  version = 0;
  /** Freed: its GPU buffer went back to the pool, and may be another buffer's now. */
  freed = false;
  constructor(readonly length: number, readonly res: Res) {}
}

/** One buffer of a weight: rows `row0 .. row0 + rows` of the tensor. */
export interface Part {
  readonly res: Res;
  readonly row0: number;
  readonly rows: number;
  /** Rows of `res` before this part's first row (a row view starts inside a buffer). */
  readonly skip?: number;
}

/** A weight as raw GGUF blocks, split by rows into parts no larger than a binding. */
export class GWeight implements Weight {
  constructor(
    readonly name: string,
    readonly type: GGMLType,
    readonly shape: readonly number[],
    readonly cols: number,
    readonly rows: number,
    readonly rowBytes: number,
    readonly parts: Part[],
    /** A row view of another weight: it owns none of its buffers. */
    readonly view = false,
    /** The weight a view reads (freeing it ends the view). */
    readonly parent?: GWeight,
  ) {}
  /** Freed (a view: its parent freed). */
  freed = false;
  /** Whether this weight, or the one it is a view of, was freed. */
  get gone(): boolean {
    return this.freed || (this.parent?.gone ?? false);
  }
}

/** A KV cache: one key and one value buffer per layer. */
export class GKV implements KVCache {
  constructor(
    readonly nLayers: number,
    readonly nCtx: number,
    readonly kvDim: number,
    readonly type: KVType,
    /** u32 words per cached row. */
    readonly strideWords: number,
    readonly k: Res[],
    readonly v: Res[],
  ) {}
  /** Freed: its buffers are destroyed. */
  freed = false;
}

/** `b` as this backend's buffer, or a TypeError. */
export function asBuf(b: Buf): GBuf {
  if (!(b instanceof GBuf)) throw new TypeError("not a buffer of this WebGPU backend");
  // A freed buffer's GPU buffer is pooled: a stale handle would read or write its next owner's.
  if (b.freed) throw new TypeError("webgpu backend: buffer used after free");
  return b;
}

/** `w` as this backend's weight, or a TypeError. */
export function asWeight(w: Weight): GWeight {
  if (!(w instanceof GWeight)) {
    throw new TypeError(`${w.name}: not a weight of this WebGPU backend`);
  }
  if (w.gone) throw new TypeError(`webgpu backend: weight ${w.name} used after free`);
  return w;
}

/** `c` as this backend's KV cache, or a TypeError. */
export function asKV(c: KVCache): GKV {
  if (!(c instanceof GKV)) throw new TypeError("not a KV cache of this WebGPU backend");
  if (c.freed) throw new TypeError("webgpu backend: KV cache used after free");
  return c;
}

/** Throw a RangeError naming `what` unless `b` holds floats [start, n) (checks.ts). */
export function need(b: GBuf, n: number, what: string, start = 0): void {
  needElements(b.length, n, what, start, RangeError);
}
