/**
 * Command recording and submission: one pending command encoder (compute passes and copies),
 * the per-submission upload arena for uniforms and small host data, cached pipelines and bind
 * groups, and the readback that submits and maps. `read`-like calls are the only submission
 * points, so a whole decode step is one command buffer.
 *
 * @module
 */
import type { Res } from "./handles.ts";
import { align, type GpuResources } from "./resources.ts";
import type { WebGPUStats } from "./types.ts";

/** Bytes of one params block (every shader's uniform `P`). */
const PARAM_BYTES = 256;
const ARENA_CHUNK = 1 << 20;
const MAX_BIND_GROUPS = 4096;

/** How a shader binds a buffer. */
export type BindKind = "uniform" | "read" | "storage" | "texture";

/** A compute pipeline with its bind group layout. */
export interface Pipe {
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
  readonly key: string;
  readonly bindings: readonly (readonly [number, BindKind])[];
}

interface Chunk {
  readonly res: Res;
  readonly mirror: ArrayBuffer;
  used: number;
}

/** A reservation in the upload arena. */
export interface Slot {
  readonly chunk: Chunk;
  readonly offset: number;
}

/** A params block in the arena, written through its u32 and f32 views. */
export interface Params {
  readonly slot: Slot;
  readonly u: Uint32Array;
  readonly f: Float32Array;
}

/** Records commands for one submission at a time. */
export class Encoder {
  readonly #gpu: GpuResources;
  readonly #uniformAlign: number;
  readonly #pipes = new Map<string, Pipe>();
  readonly #groups = new Map<string, GPUBindGroup>();
  readonly #groupsByRes = new Map<number, Set<string>>();
  readonly #chunks: Chunk[] = [];
  #enc: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #chunkIdx = 0;

  constructor(gpu: GpuResources, readonly stats: WebGPUStats) {
    this.#gpu = gpu;
    this.#uniformAlign = Math.max(PARAM_BYTES, gpu.dev.limits.minUniformBufferOffsetAlignment);
    gpu.pendingCommands = () => this.#enc !== null;
    gpu.onDestroy((res) => {
      const keys = this.#groupsByRes.get(res.id);
      if (keys) {
        for (const k of keys) this.#groups.delete(k);
        this.#groupsByRes.delete(res.id);
      }
    });
  }

  #computePass(): GPUComputePassEncoder {
    this.#enc ??= this.#gpu.dev.createCommandEncoder();
    this.#pass ??= this.#enc.beginComputePass();
    return this.#pass;
  }

  /** The pending encoder, outside any compute pass: for copies and clears. */
  copyEncoder(): GPUCommandEncoder {
    if (this.#pass) {
      this.#pass.end();
      this.#pass = null;
    }
    this.#enc ??= this.#gpu.dev.createCommandEncoder();
    return this.#enc;
  }

  /** Reserve `bytes` in the upload arena (written to the GPU just before the next submit). */
  arena(bytes: number, alignTo = this.#uniformAlign): Slot {
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
    this.#gpu.storageLimit(size, "an upload of host data");
    const res = this.#gpu.createBuffer(
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
  params(): Params {
    const slot = this.arena(PARAM_BYTES);
    return {
      slot,
      u: new Uint32Array(slot.chunk.mirror, slot.offset, PARAM_BYTES / 4),
      f: new Float32Array(slot.chunk.mirror, slot.offset, PARAM_BYTES / 4),
    };
  }

  /** The pipeline cached under `key`, compiled from `code()` on first use. */
  pipe(
    key: string,
    code: () => string,
    bindings: readonly (readonly [number, BindKind])[],
    entryPoint = "main",
  ): Pipe {
    let p = this.#pipes.get(key);
    if (p) return p;
    const dev = this.#gpu.dev;
    const layout = dev.createBindGroupLayout({
      label: key,
      entries: bindings.map(([binding, kind]) => ({
        binding,
        visibility: GPUShaderStage.COMPUTE,
        ...(kind === "texture"
          ? { texture: { sampleType: "uint" as const, viewDimension: "2d" as const } }
          : {
            buffer: kind === "uniform"
              ? { type: "uniform" as const, hasDynamicOffset: true, minBindingSize: 0 }
              : { type: kind === "read" ? "read-only-storage" as const : "storage" as const },
          }),
      })),
    });
    const module = dev.createShaderModule({ label: key, code: code() });
    const pipeline = dev.createComputePipeline({
      label: key,
      layout: dev.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint },
    });
    p = { pipeline, layout, key, bindings };
    this.#pipes.set(key, p);
    return p;
  }

  /** Record one dispatch; `res` lists the non-uniform bindings in the pipe's order. */
  dispatch(p: Pipe, params: Slot, res: readonly Res[], x: number, y = 1, z = 1): void {
    const all = [params.chunk.res, ...res];
    const key = p.key + "|" + all.map((r) => r.id).join(",");
    let group = this.#groups.get(key);
    if (!group) {
      if (this.#groups.size >= MAX_BIND_GROUPS) {
        this.#groups.clear();
        this.#groupsByRes.clear();
      }
      group = this.#gpu.dev.createBindGroup({
        layout: p.layout,
        entries: p.bindings.map(([binding, kind], i) => ({
          binding,
          resource: kind === "uniform"
            ? { buffer: all[i].buffer, offset: 0, size: PARAM_BYTES }
            : kind === "texture"
            ? all[i].view!
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
  submit(): void {
    const enc = this.copyEncoder();
    const queue = this.#gpu.dev.queue;
    for (const c of this.#chunks) {
      if (c.used > 0) queue.writeBuffer(c.res.buffer, 0, c.mirror, 0, align(c.used, 4));
      c.used = 0;
    }
    this.#chunkIdx = 0;
    queue.submit([enc.finish()]);
    this.stats.submissions++;
    this.#enc = null;
    this.#gpu.destroyDeferred();
  }

  /** Submit what is recorded, if anything is. */
  flush(): void {
    if (this.#enc) this.submit();
  }

  /** Submit what is recorded, then copy `bytes` of `res` from byte `offset` to the host. */
  async readBack(res: Res, offset: number, bytes: number): Promise<ArrayBuffer> {
    const gpu = this.#gpu;
    const mapBytes = Math.max(4, bytes);
    const staging = gpu.staging(Math.max(256, 2 ** Math.ceil(Math.log2(mapBytes))));
    if (bytes > 0) {
      this.copyEncoder().copyBufferToBuffer(res.buffer, offset, staging.buffer, 0, bytes);
    }
    this.submit();
    try {
      await staging.buffer.mapAsync(GPUMapMode.READ, 0, mapBytes);
    } catch (e) {
      await gpu.throwPending();
      throw gpu.readFailure(e);
    }
    let out: ArrayBuffer;
    try {
      out = staging.buffer.getMappedRange(0, mapBytes).slice(0, bytes);
      staging.buffer.unmap();
    } catch (e) {
      // The device was lost between the map and here (or the backend disposed): the same typed
      // error as a failed map, not the runtime's raw OperationError.
      throw gpu.readFailure(e);
    }
    this.stats.reads++;
    this.stats.bytesRead += bytes;
    gpu.unstage(staging);
    await gpu.throwPending();
    return out;
  }

  /** Drop what is recorded without submitting it (the backend is being disposed). */
  abandon(): void {
    this.#pass?.end();
    this.#pass = null;
    this.#enc = null;
  }
}
