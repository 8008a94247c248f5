/**
 * Q2_K, Q3_K or Q5_K matmul microbenchmark (a kernel developer's tool, not one of `deno task
 * bench`'s): two builds of the WASM kernels in one process, taking turns, one thread, best of 7, on
 * TinyLlama-1.1B's shapes (2048 × 2048 q/o, 5632 × 2048 gate/up) at 1 to 8, 16, 64 and 128
 * activation rows (or those of a third argument). Each side lays the same weights out as its build
 * reads them and converts the same activation (timed with the matmul). The other build is usually
 * an earlier commit's:
 *
 * ```sh
 * git archive <commit> | tar -x -C /tmp/base && deno run -A /tmp/base/kernels/wasm/build.ts
 * deno run -A bench/tools/kquant_tile.ts Q5_K /tmp/base/kernels/wasm/build/kernels.wasm 1,4,64
 * ```
 * Both forms each of these types has had are known: the generic K-quant path on the file's rows
 * (decodeRowK over permuteQ8K's activation, until 2026-12-06), and its own kernel over 4-row
 * groups (repackQ2K, repackQ3K, repackQ5K and their activation forms).
 *
 * @module
 */
import { compareBuilds, randomBlocks, type Side } from "./tile_lib.ts";

/** Each type's block, its kernel kind (mmK), and how its own kernel's build lays it out. */
const TYPES: Record<string, {
  kind: number;
  bytes: number;
  halves: number[];
  repack: string;
  /** Its kernel's activation form from quantizeQ8K's quants (qs) and sums (bs). */
  form(s: Side, qs: number, bs: number, form: number, n: number, T: number): void;
}> = {
  // Q2_K: f16 d and dmin last; its kernel reads the Q6_K kernel's 16-element sums
  Q2_K: {
    kind: 10,
    bytes: 84,
    halves: [80, 82],
    repack: "repackQ2K",
    form: (s, _qs, bs, form, n, T) => s.k.permuteQ6KAct(bs, form, n, T),
  },
  // Q3_K: f16 d last
  Q3_K: {
    kind: 11,
    bytes: 110,
    halves: [108],
    repack: "repackQ3K",
    form: (s, qs, _bs, form, n, T) => s.k.permuteQ3KAct(qs, form, n, T),
  },
  // Q5_K: f16 d and dmin first
  Q5_K: {
    kind: 13,
    bytes: 176,
    halves: [0, 2],
    repack: "repackQ5K",
    form: (s, qs, bs, form, n, T) => s.k.permuteQ5KAct(qs, bs, form, n, T),
  },
};

const [name, ...rest] = Deno.args;
const type = TYPES[name];
if (!type) {
  console.error(
    `usage: kquant_tile.ts ${Object.keys(TYPES).join("|")} OTHER.wasm [ROWS,…] [MxN,…]`,
  );
  Deno.exit(2);
}
/** Whether a build has the type's own kernel (else the generic path). */
const own = (s: Side) => typeof s.k[type.repack] === "function";

await compareBuilds({
  tool: `kquant_tile.ts ${name}`,
  rows: [1, 2, 3, 4, 5, 6, 7, 8, 16, 64, 128],
  shapes: [[2048, 2048], [5632, 2048]],
  weights: (M, n) => randomBlocks(M, n, 256, type.bytes, type.halves),
  prepare(s: Side, wData, M, n, x, T, copies) {
    const { k } = s;
    const nb = n / 256;
    const rowBytes = nb * type.bytes;
    const ws = s.weightCopies(wData, copies, rowBytes, (w, tmp) => {
      if (own(s)) k[type.repack](w, rowBytes, M / 4, tmp);
    });
    const { qs, ad, bs } = s.q8k(x, n, T);
    const form = s.alloc(2 * T * n + T * nb * 32);
    const out = s.output(T * M);
    const scr = s.alloc(4 * n + 4096);
    return {
      run: (c) => {
        if (own(s)) type.form(s, qs, bs, form, n, T);
        else k.permuteQ8K(qs, form, T * n);
        k.mmK(type.kind, ws[c], rowBytes, nb, qs, ad, bs, T, out.at, M, 0, M, scr, form);
      },
      out: out.read,
    };
  },
}, rest);
