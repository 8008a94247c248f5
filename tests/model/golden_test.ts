/** Every llama.cpp golden passes on the reference backend (the ground truth other backends meet). */
import { createReferenceBackend } from "../../kernels/reference/mod.ts";
import { goldenTests } from "../support/golden.ts";

goldenTests("reference", () => Promise.resolve(createReferenceBackend()));
