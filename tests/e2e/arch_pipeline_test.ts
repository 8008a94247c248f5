/**
 * The newer architectures across real agent processes: 3 agents whose budgets each hold about
 * one layer split qwen3, qwen3moe, gemma3 and phi3 models into a pipeline and produce
 * llama.cpp's greedy ids; a kill -9 of qwen3moe's middle stage mid-generation changes nothing.
 */
import { createClient } from "@connectrpc/connect";
import { agentFootprint } from "../../cluster/agent.ts";
import { openGGUF } from "../../model/gguf/mod.ts";
import { InferenceService } from "../../proto/mod.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { generate, startCluster, stopAll, waitForPlacement } from "../support/agents.ts";
import { FIXTURES } from "../support/paths.ts";

const golden = (name: string) =>
  JSON.parse(Deno.readTextFileSync(`${FIXTURES}/golden/${name}.json`));

/** A budget that holds the largest layer (with its KV reservation) plus the head or the tail. */
async function oneLayerBudget(model: string): Promise<string> {
  const file = await openGGUF(model);
  try {
    // the agents' settings in tests/support/agents.ts: --context-size 256, --max-sessions 8
    const f = agentFootprint(file, 256, 8);
    const layer = Math.max(...f.layerBytes) + f.kvBytesPerLayer;
    return String(Math.ceil((layer + Math.max(f.headBytes, f.tailBytes)) * 1.05));
  } finally {
    file.close();
  }
}

/** The golden's ids up to its first EOS (a head stops there; the checker accepts that). */
function expectedIds(g: { greedy_ids: number[]; first_eos_step: number | null }): number[] {
  return g.first_eos_step === null ? g.greedy_ids : g.greedy_ids.slice(0, g.first_eos_step + 1);
}

for (const name of ["qwen3-q8_0__a1", "qwen3moe-q4_0__a2", "gemma3-q8_0__a1", "phi3-q4_0__a3"]) {
  Deno.test({
    name: `3-agent pipeline equals llama.cpp's greedy ids: ${name}`,
    fn: async () => {
      const g = golden(name);
      const model = `${FIXTURES}/${g.model}`;
      const agents = await startCluster(["a", "b", "c"], {
        model,
        memoryBudget: await oneLayerBudget(model),
      });
      try {
        const info = await waitForPlacement(agents[0], 3);
        assert(info.placement!.stages.length >= 2, "the model is split");
        const out = await generate(agents[1], g.prompt, 64);
        assertEquals(out.tokens, expectedIds(g));
      } finally {
        await stopAll(agents);
      }
    },
  });
}

Deno.test({
  name: "qwen3moe: kill -9 of a stage mid-generation gives the same ids",
  fn: async () => {
    const g = golden("qwen3moe-q4_0__a2");
    const model = `${FIXTURES}/${g.model}`;
    // Two layers over three one-layer budgets: two stages and a spare, so the two survivors of
    // a kill still hold the model.
    const agents = await startCluster(["a", "b", "c"], {
      model,
      memoryBudget: await oneLayerBudget(model),
    });
    try {
      const info = await waitForPlacement(agents[0], 3);
      const stages = info.placement!.stages;
      assertEquals(stages.length, 2, `stages on ${stages.map((s) => s.nodeId)}`);
      const last = stages[1].nodeId;
      const victim = agents.find((a) => a.id === last)!;
      const head = agents.find((a) => a.id !== last)!;
      const client = createClient(InferenceService, head.transport);
      const tokens: number[] = [];
      let recoveries = 0;
      // This model decodes 64 tokens faster than a client reads 10 of them, so a kill timed by
      // the client could land after the end. Freeze the tail first: the request is then in
      // flight on it when it dies.
      victim.child.kill("SIGSTOP");
      setTimeout(() => victim.child.kill("SIGKILL"), 500);
      for await (
        const m of client.generate({ prompt: g.prompt, maxTokens: 64, sampler: { temperature: 0 } })
      ) {
        if (m.finishReason) {
          recoveries = m.usage?.recoveries ?? 0;
          break;
        }
        tokens.push(m.tokenId);
      }
      assertEquals(tokens, expectedIds(g));
      assertEquals(recoveries, 1, "the head re-placed and replayed once");
    } finally {
      await stopAll(agents);
    }
  },
});
