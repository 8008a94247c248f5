/**
 * The WASM backend: AssemblyScript SIMD kernels (assembly/index.ts) over shared memories, a
 * worker pool splitting matmul rows and attention heads across threads.
 *
 * The mechanisms live beside it: where things are placed (resources.ts), the layouts weights
 * take for the kernels (layout.ts), matmul jobs and their activation forms (matmul.ts),
 * attention jobs (attention.ts), the thread pool (pool.ts, jobs.ts, worker.ts). Weights in an arena other than 0 (a layer range
 * beyond wasm32's 4 GiB) are multiplied in their own arena, the input copied over and the
 * output copied back. Every op is bit-identical to the reference backend
 * (tests/kernels/wasm/identity_test.ts).
 *
 * The kernels are compiled by `deno task build:wasm` (kernels/wasm/build.ts), not here: creating
 * a backend only loads build/kernels.wasm and says how to build it when it is missing or stale.
 */
import type {
  AttentionParams,
  AttentionSeq,
  Backend,
  Buf,
  KVCache,
  KVType,
  RopeParams,
  TopCandidates,
  Weight,
  WeightShape,
  WeightSpec,
  WeightWriter,
} from "../backend.ts";
import { checkChunk, checkCopyRows, checkCounts, checkRowRange, uploadWhole } from "../checks.ts";
import { rowCandidates } from "../candidates.ts";
import { geluTable } from "../gelu.ts";
import { ropeAngles } from "../rope_angles.ts";
import { dequantizeRow } from "../quant/ops.ts";
import { typeInfo, typeName, weightLayout } from "../quant/types.ts";
import type { Arena } from "./arena.ts";
import { readKernelBinary } from "./build.ts";
import { A, ARENA, ARGS, MAX_THREADS, OP, OP_PROBE, SLEEPS } from "./jobs.ts";
import { fileRow, layOut } from "./layout.ts";
import { Attentions } from "./attention.ts";
import { KVCaches } from "./kv_cache.ts";
import { dotReadsUnsigned, Matmuls } from "./matmul.ts";
import { Pool } from "./pool.ts";
import { Memories, need, Scratch, WBuf, wbuf, WKV, WWeight, wweight } from "./resources.ts";

/** The WASM backend: a Backend plus thread control and a memory-bandwidth probe (benchmarks). */
export interface WasmBackend extends Backend {
  /** Whether Q8_0 matmuls run the biased kernel (WasmBackendOptions.biasedQ8). */
  readonly biasedQ8: boolean;
  /** Threads the pool was started with (the caller's included). */
  readonly threads: number;
  /** Threads that ops use from now on: 1..threads (the bench measures 1 vs all on one load). */
  setThreads(n: number): void;
  /**
   * GB/s of streaming reads of `bytes` of wasm memory by the active threads (best of `reps`):
   * the roofline decode's weight streaming can approach. The probe's pages stay committed.
   */
  probeReadBandwidth(bytes: number, reps?: number): number;
  /**
   * µs each thread spins for the next job (workers) or the end of one (the caller) before it
   * sleeps in `Atomics.wait` (default 1000; see spinWhile in jobs.ts).
   */
  spinMicros: number;
  /** Times a worker has gone to sleep between jobs (a diagnostic counter). */
  readonly workerSleeps: number;
  /** Always present here: the pool's workers stop spinning. */
  park: NonNullable<Backend["park"]>;
  /** Always present here: candidates are read in place from the memory. */
  topCandidates: NonNullable<Backend["topCandidates"]>;
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
  /** The compiled kernels (default: build/kernels.wasm, see build.ts). */
  binary?: Uint8Array<ArrayBuffer>;
  /** Initial {@link WasmBackend.spinMicros}. */
  spinMicros?: number;
  /**
   * Q8_0 matmuls by the biased kernel (weights stored + 128 against the signed activation), two
   * relaxed dots per block where the activation's P/N planes take four (default: where this
   * engine's relaxed dot allows it, see dotReadsUnsigned; true where it does not is refused).
   */
  biasedQ8?: boolean;
}

const GiB = 1024 * 1024 * 1024;

/**
 * Start the WASM backend over the compiled kernels (build/kernels.wasm unless `opts.binary`).
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
  const bytes = opts.binary ?? await readKernelBinary();
  const module = await WebAssembly.compile(bytes);
  const pool = new Pool();
  if (opts.spinMicros !== undefined) pool.spinMicros = opts.spinMicros;
  const mem = new Memories(module, cap, pool);
  const unsigned = dotReadsUnsigned(mem.a0.k);
  if (opts.biasedQ8 && !unsigned) {
    throw new Error("wasm backend: this engine's relaxed dot cannot take the biased Q8_0 kernel");
  }
  await pool.start(threads - 1, bytes, [mem.a0.memory]);
  return new WasmBackendImpl(mem, pool, threads, opts.biasedQ8 ?? unsigned);
}

/** The Backend over one set of memories and one pool. */
class WasmBackendImpl implements WasmBackend {
  readonly name = "wasm";
  readonly #mem: Memories;
  readonly #kv: KVCaches;
  readonly #pool: Pool;
  readonly #ctrl: Int32Array;
  readonly #a0: Arena;
  readonly #mm: Matmuls;
  readonly #attn: Attentions;
  /** Rope's (cos, sin) table for the rows of one call. */
  readonly #misc: Scratch;
  /** Row views (weightRows): they own no memory of their own. */
  readonly #views = new WeakSet<WWeight>();
  /** Offset of the GELU table in arena 0 (allocated on the first geglu). */
  #geluOff = -1;
  #active: number;
  #disposed = false;

  constructor(
    mem: Memories,
    pool: Pool,
    readonly threads: number,
    readonly biasedQ8: boolean,
  ) {
    this.#mem = mem;
    this.#pool = pool;
    this.#ctrl = pool.ctrl;
    this.#a0 = mem.a0;
    this.#active = threads;
    this.#misc = new Scratch(mem.a0, "rope");
    this.#mm = new Matmuls(mem, pool, threads, () => this.#active, biasedQ8);
    this.#attn = new Attentions(mem, pool, threads, () => this.#active);
    this.#kv = new KVCaches(mem);
  }

  async prefault(bytes: number): Promise<void> {
    // Weights go to arena 0 while it keeps its activation reserve free (Memories.placeWeight),
    // so that is where a stage's next load lands first.
    const room = Math.max(0, this.#a0.available - this.#mem.reserve0);
    await this.#a0.prefault(Math.min(bytes, room));
  }

  setThreads(n: number): void {
    if (!Number.isInteger(n) || n < 1 || n > this.threads) {
      throw new Error(`wasm backend: setThreads(${n}) outside 1..${this.threads}`);
    }
    this.#active = n;
  }

  get spinMicros(): number {
    return this.#pool.spinMicros;
  }
  set spinMicros(us: number) {
    this.#pool.spinMicros = us;
  }

  park(): void {
    this.#pool.park();
  }

  get workerSleeps(): number {
    return Atomics.load(this.#ctrl, SLEEPS);
  }

  probeReadBandwidth(bytes: number, reps = 3): number {
    const chunk = 1 << 20;
    const n = Math.max(1, Math.floor(bytes / chunk));
    const off = this.#mem.alloc0(n * chunk, "the bandwidth probe");
    const a0 = this.#a0;
    const ctrl = this.#ctrl;
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
        if (this.#active > 1) this.#pool.run(this.#mem.kernels);
        else this.#pool.runHere(this.#mem.kernels);
        best = Math.max(best, (n * chunk) / ((performance.now() - t0) * 1e6));
      }
      return best;
    } finally {
      a0.release(off, n * chunk);
    }
  }

  get device(): string {
    const t = this.threads;
    const m = this.#mem.arenas.length;
    return `WASM SIMD (AssemblyScript), ${t} thread${t > 1 ? "s" : ""}, ` +
      `${m} memor${m > 1 ? "ies" : "y"}`;
  }

  upload(spec: WeightSpec): Weight {
    return uploadWhole(this.beginUpload(spec), spec);
  }

  beginUpload(spec: WeightShape): WeightWriter {
    const mem = this.#mem;
    const biasedQ8 = this.biasedQ8;
    const info = typeInfo(spec.type);
    if (!info || !info.weight) {
      throw new Error(`weight ${spec.name}: tensor type ${typeName(spec.type)} is not supported`);
    }
    const { rowLen, nRows, stride, bytes } = weightLayout(spec.type, spec.shape);
    const [arena, off] = mem.placeWeight(bytes);
    let state: "open" | "done" | "aborted" = "open";
    const open = () => {
      if (state !== "open") throw new Error(`weight ${spec.name}: upload already ${state}`);
    };
    return {
      bytes,
      write(chunk: Uint8Array, offset: number): void {
        open();
        checkChunk(spec.name, bytes, offset, chunk.length);
        mem.arenas[arena].u8.set(chunk, off + offset);
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
        layOut(mem, w, biasedQ8);
        state = "done";
        return w;
      },
      abort(): void {
        if (state !== "open") return;
        state = "aborted";
        mem.arenas[arena].release(off, bytes);
      },
    };
  }

  buffer(length: number): Buf {
    const off = this.#mem.alloc0(Math.max(1, length) * 4, `a buffer of ${length} floats`);
    this.#a0.u8.fill(0, off, off + length * 4);
    return new WBuf(length, off);
  }

  write(dst: Buf, src: Float32Array, offset = 0): void {
    const d = wbuf(dst);
    need(d, offset + src.length, "write", offset);
    this.#a0.f32.set(src, d.off / 4 + offset);
    d.version++;
  }

  read(src: Buf, offset = 0, length?: number): Promise<Float32Array> {
    const s = wbuf(src);
    const n = length ?? s.length - offset;
    need(s, offset + n, "read", offset);
    const o = s.off / 4 + offset;
    return Promise.resolve(this.#a0.f32.slice(o, o + n));
  }

  topCandidates(
    src: Buf,
    rows: number,
    n: number,
    k: number,
    exclude: readonly Int32Array[],
    sums = true,
  ): Promise<TopCandidates[]> {
    const s = wbuf(src);
    need(s, rows * n, "topCandidates");
    // Read in place: a tail step no longer copies a vocabulary of floats out of the memory
    // (0.5 MB per token at 128K tokens, garbage until V8 next collects) to keep a few of them.
    const f32 = this.#a0.f32;
    const out: TopCandidates[] = [];
    for (let r = 0; r < rows; r++) {
      const o = s.off / 4 + r * n;
      out.push(rowCandidates(f32.subarray(o, o + n), k, exclude[r] ?? new Int32Array(), sums));
    }
    return Promise.resolve(out);
  }

  kvCache(nLayers: number, nCtx: number, kvDim: number, type: KVType, headDim?: number): KVCache {
    return this.#kv.create(nLayers, nCtx, kvDim, type, headDim);
  }

  embed(table: Weight, ids: Int32Array, out: Buf): void {
    const w = wweight(table);
    const o = wbuf(out);
    need(o, ids.length * w.rowLen, "embed");
    const src = this.#mem.arenas[w.arena].u8;
    const dst = this.#a0.f32;
    for (let t = 0; t < ids.length; t++) {
      const id = ids[t];
      if (id < 0 || id >= w.nRows) {
        throw new Error(`embed: token id ${id} outside ${w.name}'s ${w.nRows} rows`);
      }
      const [rowSrc, rowOff] = fileRow(src, w, id);
      dequantizeRow(w.type, rowSrc, rowOff, dst, o.off / 4 + t * w.rowLen, w.rowLen);
    }
    o.version++;
  }

  rmsNorm(x: Buf, wt: Weight, out: Buf, rows: number, eps: number): void {
    const w = wweight(wt);
    const X = wbuf(x);
    const O = wbuf(out);
    const n = w.rowLen;
    need(X, rows * n, "rmsNorm x");
    need(O, rows * n, "rmsNorm out");
    this.#a0.k.rmsNorm(X.off, this.#mem.floats(w), O.off, rows, n, eps);
    O.version++;
  }

  /** out = x · Wᵀ for `rows` rows of x. */
  matmul(w: Weight, x: Buf, out: Buf, rows: number): void {
    this.#mm.matmul(w, x, out, rows);
  }

  /** matmul for each (weight, output) pair over one input, sharing jobs where it can. */
  matmulMany(ws: Weight[], x: Buf, outs: Buf[], rows: number): void {
    this.#mm.matmulMany(ws, x, outs, rows);
  }

  addBias(x: Buf, bias: Weight, rows: number): void {
    const w = wweight(bias);
    const X = wbuf(x);
    need(X, rows * w.rowLen, "addBias");
    this.#a0.k.addRows(X.off, this.#mem.floats(w), rows, w.rowLen);
    X.version++;
  }

  rope(x: Buf, positions: Int32Array, p: RopeParams): void {
    const X = wbuf(x);
    const { nHeads, headDim, ropeDim } = p;
    if (ropeDim > headDim || ropeDim % 2 !== 0) {
      throw new Error(`rope: ropeDim ${ropeDim} must be even and ≤ headDim ${headDim}`);
    }
    const rows = positions.length;
    need(X, rows * nHeads * headDim, "rope");
    const off = this.#misc.ensure(rows * ropeDim * 4);
    ropeAngles(positions, p, this.#a0.f32, off / 4);
    this.#a0.k.rope(X.off, off, rows, nHeads, headDim, ropeDim, p.neox ? 1 : 0);
    X.version++;
  }

  storeKV(
    cache: KVCache,
    layer: number,
    k: Buf,
    v: Buf,
    pos0: number,
    rows: number,
    rowOffset = 0,
  ): void {
    this.#kv.store(cache, layer, k, v, pos0, rows, rowOffset);
  }

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
    this.#attn.one(wbuf(q), layer, wbuf(out), { cache, pos0, rows, rowOffset }, p);
  }

  attentionMany(
    q: Buf,
    layer: number,
    out: Buf,
    seqs: readonly AttentionSeq[],
    p: AttentionParams,
  ): void {
    this.#attn.many(wbuf(q), layer, wbuf(out), seqs, p);
  }

  swiglu(gate: Buf, up: Buf, out: Buf, n: number): void {
    const g = wbuf(gate);
    const u = wbuf(up);
    const o = wbuf(out);
    need(g, n, "swiglu gate");
    need(u, n, "swiglu up");
    need(o, n, "swiglu out");
    this.#a0.k.swiglu(g.off, u.off, o.off, n);
    o.version++;
  }

  add(x: Buf, y: Buf, n: number): void {
    const a = wbuf(x);
    const b = wbuf(y);
    need(a, n, "add a");
    need(b, n, "add b");
    this.#a0.k.add(a.off, b.off, n);
    a.version++;
  }

  weightRows(wt: Weight, first: number, count: number): Weight {
    const w = wweight(wt);
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
    v.quads = w.quads;
    v.q8Flipped = w.q8Flipped;
    v.kQuads = w.kQuads;
    v.parent = w.parent ?? w;
    this.#views.add(v);
    return v;
  }

  scale(x: Buf, s: number, n: number): void {
    const X = wbuf(x);
    need(X, n, "scale");
    this.#a0.k.scaleF32(X.off, n, s);
    X.version++;
  }

  geglu(gate: Buf, up: Buf, out: Buf, n: number): void {
    const g = wbuf(gate);
    const u = wbuf(up);
    const o = wbuf(out);
    need(g, n, "geglu gate");
    need(u, n, "geglu up");
    need(o, n, "geglu out");
    if (this.#geluOff < 0) {
      // ggml's f16 GELU table, the same one every backend reads (kernels/gelu.ts).
      const t = geluTable();
      this.#geluOff = this.#mem.alloc0(t.byteLength, "the GELU table");
      this.#a0.f32.set(t, this.#geluOff / 4);
    }
    this.#a0.k.geglu(g.off, u.off, o.off, n, this.#geluOff);
    o.version++;
  }

  copyRows(
    src: Buf,
    srcRows: Int32Array,
    dst: Buf,
    dstRows: Int32Array,
    cols: number,
    scales?: Float32Array,
  ): void {
    const S = wbuf(src);
    const D = wbuf(dst);
    checkCopyRows(S, srcRows, D, dstRows, cols, scales);
    // Row copies over arena 0 from the host: memory-bound, no kernel needed.
    const f = this.#a0.f32;
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
  }

  sumRowGroups(src: Buf, dst: Buf, groups: number, k: number, cols: number): void {
    const S = wbuf(src);
    const D = wbuf(dst);
    checkCounts("sumRowGroups", { groups, k, cols });
    need(S, groups * k * cols, "sumRowGroups src");
    need(D, groups * cols, "sumRowGroups dst");
    const f = this.#a0.f32;
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
  }

  free(handle: Buf | KVCache | Weight): void {
    if (handle instanceof WBuf) {
      if (handle.freed) return;
      handle.freed = true;
      this.#a0.release(handle.off, Math.max(1, handle.length) * 4);
    } else if (handle instanceof WKV) {
      this.#kv.free(handle);
    } else if (handle instanceof WWeight) {
      if (handle.freed || this.#views.has(handle)) return;
      handle.freed = true;
      this.#mem.arenas[handle.arena].release(handle.off, handle.bytes);
      if (handle.f32Off >= 0) this.#a0.release(handle.f32Off, handle.rowLen * handle.nRows * 4);
    }
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#pool.stop();
  }
}
