/**
 * `out[t, r] = W[r, :] · x[t, :]`: activations converted to the weight's vec_dot type first
 * (ops/quantize.ts), then integer-exact block dot products with ggml's float scaling
 * (matmul.wgsl, or matmul_tiled.wgsl for prompts, with the type's section of quant.wgsl).
 *
 * @module
 */
import type { Backend } from "../../backend.ts";
import { typeInfo, typeName } from "../../quant/types.ts";
import { asBuf, asWeight, need, newId, type Res } from "../handles.ts";
import type { GpuResources } from "../resources.ts";
import { compose } from "../shaders.ts";
import { FALLBACK_PATHS } from "../features.ts";
import { grid, type OpContext, subgroupVariant, WG } from "./context.ts";
import { quantizeActivations, VD_BLOCK, VEC_DOT } from "./quantize.ts";
import { cpuMatmulFits, cpuMatmulSubst } from "./matmul_cpu.ts";

/** Elements of each activation row per tile of matmul_tiled.wgsl: float kinds, int8 kinds. */
const TILE_FLOATS = 256;
const TILE_QUANTS = 1024;

/** The f16 path reads the weight a second time as `array<f16>` (binding 4, see quant.wgsl). */
const F16_BINDING = [[4, "read"]] as const;

function pow2floor(n: number): number {
  return 2 ** Math.floor(Math.log2(Math.max(1, n)));
}

/** Record `out = x · wᵀ` for `rows` activation rows, one dispatch per weight part. */
export function encodeMatmul(
  ctx: OpContext,
  ...[w, x, out, rows]: Parameters<Backend["matmul"]>
): void {
  const W = asWeight(w);
  const xb = asBuf(x);
  const o = asBuf(out);
  const k = W.cols;
  need(xb, rows * k, `matmul ${W.name} input`);
  need(o, rows * W.rows, `matmul ${W.name} output`);
  if (rows === 0) return;
  const kind = VEC_DOT[W.type]!;
  let a: Res = xb.res;
  let dOff = 0, sOff = 0;
  if (kind !== "f32") {
    ({ res: a, dOff, sOff } = quantizeActivations(ctx, xb, rows, k, kind));
  } else if (xb === o) {
    // In place (out aliases x): read a copy, as ggml reads its converted activations.
    a = ctx.gpu.scratch("matmul input copy", rows * k * 4);
    ctx.enc.copyEncoder().copyBufferToBuffer(xb.res.buffer, 0, a.buffer, 0, rows * k * 4);
  }
  const tname = typeName(W.type);
  if (ctx.info.cpuKernels && cpuMatmulFits(W.type, k)) {
    encodeCpuMatmul(ctx, W, a, o.res, rows, dOff, sOff);
    o.version++;
    return;
  }
  const bs = typeInfo(W.type)!.blockSize;
  const nb = k / bs;
  const perLane = bs === 1 ? 16 : bs === 32 ? 2 : 1;
  const auto = Math.min(64, pow2floor(nb / perLane));
  const policy = ctx.info.matmulLanes;
  const tpr = policy === "single" ? 1 : policy === "shared" ? Math.max(2, auto) : auto;
  const tt = rows === 1 ? 1 : 8;
  // Prompts stage their activation rows in workgroup memory tile by tile (matmul_tiled.wgsl);
  // a lane must stay within one tile's blocks for the per-lane order to be matmul.wgsl's.
  // K-quants keep matmul.wgsl: llvmpipe took 33-104 s to compile their tiled shader.
  const tiled = rows > 1 && ctx.info.tiledPrefill && kind !== "q8_k";
  const kt = kind === "f32" || VD_BLOCK[kind] === 1 ? TILE_FLOATS : TILE_QUANTS;
  const lanes = tiled ? Math.min(tpr, kt / bs) : tpr;
  const single = lanes === 1 ? ["SINGLE_LANE"] : [];
  const file = tiled ? "matmul_tiled" : "matmul";
  const kindDef = kind === "f32" || VD_BLOCK[kind] === 1 ? "KIND_F" : `KIND_${kind.toUpperCase()}`;
  // Optional paths (after their self-check): hardware half conversion in either kernel; shuffle
  // reductions where matmul.wgsl's lanes share a row.
  const sg = subgroupVariant(!tiled && lanes > 1 ? ctx.paths : FALLBACK_PATHS);
  const f16 = ctx.paths.f16;
  const p = ctx.enc.pipe(
    `${file}:${tname}:${tt}:${lanes === 1 ? "single" : "shared"}${sg.key}${f16 ? ":f16" : ""}`,
    () =>
      compose(file, {
        decode: tname,
        defines: [
          ...ctx.defines,
          ...single,
          kindDef,
          ...sg.defines,
          ...(f16 ? ["F16_NATIVE"] : []),
        ],
        subst: { TT: tt, KT: kt, ...sg.subst },
        prelude: (f16 ? "enable f16;\n" : "") + sg.prelude,
      }),
    [[0, "uniform"], [1, "read"], [2, "storage"], [3, "storage"], ...(f16 ? F16_BINDING : [])],
  );
  const rowsPerWg = WG / lanes;
  for (const part of W.parts) {
    const prm = ctx.enc.params();
    prm.u.set(partParams(W, part, k, rows, dOff, sOff, lanes));
    const [gx, gy] = grid(Math.ceil(part.rows / rowsPerWg));
    const res = f16 ? [part.res, a, o.res, part.res] : [part.res, a, o.res];
    ctx.enc.dispatch(p, prm.slot, res, gx, gy, Math.ceil(rows / tt));
  }
  o.version++;
}

/**
 * Weight rows (R) and activation rows (TT) per invocation of matmul_cpu.wgsl, and its workgroup
 * size: measured on llvmpipe (110M Q8_0), where R = 8 beat 4 by 8% for decode (with the weight
 * textures; 2 was slower still) and R·TT = 4·8 beat 2·4 by 1.5× for prompts. Exported for tuning
 * scripts.
 */
export const CPU_TILE = {
  decode: { R: 8, TT: 1 },
  prompt: { R: 4, TT: 8 },
  wgs: 16,
  /** Read weights as rgba32uint textures (15% faster decode, 7% prompts; twice the memory). */
  textures: true,
};

/** Texels per row of a weight texture. */
const TEX_W = 4096;

/** Each weight buffer's texture copy (null: too large for one), per device. */
const TEXTURES = new WeakMap<GpuResources, Map<number, { res: Res; texture: GPUTexture } | null>>();

/**
 * The matmul shaders' parameters for one part of a weight (a binding of its rows): part rows, k,
 * activation rows, row bytes, total rows, the part's first row, the activation's quants and
 * scales offsets, lanes per row, and the bytes the part skips at its start.
 */
function partParams(
  W: ReturnType<typeof asWeight>,
  part: ReturnType<typeof asWeight>["parts"][number],
  k: number,
  rows: number,
  dOff: number,
  sOff: number,
  lanes: number,
): number[] {
  return [part.rows, k, rows, W.rowBytes, W.rows, part.row0, dOff, sOff, lanes, part.skip ?? 0];
}

/**
 * `res` (a weight part) as an rgba32uint texture, copied on first use and destroyed with the
 * buffer: llvmpipe fetches texels with vector gathers instead of its per-invocation loop of
 * scalar loads. Null when it would exceed the device's texture height.
 */
function weightTexture(ctx: OpContext, res: Res): Res | null {
  let cache = TEXTURES.get(ctx.gpu);
  if (!cache) {
    const c = cache = new Map();
    TEXTURES.set(ctx.gpu, c);
    const gpu = ctx.gpu;
    gpu.onDestroy((r) => {
      const t = c.get(r.id);
      if (t) gpu.destroyLater(t.texture);
      c.delete(r.id);
    });
  }
  const hit = cache.get(res.id);
  if (hit !== undefined) return hit?.res ?? null;
  const texels = Math.floor(res.bytes / 16);
  const full = Math.floor(texels / TEX_W), rem = texels % TEX_W;
  const height = full + (rem ? 1 : 0);
  const dev = ctx.gpu.dev;
  if (height > dev.limits.maxTextureDimension2D || texels === 0) {
    cache.set(res.id, null);
    return null;
  }
  const texture = dev.createTexture({
    label: "weight texture",
    size: [TEX_W, height],
    format: "rgba32uint",
    usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST,
  });
  const enc = ctx.enc.copyEncoder();
  const bytesPerRow = TEX_W * 16;
  if (full) {
    enc.copyBufferToTexture({ buffer: res.buffer, bytesPerRow, rowsPerImage: full }, { texture }, [
      TEX_W,
      full,
    ]);
  }
  if (rem) {
    enc.copyBufferToTexture(
      { buffer: res.buffer, offset: full * bytesPerRow, bytesPerRow },
      { texture, origin: [0, full] },
      [rem, 1],
    );
  }
  const t = { buffer: res.buffer, id: newId(), bytes: texels * 16, view: texture.createView() };
  cache.set(res.id, { res: t, texture });
  return t;
}

/** matmul_cpu.wgsl: see ops/matmul_cpu.ts. */
function encodeCpuMatmul(
  ctx: OpContext,
  W: ReturnType<typeof asWeight>,
  a: Res,
  out: Res,
  rows: number,
  dOff: number,
  sOff: number,
): void {
  // Short batches take a narrower token tile (clamped rows are real work on a CPU).
  const { R, TT: wide } = rows === 1 ? CPU_TILE.decode : CPU_TILE.prompt;
  const TT = Math.min(wide, rows >= 8 ? 8 : rows >= 4 ? 4 : 2);
  const wgs = CPU_TILE.wgs;
  const pipe = (tex: boolean) =>
    ctx.enc.pipe(
      `matmul_cpu:${typeName(W.type)}:${R}:${TT}:${wgs}:${tex}`,
      () =>
        compose("matmul_cpu", {
          defines: [...ctx.defines, ...(tex ? ["WEIGHT_TEXTURE"] : [])],
          subst: { ...cpuMatmulSubst(W.type, R, TT, wgs), TEX_W },
        }),
      [[0, "uniform"], [1, tex ? "texture" : "read"], [2, "read"], [3, "storage"]],
    );
  for (const part of W.parts) {
    const tex = CPU_TILE.textures ? weightTexture(ctx, part.res) : null;
    const p = pipe(tex !== null);
    const prm = ctx.enc.params();
    prm.u.set(partParams(W, part, W.cols, rows, dOff, sOff, 1));
    const [gx, gy] = grid(Math.ceil(part.rows / R / wgs));
    ctx.enc.dispatch(p, prm.slot, [tex ?? part.res, a, out], gx, gy, Math.ceil(rows / TT));
  }
}
