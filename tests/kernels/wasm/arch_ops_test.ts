/** The newer architectures' ops on the WASM backend: bit-identical to the reference. */
import { createWasmBackend } from "../../../kernels/wasm/mod.ts";
import { archOpsTests } from "../../support/arch_ops.ts";
import { GGMLType, quantizeRow } from "../../../kernels/quant/mod.ts";
import { assertThrows } from "../../support/assert.ts";

for (const threads of [1, 2]) {
  // attention (sliding windows included) sums in the reference's order: bit-identical
  archOpsTests(`wasm (${threads} threads)`, () => createWasmBackend({ threads }), {
    attentionTol: 0,
  });
}

Deno.test("wasm: a row view must keep the 4-row groups of an interleaved weight whole", async () => {
  const be = await createWasmBackend({ threads: 1 });
  try {
    const n = 64;
    const q = quantizeRow(GGMLType.Q8_0, new Float32Array(n * 8).fill(0.5), n * 8);
    const w = be.upload({ name: "q8", type: GGMLType.Q8_0, shape: [n, 8], data: q });
    assertThrows(() => be.weightRows(w, 2, 4), Error, "split its 4-row groups");
    assertThrows(() => be.weightRows(w, 4, 2), Error, "split its 4-row groups");
    be.weightRows(w, 4, 4); // a whole group
    // float weights are not interleaved: any rows
    const f = new Uint8Array(new Float32Array(n * 8).fill(1).buffer);
    const wf = be.upload({ name: "f32", type: GGMLType.F32, shape: [n, 8], data: f });
    be.weightRows(wf, 2, 3);
  } finally {
    be.dispose();
  }
});
