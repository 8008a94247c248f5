/**
 * WASM matmuls are bit-identical to the reference backend for every weight type on matrices of a
 * real model's width (≥ 2048 columns) and at the row counts the engine uses: 1 (decode), 7 (a
 * short prompt or a few batched sessions) and 64 (prefill). The narrow shapes of ops_test.ts never
 * reached the kernels' wide-row code paths; a Q3_K mix once differed there by 0.03 in the logits.
 */
import { GGMLType } from "../../../kernels/quant/mod.ts";
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { createWasmBackend } from "../../../kernels/wasm/mod.ts";
import { assertClose, bufOf, rand, WEIGHT_TYPES, weightBytes } from "./helpers.ts";

const N = 2048;
const M = 36; // output rows: not a multiple of 8 or of the thread count's chunking
const ROWS = [1, 7, 64];

for (const { type, name } of WEIGHT_TYPES) {
  Deno.test(`wasm matmul ${name}: bit-identical to reference at n=${N}, rows ${ROWS}`, async () => {
    const wasm = await createWasmBackend({ threads: 2 });
    const ref = createReferenceBackend();
    try {
      // Wide activations (|x| up to 8) and one long row: scales, sign handling and the float
      // steps all see values far from the small-range inputs of the op tests.
      const n = type === GGMLType.F32 || type === GGMLType.F16 || type === GGMLType.BF16
        ? N + 3
        : N;
      const spec = { name: `w_${name}`, type, shape: [n, M], data: weightBytes(type, n, M, 77) };
      const ww = wasm.upload(spec);
      const wr = ref.upload(spec);
      for (const rows of ROWS) {
        const x = rand(rows * n, 1000 + rows, 8);
        const xw = bufOf(wasm, x);
        const xr = bufOf(ref, x);
        const ow = wasm.buffer(rows * M);
        const or = ref.buffer(rows * M);
        wasm.matmul(ww, xw, ow, rows);
        ref.matmul(wr, xr, or, rows);
        assertClose(await wasm.read(ow), await ref.read(or), 0, `${name} rows=${rows}`);
        for (const b of [xw, ow]) wasm.free(b);
        for (const b of [xr, or]) ref.free(b);
      }
    } finally {
      wasm.dispose();
      ref.dispose();
    }
  });
}
