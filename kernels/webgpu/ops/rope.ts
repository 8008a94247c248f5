/**
 * Rotary position embedding in place (rope.wgsl). The host writes each row's cos/sin table
 * (kernels/rope_angles.ts: ggml_rope_cache_init with glibc's cosf/sinf) and uploads it with the
 * dispatch.
 *
 * @module
 */
import type { Backend } from "../../backend.ts";
import { ropeAngles } from "../../rope_angles.ts";
import { asBuf, need } from "../handles.ts";
import { compose } from "../shaders.ts";
import { grid, type OpContext, WG } from "./context.ts";

/** Record RoPE over `positions.length` rows of `x`. */
export function encodeRope(
  ctx: OpContext,
  ...[x, positions, params]: Parameters<Backend["rope"]>
): void {
  const xb = asBuf(x);
  const { nHeads, headDim, ropeDim } = params;
  const n = positions.length;
  need(xb, n * nHeads * headDim, "rope");
  if (ropeDim > headDim || ropeDim % 2 !== 0) {
    throw new RangeError(`rope: ropeDim ${ropeDim} must be even and ≤ headDim ${headDim}`);
  }
  const half = ropeDim / 2;
  if (n === 0 || half === 0) return;
  const data = ctx.enc.arena(n * half * 8, 256);
  ropeAngles(positions, params, new Float32Array(data.chunk.mirror, data.offset, n * half * 2));
  const p = ctx.enc.pipe(
    "rope",
    () => compose("rope"),
    [[0, "uniform"], [1, "read"], [2, "storage"]],
  );
  const prm = ctx.enc.params();
  prm.u.set([n, nHeads, headDim, ropeDim, params.neox ? 1 : 0, data.offset / 4]);
  const [gx, gy] = grid(Math.ceil((n * nHeads * half) / WG));
  ctx.enc.dispatch(p, prm.slot, [data.chunk.res, xb.res], gx, gy);
  xb.version++;
}
