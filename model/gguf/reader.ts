/**
 * GGUF reader: parses the header, metadata and tensor index, and reads tensor bytes lazily.
 *
 * Opening reads only the front of the file, in chunks through a growing window (64 KiB, doubling
 * to 1 MiB), so a 40 GB model opens after a few MB. Every count and length is checked against
 * the bytes left in the file before anything is allocated, so a corrupt file fails with a
 * `GGUFError` naming the field and offset instead of a huge allocation, a hang or a crash.
 */

import { typeInfo, typeName } from "../../kernels/quant/types.ts";
import { GGUFError, ggufError, truncatedError } from "./errors.ts";
import { type ByteSource, FileSource, MemorySource } from "./source.ts";
import {
  type GGUFArray,
  type GGUFMetadataEntry,
  type GGUFTensorInfo,
  type GGUFValue,
  GGUFValueType,
} from "./types.ts";

export { type ByteSource, FileSource, MemorySource };

/** `general.alignment` when the file does not set it. */
export const DEFAULT_ALIGNMENT = 32;
/** ggml's GGML_MAX_DIMS: a tensor has 1 to 4 dimensions. */
export const MAX_DIMS = 4;
// Arrays may nest; real files nest at most once. The limit keeps a file made of nested array
// headers from exhausting the stack (each level costs only 12 bytes of file).
const MAX_NESTING = 32;
/**
 * Most arrays held inside other arrays, in the whole file. llama.cpp refuses arrays of arrays
 * outright; we read them (the writer round-trips them), but each costs ~250 bytes of heap for 12
 * of file: a 12 MB file of empty inner arrays grew the heap by 277 MB.
 */
const MAX_INNER_ARRAYS = 65_536;
/**
 * Most BOOL array elements in the whole file. Each is one byte of file but a JS boolean of heap
 * (8 bytes, ~20 while the array grew): a 50 MB file of one such array grew the heap by ~1 GB, and
 * a larger one aborted the process. llama.cpp's keys hold a few per layer at most.
 */
export const MAX_BOOL_ITEMS = 1 << 20;
const FIRST_CHUNK = 64 * 1024;
// Capped so that the read-ahead past a large header (a 150k-token vocab is ~6 MB) stays small.
const MAX_CHUNK = 1024 * 1024;
const MAGIC = [0x47, 0x47, 0x55, 0x46]; // "GGUF"

/** Bytes one scalar of each fixed-size type takes; undefined for STRING and ARRAY. */
const SCALAR_SIZE: Partial<Record<GGUFValueType, number>> = {
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

/** Smallest encoding of one array element of `t`, used to bound counts before allocating. */
function minItemSize(t: GGUFValueType): number {
  if (t === GGUFValueType.STRING) return 8; // u64 length, empty string
  if (t === GGUFValueType.ARRAY) return 12; // u32 item type + u64 count, empty array
  return SCALAR_SIZE[t]!;
}

/** Human name of a metadata value type, e.g. "UINT32", "ARRAY<STRING>". */
export function valueTypeName(t: number): string {
  return GGUFValueType[t] ?? `type ${t}`;
}

function isValueType(t: number): t is GGUFValueType {
  return Number.isInteger(t) && t >= 0 && t <= 12;
}

/** A read position over a ByteSource with a window of buffered bytes ahead of it. */
class Cursor {
  pos = 0;
  /** Arrays read inside other arrays so far (MAX_INNER_ARRAYS). */
  innerArrays = 0;
  /** BOOL array elements read so far (MAX_BOOL_ITEMS). */
  boolItems = 0;
  #buf: Uint8Array<ArrayBuffer> = new Uint8Array(0);
  #view = new DataView(this.#buf.buffer);
  #start = 0; // file offset of #buf[0]
  #chunk = FIRST_CHUNK;
  // ignoreBOM: a vocabulary may hold U+FEFF as a token; the default decoder would drop it.
  readonly #decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

  constructor(readonly src: ByteSource) {}

  get size(): number {
    return this.src.size;
  }

  get remaining(): number {
    return this.src.size - this.pos;
  }

  /** True when `n` bytes at `pos` are already buffered (the hot path; no await). */
  has(n: number): boolean {
    return this.pos + n <= this.#start + this.#buf.length;
  }

  /** Makes `n` bytes at `pos` available, or fails naming `field` when the file is too short. */
  async fill(n: number, field: string): Promise<void> {
    if (this.has(n)) return;
    if (n > this.remaining) throw truncatedError(field, n, this.pos, this.size);
    const keep = this.#buf.subarray(this.pos - this.#start);
    const want = Math.min(this.remaining, Math.max(n, this.#chunk));
    let fresh: Uint8Array;
    try {
      fresh = await this.src.read(this.pos + keep.length, want - keep.length);
    } catch (e) {
      // A RangeError is a reader bug (a read outside the source) and must stay visible to tests;
      // I/O failures (file shrank, handle closed) become GGUFErrors that say where we were.
      if (e instanceof RangeError || e instanceof GGUFError) throw e;
      const err = ggufError(`read failed (${(e as Error)?.message ?? e})`, field, this.pos);
      err.cause = e;
      throw err;
    }
    if (fresh.length !== want - keep.length) {
      throw ggufError(
        `source returned ${fresh.length} of ${want - keep.length} bytes (file changed?)`,
        field,
        this.pos,
      );
    }
    const buf = new Uint8Array(want);
    buf.set(keep, 0);
    buf.set(fresh, keep.length);
    this.#buf = buf;
    this.#view = new DataView(buf.buffer);
    this.#start = this.pos;
    this.#chunk = Math.min(this.#chunk * 2, MAX_CHUNK);
  }

  async ensure(n: number, field: string): Promise<void> {
    if (!this.has(n)) await this.fill(n, field);
  }

  // The getters below assume `ensure` covered the bytes.
  u8(): number {
    return this.#buf[this.pos++ - this.#start];
  }
  u32(): number {
    const v = this.#view.getUint32(this.pos - this.#start, true);
    this.pos += 4;
    return v;
  }
  u64(): bigint {
    const v = this.#view.getBigUint64(this.pos - this.#start, true);
    this.pos += 8;
    return v;
  }
  scalar(t: GGUFValueType): number | bigint | boolean {
    const o = this.pos - this.#start;
    const v = this.#view;
    this.pos += SCALAR_SIZE[t]!;
    switch (t) {
      case GGUFValueType.UINT8:
        return v.getUint8(o);
      case GGUFValueType.INT8:
        return v.getInt8(o);
      case GGUFValueType.UINT16:
        return v.getUint16(o, true);
      case GGUFValueType.INT16:
        return v.getInt16(o, true);
      case GGUFValueType.UINT32:
        return v.getUint32(o, true);
      case GGUFValueType.INT32:
        return v.getInt32(o, true);
      case GGUFValueType.FLOAT32:
        return v.getFloat32(o, true);
      case GGUFValueType.BOOL:
        return v.getUint8(o) !== 0;
      case GGUFValueType.UINT64:
        return v.getBigUint64(o, true);
      case GGUFValueType.INT64:
        return v.getBigInt64(o, true);
      default:
        return v.getFloat64(o, true);
    }
  }
  /** A fresh copy of the next `n` bytes (its own ArrayBuffer, so typed-array views are aligned). */
  take(n: number): Uint8Array<ArrayBuffer> {
    const o = this.pos - this.#start;
    this.pos += n;
    return this.#buf.slice(o, o + n);
  }
  text(n: number): string {
    const o = this.pos - this.#start;
    this.pos += n;
    return this.#decoder.decode(this.#buf.subarray(o, o + n));
  }
}

/** Reads a u64 count and checks that `count * minSize` bytes can still follow it. */
async function readCount(
  c: Cursor,
  field: string,
  minSize: number,
  isLength = false,
): Promise<number> {
  await c.ensure(8, field);
  const at = c.pos;
  const count = c.u64();
  const need = count * BigInt(minSize);
  if (need > BigInt(c.size - c.pos)) {
    // A string length is an exact byte count; an item count gives only a lower bound.
    const says = isLength
      ? `has length ${count}, which needs ${need} bytes`
      : `is ${count}, which needs at least ${need} bytes`;
    throw new GGUFError(
      `GGUF: truncated file: ${field} ${says} at offset ${c.pos}, file has ${c.size}`,
      field,
      at,
    );
  }
  return Number(count);
}

async function readString(c: Cursor, field: string): Promise<string> {
  const len = await readCount(c, field, 1, true);
  if (!c.has(len)) await c.fill(len, field);
  return c.text(len);
}

async function readValueType(c: Cursor, field: string): Promise<GGUFValueType> {
  await c.ensure(4, field);
  const at = c.pos;
  const t = c.u32();
  if (!isValueType(t)) throw ggufError(`unknown value type ${t}`, field, at);
  return t;
}

async function readValue(
  c: Cursor,
  type: GGUFValueType,
  field: string,
  depth: number,
): Promise<GGUFValue> {
  if (type === GGUFValueType.STRING) return await readString(c, field);
  if (type === GGUFValueType.ARRAY) return await readArray(c, field, depth);
  await c.ensure(SCALAR_SIZE[type]!, field);
  return c.scalar(type);
}

async function readArray(c: Cursor, field: string, depth: number): Promise<GGUFArray> {
  if (depth >= MAX_NESTING) {
    throw ggufError(`arrays nested deeper than ${MAX_NESTING} levels`, field, c.pos);
  }
  const itemType = await readValueType(c, `${field}.type`);
  const count = await readCount(c, `${field}.count`, minItemSize(itemType));
  switch (itemType) {
    case GGUFValueType.STRING: {
      const values: string[] = new Array(count);
      for (let i = 0; i < count; i++) {
        // Inline fast path: most vocab strings are already in the window.
        if (c.has(8)) {
          const len = c.u64();
          if (len <= BigInt(c.size - c.pos) && c.has(Number(len))) {
            values[i] = c.text(Number(len));
            continue;
          }
          c.pos -= 8;
        }
        values[i] = await readString(c, `${field}[${i}]`);
      }
      return { itemType, values };
    }
    case GGUFValueType.ARRAY: {
      c.innerArrays += count;
      if (c.innerArrays > MAX_INNER_ARRAYS) {
        throw ggufError(
          `more than ${MAX_INNER_ARRAYS} arrays inside arrays (llama.cpp reads none)`,
          `${field}.count`,
          c.pos,
        );
      }
      const values: GGUFArray[] = new Array(count);
      for (let i = 0; i < count; i++) values[i] = await readArray(c, `${field}[${i}]`, depth + 1);
      return { itemType, values };
    }
    case GGUFValueType.BOOL: {
      c.boolItems += count;
      if (c.boolItems > MAX_BOOL_ITEMS) {
        throw ggufError(
          `more than ${MAX_BOOL_ITEMS} BOOL array elements (llama.cpp's keys hold a few per layer)`,
          `${field}.count`,
          c.pos,
        );
      }
      await c.ensure(count, field);
      const bytes = c.take(count);
      // Sized up front: Array.from over the bytes grew its backing store step by step.
      const values: boolean[] = new Array(count);
      for (let i = 0; i < count; i++) values[i] = bytes[i] !== 0;
      return { itemType, values };
    }
    default: {
      const n = count * SCALAR_SIZE[itemType]!;
      await c.ensure(n, field);
      const buf = c.take(n).buffer;
      return { itemType, values: typedArray(itemType, buf) };
    }
  }
}

function typedArray(t: GGUFValueType, buf: ArrayBuffer): GGUFArray["values"] {
  // GGUF is little-endian and so is every host we run on (x86-64, arm64, wasm).
  switch (t) {
    case GGUFValueType.UINT8:
      return new Uint8Array(buf);
    case GGUFValueType.INT8:
      return new Int8Array(buf);
    case GGUFValueType.UINT16:
      return new Uint16Array(buf);
    case GGUFValueType.INT16:
      return new Int16Array(buf);
    case GGUFValueType.UINT32:
      return new Uint32Array(buf);
    case GGUFValueType.INT32:
      return new Int32Array(buf);
    case GGUFValueType.FLOAT32:
      return new Float32Array(buf);
    case GGUFValueType.UINT64:
      return new BigUint64Array(buf);
    case GGUFValueType.INT64:
      return new BigInt64Array(buf);
    default:
      return new Float64Array(buf);
  }
}

function describe(e: GGUFMetadataEntry): string {
  if (e.type === GGUFValueType.ARRAY) {
    return `ARRAY<${valueTypeName((e.value as GGUFArray).itemType)}>`;
  }
  return valueTypeName(e.type);
}

/** The metadata key/value pairs of a GGUF file, in file order, with typed getters. */
export class GGUFMetadata {
  readonly #entries: readonly GGUFMetadataEntry[];
  readonly #byKey: Map<string, GGUFMetadataEntry>;
  readonly #offsets: Map<string, number>;

  /** `offsets` (key → file offset of the entry) lets type errors point into the file. */
  constructor(entries: readonly GGUFMetadataEntry[], offsets?: Map<string, number>) {
    this.#entries = entries;
    this.#byKey = new Map(entries.map((e) => [e.key, e]));
    this.#offsets = offsets ?? new Map();
  }

  /** Number of entries. */
  get size(): number {
    return this.#entries.length;
  }
  /** The raw value, or undefined when absent. */
  get(key: string): GGUFValue | undefined {
    return this.#byKey.get(key)?.value;
  }
  /** The entry with its declared type, or undefined when absent. */
  entry(key: string): GGUFMetadataEntry | undefined {
    return this.#byKey.get(key);
  }
  /** Whether the key is present. */
  has(key: string): boolean {
    return this.#byKey.has(key);
  }
  /** All entries in file order. */
  entries(): GGUFMetadataEntry[] {
    return [...this.#entries];
  }
  /** All keys in file order. */
  keys(): string[] {
    return this.#entries.map((e) => e.key);
  }

  #fail(key: string, expected: string, e: GGUFMetadataEntry): never {
    const off = this.#offsets.get(key);
    throw new GGUFError(
      `GGUF: metadata["${key}"] should be ${expected}, but the file has ${describe(e)}` +
        (off === undefined ? "" : ` (at offset ${off})`),
      `metadata["${key}"]`,
      off,
    );
  }
  #require(key: string, expected: string): GGUFMetadataEntry {
    const e = this.#byKey.get(key);
    if (!e) {
      throw new GGUFError(
        `GGUF: missing metadata key "${key}" (expected ${expected})`,
        `metadata["${key}"]`,
      );
    }
    return e;
  }

  /** A STRING value; throws if absent or of another type. */
  string(key: string): string {
    const e = this.#require(key, "a string");
    if (e.type !== GGUFValueType.STRING) this.#fail(key, "a string", e);
    return e.value as string;
  }
  /** A STRING value, or `dflt` when absent. */
  stringOr<T = string>(key: string, dflt: T): string | T {
    return this.has(key) ? this.string(key) : dflt;
  }
  /** Any numeric value (64-bit integers only when they fit a JS number exactly). */
  number(key: string): number {
    const e = this.#require(key, "a number");
    if (typeof e.value === "number") return e.value;
    if (typeof e.value === "bigint") {
      const n = Number(e.value);
      if (Number.isSafeInteger(n)) return n;
      this.#fail(key, "a number within ±2^53", e);
    }
    this.#fail(key, "a number", e);
  }
  /** A numeric value, or `dflt` when absent. */
  numberOr<T = number>(key: string, dflt: T): number | T {
    return this.has(key) ? this.number(key) : dflt;
  }
  /** A BOOL value. */
  bool(key: string): boolean {
    const e = this.#require(key, "a bool");
    if (e.type !== GGUFValueType.BOOL) this.#fail(key, "a bool", e);
    return e.value as boolean;
  }
  /** A BOOL value, or `dflt` when absent. */
  boolOr<T = boolean>(key: string, dflt: T): boolean | T {
    return this.has(key) ? this.bool(key) : dflt;
  }
  /** An ARRAY value of any element type. */
  array(key: string): GGUFArray {
    const e = this.#require(key, "an array");
    if (e.type !== GGUFValueType.ARRAY) this.#fail(key, "an array", e);
    return e.value as GGUFArray;
  }
  /** An ARRAY value, or `dflt` when absent. */
  arrayOr<T = GGUFArray>(key: string, dflt: T): GGUFArray | T {
    return this.has(key) ? this.array(key) : dflt;
  }
  /** An ARRAY of STRING (e.g. tokenizer.ggml.tokens). */
  stringArray(key: string): string[] {
    const a = this.array(key);
    if (a.itemType !== GGUFValueType.STRING) this.#fail(key, "ARRAY<STRING>", this.entry(key)!);
    return a.values as string[];
  }
  /** An ARRAY of STRING, or `dflt` when absent. */
  stringArrayOr<T = string[]>(key: string, dflt: T): string[] | T {
    return this.has(key) ? this.stringArray(key) : dflt;
  }
  /** An ARRAY of any numeric type as plain numbers (e.g. tokenizer.ggml.scores, token_type). */
  numberArray(key: string): number[] {
    const a = this.array(key);
    const t = a.itemType;
    if (t === GGUFValueType.STRING || t === GGUFValueType.ARRAY || t === GGUFValueType.BOOL) {
      this.#fail(key, "a numeric array", this.entry(key)!);
    }
    const out: number[] = [];
    const values = a.values as ArrayLike<number | bigint>;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      const n = Number(v);
      if (typeof v === "bigint" && !Number.isSafeInteger(n)) {
        this.#fail(key, "numbers within ±2^53", this.entry(key)!);
      }
      out.push(n);
    }
    return out;
  }
  /** A numeric ARRAY as numbers, or `dflt` when absent. */
  numberArrayOr<T = number[]>(key: string, dflt: T): number[] | T {
    return this.has(key) ? this.numberArray(key) : dflt;
  }
}

/** The parsed front of a GGUF file plus lazy access to its tensor bytes. */
export class GGUFFile {
  /** Format version: 2 or 3. */
  readonly version: number;
  /** Metadata key/values. */
  readonly metadata: GGUFMetadata;
  /** Tensor index, in file order. */
  readonly tensors: readonly GGUFTensorInfo[];
  /** Alignment of the data section and of every tensor in it. */
  readonly alignment: number;
  /**
   * File offset where the data section starts (tensor offsets are relative to it): the end of
   * the index rounded up to the alignment, which may lie past the end of a file without tensors.
   */
  readonly dataOffset: number;
  /** Size of the file in bytes. */
  readonly fileSize: number;
  readonly #source: ByteSource;
  readonly #byName: Map<string, GGUFTensorInfo>;

  /** Use `openGGUF` / `parseGGUF`; this constructor trusts its arguments. */
  constructor(init: {
    source: ByteSource;
    version: number;
    metadata: GGUFMetadata;
    tensors: GGUFTensorInfo[];
    alignment: number;
    dataOffset: number;
  }) {
    this.#source = init.source;
    this.version = init.version;
    this.metadata = init.metadata;
    this.tensors = init.tensors;
    this.alignment = init.alignment;
    this.dataOffset = init.dataOffset;
    this.fileSize = init.source.size;
    this.#byName = new Map(init.tensors.map((t) => [t.name, t]));
  }

  /** `general.architecture` (e.g. "llama", "qwen2"), or undefined when absent. */
  get architecture(): string | undefined {
    return this.metadata.stringOr("general.architecture", undefined);
  }

  /** Total bytes read from the underlying source so far. */
  get bytesRead(): number {
    return this.#source.bytesRead;
  }

  /** The tensor named `name`, or undefined. */
  tensor(name: string): GGUFTensorInfo | undefined {
    return this.#byName.get(name);
  }

  /** Absolute file offset of a tensor's first byte. */
  tensorOffset(nameOrInfo: string | GGUFTensorInfo): number {
    return this.dataOffset + this.#info(nameOrInfo).offset;
  }

  /** The raw bytes of one tensor, read now from the file (exactly its byte range). */
  async readTensor(nameOrInfo: string | GGUFTensorInfo): Promise<Uint8Array> {
    const info = this.#info(nameOrInfo);
    if (info.nBytes === undefined) {
      throw new GGUFError(
        `GGUF: cannot read tensor "${info.name}": unsupported tensor type ${
          typeName(info.type)
        } has no known size`,
        `tensor "${info.name}"`,
        this.dataOffset + info.offset,
      );
    }
    const src = this.#source;
    if (src.readInto) {
      // One buffer, filled in place: a source's own read may copy (e.g. slice a whole segment).
      this.#checkRange(this.dataOffset + info.offset, info.nBytes);
      const out = new Uint8Array(info.nBytes);
      await src.readInto(this.dataOffset + info.offset, out);
      return out;
    }
    return await this.readRange(this.dataOffset + info.offset, info.nBytes);
  }

  /**
   * A tensor's bytes in order, as `{ offset, bytes }` pieces read into `scratch` (each piece is
   * valid until the next one is requested). Sources that cannot read into a caller's buffer
   * yield the whole tensor as one piece.
   */
  async *readTensorChunks(
    nameOrInfo: string | GGUFTensorInfo,
    scratch: Uint8Array,
  ): AsyncGenerator<{ offset: number; bytes: Uint8Array }> {
    const info = this.#info(nameOrInfo);
    const src = this.#source;
    if (!src.readInto || info.nBytes === undefined || scratch.length === 0) {
      yield { offset: 0, bytes: await this.readTensor(info) };
      return;
    }
    const base = this.dataOffset + info.offset;
    this.#checkRange(base, info.nBytes);
    for (let at = 0; at < info.nBytes; at += scratch.length) {
      const piece = scratch.subarray(0, Math.min(scratch.length, info.nBytes - at));
      await src.readInto(base + at, piece);
      yield { offset: at, bytes: piece };
    }
  }

  /** `length` bytes at absolute file offset `offset`. */
  async readRange(offset: number, length: number): Promise<Uint8Array> {
    this.#checkRange(offset, length);
    return await this.#source.read(offset, length);
  }

  /** Throw unless [offset, offset + length) lies inside the file. */
  #checkRange(offset: number, length: number): void {
    if (
      !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 ||
      offset + length > this.fileSize
    ) {
      throw new GGUFError(
        `GGUF: range [${offset}, ${offset}+${length}) is outside the file (${this.fileSize} bytes)`,
        "range",
        offset,
      );
    }
  }

  /** Releases the file handle. */
  close(): void {
    this.#source.close();
  }

  #info(nameOrInfo: string | GGUFTensorInfo): GGUFTensorInfo {
    if (typeof nameOrInfo !== "string") return nameOrInfo;
    const t = this.#byName.get(nameOrInfo);
    if (!t) {
      throw new GGUFError(`GGUF: no tensor named "${nameOrInfo}"`, `tensor "${nameOrInfo}"`);
    }
    return t;
  }
}

/** Parses header, metadata and tensor index from `source`; reads nothing of the tensor data. */
export async function readGGUF(source: ByteSource): Promise<GGUFFile> {
  const c = new Cursor(source);

  await c.ensure(4, "magic");
  const magic = [c.u8(), c.u8(), c.u8(), c.u8()];
  if (magic.some((b, i) => b !== MAGIC[i])) {
    const hex = magic.map((b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = magic.map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join(
      "",
    );
    throw ggufError(`not a GGUF file (magic ${hex} "${ascii}", expected "GGUF")`, "magic", 0);
  }

  await c.ensure(4, "version");
  const version = c.u32();
  if (version === 1) {
    throw ggufError(
      "GGUF version 1 is not supported (re-convert the model with a current llama.cpp)",
      "version",
      4,
    );
  }
  if (version !== 2 && version !== 3) {
    const swapped = ((version >>> 24) | ((version >>> 8) & 0xff00) | ((version & 0xff00) << 8) |
      ((version & 0xff) << 24)) >>> 0;
    if (swapped >= 1 && swapped <= 3) {
      throw ggufError(
        `big-endian GGUF files are not supported (version field reads ${swapped} byte-swapped)`,
        "version",
        4,
      );
    }
    throw ggufError(`unsupported GGUF version ${version} (supported: 2, 3)`, "version", 4);
  }

  // Smallest tensor info: empty name (8) + n_dims (4) + one dim (8) + type (4) + offset (8).
  const nTensors = await readCount(c, "tensor_count", 32);
  // Smallest metadata entry: empty key (8) + type (4) + a one-byte value.
  const nKV = await readCount(c, "metadata_kv_count", 13);

  const entries: GGUFMetadataEntry[] = [];
  const offsets = new Map<string, number>();
  for (let i = 0; i < nKV; i++) {
    const at = c.pos;
    const key = await readString(c, `metadata[${i}].key`);
    const f = `metadata[${JSON.stringify(key)}]`;
    if (offsets.has(key)) {
      throw ggufError(`duplicate metadata key (first at offset ${offsets.get(key)})`, f, at);
    }
    offsets.set(key, at);
    const type = await readValueType(c, `${f}.type`);
    const value = await readValue(c, type, `${f}.value`, 0);
    entries.push({ key, type, value });
  }
  const metadata = new GGUFMetadata(entries, offsets);

  let alignment = DEFAULT_ALIGNMENT;
  const al = metadata.entry("general.alignment");
  if (al) {
    const f = `metadata["general.alignment"].value`;
    const at = offsets.get("general.alignment")!;
    if (al.type !== GGUFValueType.UINT32) {
      throw ggufError(`general.alignment must be UINT32, not ${describe(al)}`, f, at);
    }
    const a = al.value as number;
    if (a === 0 || (a & (a - 1)) !== 0) {
      throw ggufError(`general.alignment ${a} is not a non-zero power of two`, f, at);
    }
    alignment = a;
  }

  type Raw = { name: string; dims: number[]; type: number; offset: number; at: number };
  const raws: Raw[] = [];
  const names = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const f = `tensor_infos[${i}]`;
    const at = c.pos;
    const name = await readString(c, `${f}.name`);
    if (names.has(name)) throw ggufError(`duplicate tensor name ${JSON.stringify(name)}`, f, at);
    names.add(name);
    await c.ensure(4, `${f}.n_dims`);
    const nDimsAt = c.pos;
    const nDims = c.u32();
    if (nDims < 1 || nDims > MAX_DIMS) {
      throw ggufError(`n_dims is ${nDims}, must be 1..${MAX_DIMS}`, `${f}.n_dims`, nDimsAt);
    }
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) {
      await c.ensure(8, `${f}.dims[${d}]`);
      const dAt = c.pos;
      const v = c.u64();
      if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw ggufError(`dimension ${v} is too large`, `${f}.dims[${d}]`, dAt);
      }
      dims.push(Number(v));
    }
    await c.ensure(4, `${f}.type`);
    const type = c.u32();
    await c.ensure(8, `${f}.offset`);
    const offAt = c.pos;
    const off = c.u64();
    if (off > BigInt(c.size)) {
      throw ggufError(
        `tensor ${
          JSON.stringify(name)
        } offset ${off} is past the end of the file (${c.size} bytes)`,
        `${f}.offset`,
        offAt,
      );
    }
    raws.push({ name, dims, type, offset: Number(off), at });
  }

  const headerEnd = c.pos;
  const dataOffset = Math.ceil(headerEnd / alignment) * alignment;

  const tensors: GGUFTensorInfo[] = raws.map((r, i) => {
    const f = `tensor_infos[${i}]`;
    const q = JSON.stringify(r.name);
    let nElements = 1;
    for (const d of r.dims) nElements *= d;
    if (nElements > Number.MAX_SAFE_INTEGER) {
      throw ggufError(
        `tensor ${q} has ${r.dims.join("×")} elements, more than 2^53`,
        `${f}.dims`,
        r.at,
      );
    }
    const info = typeInfo(r.type);
    let nBytes: number | undefined;
    if (info) {
      if (r.dims[0] % info.blockSize !== 0) {
        throw ggufError(
          `tensor ${q} of type ${info.name} has row length ${
            r.dims[0]
          }, not a multiple of the block size ${info.blockSize}`,
          `${f}.dims[0]`,
          r.at,
        );
      }
      nBytes = (nElements / info.blockSize) * info.typeSize;
    }
    if (r.offset % alignment !== 0) {
      throw ggufError(
        `tensor ${q} offset ${r.offset} is not a multiple of the alignment ${alignment}`,
        `${f}.offset`,
        r.at,
      );
    }
    const end = dataOffset + r.offset + (nBytes ?? 0);
    if (end > c.size) {
      throw ggufError(
        `tensor data past end of file: tensor ${q} spans bytes ${
          dataOffset + r.offset
        }..${end}, file has ${c.size}`,
        `${f}.offset`,
        r.at,
      );
    }
    return { name: r.name, dims: r.dims, type: r.type, offset: r.offset, nElements, nBytes };
  });
  // Each tensor's bytes are its own (llama.cpp even requires them back to back): aliased ranges
  // would be loaded and uploaded once per name.
  const byOffset = tensors.map((t, i) => ({ t, i })).sort((a, b) => a.t.offset - b.t.offset);
  for (let k = 1; k < byOffset.length; k++) {
    const prev = byOffset[k - 1].t;
    const cur = byOffset[k];
    if (prev.nBytes !== undefined && prev.nBytes > 0 && prev.offset + prev.nBytes > cur.t.offset) {
      throw ggufError(
        `tensors ${JSON.stringify(prev.name)} and ${JSON.stringify(cur.t.name)} overlap (bytes ` +
          `${prev.offset}..${prev.offset + prev.nBytes} and ${cur.t.offset}..)`,
        `tensor_infos[${cur.i}].offset`,
        raws[cur.i].at,
      );
    }
  }

  return new GGUFFile({ source, version, metadata, tensors, alignment, dataOffset });
}

/** Opens a GGUF file (path, URL, ByteSource or bytes) and parses its header and tensor index. */
export async function openGGUF(
  pathOrSource: string | URL | ByteSource | Uint8Array,
): Promise<GGUFFile> {
  let source: ByteSource;
  if (pathOrSource instanceof Uint8Array) source = new MemorySource(pathOrSource);
  else if (typeof pathOrSource === "string" || pathOrSource instanceof URL) {
    source = await FileSource.open(pathOrSource);
  } else source = pathOrSource;
  try {
    return await readGGUF(source);
  } catch (e) {
    // Only close what we opened; a caller's source stays the caller's.
    if (source !== pathOrSource) source.close();
    throw e;
  }
}

/** Parses a whole GGUF file held in memory. */
export function parseGGUF(bytes: Uint8Array): Promise<GGUFFile> {
  return readGGUF(new MemorySource(bytes));
}
