/**
 * Weight upload: raw GGUF block bytes copied straight into buffers created mapped, split by rows
 * into parts no larger than a binding; the parts are handed to the GPU when the last byte is in.
 *
 * @module
 */
import type { Weight, WeightShape, WeightWriter } from "../backend.ts";
import { checkChunk } from "../checks.ts";
import { typeInfo, typeName, weightLayout } from "../quant/types.ts";
import { WebGPUError, WebGPUOutOfMemoryError } from "./errors.ts";
import { GWeight, type Part } from "./handles.ts";
import { VEC_DOT } from "./ops/quantize.ts";
import { align, type GpuResources } from "./resources.ts";

/** A writer for `spec`'s bytes, in parts of at most `maxWeightBind` bytes each. */
export function beginWeightUpload(
  gpu: GpuResources,
  spec: WeightShape,
  maxWeightBind: number,
): WeightWriter {
  const info = typeInfo(spec.type);
  if (!info || !info.weight || VEC_DOT[spec.type] === undefined) {
    throw new WebGPUError(
      `${spec.name}: tensor type ${typeName(spec.type)} is not supported by the WebGPU backend`,
    );
  }
  const { rowLen: cols, nRows: rows, stride: rb, bytes } = weightLayout(spec.type, spec.shape);
  const rowsPerPart = Math.floor((maxWeightBind - 4) / rb);
  if (rowsPerPart < 1) {
    throw new WebGPUOutOfMemoryError(
      `${spec.name}: one row is ${rb} bytes, more than the ${maxWeightBind}-byte ` +
        "binding limit",
    );
  }
  // Every part is created mapped; chunks are copied straight into the mappings and the parts
  // are unmapped (handed to the GPU) when the last byte is in.
  const parts: Part[] = [];
  const views: Uint8Array[] = [];
  const destroyAll = () => {
    views.length = 0;
    for (const p of parts) gpu.destroy(p.res);
    parts.length = 0;
  };
  try {
    for (let row0 = 0; row0 < rows; row0 += rowsPerPart) {
      const n = Math.min(rowsPerPart, rows - row0);
      const res = gpu.createBuffer(
        align(Math.max(n * rb, 4), 4),
        GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
        `weight ${spec.name}`,
        true,
      );
      parts.push({ res, row0, rows: n });
      views.push(new Uint8Array(res.buffer.getMappedRange()));
    }
  } catch (e) {
    destroyAll();
    throw e instanceof WebGPUError
      ? e
      : new WebGPUOutOfMemoryError(`uploading weight ${spec.name} failed`, { cause: e });
  }
  const partBytes = rowsPerPart * rb;
  let state: "open" | "done" | "aborted" = "open";
  const open = () => {
    if (state !== "open") throw new WebGPUError(`${spec.name}: upload already ${state}`);
  };
  return {
    bytes,
    write: (chunk: Uint8Array, offset: number): void => {
      open();
      checkChunk(spec.name, bytes, offset, chunk.length);
      let done = 0;
      while (done < chunk.length) {
        const at = offset + done;
        const p = Math.floor(at / partBytes);
        const inPart = at - p * partBytes;
        const n = Math.min(chunk.length - done, views[p].length - inPart, partBytes - inPart);
        views[p].set(chunk.subarray(done, done + n), inPart);
        done += n;
      }
    },
    finish: (): Weight => {
      open();
      state = "done";
      // No JS view of a mapping may outlive unmap (the range's memory goes back to the driver).
      views.length = 0;
      for (const p of parts) p.res.buffer.unmap();
      return new GWeight(spec.name, spec.type, [...spec.shape], cols, rows, rb, [...parts]);
    },
    abort: (): void => {
      if (state !== "open") return;
      state = "aborted";
      destroyAll();
    },
  };
}
