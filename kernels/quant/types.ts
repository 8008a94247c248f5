/**
 * ggml tensor types as numbered in GGUF files, with their block geometry.
 *
 * The numbers are ggml's `enum ggml_type`; a GGUF tensor info stores them as a u32. Sizes are
 * asserted the way ggml asserts `sizeof(block_q4_K)`: they are the on-disk layout, not a choice.
 */
export enum GGMLType {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  BF16 = 30,
}

/** Block geometry of one tensor type: `blockSize` elements are stored in `typeSize` bytes. */
export interface TypeInfo {
  readonly type: GGMLType;
  readonly name: string;
  readonly blockSize: number;
  readonly typeSize: number;
  /** Whether weights of this type may appear in a model file we load (Q8_1/Q8_K are activation-only). */
  readonly weight: boolean;
}

/** Elements per K-quant super-block. */
export const QK_K = 256;

const INFOS: TypeInfo[] = [
  { type: GGMLType.F32, name: "F32", blockSize: 1, typeSize: 4, weight: true },
  { type: GGMLType.F16, name: "F16", blockSize: 1, typeSize: 2, weight: true },
  { type: GGMLType.BF16, name: "BF16", blockSize: 1, typeSize: 2, weight: true },
  { type: GGMLType.Q4_0, name: "Q4_0", blockSize: 32, typeSize: 2 + 16, weight: true },
  { type: GGMLType.Q4_1, name: "Q4_1", blockSize: 32, typeSize: 2 + 2 + 16, weight: true },
  { type: GGMLType.Q5_0, name: "Q5_0", blockSize: 32, typeSize: 2 + 4 + 16, weight: true },
  { type: GGMLType.Q5_1, name: "Q5_1", blockSize: 32, typeSize: 2 + 2 + 4 + 16, weight: true },
  { type: GGMLType.Q8_0, name: "Q8_0", blockSize: 32, typeSize: 2 + 32, weight: true },
  { type: GGMLType.Q8_1, name: "Q8_1", blockSize: 32, typeSize: 4 + 32, weight: false },
  // block_q2_K: scales[16], qs[64], d, dmin
  { type: GGMLType.Q2_K, name: "Q2_K", blockSize: QK_K, typeSize: 16 + 64 + 2 + 2, weight: true },
  // block_q3_K: hmask[32], qs[64], scales[12], d
  { type: GGMLType.Q3_K, name: "Q3_K", blockSize: QK_K, typeSize: 32 + 64 + 12 + 2, weight: true },
  // block_q4_K: d, dmin, scales[12], qs[128]
  { type: GGMLType.Q4_K, name: "Q4_K", blockSize: QK_K, typeSize: 2 + 2 + 12 + 128, weight: true },
  // block_q5_K: d, dmin, scales[12], qh[32], qs[128]
  {
    type: GGMLType.Q5_K,
    name: "Q5_K",
    blockSize: QK_K,
    typeSize: 2 + 2 + 12 + 32 + 128,
    weight: true,
  },
  // block_q6_K: ql[128], qh[64], scales[16] (int8), d
  { type: GGMLType.Q6_K, name: "Q6_K", blockSize: QK_K, typeSize: 128 + 64 + 16 + 2, weight: true },
  // block_q8_K: d (f32), qs[256] (int8), bsums[16] (int16)
  { type: GGMLType.Q8_K, name: "Q8_K", blockSize: QK_K, typeSize: 4 + 256 + 32, weight: false },
];

const BY_TYPE = new Map<number, TypeInfo>(INFOS.map((i) => [i.type, i]));

/** Every type a weight matrix may have (the activation-only Q8_1 / Q8_K left out), in order. */
export const WEIGHT_TYPES: readonly GGMLType[] = INFOS.filter((i) => i.weight).map((i) => i.type);

/** ggml's names for type numbers we do not support, so errors can say what the file holds. */
const OTHER_NAMES: Record<number, string> = {
  4: "Q4_2 (removed)",
  5: "Q4_3 (removed)",
  16: "IQ2_XXS",
  17: "IQ2_XS",
  18: "IQ3_XXS",
  19: "IQ1_S",
  20: "IQ4_NL",
  21: "IQ3_S",
  22: "IQ2_S",
  23: "IQ4_XS",
  24: "I8",
  25: "I16",
  26: "I32",
  27: "I64",
  28: "F64",
  29: "IQ1_M",
  34: "TQ1_0",
  35: "TQ2_0",
  39: "MXFP4",
};

/** Info for a supported type, or undefined. */
export function typeInfo(type: number): TypeInfo | undefined {
  return BY_TYPE.get(type);
}

/** Human name for any type number, supported or not (e.g. "Q4_K", "IQ2_XS", "type 99"). */
export function typeName(type: number): string {
  return BY_TYPE.get(type)?.name ?? OTHER_NAMES[type] ?? `type ${type}`;
}

/** Bytes taken by `n` elements of `type` (n must be a multiple of the block size). */
export function rowBytes(type: GGMLType, n: number): number {
  const info = BY_TYPE.get(type);
  if (!info) throw new Error(`unsupported tensor type ${typeName(type)}`);
  if (n % info.blockSize !== 0) {
    throw new Error(
      `${n} elements is not a multiple of the ${info.name} block size ${info.blockSize}`,
    );
  }
  return (n / info.blockSize) * info.typeSize;
}

/** A weight's rows: row length (`shape[0]`), row count, bytes per row and in all. */
export function weightLayout(
  type: GGMLType,
  shape: readonly number[],
): { rowLen: number; nRows: number; stride: number; bytes: number } {
  const rowLen = shape[0];
  const nRows = shape.slice(1).reduce((a, b) => a * b, 1);
  const stride = rowBytes(type, rowLen);
  return { rowLen, nRows, stride, bytes: stride * nRows };
}
