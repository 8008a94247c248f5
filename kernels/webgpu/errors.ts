/**
 * Typed errors of the WebGPU backend. Callers catch {@link WebGPUDeviceLostError} (which
 * {@link WebGPUOutOfMemoryError} extends) and fall back to the CPU backend for the stage.
 *
 * @module
 */

/** Any failure of the WebGPU backend that is not a programming error of the caller. */
export class WebGPUError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "WebGPUError";
  }
}

/**
 * The GPU device is gone (driver reset, GPU removed, device destroyed) or can no longer hold the
 * stage: nothing enqueued since the last successful `read` can be trusted. Re-create the backend
 * or fall back to the CPU.
 *
 * @example
 * ```ts ignore
 * try {
 *   logits = await backend.read(out);
 * } catch (e) {
 *   if (e instanceof WebGPUDeviceLostError) backend = await createWasmBackend();
 *   else throw e;
 * }
 * ```
 */
export class WebGPUDeviceLostError extends WebGPUError {
  /** `GPUDeviceLostInfo.reason` ("destroyed" / "unknown"), or "out-of-memory". */
  readonly reason: string;
  constructor(message: string, reason: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "WebGPUDeviceLostError";
    this.reason = reason;
  }
}

/** An allocation failed: the weights, KV cache or activations do not fit in GPU memory. */
export class WebGPUOutOfMemoryError extends WebGPUDeviceLostError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, "out-of-memory", options);
    this.name = "WebGPUOutOfMemoryError";
  }
}

/** No usable adapter (no `navigator.gpu`, or `requestAdapter()` returned null). */
export class WebGPUUnavailableError extends WebGPUError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "WebGPUUnavailableError";
  }
}
