/**
 * The WASM backend: AssemblyScript SIMD kernels over shared memories with a worker pool.
 *
 * Build the kernels with `deno run -A kernels/wasm/build.ts` (createWasmBackend also builds them
 * when build/kernels.wasm is missing or older than its sources).
 *
 * @example
 * ```ts
 * import { createWasmBackend } from "./mod.ts";
 * const be = await createWasmBackend({ threads: 2 });
 * const x = be.buffer(8);
 * be.write(x, new Float32Array(8).fill(1));
 * console.log(await be.read(x));
 * be.dispose();
 * ```
 * @module
 */
export { createWasmBackend } from "./backend.ts";
export type { WasmBackendOptions } from "./backend.ts";
export { buildWasm, WASM_URL } from "./build.ts";
