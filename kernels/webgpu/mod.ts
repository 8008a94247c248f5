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
 *   offered, a plain-integer path otherwise (both tested). `shader-f16` and `subgroups` are
 *   requested when offered (features.ts) and each is used only after a startup self-check
 *   (selfcheck.ts: a small layer through both paths on the device) has matched the fallback:
 *   f16 converts half bits with the hardware in the matmul shaders (arithmetic stays f32),
 *   subgroups take the last steps of the decode matmul, RMSNorm and top-k reductions with
 *   `subgroupShuffleXor` in the fallback's order. The fallback (integer half decoding, f32,
 *   workgroup-memory reductions, as in ggml's CPU kernels) is the reference and the default;
 *   `DLLM_WEBGPU_FEATURES=none|f16|subgroups|all` (or the `features` option) narrows the choice,
 *   and `backend.info.shaderFeatures` / `backend.device` say what is in use.
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
export { describeFeatures } from "./features.ts";
export type { FeatureMode, FeatureOutcome, ShaderFeatureReport } from "./features.ts";
export { probeAdapter } from "./device.ts";
export type { AdapterProbe } from "./device.ts";
export {
  WebGPUDeviceLostError,
  WebGPUError,
  WebGPUOutOfMemoryError,
  WebGPUUnavailableError,
} from "./errors.ts";
