/**
 * The KV reservation placement plans with is the cluster's, not each agent's own: agents
 * started with other --context-size or --max-sessions make the same plan.
 */
import { agreedKvReserve, servedModel } from "../../../cluster/agent/served_model.ts";
import { emptyMetadata, type Member } from "../../../cluster/gossip/mod.ts";
import { ModelId } from "../../../cluster/model_id.ts";
import { planReplicas, stageBytes } from "../../../cluster/placement/mod.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import { assertEquals, assertThrows } from "../../support/assert.ts";
import { checkAnnouncementFits } from "../../../cluster/agent/lifecycle.ts";
import { AgentConfigError } from "../../../cluster/agent_config.ts";
import { STORIES } from "../../support/paths.ts";

const member = (id: string, context: number, sessions: number): Member => ({
  id,
  addr: "127.0.0.1:1",
  status: "alive",
  incarnation: 1,
  meta: { ...emptyMetadata(id), kvReserve: { context, sessions } },
  metaBytes: new Uint8Array(),
});

Deno.test("every agent plans with the largest KV reservation any member announces", async () => {
  const members = [member("a", 512, 4), member("b", 512, 1), member("c", 128, 2)];
  const own = { a: [512, 4], b: [512, 1], c: [128, 2] } as const;
  const agreed = Object.values(own).map(([context, sessions]) =>
    agreedKvReserve(members, { context, sessions })
  );
  for (const kv of agreed) assertEquals(kv, { context: 512, sessions: 4 });

  // The plans themselves: tight budgets, where each agent's own reservation planned other ranges.
  const file = await openGGUF(STORIES);
  try {
    const models = Object.values(own).map(([context, sessions]) =>
      servedModel(ModelId.of(STORIES, file.fileSize), file, context, sessions)
    );
    const fp = models[0].footprintFor(agreed[0]);
    const whole = stageBytes(fp, 0, fp.nLayers);
    const show = (kv: { context: number; sessions: number }, i: number, budget: number) => {
      // Unequal budgets: where one binds and the others do not, the reservation moves ranges.
      const nodes = members.map((m, j) => ({
        id: m.id,
        memoryBudget: Math.round(budget * [1, 1.5, 2][j]),
        speed: 1,
      }));
      try {
        return planReplicas(models[i].footprintFor(kv), nodes, 1).replicas[0].stages.map((s) =>
          `${s.nodeId}:${s.from}-${s.to}`
        ).join(" ");
      } catch (e) {
        return (e as Error).message.slice(0, 40);
      }
    };
    // Budgets tight enough that each agent's own reservation plans other ranges (or none).
    let tight = 0;
    for (let f = 0.2; f < 1 && !tight; f += 0.02) {
      const budget = Math.ceil(whole * f);
      const mine = Object.values(own).map(([context, sessions], i) =>
        show({ context, sessions }, i, budget)
      );
      if (new Set(mine).size > 1 && !show(agreed[0], 0, budget).startsWith("the cluster")) {
        tight = budget;
      }
    }
    assertEquals(tight > 0, true, "no budget where the agents' own reservations disagree");
    const plans = agreed.map((kv, i) => show(kv, i, tight));
    assertEquals(new Set(plans).size, 1, plans.join(" / "));
  } finally {
    file.close();
  }
});

Deno.test("a model id too long for gossip metadata is refused before serving, naming the file", () => {
  const meta = {
    ...emptyMetadata("node-with-a-long-id"),
    addresses: ["10.0.0.5"],
    resources: {
      memoryBytes: 1,
      cores: 2,
      backend: "wasm",
      adapter: "x".repeat(100),
    },
  };
  checkAnnouncementFits(meta, `short.gguf@1185376#3f9a2c61d0e4`);
  const id = `${"a-very-long-model-file-name-".repeat(6)}.gguf@1185376#3f9a2c61d0e4`;
  // Before, the agent started, and its first stage announcement threw (the stage failed).
  assertThrows(() => checkAnnouncementFits(meta, id), AgentConfigError, "give the file a shorter");
});
