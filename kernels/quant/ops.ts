/**
 * Type-dispatched entry points over the per-format modules: dequantize a row, quantize a row,
 * pick and produce the activation ("vec_dot") type of a weight type, and take ggml's dot product.
 */
import { GGMLType, rowBytes, typeName } from "./types.ts";
import {
  bf16ToF32,
  F16_TABLE,
  f16At,
  f32At,
  quantizeRowBF16,
  quantizeRowF16,
  u16,
} from "./float.ts";
import {
  dequantizeQ4_0,
  dequantizeQ4_1,
  dequantizeQ5_0,
  dequantizeQ5_1,
  dequantizeQ8_0,
  dequantizeQ8_1,
  quantizeRowQ4_0,
  quantizeRowQ4_1,
  quantizeRowQ5_0,
  quantizeRowQ5_1,
  quantizeRowQ8_0,
  quantizeRowQ8_1,
  vecDotQ4_0Q8_0,
  vecDotQ4_1Q8_1,
  vecDotQ5_0Q8_0,
  vecDotQ5_1Q8_1,
  vecDotQ8_0Q8_0,
} from "./legacy.ts";
import {
  dequantizeQ2_K,
  dequantizeQ3_K,
  dequantizeQ4_K,
  dequantizeQ5_K,
  dequantizeQ6_K,
  dequantizeQ8_K,
} from "./kquants.ts";
import {
  quantizeRowQ2_K,
  quantizeRowQ3_K,
  quantizeRowQ4_K,
  quantizeRowQ5_K,
  quantizeRowQ6_K,
  quantizeRowQ8_K,
} from "./kquants_quantize.ts";
import {
  vecDotQ2_KQ8_K,
  vecDotQ3_KQ8_K,
  vecDotQ4_KQ8_K,
  vecDotQ5_KQ8_K,
  vecDotQ6_KQ8_K,
} from "./kquants_vecdot.ts";

type Dequant = (src: Uint8Array, so: number, out: Float32Array, oo: number, n: number) => void;

function dequantF32(src: Uint8Array, so: number, out: Float32Array, oo: number, n: number): void {
  if ((src.byteOffset + so) % 4 === 0) {
    out.set(new Float32Array(src.buffer, src.byteOffset + so, n), oo);
  } else {
    for (let i = 0; i < n; i++) out[oo + i] = f32At(src, so + 4 * i);
  }
}

function dequantF16(src: Uint8Array, so: number, out: Float32Array, oo: number, n: number): void {
  for (let i = 0; i < n; i++) out[oo + i] = f16At(src, so + 2 * i);
}

function dequantBF16(src: Uint8Array, so: number, out: Float32Array, oo: number, n: number): void {
  for (let i = 0; i < n; i++) out[oo + i] = bf16ToF32(u16(src, so + 2 * i));
}

const DEQUANT: Partial<Record<GGMLType, Dequant>> = {
  [GGMLType.F32]: dequantF32,
  [GGMLType.F16]: dequantF16,
  [GGMLType.BF16]: dequantBF16,
  [GGMLType.Q4_0]: dequantizeQ4_0,
  [GGMLType.Q4_1]: dequantizeQ4_1,
  [GGMLType.Q5_0]: dequantizeQ5_0,
  [GGMLType.Q5_1]: dequantizeQ5_1,
  [GGMLType.Q8_0]: dequantizeQ8_0,
  [GGMLType.Q8_1]: dequantizeQ8_1,
  [GGMLType.Q2_K]: dequantizeQ2_K,
  [GGMLType.Q3_K]: dequantizeQ3_K,
  [GGMLType.Q4_K]: dequantizeQ4_K,
  [GGMLType.Q5_K]: dequantizeQ5_K,
  [GGMLType.Q6_K]: dequantizeQ6_K,
  [GGMLType.Q8_K]: dequantizeQ8_K,
};

/**
 * Dequantize `n` elements of `type` from `src` at byte `srcOffset` into `out` at `outOffset`
 * (ggml's `to_float`). `n` must be a multiple of the type's block size.
 */
export function dequantizeRow(
  type: GGMLType,
  src: Uint8Array,
  srcOffset: number,
  out: Float32Array,
  outOffset: number,
  n: number,
): void {
  const f = DEQUANT[type];
  if (!f) throw new Error(`cannot dequantize tensor type ${typeName(type)}`);
  const need = rowBytes(type, n);
  if (srcOffset + need > src.length) {
    throw new Error(
      `${typeName(type)} row of ${n} needs ${need} bytes at ${srcOffset}, have ${src.length}`,
    );
  }
  f(src, srcOffset, out, outOffset, n);
}

type Quant = (
  x: ArrayLike<number>,
  n: number,
  out?: Uint8Array,
  xOffset?: number,
  outOffset?: number,
) => Uint8Array;

function quantF32(
  x: ArrayLike<number>,
  n: number,
  out: Uint8Array = new Uint8Array(4 * n),
  xOffset = 0,
  outOffset = 0,
): Uint8Array {
  const v = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (let i = 0; i < n; i++) v.setFloat32(outOffset + 4 * i, x[xOffset + i], true);
  return out;
}

const QUANT: Partial<Record<GGMLType, Quant>> = {
  [GGMLType.F32]: quantF32,
  [GGMLType.F16]: quantizeRowF16,
  [GGMLType.BF16]: quantizeRowBF16,
  [GGMLType.Q4_0]: quantizeRowQ4_0,
  [GGMLType.Q4_1]: quantizeRowQ4_1,
  [GGMLType.Q5_0]: quantizeRowQ5_0,
  [GGMLType.Q5_1]: quantizeRowQ5_1,
  [GGMLType.Q8_0]: quantizeRowQ8_0,
  [GGMLType.Q8_1]: quantizeRowQ8_1,
  [GGMLType.Q2_K]: quantizeRowQ2_K,
  [GGMLType.Q3_K]: quantizeRowQ3_K,
  [GGMLType.Q4_K]: quantizeRowQ4_K,
  [GGMLType.Q5_K]: quantizeRowQ5_K,
  [GGMLType.Q6_K]: quantizeRowQ6_K,
  [GGMLType.Q8_K]: quantizeRowQ8_K,
};

/**
 * Quantize `n` floats of `x` (from `xOffset`) to `type` with ggml's reference quantizer
 * (`quantize_row_*_ref`, i.e. llama-quantize without an imatrix). Returns the bytes.
 */
export function quantizeRow(
  type: GGMLType,
  x: ArrayLike<number>,
  n: number,
  out?: Uint8Array,
  xOffset = 0,
  outOffset = 0,
): Uint8Array {
  const f = QUANT[type];
  if (!f) throw new Error(`cannot quantize to tensor type ${typeName(type)}`);
  return f(x, n, out ?? new Uint8Array(rowBytes(type, n)), xOffset, outOffset);
}

/**
 * The activation type ggml's CPU backend converts `x` to before a matmul with weights of
 * `weightType` (`type_traits_cpu[t].vec_dot_type`).
 */
export function vecDotType(weightType: GGMLType): GGMLType {
  switch (weightType) {
    case GGMLType.F32:
      return GGMLType.F32;
    case GGMLType.F16:
      return GGMLType.F16;
    case GGMLType.BF16:
      return GGMLType.BF16;
    case GGMLType.Q4_0:
    case GGMLType.Q5_0:
    case GGMLType.Q8_0:
      return GGMLType.Q8_0;
    case GGMLType.Q4_1:
    case GGMLType.Q5_1:
      return GGMLType.Q8_1;
    case GGMLType.Q2_K:
    case GGMLType.Q3_K:
    case GGMLType.Q4_K:
    case GGMLType.Q5_K:
    case GGMLType.Q6_K:
      return GGMLType.Q8_K;
    default:
      throw new Error(`no matmul for weight type ${typeName(weightType)}`);
  }
}

/**
 * Convert an activation row to `vecDotType` the way ggml does before a matmul: F32 stays a
 * Float32Array (a view when possible), everything else becomes ggml block bytes.
 */
export function convertActivations(
  type: GGMLType,
  x: Float32Array,
  n: number,
  xOffset = 0,
): Uint8Array | Float32Array {
  if (type === GGMLType.F32) return x.subarray(xOffset, xOffset + n);
  return quantizeRow(type, x, n, undefined, xOffset, 0);
}

function dotF32(w: Uint8Array, wo: number, x: Float32Array, xo: number, n: number): number {
  // ggml_vec_dot_f32 (scalar): float products summed in ggml_float (double).
  let sum = 0;
  if ((w.byteOffset + wo) % 4 === 0) {
    const wf = new Float32Array(w.buffer, w.byteOffset + wo, n);
    for (let i = 0; i < n; i++) sum += Math.fround(wf[i] * x[xo + i]);
  } else {
    for (let i = 0; i < n; i++) sum += Math.fround(f32At(w, wo + 4 * i) * x[xo + i]);
  }
  return Math.fround(sum);
}

function dotF16(w: Uint8Array, wo: number, y: Uint8Array, yo: number, n: number): number {
  // ggml_vec_dot_f16 (scalar): f16·f16 is exact in float; summed in double.
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const o = 2 * i;
    sum += F16_TABLE[w[wo + o] | (w[wo + o + 1] << 8)] *
      F16_TABLE[y[yo + o] | (y[yo + o + 1] << 8)];
  }
  return Math.fround(sum);
}

function dotBF16(w: Uint8Array, wo: number, y: Uint8Array, yo: number, n: number): number {
  // ggml_vec_dot_bf16 (scalar): bf16·bf16 is exact in float; summed in double.
  let sum = 0;
  for (let i = 0; i < n; i++) {
    sum += bf16ToF32(u16(w, wo + 2 * i)) * bf16ToF32(u16(y, yo + 2 * i));
  }
  return Math.fround(sum);
}

type Dot = (w: Uint8Array, wo: number, y: Uint8Array, yo: number, n: number) => number;

const DOT: Partial<Record<GGMLType, Dot>> = {
  [GGMLType.F16]: dotF16,
  [GGMLType.BF16]: dotBF16,
  [GGMLType.Q4_0]: vecDotQ4_0Q8_0,
  [GGMLType.Q4_1]: vecDotQ4_1Q8_1,
  [GGMLType.Q5_0]: vecDotQ5_0Q8_0,
  [GGMLType.Q5_1]: vecDotQ5_1Q8_1,
  [GGMLType.Q8_0]: vecDotQ8_0Q8_0,
  [GGMLType.Q2_K]: vecDotQ2_KQ8_K,
  [GGMLType.Q3_K]: vecDotQ3_KQ8_K,
  [GGMLType.Q4_K]: vecDotQ4_KQ8_K,
  [GGMLType.Q5_K]: vecDotQ5_KQ8_K,
  [GGMLType.Q6_K]: vecDotQ6_KQ8_K,
};

/**
 * ggml's generic `vec_dot` of one weight row (`n` elements of `weightType` at byte `wOffset`)
 * with an activation row already converted by `convertActivations(vecDotType(weightType), …)`.
 * Returns the float32 result exactly as ggml's plain C kernel computes it.
 */
export function vecDot(
  weightType: GGMLType,
  wBytes: Uint8Array,
  wOffset: number,
  xq: Uint8Array | Float32Array,
  n: number,
  xOffset = 0,
): number {
  if (weightType === GGMLType.F32) {
    if (!(xq instanceof Float32Array)) throw new Error("F32 weights need F32 activations");
    return dotF32(wBytes, wOffset, xq, xOffset, n);
  }
  const f = DOT[weightType];
  if (!f) throw new Error(`no vec_dot for weight type ${typeName(weightType)}`);
  if (!(xq instanceof Uint8Array)) {
    throw new Error(
      `${typeName(weightType)} weights need ${typeName(vecDotType(weightType))} activation bytes`,
    );
  }
  return f(wBytes, wOffset, xq, xOffset, n);
}
