/**
 * The shapes of a parsed GGUF file. `reader.ts` produces them, `writer.ts` consumes them.
 *
 * GGUF layout (v2/v3, little-endian): magic "GGUF", u32 version, u64 tensor_count,
 * u64 metadata_kv_count, metadata KVs, tensor infos, padding to `general.alignment` (default 32),
 * then the tensor data section. v1 (u32 counts) is rejected with a clear error.
 */

/** Metadata value types, numbered as in the GGUF spec. */
export enum GGUFValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

/**
 * A metadata value. Integers up to 32 bits and floats are `number`; 64-bit integers are `bigint`;
 * arrays are `GGUFArray` (nested arrays nest).
 */
export type GGUFValue = number | bigint | boolean | string | GGUFArray;

/** A metadata array: its element type and its elements. */
export interface GGUFArray {
  readonly itemType: GGUFValueType;
  /**
   * Numeric arrays use the matching typed array (Uint8Array … Float64Array, BigInt64Array /
   * BigUint64Array for 64-bit); BOOL arrays are boolean[]; STRING arrays string[]; ARRAY arrays
   * GGUFArray[].
   */
  readonly values:
    | Uint8Array
    | Int8Array
    | Uint16Array
    | Int16Array
    | Uint32Array
    | Int32Array
    | Float32Array
    | Float64Array
    | BigUint64Array
    | BigInt64Array
    | boolean[]
    | string[]
    | GGUFArray[];
}

/** One metadata key/value with its declared type. */
export interface GGUFMetadataEntry {
  readonly key: string;
  readonly type: GGUFValueType;
  readonly value: GGUFValue;
}

/** One entry of the tensor index. */
export interface GGUFTensorInfo {
  readonly name: string;
  /** GGUF dimension order: dims[0] is the innermost (row length, ggml ne0). */
  readonly dims: readonly number[];
  /** ggml type number (see kernels/quant/types.ts); may be a type we cannot compute with. */
  readonly type: number;
  /** Byte offset relative to the start of the data section (a multiple of the alignment). */
  readonly offset: number;
  /** Product of dims. */
  readonly nElements: number;
  /** Size in bytes, or undefined when the type is unknown to us (no block geometry). */
  readonly nBytes: number | undefined;
}
