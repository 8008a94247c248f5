/**
 * Q4_0 matmul microbenchmark (a kernel developer's tool, not one of `deno task bench`'s): two
 * builds of the WASM kernels in one process, taking turns, one thread, best of 7, on
 * TinyLlama-1.1B's shapes (2048 × 2048 q/o, 5632 × 2048 gate/up, 2048 × 5632 down) at 1 to 5, 8,
 * 16 and 64 activation rows (or those of a second argument, e.g. `1,2,4`). Each side gets its
 * own memory, lays the same weights out with its own repackQuads and quantizes the same
 * activation with its own quantizeQ8 (timed with the matmul). With `--stream` (third argument)
 * each side holds 8 copies of the matrix (over 50 MB at 5632 × 2048, more than the L3) and runs
 * them in turn, so that the weights come from memory as in a model's decode; times are per
 * matrix, with the weight bytes read per second. The other build is usually an earlier commit's:
 *
 * ```sh
 * git archive <commit> | tar -x -C /tmp/base && deno run -A /tmp/base/kernels/wasm/build.ts
 * deno run -A bench/tools/q40_tile.ts /tmp/base/kernels/wasm/build/kernels.wasm 1,2,4 --stream
 * ```
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
}

let seed = 12345;
function rnd(): number {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return seed / 4294967296;
}

/** Random Q4_0 rows with small positive f16 scales. */
function weights(M: number, n: number): Uint8Array {
  const w = new Uint8Array((M * n / 32) * 18);
  for (let i = 0; i < w.length; i++) w[i] = (rnd() * 256) | 0;
  for (let b = 0; b < w.length; b += 18) {
    const h = 0x1800 + ((rnd() * 0x400) | 0); // 2^-9 .. 2^-8
    w[b] = h & 255;
    w[b + 1] = h >> 8;
  }
  return w;
}

/** tiledRows / groupedRows of assembly/index.ts (the activation rows in groups of 4). */
function groupedRows(T: number): number {
  const tiled = (T & 7) >= 6 ? (T + 7) & ~7 : T & ~7;
  return tiled >= 8 && T - tiled >= 3 ? tiled + 4 : tiled;
}

/** A prepared matmul of one side: run(c) quantizes the activation and multiplies copy c. */
function prepare(
  s: Side,
  wData: Uint8Array,
  M: number,
  n: number,
  x: Float32Array,
  T: number,
  copies: number,
) {
  const { k } = s;
  const nb = n / 32;
  const rowBytes = nb * 18;
  const tmp = s.alloc(4 * rowBytes);
  const ws: number[] = [];
  for (let c = 0; c < copies; c++) {
    const w = s.alloc(wData.length);
    s.u8.set(wData, w);
    k.repackQuads(w, rowBytes, 18, M / 4, tmp, 0);
    ws.push(w);
  }
  const xa = s.alloc(T * n * 4);
  new Float32Array(s.mem.buffer, xa, T * n).set(x);
  const qs = s.alloc(T * n);
  const ad = s.alloc(T * nb * 4);
  const sBytes = (T * nb * 4 + 63) & ~63;
  const as = s.alloc(sBytes + (groupedRows(T) / 4) * nb * 160);
  const out = s.alloc(T * M * 4);
  const run = (c: number) => {
    k.quantizeQ8(xa, n, T, qs, ad, as, 0, as + sBytes, 1);
    k.mmQ4_0(ws[c], rowBytes, nb, qs, ad, as, T, out, M, 0, M);
  };
  return { run, out: () => new Float32Array(s.mem.buffer, out, T * M).slice() };
}

const other = Deno.args[0];
if (!other) {
  console.error(
    "usage: deno run -A bench/tools/q40_tile.ts OTHER_KERNELS.wasm [ROWS,ROWS,…] [--stream]",
  );
  Deno.exit(2);
}
const rowCounts = Deno.args[1] && Deno.args[1] !== "--stream"
  ? Deno.args[1].split(",").map(Number)
  : [1, 2, 3, 4, 5, 8, 16, 64];
const copies = Deno.args.includes("--stream") ? 8 : 1;
await buildWasm();
const a = new Side(new WebAssembly.Module(await Deno.readFile(other)), "other");
const b = new Side(new WebAssembly.Module(await Deno.readFile(WASM_URL)), "this");
for (const [M, n] of [[2048, 2048], [5632, 2048], [2048, 5632]]) {
  const wData = weights(M, n);
  for (const T of rowCounts) {
    a.reset();
    b.reset();
    const x = new Float32Array(T * n);
    for (let i = 0; i < x.length; i++) x[i] = (rnd() - 0.5) * 8;
    const pa = prepare(a, wData, M, n, x, T, copies);
    const pb = prepare(b, wData, M, n, x, T, copies);
    pa.run(0);
    pb.run(0);
    const oa = pa.out(), ob = pb.out();
    let diff = 0;
    for (let i = 0; i < oa.length; i++) diff = Math.max(diff, Math.abs(oa[i] - ob[i]));
    const reps = copies > 1 ? copies * 2 : Math.max(1, Math.round(64 / T));
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
    const gbs = (ms: number) => (wData.length / ms / 1e6).toFixed(1);
    const one = (name: string, ms: number) =>
      `${name} ${ms.toFixed(3)} ms (${gmac(ms)} GMAC/s, ${gbs(ms)} GB/s)`;
    const same = diff === 0 ? "identical" : `max |diff| ${diff}`;
    const shape = `${M} x ${n}, ${T} rows${copies > 1 ? " (stream)" : ""}`;
    console.log(
      `${shape}: ${one(a.name, ta)}, ${one(b.name, tb)}, ${(ta / tb).toFixed(2)}x; ${same}`,
    );
  }
}
