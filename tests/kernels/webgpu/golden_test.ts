/**
 * Every llama.cpp golden of ../shared/fixtures through the real model code on the WebGPU
 * backend (llvmpipe in CI), judged by the fixtures' own checker. Skipped without an adapter.
 */
import { createWebGPUBackend } from "../../../kernels/webgpu/mod.ts";
import { goldenTests } from "../../support/golden.ts";
import { ignore } from "./helpers.ts";

goldenTests("webgpu", () => createWebGPUBackend(), { ignore });
