/**
 * The elementwise ops, one invocation per element, each an entry point of elementwise.wgsl:
 * add, scale, a bias row added to every row (decoded through the bias type's quant section),
 * and the gated activations SwiGLU and GeGLU (GELU read from ggml's f16 table, as every backend
 * reads it).
 *
 * @module
 */
import { WebGPUError } from "../errors.ts";
import type { Backend } from "../../backend.ts";
import { geluTable } from "../../gelu.ts";
import { typeName } from "../../quant/types.ts";
import type { BindKind } from "../encoder.ts";
import { asBuf, asWeight, need, type Res } from "../handles.ts";
import { compose, type ComposeOptions } from "../shaders.ts";
import { grid, type OpContext, WG } from "./context.ts";

/** The float ops read no weight: their quant section is F32's. */
const F32: ComposeOptions = { decode: "F32" };

/** One dispatch of `entry` over `n` elements; params are (n, width) and, for scale, s. */
function run(
  ctx: OpContext,
  entry: string,
  key: string,
  opts: ComposeOptions,
  bindings: readonly (readonly [number, BindKind])[],
  res: readonly Res[],
  n: number,
  width = 0,
  s?: number,
): void {
  const p = ctx.enc.pipe(
    key,
    () => compose("elementwise", opts),
    bindings,
    entry,
  );
  const prm = ctx.enc.params();
  prm.u.set([n, width]);
  if (s !== undefined) prm.f[2] = s;
  const [gx, gy] = grid(Math.ceil(n / WG));
  ctx.enc.dispatch(p, prm.slot, res, gx, gy);
}

/** Record `x[t, :] += bias` for `rows` rows. */
export function encodeAddBias(
  ctx: OpContext,
  ...[x, bias, rows]: Parameters<Backend["addBias"]>
): void {
  const xb = asBuf(x), b = asWeight(bias);
  const n = rows * b.shape[0];
  need(xb, n, `addBias ${b.name}`);
  // The shader reads its first part from row 0: a view starting further in would read the
  // parent's first rows (one expert's bias out of a stacked table gave the first expert's).
  if (b.parts.length !== 1 || (b.parts[0].skip ?? 0) !== 0) {
    throw new WebGPUError(`addBias: ${b.name} is a row view not at row 0 (not supported)`);
  }
  if (n === 0) return;
  const type = typeName(b.type);
  const opts = { decode: type, defines: ctx.defines };
  const bindings = [[0, "uniform"], [1, "read"], [2, "storage"]] as const;
  run(ctx, "add_bias", `add_bias:${type}`, opts, bindings, [b.parts[0].res, xb.res], n, b.shape[0]);
  xb.version++;
}

/** Record `a += b` over `n` elements. */
export function encodeAdd(
  ctx: OpContext,
  ...[a, b, n]: Parameters<Backend["add"]>
): void {
  const ab = asBuf(a), bb = asBuf(b);
  need(ab, n, "add a");
  need(bb, n, "add b");
  if (n === 0) return;
  const bindings = [[0, "uniform"], [2, "storage"], [3, "storage"]] as const;
  run(ctx, "add", "add", F32, bindings, [ab.res, bb.res], n);
  ab.version++;
}

/** Record `x *= s` over `n` elements. */
export function encodeScale(
  ctx: OpContext,
  ...[x, s, n]: Parameters<Backend["scale"]>
): void {
  const xb = asBuf(x);
  need(xb, n, "scale");
  if (n === 0) return;
  run(ctx, "scale", "scale", F32, [[0, "uniform"], [2, "storage"]], [xb.res], n, 0, s);
  xb.version++;
}

/** Record `out = silu(gate) ⊙ up` over `n` elements. */
export function encodeSwiglu(ctx: OpContext, ...args: Parameters<Backend["swiglu"]>): void {
  encodeGated(ctx, "swiglu", args);
}

/** Record `out = gelu(gate) ⊙ up` over `n` elements. */
export function encodeGeglu(ctx: OpContext, ...args: Parameters<Backend["geglu"]>): void {
  encodeGated(ctx, "geglu", args);
}

/** A gated activation: its entry point reads gate and up and writes out. */
function encodeGated(
  ctx: OpContext,
  entry: "swiglu" | "geglu",
  [gate, up, out, n]: Parameters<Backend["swiglu"]>,
): void {
  const g = asBuf(gate), u = asBuf(up), o = asBuf(out);
  need(g, n, `${entry} gate`);
  need(u, n, `${entry} up`);
  need(o, n, `${entry} out`);
  if (n === 0) return;
  const res = [g.res, u.res, o.res];
  if (entry === "swiglu") {
    const bindings = [[0, "uniform"], [2, "storage"], [3, "storage"], [4, "storage"]] as const;
    run(ctx, "swiglu", "swiglu", F32, bindings, res, n);
  } else {
    // ggml's f16 GELU table, the same one every backend reads (kernels/gelu.ts).
    const table = ctx.gpu.constant("the GELU table", geluTable);
    const bindings = [
      [0, "uniform"],
      [1, "read"],
      [2, "storage"],
      [3, "storage"],
      [4, "storage"],
    ] as const;
    run(ctx, "geglu", "geglu", F32, bindings, [table, ...res], n);
  }
  o.version++;
}
