/**
 * Activations converted to a weight type's vec_dot type before a matmul (quantize.wgsl), as
 * ggml's CPU backend converts them: f16/bf16 rounding, or Q8_0/Q8_1/Q8_K blocks. The last
 * conversion per type is kept by (buffer, version), so q/k/v or gate/up projections of one
 * input convert it once.
 *
 * @module
 */
import { GGMLType } from "../../quant/types.ts";
import type { GBuf } from "../handles.ts";
import { compose } from "../shaders.ts";
import { grid, type OpContext, WG } from "./context.ts";
import type { Converted, VecDot } from "./converted.ts";

/** vec_dot type of each weight type the backend supports. */
export const VEC_DOT: Partial<Record<GGMLType, VecDot>> = {
  [GGMLType.F32]: "f32",
  [GGMLType.F16]: "f16",
  [GGMLType.BF16]: "bf16",
  [GGMLType.Q4_0]: "q8_0",
  [GGMLType.Q5_0]: "q8_0",
  [GGMLType.Q8_0]: "q8_0",
  [GGMLType.Q4_1]: "q8_1",
  [GGMLType.Q5_1]: "q8_1",
  [GGMLType.Q2_K]: "q8_k",
  [GGMLType.Q3_K]: "q8_k",
  [GGMLType.Q4_K]: "q8_k",
  [GGMLType.Q5_K]: "q8_k",
  [GGMLType.Q6_K]: "q8_k",
};

/** Elements per quantization block of each activation kind. */
export const VD_BLOCK: Record<Exclude<VecDot, "f32">, number> = {
  f16: 1,
  bf16: 1,
  q8_0: 32,
  q8_1: 32,
  q8_k: 256,
};

/** Convert `rows × k` activations to `kind`, reusing the last conversion of the same data. */
export function quantizeActivations(
  ctx: OpContext,
  x: GBuf,
  rows: number,
  k: number,
  kind: Exclude<VecDot, "f32">,
): Converted {
  const key = `${x.id}:${x.version}:${rows}:${k}`;
  const hit = ctx.converted.get(kind, key);
  if (hit) return hit;
  const bs = VD_BLOCK[kind];
  const nb = k / bs;
  let words: number, dOff = 0, sOff = 0;
  if (bs === 1) {
    words = rows * k;
  } else {
    dOff = (rows * k) / 4;
    sOff = dOff + rows * nb;
    words = sOff + (kind === "q8_1" ? rows * nb : kind === "q8_k" ? (rows * k) / 16 : 0);
  }
  const res = ctx.gpu.scratch(`activations as ${kind}`, words * 4);
  const p = ctx.enc.pipe(
    `quantize:${kind}`,
    () =>
      compose("quantize", {
        defines: [`KIND_${kind.toUpperCase()}`, ...ctx.defines],
        subst: { BS: bs },
      }),
    [[0, "uniform"], [1, "storage"], [2, "storage"]],
  );
  const prm = ctx.enc.params();
  prm.u.set([k, rows, dOff, sOff]);
  const [gx, gy] = grid(Math.ceil((rows * nb) / WG));
  ctx.enc.dispatch(p, prm.slot, [x.res, res], gx, gy);
  const q: Converted = { key, res, dOff, sOff };
  ctx.converted.set(kind, q);
  return q;
}
