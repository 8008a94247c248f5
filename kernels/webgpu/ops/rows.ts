/**
 * Row copies and grouped row sums for a mixture of experts (rows.wgsl): gathering rows to and
 * from expert batches, with optional per-row scales, and summing each token's expert outputs.
 *
 * @module
 */
import type { Backend } from "../../backend.ts";
import { checkCopyRows, checkCounts } from "../../checks.ts";
import { WebGPUError } from "../errors.ts";
import { asBuf, need } from "../handles.ts";
import { compose } from "../shaders.ts";
import { grid, type OpContext, WG } from "./context.ts";

/** Record `dst[dstRows[i], :] = src[srcRows[i], :] (· scales[i])`. */
export function encodeCopyRows(
  ctx: OpContext,
  ...[src, srcRows, dst, dstRows, cols, scales]: Parameters<Backend["copyRows"]>
): void {
  const sb = asBuf(src), db = asBuf(dst);
  checkCopyRows(sb, srcRows, db, dstRows, cols, scales);
  if (sb === db) throw new WebGPUError("copyRows: source and destination are one buffer");
  const n = srcRows.length;
  if (n === 0) return;
  const data = ctx.enc.arena(n * (scales ? 12 : 8), 256);
  const idx = new Int32Array(data.chunk.mirror, data.offset, 2 * n);
  idx.set(srcRows);
  idx.set(dstRows, n);
  if (scales) new Float32Array(data.chunk.mirror, data.offset + 8 * n, n).set(scales);
  const p = ctx.enc.pipe(
    "rows_copy",
    () => compose("rows"),
    [[0, "uniform"], [1, "read"], [2, "storage"], [3, "storage"]],
    "copy",
  );
  const prm = ctx.enc.params();
  prm.u.set([n, cols, data.offset / 4, scales ? 1 : 0, 0]);
  const [gx, gy] = grid(Math.ceil((n * cols) / WG));
  ctx.enc.dispatch(p, prm.slot, [data.chunk.res, sb.res, db.res], gx, gy);
  db.version++;
}

/** Record `dst[g, :] = Σ_{r < k} src[g·k + r, :]`, summed in order. */
export function encodeSumRowGroups(
  ctx: OpContext,
  ...[src, dst, groups, k, cols]: Parameters<Backend["sumRowGroups"]>
): void {
  const sb = asBuf(src), db = asBuf(dst);
  checkCounts("sumRowGroups", { groups, k, cols });
  need(sb, groups * k * cols, "sumRowGroups src");
  need(db, groups * cols, "sumRowGroups dst");
  if (sb === db) throw new WebGPUError("sumRowGroups: source and destination are one buffer");
  if (groups * cols === 0) return;
  const p = ctx.enc.pipe(
    "rows_sum_groups",
    () => compose("rows"),
    [[0, "uniform"], [2, "storage"], [3, "storage"]],
    "sum_groups",
  );
  const prm = ctx.enc.params();
  prm.u.set([groups, cols, 0, 0, k]);
  const [gx, gy] = grid(Math.ceil((groups * cols) / WG));
  ctx.enc.dispatch(p, prm.slot, [sb.res, db.res], gx, gy);
  db.version++;
}
