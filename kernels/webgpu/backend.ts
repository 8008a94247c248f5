/**
 * The WebGPU backend: every op of {@link Backend} as a WGSL compute shader.
 *
 * - Weights are uploaded once as their raw GGUF block bytes (padded to 4 bytes) and decoded in
 *   the shaders; a tensor larger than the storage-binding limit is split by rows into several
 *   buffers, one dispatch each.
 * - Matmuls first convert the activations to the weight type's vec_dot type in a small shader
 *   pass (quantize.wgsl), then take integer-exact block dot products with ggml's float scaling
 *   (matmul.wgsl + the type's section of quant.wgsl). The converted activations are cached per
 *   (buffer, version), so q/k/v or gate/up projections of one input convert it once.
 * - Ops are recorded into one pending command encoder; uniforms and small host data (token ids,
 *   RoPE cos/sin tables, `write` payloads) go to a per-submission arena written just before the
 *   submit. `read` is the only submission point and the only readback.
 * - Pipelines and bind groups are created once and cached; activation buffers are pooled.
 * - Device loss, out-of-memory and validation failures surface as typed errors (errors.ts) from
 *   the next call, never as a crash.
 *
 * @module
 */
import type {
  AttentionParams,
  Backend,
  Buf,
  KVCache,
  KVType,
  RopeParams,
  TopCandidates,
  Weight,
  WeightShape,
  WeightSpec,
  WeightWriter,
} from "../backend.ts";
import { checkChunk, checkCopyRows, checkRowRange, uploadWhole } from "../checks.ts";
import { geluTable } from "../gelu.ts";
import { GGMLType, typeInfo, typeName, weightLayout } from "../quant/types.ts";
import { describeAdapter, requestAdapter, requestDevice } from "./device.ts";
import {
  WebGPUDeviceLostError,
  WebGPUError,
  WebGPUOutOfMemoryError,
  WebGPUUnavailableError,
} from "./errors.ts";
import { compose } from "./shaders.ts";

/** Options of {@link createWebGPUBackend}. */
export interface WebGPUBackendOptions {
  /** Use this adapter instead of requesting one. */
  readonly adapter?: GPUAdapter;
  /**
   * Run on this device of `adapter` instead of requesting one (the backend owns it from now on:
   * `dispose` destroys it). Lets a caller watch `device.lost` itself.
   */
  readonly device?: GPUDevice;
  /** Passed to `requestAdapter` (default "high-performance"). */
  readonly powerPreference?: GPUPowerPreference;
  /**
   * Largest weight binding in bytes (default and maximum: the device's
   * `maxStorageBufferBindingSize`); bigger tensors are split by rows into several buffers.
   * Tests set a tiny value to exercise the splitting.
   */
  readonly maxBindingBytes?: number;
  /** Use WGSL's `dot4I8Packed` when the adapter offers it (default true). */
  readonly packedDot?: boolean;
  /**
   * How matmul shares a weight row among invocations. "shared": up to 64 lanes per row, summed
   * through workgroup memory (what GPUs want); "single": one invocation per row, no barriers
   * (much faster on software adapters, where every barrier is a coroutine switch). Default
   * "auto": "single" on a fallback adapter, "shared" otherwise (one lane for very short rows).
   */
  readonly matmulLanes?: "auto" | "single" | "shared";
  /**
   * Cap on the attention-score scratch buffer in bytes (default 64 MiB, at most the binding
   * limit); longer prefills are processed in row chunks. Tests set it small.
   */
  readonly attentionScratchBytes?: number;
  /**
   * Multiply prompts (rows > 1) with the tiled kernel, activations staged in workgroup memory
   * (matmul_tiled.wgsl; F32/F16/BF16 and the Q4/Q5/Q8 formats). Default: on hardware adapters;
   * off on a software fallback, where its barriers made 110M Q8_0 prefill 2.5× slower on
   * llvmpipe (20 → 8 tok/s).
   */
  readonly tiledPrefill?: boolean;
}

/** Host round trips since creation (`backend.stats`): what a step costs besides the math. */
export interface WebGPUStats {
  /** Command buffers submitted. */
  submissions: number;
  /** Readbacks (buffer maps) awaited. */
  reads: number;
  /** Bytes copied back to the host. */
  bytesRead: number;
}

/** What the backend found and uses; `backend.info` after creation. */
export interface WebGPUInfo {
  readonly description: string;
  readonly isFallback: boolean;
  /** Optional capabilities in use, e.g. "packed_4x8_integer_dot_product". */
  readonly using: readonly string[];
  /** Matmul lane policy in effect ("single" or "shared", see the option). */
  readonly matmulLanes: "auto" | "single" | "shared";
  /** Adapter features (for logs). */
  readonly features: readonly string[];
  /** Largest weight part in bytes. */
  readonly maxBindingBytes: number;
  /** Cap on the attention-score scratch buffer in bytes. */
  readonly attentionScratchBytes: number;
  /** Prompts use the tiled matmul (see the option). */
  readonly tiledPrefill: boolean;
}

type VecDot = "f32" | "f16" | "bf16" | "q8_0" | "q8_1" | "q8_k";

const VEC_DOT: Partial<Record<GGMLType, VecDot>> = {
  [GGMLType.F32]: "f32",
  [GGMLType.F16]: "f16",
  [GGMLType.BF16]: "bf16",
  [GGMLType.Q4_0]: "q8_0",
  [GGMLType.Q5_0]: "q8_0",
  [GGMLType.Q8_0]: "q8_0",
  [GGMLType.Q4_1]: "q8_1",
  [GGMLType.Q5_1]: "q8_1",
  [GGMLType.Q2_K]: "q8_k",
  [GGMLType.Q3_K]: "q8_k",
  [GGMLType.Q4_K]: "q8_k",
  [GGMLType.Q5_K]: "q8_k",
  [GGMLType.Q6_K]: "q8_k",
};

/** Elements per quantization block of each activation kind. */
const VD_BLOCK: Record<Exclude<VecDot, "f32">, number> = {
  f16: 1,
  bf16: 1,
  q8_0: 32,
  q8_1: 32,
  q8_k: 256,
};

const WG = 64;
const PARAM_BYTES = 256;
const ARENA_CHUNK = 1 << 20;
const MAX_BIND_GROUPS = 4096;
/** Largest k of topCandidates (the shader's per-lane list) and longest exclude list. */
const MAX_CANDIDATES = 64;
/** Elements of each activation row per tile of matmul_tiled.wgsl: float kinds, int8 kinds. */
const TILE_FLOATS = 256;
const TILE_QUANTS = 1024;
const MAX_EXCLUDE = 256;

let nextId = 1;

/** A GPU buffer with an id for cache keys. */
interface Res {
  readonly buffer: GPUBuffer;
  readonly id: number;
  readonly bytes: number;
}

class GBuf implements Buf {
  readonly id = nextId++;
  version = 0;
  constructor(readonly length: number, readonly res: Res) {}
}

interface Part {
  readonly res: Res;
  readonly row0: number;
  readonly rows: number;
  /** Rows of `res` before this part's first row (a row view starts inside a buffer). */
  readonly skip?: number;
}

class GWeight implements Weight {
  constructor(
    readonly name: string,
    readonly type: GGMLType,
    readonly shape: readonly number[],
    readonly cols: number,
    readonly rows: number,
    readonly rowBytes: number,
    readonly parts: Part[],
    /** A row view of another weight: it owns none of its buffers. */
    readonly view = false,
  ) {}
}

class GKV implements KVCache {
  constructor(
    readonly nLayers: number,
    readonly nCtx: number,
    readonly kvDim: number,
    readonly type: KVType,
    /** u32 words per cached row. */
    readonly strideWords: number,
    readonly k: Res[],
    readonly v: Res[],
  ) {}
}

interface Chunk {
  readonly res: Res;
  readonly mirror: ArrayBuffer;
  used: number;
}

type BindKind = "uniform" | "read" | "storage";

interface Pipe {
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
  readonly key: string;
  readonly bindings: readonly (readonly [number, BindKind])[];
}

interface Slot {
  readonly chunk: Chunk;
  readonly offset: number;
}

interface QuantCache {
  key: string;
  res: Res;
  dOff: number;
  sOff: number;
}

function align(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

function pow2floor(n: number): number {
  return 2 ** Math.floor(Math.log2(Math.max(1, n)));
}

/** Split a 1-D workgroup count over x and y (each ≤ 65535). */
function grid(n: number): [number, number] {
  if (n <= 65535) return [Math.max(1, n), 1];
  return [65535, Math.ceil(n / 65535)];
}

/**
 * The WebGPU implementation of {@link Backend}. Create it with {@link createWebGPUBackend}.
 */
export class WebGPUBackend implements Backend {
  readonly name = "webgpu";
  readonly device: string;
  readonly info: WebGPUInfo;
  /** Submissions, reads and bytes read back so far (bench gpu divides them by tokens). */
  readonly stats: WebGPUStats = { submissions: 0, reads: 0, bytesRead: 0 };

  readonly #dev: GPUDevice;
  readonly #packed: boolean;
  readonly #lanes: "auto" | "single" | "shared";
  readonly #maxBind: number;
  readonly #maxWeightBind: number;
  readonly #scratchCap: number;
  readonly #uniformAlign: number;
  readonly #pipes = new Map<string, Pipe>();
  readonly #groups = new Map<string, GPUBindGroup>();
  readonly #groupsByRes = new Map<number, Set<string>>();
  readonly #pool = new Map<number, Res[]>();
  readonly #staging = new Map<number, Res[]>();
  readonly #chunks: Chunk[] = [];
  readonly #scratch = new Map<string, Res>();
  readonly #qcache = new Map<VecDot, QuantCache>();
  readonly #pendingErrors: Promise<WebGPUError | null>[] = [];
  #deferredDestroy: GPUBuffer[] = [];
  #geluTable: Res | undefined;
  #enc: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #chunkIdx = 0;
  #error: WebGPUError | null = null;
  #disposed = false;
  readonly #live = new Set<GPUBuffer>();

  /**
   * Destroy the GPU device now, as a driver reset or a removed GPU would: every later op fails
   * with WebGPUDeviceLostError. For failure drills and the agent's CPU-fallback test.
   */
  loseDevice(): void {
    this.#dev.destroy();
  }

  constructor(dev: GPUDevice, info: WebGPUInfo, packed: boolean) {
    this.#dev = dev;
    this.info = info;
    this.device = info.description + (info.isFallback ? " (software fallback adapter)" : "");
    this.#packed = packed;
    this.#lanes = info.matmulLanes;
    this.#maxBind = dev.limits.maxStorageBufferBindingSize;
    this.#maxWeightBind = info.maxBindingBytes;
    this.#scratchCap = Math.min(info.attentionScratchBytes, this.#maxBind);
    this.#uniformAlign = Math.max(PARAM_BYTES, dev.limits.minUniformBufferOffsetAlignment);
    dev.lost.then((lost) => {
      if (this.#disposed) return;
      this.#error ??= new WebGPUDeviceLostError(
        `WebGPU device "${info.description}" was lost (${lost.reason}): ${lost.message}. ` +
          "Fall back to the CPU backend or re-create the WebGPU backend.",
        lost.reason,
      );
    });
    dev.addEventListener("uncapturederror", (ev) => {
      const err = (ev as GPUUncapturedErrorEvent).error;
      if (this.#error) return;
      this.#error = err instanceof GPUOutOfMemoryError
        ? new WebGPUOutOfMemoryError(
          `WebGPU out of memory on "${info.description}": ${err.message}`,
        )
        : new WebGPUError(`WebGPU error on "${info.description}": ${err.message}`);
    });
  }

  // ---------------------------------------------------------------- resources

  #check(): void {
    if (this.#disposed) throw new WebGPUError("the WebGPU backend was disposed");
    if (this.#error instanceof WebGPUDeviceLostError) throw this.#error;
  }

  #createBuffer(bytes: number, usage: number, what: string, mapped = false): Res {
    if (bytes > this.#dev.limits.maxBufferSize) {
      throw new WebGPUOutOfMemoryError(
        `${what} needs a ${bytes}-byte buffer; this device allows at most ` +
          `${this.#dev.limits.maxBufferSize} bytes per buffer`,
      );
    }
    this.#dev.pushErrorScope("out-of-memory");
    let buffer: GPUBuffer;
    try {
      buffer = this.#dev.createBuffer({ size: bytes, usage, mappedAtCreation: mapped });
    } catch (e) {
      this.#dev.popErrorScope();
      throw new WebGPUOutOfMemoryError(`allocating ${bytes} bytes for ${what} failed`, {
        cause: e,
      });
    }
    this.#pendingErrors.push(
      this.#dev.popErrorScope().then((err) =>
        err
          ? new WebGPUOutOfMemoryError(
            `out of GPU memory allocating ${bytes} bytes for ${what} on "${this.info.description}"`,
          )
          : null
      ),
    );
    this.#live.add(buffer);
    return { buffer, id: nextId++, bytes };
  }

  #destroy(res: Res): void {
    const keys = this.#groupsByRes.get(res.id);
    if (keys) {
      for (const k of keys) this.#groups.delete(k);
      this.#groupsByRes.delete(res.id);
    }
    this.#live.delete(res.buffer);
    if (this.#enc) this.#deferredDestroy.push(res.buffer);
    else res.buffer.destroy();
  }

  #storageLimit(bytes: number, what: string): void {
    if (bytes > this.#maxBind) {
      throw new WebGPUOutOfMemoryError(
        `${what} needs a ${bytes}-byte storage binding; this device binds at most ` +
          `${this.#maxBind} bytes (maxStorageBufferBindingSize)`,
      );
    }
  }

  /** A scratch buffer of at least `bytes`, kept per purpose and grown on demand. */
  #scratchBuf(purpose: string, bytes: number): Res {
    const cur = this.#scratch.get(purpose);
    if (cur && cur.bytes >= bytes) return cur;
    if (cur) this.#destroy(cur);
    const size = align(Math.max(bytes, 256), 256);
    this.#storageLimit(size, `scratch buffer (${purpose})`);
    const res = this.#createBuffer(
      size,
      GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
      `scratch buffer (${purpose})`,
    );
    this.#scratch.set(purpose, res);
    for (const [k, q] of this.#qcache) if (q.res === cur) this.#qcache.delete(k);
    return res;
  }

  // ---------------------------------------------------------------- recording

  #computePass(): GPUComputePassEncoder {
    this.#enc ??= this.#dev.createCommandEncoder();
    this.#pass ??= this.#enc.beginComputePass();
    return this.#pass;
  }

  #copyEncoder(): GPUCommandEncoder {
    if (this.#pass) {
      this.#pass.end();
      this.#pass = null;
    }
    this.#enc ??= this.#dev.createCommandEncoder();
    return this.#enc;
  }

  /** Reserve `bytes` in the upload arena (written to the GPU just before the next submit). */
  #arena(bytes: number, alignTo = this.#uniformAlign): Slot {
    while (this.#chunkIdx < this.#chunks.length) {
      const c = this.#chunks[this.#chunkIdx];
      const off = align(c.used, alignTo);
      if (off + bytes <= c.mirror.byteLength) {
        c.used = off + bytes;
        return { chunk: c, offset: off };
      }
      this.#chunkIdx++;
    }
    const size = align(Math.max(ARENA_CHUNK, bytes + PARAM_BYTES), 256);
    this.#storageLimit(size, "an upload of host data");
    const res = this.#createBuffer(
      size,
      GPUBufferUsage.UNIFORM | GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST |
        GPUBufferUsage.COPY_SRC,
      "the upload arena",
    );
    const chunk: Chunk = { res, mirror: new ArrayBuffer(size), used: bytes };
    this.#chunks.push(chunk);
    this.#chunkIdx = this.#chunks.length - 1;
    return { chunk, offset: 0 };
  }

  /** A params block: write u32s / f32s through the returned views. */
  #params(): { slot: Slot; u: Uint32Array; f: Float32Array } {
    const slot = this.#arena(PARAM_BYTES);
    return {
      slot,
      u: new Uint32Array(slot.chunk.mirror, slot.offset, PARAM_BYTES / 4),
      f: new Float32Array(slot.chunk.mirror, slot.offset, PARAM_BYTES / 4),
    };
  }

  #pipe(
    key: string,
    code: () => string,
    bindings: readonly (readonly [number, BindKind])[],
    entryPoint = "main",
  ): Pipe {
    let p = this.#pipes.get(key);
    if (p) return p;
    const layout = this.#dev.createBindGroupLayout({
      label: key,
      entries: bindings.map(([binding, kind]) => ({
        binding,
        visibility: GPUShaderStage.COMPUTE,
        buffer: kind === "uniform"
          ? { type: "uniform", hasDynamicOffset: true, minBindingSize: 0 }
          : { type: kind === "read" ? "read-only-storage" : "storage" },
      })),
    });
    const module = this.#dev.createShaderModule({ label: key, code: code() });
    const pipeline = this.#dev.createComputePipeline({
      label: key,
      layout: this.#dev.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint },
    });
    p = { pipeline, layout, key, bindings };
    this.#pipes.set(key, p);
    return p;
  }

  /** Record one dispatch; `res` lists the non-uniform bindings in the pipe's order. */
  #dispatch(p: Pipe, params: Slot, res: readonly Res[], x: number, y = 1, z = 1): void {
    const all = [params.chunk.res, ...res];
    const key = p.key + "|" + all.map((r) => r.id).join(",");
    let group = this.#groups.get(key);
    if (!group) {
      if (this.#groups.size >= MAX_BIND_GROUPS) {
        this.#groups.clear();
        this.#groupsByRes.clear();
      }
      group = this.#dev.createBindGroup({
        layout: p.layout,
        entries: p.bindings.map(([binding, kind], i) => ({
          binding,
          resource: kind === "uniform"
            ? { buffer: all[i].buffer, offset: 0, size: PARAM_BYTES }
            : { buffer: all[i].buffer },
        })),
      });
      this.#groups.set(key, group);
      for (const r of all) {
        let s = this.#groupsByRes.get(r.id);
        if (!s) this.#groupsByRes.set(r.id, s = new Set());
        s.add(key);
      }
    }
    const pass = this.#computePass();
    pass.setPipeline(p.pipeline);
    pass.setBindGroup(0, group, [params.offset]);
    pass.dispatchWorkgroups(x, y, z);
  }

  /** Submit everything recorded so far (plus the arena uploads). */
  #submit(): void {
    const enc = this.#copyEncoder();
    for (const c of this.#chunks) {
      if (c.used > 0) this.#dev.queue.writeBuffer(c.res.buffer, 0, c.mirror, 0, align(c.used, 4));
      c.used = 0;
    }
    this.#chunkIdx = 0;
    this.#dev.queue.submit([enc.finish()]);
    this.stats.submissions++;
    this.#enc = null;
    for (const b of this.#deferredDestroy) b.destroy();
    this.#deferredDestroy = [];
  }

  async #throwPending(): Promise<void> {
    if (this.#pendingErrors.length) {
      const errs = await Promise.all(this.#pendingErrors.splice(0));
      const e = errs.find((x) => x);
      if (e) this.#error ??= e;
    }
    if (this.#error) {
      const e = this.#error;
      // Validation errors belong to one call; loss and OOM stay.
      if (!(e instanceof WebGPUDeviceLostError)) this.#error = null;
      throw e;
    }
  }

  // ---------------------------------------------------------------- Backend: memory

  upload(spec: WeightSpec): Weight {
    const w = this.beginUpload(spec);
    if (spec.data.byteLength !== w.bytes) {
      w.abort();
      throw new WebGPUError(
        `${spec.name}: ${spec.data.byteLength} bytes of data, but shape [${spec.shape}] of ` +
          `${typeName(spec.type)} needs ${w.bytes}`,
      );
    }
    return uploadWhole(w, spec);
  }

  beginUpload(spec: WeightShape): WeightWriter {
    this.#check();
    const info = typeInfo(spec.type);
    if (!info || !info.weight || VEC_DOT[spec.type] === undefined) {
      throw new WebGPUError(
        `${spec.name}: tensor type ${typeName(spec.type)} is not supported by the WebGPU backend`,
      );
    }
    const { rowLen: cols, nRows: rows, stride: rb, bytes } = weightLayout(spec.type, spec.shape);
    const rowsPerPart = Math.floor((this.#maxWeightBind - 4) / rb);
    if (rowsPerPart < 1) {
      throw new WebGPUOutOfMemoryError(
        `${spec.name}: one row is ${rb} bytes, more than the ${this.#maxWeightBind}-byte ` +
          "binding limit",
      );
    }
    // Every part is created mapped; chunks are copied straight into the mappings and the parts
    // are unmapped (handed to the GPU) when the last byte is in.
    const parts: Part[] = [];
    const views: Uint8Array[] = [];
    const destroyAll = () => {
      views.length = 0;
      for (const p of parts) this.#destroy(p.res);
      parts.length = 0;
    };
    try {
      for (let row0 = 0; row0 < rows; row0 += rowsPerPart) {
        const n = Math.min(rowsPerPart, rows - row0);
        const res = this.#createBuffer(
          align(Math.max(n * rb, 4), 4),
          GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
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

  buffer(length: number): Buf {
    this.#check();
    const bytes = Math.max(256, 2 ** Math.ceil(Math.log2(Math.max(1, length * 4))));
    this.#storageLimit(length * 4, `an activation buffer of ${length} floats`);
    const size = Math.min(bytes, align(this.#maxBind, 4));
    const free = this.#pool.get(size);
    const reused = free?.pop();
    if (reused) {
      this.#copyEncoder().clearBuffer(reused.buffer);
      return new GBuf(length, reused);
    }
    return new GBuf(
      length,
      this.#createBuffer(
        Math.max(size, length * 4),
        GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
        `an activation buffer of ${length} floats`,
      ),
    );
  }

  write(dst: Buf, src: Float32Array, offset = 0): void {
    this.#check();
    const d = this.#buf(dst);
    if (offset < 0 || offset + src.length > d.length) {
      throw new RangeError(
        `write of ${src.length} floats at ${offset} overflows a ${d.length}-float buffer`,
      );
    }
    if (src.length === 0) return;
    const slot = this.#arena(src.length * 4, 256);
    new Float32Array(slot.chunk.mirror, slot.offset, src.length).set(src);
    this.#copyEncoder().copyBufferToBuffer(
      slot.chunk.res.buffer,
      slot.offset,
      d.res.buffer,
      offset * 4,
      src.length * 4,
    );
    d.version++;
  }

  async read(src: Buf, offset = 0, length?: number): Promise<Float32Array> {
    this.#check();
    const s = this.#buf(src);
    const n = length ?? s.length - offset;
    if (offset < 0 || n < 0 || offset + n > s.length) {
      throw new RangeError(`read of ${n} floats at ${offset} overflows a ${s.length}-float buffer`);
    }
    return new Float32Array(await this.#readRes(s.res, offset * 4, n * 4));
  }

  /** Submit what is recorded, then copy `bytes` of `res` from byte `offset` to the host. */
  async #readRes(res: Res, offset: number, bytes: number): Promise<ArrayBuffer> {
    const mapBytes = Math.max(4, bytes);
    const size = Math.max(256, 2 ** Math.ceil(Math.log2(mapBytes)));
    const staging = this.#staging.get(size)?.pop() ??
      this.#createBuffer(
        size,
        GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
        "a readback buffer",
      );
    if (bytes > 0) {
      this.#copyEncoder().copyBufferToBuffer(res.buffer, offset, staging.buffer, 0, bytes);
    }
    this.#submit();
    try {
      await staging.buffer.mapAsync(GPUMapMode.READ, 0, mapBytes);
    } catch (e) {
      await this.#throwPending();
      throw this.#error ?? new WebGPUDeviceLostError(
        `reading back from "${this.info.description}" failed: ${(e as Error).message}`,
        "unknown",
        { cause: e },
      );
    }
    const out = staging.buffer.getMappedRange(0, mapBytes).slice(0, bytes);
    staging.buffer.unmap();
    this.stats.reads++;
    this.stats.bytesRead += bytes;
    let list = this.#staging.get(size);
    if (!list) this.#staging.set(size, list = []);
    list.push(staging);
    await this.#throwPending();
    return out;
  }

  async topCandidates(
    src: Buf,
    rows: number,
    n: number,
    k: number,
    exclude: readonly Int32Array[],
  ): Promise<TopCandidates[]> {
    this.#check();
    const s = this.#buf(src);
    this.#need(s, rows * n, "topCandidates");
    if (!Number.isInteger(k) || k < 1 || k > MAX_CANDIDATES) {
      throw new RangeError(`topCandidates: k ${k} is outside [1, ${MAX_CANDIDATES}]`);
    }
    if (exclude.length !== rows) {
      throw new RangeError(`topCandidates: ${exclude.length} exclude lists for ${rows} rows`);
    }
    if (rows === 0) return [];
    // Each row's exclude list goes up sorted (the shader binary-searches it); the answer keeps
    // the caller's order.
    const sorted = exclude.map((ids) => {
      if (ids.length > MAX_EXCLUDE) {
        throw new RangeError(`topCandidates: ${ids.length} excluded ids (at most ${MAX_EXCLUDE})`);
      }
      const u = Uint32Array.from(ids).sort();
      for (let i = 0; i < u.length; i++) {
        if (u[i] >= n || (i > 0 && u[i] === u[i - 1])) {
          throw new RangeError(`topCandidates: excluded ids must be distinct and below ${n}`);
        }
      }
      return u;
    });
    const exWords = sorted.reduce((a, u) => a + u.length, 0);
    const data = this.#arena((2 * rows + exWords) * 4, 256);
    const d = new Uint32Array(data.chunk.mirror, data.offset, 2 * rows + exWords);
    let at = data.offset / 4 + 2 * rows;
    sorted.forEach((u, r) => {
      d[2 * r] = at;
      d[2 * r + 1] = u.length;
      d.set(u, at - data.offset / 4);
      at += u.length;
    });
    const maxEx = Math.max(...sorted.map((u) => u.length));
    const outWords = 2 * k + maxEx + 2;
    const out = this.#scratchBuf("sampling candidates", rows * outWords * 4);
    const kmax = 2 ** Math.ceil(Math.log2(k));
    const p = this.#pipe(
      `topk:${kmax}`,
      () => compose("topk", { subst: { KMAX: kmax } }),
      [[0, "uniform"], [1, "read"], [2, "read"], [3, "storage"]],
    );
    const prm = this.#params();
    prm.u.set([n, k, n, data.offset / 4, outWords, rows]);
    const [gx, gy] = grid(rows);
    this.#dispatch(p, prm.slot, [data.chunk.res, s.res, out], gx, gy);
    const bytes = await this.#readRes(out, 0, rows * outWords * 4);
    const u = new Uint32Array(bytes);
    const f = new Float32Array(bytes);
    return exclude.map((ids, r) => {
      const o = r * outWords;
      const sortedIds = sorted[r];
      const nEx = sortedIds.length;
      let have = 0;
      while (have < k && u[o + have] !== 0xffffffff) have++;
      // Back to the caller's order of excluded ids.
      const excluded = Float32Array.from(ids, (id) => {
        let lo = 0, hi = nEx;
        while (lo < hi) {
          const mid = (lo + hi) >> 1;
          if (sortedIds[mid] < id) lo = mid + 1;
          else hi = mid;
        }
        return f[o + 2 * k + lo];
      });
      return {
        ids: Int32Array.from(u.subarray(o, o + have)),
        values: f.slice(o + k, o + k + have),
        excluded,
        max: f[o + 2 * k + nEx],
        sumExp: f[o + 2 * k + nEx + 1],
      };
    });
  }

  kvCache(nLayers: number, nCtx: number, kvDim: number, type: KVType): KVCache {
    this.#check();
    const strideWords = type === "f16" ? Math.ceil(kvDim / 2) : kvDim;
    const bytes = Math.max(16, nCtx * strideWords * 4);
    this.#storageLimit(bytes, `a KV cache layer of ${nCtx} × ${kvDim} ${type}`);
    const k: Res[] = [];
    const v: Res[] = [];
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    for (let l = 0; l < nLayers; l++) {
      k.push(this.#createBuffer(bytes, usage, `KV cache layer ${l} (keys)`));
      v.push(this.#createBuffer(bytes, usage, `KV cache layer ${l} (values)`));
    }
    return new GKV(nLayers, nCtx, kvDim, type, strideWords, k, v);
  }

  free(handle: Buf | KVCache | Weight): void {
    if (this.#disposed) return;
    if (handle instanceof GBuf) {
      const r = handle.res;
      let list = this.#pool.get(r.bytes);
      if (!list) this.#pool.set(r.bytes, list = []);
      if (!list.includes(r)) list.push(r);
    } else if (handle instanceof GKV) {
      for (const r of [...handle.k, ...handle.v]) this.#destroy(r);
    } else if (handle instanceof GWeight) {
      if (!handle.view) { for (const p of handle.parts) this.#destroy(p.res); }
    } else {
      throw new TypeError("free: not a handle of this WebGPU backend");
    }
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#pass?.end();
    this.#pass = null;
    this.#enc = null;
    for (const b of this.#live) b.destroy();
    this.#live.clear();
    this.#dev.destroy();
  }

  // ---------------------------------------------------------------- Backend: ops

  #buf(b: Buf): GBuf {
    if (!(b instanceof GBuf)) throw new TypeError("not a buffer of this WebGPU backend");
    return b;
  }

  #weight(w: Weight): GWeight {
    if (!(w instanceof GWeight)) {
      throw new TypeError(`${w.name}: not a weight of this WebGPU backend`);
    }
    return w;
  }

  #kv(c: KVCache): GKV {
    if (!(c instanceof GKV)) throw new TypeError("not a KV cache of this WebGPU backend");
    return c;
  }

  #need(b: GBuf, n: number, what: string): void {
    if (n > b.length) {
      throw new RangeError(`${what}: needs ${n} floats, the buffer has ${b.length}`);
    }
  }

  #defines(): string[] {
    return this.#packed ? ["PACKED_DOT"] : [];
  }

  embed(table: Weight, ids: Int32Array, out: Buf): void {
    this.#check();
    const w = this.#weight(table);
    const o = this.#buf(out);
    const n = ids.length;
    this.#need(o, n * w.cols, `embed ${w.name}`);
    if (n === 0) return;
    for (const id of ids) {
      if (id < 0 || id >= w.rows) {
        throw new RangeError(`embed ${w.name}: token id ${id} is outside [0, ${w.rows})`);
      }
    }
    if (w.view) throw new WebGPUError(`embed: ${w.name} is a row view`);
    const data = this.#arena(n * 4, 256);
    new Int32Array(data.chunk.mirror, data.offset, n).set(ids);
    const p = this.#pipe(
      `embed:${typeName(w.type)}`,
      () => compose("embed", { decode: typeName(w.type), defines: this.#defines() }),
      [[0, "uniform"], [1, "read"], [2, "read"], [3, "storage"]],
    );
    const [x, y] = grid(Math.ceil((n * w.cols) / WG));
    for (const part of w.parts) {
      const prm = this.#params();
      prm.u.set([n, w.cols, w.rowBytes, part.row0, part.rows, data.offset / 4]);
      this.#dispatch(p, prm.slot, [part.res, data.chunk.res, o.res], x, y);
    }
    o.version++;
  }

  rmsNorm(x: Buf, weight: Weight, out: Buf, rows: number, eps: number): void {
    this.#check();
    const w = this.#weight(weight);
    const xb = this.#buf(x);
    const o = this.#buf(out);
    const n = w.shape[0];
    this.#need(xb, rows * n, "rmsNorm input");
    this.#need(o, rows * n, "rmsNorm output");
    if (w.parts.length !== 1) throw new WebGPUError(`rmsNorm: ${w.name} is too large`);
    if (rows === 0) return;
    const p = this.#pipe(
      `norm:${typeName(w.type)}`,
      () => compose("norm", { decode: typeName(w.type), defines: this.#defines() }),
      [[0, "uniform"], [1, "read"], [2, "storage"], [3, "storage"]],
    );
    const prm = this.#params();
    prm.u.set([n, rows]);
    prm.f[2] = eps;
    const [gx, gy] = grid(rows);
    this.#dispatch(p, prm.slot, [w.parts[0].res, xb.res, o.res], gx, gy);
    o.version++;
  }

  /** Convert `rows × k` activations to `kind`, reusing the last conversion of the same data. */
  #quantize(x: GBuf, rows: number, k: number, kind: Exclude<VecDot, "f32">): QuantCache {
    const key = `${x.id}:${x.version}:${rows}:${k}`;
    const hit = this.#qcache.get(kind);
    if (hit && hit.key === key) return hit;
    const bs = VD_BLOCK[kind];
    const nb = k / bs;
    let words: number, dOff = 0, sOff = 0;
    if (bs === 1) {
      words = rows * k;
    } else {
      dOff = (rows * k) / 4;
      sOff = dOff + rows * nb;
      words = sOff + (kind === "q8_1" ? rows * nb : kind === "q8_k" ? (rows * k) / 16 : 0);
    }
    const res = this.#scratchBuf(`activations as ${kind}`, words * 4);
    const p = this.#pipe(
      `quantize:${kind}`,
      () =>
        compose("quantize", {
          defines: [`KIND_${kind.toUpperCase()}`, ...this.#defines()],
          subst: { BS: bs },
        }),
      [[0, "uniform"], [1, "storage"], [2, "storage"]],
    );
    const prm = this.#params();
    prm.u.set([k, rows, dOff, sOff]);
    const [gx, gy] = grid(Math.ceil((rows * nb) / WG));
    this.#dispatch(p, prm.slot, [x.res, res], gx, gy);
    const q: QuantCache = { key, res, dOff, sOff };
    this.#qcache.set(kind, q);
    return q;
  }

  matmul(w: Weight, x: Buf, out: Buf, rows: number): void {
    this.#check();
    const W = this.#weight(w);
    const xb = this.#buf(x);
    const o = this.#buf(out);
    const k = W.cols;
    this.#need(xb, rows * k, `matmul ${W.name} input`);
    this.#need(o, rows * W.rows, `matmul ${W.name} output`);
    if (rows === 0) return;
    const kind = VEC_DOT[W.type]!;
    let a: Res = xb.res;
    let dOff = 0, sOff = 0;
    if (kind !== "f32") {
      ({ res: a, dOff, sOff } = this.#quantize(xb, rows, k, kind));
    } else if (xb === o) {
      // In place (out aliases x): read a copy, as ggml reads its converted activations.
      a = this.#scratchBuf("matmul input copy", rows * k * 4);
      this.#copyEncoder().copyBufferToBuffer(xb.res.buffer, 0, a.buffer, 0, rows * k * 4);
    }
    const tname = typeName(W.type);
    const bs = typeInfo(W.type)!.blockSize;
    const nb = k / bs;
    const perLane = bs === 1 ? 16 : bs === 32 ? 2 : 1;
    const auto = Math.min(64, pow2floor(nb / perLane));
    const tpr = this.#lanes === "single" ? 1 : this.#lanes === "shared" ? Math.max(2, auto) : auto;
    const tt = rows === 1 ? 1 : 8;
    // Prompts stage their activation rows in workgroup memory tile by tile (matmul_tiled.wgsl);
    // a lane must stay within one tile's blocks for the per-lane order to be matmul.wgsl's.
    // K-quants keep matmul.wgsl: llvmpipe took 33-104 s to compile their tiled shader.
    const tiled = rows > 1 && this.info.tiledPrefill && kind !== "q8_k";
    const kt = kind === "f32" || VD_BLOCK[kind] === 1 ? TILE_FLOATS : TILE_QUANTS;
    const lanes = tiled ? Math.min(tpr, kt / bs) : tpr;
    const single = lanes === 1 ? ["SINGLE_LANE"] : [];
    const file = tiled ? "matmul_tiled" : "matmul";
    const kindDef = kind === "f32" || VD_BLOCK[kind] === 1
      ? "KIND_F"
      : `KIND_${kind.toUpperCase()}`;
    const p = this.#pipe(
      `${file}:${tname}:${tt}:${lanes === 1 ? "single" : "shared"}`,
      () =>
        compose(file, {
          decode: tname,
          defines: [...this.#defines(), ...single, kindDef],
          subst: { TT: tt, KT: kt },
        }),
      [[0, "uniform"], [1, "read"], [2, "storage"], [3, "storage"]],
    );
    const rowsPerWg = WG / lanes;
    for (const part of W.parts) {
      const prm = this.#params();
      prm.u.set([
        part.rows,
        k,
        rows,
        W.rowBytes,
        W.rows,
        part.row0,
        dOff,
        sOff,
        lanes,
        part.skip ?? 0,
      ]);
      const [gx, gy] = grid(Math.ceil(part.rows / rowsPerWg));
      this.#dispatch(p, prm.slot, [part.res, a, o.res], gx, gy, Math.ceil(rows / tt));
    }
    o.version++;
  }

  addBias(x: Buf, bias: Weight, rows: number): void {
    this.#check();
    const b = this.#weight(bias);
    const xb = this.#buf(x);
    const n = rows * b.shape[0];
    this.#need(xb, n, `addBias ${b.name}`);
    if (n === 0) return;
    const p = this.#pipe(
      `add_bias:${typeName(b.type)}`,
      () => compose("elementwise", { decode: typeName(b.type), defines: this.#defines() }),
      [[0, "uniform"], [1, "read"], [2, "storage"]],
      "add_bias",
    );
    const prm = this.#params();
    prm.u.set([n, b.shape[0]]);
    const [gx, gy] = grid(Math.ceil(n / WG));
    this.#dispatch(p, prm.slot, [b.parts[0].res, xb.res], gx, gy);
    xb.version++;
  }

  rope(x: Buf, positions: Int32Array, params: RopeParams): void {
    this.#check();
    const xb = this.#buf(x);
    const { nHeads, headDim, ropeDim } = params;
    const n = positions.length;
    this.#need(xb, n * nHeads * headDim, "rope");
    if (ropeDim > headDim || ropeDim % 2 !== 0) {
      throw new RangeError(`rope: ropeDim ${ropeDim} must be even and ≤ headDim ${headDim}`);
    }
    const half = ropeDim / 2;
    if (n === 0 || half === 0) return;
    // ggml_rope_cache_init: θ starts at the position and is multiplied by theta_scale in f32.
    const fr = Math.fround;
    const thetaScale = fr(Math.pow(fr(params.freqBase), fr(-2 / ropeDim)));
    const freqScale = fr(params.freqScale);
    const data = this.#arena(n * half * 8, 256);
    const cs = new Float32Array(data.chunk.mirror, data.offset, n * half * 2);
    for (let t = 0; t < n; t++) {
      let theta = fr(positions[t]);
      for (let i = 0; i < half; i++) {
        const th = fr(freqScale * theta);
        cs[(t * half + i) * 2] = Math.cos(th);
        cs[(t * half + i) * 2 + 1] = Math.sin(th);
        theta = fr(theta * thetaScale);
      }
    }
    const p = this.#pipe(
      "rope",
      () => compose("rope"),
      [[0, "uniform"], [1, "read"], [2, "storage"]],
    );
    const prm = this.#params();
    prm.u.set([n, nHeads, headDim, ropeDim, params.neox ? 1 : 0, data.offset / 4]);
    const [gx, gy] = grid(Math.ceil((n * nHeads * half) / WG));
    this.#dispatch(p, prm.slot, [data.chunk.res, xb.res], gx, gy);
    xb.version++;
  }

  storeKV(
    cache: KVCache,
    layer: number,
    k: Buf,
    v: Buf,
    pos0: number,
    rows: number,
    rowOffset = 0,
  ): void {
    this.#check();
    const c = this.#kv(cache);
    const kb = this.#buf(k);
    const vb = this.#buf(v);
    if (layer < 0 || layer >= c.nLayers) throw new RangeError(`storeKV: no layer ${layer}`);
    if (pos0 < 0 || pos0 + rows > c.nCtx) {
      throw new RangeError(
        `storeKV: positions ${pos0}..${pos0 + rows - 1} exceed the context of ${c.nCtx}`,
      );
    }
    this.#need(kb, (rowOffset + rows) * c.kvDim, "storeKV keys");
    this.#need(vb, (rowOffset + rows) * c.kvDim, "storeKV values");
    if (rows === 0) return;
    const p = this.#pipe(
      `kv:${c.type}`,
      () => compose("kv", { defines: c.type === "f16" ? ["KV_F16"] : [] }),
      [[0, "uniform"], [1, "storage"], [2, "storage"], [3, "storage"], [4, "storage"]],
    );
    const prm = this.#params();
    prm.u.set([rows, c.kvDim, c.strideWords, pos0, rowOffset]);
    const [gx, gy] = grid(Math.ceil((rows * c.strideWords) / WG));
    this.#dispatch(p, prm.slot, [kb.res, vb.res, c.k[layer], c.v[layer]], gx, gy);
  }

  attention(
    q: Buf,
    cache: KVCache,
    layer: number,
    out: Buf,
    pos0: number,
    rows: number,
    params: AttentionParams,
    rowOffset = 0,
  ): void {
    this.#check();
    const c = this.#kv(cache);
    const qb = this.#buf(q);
    const o = this.#buf(out);
    const { nHeads, nKVHeads, headDim } = params;
    if (nHeads % nKVHeads !== 0 || nKVHeads * headDim !== c.kvDim) {
      throw new RangeError(
        `attention: ${nHeads} heads / ${nKVHeads} KV heads × ${headDim} do not fit a cache of ` +
          `kvDim ${c.kvDim}`,
      );
    }
    if (pos0 + rows > c.nCtx) throw new RangeError(`attention: positions exceed ${c.nCtx}`);
    const qDim = nHeads * headDim;
    this.#need(qb, (rowOffset + rows) * qDim, "attention q");
    this.#need(o, (rowOffset + rows) * qDim, "attention out");
    if (rows === 0) return;
    const defines = c.type === "f16" ? ["KV_F16"] : [];
    const bindings = [[0, "uniform"], [1, "storage"], [2, "storage"], [3, "storage"]] as const;
    const scores = this.#pipe(
      `attn_scores:${c.type}`,
      () => compose("attention", { defines }),
      bindings,
      "scores",
    );
    const pv = this.#pipe(
      `attn_pv:${c.type}`,
      () => compose("attention", { defines }),
      bindings,
      "pv",
    );
    const softmax = this.#pipe(
      "softmax",
      () => compose("softmax"),
      [[0, "uniform"], [1, "storage"]],
    );
    // Scores of a chunk of query rows live in one scratch buffer [rows × heads × (pos0 + rows)];
    // long prefills run in as many row chunks as it takes to keep that under the cap.
    const rowBytes = nHeads * (pos0 + rows) * 4;
    const chunk = Math.max(1, Math.min(rows, Math.floor(this.#scratchCap / rowBytes)));
    for (let r0 = 0; r0 < rows; r0 += chunk) {
      const n = Math.min(chunk, rows - r0);
      const p0 = pos0 + r0;
      const nMax = p0 + n;
      const s = this.#scratchBuf("attention scores", n * nHeads * nMax * 4);
      const prm = this.#params();
      prm.u.set([n, nHeads, nKVHeads, headDim, p0, rowOffset + r0, c.strideWords, nMax]);
      prm.f[8] = params.scale;
      prm.u[9] = params.window ?? 0;
      this.#dispatch(scores, prm.slot, [qb.res, c.k[layer], s], Math.ceil(nMax / WG), nHeads, n);
      const sm = this.#params();
      sm.u.set([n * nHeads, nHeads, nMax, p0, params.window ?? 0]);
      const [gx, gy] = grid(n * nHeads);
      this.#dispatch(softmax, sm.slot, [s], gx, gy);
      this.#dispatch(pv, prm.slot, [o.res, c.v[layer], s], Math.ceil(headDim / WG), nHeads, n);
    }
    o.version++;
  }

  swiglu(gate: Buf, up: Buf, out: Buf, n: number): void {
    this.#check();
    const g = this.#buf(gate), u = this.#buf(up), o = this.#buf(out);
    this.#need(g, n, "swiglu gate");
    this.#need(u, n, "swiglu up");
    this.#need(o, n, "swiglu out");
    if (n === 0) return;
    const p = this.#pipe(
      "swiglu",
      () => compose("elementwise", { decode: "F32" }),
      [[0, "uniform"], [2, "storage"], [3, "storage"], [4, "storage"]],
      "swiglu",
    );
    const prm = this.#params();
    prm.u.set([n, 0]);
    const [gx, gy] = grid(Math.ceil(n / WG));
    this.#dispatch(p, prm.slot, [g.res, u.res, o.res], gx, gy);
    o.version++;
  }

  add(a: Buf, b: Buf, n: number): void {
    this.#check();
    const ab = this.#buf(a), bb = this.#buf(b);
    this.#need(ab, n, "add a");
    this.#need(bb, n, "add b");
    if (n === 0) return;
    const p = this.#pipe(
      "add",
      () => compose("elementwise", { decode: "F32" }),
      [[0, "uniform"], [2, "storage"], [3, "storage"]],
      "add",
    );
    const prm = this.#params();
    prm.u.set([n, 0]);
    const [gx, gy] = grid(Math.ceil(n / WG));
    this.#dispatch(p, prm.slot, [ab.res, bb.res], gx, gy);
    ab.version++;
  }

  weightRows(w: Weight, first: number, count: number): Weight {
    this.#check();
    const W = this.#weight(w);
    checkRowRange(W.name, W.rows, first, count);
    const parts: Part[] = [];
    for (const p of W.parts) {
      const lo = Math.max(first, p.row0);
      const hi = Math.min(first + count, p.row0 + p.rows);
      if (lo >= hi) continue;
      parts.push({
        res: p.res,
        row0: lo - first,
        rows: hi - lo,
        skip: lo - p.row0 + (p.skip ?? 0),
      });
    }
    const name = `${W.name}[${first}:${first + count}]`;
    return new GWeight(name, W.type, [W.cols, count], W.cols, count, W.rowBytes, parts, true);
  }

  scale(x: Buf, s: number, n: number): void {
    this.#check();
    const xb = this.#buf(x);
    this.#need(xb, n, "scale");
    if (n === 0) return;
    const p = this.#pipe(
      "scale",
      () => compose("elementwise", { decode: "F32" }),
      [[0, "uniform"], [2, "storage"]],
      "scale",
    );
    const prm = this.#params();
    prm.u.set([n, 0]);
    prm.f[2] = s;
    const [gx, gy] = grid(Math.ceil(n / WG));
    this.#dispatch(p, prm.slot, [xb.res], gx, gy);
    xb.version++;
  }

  geglu(gate: Buf, up: Buf, out: Buf, n: number): void {
    this.#check();
    const g = this.#buf(gate), u = this.#buf(up), o = this.#buf(out);
    this.#need(g, n, "geglu gate");
    this.#need(u, n, "geglu up");
    this.#need(o, n, "geglu out");
    if (n === 0) return;
    if (!this.#geluTable) {
      // ggml's f16 GELU table, the same one every backend reads (kernels/gelu.ts).
      const t = geluTable();
      this.#geluTable = this.#createBuffer(
        t.byteLength,
        GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
        "the GELU table",
      );
      this.#dev.queue.writeBuffer(this.#geluTable.buffer, 0, t);
    }
    const p = this.#pipe(
      "geglu",
      () => compose("elementwise", { decode: "F32" }),
      [[0, "uniform"], [1, "read"], [2, "storage"], [3, "storage"], [4, "storage"]],
      "geglu",
    );
    const prm = this.#params();
    prm.u.set([n, 0]);
    const [gx, gy] = grid(Math.ceil(n / WG));
    this.#dispatch(p, prm.slot, [this.#geluTable, g.res, u.res, o.res], gx, gy);
    o.version++;
  }

  copyRows(
    src: Buf,
    srcRows: Int32Array,
    dst: Buf,
    dstRows: Int32Array,
    cols: number,
    scales?: Float32Array,
  ): void {
    this.#check();
    const sb = this.#buf(src), db = this.#buf(dst);
    checkCopyRows(sb, srcRows, db, dstRows, cols, scales);
    if (sb === db) throw new WebGPUError("copyRows: source and destination are one buffer");
    const n = srcRows.length;
    if (n === 0) return;
    const data = this.#arena(n * (scales ? 12 : 8), 256);
    const idx = new Int32Array(data.chunk.mirror, data.offset, 2 * n);
    idx.set(srcRows);
    idx.set(dstRows, n);
    if (scales) new Float32Array(data.chunk.mirror, data.offset + 8 * n, n).set(scales);
    const p = this.#pipe(
      "rows_copy",
      () => compose("rows"),
      [[0, "uniform"], [1, "read"], [2, "storage"], [3, "storage"]],
      "copy",
    );
    const prm = this.#params();
    prm.u.set([n, cols, data.offset / 4, scales ? 1 : 0, 0]);
    const [gx, gy] = grid(Math.ceil((n * cols) / WG));
    this.#dispatch(p, prm.slot, [data.chunk.res, sb.res, db.res], gx, gy);
    db.version++;
  }

  sumRowGroups(src: Buf, dst: Buf, groups: number, k: number, cols: number): void {
    this.#check();
    const sb = this.#buf(src), db = this.#buf(dst);
    this.#need(sb, groups * k * cols, "sumRowGroups src");
    this.#need(db, groups * cols, "sumRowGroups dst");
    if (sb === db) throw new WebGPUError("sumRowGroups: source and destination are one buffer");
    if (groups * cols === 0) return;
    const p = this.#pipe(
      "rows_sum_groups",
      () => compose("rows"),
      [[0, "uniform"], [2, "storage"], [3, "storage"]],
      "sum_groups",
    );
    const prm = this.#params();
    prm.u.set([groups, cols, 0, 0, k]);
    const [gx, gy] = grid(Math.ceil((groups * cols) / WG));
    this.#dispatch(p, prm.slot, [sb.res, db.res], gx, gy);
    db.version++;
  }
}

/**
 * Create the WebGPU backend on the best adapter (or `opts.adapter`).
 *
 * Works on software adapters too (tests run on llvmpipe); `kernels/select.ts` decides whether
 * that is a good idea, from {@link probeAdapter}.
 *
 * @example
 * ```ts ignore
 * const gpu = await createWebGPUBackend();
 * console.log(gpu.device); // "NVIDIA GeForce RTX 4090" or "llvmpipe (…) (software fallback adapter)"
 * ```
 * @throws {WebGPUUnavailableError} when there is no adapter or no device.
 */
export async function createWebGPUBackend(opts: WebGPUBackendOptions = {}): Promise<WebGPUBackend> {
  let adapter = opts.adapter ?? null;
  if (!adapter) {
    const r = await requestAdapter(opts.powerPreference);
    if (!r.adapter) throw new WebGPUUnavailableError(`no WebGPU adapter: ${r.reason}`);
    adapter = r.adapter;
  }
  const probe = describeAdapter(adapter);
  if (opts.device && !opts.adapter) {
    throw new TypeError("createWebGPUBackend: pass the adapter of the device as well");
  }
  const dev = opts.device ?? await requestDevice(adapter);
  const packed = (opts.packedDot ?? true) &&
    probe.wgslFeatures.includes("packed_4x8_integer_dot_product");
  const devMax = dev.limits.maxStorageBufferBindingSize;
  const maxBindingBytes = Math.floor(Math.min(opts.maxBindingBytes ?? devMax, devMax) / 4) * 4;
  return new WebGPUBackend(
    dev,
    {
      description: probe.description,
      isFallback: probe.isFallback,
      using: packed ? ["packed_4x8_integer_dot_product"] : [],
      matmulLanes: opts.matmulLanes === undefined || opts.matmulLanes === "auto"
        ? (probe.isFallback ? "single" : "auto")
        : opts.matmulLanes,
      features: probe.features,
      maxBindingBytes,
      attentionScratchBytes: opts.attentionScratchBytes ?? 64 << 20,
      tiledPrefill: opts.tiledPrefill ?? !probe.isFallback,
    },
    packed,
  );
}
