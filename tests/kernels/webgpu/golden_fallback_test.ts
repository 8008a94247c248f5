/**
 * Every llama.cpp golden on the WebGPU backend with the optional shader paths forced off
 * (`features: "none"`, as `DLLM_WEBGPU_FEATURES=none` does): on an adapter that grants
 * `shader-f16` or `subgroups`, golden_test.ts runs the paths its self-check enabled and this file
 * the f32 / workgroup-memory fallback. Where neither is granted (llvmpipe) the fallback is what
 * golden_test.ts already runs, so these are ignored, and say so.
 */
import { createWebGPUBackend } from "../../../kernels/webgpu/mod.ts";
import { goldenTests } from "../../support/golden.ts";
import { ignore, PROBE } from "./helpers.ts";

const granted = ["shader-f16", "subgroups"].filter((f) => PROBE.features.includes(f));
if (!ignore && !granted.length) {
  console.log(
    `${PROBE.description} grants neither shader-f16 nor subgroups: its default is the fallback ` +
      "path (golden_test.ts), so the forced-fallback goldens are ignored here",
  );
}

goldenTests("webgpu DLLM_WEBGPU_FEATURES=none", () => createWebGPUBackend({ features: "none" }), {
  ignore: ignore || !granted.length,
});
