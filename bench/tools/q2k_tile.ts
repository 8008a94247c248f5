/**
 * Q2_K matmul microbenchmark (a kernel developer's tool, not one of `deno task bench`'s): two
 * builds of the WASM kernels in one process, taking turns, one thread, best of 7, on
 * TinyLlama-1.1B's shapes (2048 × 2048 q/o, 5632 × 2048 gate/up) at 1 to 8, 16, 64 and 128
 * activation rows (or those of a second argument). Each side lays the same weights out as its
 * build reads them and converts the same activation (timed with the matmul). The other build is
 * usually an earlier commit's:
 *
 * ```sh
 * git archive <commit> | tar -x -C /tmp/base && deno run -A /tmp/base/kernels/wasm/build.ts
 * deno run -A bench/tools/q2k_tile.ts /tmp/base/kernels/wasm/build/kernels.wasm
 * ```
 * Both forms this engine has had are known: the generic path on the file's rows (decodeRowK,
 * until 2026-12-06) and the quad groups (repackQ2K, permuteQ6KAct).
 *
 * @module
 */
import { compareBuilds, randomBlocks, type Side } from "./tile_lib.ts";

/** Whether a build has the quad-group kernel (repackQ2K). */
const quadGroups = (s: Side) => typeof s.k.repackQ2K === "function";

await compareBuilds({
  tool: "q2k_tile.ts",
  rows: [1, 2, 3, 4, 5, 6, 7, 8, 16, 64, 128],
  shapes: [[2048, 2048], [5632, 2048]],
  // Q2_K: 256 values in 84 bytes, f16 d and dmin last
  weights: (M, n) => randomBlocks(M, n, 256, 84, [80, 82]),
  prepare(s: Side, wData, M, n, x, T, copies) {
    const { k } = s;
    const nb = n / 256;
    const rowBytes = nb * 84;
    const ws = s.weightCopies(wData, copies, rowBytes, (w, tmp) => {
      if (quadGroups(s)) k.repackQ2K(w, rowBytes, M / 4, tmp);
    });
    const { qs, ad, bs } = s.q8k(x, n, T);
    const form = s.alloc(2 * T * n + T * nb * 16);
    const out = s.output(T * M);
    const scr = s.alloc(4 * n + 4096);
    return {
      run: (c) => {
        if (quadGroups(s)) k.permuteQ6KAct(bs, form, n, T);
        else k.permuteQ8K(qs, form, T * n);
        k.mmK(10, ws[c], rowBytes, nb, qs, ad, bs, T, out.at, M, 0, M, scr, form);
      },
      out: out.read,
    };
  },
});
