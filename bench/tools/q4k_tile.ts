/**
 * Q4_K matmul microbenchmark (a kernel developer's tool, not one of `deno task bench`'s): two builds of the WASM kernels in one process, taking turns, one
 * thread, best of 7, on TinyLlama-1.1B's Q4_K shapes (2048 × 2048 q/o, 5632 × 2048 gate/up) at
 * 1 to 8, 16, 64 and 128 activation rows (or those of a second argument, e.g. `2,3,4,5`: 2 to 5
 * are a few sessions decoding together, 6 and 7 a padded 8-row tile). Each side gets its own memory, lays the same weights out
 * with its own repackQ4K and converts the same activation with its own permuteQ4KAct (timed with
 * the matmul). The other build is usually an earlier commit's:
 *
 * ```sh
 * git archive <commit> | tar -x -C /tmp/base && deno run -A /tmp/base/kernels/wasm/build.ts
 * deno run -A bench/tools/q4k_tile.ts /tmp/base/kernels/wasm/build/kernels.wasm
 * ```
 * Both layouts this engine has had are known: the class-pair layout (repackQ4K(w, nBlocks),
 * until 2026-12-06) and the quad groups (repackQ4K(w, rowBytes, nGroups, tmp)).
 *
 * @module
 */
import { compareBuilds, randomBlocks, type Side } from "./tile_lib.ts";

/** Whether a build has the quad-group layout (repackQ4K with 4 parameters). */
const quads = (s: Side) => s.k.repackQ4K.length === 4;

await compareBuilds({
  tool: "q4k_tile.ts",
  rows: [1, 2, 3, 4, 5, 6, 7, 8, 16, 64, 128],
  shapes: [[2048, 2048], [5632, 2048]],
  // Q4_K: 256 values in 144 bytes, f16 d and dmin first
  weights: (M, n) => randomBlocks(M, n, 256, 144, [0, 2]),
  prepare(s: Side, wData, M, n, x, T, copies) {
    const { k } = s;
    const nb = n / 256;
    const rowBytes = nb * 144;
    const ws = s.weightCopies(wData, copies, rowBytes, (w, tmp) => {
      if (quads(s)) k.repackQ4K(w, rowBytes, M / 4, tmp);
      else k.repackQ4K(w, M * nb);
    });
    const { qs, ad, bs } = s.q8k(x, n, T);
    const form = s.alloc((Math.ceil(T / 8) * 2) * nb * 1104 + T * n + T * nb * 32);
    const out = s.output(T * M);
    const scr = s.alloc(3 * n + 4096);
    return {
      run: (c) => {
        if (quads(s)) k.permuteQ4KAct(qs, ad, bs, form, n, T);
        else k.permuteQ4KAct(qs, bs, form, form + T * n, n, T);
        k.mmK(12, ws[c], rowBytes, nb, qs, ad, bs, T, out.at, M, 0, M, scr, form);
      },
      out: out.read,
    };
  },
});
