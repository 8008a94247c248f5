/**
 * The WebGPU backend's options, what it reports about the adapter it found, and its round-trip
 * counters.
 *
 * @module
 */
import type { FeatureMode, ShaderFeatureReport } from "./features.ts";

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
  /**
   * Kernels shaped for adapters that run shaders on the CPU, where every storage load is a loop
   * of scalar loads over a SIMD group's invocations: matmul_cpu.wgsl for the weight types it
   * covers (Q8_0, Q4_0; rows a multiple of 256 elements) and attention_cpu.wgsl for an f32
   * cache: 16-byte loads, several rows per invocation, no workgroup memory; the matmul reads a
   * texture copy of each weight it multiplies (the weights' memory twice). Bit-identical to the
   * kernels they replace, which a startup check confirms on the device (`info.cpuKernelsCheck`).
   * Default: on a software fallback adapter (llvmpipe), off on hardware.
   */
  readonly cpuKernels?: boolean;
  /**
   * Optional shader paths that may be used, each after its startup self-check against the
   * fallback path (features.ts, selfcheck.ts): "all" (default), "f16", "subgroups" or "none"
   * (the f32 / workgroup-memory path only). Default: `DLLM_WEBGPU_FEATURES`, else "all".
   */
  readonly features?: FeatureMode;
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
  /** matmul_cpu.wgsl and attention_cpu.wgsl where they apply (see the option). */
  readonly cpuKernels: boolean;
  /** The startup self-check of the CPU-shaped kernels, in words ("" when not asked for). */
  readonly cpuKernelsCheck: string;
  /** `shader-f16` and `subgroups`: granted, self-checked, in use (see the `features` option). */
  readonly shaderFeatures: ShaderFeatureReport;
}
