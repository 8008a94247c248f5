/** Continuous batching does not change results on the reference backend. */
import { createReferenceBackend } from "../../kernels/reference/mod.ts";
import { batchingTests } from "../support/batching.ts";

batchingTests("reference", () => Promise.resolve(createReferenceBackend()));
