/**
 * GGUF writer: the byte layout llama.cpp's `gguf_write_to_file` produces, for tests and benches.
 *
 * Layout: header, metadata, tensor infos, zero padding to the alignment, then each tensor's data
 * followed by zero padding to the alignment (so the file ends aligned too); a file without tensors
 * ends right after its index, unpadded, as llama.cpp's vocab files do. Tensor offsets are
 * assigned in order. `general.alignment` is written only when the metadata contains it.
 */

import { typeInfo, typeName } from "../../kernels/quant/types.ts";
import { GGUFError } from "./errors.ts";
import { DEFAULT_ALIGNMENT, MAX_DIMS, valueTypeName } from "./reader.ts";
import {
  type GGUFArray,
  type GGUFMetadataEntry,
  type GGUFTensorInfo,
  type GGUFValue,
  GGUFValueType,
} from "./types.ts";

/** A tensor to write: its shape, ggml type and raw bytes. */
export interface GGUFTensorInput {
  readonly name: string;
  /** GGUF order: dims[0] is the row length (ne0). */
  readonly dims: readonly number[];
  readonly type: number;
  readonly data: Uint8Array;
}

/** A tensor's index entry for the streaming writer (its bytes come later). */
export interface GGUFTensorHeader {
  readonly name: string;
  readonly dims: readonly number[];
  readonly type: number;
  /** Required only for types without known block geometry. */
  readonly nBytes?: number;
}

/** Everything before the data section. */
export interface GGUFHeaderSpec {
  /** 2 or 3; default 3. */
  readonly version?: 2 | 3;
  readonly metadata: readonly GGUFMetadataEntry[];
  readonly tensors: readonly GGUFTensorHeader[];
  /** Must agree with `general.alignment` in metadata when both are given; default 32. */
  readonly alignment?: number;
}

/** A whole file to write in memory. */
export interface GGUFWriteSpec {
  readonly version?: 2 | 3;
  readonly metadata: readonly GGUFMetadataEntry[];
  readonly tensors: readonly GGUFTensorInput[];
  readonly alignment?: number;
}

/** The encoded front of a file and where each tensor's data goes. */
export interface EncodedHeader {
  /** Header + metadata + tensor infos + padding: the file's first `dataOffset` bytes. */
  readonly bytes: Uint8Array;
  readonly alignment: number;
  readonly dataOffset: number;
  /** Tensor index as a reader will see it. */
  readonly tensors: GGUFTensorInfo[];
  /** Total file size once all tensor data (with padding) is written. */
  readonly fileSize: number;
}

const SCALAR_SIZE: Record<number, number> = {
  [GGUFValueType.UINT8]: 1,
  [GGUFValueType.INT8]: 1,
  [GGUFValueType.UINT16]: 2,
  [GGUFValueType.INT16]: 2,
  [GGUFValueType.UINT32]: 4,
  [GGUFValueType.INT32]: 4,
  [GGUFValueType.FLOAT32]: 4,
  [GGUFValueType.BOOL]: 1,
  [GGUFValueType.UINT64]: 8,
  [GGUFValueType.INT64]: 8,
  [GGUFValueType.FLOAT64]: 8,
};

function fail(message: string, field: string): never {
  throw new GGUFError(`GGUF writer: ${message}: ${field}`, field);
}

const align = (n: number, a: number) => Math.ceil(n / a) * a;

/** A growable little-endian byte buffer. */
class Bytes {
  #buf = new Uint8Array(4096);
  #view = new DataView(this.#buf.buffer);
  length = 0;
  readonly #enc = new TextEncoder();

  #grow(n: number): void {
    if (this.length + n <= this.#buf.length) return;
    let cap = this.#buf.length * 2;
    while (cap < this.length + n) cap *= 2;
    const b = new Uint8Array(cap);
    b.set(this.#buf.subarray(0, this.length));
    this.#buf = b;
    this.#view = new DataView(b.buffer);
  }
  u32(v: number): void {
    this.#grow(4);
    this.#view.setUint32(this.length, v, true);
    this.length += 4;
  }
  u64(v: number | bigint): void {
    this.#grow(8);
    this.#view.setBigUint64(this.length, BigInt(v), true);
    this.length += 8;
  }
  scalar(t: GGUFValueType, v: GGUFValue, field: string): void {
    const o = this.length;
    this.#grow(8);
    const dv = this.#view;
    const num = (): number => {
      if (typeof v !== "number") fail(`expected a number for ${valueTypeName(t)}`, field);
      return v;
    };
    const big = (): bigint => {
      if (typeof v === "bigint") return v;
      if (typeof v === "number" && Number.isInteger(v)) return BigInt(v);
      fail(`expected a bigint for ${valueTypeName(t)}`, field);
    };
    switch (t) {
      case GGUFValueType.UINT8:
        dv.setUint8(o, num());
        break;
      case GGUFValueType.INT8:
        dv.setInt8(o, num());
        break;
      case GGUFValueType.UINT16:
        dv.setUint16(o, num(), true);
        break;
      case GGUFValueType.INT16:
        dv.setInt16(o, num(), true);
        break;
      case GGUFValueType.UINT32:
        dv.setUint32(o, num(), true);
        break;
      case GGUFValueType.INT32:
        dv.setInt32(o, num(), true);
        break;
      case GGUFValueType.FLOAT32:
        dv.setFloat32(o, num(), true);
        break;
      case GGUFValueType.BOOL:
        if (typeof v !== "boolean") fail("expected a boolean", field);
        dv.setUint8(o, v ? 1 : 0);
        break;
      case GGUFValueType.UINT64:
        dv.setBigUint64(o, big(), true);
        break;
      case GGUFValueType.INT64:
        dv.setBigInt64(o, big(), true);
        break;
      case GGUFValueType.FLOAT64:
        dv.setFloat64(o, num(), true);
        break;
      default:
        fail(`unknown value type ${t}`, field);
    }
    this.length += SCALAR_SIZE[t];
  }
  raw(b: Uint8Array): void {
    this.#grow(b.length);
    this.#buf.set(b, this.length);
    this.length += b.length;
  }
  string(s: string): void {
    const b = this.#enc.encode(s);
    this.u64(b.length);
    this.raw(b);
  }
  value(t: GGUFValueType, v: GGUFValue, field: string): void {
    if (t === GGUFValueType.STRING) {
      if (typeof v !== "string") fail("expected a string", field);
      this.string(v);
    } else if (t === GGUFValueType.ARRAY) {
      if (typeof v !== "object" || v === null || !("itemType" in v)) {
        fail("expected a GGUFArray", field);
      }
      this.array(v, field);
    } else this.scalar(t, v, field);
  }
  array(a: GGUFArray, field: string): void {
    this.u32(a.itemType);
    this.u64(a.values.length);
    const v = a.values;
    if (ArrayBuffer.isView(v) && SCALAR_SIZE[a.itemType] === v.BYTES_PER_ELEMENT) {
      // Typed arrays of the matching width are already the little-endian payload.
      this.raw(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
      return;
    }
    for (let i = 0; i < v.length; i++) this.value(a.itemType, v[i], `${field}[${i}]`);
  }
  done(): Uint8Array {
    return this.#buf.slice(0, this.length);
  }
}

function bytesOf(t: GGUFTensorHeader, field: string): number {
  const info = typeInfo(t.type);
  let n = 1;
  for (const d of t.dims) n *= d;
  if (!info) {
    if (t.nBytes === undefined) {
      fail(`tensor type ${typeName(t.type)} has no known size; give nBytes`, field);
    }
    return t.nBytes;
  }
  if (t.dims[0] % info.blockSize !== 0) {
    fail(`row length ${t.dims[0]} is not a multiple of the ${info.name} block size`, field);
  }
  const nBytes = (n / info.blockSize) * info.typeSize;
  if (t.nBytes !== undefined && t.nBytes !== nBytes) {
    fail(`nBytes ${t.nBytes} disagrees with ${info.name} ${t.dims.join("×")} = ${nBytes}`, field);
  }
  return nBytes;
}

/** Encodes header, metadata and tensor index; tensor offsets are assigned in order. */
export function encodeGGUFHeader(spec: GGUFHeaderSpec): EncodedHeader {
  const version = spec.version ?? 3;
  if (version !== 2 && version !== 3) fail(`version ${version} cannot be written`, "version");
  let alignment = spec.alignment ?? DEFAULT_ALIGNMENT;
  const al = spec.metadata.find((e) => e.key === "general.alignment");
  if (al) {
    if (al.type !== GGUFValueType.UINT32 || typeof al.value !== "number") {
      fail("general.alignment must be UINT32", `metadata["general.alignment"]`);
    }
    if (spec.alignment !== undefined && spec.alignment !== al.value) {
      fail(`alignment ${spec.alignment} disagrees with general.alignment ${al.value}`, "alignment");
    }
    alignment = al.value;
  } else if (alignment !== DEFAULT_ALIGNMENT) {
    // Readers would assume 32 without the key, so the file would be misread.
    fail(`alignment ${alignment} needs a general.alignment metadata entry`, "alignment");
  }
  if (!(alignment > 0) || (alignment & (alignment - 1)) !== 0) {
    fail(`alignment ${alignment} is not a power of two`, "alignment");
  }

  const b = new Bytes();
  b.raw(new Uint8Array([0x47, 0x47, 0x55, 0x46]));
  b.u32(version);
  b.u64(spec.tensors.length);
  b.u64(spec.metadata.length);
  const keys = new Set<string>();
  for (const e of spec.metadata) {
    const f = `metadata[${JSON.stringify(e.key)}]`;
    if (keys.has(e.key)) fail("duplicate metadata key", f);
    keys.add(e.key);
    b.string(e.key);
    b.u32(e.type);
    b.value(e.type, e.value, `${f}.value`);
  }
  const tensors: GGUFTensorInfo[] = [];
  const names = new Set<string>();
  let offset = 0;
  spec.tensors.forEach((t, i) => {
    const f = `tensors[${i}] ${JSON.stringify(t.name)}`;
    if (names.has(t.name)) fail("duplicate tensor name", f);
    names.add(t.name);
    if (t.dims.length < 1 || t.dims.length > MAX_DIMS) fail(`needs 1..${MAX_DIMS} dims`, f);
    const nBytes = bytesOf(t, f);
    b.string(t.name);
    b.u32(t.dims.length);
    for (const d of t.dims) b.u64(d);
    b.u32(t.type);
    b.u64(offset);
    const nElements = t.dims.reduce((p, d) => p * d, 1);
    tensors.push({
      name: t.name,
      dims: [...t.dims],
      type: t.type,
      offset,
      nElements,
      nBytes: typeInfo(t.type) ? nBytes : undefined,
    });
    offset += align(nBytes, alignment);
  });
  const dataOffset = align(b.length, alignment);
  // A file without tensors (e.g. llama.cpp's ggml-vocab-*.gguf) ends right after the index, with
  // no padding; readers still compute the same (empty) data offset.
  if (tensors.length > 0) b.raw(new Uint8Array(dataOffset - b.length));
  const fileSize = tensors.length > 0 ? dataOffset + offset : b.length;
  return { bytes: b.done(), alignment, dataOffset, tensors, fileSize };
}

/** Serialises a whole GGUF file in memory, byte-exact with llama.cpp's writer. */
export function writeGGUF(spec: GGUFWriteSpec): Uint8Array {
  const header = encodeGGUFHeader({
    version: spec.version,
    metadata: spec.metadata,
    alignment: spec.alignment,
    tensors: spec.tensors.map((t) => ({
      name: t.name,
      dims: t.dims,
      type: t.type,
      nBytes: typeInfo(t.type) ? undefined : t.data.length,
    })),
  });
  const out = new Uint8Array(header.fileSize);
  out.set(header.bytes, 0);
  spec.tensors.forEach((t, i) => {
    const info = header.tensors[i];
    const want = info.nBytes ?? t.data.length;
    if (t.data.length !== want) {
      fail(`data has ${t.data.length} bytes, the shape needs ${want}`, `tensors[${i}].data`);
    }
    out.set(t.data, header.dataOffset + info.offset);
  });
  return out;
}

/**
 * Writes a GGUF file to `path`, taking each tensor's bytes from `data` in tensor order, so only
 * one tensor is in memory at a time. Returns the file size.
 */
export async function writeGGUFFile(
  path: string | URL,
  header: GGUFHeaderSpec,
  data: Iterable<Uint8Array> | AsyncIterable<Uint8Array>,
): Promise<number> {
  const h = encodeGGUFHeader(header);
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    await writeAll(file, h.bytes);
    let i = 0;
    let written = h.bytes.length;
    for await (const chunk of data) {
      const info = h.tensors[i];
      if (!info) fail(`more data chunks than the ${h.tensors.length} tensors`, "data");
      const want = info.nBytes ?? header.tensors[i].nBytes!;
      if (chunk.length !== want) {
        fail(`data has ${chunk.length} bytes, the shape needs ${want}`, `tensors[${i}].data`);
      }
      await writeAll(file, chunk);
      const pad = align(want, h.alignment) - want;
      if (pad) await writeAll(file, new Uint8Array(pad));
      written += want + pad;
      i++;
    }
    if (i !== h.tensors.length) {
      fail(`got data for ${i} of ${h.tensors.length} tensors`, "data");
    }
    return written;
  } finally {
    file.close();
  }
}

async function writeAll(file: Deno.FsFile, b: Uint8Array): Promise<void> {
  let done = 0;
  while (done < b.length) done += await file.write(b.subarray(done));
}

/** Builds a GGUFArray; plain number arrays become the typed array of `itemType`. */
export function ggufArray(
  itemType: GGUFValueType,
  values: GGUFArray["values"] | readonly number[] | readonly bigint[],
): GGUFArray {
  if (ArrayBuffer.isView(values)) return { itemType, values };
  const v = values as unknown[];
  switch (itemType) {
    case GGUFValueType.UINT8:
      return { itemType, values: Uint8Array.from(v as number[]) };
    case GGUFValueType.INT8:
      return { itemType, values: Int8Array.from(v as number[]) };
    case GGUFValueType.UINT16:
      return { itemType, values: Uint16Array.from(v as number[]) };
    case GGUFValueType.INT16:
      return { itemType, values: Int16Array.from(v as number[]) };
    case GGUFValueType.UINT32:
      return { itemType, values: Uint32Array.from(v as number[]) };
    case GGUFValueType.INT32:
      return { itemType, values: Int32Array.from(v as number[]) };
    case GGUFValueType.FLOAT32:
      return { itemType, values: Float32Array.from(v as number[]) };
    case GGUFValueType.FLOAT64:
      return { itemType, values: Float64Array.from(v as number[]) };
    case GGUFValueType.UINT64:
      return { itemType, values: BigUint64Array.from(v as (number | bigint)[], (x) => BigInt(x)) };
    case GGUFValueType.INT64:
      return { itemType, values: BigInt64Array.from(v as (number | bigint)[], (x) => BigInt(x)) };
    default:
      return { itemType, values: values as boolean[] | string[] | GGUFArray[] };
  }
}

/** Concise builders for metadata entries, e.g. `meta.u32("llama.block_count", 2)`. */
export const meta = {
  /** UINT8 entry. */
  u8: (key: string, v: number): GGUFMetadataEntry => ({ key, type: GGUFValueType.UINT8, value: v }),
  /** INT8 entry. */
  i8: (key: string, v: number): GGUFMetadataEntry => ({ key, type: GGUFValueType.INT8, value: v }),
  /** UINT16 entry. */
  u16: (key: string, v: number): GGUFMetadataEntry => ({
    key,
    type: GGUFValueType.UINT16,
    value: v,
  }),
  /** INT16 entry. */
  i16: (key: string, v: number): GGUFMetadataEntry => ({
    key,
    type: GGUFValueType.INT16,
    value: v,
  }),
  /** UINT32 entry. */
  u32: (key: string, v: number): GGUFMetadataEntry => ({
    key,
    type: GGUFValueType.UINT32,
    value: v,
  }),
  /** INT32 entry. */
  i32: (key: string, v: number): GGUFMetadataEntry => ({
    key,
    type: GGUFValueType.INT32,
    value: v,
  }),
  /** FLOAT32 entry (the value is rounded to f32 so it reads back equal). */
  f32: (key: string, v: number): GGUFMetadataEntry => ({
    key,
    type: GGUFValueType.FLOAT32,
    value: Math.fround(v),
  }),
  /** FLOAT64 entry. */
  f64: (key: string, v: number): GGUFMetadataEntry => ({
    key,
    type: GGUFValueType.FLOAT64,
    value: v,
  }),
  /** UINT64 entry. */
  u64: (key: string, v: number | bigint): GGUFMetadataEntry => ({
    key,
    type: GGUFValueType.UINT64,
    value: BigInt(v),
  }),
  /** INT64 entry. */
  i64: (key: string, v: number | bigint): GGUFMetadataEntry => ({
    key,
    type: GGUFValueType.INT64,
    value: BigInt(v),
  }),
  /** BOOL entry. */
  bool: (key: string, v: boolean): GGUFMetadataEntry => ({
    key,
    type: GGUFValueType.BOOL,
    value: v,
  }),
  /** STRING entry. */
  string: (key: string, v: string): GGUFMetadataEntry => ({
    key,
    type: GGUFValueType.STRING,
    value: v,
  }),
  /** ARRAY entry; numeric `values` given as plain arrays become typed arrays. */
  array: (
    key: string,
    itemType: GGUFValueType,
    values: GGUFArray["values"] | readonly number[] | readonly bigint[],
  ): GGUFMetadataEntry => ({ key, type: GGUFValueType.ARRAY, value: ggufArray(itemType, values) }),
};
