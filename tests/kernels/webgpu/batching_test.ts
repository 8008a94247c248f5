/** Continuous batching does not change results on the WebGPU backend. */
import { createWebGPUBackend } from "../../../kernels/webgpu/mod.ts";
import { batchingTests } from "../../support/batching.ts";
import { ignore } from "./helpers.ts";

batchingTests("webgpu", () => createWebGPUBackend(), { ignore });
