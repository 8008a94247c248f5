/** The newer architectures' ops on the WebGPU backend against the reference (skipped without an adapter). */
import { createWebGPUBackend } from "../../../kernels/webgpu/mod.ts";
import { archOpsTests } from "../../support/arch_ops.ts";
import { ignore } from "./helpers.ts";

archOpsTests("webgpu", () => createWebGPUBackend(), { attentionTol: 1e-4, ignore });
