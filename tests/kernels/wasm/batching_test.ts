/** Continuous batching does not change results on the WASM backend (2 threads). */
import { createWasmBackend } from "../../../kernels/wasm/mod.ts";
import { batchingTests } from "../../support/batching.ts";

batchingTests("wasm", () => createWasmBackend({ threads: 2 }));
