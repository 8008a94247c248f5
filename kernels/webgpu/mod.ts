/**
 * The WebGPU backend: every layer op as a WGSL compute shader through `navigator.gpu`.
 *
 * - `wgsl/`: one file per op family (matmul, matmul_tiled for prompts, quantize, norm, rope, kv,
 *   attention, softmax, elementwise, embed, rows, topk for sampling candidates) plus `common.wgsl` (half/bf16 conversions, roundf, ggml's expf) and
 *   `quant.wgsl` (one section per GGML type: element decode and block dot product, spliced into
 *   the shaders that need it). `shaders.gen.ts` embeds them (regenerate with `gen_shaders.ts`)
 *   so `deno compile` needs no files at run time.
 * - Numerics follow ggml's CPU backend: activations are converted to the weight type's
 *   vec_dot type on the GPU, dot products are integer-exact per block, float scaling as ggml.
 *   All 30 llama.cpp goldens pass on it (tests/kernels/webgpu/golden_test.ts).
 * - Optional adapter capabilities: WGSL `packed_4x8_integer_dot_product` (`dot4I8Packed`) when
 *   offered, a plain-integer path otherwise (both tested). `shader-f16` and `subgroups` are not
 *   used: f16 data is decoded with integer code (exact, core WGSL) and all arithmetic stays f32
 *   as in ggml's CPU kernels; reductions use workgroup memory.
 * - {@link probeAdapter} tells `kernels/select.ts` whether the adapter is a software fallback
 *   (llvmpipe: WASM is 5–10× faster there).
 *
 * @example
 * ```ts ignore
 * import { createWebGPUBackend, probeAdapter } from "./kernels/webgpu/mod.ts";
 * const probe = await probeAdapter();
 * if (probe.available && !probe.isFallback) {
 *   const backend = await createWebGPUBackend();
 * }
 * ```
 *
 * @module
 */
export { createWebGPUBackend, WebGPUBackend } from "./backend.ts";
export type { WebGPUBackendOptions, WebGPUInfo, WebGPUStats } from "./backend.ts";
export { probeAdapter } from "./device.ts";
export type { AdapterProbe } from "./device.ts";
export {
  WebGPUDeviceLostError,
  WebGPUError,
  WebGPUOutOfMemoryError,
  WebGPUUnavailableError,
} from "./errors.ts";
