/** Every backend a model test runs on, the WebGPU one ignored where no adapter is found. */
import type { Backend } from "../../kernels/backend.ts";
import { createReferenceBackend } from "../../kernels/reference/mod.ts";
import { createWasmBackend } from "../../kernels/wasm/mod.ts";
import { createWebGPUBackend } from "../../kernels/webgpu/mod.ts";
import { PROBE } from "../kernels/webgpu/helpers.ts";

/** [name, make, ignore] for reference, wasm (on `wasmThreads` threads) and webgpu. */
export function everyBackend(
  wasmThreads = 2,
): [string, () => Promise<Backend> | Backend, boolean][] {
  return [
    ["reference", () => createReferenceBackend(), false],
    ["wasm", () => createWasmBackend({ threads: wasmThreads }), false],
    ["webgpu", () => createWebGPUBackend(), !PROBE.available],
  ];
}
