/** The newer architectures' ops on the WASM backend: bit-identical to the reference. */
import { createWasmBackend } from "../../../kernels/wasm/mod.ts";
import { archOpsTests } from "../../support/arch_ops.ts";

for (const threads of [1, 2]) {
  // attention sums its exponentials in a different order (documented in assembly/index.ts)
  archOpsTests(`wasm (${threads} threads)`, () => createWasmBackend({ threads }), {
    attentionTol: 1e-4,
  });
}
