/**
 * The job protocol shared by the main thread and the workers of the WASM backend.
 *
 * One `SharedArrayBuffer` (the control block) carries the current job: the main thread writes the
 * op and its arguments, bumps `SEQ` and notifies; every thread (main included) then claims chunks
 * of the job with `Atomics.add(NEXT)` until none is left. A worker joins a job by incrementing
 * `ACTIVE` and then checking that the job is still open (`SEQ` unchanged, `CLOSED` not yet set to
 * it); the main thread, once out of chunks, closes the job and waits only for `ACTIVE` to drop to
 * 0 — so a worker the OS has not scheduled yet never delays it. (Control ops — new arenas, stop —
 * instead wait for every worker's acknowledgement in its `ACK` slot.) Kernels run on the thread's own instance of the arena
 * the job names, all instances of an arena sharing its `WebAssembly.Memory`.
 */
import type { Kernels, Mm32 } from "./kernels.ts";

/** Control-block slots (Int32 indices). */
export const SEQ = 0;
/**
 * Microseconds a thread spins on the control block for the next job (a worker) or for the
 * workers' end of a job (the caller) before it sleeps in `Atomics.wait` (set by the pool).
 */
export const SPIN_US = 1;
/** Next chunk to claim. */
export const NEXT = 2;
/** Op code of the current job. */
export const OP = 3;
/** Arena index the job runs in. */
export const ARENA = 4;
/** Workers currently inside a job (joined after checking it is still open). */
export const ACTIVE = 5;
/** SEQ of the last job the main thread closed (no worker may join it any more). */
export const CLOSED = 6;
/** Set to 1 by a worker whose kernel threw (the main thread then fails the op). */
export const ERROR = 7;
/** First integer argument. */
export const ARGS = 8;
/** Times a worker went to sleep waiting for a job (a diagnostic counter). */
export const SLEEPS = 47;
/** First float argument (Float32 view of the same buffer). */
export const FARGS = 48;
/** First per-worker acknowledgement slot: worker `i` writes the SEQ of the control op it took. */
export const ACK = 64;
/** Most threads a pool may have. */
export const MAX_THREADS = 256;
/**
 * First slot of the sequence table of an OP_ATTN_MANY job: SEQ_INTS ints per sequence (its
 * query, key, value and output offsets, first position, rows, kernel flags, query rows per work
 * item, the end of its work items, counted from the job's first, its cache's head stride and its
 * query heads' parts).
 */
export const SEQ_TABLE = ACK + MAX_THREADS;
/** Ints per sequence in the table (see SEQ_TABLE). */
export const SEQ_INTS = 11;
/** Most sequences one OP_ATTN_MANY job carries (a larger batch takes several jobs). */
export const MAX_SEQS = 256;
/** Control block size in Int32 elements. */
export const CTRL_INTS = SEQ_TABLE + MAX_SEQS * SEQ_INTS;

/**
 * Spin on `ctrl[slot]` while it equals `v`, for up to `ctrl[SPIN_US]` µs from `t0` (a
 * `performance.now()`); returns whether it changed. Sleeping in `Atomics.wait` and being woken
 * costs about 0.1 ms on these VMs (an idle vCPU is halted), while the gaps between the jobs of a
 * decode step are mostly tens of µs: llama.cpp's threads spin too.
 */
export function spinWhile(ctrl: Int32Array, slot: number, v: number, t0: number): boolean {
  for (let i = 1;; i++) {
    if (Atomics.load(ctrl, slot) !== v) return true;
    // Re-read: a pool that parks (Pool.park) sets 0 to send spinning threads to sleep now.
    if ((i & 63) === 0 && (performance.now() - t0) * 1000 >= Atomics.load(ctrl, SPIN_US)) {
      return false;
    }
  }
}

/** Op codes. */
export const OP_MM32 = 1;
/** K-quant matmul. */
export const OP_MMK = 2;
/** F32/F16/BF16 matmul. */
export const OP_MMF = 3;
/** Attention over a KV cache. */
export const OP_ATTN = 4;
/** Bandwidth probe: stream-read chunks of memory (see WasmBackend.probeReadBandwidth). */
export const OP_PROBE = 5;
/** Attention of several sequences, each over its own KV cache (SEQ_TABLE). */
export const OP_ATTN_MANY = 6;
/** Workers: return to the event loop and take new arenas (their memories arrive by message). */
export const OP_RELOAD = 9;
/** Workers: exit. */
export const OP_STOP = 10;

/** Matmul argument slots (relative to ARGS). */
export const A = {
  KIND: 0,
  W: 1,
  ROW_BYTES: 2,
  NB: 3,
  AQ: 4,
  AD: 5,
  AS: 6,
  T: 7,
  OUT: 8,
  OUT_STRIDE: 9,
  NROWS: 10,
  CHUNK: 11,
  SCR: 12,
  SCR_STRIDE: 13,
  POS0: 14,
  NHEADS: 15,
  NKV: 16,
  HEAD_DIM: 17,
  F16: 18,
  VC: 19,
  AQ16: 20,
  /** Matmul jobs: how many weights share the job (same type, input and row length). */
  NPARTS: 21,
  /** First part; each part is PART_INTS ints: weight, output, rows, rows per chunk, end chunk. */
  PARTS: 22,
  /** Attention: elements between two KV heads' first cache entries (after the matmul parts). */
  HEAD_STRIDE: 37,
  /** Attention: parts each KV head's group of query heads is split into. */
  HEAD_SPLITS: 38,
} as const;

/** Ints per matmul part (see A.PARTS). */
export const PART_INTS = 5;
/** Most weights one matmul job may carry. */
export const MAX_PARTS = 3;
// The argument slots fit between ARGS and SLEEPS, the matmul parts before HEAD_STRIDE.
if (A.PARTS + MAX_PARTS * PART_INTS > A.HEAD_STRIDE || ARGS + A.HEAD_SPLITS >= SLEEPS) {
  throw new Error("jobs.ts: the argument slots overlap");
}

/**
 * The matmul part that global chunk `c` falls in, with the chunk's first and end row; undefined
 * when `c` is past the last part. Parts follow each other in chunk order.
 */
function partOf(ctrl: Int32Array, c: number): [number, number, number] | undefined {
  const np = ctrl[ARGS + A.NPARTS];
  let start = 0;
  for (let p = 0; p < np; p++) {
    const base = ARGS + A.PARTS + p * PART_INTS;
    const end = ctrl[base + 4];
    if (c < end) {
      const chunk = ctrl[base + 3];
      const r0 = (c - start) * chunk;
      return [base, r0, Math.min(ctrl[base + 2], r0 + chunk)];
    }
    start = end;
  }
  return undefined;
}

/** A.KIND of a Q8_0 matmul over the biased activation (mmQ8_0b), beside the GGML types. */
export const KIND_Q8_0_BIASED = 0x108;

function mm32(k: Kernels, kind: number): Mm32 {
  switch (kind) {
    case KIND_Q8_0_BIASED:
      return k.mmQ8_0b;
    case 8:
      return k.mmQ8_0;
    case 2:
      return k.mmQ4_0;
    case 3:
      return k.mmQ4_1;
    case 6:
      return k.mmQ5_0;
    default:
      return k.mmQ5_1;
  }
}

/**
 * Run this thread's share of the job in the control block: claim chunks until none is left.
 * `thread` selects the per-thread scratch (0 = main thread).
 */
export function runJob(
  ctrl: Int32Array,
  f32: Float32Array,
  arenas: Kernels[],
  thread: number,
): void {
  const op = ctrl[OP];
  const k = arenas[ctrl[ARENA]];
  const a = ARGS;
  const nrows = ctrl[a + A.NROWS];
  const chunk = ctrl[a + A.CHUNK];
  // (matmul jobs take their rows and chunks from their parts instead)
  const scr = (ctrl[a + A.SCR] >>> 0) + thread * (ctrl[a + A.SCR_STRIDE] >>> 0);
  if (op === OP_MM32 || op === OP_MMK || op === OP_MMF) {
    const fn = op === OP_MM32 ? mm32(k, ctrl[a + A.KIND]) : undefined;
    for (;;) {
      const part = partOf(ctrl, Atomics.add(ctrl, NEXT, 1));
      if (!part) break;
      const [base, r0, r1] = part;
      const w = ctrl[base];
      const out = ctrl[base + 1];
      const stride = ctrl[base + 2];
      if (fn) {
        fn(
          w,
          ctrl[a + A.ROW_BYTES],
          ctrl[a + A.NB],
          ctrl[a + A.AQ],
          ctrl[a + A.AD],
          ctrl[a + A.AS],
          ctrl[a + A.T],
          out,
          stride,
          r0,
          r1,
        );
      } else if (op === OP_MMK) {
        k.mmK(
          ctrl[a + A.KIND],
          w,
          ctrl[a + A.ROW_BYTES],
          ctrl[a + A.NB],
          ctrl[a + A.AQ],
          ctrl[a + A.AD],
          ctrl[a + A.AS],
          ctrl[a + A.T],
          out,
          stride,
          r0,
          r1,
          scr,
          ctrl[a + A.AQ16],
        );
      } else {
        k.mmF(
          ctrl[a + A.KIND],
          w,
          ctrl[a + A.ROW_BYTES],
          ctrl[a + A.NB],
          ctrl[a + A.AQ],
          ctrl[a + A.T],
          out,
          stride,
          r0,
          r1,
          scr,
        );
      }
    }
  } else if (op === OP_PROBE) {
    const bytes = ctrl[a + A.ROW_BYTES] >>> 0;
    for (;;) {
      const i = Atomics.add(ctrl, NEXT, 1);
      if (i >= nrows) break;
      k.streamRead((ctrl[a + A.W] >>> 0) + i * bytes, bytes);
    }
  } else if (op === OP_ATTN_MANY) {
    // work items of all sequences in table order; NROWS: the sequences
    for (let s = 0;;) {
      const i = Atomics.add(ctrl, NEXT, 1);
      while (s < nrows && i >= ctrl[SEQ_TABLE + s * SEQ_INTS + 8]) s++;
      if (s >= nrows) break;
      const t = SEQ_TABLE + s * SEQ_INTS;
      const w0 = i - (s > 0 ? ctrl[t - SEQ_INTS + 8] : 0);
      k.attention(
        ctrl[t],
        ctrl[t + 1],
        ctrl[t + 2],
        ctrl[t + 3],
        ctrl[t + 4],
        ctrl[t + 5],
        ctrl[a + A.NHEADS],
        ctrl[a + A.NKV],
        ctrl[a + A.HEAD_DIM],
        f32[FARGS],
        ctrl[t + 6],
        w0,
        w0 + 1,
        scr,
        ctrl[t + 7],
        ctrl[t + 9],
        ctrl[t + 10],
      );
    }
  } else if (op === OP_ATTN) {
    for (;;) {
      const w0 = Atomics.add(ctrl, NEXT, 1) * chunk;
      if (w0 >= nrows) break;
      k.attention(
        ctrl[a + A.AQ],
        ctrl[a + A.W],
        ctrl[a + A.VC],
        ctrl[a + A.OUT],
        ctrl[a + A.POS0],
        ctrl[a + A.T],
        ctrl[a + A.NHEADS],
        ctrl[a + A.NKV],
        ctrl[a + A.HEAD_DIM],
        f32[FARGS],
        ctrl[a + A.F16],
        w0,
        Math.min(nrows, w0 + chunk),
        scr,
        ctrl[a + A.KIND],
        ctrl[a + A.HEAD_STRIDE],
        ctrl[a + A.HEAD_SPLITS],
      );
    }
  }
}
