/**
 * A stage woken from idle by a frame lets the frames of the same I/O poll join its pass (an
 * immediate) only when another session could have sent one: a lone session's pass starts at once.
 */
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import { LlamaStage } from "../../../model/llama.ts";
import { StageHost } from "../../../cluster/pipeline/mod.ts";
import { assertEquals } from "../../support/assert.ts";
import { FIXTURES } from "../../support/paths.ts";

async function firstAfterIdle(sessions: number): Promise<string> {
  const file = await openGGUF(`${FIXTURES}/models/stories260K.gguf`);
  const stage = await LlamaStage.load(file, createReferenceBackend(), { from: 0, to: 2 });
  file.close();
  const order: string[] = [];
  const host = new StageHost(stage, "s", {
    defaultContext: 16,
    onStep: () => order.push("pass"),
  });
  try {
    for (let i = 0; i < sessions; i++) host.open(`s${i}`);
    // Never run before: the host counts as idle, as a remote stage between frames is.
    setImmediate(() => order.push("immediate"));
    await host.step("s0", { tokens: Int32Array.of(1) });
    await new Promise((r) => setImmediate(r));
    return order[0];
  } finally {
    host.dispose();
  }
}

Deno.test("a lone session's frame after idle runs at once; with others open, an immediate first", async () => {
  assertEquals(await firstAfterIdle(1), "pass");
  assertEquals(await firstAfterIdle(2), "immediate");
});
