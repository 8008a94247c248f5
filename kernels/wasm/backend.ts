/**
 * The WASM backend: AssemblyScript SIMD kernels (assembly/index.ts) over shared memories, a
 * worker pool splitting matmul rows and attention heads across threads.
 *
 * Memory: arena 0 holds every activation buffer, KV cache and a float copy of each 1-D weight
 * (norms, biases); 2-D weights are copied once into the first arena with room (arena 0 first,
 * keeping a reserve for activations), new arenas opening as needed, so a layer range larger than
 * wasm32's 4 GiB still loads. A matmul runs in its weight's arena; when that is not arena 0 its
 * input is copied over and its output copied back.
 *
 * Numerics: the activation conversion (Q8_0/Q8_1/Q8_K quantization, f16/bf16 rounding) happens
 * once per (buffer version, vec_dot type) and is reused by the next matmul of the same input
 * (q/k/v, gate/up); integer dot products and their float scaling replay ggml's generic C code,
 * so quantized matmuls are bit-identical to the reference backend.
 */
import type {
  AttentionParams,
  Backend,
  Buf,
  KVCache,
  KVType,
  RopeParams,
  Weight,
  WeightShape,
  WeightSpec,
  WeightWriter,
} from "../backend.ts";
import {
  checkChunk,
  checkCopyRows,
  checkHeads,
  checkKVRange,
  checkRowRange,
  needElements,
  uploadWhole,
} from "../checks.ts";
import { geluTable } from "../gelu.ts";
import { GGMLType, typeInfo, typeName, weightLayout } from "../quant/types.ts";
import { dequantizeRow, vecDotType } from "../quant/ops.ts";
import { Arena } from "./arena.ts";
import { buildWasm, WASM_URL } from "./build.ts";
import type { Kernels } from "./kernels.ts";
import {
  A,
  ACK,
  ACTIVE,
  ARENA,
  ARGS,
  CLOSED,
  CTRL_INTS,
  ERROR,
  FARGS,
  MAX_PARTS,
  MAX_THREADS,
  NEXT,
  OP,
  OP_ATTN,
  OP_MM32,
  OP_MMF,
  OP_MMK,
  OP_PROBE,
  OP_RELOAD,
  OP_STOP,
  PART_INTS,
  runJob,
  SEQ,
} from "./jobs.ts";

/** The WASM backend: a Backend plus thread control and a memory-bandwidth probe (benchmarks). */
export interface WasmBackend extends Backend {
  /** Threads the pool was started with (the caller's included). */
  readonly threads: number;
  /** Threads that ops use from now on: 1..threads (the bench measures 1 vs all on one load). */
  setThreads(n: number): void;
  /**
   * GB/s of streaming reads of `bytes` of wasm memory by the active threads (best of `reps`):
   * the roofline decode's weight streaming can approach. The probe's pages stay committed.
   */
  probeReadBandwidth(bytes: number, reps?: number): number;
}

/** Options of {@link createWasmBackend}. */
export interface WasmBackendOptions {
  /** Threads including the caller's (default `navigator.hardwareConcurrency`). */
  threads?: number;
  /**
   * Bytes per wasm memory (default 4 GiB, wasm32's limit). Tests set a few MiB to prove that
   * weights spread over several memories still compute the same results.
   */
  memoryCap?: number;
}

const GiB = 1024 * 1024 * 1024;
const SPIN = 4000;

let nextId = 1;

class WBuf implements Buf {
  readonly id = nextId++;
  version = 0;
  freed = false;
  constructor(readonly length: number, readonly off: number) {}
}

/** 32-element block types whose matrices the kernels read as interleaved 4-row groups. */
const REPACKED = new Set([
  GGMLType.Q4_0,
  GGMLType.Q4_1,
  GGMLType.Q5_0,
  GGMLType.Q5_1,
  GGMLType.Q8_0,
]);

/**
 * Types laid out as byte quads (repackQuads: scales first, then quad k of row i at 8 + 16k + 4i
 * in each 4-row block) rather than whole blocks side by side (repack4). Q8_0 stays with repack4:
 * its signed quants need twice the broadcasts in the quad kernel (measured 25% slower).
 */
const QUADS = new Set([GGMLType.Q4_0]);

/** Reused row buffer of embed() for rows gathered out of an interleaved group. */
let rowBuf = new Uint8Array(0);

class WWeight implements Weight {
  /** Block bytes when the first `repackedRows` rows are interleaved by 4 (see repack4), else 0. */
  bb = 0;
  repackedRows = 0;
  /** Q4_K quants reordered by class (repackQ4K). */
  q4kClasses = false;
  /** Q6_K quants reordered in pairs (repackQ6K). */
  q6kPairs = false;
  /** Offset of a float copy in arena 0 (1-D weights, or made on first rmsNorm/addBias use). */
  f32Off = -1;
  freed = false;
  constructor(
    readonly name: string,
    readonly type: GGMLType,
    readonly shape: readonly number[],
    readonly arena: number,
    readonly off: number,
    readonly bytes: number,
    readonly rowLen: number,
    readonly nRows: number,
    readonly rowBytes: number,
  ) {}
}

class WKV implements KVCache {
  freed = false;
  constructor(
    readonly nLayers: number,
    readonly nCtx: number,
    readonly kvDim: number,
    readonly type: KVType,
    readonly kOff: number,
    readonly vOff: number,
    readonly bytes: number,
  ) {}
  get esz(): number {
    return this.type === "f16" ? 2 : 4;
  }
  layerBytes(): number {
    return this.nCtx * this.kvDim * this.esz;
  }
}

/** A growable scratch block of one arena. */
class Scratch {
  off = 0;
  bytes = 0;
  constructor(readonly arena: Arena, readonly what: string) {}
  ensure(bytes: number): number {
    if (bytes <= this.bytes) return this.off;
    if (this.bytes) this.arena.release(this.off, this.bytes);
    const want = Math.max(bytes, Math.min(this.bytes * 2, bytes * 2));
    let off = this.arena.alloc(want);
    let got = want;
    if (off === undefined) {
      off = this.arena.alloc(bytes);
      got = bytes;
    }
    if (off === undefined) {
      this.bytes = 0;
      throw new Error(
        `wasm backend: memory ${this.arena.index} (cap ${this.arena.cap} bytes) has no room for ` +
          `${bytes} bytes of ${this.what} scratch; raise memoryCap`,
      );
    }
    this.off = off;
    this.bytes = got;
    return off;
  }
}

/** Per-arena state: scratch blocks and the activation-conversion cache. */
class ArenaState {
  readonly act: Scratch;
  readonly xin: Scratch;
  readonly out: Scratch;
  readonly thr: Scratch;
  thrStride = 0;
  actBuf = 0;
  actVersion = -1;
  actKind = -1;
  actRows = 0;
  actN = 0;
  /** Whether the cached activation carries the Q8_0 kernel's P/N planes. */
  actPN = false;
  /** Whether it carries the i16 pair-ordered quants of the decoded-row K-quant path. */
  actQ16 = false;
  /** Whether it carries the Q4_K kernel's reordered quants (permuteQ4KAct). */
  actQ4K = false;
  /** Whether it carries the Q6_K kernel's pair-ordered quants (permuteQ6KAct). */
  actQ6K = false;
  constructor(readonly arena: Arena) {
    this.act = new Scratch(arena, "activation");
    this.xin = new Scratch(arena, "input copy");
    this.out = new Scratch(arena, "output");
    this.thr = new Scratch(arena, "per-thread");
  }
}

class Pool {
  readonly ctrl: Int32Array;
  readonly f32: Float32Array;
  readonly workers: Worker[] = [];
  constructor() {
    const sab = new SharedArrayBuffer(CTRL_INTS * 4);
    this.ctrl = new Int32Array(sab);
    this.f32 = new Float32Array(sab);
  }

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
    await Promise.all(ready);
  }

  /** Start the job in the control block on the workers, run the main share, wait for all. */
  run(kernels: Kernels[]): void {
    const c = this.ctrl;
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
    let spins = 0;
    let waited = 0;
    for (;;) {
      const a = Atomics.load(c, ACTIVE);
      if (a === 0) break;
      if (++spins > SPIN && Atomics.wait(c, ACTIVE, a, 1000) === "timed-out" && ++waited > 30) {
        throw new Error("wasm backend: a worker did not finish its job within 30 s");
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
    const c = this.ctrl;
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
          throw new Error(`wasm backend: worker ${i} did not take a new memory within 30 s`);
        }
      }
    }
  }

  addArena(memory: WebAssembly.Memory, count: number): void {
    if (!this.workers.length) return;
    for (const w of this.workers) w.postMessage({ type: "arena", memory });
    this.control(OP_RELOAD, count);
  }

  stop(): void {
    if (!this.workers.length) return;
    this.control(OP_STOP, 0);
    for (const w of this.workers) w.terminate();
    this.workers.length = 0;
  }
}

/** vec_dot family of a weight type: how the activations are converted. */
const enum Act {
  F32 = 0,
  F16 = 1,
  BF16 = 2,
  Q8_0 = 3,
  Q8_1 = 4,
  Q8_K = 5,
}

/** The activation kernel for a weight type: its ggml vec_dot type (kernels/quant owns the map). */
function actKind(t: GGMLType): Act {
  switch (typeInfo(t)?.weight ? vecDotType(t) : undefined) {
    case GGMLType.F32:
      return Act.F32;
    case GGMLType.F16:
      return Act.F16;
    case GGMLType.BF16:
      return Act.BF16;
    case GGMLType.Q8_0:
      return Act.Q8_0;
    case GGMLType.Q8_1:
      return Act.Q8_1;
    case GGMLType.Q8_K:
      return Act.Q8_K;
  }
  throw new Error(`wasm backend: no matmul for tensor type ${typeName(t)}`);
}

const align = (n: number) => Math.ceil(n / 64) * 64;

/**
 * Build the WASM backend (compiling the kernels first if build/kernels.wasm is missing or stale).
 *
 * @example
 * ```ts
 * import { createWasmBackend } from "./mod.ts";
 * const be = await createWasmBackend({ threads: 2 });
 * const x = be.buffer(64);
 * be.dispose();
 * ```
 */
export async function createWasmBackend(opts: WasmBackendOptions = {}): Promise<WasmBackend> {
  const threads = Math.min(
    MAX_THREADS,
    Math.max(1, Math.floor(opts.threads ?? navigator.hardwareConcurrency ?? 1)),
  );
  const cap = Math.min(opts.memoryCap ?? 4 * GiB, 4 * GiB);
  if (cap < 2 * 65536) throw new Error(`wasm backend: memoryCap ${cap} is below 128 KiB`);
  await buildWasm();
  const bytes = await Deno.readFile(WASM_URL);
  const module = await WebAssembly.compile(bytes);

  const arenas: Arena[] = [new Arena(0, module, cap)];
  const states: ArenaState[] = [new ArenaState(arenas[0])];
  const kernels: Kernels[] = [arenas[0].k];
  const pool = new Pool();
  await pool.start(threads - 1, bytes, [arenas[0].memory]);
  let active = threads;
  // Room kept free for activations/KV (arena 0) and matmul scratch (others); untouched pages of
  // a memory cost address space only, not RSS.
  const reserve0 = Math.min(cap / 2, 512 * 1024 * 1024);
  const reserveN = Math.min(cap / 8, 256 * 1024 * 1024);
  const a0 = arenas[0];
  const misc = new Scratch(a0, "rope");
  const ctrl = pool.ctrl;
  let disposed = false;

  function addArena(): Arena {
    const a = new Arena(arenas.length, module, cap);
    arenas.push(a);
    states.push(new ArenaState(a));
    kernels.push(a.k);
    pool.addArena(a.memory, arenas.length);
    return a;
  }

  function placeWeight(bytes: number): [number, number] {
    for (const a of arenas) {
      if (a.available - bytes < (a.index === 0 ? reserve0 : reserveN)) continue;
      const off = a.alloc(bytes);
      if (off !== undefined) return [a.index, off];
    }
    const a = addArena();
    const off = bytes + reserveN <= a.cap ? a.alloc(bytes) : undefined;
    if (off === undefined) {
      throw new Error(
        `wasm backend: a weight of ${bytes} bytes (+ ${reserveN} bytes of scratch) does not fit ` +
          `one memory of ${a.cap} bytes; raise memoryCap (max 4 GiB)`,
      );
    }
    return [a.index, off];
  }

  function alloc0(bytes: number, what: string): number {
    const off = a0.alloc(bytes);
    if (off === undefined) {
      throw new Error(
        `wasm backend: no room for ${what} (${bytes} bytes) in the activation memory ` +
          `(cap ${a0.cap} bytes, ${a0.available} free); raise memoryCap or free buffers`,
      );
    }
    return off;
  }

  function buf(b: Buf): WBuf {
    if (!(b instanceof WBuf)) throw new Error("buffer does not belong to the wasm backend");
    if (b.freed) throw new Error("wasm backend: buffer used after free");
    return b;
  }
  function weight(w: Weight): WWeight {
    if (!(w instanceof WWeight)) {
      throw new Error(`weight ${w.name} does not belong to the wasm backend`);
    }
    if (w.freed) throw new Error(`wasm backend: weight ${w.name} used after free`);
    return w;
  }
  function kv(c: KVCache): WKV {
    if (!(c instanceof WKV)) throw new Error("KV cache does not belong to the wasm backend");
    if (c.freed) throw new Error("wasm backend: KV cache used after free");
    return c;
  }
  function need(b: WBuf, end: number, what: string): void {
    needElements(b.length, end, what);
  }

  /** Float copy of a weight in arena 0 (for rmsNorm / addBias). */
  function floats(w: WWeight): number {
    if (w.f32Off >= 0) return w.f32Off;
    const n = w.rowLen * w.nRows;
    const off = alloc0(n * 4, `float copy of ${w.name}`);
    const src = arenas[w.arena].u8;
    const dst = a0.f32;
    for (let r = 0; r < w.nRows; r++) {
      dequantizeRow(w.type, src, w.off + r * w.rowBytes, dst, off / 4 + r * w.rowLen, w.rowLen);
    }
    w.f32Off = off;
    return off;
  }

  /** Per-thread scratch of `bytes` in `st`'s arena, written to the job's SCR/SCR_STRIDE args. */
  function threadScratch(st: ArenaState, bytes: number): void {
    const stride = align(bytes);
    if (stride > st.thrStride) {
      st.thr.ensure(stride * threads);
      st.thrStride = stride;
    }
    ctrl[ARGS + A.SCR] = st.thr.off;
    ctrl[ARGS + A.SCR_STRIDE] = st.thrStride;
  }

  /** Interleave a 32-block weight's full 4-row groups for the matmul kernels (in place). */
  function repack(w: WWeight): void {
    const ar = arenas[w.arena];
    const groups = Math.floor(w.nRows / 4);
    const tmp = ar.alloc(4 * w.rowBytes);
    if (tmp === undefined) {
      throw new Error(
        `wasm backend: no room for ${4 * w.rowBytes} bytes of scratch to lay out ${w.name}`,
      );
    }
    const bb = typeInfo(w.type)!.typeSize;
    try {
      if (QUADS.has(w.type)) ar.k.repackQuads(w.off, w.rowBytes, bb, groups, tmp);
      else ar.k.repack4(w.off, w.rowBytes, bb, groups, tmp);
    } finally {
      ar.release(tmp, 4 * w.rowBytes);
    }
    w.bb = bb;
    w.repackedRows = groups * 4;
  }

  function matmul(wt: Weight, x: Buf, out: Buf, rows: number): void {
    const w = weight(wt);
    const X = buf(x);
    const O = buf(out);
    need(X, rows * w.rowLen, "matmul x");
    need(O, rows * w.nRows, "matmul out");
    if (rows <= 0) return;
    matmulJob([w], X, [O], rows);
  }

  /** Whether w can share a job with `first` (same kernel, input width and memory). */
  function sameJob(first: WWeight, w: WWeight): boolean {
    return w.type === first.type && w.rowLen === first.rowLen && w.arena === first.arena &&
      w.rowBytes === first.rowBytes;
  }

  /** Several weights × the same input in one job (MAX_PARTS at most, checked by the caller). */
  function matmulJob(ws: WWeight[], X: WBuf, Os: WBuf[], rows: number): void {
    const w = ws[0];
    const n = w.rowLen;
    const kind = actKind(w.type);
    const st = states[w.arena];
    const ar = st.arena;
    const k = ar.k;
    // activation layout in st.act
    const isK = kind === Act.Q8_K;
    const blk = isK ? 256 : 32;
    const nb = n / blk;
    const floatsAct = kind <= Act.BF16;
    const qsBytes = floatsAct ? align(rows * n * 4) : align(rows * n);
    const dBytes = floatsAct ? 0 : align(rows * nb * 4);
    const sBytes = floatsAct ? 0 : isK ? align(rows * nb * 64) : align(rows * nb * 4);
    const q16Bytes = isK ? align(rows * n * 2) : 0;
    // Q8_0 weights: the activation's P/N planes (see assembly/index.ts), in place of q16
    const pnBytes = kind === Act.Q8_0 && w.type === GGMLType.Q8_0 ? align(rows * n * 2) : 0;
    // Q8_K activations also keep the Q4_K kernel's reordered quants and 32-element sums (after
    // q16), made when a Q4_K weight first reads them
    const q4kBytes = isK ? align(rows * n) + align(rows * nb * 32) : 0;
    // … and the Q6_K kernel's pair-ordered quants and 32·pair sums (after those)
    const q6kBytes = isK ? 2 * align(rows * n) : 0;
    if (
      st.actBuf !== X.id || st.actVersion !== X.version || st.actKind !== kind ||
      st.actRows !== rows || st.actN !== n || (pnBytes && !st.actPN)
    ) {
      st.actBuf = -1;
      const actOff = st.act.ensure(
        qsBytes + dBytes + sBytes + Math.max(q16Bytes, pnBytes) + q4kBytes + q6kBytes,
      );
      st.actQ16 = false;
      st.actQ4K = false;
      st.actQ6K = false;
      let src = X.off;
      if (w.arena !== 0) {
        src = st.xin.ensure(rows * n * 4);
        ar.u8.set(a0.u8.subarray(X.off, X.off + rows * n * 4), src);
      }
      const d = actOff + qsBytes;
      const s = d + dBytes;
      if (kind === Act.F32) ar.u8.copyWithin(actOff, src, src + rows * n * 4);
      else if (kind === Act.F16) k.roundActs(src, actOff, rows * n, 1);
      else if (kind === Act.BF16) k.roundActs(src, actOff, rows * n, 2);
      else if (kind === Act.Q8_K) {
        k.quantizeQ8K(src, n, rows, actOff, d, s);
      } else {
        k.quantizeQ8(
          src,
          n,
          rows,
          actOff,
          d,
          s,
          kind === Act.Q8_1 ? 1 : 0,
          pnBytes ? s + sBytes : 0,
        );
      }
      st.actPN = pnBytes > 0;
      st.actBuf = X.id;
      st.actVersion = X.version;
      st.actKind = kind;
      st.actRows = rows;
      st.actN = n;
    }
    // Each kernel's extra form of a Q8_K activation is made when the first weight needing it
    // reads the activation (a Q4_K_M layer mixes kernels; most need only one form).
    const actOff = st.act.off;
    const q16Off = actOff + qsBytes + dBytes + sBytes;
    const q4kOff = q16Off + q16Bytes;
    // (Q6_K prompts of 4+ rows take the decoded-row path, on q16; see mmK)
    const q6kPairs = w.type === GGMLType.Q6_K && rows < 4;
    if (isK && w.type !== GGMLType.Q4_K && !q6kPairs && !st.actQ16) {
      k.permuteQ8K(actOff, q16Off, rows * n);
      st.actQ16 = true;
    }
    if (w.type === GGMLType.Q4_K && !st.actQ4K) {
      const s = actOff + qsBytes + dBytes;
      k.permuteQ4KAct(actOff, s, q4kOff, q4kOff + rows * n, n, rows);
      st.actQ4K = true;
    }
    const q6kOff = q4kOff + q4kBytes;
    if (q6kPairs && !st.actQ6K) {
      k.permuteQ6KAct(actOff, q6kOff, q6kOff + rows * n, rows * n);
      st.actQ6K = true;
    }
    const a = ARGS;
    ctrl[OP] = floatsAct ? OP_MMF : isK ? OP_MMK : OP_MM32;
    ctrl[ARENA] = w.arena;
    ctrl[a + A.KIND] = w.type;
    ctrl[a + A.ROW_BYTES] = w.rowBytes;
    ctrl[a + A.NB] = floatsAct ? n : nb;
    ctrl[a + A.AQ] = actOff;
    ctrl[a + A.AD] = actOff + qsBytes;
    // Q8_0 reads the P/N planes in the sums' slot (it has no use for the sums)
    ctrl[a + A.AS] = actOff + qsBytes + dBytes + (pnBytes ? sBytes : 0);
    ctrl[a + A.AQ16] = w.type === GGMLType.Q4_K ? q4kOff : q6kPairs ? q6kOff : q16Off;
    ctrl[a + A.T] = rows;
    if (isK) threadScratch(st, 3 * n + (n / 16) * 8 + nb * 8 + 64);
    // Parts in chunk order: rows split in chunks of a multiple of 4 (the kernels' row groups),
    // about 4 per thread per part, claimed by the threads in turn.
    const mAll = ws.reduce((sum, v) => sum + v.nRows, 0);
    const threadsUsed = Math.min(active, Math.ceil((mAll * n * rows) / 65536));
    // outputs of a weight outside arena 0 are computed in its arena's scratch, then copied back
    const outOffs: number[] = [];
    let scratchAt = w.arena === 0 ? 0 : st.out.ensure(rows * mAll * 4);
    let end = 0;
    ctrl[a + A.NPARTS] = ws.length;
    for (let p = 0; p < ws.length; p++) {
      const m = ws[p].nRows;
      const chunk = Math.max(4, Math.ceil(Math.ceil(m / (threadsUsed * 4)) / 4) * 4);
      const outOff = w.arena === 0 ? Os[p].off : scratchAt;
      scratchAt += rows * m * 4;
      outOffs.push(outOff);
      end += Math.ceil(m / chunk);
      const base = a + A.PARTS + p * PART_INTS;
      ctrl[base] = ws[p].off;
      ctrl[base + 1] = outOff;
      ctrl[base + 2] = m;
      ctrl[base + 3] = chunk;
      ctrl[base + 4] = end;
    }
    if (threadsUsed > 1) pool.run(kernels);
    else pool.runHere(kernels);
    for (let p = 0; p < ws.length; p++) {
      const bytes = rows * ws[p].nRows * 4;
      if (w.arena !== 0) a0.u8.set(ar.u8.subarray(outOffs[p], outOffs[p] + bytes), Os[p].off);
      Os[p].version++;
    }
  }

  /** matmul for each (weight, output) pair over one input: jobs of up to MAX_PARTS weights. */
  function matmulMany(wts: Weight[], x: Buf, outs: Buf[], rows: number): void {
    if (wts.length !== outs.length) {
      throw new Error(`matmulMany: ${wts.length} weights but ${outs.length} outputs`);
    }
    const X = buf(x);
    const ws = wts.map(weight);
    const Os = outs.map(buf);
    for (let i = 0; i < ws.length; i++) {
      need(X, rows * ws[i].rowLen, "matmul x");
      need(Os[i], rows * ws[i].nRows, "matmul out");
      if (Os[i].id === X.id) throw new Error("matmulMany: an output is the input");
    }
    if (rows <= 0) return;
    for (let i = 0; i < ws.length;) {
      let j = i + 1;
      while (j < ws.length && j - i < MAX_PARTS && sameJob(ws[i], ws[j])) j++;
      matmulJob(ws.slice(i, j), X, Os.slice(i, j), rows);
      i = j;
    }
  }

  /** Row views (weightRows): they own no memory of their own. */
  const views = new WeakSet<WWeight>();
  /** Offset of the GELU table in arena 0 (allocated on the first geglu). */
  let geluOff = -1;

  const be: WasmBackend = {
    name: "wasm",
    threads,

    setThreads(n: number): void {
      if (!Number.isInteger(n) || n < 1 || n > threads) {
        throw new Error(`wasm backend: setThreads(${n}) outside 1..${threads}`);
      }
      active = n;
    },

    probeReadBandwidth(bytes: number, reps = 3): number {
      const chunk = 1 << 20;
      const n = Math.max(1, Math.floor(bytes / chunk));
      const off = alloc0(n * chunk, "the bandwidth probe");
      try {
        a0.u8.fill(1, off, off + n * chunk); // commit the pages before timing
        let best = 0;
        for (let r = 0; r < reps; r++) {
          ctrl[OP] = OP_PROBE;
          ctrl[ARENA] = 0;
          ctrl[ARGS + A.W] = off;
          ctrl[ARGS + A.ROW_BYTES] = chunk;
          ctrl[ARGS + A.NROWS] = n;
          const t0 = performance.now();
          if (active > 1) pool.run(kernels);
          else pool.runHere(kernels);
          best = Math.max(best, (n * chunk) / ((performance.now() - t0) * 1e6));
        }
        return best;
      } finally {
        a0.release(off, n * chunk);
      }
    },

    get device() {
      return `WASM SIMD (AssemblyScript), ${threads} thread${threads > 1 ? "s" : ""}, ` +
        `${arenas.length} memor${arenas.length > 1 ? "ies" : "y"}`;
    },

    upload(spec: WeightSpec): Weight {
      return uploadWhole(this.beginUpload(spec), spec);
    },

    beginUpload(spec: WeightShape): WeightWriter {
      const info = typeInfo(spec.type);
      if (!info || !info.weight) {
        throw new Error(`weight ${spec.name}: tensor type ${typeName(spec.type)} is not supported`);
      }
      const { rowLen, nRows, stride, bytes } = weightLayout(spec.type, spec.shape);
      const [arena, off] = placeWeight(bytes);
      let state: "open" | "done" | "aborted" = "open";
      const open = () => {
        if (state !== "open") throw new Error(`weight ${spec.name}: upload already ${state}`);
      };
      return {
        bytes,
        write(chunk: Uint8Array, offset: number): void {
          open();
          checkChunk(spec.name, bytes, offset, chunk.length);
          arenas[arena].u8.set(chunk, off + offset);
        },
        finish(): Weight {
          open();
          const w = new WWeight(
            spec.name,
            spec.type,
            [...spec.shape],
            arena,
            off,
            bytes,
            rowLen,
            nRows,
            stride,
          );
          if (nRows === 1) floats(w);
          else if (REPACKED.has(spec.type) && nRows >= 4) repack(w);
          else if (spec.type === GGMLType.Q4_K) {
            arenas[arena].k.repackQ4K(off, bytes / 144);
            w.q4kClasses = true;
          } else if (spec.type === GGMLType.Q6_K) {
            arenas[arena].k.repackQ6K(off, bytes / 210);
            w.q6kPairs = true;
          }
          state = "done";
          return w;
        },
        abort(): void {
          if (state !== "open") return;
          state = "aborted";
          arenas[arena].release(off, bytes);
        },
      };
    },

    buffer(length: number): Buf {
      const off = alloc0(Math.max(1, length) * 4, `a buffer of ${length} floats`);
      a0.u8.fill(0, off, off + length * 4);
      return new WBuf(length, off);
    },

    write(dst: Buf, src: Float32Array, offset = 0): void {
      const d = buf(dst);
      need(d, offset + src.length, "write");
      a0.f32.set(src, d.off / 4 + offset);
      d.version++;
    },

    read(src: Buf, offset = 0, length?: number): Promise<Float32Array> {
      const s = buf(src);
      const n = length ?? s.length - offset;
      need(s, offset + n, "read");
      const o = s.off / 4 + offset;
      return Promise.resolve(a0.f32.slice(o, o + n));
    },

    kvCache(nLayers: number, nCtx: number, kvDim: number, type: KVType): KVCache {
      const esz = type === "f16" ? 2 : 4;
      const bytes = nLayers * nCtx * kvDim * esz;
      const kOff = alloc0(bytes, "a KV cache (keys)");
      let vOff: number;
      try {
        vOff = alloc0(bytes, "a KV cache (values)");
      } catch (e) {
        a0.release(kOff, bytes);
        throw e;
      }
      a0.u8.fill(0, kOff, kOff + bytes);
      a0.u8.fill(0, vOff, vOff + bytes);
      return new WKV(nLayers, nCtx, kvDim, type, kOff, vOff, bytes);
    },

    embed(table: Weight, ids: Int32Array, out: Buf): void {
      const w = weight(table);
      const o = buf(out);
      need(o, ids.length * w.rowLen, "embed");
      const src = arenas[w.arena].u8;
      const dst = a0.f32;
      for (let t = 0; t < ids.length; t++) {
        const id = ids[t];
        if (id < 0 || id >= w.nRows) {
          throw new Error(`embed: token id ${id} outside ${w.name}'s ${w.nRows} rows`);
        }
        let rowSrc = src;
        let rowOff = w.off + id * w.rowBytes;
        if (w.bb && id < w.repackedRows) {
          // gather the row's blocks out of its interleaved group (see repack4)
          rowSrc = rowBuf.length >= w.rowBytes ? rowBuf : (rowBuf = new Uint8Array(w.rowBytes));
          const group = w.off + (id - (id & 3)) * w.rowBytes;
          const i = id & 3;
          const bb = w.bb;
          for (let b = 0; b < w.rowBytes / bb; b++) {
            if (QUADS.has(w.type)) {
              const blk = group + 4 * b * bb;
              rowSrc.set(src.subarray(blk + 2 * i, blk + 2 * i + 2), b * bb);
              for (let k = 0; k < (bb - 2) / 4; k++) {
                const at = blk + 8 + 16 * k + 4 * i;
                rowSrc.set(src.subarray(at, at + 4), b * bb + 2 + 4 * k);
              }
            } else {
              const at = group + (4 * b + i) * bb;
              rowSrc.set(src.subarray(at, at + bb), b * bb);
            }
          }
          rowOff = 0;
        }
        if (w.q4kClasses) {
          // undo repackQ4K: byte 4c + m of each 32-byte group holds element c + 8m
          if (rowBuf.length < w.rowBytes) rowBuf = new Uint8Array(w.rowBytes);
          for (let b = 0; b < w.rowBytes; b += 144) {
            const at = rowOff + b;
            rowBuf.set(src.subarray(at, at + 16), b);
            for (let g = 16; g < 144; g += 32) {
              for (let p = 0; p < 32; p++) rowBuf[b + g + (p >> 2) + 8 * (p & 3)] = src[at + g + p];
            }
          }
          rowSrc = rowBuf;
          rowOff = 0;
        } else if (w.q6kPairs) {
          // undo repackQ6K: in each 16 bytes of ql/qh, byte 2l holds position l, 2l + 1 holds l + 8
          if (rowBuf.length < w.rowBytes) rowBuf = new Uint8Array(w.rowBytes);
          for (let b = 0; b < w.rowBytes; b += 210) {
            const at = rowOff + b;
            rowBuf.set(src.subarray(at + 192, at + 210), b + 192);
            for (let p = 0; p < 192; p++) {
              const g = p & ~15;
              const l = p & 15;
              rowBuf[b + g + (l >> 1) + 8 * (l & 1)] = src[at + p];
            }
          }
          rowSrc = rowBuf;
          rowOff = 0;
        }
        dequantizeRow(w.type, rowSrc, rowOff, dst, o.off / 4 + t * w.rowLen, w.rowLen);
      }
      o.version++;
    },

    rmsNorm(x: Buf, wt: Weight, out: Buf, rows: number, eps: number): void {
      const w = weight(wt);
      const X = buf(x);
      const O = buf(out);
      const n = w.rowLen;
      need(X, rows * n, "rmsNorm x");
      need(O, rows * n, "rmsNorm out");
      a0.k.rmsNorm(X.off, floats(w), O.off, rows, n, eps);
      O.version++;
    },

    matmul,
    matmulMany,

    addBias(x: Buf, bias: Weight, rows: number): void {
      const w = weight(bias);
      const X = buf(x);
      need(X, rows * w.rowLen, "addBias");
      a0.k.addRows(X.off, floats(w), rows, w.rowLen);
      X.version++;
    },

    rope(x: Buf, positions: Int32Array, p: RopeParams): void {
      const X = buf(x);
      const { nHeads, headDim, ropeDim } = p;
      if (ropeDim > headDim || ropeDim % 2 !== 0) {
        throw new Error(`rope: ropeDim ${ropeDim} must be even and ≤ headDim ${headDim}`);
      }
      const rows = positions.length;
      need(X, rows * nHeads * headDim, "rope");
      const off = misc.ensure(rows * 4 + ropeDim * 4 + 64);
      a0.i32.set(positions, off / 4);
      const cacheOff = align(off + rows * 4);
      a0.k.rope(
        X.off,
        off,
        rows,
        nHeads,
        headDim,
        ropeDim,
        p.freqBase,
        p.freqScale,
        p.neox ? 1 : 0,
        cacheOff,
      );
      X.version++;
    },

    storeKV(
      cache: KVCache,
      layer: number,
      k: Buf,
      v: Buf,
      pos0: number,
      rows: number,
      rowOffset = 0,
    ): void {
      const c = kv(cache);
      checkKVRange("storeKV", c, layer, pos0, rows);
      const d = c.kvDim;
      const K = buf(k);
      const V = buf(v);
      need(K, (rowOffset + rows) * d, "storeKV k");
      need(V, (rowOffset + rows) * d, "storeKV v");
      const lb = c.layerBytes();
      const kDst = c.kOff + layer * lb + pos0 * d * c.esz;
      const vDst = c.vOff + layer * lb + pos0 * d * c.esz;
      const kSrc = K.off + rowOffset * d * 4;
      const vSrc = V.off + rowOffset * d * 4;
      if (c.type === "f16") {
        a0.k.toF16(kSrc, kDst, rows * d);
        a0.k.toF16(vSrc, vDst, rows * d);
      } else {
        const u8 = a0.u8;
        u8.copyWithin(kDst, kSrc, kSrc + rows * d * 4);
        u8.copyWithin(vDst, vSrc, vSrc + rows * d * 4);
      }
    },

    attention(
      q: Buf,
      cache: KVCache,
      layer: number,
      out: Buf,
      pos0: number,
      rows: number,
      p: AttentionParams,
      rowOffset = 0,
    ): void {
      const c = kv(cache);
      const { nHeads, nKVHeads, headDim } = p;
      checkHeads(p, c);
      checkKVRange("attention", c, layer, pos0, rows);
      const Q = buf(q);
      const O = buf(out);
      const rowLen = nHeads * headDim;
      need(Q, (rowOffset + rows) * rowLen, "attention q");
      need(O, (rowOffset + rows) * rowLen, "attention out");
      const f16 = c.type === "f16";
      const nMax = pos0 + rows;
      threadScratch(states[0], (headDim + nMax + 4 + (f16 ? 2 * nMax * headDim : 0)) * 4 + 64);
      const lb = c.layerBytes();
      const a = ARGS;
      ctrl[OP] = OP_ATTN;
      ctrl[ARENA] = 0;
      ctrl[a + A.AQ] = Q.off + rowOffset * rowLen * 4;
      ctrl[a + A.W] = c.kOff + layer * lb;
      ctrl[a + A.VC] = c.vOff + layer * lb;
      ctrl[a + A.OUT] = O.off + rowOffset * rowLen * 4;
      ctrl[a + A.POS0] = pos0;
      ctrl[a + A.NHEADS] = nHeads;
      ctrl[a + A.NKV] = nKVHeads;
      ctrl[a + A.HEAD_DIM] = headDim;
      // the kernel's flags: f16 cache in bit 0, the sliding window above it
      ctrl[a + A.F16] = (f16 ? 1 : 0) | ((p.window ?? 0) << 1);
      ctrl[a + A.T] = rows;
      pool.f32[FARGS] = p.scale;
      // work items: (block of query rows) × (KV head); each item widens an f16 cache once
      const work = rows * nHeads * (pos0 + rows) * headDim;
      const parts = Math.min(active, Math.ceil(work / 32768));
      const rowBlock = Math.max(
        1,
        Math.ceil(rows / Math.max(1, Math.ceil((parts * 4) / nKVHeads))),
      );
      const items = Math.ceil(rows / rowBlock) * nKVHeads;
      ctrl[a + A.KIND] = rowBlock;
      ctrl[a + A.NROWS] = items;
      ctrl[a + A.CHUNK] = 1;
      if (parts > 1) pool.run(kernels);
      else pool.runHere(kernels);
      O.version++;
    },

    swiglu(gate: Buf, up: Buf, out: Buf, n: number): void {
      const g = buf(gate);
      const u = buf(up);
      const o = buf(out);
      need(g, n, "swiglu gate");
      need(u, n, "swiglu up");
      need(o, n, "swiglu out");
      a0.k.swiglu(g.off, u.off, o.off, n);
      o.version++;
    },

    add(x: Buf, y: Buf, n: number): void {
      const a = buf(x);
      const b = buf(y);
      need(a, n, "add a");
      need(b, n, "add b");
      a0.k.add(a.off, b.off, n);
      a.version++;
    },

    weightRows(wt: Weight, first: number, count: number): Weight {
      const w = weight(wt);
      checkRowRange(w.name, w.nRows, first, count);
      // Rows interleaved by 4 (repack4) can be viewed only in whole groups: the kernels read a
      // view's full groups as interleaved and any tail as plain rows.
      const inGroups = Math.max(0, Math.min(count, w.repackedRows - first));
      if (w.bb && inGroups > 0 && (first % 4 !== 0 || inGroups % 4 !== 0)) {
        throw new Error(
          `wasm backend: rows [${first}, ${first + count}) of ${w.name} split its 4-row groups`,
        );
      }
      const v = new WWeight(
        `${w.name}[${first}:${first + count}]`,
        w.type,
        [w.rowLen, count],
        w.arena,
        w.off + first * w.rowBytes,
        count * w.rowBytes,
        w.rowLen,
        count,
        w.rowBytes,
      );
      v.bb = w.bb;
      v.repackedRows = w.bb ? inGroups : 0;
      v.q4kClasses = w.q4kClasses;
      v.q6kPairs = w.q6kPairs;
      views.add(v);
      return v;
    },

    scale(x: Buf, s: number, n: number): void {
      const X = buf(x);
      need(X, n, "scale");
      a0.k.scaleF32(X.off, n, s);
      X.version++;
    },

    geglu(gate: Buf, up: Buf, out: Buf, n: number): void {
      const g = buf(gate);
      const u = buf(up);
      const o = buf(out);
      need(g, n, "geglu gate");
      need(u, n, "geglu up");
      need(o, n, "geglu out");
      if (geluOff < 0) {
        // ggml's f16 GELU table, the same one every backend reads (kernels/gelu.ts).
        const t = geluTable();
        geluOff = alloc0(t.byteLength, "the GELU table");
        a0.f32.set(t, geluOff / 4);
      }
      a0.k.geglu(g.off, u.off, o.off, n, geluOff);
      o.version++;
    },

    copyRows(
      src: Buf,
      srcRows: Int32Array,
      dst: Buf,
      dstRows: Int32Array,
      cols: number,
      scales?: Float32Array,
    ): void {
      const S = buf(src);
      const D = buf(dst);
      checkCopyRows(S, srcRows, D, dstRows, cols, scales);
      // Row copies over arena 0 from the host: memory-bound, no kernel needed.
      const f = a0.f32;
      for (let i = 0; i < srcRows.length; i++) {
        const from = S.off / 4 + srcRows[i] * cols;
        const to = D.off / 4 + dstRows[i] * cols;
        if (!scales) {
          f.copyWithin(to, from, from + cols);
          continue;
        }
        const w = Math.fround(scales[i]);
        for (let j = 0; j < cols; j++) f[to + j] = f[from + j] * w; // the store rounds to f32
      }
      D.version++;
    },

    sumRowGroups(src: Buf, dst: Buf, groups: number, k: number, cols: number): void {
      const S = buf(src);
      const D = buf(dst);
      need(S, groups * k * cols, "sumRowGroups src");
      need(D, groups * cols, "sumRowGroups dst");
      const f = a0.f32;
      const s0 = S.off / 4;
      const d0 = D.off / 4;
      for (let g = 0; g < groups; g++) {
        for (let j = 0; j < cols; j++) {
          let acc = f[s0 + g * k * cols + j];
          for (let r = 1; r < k; r++) acc = Math.fround(acc + f[s0 + (g * k + r) * cols + j]);
          f[d0 + g * cols + j] = acc;
        }
      }
      D.version++;
    },

    free(handle: Buf | KVCache | Weight): void {
      if (handle instanceof WBuf) {
        if (handle.freed) return;
        handle.freed = true;
        a0.release(handle.off, Math.max(1, handle.length) * 4);
      } else if (handle instanceof WKV) {
        if (handle.freed) return;
        handle.freed = true;
        a0.release(handle.kOff, handle.bytes);
        a0.release(handle.vOff, handle.bytes);
      } else if (handle instanceof WWeight) {
        if (handle.freed || views.has(handle)) return;
        handle.freed = true;
        arenas[handle.arena].release(handle.off, handle.bytes);
        if (handle.f32Off >= 0) a0.release(handle.f32Off, handle.rowLen * handle.nRows * 4);
      }
    },

    dispose(): void {
      if (disposed) return;
      disposed = true;
      pool.stop();
    },
  };
  return be;
}
