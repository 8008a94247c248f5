/** kernels/profile.ts: every compute op of a forward pass is timed, under its own name. */
import { profileBackend } from "../../kernels/profile.ts";
import { createReferenceBackend } from "../../kernels/reference/mod.ts";
import { assertEquals } from "../support/assert.ts";

Deno.test("profileBackend times the ops of every architecture (GELU, scaling, expert rows), not only llama's", () => {
  const prof = profileBackend(createReferenceBackend());
  const be = prof.backend;
  const a = be.buffer(8), b = be.buffer(8), o = be.buffer(8);
  be.write(a, new Float32Array(8).fill(0.5));
  be.write(b, new Float32Array(8).fill(2));
  prof.reset();
  be.swiglu(a, b, o, 8);
  be.geglu(a, b, o, 8);
  be.scale(o, 0.5, 8);
  be.copyRows(a, Int32Array.of(0), o, Int32Array.of(1), 4);
  be.sumRowGroups(a, o, 1, 2, 4);
  const ops = prof.report().map((t) => t.op).sort();
  assertEquals(ops, ["copyRows", "geglu", "scale", "sumRowGroups", "swiglu"]);
});
