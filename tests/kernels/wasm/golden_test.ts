/** Every llama.cpp golden passes on the WASM backend (2 threads), same tolerances as reference. */
import { createWasmBackend } from "../../../kernels/wasm/mod.ts";
import { goldenTests } from "../../support/golden.ts";

goldenTests("wasm", () => createWasmBackend({ threads: 2 }));
