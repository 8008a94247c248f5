/**
 * Quantized tensor formats: block layouts, ggml-exact (de)quantizers and dot products.
 *
 * @example
 * ```ts
 * import { convertActivations, GGMLType, vecDot, vecDotType } from "./mod.ts";
 * const xq = convertActivations(vecDotType(GGMLType.Q4_K), x, 256);
 * const y = vecDot(GGMLType.Q4_K, weightBytes, 0, xq, 256);
 * ```
 */
export {
  GGMLType,
  QK_K,
  rowBytes,
  typeInfo,
  typeName,
  WEIGHT_TYPES,
  weightLayout,
} from "./types.ts";
export type { TypeInfo } from "./types.ts";
export {
  bf16ToF32,
  F16_TABLE,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  quantizeRowBF16,
  quantizeRowF16,
  roundF16,
} from "./float.ts";
export {
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
export {
  dequantizeQ2_K,
  dequantizeQ3_K,
  dequantizeQ4_K,
  dequantizeQ5_K,
  dequantizeQ6_K,
  dequantizeQ8_K,
  nearestInt,
} from "./kquants.ts";
export {
  quantizeRowQ2_K,
  quantizeRowQ3_K,
  quantizeRowQ4_K,
  quantizeRowQ5_K,
  quantizeRowQ6_K,
  quantizeRowQ8_K,
} from "./kquants_quantize.ts";
export {
  vecDotQ2_KQ8_K,
  vecDotQ3_KQ8_K,
  vecDotQ4_KQ8_K,
  vecDotQ5_KQ8_K,
  vecDotQ6_KQ8_K,
} from "./kquants_vecdot.ts";
export { convertActivations, dequantizeRow, quantizeRow, vecDot, vecDotType } from "./ops.ts";
