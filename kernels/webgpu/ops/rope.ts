/**
 * Rotary position embedding in place (rope.wgsl). The host computes each row's cos/sin table as
 * ggml_rope_cache_init does (θ iterated in f32) and uploads it with the dispatch.
 *
 * @module
 */
import type { Backend } from "../../backend.ts";
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
  // ggml_rope_cache_init: θ starts at the position and is multiplied by theta_scale in f32.
  const fr = Math.fround;
  const thetaScale = fr(Math.pow(fr(params.freqBase), fr(-2 / ropeDim)));
  const freqScale = fr(params.freqScale);
  const data = ctx.enc.arena(n * half * 8, 256);
  const cs = new Float32Array(data.chunk.mirror, data.offset, n * half * 2);
  for (let t = 0; t < n; t++) {
    let theta = fr(positions[t]);
    for (let i = 0; i < half; i++) {
      const th = fr(freqScale * theta);
      cs[(t * half + i) * 2] = Math.cos(th);
      cs[(t * half + i) * 2 + 1] = Math.sin(th);
      theta = fr(theta * thetaScale);
    }
  }
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
