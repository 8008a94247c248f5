/**
 * The KV byte rule placement plans with and a stage admits by (cluster/agent/kv_budget.ts): the
 * budget less the prefix cache holds the weights and the KV caches; a plan leaves every stage
 * room for at least one full-context session; too many --max-sessions is a warning that says
 * how many fit and which flag to change.
 */
import {
  kvBudgetWarning,
  kvBytesPerLayer,
  offeredBudget,
  reservedSessions,
  stageKvLimit,
} from "../../../cluster/agent/kv_budget.ts";
import { agentFootprint } from "../../../cluster/agent/served_model.ts";
import { planPlacement, stageWeightBytes } from "../../../cluster/placement/mod.ts";
import { sessionsThatFit } from "../../../cluster/pipeline/kv_admission.ts";
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { configFromFile } from "../../../model/config.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import { LlamaStage } from "../../../model/llama.ts";
import { assert, assertEquals } from "../../support/assert.ts";
import { STORIES } from "../../support/paths.ts";

Deno.test("placement reserves 1 to 4 full-context sessions, never none", () => {
  assertEquals([0, 1, 3, 4, 5, 64].map(reservedSessions), [1, 1, 3, 4, 4, 4]);
});

Deno.test("the budget less the prefix cache holds the weights, and the rest is for KV", () => {
  const flags = { memoryBudget: 7e6, prefixCache: 1e6 };
  assertEquals(offeredBudget(flags), 6e6);
  assertEquals(stageKvLimit(flags, 494_592), 6e6 - 494_592);
  assertEquals(stageKvLimit(flags, 7e6), 0, "weights past the budget leave nothing, not less");
});

Deno.test("placement's KV bytes per layer are what a stage's sessions allocate", async () => {
  const file = await openGGUF(STORIES);
  try {
    const config = configFromFile(file);
    const stage = await LlamaStage.load(file, createReferenceBackend(), { from: 1, to: 3 });
    try {
      for (const n of [1, 128, 1805, 2048]) {
        assertEquals(stage.kvBytes(n), 2 * kvBytesPerLayer(config, n));
        const s = stage.newSession(n);
        const kv = s.kv;
        assertEquals(2 * kv.nLayers * kv.nCtx * kv.kvDim * 4, stage.kvBytes(n));
        stage.endSession(s);
      }
    } finally {
      stage.dispose();
    }
  } finally {
    file.close();
  }
});

Deno.test("every stage a plan places has KV room for its reserved full-context sessions", async () => {
  const file = await openGGUF(STORIES);
  try {
    const config = configFromFile(file);
    for (const [context, maxSessions] of [[2048, 64], [512, 1], [256, 3]]) {
      const fp = agentFootprint(file, context, maxSessions, config);
      const session = config.nLayers * kvBytesPerLayer(config, context);
      let planned = 0;
      // From budgets too small for the model to ones that hold it whole.
      for (let budget = 2e6; budget <= 16e6; budget += 0.25e6) {
        const nodes = ["a", "b", "c"].map((id) => ({ id, memoryBudget: budget, speed: 1 }));
        let plan;
        try {
          plan = planPlacement(fp, nodes);
        } catch {
          continue;
        }
        planned++;
        for (const st of plan.stages) {
          const limit = stageKvLimit(
            { memoryBudget: budget, prefixCache: 0 },
            stageWeightBytes(fp, st.from, st.to),
          );
          const perSession = (st.to - st.from) * session / config.nLayers;
          const fit = sessionsThatFit(limit, 0, perSession);
          assert(
            fit >= reservedSessions(maxSessions) && fit >= 1,
            `${context}×${maxSessions}, budget ${budget}: [${st.from},${st.to}) holds ${fit}`,
          );
        }
      }
      assert(planned > 0, `no budget placed the model at ${context}×${maxSessions}`);
    }
  } finally {
    file.close();
  }
});

Deno.test("--max-sessions beyond what the budget holds at full context is a warning naming the flags", () => {
  const check = { limitBytes: 6_505_408, sessionBytes: 1_048_576, maxSessions: 64, context: 2048 };
  const warning = kvBudgetWarning(check)!;
  assert(warning.includes("6 of --max-sessions 64"), warning);
  assert(warning.includes("--memory-budget") && warning.includes("--max-sessions to 6"), warning);
  assertEquals(kvBudgetWarning({ ...check, maxSessions: 6 }), undefined);
  const none = kvBudgetWarning({ ...check, limitBytes: 1_000_000 })!;
  assert(none.includes("less than one session") && none.includes("--context-size"), none);
});
