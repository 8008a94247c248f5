/**
 * The WebGPU backend: every op of {@link Backend} as a WGSL compute shader.
 *
 * Laid out as ggml's WebGPU backend is:
 * - `resources.ts`: the device and its buffers (creation with out-of-memory checks, pools of
 *   activation and readback buffers, scratch buffers) and the error state;
 * - `encoder.ts`: one pending command encoder, the per-submission upload arena, cached
 *   pipelines and bind groups, submission and readback;
 * - `ops/`: one file per WGSL op file, each a small function that checks its operands and
 *   records its dispatches; `upload.ts` writes weights into mapped buffers.
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
  Backend,
  Buf,
  KVCache,
  KVType,
  TopCandidates,
  Weight,
  WeightShape,
  WeightSpec,
  WeightWriter,
} from "../backend.ts";
import { checkRowRange, uploadWhole } from "../checks.ts";
import { typeName } from "../quant/types.ts";
import { describeAdapter, requestAdapter, requestDevice } from "./device.ts";
import { Encoder } from "./encoder.ts";
import {
  describeFeatures,
  FALLBACK_PATHS,
  featureMode,
  OPTIONAL_FEATURES,
  type ShaderPaths,
} from "./features.ts";
import { WebGPUError, WebGPUUnavailableError } from "./errors.ts";
import { asBuf, asWeight, GBuf, GKV, GWeight, type Part, type Res } from "./handles.ts";
import { encodeAttention } from "./ops/attention.ts";
import type { OpContext } from "./ops/context.ts";
import {
  encodeAdd,
  encodeAddBias,
  encodeGeglu,
  encodeScale,
  encodeSwiglu,
} from "./ops/elementwise.ts";
import { encodeEmbed, encodeEmbedAt } from "./ops/embed.ts";
import { encodeStoreKV } from "./ops/kv.ts";
import { encodeMatmul } from "./ops/matmul.ts";
import { encodeRmsNorm } from "./ops/norm.ts";
import { ConvertedActivations } from "./ops/converted.ts";
import { encodeRope } from "./ops/rope.ts";
import { encodeCopyRows, encodeSumRowGroups } from "./ops/rows.ts";
import { encodeTopCandidatesInto, readTopCandidates, type TopCandidatesArgs } from "./ops/topk.ts";
import { align, GpuResources } from "./resources.ts";
import { checkCpuKernels, chooseShaderPaths } from "./selfcheck.ts";
import type { WebGPUBackendOptions, WebGPUInfo, WebGPUStats } from "./types.ts";
import { beginWeightUpload } from "./upload.ts";

export type { WebGPUBackendOptions, WebGPUInfo, WebGPUStats } from "./types.ts";

let setPaths: (be: WebGPUBackend, paths: ShaderPaths, info?: WebGPUInfo) => void;

/**
 * Switch `be`'s ops to `paths` (features.ts) without a self-check: for the self-check itself and
 * for tests that force a path. Not part of mod.ts.
 */
export function useShaderPaths(be: WebGPUBackend, paths: ShaderPaths): void {
  setPaths(be, paths);
}

/**
 * The WebGPU implementation of {@link Backend}. Create it with {@link createWebGPUBackend}.
 */
export class WebGPUBackend implements Backend {
  readonly name = "webgpu";
  /** The adapter, "(software fallback adapter)" on one, and the optional shader paths' state. */
  get device(): string {
    const i = this.#info;
    const f = i.shaderFeatures.granted.length ? `; ${describeFeatures(i.shaderFeatures)}` : "";
    return i.description + (i.isFallback ? " (software fallback adapter)" : "") + f;
  }
  /** What the backend found and uses. */
  get info(): WebGPUInfo {
    return this.#info;
  }
  #info: WebGPUInfo;
  /** Submissions, reads and bytes read back so far (bench gpu divides them by tokens). */
  readonly stats: WebGPUStats = { submissions: 0, reads: 0, bytesRead: 0 };

  readonly #gpu: GpuResources;
  readonly #enc: Encoder;
  readonly #ctx: OpContext;

  /**
   * Destroy the GPU device now, as a driver reset or a removed GPU would: every later op fails
   * with WebGPUDeviceLostError. For failure drills and the agent's CPU-fallback test.
   */
  loseDevice(): void {
    this.#gpu.dev.destroy();
  }

  static {
    // The module's own door to the op context (createWebGPUBackend, the self-check and tests).
    setPaths = (be, paths, info) => {
      be.#ctx.paths = paths;
      if (info) be.#info = be.#ctx.info = info;
    };
  }

  constructor(dev: GPUDevice, info: WebGPUInfo, packed: boolean) {
    this.#info = info;
    this.#gpu = new GpuResources(dev, info.description);
    this.#enc = new Encoder(this.#gpu, this.stats);
    this.#ctx = {
      gpu: this.#gpu,
      enc: this.#enc,
      info,
      defines: packed ? ["PACKED_DOT"] : [],
      converted: new ConvertedActivations(this.#gpu),
      paths: FALLBACK_PATHS,
    };
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
    this.#gpu.check();
    return beginWeightUpload(this.#gpu, spec, this.info.maxBindingBytes);
  }

  buffer(length: number): Buf {
    this.#gpu.check();
    const bytes = Math.max(256, 2 ** Math.ceil(Math.log2(Math.max(1, length * 4))));
    this.#gpu.storageLimit(length * 4, `an activation buffer of ${length} floats`);
    const size = Math.min(bytes, align(this.#gpu.maxBind, 4));
    const reused = this.#gpu.pooled(size);
    if (reused) {
      this.#enc.copyEncoder().clearBuffer(reused.buffer);
      return new GBuf(length, reused);
    }
    return new GBuf(
      length,
      this.#gpu.createBuffer(
        Math.max(size, length * 4),
        GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
        `an activation buffer of ${length} floats`,
      ),
    );
  }

  write(dst: Buf, src: Float32Array, offset = 0): void {
    this.#gpu.check();
    const d = asBuf(dst);
    if (offset < 0 || offset + src.length > d.length) {
      throw new RangeError(
        `write of ${src.length} floats at ${offset} overflows a ${d.length}-float buffer`,
      );
    }
    if (src.length === 0) return;
    const slot = this.#enc.arena(src.length * 4, 256);
    new Float32Array(slot.chunk.mirror, slot.offset, src.length).set(src);
    this.#enc.copyEncoder().copyBufferToBuffer(
      slot.chunk.res.buffer,
      slot.offset,
      d.res.buffer,
      offset * 4,
      src.length * 4,
    );
    d.version++;
  }

  async read(src: Buf, offset = 0, length?: number): Promise<Float32Array> {
    this.#gpu.check();
    const s = asBuf(src);
    const n = length ?? s.length - offset;
    if (offset < 0 || n < 0 || offset + n > s.length) {
      throw new RangeError(`read of ${n} floats at ${offset} overflows a ${s.length}-float buffer`);
    }
    return new Float32Array(await this.#enc.readBack(s.res, offset * 4, n * 4));
  }

  topCandidates(...args: TopCandidatesArgs): Promise<TopCandidates[]> {
    this.#gpu.check();
    return readTopCandidates(this.#ctx, ...args);
  }

  flush(): void {
    this.#gpu.check();
    this.#enc.flush();
  }

  topCandidatesInto(...args: Parameters<NonNullable<Backend["topCandidatesInto"]>>): void {
    this.#gpu.check();
    encodeTopCandidatesInto(this.#ctx, ...args);
  }

  kvCache(nLayers: number, nCtx: number, kvDim: number, type: KVType): KVCache {
    this.#gpu.check();
    const strideWords = type === "f16" ? Math.ceil(kvDim / 2) : kvDim;
    const bytes = Math.max(16, nCtx * strideWords * 4);
    this.#gpu.storageLimit(bytes, `a KV cache layer of ${nCtx} × ${kvDim} ${type}`);
    const k: Res[] = [];
    const v: Res[] = [];
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    for (let l = 0; l < nLayers; l++) {
      k.push(this.#gpu.createBuffer(bytes, usage, `KV cache layer ${l} (keys)`));
      v.push(this.#gpu.createBuffer(bytes, usage, `KV cache layer ${l} (values)`));
    }
    return new GKV(nLayers, nCtx, kvDim, type, strideWords, k, v);
  }

  free(handle: Buf | KVCache | Weight): void {
    if (this.#gpu.disposed) return;
    // Each handle is freed once: a second free would pool (or destroy) what another owns now.
    if (handle instanceof GBuf) {
      if (handle.freed) return;
      handle.freed = true;
      this.#gpu.pool(handle.res);
    } else if (handle instanceof GKV) {
      if (handle.freed) return;
      handle.freed = true;
      for (const r of [...handle.k, ...handle.v]) this.#gpu.destroy(r);
    } else if (handle instanceof GWeight) {
      if (handle.freed) return;
      handle.freed = true;
      if (!handle.view) { for (const p of handle.parts) this.#gpu.destroy(p.res); }
    } else {
      throw new TypeError("free: not a handle of this WebGPU backend");
    }
  }

  dispose(): void {
    if (this.#gpu.disposed) return;
    this.#enc.abandon();
    this.#gpu.dispose();
  }

  weightRows(w: Weight, first: number, count: number): Weight {
    this.#gpu.check();
    const W = asWeight(w);
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
    return new GWeight(name, W.type, [W.cols, count], W.cols, count, W.rowBytes, parts, true, W);
  }

  // ---------------------------------------------------------------- Backend: ops (ops/*.ts)
  // Each op checks the backend is usable, then its function in ops/ checks the operands and
  // records the dispatches.

  embed(...args: Parameters<Backend["embed"]>): void {
    this.#gpu.check();
    encodeEmbed(this.#ctx, ...args);
  }

  embedAt(...args: Parameters<NonNullable<Backend["embedAt"]>>): void {
    this.#gpu.check();
    encodeEmbedAt(this.#ctx, ...args);
  }

  rmsNorm(...args: Parameters<Backend["rmsNorm"]>): void {
    this.#gpu.check();
    encodeRmsNorm(this.#ctx, ...args);
  }

  matmul(...args: Parameters<Backend["matmul"]>): void {
    this.#gpu.check();
    encodeMatmul(this.#ctx, ...args);
  }

  addBias(...args: Parameters<Backend["addBias"]>): void {
    this.#gpu.check();
    encodeAddBias(this.#ctx, ...args);
  }

  rope(...args: Parameters<Backend["rope"]>): void {
    this.#gpu.check();
    encodeRope(this.#ctx, ...args);
  }

  storeKV(...args: Parameters<Backend["storeKV"]>): void {
    this.#gpu.check();
    encodeStoreKV(this.#ctx, ...args);
  }

  attention(...args: Parameters<Backend["attention"]>): void {
    this.#gpu.check();
    encodeAttention(this.#ctx, ...args);
  }

  swiglu(...args: Parameters<Backend["swiglu"]>): void {
    this.#gpu.check();
    encodeSwiglu(this.#ctx, ...args);
  }

  add(...args: Parameters<Backend["add"]>): void {
    this.#gpu.check();
    encodeAdd(this.#ctx, ...args);
  }

  scale(...args: Parameters<Backend["scale"]>): void {
    this.#gpu.check();
    encodeScale(this.#ctx, ...args);
  }

  geglu(...args: Parameters<Backend["geglu"]>): void {
    this.#gpu.check();
    encodeGeglu(this.#ctx, ...args);
  }

  copyRows(...args: Parameters<Backend["copyRows"]>): void {
    this.#gpu.check();
    encodeCopyRows(this.#ctx, ...args);
  }

  sumRowGroups(...args: Parameters<Backend["sumRowGroups"]>): void {
    this.#gpu.check();
    encodeSumRowGroups(this.#ctx, ...args);
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
  const mode = featureMode(opts.features);
  const dev = opts.device ?? await requestDevice(adapter, OPTIONAL_FEATURES);
  const packed = (opts.packedDot ?? true) &&
    probe.wgslFeatures.includes("packed_4x8_integer_dot_product");
  const devMax = dev.limits.maxStorageBufferBindingSize;
  const maxBindingBytes = Math.floor(Math.min(opts.maxBindingBytes ?? devMax, devMax) / 4) * 4;
  const info: WebGPUInfo = {
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
    cpuKernels: opts.cpuKernels ?? probe.isFallback,
    cpuKernelsCheck: "",
    shaderFeatures: { mode, granted: [], active: [], outcomes: [] },
  };
  const be = new WebGPUBackend(dev, info, packed);
  // Granted optional features are used only once the self-check has matched them against the
  // fallback path on this device; the outcome is part of `be.device`, which the agent logs.
  try {
    const { paths, report } = await chooseShaderPaths(
      be,
      dev,
      (p) => setPaths(be, p),
      adapter,
      mode,
      `${info.matmulLanes}|${info.tiledPrefill}|${info.cpuKernels}|${packed}|${maxBindingBytes}`,
    );
    let checked: WebGPUInfo = {
      ...info,
      using: [...info.using, ...report.active],
      shaderFeatures: report,
    };
    setPaths(be, paths, checked);
    // The CPU-shaped kernels are used only once they have matched the kernels they replace.
    if (info.cpuKernels) {
      const r = await checkCpuKernels(
        be,
        dev,
        (on) => setPaths(be, paths, { ...checked, cpuKernels: on }),
        adapter,
        `${info.matmulLanes}|${packed}|${maxBindingBytes}`,
      );
      checked = { ...checked, cpuKernels: r.ok, cpuKernelsCheck: r.detail };
      setPaths(be, paths, checked);
    }
  } catch (e) {
    be.dispose();
    throw e;
  }
  return be;
}
