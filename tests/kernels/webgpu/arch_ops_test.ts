/** The newer architectures' ops on the WebGPU backend against the reference (skipped without an adapter). */
import { createWebGPUBackend } from "../../../kernels/webgpu/mod.ts";
import { archOpsTests } from "../../support/arch_ops.ts";
import { ignore } from "./helpers.ts";

archOpsTests("webgpu", () => createWebGPUBackend(), { attentionTol: 1e-4, ignore });
// Row views across the buffers of a weight split by rows, and in the shared-lane matmul.
archOpsTests(
  "webgpu (2 KiB weight bindings)",
  () => createWebGPUBackend({ maxBindingBytes: 2048 }),
  {
    attentionTol: 1e-4,
    ignore,
  },
);
// (lanes summed through workgroup memory: not ggml's order, so a whole matmul is only close)
archOpsTests("webgpu (shared lanes)", () => createWebGPUBackend({ matmulLanes: "shared" }), {
  attentionTol: 1e-4,
  matmulTol: 1e-5,
  ignore,
});
