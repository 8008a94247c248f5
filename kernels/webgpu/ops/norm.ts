/**
 * RMS norm with its weight: `out = x / sqrt(mean(x²) + eps) ⊙ w`, one workgroup per row
 * (norm.wgsl; its sum of squares reduced with subgroup shuffles when that path is on).
 *
 * @module
 */
import type { Backend } from "../../backend.ts";
import { typeName } from "../../quant/types.ts";
import { WebGPUError } from "../errors.ts";
import { asBuf, asWeight, need } from "../handles.ts";
import { compose } from "../shaders.ts";
import { grid, type OpContext, subgroupVariant } from "./context.ts";

/** Record the RMS norm of `rows` rows of `x` into `out`. */
export function encodeRmsNorm(
  ctx: OpContext,
  ...[x, weight, out, rows, eps]: Parameters<Backend["rmsNorm"]>
): void {
  const w = asWeight(weight);
  const xb = asBuf(x);
  const o = asBuf(out);
  const n = w.shape[0];
  need(xb, rows * n, "rmsNorm input");
  need(o, rows * n, "rmsNorm output");
  if (w.parts.length !== 1) throw new WebGPUError(`rmsNorm: ${w.name} is too large`);
  // The shader reads the part from row 0: a view starting further in would read the parent's.
  if ((w.parts[0].skip ?? 0) !== 0) {
    throw new WebGPUError(`rmsNorm: ${w.name} is a row view not at row 0 (not supported)`);
  }
  if (rows === 0) return;
  const sg = subgroupVariant(ctx.paths);
  const p = ctx.enc.pipe(
    `norm:${typeName(w.type)}${sg.key}`,
    () =>
      compose("norm", {
        decode: typeName(w.type),
        defines: [...ctx.defines, ...sg.defines],
        subst: sg.subst,
        prelude: sg.prelude,
      }),
    [[0, "uniform"], [1, "read"], [2, "storage"], [3, "storage"]],
  );
  const prm = ctx.enc.params();
  prm.u.set([n, rows]);
  prm.f[2] = eps;
  const [gx, gy] = grid(rows);
  ctx.enc.dispatch(p, prm.slot, [w.parts[0].res, xb.res, o.res], gx, gy);
  o.version++;
}
