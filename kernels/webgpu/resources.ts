/**
 * The device and what lives on it: buffer creation with out-of-memory checks, destruction (held
 * back while recorded commands may still use a buffer), pools of activation and readback
 * buffers, per-purpose scratch buffers, constant tables, and the error state that device loss,
 * out-of-memory and validation failures leave for the next call to throw.
 *
 * @module
 */
import { newId, type Res } from "./handles.ts";
import { WebGPUDeviceLostError, WebGPUError, WebGPUOutOfMemoryError } from "./errors.ts";

/** `n` rounded up to a multiple of `a`. */
export function align(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** The device and its buffers, shared by the encoder and the ops. */
export class GpuResources {
  /** The device's `maxStorageBufferBindingSize`. */
  readonly maxBind: number;
  /** A failure of one call waiting to be thrown once (validation errors). */
  error: WebGPUError | null = null;
  /**
   * A failure that stays: the device lost, or out of memory. Its own field, so a validation
   * error pending when the device is lost cannot hide the loss (before, the loss was dropped,
   * and ops were accepted on a dead device after the validation error was thrown once).
   */
  sticky: WebGPUError | null = null;
  disposed = false;
  /**
   * Whether commands recorded but not yet submitted may use any buffer (the encoder sets it):
   * a buffer destroyed meanwhile is destroyed after the submit instead.
   */
  pendingCommands: () => boolean = () => false;

  readonly #pendingErrors: Promise<WebGPUError | null>[] = [];
  readonly #live = new Set<GPUBuffer>();
  readonly #pool = new Map<number, Res[]>();
  #pooledBytes = 0;
  /** Most bytes of freed activation buffers kept for reuse (see pool). */
  maxPooledBytes = 256 << 20;
  readonly #staging = new Map<number, Res[]>();
  readonly #scratch = new Map<string, Res>();
  readonly #constants = new Map<string, Res>();
  readonly #onDestroy: ((res: Res) => void)[] = [];
  #deferred: { destroy(): void }[] = [];

  constructor(readonly dev: GPUDevice, readonly description: string) {
    this.maxBind = dev.limits.maxStorageBufferBindingSize;
    dev.lost.then((lost) => {
      if (this.disposed) return;
      // The loss outranks whatever else is pending, out-of-memory included.
      this.sticky = new WebGPUDeviceLostError(
        `WebGPU device "${description}" was lost (${lost.reason}): ${lost.message}. ` +
          "Fall back to the CPU backend or re-create the WebGPU backend.",
        lost.reason,
      );
    });
    dev.addEventListener("uncapturederror", (ev) => {
      const err = (ev as GPUUncapturedErrorEvent).error;
      if (err instanceof GPUOutOfMemoryError) {
        this.sticky ??= new WebGPUOutOfMemoryError(
          `WebGPU out of memory on "${description}": ${err.message}`,
        );
      } else this.error ??= new WebGPUError(`WebGPU error on "${description}": ${err.message}`);
    });
  }

  /** Throw when disposed or when the device is lost: every op calls this first. */
  check(): void {
    if (this.disposed) throw new WebGPUError("the WebGPU backend was disposed");
    if (this.sticky instanceof WebGPUDeviceLostError) throw this.sticky;
  }

  /** Throw the first failure reported since the last call (allocations' error scopes included). */
  async throwPending(): Promise<void> {
    if (this.#pendingErrors.length) {
      const errs = await Promise.all(this.#pendingErrors.splice(0));
      const e = errs.find((x) => x);
      if (e) this.sticky ??= e; // the scopes report out-of-memory only
    }
    if (this.sticky) throw this.sticky;
    if (this.error) {
      const e = this.error;
      this.error = null;
      throw e;
    }
  }

  /** The failure a failed read reports: the one that stays, else a loss (`cause` is why). */
  readFailure(cause: unknown): WebGPUError {
    return this.sticky ?? new WebGPUDeviceLostError(
      `reading back from "${this.description}" failed: ${(cause as Error)?.message ?? cause}`,
      "unknown",
      { cause },
    );
  }

  /** A new buffer; an allocation the device refuses surfaces as WebGPUOutOfMemoryError. */
  createBuffer(bytes: number, usage: number, what: string, mapped = false): Res {
    if (bytes > this.dev.limits.maxBufferSize) {
      throw new WebGPUOutOfMemoryError(
        `${what} needs a ${bytes}-byte buffer; this device allows at most ` +
          `${this.dev.limits.maxBufferSize} bytes per buffer`,
      );
    }
    this.dev.pushErrorScope("out-of-memory");
    let buffer: GPUBuffer;
    try {
      buffer = this.dev.createBuffer({ size: bytes, usage, mappedAtCreation: mapped });
    } catch (e) {
      this.dev.popErrorScope();
      throw new WebGPUOutOfMemoryError(`allocating ${bytes} bytes for ${what} failed`, {
        cause: e,
      });
    }
    this.#pendingErrors.push(
      this.dev.popErrorScope().then((err) =>
        err
          ? new WebGPUOutOfMemoryError(
            `out of GPU memory allocating ${bytes} bytes for ${what} on "${this.description}"`,
          )
          : null
      ),
    );
    this.#live.add(buffer);
    return { buffer, id: newId(), bytes };
  }

  /** Call `fn` with every buffer destroyed, so caches keyed by it can drop their entries. */
  onDestroy(fn: (res: Res) => void): void {
    this.#onDestroy.push(fn);
  }

  /** Destroy `res`, after the next submit if recorded commands may still use it. */
  destroy(res: Res): void {
    for (const fn of this.#onDestroy) fn(res);
    this.#live.delete(res.buffer);
    if (this.pendingCommands()) this.#deferred.push(res.buffer);
    else res.buffer.destroy();
  }

  /** Destroy `obj` (a texture made from a buffer) now, or after the next submit as `destroy`. */
  destroyLater(obj: { destroy(): void }): void {
    if (this.pendingCommands()) this.#deferred.push(obj);
    else obj.destroy();
  }

  /** Destroy the buffers held back for the submit that just happened. */
  destroyDeferred(): void {
    for (const b of this.#deferred) b.destroy();
    this.#deferred = [];
  }

  /** Throw when `bytes` exceed what one storage binding may hold. */
  storageLimit(bytes: number, what: string): void {
    if (bytes > this.maxBind) {
      throw new WebGPUOutOfMemoryError(
        `${what} needs a ${bytes}-byte storage binding; this device binds at most ` +
          `${this.maxBind} bytes (maxStorageBufferBindingSize)`,
      );
    }
  }

  /** A scratch buffer of at least `bytes`, kept per purpose and grown on demand. */
  scratch(purpose: string, bytes: number): Res {
    const cur = this.#scratch.get(purpose);
    if (cur && cur.bytes >= bytes) return cur;
    if (cur) this.destroy(cur);
    const size = align(Math.max(bytes, 256), 256);
    this.storageLimit(size, `scratch buffer (${purpose})`);
    const res = this.createBuffer(
      size,
      GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
      `scratch buffer (${purpose})`,
    );
    this.#scratch.set(purpose, res);
    return res;
  }

  /** A read-only storage buffer holding `make()`, made on first use and kept. */
  constant(what: string, make: () => Float32Array<ArrayBuffer>): Res {
    let res = this.#constants.get(what);
    if (!res) {
      const data = make();
      res = this.createBuffer(
        data.byteLength,
        GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
        what,
      );
      this.dev.queue.writeBuffer(res.buffer, 0, data);
      this.#constants.set(what, res);
    }
    return res;
  }

  /** Bytes of freed activation buffers kept for reuse now. */
  get pooledBytes(): number {
    return this.#pooledBytes;
  }

  /** A freed activation buffer of exactly `bytes`, if one is pooled. */
  pooled(bytes: number): Res | undefined {
    const res = this.#pool.get(bytes)?.pop();
    if (res) this.#pooledBytes -= res.bytes;
    return res;
  }

  /**
   * Keep a freed activation buffer for the next request of its size, up to `maxPooledBytes` in
   * all; past it the buffer is destroyed. Without a bound, memory freed once (prefix-cache blocks
   * evicted or cleared, a large batch's buffers) stayed on the device for good.
   */
  pool(res: Res): void {
    let list = this.#pool.get(res.bytes);
    if (!list) this.#pool.set(res.bytes, list = []);
    if (list.includes(res)) return;
    if (this.#pooledBytes + res.bytes > this.maxPooledBytes) {
      this.destroy(res);
      return;
    }
    list.push(res);
    this.#pooledBytes += res.bytes;
  }

  /** A mappable readback buffer of `bytes`, from the pool or new. */
  staging(bytes: number): Res {
    return this.#staging.get(bytes)?.pop() ??
      this.createBuffer(
        bytes,
        GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
        "a readback buffer",
      );
  }

  /** Return a readback buffer (unmapped) to the pool. */
  unstage(res: Res): void {
    let list = this.#staging.get(res.bytes);
    if (!list) this.#staging.set(res.bytes, list = []);
    list.push(res);
  }

  /** Destroy every buffer and the device. */
  dispose(): void {
    this.disposed = true;
    for (const b of this.#live) b.destroy();
    this.#live.clear();
    this.dev.destroy();
  }
}
