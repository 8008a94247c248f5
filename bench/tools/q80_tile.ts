/**
 * Q8_0 matmul microbenchmark (a kernel developer's tool, not one of `deno task bench`'s): two
 * builds of the WASM kernels in one process, taking turns, one thread, best of 7, on
 * TinyLlama-1.1B's shapes (2048 × 2048 q/o, 5632 × 2048 gate/up, 2048 × 5632 down) at 1 to 5, 8,
 * 16 and 64 activation rows (or those of a second argument, e.g. `1,2,4`). Each side gets its
 * own memory, lays the same weights out with its own repack4 and quantizes the same activation
 * with its own quantizeQ8 (P/N planes; timed with the matmul), then runs mmQ8_0, the kernel of
 * engines whose relaxed dot cannot take the biased one (mmQ8_0b). With `--stream` (third
 * argument) each side holds 8 copies of the matrix and runs them in turn, so that the weights
 * come from memory as in a model's decode. The other build is usually an earlier commit's:
 *
 * ```sh
 * git archive <commit> | tar -x -C /tmp/base && deno run -A /tmp/base/kernels/wasm/build.ts
 * deno run -A bench/tools/q80_tile.ts /tmp/base/kernels/wasm/build/kernels.wasm 1,2,4 --stream
 * ```
 *
 * @module
 */
import { compareBuilds, randomBlocks, type Side } from "./tile_lib.ts";

await compareBuilds({
  tool: "q80_tile.ts",
  rows: [1, 2, 3, 4, 5, 8, 16, 64],
  shapes: [[2048, 2048], [5632, 2048], [2048, 5632]],
  // Q8_0: 32 values in 34 bytes, the f16 scale first
  weights: (M, n) => randomBlocks(M, n, 32, 34, [0]),
  prepare(s: Side, wData, M, n, x, T, copies) {
    const { k } = s;
    const nb = n / 32;
    const rowBytes = nb * 34;
    const ws = s.weightCopies(wData, copies, rowBytes, (w, tmp) => {
      k.repack4(w, rowBytes, 34, M / 4, tmp);
    });
    const xa = s.floats(x);
    const qs = s.alloc(T * n);
    const ad = s.alloc(T * nb * 4);
    const sBytes = (T * nb * 4 + 63) & ~63;
    const as = s.alloc(sBytes + T * n * 2);
    const out = s.output(T * M);
    return {
      run: (c) => {
        k.quantizeQ8(xa, n, T, qs, ad, as, 0, as + sBytes, 0);
        k.mmQ8_0(ws[c], rowBytes, nb, qs, ad, as + sBytes, T, out.at, M, 0, M);
      },
      out: out.read,
    };
  },
});
