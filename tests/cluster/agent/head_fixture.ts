/** A HeadService for tests, over a partial agent state. */
import { HeadService } from "../../../cluster/agent/head_service.ts";
import { Peers } from "../../../cluster/agent/peers.ts";
import type { AgentState } from "../../../cluster/agent/state.ts";
import type { PlacementLoop } from "../../../cluster/agent/placement_loop.ts";
import type { AgentMetrics } from "../../../cluster/telemetry/mod.ts";
import { resolveConfig } from "../../../cluster/agent_config.ts";

/** A head over `state` (its config defaulted), placement epoch 1, no metrics; and its peers. */
export function testHead(state: Record<string, unknown>) {
  const config = resolveConfig([["default", { memoryBudget: "1GB" }]]);
  const full = { config, ...state } as unknown as AgentState;
  const peers = new Peers(full.config);
  // The placement loop as the head reads it: its epoch, and an error to set (no placement).
  const loop = { epoch: 1n } as { epoch: bigint; error?: string };
  const service = new HeadService(
    full,
    loop as unknown as PlacementLoop,
    peers,
    undefined as unknown as AgentMetrics,
  );
  return { service, peers, state: full, loop };
}
