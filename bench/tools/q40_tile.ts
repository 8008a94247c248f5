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
import { compareBuilds, randomBlocks, type Side } from "./tile_lib.ts";

await compareBuilds({
  tool: "q40_tile.ts",
  rows: [1, 2, 3, 4, 5, 8, 16, 64],
  shapes: [[2048, 2048], [5632, 2048], [2048, 5632]],
  // Q4_0: 32 values in 18 bytes, the f16 scale first
  weights: (M, n) => randomBlocks(M, n, 32, 18, [0]),
  prepare(s: Side, wData, M, n, x, T, copies) {
    const { k } = s;
    const nb = n / 32;
    const rowBytes = nb * 18;
    const ws = s.weightCopies(wData, copies, rowBytes, (w, tmp) => {
      k.repackQuads(w, rowBytes, 18, M / 4, tmp, 0);
    });
    const { qs, ad, as, quantize } = s.q8Grouped(x, n, T);
    const out = s.output(T * M);
    return {
      run: (c) => {
        quantize();
        k.mmQ4_0(ws[c], rowBytes, nb, qs, ad, as, T, out.at, M, 0, M);
      },
      out: out.read,
    };
  },
});
