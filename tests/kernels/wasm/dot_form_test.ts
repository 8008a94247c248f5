/**
 * The nibble kernels (Q4_0, Q4_K, Q5_K's class quads, Q4_1, Q5_0, Q5_1) and Q8_0 (mmQ8_0, the P/N planes' kernel) have two forms of
 * their integer dots: i32 relaxed dots where the engine runs them as one instruction, and where it
 * emulates them (pmaddubsw + pmaddwd + paddd: x86 without AVX-VNNI) i16 sums widened once (Q4_0,
 * Q4_K, Q4_1, Q5_0, Q5_1) or both operands sign-extended to i16 and multiplied by the exact i16 dot (Q8_0). Each instance probes its own engine
 * (dotForm), so the identity tests against the reference cover only this machine's form; here
 * one instance runs both forms (setDotForm) on the same weights and activations, at the row
 * counts of every path (decode, 2-5 sessions, padded and full 8-row tiles, 32-row blocks), and
 * they must agree bit for bit.
 */
import { buildWasm, WASM_URL } from "../../../kernels/wasm/build.ts";
import { assertEquals } from "../../support/assert.ts";

type K = Record<string, (...a: number[]) => number>;

/** One instance over its own memory, with a bump allocator. */
function instance(module: WebAssembly.Module) {
  const mem = new WebAssembly.Memory({ initial: 512, maximum: 65536, shared: true });
  const k = new WebAssembly.Instance(module, {
    env: {
      memory: mem,
      abort: () => {
        throw new Error("abort");
      },
    },
  }).exports as unknown as K;
  let top = (k.heapBase() + 4095) & ~4095;
  const alloc = (bytes: number) => {
    const at = top;
    top = (top + bytes + 4095) & ~4095;
    const pages = Math.ceil(top / 65536) - mem.buffer.byteLength / 65536;
    if (pages > 0) mem.grow(pages);
    return at;
  };
  return { k, mem, alloc, u8: () => new Uint8Array(mem.buffer) };
}

let seed = 4242;
function rnd(): number {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return seed / 4294967296;
}

/** Random blocks of bb bytes with small positive f16 values at the given offsets. */
function randomBlocks(bytes: number, bb: number, halves: number[]): Uint8Array {
  const w = new Uint8Array(bytes);
  for (let i = 0; i < w.length; i++) w[i] = (rnd() * 256) | 0;
  for (let b = 0; b < w.length; b += bb) {
    for (const o of halves) {
      const h = 0x1800 + ((rnd() * 0x400) | 0);
      w[b + o] = h & 255;
      w[b + o + 1] = h >> 8;
    }
  }
  return w;
}

const N = 2048;
const M = 44; // 11 groups of 4: chunks of odd group counts in the tiles
const ROWS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 15, 16, 35, 64];

/** tiledRows / groupedRows (Q4_0) and q4kRows (Q4_K) of assembly/index.ts. */
function groupedRows(T: number): number {
  const tiled = (T & 7) >= 6 ? (T + 7) & ~7 : T & ~7;
  return tiled >= 8 && T - tiled >= 3 ? tiled + 4 : tiled;
}
function q4kRows(T: number): number {
  const tiled = (T & 7) >= 5 ? (T + 7) & ~7 : T & ~7;
  return T - tiled >= 3 ? tiled + 4 : tiled;
}

Deno.test("wasm Q4_0, Q4_K, Q5_K, Q4_1, Q5_0, Q5_1 and Q8_0: both dot forms (i32 relaxed dots, i16 sums) give the same bits", async () => {
  await buildWasm();
  const module = new WebAssembly.Module(await Deno.readFile(WASM_URL));
  const q40 = randomBlocks((M * N / 32) * 18, 18, [0]);
  const q4k = randomBlocks((M * N / 256) * 144, 144, [0, 2]);
  const q80 = randomBlocks((M * N / 32) * 34, 34, [0]);
  const q5k = randomBlocks((M * N / 256) * 176, 176, [0, 2]);
  const q41 = randomBlocks((M * N / 32) * 20, 20, [0, 2]);
  const q50 = randomBlocks((M * N / 32) * 22, 22, [0]);
  const q51 = randomBlocks((M * N / 32) * 24, 24, [0, 2]);
  for (const T of ROWS) {
    const x = new Float32Array(T * N);
    for (let i = 0; i < x.length; i++) x[i] = (rnd() - 0.5) * 8;
    const outs: Float32Array[][] = [];
    for (const form of [1, 2]) {
      const { k, mem, alloc, u8 } = instance(module);
      k.setDotForm(form);
      const xa = alloc(T * N * 4);
      new Float32Array(mem.buffer, xa, T * N).set(x);
      const res: Float32Array[] = [];
      {
        // Q4_0 (mmQ4_0 over the quad layout, the rows of its tiles in groups of 4)
        const nb = N / 32, rowBytes = nb * 18;
        const w = alloc(q40.length);
        u8().set(q40, w);
        k.repackQuads(w, rowBytes, 18, M >> 2, alloc(4 * rowBytes), 0);
        const qs = alloc(T * N), ad = alloc(T * nb * 4);
        const sBytes = (T * nb * 4 + 63) & ~63;
        const as = alloc(sBytes + (groupedRows(T) / 4) * nb * 160);
        const out = alloc(T * M * 4);
        k.quantizeQ8(xa, N, T, qs, ad, as, 0, as + sBytes, 1);
        k.mmQ4_0(w, rowBytes, nb, qs, ad, as, T, out, M, 0, M);
        res.push(new Float32Array(mem.buffer, out, T * M).slice());
      }
      {
        // Q4_K (mmK kind 12 over the quad groups)
        const nb = N / 256, rowBytes = nb * 144;
        const w = alloc(q4k.length);
        u8().set(q4k, w);
        k.repackQ4K(w, rowBytes, M >> 2, alloc(4 * rowBytes));
        const qs = alloc(T * N), ad = alloc(T * nb * 4), bs = alloc(T * nb * 64);
        k.quantizeQ8K(xa, N, T, qs, ad, bs);
        const form16 = alloc((q4kRows(T) / 4) * nb * 1104 + T * nb * 16);
        const out = alloc(T * M * 4);
        const scr = alloc(3 * N + 4096);
        k.permuteQ4KAct(qs, ad, bs, form16, N, T);
        k.mmK(12, w, rowBytes, nb, qs, ad, bs, T, out, M, 0, M, scr, form16);
        res.push(new Float32Array(mem.buffer, out, T * M).slice());
      }
      {
        // Q5_K (mmK kind 13 over the class quads); rows 0..M - 2: a last partial group of 3
        // rows, read as the file has them
        const nb = N / 256, rowBytes = nb * 176;
        const w = alloc(q5k.length);
        u8().set(q5k, w);
        k.repackQ5K(w, rowBytes, (M - 1) >> 2, alloc(4 * rowBytes));
        const qs = alloc(T * N), ad = alloc(T * nb * 4), bs = alloc(T * nb * 64);
        k.quantizeQ8K(xa, N, T, qs, ad, bs);
        const form = alloc(T * N + T * nb * 16);
        k.permuteQ5KAct(qs, bs, form, N, T);
        const out = alloc(T * M * 4);
        const scr = alloc(5 * N + 4096);
        k.mmK(13, w, rowBytes, nb, qs, ad, bs, T, out, M, 0, M - 1, scr, form);
        res.push(new Float32Array(mem.buffer, out, T * M).slice());
      }
      for (
        const [q5, bb, q81, mm] of [
          [q41, 20, 1, "mmQ4_1"],
          [q50, 22, 0, "mmQ5_0"],
          [q51, 24, 1, "mmQ5_1"],
        ] as const
      ) {
        // Q4_1, Q5_0 and Q5_1 (mmQ4_1 / mmQ5_0 / mmQ5_1 over their quad layout, the rows of their
        // tiles in groups of 4); rows 0..M - 2: a last partial group of 3 rows, read as the file
        // has them
        const nb = N / 32, rowBytes = nb * bb;
        const w = alloc(q5.length);
        u8().set(q5, w);
        k.repackNibbleQuads(w, rowBytes, bb, (M - 1) >> 2, alloc(4 * rowBytes));
        const qs = alloc(T * N), ad = alloc(T * nb * 4);
        // the sums, then the rows of the 8-row tiles in groups of 4 (Q8G, as Q4_0's)
        const sBytes = (T * nb * 4 + 63) & ~63;
        const as = alloc(sBytes + (groupedRows(T) / 4) * nb * 160);
        const out = alloc(T * M * 4);
        k.quantizeQ8(xa, N, T, qs, ad, as, q81, as + sBytes, 1);
        k[mm](w, rowBytes, nb, qs, ad, as, T, out, M, 0, M - 1);
        res.push(new Float32Array(mem.buffer, out, T * M).slice());
      }
      {
        // Q8_0 (mmQ8_0 over repack4's groups and the P/N planes, which form 2 does not read)
        const nb = N / 32, rowBytes = nb * 34;
        const w = alloc(q80.length);
        u8().set(q80, w);
        k.repack4(w, rowBytes, 34, M >> 2, alloc(4 * rowBytes));
        const qs = alloc(T * N), ad = alloc(T * nb * 4);
        const sBytes = (T * nb * 4 + 63) & ~63;
        const as = alloc(sBytes + T * N * 2);
        const out = alloc(T * M * 4);
        k.quantizeQ8(xa, N, T, qs, ad, as, 0, as + sBytes, 0);
        // rows 0..M - 2: a last partial group of 3 rows
        k.mmQ8_0(w, rowBytes, nb, qs, ad, as + sBytes, T, out, M, 0, M - 1);
        res.push(new Float32Array(mem.buffer, out, T * M).slice());
      }
      assertEquals(k.dotForm(), form);
      outs.push(res);
    }
    for (const [i, name] of ["Q4_0", "Q4_K", "Q5_K", "Q4_1", "Q5_0", "Q5_1", "Q8_0"].entries()) {
      const [a, b] = [outs[0][i], outs[1][i]];
      // (Q4_1, Q5_0, Q5_1 and Q8_0 leave their last output column unwritten: zero in both forms)
      if (!a.every(Number.isFinite) || a.filter((v) => v !== 0).length < a.length / 2) {
        throw new Error(`${name} rows=${T}: outputs not a real matmul's`);
      }
      for (let j = 0; j < a.length; j++) {
        if (!Object.is(a[j], b[j])) {
          throw new Error(
            `${name} rows=${T}: output ${j} is ${a[j]} in one form, ${b[j]} in the other`,
          );
        }
      }
    }
  }
});
