/** The reference backend against itself: the factory's independent checks (window, views). */
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { archOpsTests } from "../../support/arch_ops.ts";

archOpsTests("reference", () => Promise.resolve(createReferenceBackend()), { attentionTol: 0 });
