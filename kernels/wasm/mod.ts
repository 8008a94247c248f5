/**
 * The WASM backend: AssemblyScript SIMD kernels over shared memories with a worker pool.
 *
 * Build the kernels with `deno task build:wasm` (kernels/wasm/build.ts); `createWasmBackend` loads
 * build/kernels.wasm and says so when it is missing or older than its sources.
 *
 * - `assembly/index.ts` — the kernels (AssemblyScript, SIMD + relaxed SIMD): activation
 *   quantizers (Q8_0/Q8_1/Q8_K, f16/bf16 rounding), matmuls for every weight type, RMSNorm,
 *   RoPE, attention over f32/f16 KV caches, SwiGLU, add.
 * - `build.ts` — compiles them with asc into `build/kernels.wasm` (git-ignored).
 * - `arena.ts` — one shared `WebAssembly.Memory` (≤ 4 GiB) + its allocator; weights spread over
 *   several arenas when they do not fit one.
 * - `jobs.ts` + `worker.ts` — the thread pool: a control block in a SharedArrayBuffer, rows of a
 *   job claimed with `Atomics.add`, workers woken with `Atomics.notify`.
 * - `backend.ts` — `createWasmBackend`, the `Backend` implementation (one method per op).
 * - `resources.ts` — buffers, weights, KV caches and where they are placed in the arenas.
 * - `layout.ts` — the layouts weights take at upload for the kernels, and rows read back.
 * - `matmul.ts` — matmul jobs: activation conversion, rows of several weights split over threads.
 * - `attention.ts` — attention jobs: one sequence's, or a batch's sequences in one job.
 * - `kv_cache.ts` — KV caches: their memory, their layout (each layer head by head) and stores.
 * - `pool.ts` — the workers and the control block shared with them.
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
export type { WasmBackend, WasmBackendOptions } from "./backend.ts";
export { buildWasm, KernelsNotBuiltError, readKernelBinary, WASM_URL } from "./build.ts";
