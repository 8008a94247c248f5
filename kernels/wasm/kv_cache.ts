/**
 * WASM KV caches: their memory in arena 0, their layout (each layer's keys and values head by
 * head, WKV in resources.ts) and storing a pass's rows into them. Attention reads them
 * (attention.ts).
 */
import type { Buf, KVCache, KVType } from "../backend.ts";
import { checkStoreKV } from "../checks.ts";
import { type Memories, wbuf, WKV, wkv } from "./resources.ts";

/** Allocates, fills and frees the KV caches of one backend. */
export class KVCaches {
  constructor(readonly mem: Memories) {}

  /** A zeroed cache; `headDim` (a divisor of kvDim): its entries kept head by head. */
  create(nLayers: number, nCtx: number, kvDim: number, type: KVType, headDim = kvDim): KVCache {
    if (!Number.isInteger(headDim) || headDim <= 0 || kvDim % headDim !== 0) {
      throw new Error(`kvCache: a head of ${headDim} does not divide the cache's ${kvDim} columns`);
    }
    const a0 = this.mem.a0;
    const esz = type === "f16" ? 2 : 4;
    const bytes = nLayers * nCtx * kvDim * esz;
    const kOff = this.mem.alloc0(bytes, "a KV cache (keys)");
    let vOff: number;
    try {
      vOff = this.mem.alloc0(bytes, "a KV cache (values)");
    } catch (e) {
      a0.release(kOff, bytes);
      throw e;
    }
    a0.u8.fill(0, kOff, kOff + bytes);
    a0.u8.fill(0, vOff, vOff + bytes);
    return new WKV(nLayers, nCtx, kvDim, type, kOff, vOff, bytes, headDim);
  }

  /** Backend.storeKV: rows [rowOffset, rowOffset + rows) of k and v at positions pos0 ... */
  store(
    cache: KVCache,
    layer: number,
    k: Buf,
    v: Buf,
    pos0: number,
    rows: number,
    rowOffset = 0,
  ): void {
    const c = wkv(cache);
    const d = c.kvDim;
    const K = wbuf(k);
    const V = wbuf(v);
    checkStoreKV(c, layer, pos0, rows, rowOffset, K.length, V.length);
    const a0 = this.mem.a0;
    const lb = c.layerBytes();
    const kSrc = K.off + rowOffset * d * 4;
    const vSrc = V.off + rowOffset * d * 4;
    if (c.headDim !== d) {
      // head by head: row t's head h to entry pos0 + t of head h (see WKV)
      const at = pos0 * c.headDim * c.esz;
      const f16 = c.type === "f16" ? 1 : 0;
      a0.k.storeHeads(kSrc, c.kOff + layer * lb + at, rows, d, c.headDim, c.nCtx, f16);
      a0.k.storeHeads(vSrc, c.vOff + layer * lb + at, rows, d, c.headDim, c.nCtx, f16);
      return;
    }
    const kDst = c.kOff + layer * lb + pos0 * d * c.esz;
    const vDst = c.vOff + layer * lb + pos0 * d * c.esz;
    if (c.type === "f16") {
      a0.k.toF16(kSrc, kDst, rows * d);
      a0.k.toF16(vSrc, vDst, rows * d);
    } else {
      a0.u8.copyWithin(kDst, kSrc, kSrc + rows * d * 4);
      a0.u8.copyWithin(vDst, vSrc, vSrc + rows * d * 4);
    }
  }

  /** Give a cache's memory back (once). */
  free(c: WKV): void {
    if (c.freed) return;
    c.freed = true;
    this.mem.a0.release(c.kOff, c.bytes);
    this.mem.a0.release(c.vOff, c.bytes);
  }
}
