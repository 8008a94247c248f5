/**
 * What the matmul microbenchmarks of bench/tools share: two builds of the WASM kernels in one
 * process, each over its own memory, taking turns on the same weights and activations, one
 * thread, best of 7 (a kernel developer's tools, not `deno task bench`'s). Each tool says how to
 * make its weights and how one build lays them out and multiplies; {@linkcode compareBuilds}
 * does the rest and prints one line per shape and row count:
 *
 * ```sh
 * git archive <commit> | tar -x -C /tmp/base && deno run -A /tmp/base/kernels/wasm/build.ts
 * deno run -A bench/tools/<tool>.ts /tmp/base/kernels/wasm/build/kernels.wasm [ROWS,…] [MxN,…] [--stream]
 * ```
 *
 * @module
 */
import { buildWasm, WASM_URL } from "../../kernels/wasm/build.ts";

type Fn = (...a: number[]) => number;
/** A build's exports. */
export type Kernels = Record<string, Fn>;

/** One build of the kernels over its own memory, with a bump allocator. */
export class Side {
  readonly k: Kernels;
  readonly mem = new WebAssembly.Memory({ initial: 1024, maximum: 65536, shared: true });
  #top: number;
  constructor(module: WebAssembly.Module, readonly name: string) {
    const inst = new WebAssembly.Instance(module, {
      env: {
        memory: this.mem,
        abort: () => {
          throw new Error("abort");
        },
      },
    });
    this.k = inst.exports as unknown as Kernels;
    this.#top = (this.k.heapBase() + 4095) & ~4095;
  }
  /** `bytes` of this side's memory, 4 KiB aligned. */
  alloc(bytes: number): number {
    const at = this.#top;
    this.#top = (this.#top + bytes + 4095) & ~4095;
    const pages = Math.ceil(this.#top / 65536) - this.mem.buffer.byteLength / 65536;
    if (pages > 0) this.mem.grow(pages);
    return at;
  }
  /** Forget every allocation (the next shape starts from the bottom again). */
  reset(): void {
    this.#top = (this.k.heapBase() + 4095) & ~4095;
  }
  /** The memory as bytes (a new view: it may have grown). */
  get u8(): Uint8Array {
    return new Uint8Array(this.mem.buffer);
  }
  /**
   * `copies` copies of the weights `w` (rows of `rowBytes`), each laid out by `lay(at, tmp)`
   * with 4 rows of scratch at `tmp`; their addresses.
   */
  weightCopies(
    w: Uint8Array,
    copies: number,
    rowBytes: number,
    lay: (at: number, tmp: number) => void,
  ): number[] {
    const tmp = this.alloc(4 * rowBytes);
    return Array.from({ length: copies }, () => {
      const at = this.alloc(w.length);
      this.u8.set(w, at);
      lay(at, tmp);
      return at;
    });
  }
  /** `x` copied in; its address. */
  floats(x: Float32Array): number {
    const at = this.alloc(x.length * 4);
    new Float32Array(this.mem.buffer, at, x.length).set(x);
    return at;
  }
  /** The `T` rows of `n` values `x` quantized to Q8_K by this build: quants, scales, sums. */
  q8k(x: Float32Array, n: number, T: number): { qs: number; ad: number; bs: number } {
    const nb = n / 256;
    const xa = this.floats(x);
    const qs = this.alloc(T * n);
    const ad = this.alloc(T * nb * 4);
    const bs = this.alloc(T * nb * 64);
    this.k.quantizeQ8K(xa, n, T, qs, ad, bs);
    return { qs, ad, bs };
  }
  /**
   * Room for the `T` rows of `n` values `x` quantized to Q8_0 (`q81`: Q8_1) with the rows of the
   * 8-row tiles also in groups of 4 (quantizeQ8 with `biased`: the Q4_0 / Q4_1 / Q5 kernels' Q8G
   * layout after the sums; builds before a type's tiles make it but do not read it), and
   * `quantize()`, which this build's quantizeQ8 runs (timed with the matmul, as a model does).
   */
  q8Grouped(
    x: Float32Array,
    n: number,
    T: number,
    q81 = 0,
  ): { qs: number; ad: number; as: number; quantize: () => void } {
    const nb = n / 32;
    const xa = this.floats(x);
    const qs = this.alloc(T * n);
    const ad = this.alloc(T * nb * 4);
    const sBytes = (T * nb * 4 + 63) & ~63;
    const as = this.alloc(sBytes + (groupedRows(T) / 4) * nb * 160);
    const quantize = () => this.k.quantizeQ8(xa, n, T, qs, ad, as, q81, as + sBytes, 1);
    return { qs, ad, as, quantize };
  }
  /** Room for `count` floats of output, and a copy of them. */
  output(count: number): { at: number; read: () => Float32Array } {
    const at = this.alloc(count * 4);
    return { at, read: () => new Float32Array(this.mem.buffer, at, count).slice() };
  }
}

/** tiledRows / groupedRows of assembly/index.ts: the activation rows in groups of 4. */
export function groupedRows(T: number): number {
  const tiled = (T & 7) >= 6 ? (T + 7) & ~7 : T & ~7;
  return tiled >= 8 && T - tiled >= 3 ? tiled + 4 : tiled;
}

let seed = 12345;
/** A seeded uniform number in [0, 1): every run draws the same weights. */
export function rnd(): number {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return seed / 4294967296;
}

/**
 * Random quantized rows: `M` rows of `n` values in blocks of `blockValues` values stored in
 * `blockBytes` bytes, every byte random but the f16 scales at `scales` (offsets in a block),
 * which are small and positive (2^-9 .. 2^-8) so sums stay finite.
 */
export function randomBlocks(
  M: number,
  n: number,
  blockValues: number,
  blockBytes: number,
  scales: number[],
): Uint8Array {
  const w = new Uint8Array((M * n / blockValues) * blockBytes);
  for (let i = 0; i < w.length; i++) w[i] = (rnd() * 256) | 0;
  for (let b = 0; b < w.length; b += blockBytes) {
    for (const o of scales) {
      const h = 0x1800 + ((rnd() * 0x400) | 0);
      w[b + o] = h & 255;
      w[b + o + 1] = h >> 8;
    }
  }
  return w;
}

/** A matmul prepared on one side: `run(c)` multiplies weight copy `c`; `out()` its result. */
export interface Prepared {
  run(copy: number): void;
  out(): Float32Array;
}

/** One tool's kernels. */
export interface TileBench {
  /** The tool's file, for its usage line. */
  tool: string;
  /** Activation rows timed when the command line names none. */
  rows: number[];
  /** Shapes (rows × columns of the weights) timed when the command line names none. */
  shapes: [number, number][];
  /** Random weights of a shape. */
  weights(M: number, n: number): Uint8Array;
  /** Lay `copies` copies of the weights out on `side` and prepare its matmul over `x` (T rows). */
  prepare(
    side: Side,
    w: Uint8Array,
    M: number,
    n: number,
    x: Float32Array,
    T: number,
    copies: number,
  ): Prepared;
}

/**
 * Time the other build (the first argument) against this checkout's, taking turns. Arguments
 * after it: the rows (`1,2,4`), the shapes (`2048x5632,…`), `--stream` (8 copies of the weights,
 * used in turn, so they come from memory rather than cache).
 */
export async function compareBuilds(bench: TileBench, args = Deno.args): Promise<void> {
  const [other, ...rest] = args.filter((a) => a !== "--stream");
  if (!other) {
    console.error(
      `usage: deno run -A bench/tools/${bench.tool} OTHER_KERNELS.wasm [ROWS,…] [MxN,…] [--stream]`,
    );
    Deno.exit(2);
  }
  const rowCounts = rest[0] ? rest[0].split(",").map(Number) : bench.rows;
  const shapes = rest[1]
    ? rest[1].split(",").map((s) => s.split("x").map(Number) as [number, number])
    : bench.shapes;
  const copies = args.includes("--stream") ? 8 : 1;
  await buildWasm();
  const a = new Side(new WebAssembly.Module(await Deno.readFile(other)), "other");
  const b = new Side(new WebAssembly.Module(await Deno.readFile(WASM_URL)), "this");
  for (const [M, n] of shapes) {
    const w = bench.weights(M, n);
    for (const T of rowCounts) {
      a.reset();
      b.reset();
      const x = new Float32Array(T * n);
      for (let i = 0; i < x.length; i++) x[i] = (rnd() - 0.5) * 8;
      const pa = bench.prepare(a, w, M, n, x, T, copies);
      const pb = bench.prepare(b, w, M, n, x, T, copies);
      pa.run(0);
      pb.run(0);
      // The two may sum in different orders: how far apart they are.
      const oa = pa.out(), ob = pb.out();
      let scale = 0, diff = 0;
      for (let i = 0; i < oa.length; i++) {
        scale = Math.max(scale, Math.abs(oa[i]));
        diff = Math.max(diff, Math.abs(oa[i] - ob[i]));
      }
      // About 23 M multiply-adds a round: long enough to time, short enough for 128 rows.
      const reps = Math.max(copies * 2, Math.round((2048 * 5632 * 16) / (M * n * T)), 1);
      let ta = Infinity, tb = Infinity;
      for (let round = 0; round < 7; round++) {
        let t0 = performance.now();
        for (let i = 0; i < reps; i++) pa.run(i % copies);
        ta = Math.min(ta, (performance.now() - t0) / reps);
        t0 = performance.now();
        for (let i = 0; i < reps; i++) pb.run(i % copies);
        tb = Math.min(tb, (performance.now() - t0) / reps);
      }
      const gmac = (ms: number) => ((T * M * n) / ms / 1e6).toFixed(1);
      const gbs = (ms: number) => (w.length / ms / 1e6).toFixed(1);
      const one = (name: string, ms: number) =>
        `${name} ${ms.toFixed(3)} ms (${gmac(ms)} GMAC/s, ${gbs(ms)} GB/s)`;
      const same = diff === 0
        ? "identical"
        : `max |diff| ${(diff / scale).toExponential(1)} of max |out|`;
      console.log(
        `${M} x ${n}, ${T} rows${copies > 1 ? " (stream)" : ""}: ${one(a.name, ta)}, ` +
          `${one(b.name, tb)}, ${(ta / tb).toFixed(2)}x; ${same}`,
      );
    }
  }
}
