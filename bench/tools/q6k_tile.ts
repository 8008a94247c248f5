/**
 * Q6_K matmul microbenchmark (a kernel developer's tool, not one of `deno task bench`'s): two
 * builds of the WASM kernels in one process, taking turns, one thread, best of 7, on
 * TinyLlama-1.1B's Q6_K shapes (ffn_down: 2048 rows of 5632 columns; output: 32000 rows of 2048)
 * at 1 to 5, 8, 16, 64 and 128 activation rows (or those of a second argument, e.g. `2,3,4`;
 * a third, e.g. `256x2048`, sets the shapes).
 * Each side gets its own memory, lays the same weights out with its own repackQ6K and converts
 * the same activation with its own permuteQ6KAct (timed with the matmul). The other build is
 * usually an earlier commit's:
 *
 * ```sh
 * git archive <commit> | tar -x -C /tmp/base && deno run -A /tmp/base/kernels/wasm/build.ts
 * deno run -A bench/tools/q6k_tile.ts /tmp/base/kernels/wasm/build/kernels.wasm
 * ```
 * Both layouts this engine has had are known: the class-pair layout (repackQ6K(w, nBlocks),
 * until 2026-12-06) and the quad groups (repackQ6K(w, rowBytes, nGroups, tmp)).
 *
 * @module
 */
import { buildWasm, WASM_URL } from "../../kernels/wasm/build.ts";

type Fn = (...a: number[]) => number;
type K = Record<string, Fn>;

/** One build of the kernels over its own memory, with a bump allocator. */
class Side {
  readonly k: K;
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
    this.k = inst.exports as unknown as K;
    this.#top = (this.k.heapBase() + 4095) & ~4095;
  }
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
  get u8(): Uint8Array {
    return new Uint8Array(this.mem.buffer);
  }
  /** Whether this build has the quad-group layout (repackQ6K with 4 parameters). */
  get quads(): boolean {
    return this.k.repackQ6K.length === 4;
  }
}

let seed = 12345;
function rnd(): number {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return seed / 4294967296;
}

/** Random Q6_K rows (any quants and i8 scales) with a small positive f16 d. */
function weights(M: number, n: number): Uint8Array {
  const w = new Uint8Array((M * n / 256) * 210);
  for (let i = 0; i < w.length; i++) w[i] = (rnd() * 256) | 0;
  for (let b = 0; b < w.length; b += 210) {
    const h = 0x1800 + ((rnd() * 0x400) | 0); // 2^-9 .. 2^-8
    w[b + 208] = h & 255;
    w[b + 209] = h >> 8;
  }
  return w;
}

/** A prepared matmul of one side: run() converts the activation and multiplies. */
function prepare(s: Side, wData: Uint8Array, M: number, n: number, x: Float32Array, T: number) {
  const { k } = s;
  const nb = n / 256;
  const rowBytes = nb * 210;
  const w = s.alloc(wData.length);
  s.u8.set(wData, w);
  if (s.quads) {
    const tmp = s.alloc(4 * rowBytes);
    k.repackQ6K(w, rowBytes, M / 4, tmp);
  } else k.repackQ6K(w, M * nb);
  const xa = s.alloc(T * n * 4);
  new Float32Array(s.mem.buffer, xa, T * n).set(x);
  const qs = s.alloc(T * n);
  const ad = s.alloc(T * nb * 4);
  const bs = s.alloc(T * nb * 64);
  k.quantizeQ8K(xa, n, T, qs, ad, bs);
  const form = s.alloc(2 * T * n);
  const out = s.alloc(T * M * 4);
  const scr = s.alloc(3 * n + 4096);
  const run = s.quads
    ? () => {
      k.permuteQ6KAct(bs, form, n, T);
      k.mmK(14, w, rowBytes, nb, qs, ad, bs, T, out, M, 0, M, scr, form);
    }
    : () => {
      k.permuteQ6KAct(qs, form, form + T * n, T * n);
      k.mmK(14, w, rowBytes, nb, qs, ad, bs, T, out, M, 0, M, scr, form);
    };
  return { run, out: () => new Float32Array(s.mem.buffer, out, T * M).slice() };
}

const other = Deno.args[0];
if (!other) {
  console.error("usage: deno run -A bench/tools/q6k_tile.ts OTHER_KERNELS.wasm [ROWS,ROWS,…]");
  Deno.exit(2);
}
const rowCounts = Deno.args[1]
  ? Deno.args[1].split(",").map(Number)
  : [1, 2, 3, 4, 5, 8, 16, 64, 128];
await buildWasm();
const a = new Side(new WebAssembly.Module(await Deno.readFile(other)), "other");
const b = new Side(new WebAssembly.Module(await Deno.readFile(WASM_URL)), "this");
// a third argument, e.g. `256x2048`, sets the shapes (rows x columns)
const shapes = Deno.args[2]
  ? Deno.args[2].split(",").map((s) => s.split("x").map(Number))
  : [[2048, 5632], [32000, 2048]];
for (const [M, n] of shapes) {
  const wData = weights(M, n);
  for (const T of rowCounts) {
    a.reset();
    b.reset();
    const x = new Float32Array(T * n);
    for (let i = 0; i < x.length; i++) x[i] = (rnd() - 0.5) * 8;
    const pa = prepare(a, wData, M, n, x, T);
    const pb = prepare(b, wData, M, n, x, T);
    pa.run();
    pb.run();
    // the two may sum in different orders: report how far apart they are
    const oa = pa.out(), ob = pb.out();
    let scale = 0, diff = 0;
    for (let i = 0; i < oa.length; i++) {
      scale = Math.max(scale, Math.abs(oa[i]));
      diff = Math.max(diff, Math.abs(oa[i] - ob[i]));
    }
    const reps = Math.max(1, Math.round((128 * 2048 * 5632) / (8 * M * n * T)));
    let ta = Infinity, tb = Infinity;
    for (let round = 0; round < 7; round++) {
      let t0 = performance.now();
      for (let i = 0; i < reps; i++) pa.run();
      ta = Math.min(ta, (performance.now() - t0) / reps);
      t0 = performance.now();
      for (let i = 0; i < reps; i++) pb.run();
      tb = Math.min(tb, (performance.now() - t0) / reps);
    }
    const gmac = (ms: number) => ((T * M * n) / ms / 1e6).toFixed(1);
    console.log(
      `${M} x ${n}, ${T} rows: ${a.name} ${ta.toFixed(3)} ms (${gmac(ta)} GMAC/s), ` +
        `${b.name} ${tb.toFixed(3)} ms (${gmac(tb)} GMAC/s), ${(ta / tb).toFixed(2)}x; ` +
        `max |diff| ${(diff / scale).toExponential(1)} of max |out|`,
    );
  }
}
