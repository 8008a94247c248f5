/**
 * The WASM backend's thread pool: workers (worker.ts) sharing a control block in a
 * SharedArrayBuffer (layout in jobs.ts). A job is published by bumping SEQ; every thread,
 * the caller's included, claims parts of it with `Atomics.add` until none are left.
 */
import type { Kernels } from "./kernels.ts";
import {
  ACK,
  ACTIVE,
  ARGS,
  CLOSED,
  CTRL_INTS,
  ERROR,
  NEXT,
  OP,
  OP_RELOAD,
  OP_STOP,
  runJob,
  SEQ,
  SPIN_US,
  spinWhile,
} from "./jobs.ts";

/** Default spin (µs) before a thread sleeps: see spinWhile in jobs.ts. */
export const DEFAULT_SPIN_US = 1000;

/** The workers and the control block they share with the calling thread. */
export class Pool {
  readonly ctrl: Int32Array;
  readonly f32: Float32Array;
  readonly workers: Worker[] = [];
  #spin = DEFAULT_SPIN_US;
  #parked = false;
  constructor() {
    const sab = new SharedArrayBuffer(CTRL_INTS * 4);
    this.ctrl = new Int32Array(sab);
    this.f32 = new Float32Array(sab);
    this.ctrl[SPIN_US] = DEFAULT_SPIN_US;
  }

  /** µs a thread spins for the next job or a job's end before it sleeps. */
  get spinMicros(): number {
    return this.#spin;
  }
  set spinMicros(us: number) {
    this.#spin = Math.max(0, Math.floor(us));
    if (!this.#parked) Atomics.store(this.ctrl, SPIN_US, this.#spin);
  }

  /**
   * Send the workers to sleep now instead of spinning for the next job: the caller knows none
   * is near (a pipeline stage's next frame is a network round trip away, and a spinning worker
   * would take a core from the stage computing meanwhile). The next job wakes them and spins
   * again.
   */
  park(): void {
    this.#parked = true;
    Atomics.store(this.ctrl, SPIN_US, 0);
  }

  #unpark(): void {
    if (!this.#parked) return;
    this.#parked = false;
    Atomics.store(this.ctrl, SPIN_US, this.#spin);
  }

  /** Start `n` workers over `memories`; resolves when each has instantiated the kernels. */
  async start(n: number, bytes: Uint8Array, memories: WebAssembly.Memory[]): Promise<void> {
    const ready: Promise<void>[] = [];
    for (let i = 0; i < n; i++) {
      const w = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
      this.workers.push(w);
      ready.push(
        new Promise((resolve, reject) => {
          w.onmessage = (e) => {
            if (e.data?.type === "ready") resolve();
          };
          w.onerror = (e) => {
            e.preventDefault();
            reject(new Error(`wasm worker ${i + 1} failed to start: ${e.message}`));
          };
        }),
      );
      w.postMessage({ type: "init", bytes, ctrl: this.ctrl.buffer, thread: i + 1, memories });
    }
    try {
      await Promise.all(ready);
    } catch (e) {
      // The workers that did start would wait on the control block forever, holding the
      // process open.
      for (const w of this.workers) w.terminate();
      this.workers.length = 0;
      throw e;
    }
    // A worker that fails later (its kernel instance over a new memory, say) is noted: every
    // call after says so at once, where each waited 30 s for the worker's answer before.
    this.workers.forEach((w, i) => {
      w.onerror = (e) => {
        e.preventDefault();
        this.#broken ??= `wasm backend: worker ${i + 1} failed: ${e.message}`;
      };
    });
  }

  /** Why the pool can no longer run jobs (a worker failed or hung); undefined while it can. */
  #broken?: string;

  #usable(): void {
    if (this.#broken) throw new Error(this.#broken);
  }

  /** Start the job in the control block on the workers, run the main share, wait for all. */
  run(kernels: Kernels[]): void {
    this.#usable();
    const c = this.ctrl;
    this.#unpark();
    Atomics.store(c, NEXT, 0);
    const seq = Atomics.add(c, SEQ, 1) + 1;
    Atomics.notify(c, SEQ);
    let err: unknown;
    try {
      runJob(c, this.f32, kernels, 0);
    } catch (e) {
      err = e;
    }
    // Close the job: workers that have not joined yet will not; wait for those inside it.
    Atomics.store(c, CLOSED, seq);
    let waited = 0;
    const t0 = performance.now();
    for (;;) {
      const a = Atomics.load(c, ACTIVE);
      if (a === 0) break;
      if (spinWhile(c, ACTIVE, a, t0)) continue;
      if (Atomics.wait(c, ACTIVE, a, 1000) === "timed-out" && ++waited > 30) {
        // The straggler is still inside this job: a next job would reset the control block
        // under it. The pool is done.
        this.#broken = "wasm backend: a worker did not finish its job within 30 s";
        throw new Error(this.#broken);
      }
    }
    if (err) throw err;
    if (Atomics.exchange(c, ERROR, 0)) {
      throw new Error("wasm backend: a worker's kernel failed (its error is on stderr)");
    }
  }

  /** Run the job in the control block on this thread only. */
  runHere(kernels: Kernels[]): void {
    Atomics.store(this.ctrl, NEXT, 0);
    runJob(this.ctrl, this.f32, kernels, 0);
  }

  /** Publish control op `op` and wait until every worker has acknowledged it. */
  control(op: number, arg: number): void {
    if (op !== OP_STOP) this.#usable();
    const c = this.ctrl;
    this.#unpark();
    c[OP] = op;
    Atomics.store(c, ARGS, arg);
    const seq = Atomics.add(c, SEQ, 1) + 1;
    Atomics.notify(c, SEQ);
    if (op === OP_STOP) return;
    for (let i = 1; i <= this.workers.length; i++) {
      let waited = 0;
      for (;;) {
        const v = Atomics.load(c, ACK + i);
        if (v === seq) break;
        if (Atomics.wait(c, ACK + i, v, 1000) === "timed-out" && ++waited > 30) {
          this.#broken = `wasm backend: worker ${i} did not take a new memory within 30 s`;
          throw new Error(this.#broken);
        }
      }
    }
    if (Atomics.exchange(c, ERROR, 0)) {
      this.#broken = "wasm backend: a worker failed to take a new memory (its error is on stderr)";
      throw new Error(this.#broken);
    }
  }

  /** Hand a new memory to every worker (they instantiate the kernels over it). */
  addArena(memory: WebAssembly.Memory, count: number): void {
    if (!this.workers.length) return;
    for (const w of this.workers) w.postMessage({ type: "arena", memory });
    this.control(OP_RELOAD, count);
  }

  /** Stop and terminate the workers. */
  stop(): void {
    if (!this.workers.length) return;
    this.control(OP_STOP, 0);
    for (const w of this.workers) w.terminate();
    this.workers.length = 0;
  }
}
