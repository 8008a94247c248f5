/**
 * The reference backend: plain TypeScript with ggml's CPU numerics, the ground truth in tests.
 *
 * @example
 * ```ts
 * import { createReferenceBackend } from "./mod.ts";
 * const be = createReferenceBackend();
 * const x = be.buffer(64);
 * ```
 */
export { createReferenceBackend } from "./backend.ts";
