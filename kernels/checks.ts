/**
 * Argument checks every backend makes before touching memory, written once so the backends
 * reject bad calls with the same words (a wrong buffer size is a bug in the caller, not a
 * silent out-of-bounds read).
 */
import type { Weight, WeightSpec, WeightWriter } from "./backend.ts";
import { typeName } from "./quant/types.ts";

/** Throw unless `length` bytes at `offset` lie inside a weight of `bytes` (a loader bug otherwise). */
export function checkChunk(name: string, bytes: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset + length > bytes) {
    throw new Error(
      `weight ${name}: a write of ${length} bytes at ${offset} overruns its ${bytes} bytes`,
    );
  }
}

/**
 * Upload a whole tensor through a backend's {@link WeightWriter}: what `upload` is for backends
 * that have no cheaper path. Throws (and frees the allocation) when the size is wrong.
 */
export function uploadWhole(writer: WeightWriter, spec: WeightSpec): Weight {
  if (spec.data.length !== writer.bytes) {
    writer.abort();
    throw new Error(
      `weight ${spec.name}: ${typeName(spec.type)} [${
        spec.shape.join(", ")
      }] needs ${writer.bytes} ` +
        `bytes, got ${spec.data.length}`,
    );
  }
  try {
    writer.write(spec.data, 0);
    return writer.finish();
  } catch (e) {
    writer.abort();
    throw e;
  }
}

/**
 * Throw (an `Err`) unless elements [start, end) of a buffer of `length` elements exist for
 * `what`: whole numbers, from 0 up. The WASM backend's buffers share one linear memory, so a
 * negative or fractional range there reads or writes its neighbours instead of failing.
 */
export function needElements(
  length: number,
  end: number,
  what: string,
  start = 0,
  Err: new (message: string) => Error = Error,
): void {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
    throw new Err(`${what}: elements [${start}, ${end}) are not a range of a buffer`);
  }
  if (end > length) throw new Err(`${what}: needs ${end} elements, buffer has ${length}`);
}

/** Throw unless every count of `op` is a whole number, at least 0 (rows, groups, columns…). */
export function checkCounts(op: string, counts: Record<string, number>): void {
  for (const [name, n] of Object.entries(counts)) {
    if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${op}: ${name} is ${n}`);
  }
}

/**
 * Throw unless a storeKV of `rows` rows, from row `rowOffset` of k and v (buffers of `kLength` and
 * `vLength` elements), fits `cache`'s `layer` at positions [pos0, pos0 + rows): the checks every
 * backend makes, in the same words (`Err` for the buffers: the WebGPU backend's RangeError).
 */
export function checkStoreKV(
  cache: { nLayers: number; nCtx: number; kvDim: number },
  layer: number,
  pos0: number,
  rows: number,
  rowOffset: number,
  kLength: number,
  vLength: number,
  Err: new (message: string) => Error = Error,
): void {
  checkKVRange("storeKV", cache, layer, pos0, rows);
  const d = cache.kvDim;
  needElements(kLength, (rowOffset + rows) * d, "storeKV k", rowOffset * d, Err);
  needElements(vLength, (rowOffset + rows) * d, "storeKV v", rowOffset * d, Err);
}

/** Throw unless `layer` and positions [pos0, pos0 + rows) fit a KV cache (for `op`). */
export function checkKVRange(
  op: "storeKV" | "attention",
  cache: { nLayers: number; nCtx: number },
  layer: number,
  pos0: number,
  rows: number,
): void {
  checkCounts(op, { layer, pos0, rows });
  if (layer >= cache.nLayers) throw new Error(`${op}: no layer ${layer}`);
  if (pos0 + rows > cache.nCtx) {
    throw new Error(`${op}: positions ${pos0}..${pos0 + rows - 1} exceed nCtx ${cache.nCtx}`);
  }
}

/** Throw unless the attention geometry fits the cache (GQA: heads a multiple of KV heads). */
export function checkHeads(
  p: { nHeads: number; nKVHeads: number; headDim: number },
  cache: { kvDim: number },
): void {
  if (p.nHeads % p.nKVHeads !== 0) {
    throw new Error(`attention: nHeads ${p.nHeads} not a multiple of nKVHeads ${p.nKVHeads}`);
  }
  if (p.nKVHeads * p.headDim !== cache.kvDim) {
    throw new Error(`attention: ${p.nKVHeads}×${p.headDim} ≠ cache kvDim ${cache.kvDim}`);
  }
}

/** Throw unless rows [first, first + count) lie inside a weight of `nRows` rows (a view). */
export function checkRowRange(name: string, nRows: number, first: number, count: number): void {
  if (!Number.isInteger(first) || !Number.isInteger(count) || first < 0 || count <= 0) {
    throw new Error(`weight ${name}: rows [${first}, ${first + count}) is not a row range`);
  }
  if (first + count > nRows) {
    throw new Error(`weight ${name}: rows [${first}, ${first + count}) exceed its ${nRows} rows`);
  }
}

/** Throw unless every row index of a row copy lies inside a buffer of `rows` rows. */
export function checkRows(what: string, idx: Int32Array, rows: number): void {
  for (const r of idx) {
    if (!Number.isInteger(r) || r < 0 || r >= rows) {
      throw new Error(`${what}: row ${r} is outside the buffer's ${rows} rows`);
    }
  }
}

/** The shared checks of copyRows: equal index counts, rows inside both buffers, a scale per row. */
export function checkCopyRows(
  src: { length: number },
  srcRows: Int32Array,
  dst: { length: number },
  dstRows: Int32Array,
  cols: number,
  scales?: Float32Array,
): void {
  if (!Number.isInteger(cols) || cols <= 0) throw new Error(`copyRows: ${cols} columns`);
  if (srcRows.length !== dstRows.length || (scales && scales.length !== srcRows.length)) {
    throw new Error(
      `copyRows: ${srcRows.length} source rows, ${dstRows.length} destination rows` +
        (scales ? `, ${scales.length} scales` : ""),
    );
  }
  checkRows("copyRows source", srcRows, Math.floor(src.length / cols));
  checkRows("copyRows destination", dstRows, Math.floor(dst.length / cols));
}
