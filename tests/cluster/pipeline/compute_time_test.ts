/**
 * A tail's computeMs covers its sampling: heads and the pipeline bench take (round trip −
 * compute) as the time the hops added, and sampling a 32000-entry row is ~0.5 ms of compute that
 * was counted as the network's.
 */
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import { LlamaStage } from "../../../model/llama.ts";
import { Sampler } from "../../../model/sampler.ts";
import { StageHost } from "../../../cluster/pipeline/mod.ts";
import { assert } from "../../support/assert.ts";
import { FIXTURES } from "../../support/paths.ts";

Deno.test("a tail's computeMs includes the time it spent sampling", async () => {
  const file = await openGGUF(`${FIXTURES}/models/stories260K.gguf`);
  const stage = await LlamaStage.load(file, createReferenceBackend(), { from: 0, to: 5 });
  file.close();
  const host = new StageHost(stage, "s", { defaultContext: 32 });
  // Sampling "takes" an hour on a clock the host reads: no real time is measured.
  const now = performance.now.bind(performance);
  let skew = 0;
  const pick = Sampler.prototype.pickCandidates;
  Sampler.prototype.pickCandidates = function (...args) {
    skew += 3_600_000;
    return pick.apply(this, args);
  };
  performance.now = () => now() + skew;
  try {
    host.open("a", 0, { temperature: 0 });
    const r = await host.step("a", { tokens: Int32Array.of(1, 300, 400) });
    assert(r.kind === "token", r.kind);
    assert(r.computeMs >= 3_600_000, `computeMs ${r.computeMs} leaves the sampling out`);
  } finally {
    performance.now = now;
    Sampler.prototype.pickCandidates = pick;
    host.dispose();
  }
});
