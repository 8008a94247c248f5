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
import { compareBuilds, randomBlocks, type Side } from "./tile_lib.ts";

/** Whether a build has the quad-group layout (repackQ6K with 4 parameters). */
const quads = (s: Side) => s.k.repackQ6K.length === 4;

await compareBuilds({
  tool: "q6k_tile.ts",
  rows: [1, 2, 3, 4, 5, 8, 16, 64, 128],
  shapes: [[2048, 5632], [32000, 2048]],
  // Q6_K: 256 values in 210 bytes (any quants and i8 scales), the f16 d last
  weights: (M, n) => randomBlocks(M, n, 256, 210, [208]),
  prepare(s: Side, wData, M, n, x, T, copies) {
    const { k } = s;
    const nb = n / 256;
    const rowBytes = nb * 210;
    const ws = s.weightCopies(wData, copies, rowBytes, (w, tmp) => {
      if (quads(s)) k.repackQ6K(w, rowBytes, M / 4, tmp);
      else k.repackQ6K(w, M * nb);
    });
    const { qs, ad, bs } = s.q8k(x, n, T);
    const form = s.alloc(2 * T * n);
    const out = s.output(T * M);
    const scr = s.alloc(3 * n + 4096);
    return {
      run: (c) => {
        if (quads(s)) k.permuteQ6KAct(bs, form, n, T);
        else k.permuteQ6KAct(qs, form, form + T * n, T * n);
        k.mmK(14, ws[c], rowBytes, nb, qs, ad, bs, T, out.at, M, 0, M, scr, form);
      },
      out: out.read,
    };
  },
});
