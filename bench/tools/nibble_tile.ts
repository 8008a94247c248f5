/**
 * Q4_1, Q5_0 or Q5_1 matmul microbenchmark (a kernel developer's tool, not one of `deno task bench`'s):
 * two builds of the WASM kernels in one process, taking turns, one thread, best of 7, on
 * TinyLlama-1.1B's shapes (2048 × 2048 q/o, 5632 × 2048 gate/up, 2048 × 5632 down) at 1 to 5, 8,
 * 16 and 64 activation rows (or those of a third argument). Each side lays the same weights out as
 * its build reads them and quantizes the same activation (timed with the matmul); `--stream` as
 * in tile_lib.ts. The other build is usually an earlier commit's:
 *
 * ```sh
 * git archive <commit> | tar -x -C /tmp/base && deno run -A /tmp/base/kernels/wasm/build.ts
 * deno run -A bench/tools/nibble_tile.ts Q5_0 /tmp/base/kernels/wasm/build/kernels.wasm 1,4 --stream
 * ```
 * Both layouts these types have had are known: 4-row groups interleaved block by block (repack4,
 * until 2026-12-06) and byte quads, with the 5th bits ordered by quad (repackNibbleQuads).
 *
 * @module
 */
import { compareBuilds, randomBlocks, type Side } from "./tile_lib.ts";

/** Each type's block bytes, its f16 offsets, and its activation (Q5_1: Q8_1, with float sums). */
const TYPES: Record<string, { bytes: number; halves: number[]; q81: number; mm: string }> = {
  Q4_1: { bytes: 20, halves: [0, 2], q81: 1, mm: "mmQ4_1" },
  Q5_0: { bytes: 22, halves: [0], q81: 0, mm: "mmQ5_0" },
  Q5_1: { bytes: 24, halves: [0, 2], q81: 1, mm: "mmQ5_1" },
};

const [name, ...rest] = Deno.args;
const type = TYPES[name];
if (!type) {
  console.error(
    `usage: nibble_tile.ts ${Object.keys(TYPES).join("|")} OTHER.wasm [ROWS,…] [MxN,…]`,
  );
  Deno.exit(2);
}

await compareBuilds({
  tool: `nibble_tile.ts ${name}`,
  rows: [1, 2, 3, 4, 5, 8, 16, 64],
  shapes: [[2048, 2048], [5632, 2048], [2048, 5632]],
  weights: (M, n) => randomBlocks(M, n, 32, type.bytes, type.halves),
  prepare(s: Side, wData, M, n, x, T, copies) {
    const { k } = s;
    const nb = n / 32;
    const rowBytes = nb * type.bytes;
    // the build's quad layout for this type, if it has one (f93e4f2 had Q5_0's and Q5_1's under
    // another name)
    const quads = k.repackNibbleQuads ?? (type.bytes === 20 ? undefined : k.repackQ5Quads);
    const ws = s.weightCopies(wData, copies, rowBytes, (w, tmp) => {
      if (quads) quads(w, rowBytes, type.bytes, M / 4, tmp);
      else k.repack4(w, rowBytes, type.bytes, M / 4, tmp);
    });
    const { qs, ad, as, quantize } = s.q8Grouped(x, n, T, type.q81);
    const out = s.output(T * M);
    return {
      run: (c) => {
        quantize();
        k[type.mm](ws[c], rowBytes, nb, qs, ad, as, T, out.at, M, 0, M);
      },
      out: out.read,
    };
  },
}, rest);
