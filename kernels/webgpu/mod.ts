/**
 * The WebGPU backend: every layer op as a WGSL compute shader through `navigator.gpu`.
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
export type { WebGPUBackendOptions, WebGPUInfo } from "./backend.ts";
export { probeAdapter } from "./device.ts";
export type { AdapterProbe } from "./device.ts";
export {
  WebGPUDeviceLostError,
  WebGPUError,
  WebGPUOutOfMemoryError,
  WebGPUUnavailableError,
} from "./errors.ts";
