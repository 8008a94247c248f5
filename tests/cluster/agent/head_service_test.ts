/** HeadService.linkTo: how a stage reaches the next one named by a chain. */
import { HeadService } from "../../../cluster/agent/head_service.ts";
import { Peers } from "../../../cluster/agent/peers.ts";
import type { AgentState } from "../../../cluster/agent/state.ts";
import type { PlacementLoop } from "../../../cluster/agent/placement_loop.ts";
import type { AgentMetrics } from "../../../cluster/telemetry/mod.ts";
import { resolveConfig } from "../../../cluster/agent_config.ts";
import { StaleEpochError } from "../../../cluster/pipeline/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";

Deno.test("a hop to a node this agent's gossip has not met yet is a stale view, not a failed stage", async () => {
  const config = resolveConfig([["default", { memoryBudget: "1GB" }]]);
  // Agent b, whose gossip knows nobody else yet (the head saw c join first).
  const state = {
    nodeId: "b",
    stage: undefined,
    config,
    gossip: { member: () => undefined },
  } as unknown as AgentState;
  const peers = new Peers(config);
  const service = new HeadService(
    state,
    { epoch: 1n } as unknown as PlacementLoop,
    peers,
    undefined as unknown as AgentMetrics,
  );
  const e = await service.linkTo({ nodeId: "c", from: 3, to: 5 }).openSession({
    sessionId: "s",
    maxContext: 16,
    model: "m",
    epoch: 1n,
    downstream: [],
  }).then(() => null, (e) => e);
  // Blaming c would exclude a healthy node for the rest of the request.
  assert(e instanceof StaleEpochError, `expected StaleEpochError, got ${e}`);
  assertEquals(e.nodeId, "b");
  assert(e.message.includes("b does not know c yet"), e.message);
  peers.closeAll();
});
