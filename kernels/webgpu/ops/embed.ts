/**
 * Token embedding: rows of the (quantized) table decoded straight into activations
 * (embed.wgsl with the table type's section of quant.wgsl), one dispatch per weight part.
 *
 * @module
 */
import type { Backend } from "../../backend.ts";
import { typeName } from "../../quant/types.ts";
import { WebGPUError } from "../errors.ts";
import { asBuf, asWeight, type GBuf, type GWeight, need, type Res } from "../handles.ts";
import { compose } from "../shaders.ts";
import { grid, type OpContext, WG } from "./context.ts";

/** Record `out[t, :] = table[ids[t], :]`. */
export function encodeEmbed(
  ctx: OpContext,
  ...[table, ids, out]: Parameters<Backend["embed"]>
): void {
  const w = asWeight(table);
  const o = asBuf(out);
  const n = ids.length;
  need(o, n * w.cols, `embed ${w.name}`);
  if (n === 0) return;
  for (const id of ids) {
    if (id < 0 || id >= w.rows) {
      throw new RangeError(`embed ${w.name}: token id ${id} is outside [0, ${w.rows})`);
    }
  }
  if (w.view) throw new WebGPUError(`embed: ${w.name} is a row view`);
  const data = ctx.enc.arena(n * 4, 256);
  new Int32Array(data.chunk.mirror, data.offset, n).set(ids);
  dispatchEmbed(ctx, w, n, data.chunk.res, data.offset / 4, o);
}

/** Record `out[0, :] = table[ids[offset]]`, the id left on the device by a previous step. */
export function encodeEmbedAt(
  ctx: OpContext,
  ...[table, ids, offset, out]: Parameters<NonNullable<Backend["embedAt"]>>
): void {
  const w = asWeight(table);
  const d = asBuf(ids);
  const o = asBuf(out);
  need(o, w.cols, `embedAt ${w.name}`);
  if (!Number.isInteger(offset) || offset < 0) {
    throw new RangeError(`embedAt ${w.name}: offset ${offset} is not a word index`);
  }
  need(d, offset + 1, `embedAt ${w.name}`);
  if (w.view) throw new WebGPUError(`embedAt: ${w.name} is a row view`);
  // Each part writes only ids in its rows, so a missing id (0xffffffff) would leave the row as
  // it was: clear it first (ordered with the passes: the same encoder).
  ctx.enc.copyEncoder().clearBuffer(o.res.buffer, 0, w.cols * 4);
  dispatchEmbed(ctx, w, 1, d.res, offset, o);
}

/** embed.wgsl over every part of `w`: `n` rows whose ids are words `idsOff…` of `ids`. */
function dispatchEmbed(
  ctx: OpContext,
  w: GWeight,
  n: number,
  ids: Res,
  idsOff: number,
  o: GBuf,
): void {
  const p = ctx.enc.pipe(
    `embed:${typeName(w.type)}`,
    () => compose("embed", { decode: typeName(w.type), defines: ctx.defines }),
    [[0, "uniform"], [1, "read"], [2, "read"], [3, "storage"]],
  );
  const [x, y] = grid(Math.ceil((n * w.cols) / WG));
  for (const part of w.parts) {
    const prm = ctx.enc.params();
    prm.u.set([n, w.cols, w.rowBytes, part.row0, part.rows, idsOff]);
    ctx.enc.dispatch(p, prm.slot, [part.res, ids, o.res], x, y);
  }
  o.version++;
}
