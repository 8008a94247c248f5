/**
 * Appending key and value rows to a layer of the GPU-resident KV cache (kv.wgsl), rounded to
 * f16 for an f16 cache.
 *
 * @module
 */
import { checkStoreKV } from "../../checks.ts";
import type { Backend } from "../../backend.ts";
import { asBuf, asKV } from "../handles.ts";
import { compose } from "../shaders.ts";
import { grid, type OpContext, WG } from "./context.ts";

/** Record storing `rows` rows of k and v (from row `rowOffset`) at cache positions `pos0..`. */
export function encodeStoreKV(
  ctx: OpContext,
  ...[cache, layer, k, v, pos0, rows, rowOffset = 0]: Parameters<Backend["storeKV"]>
): void {
  const c = asKV(cache);
  const kb = asBuf(k);
  const vb = asBuf(v);
  checkStoreKV(c, layer, pos0, rows, rowOffset, kb.length, vb.length, RangeError);
  if (rows === 0) return;
  const p = ctx.enc.pipe(
    `kv:${c.type}`,
    () => compose("kv", { defines: c.type === "f16" ? ["KV_F16"] : [] }),
    [[0, "uniform"], [1, "storage"], [2, "storage"], [3, "storage"], [4, "storage"]],
  );
  const prm = ctx.enc.params();
  prm.u.set([rows, c.kvDim, c.strideWords, pos0, rowOffset]);
  const [gx, gy] = grid(Math.ceil((rows * c.strideWords) / WG));
  ctx.enc.dispatch(p, prm.slot, [kb.res, vb.res, c.k[layer], c.v[layer]], gx, gy);
}
