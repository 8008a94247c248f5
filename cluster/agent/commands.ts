/**
 * ClusterService.ExecuteCommand on this agent: drain, re-plan, set the log level, or forward a
 * command to the member it names.
 *
 * @module
 */
import { createClient } from "@connectrpc/connect";
import { ClusterService } from "../../proto/mod.ts";
import type { ClusterCommands, CommandResult } from "../events/mod.ts";
import type { ReplicaPlan } from "../placement/mod.ts";
import { RpcFailure } from "../rpc/mod.ts";
import type { AgentState } from "./state.ts";
import type { PlacementLoop } from "./placement_loop.ts";
import type { Peers } from "./peers.ts";
import type { Observer } from "./observe.ts";

/** What ClusterService.ExecuteCommand can make this agent do. */
export function clusterCommands(
  s: AgentState,
  loop: PlacementLoop,
  peers: Peers,
  observe: Observer,
): ClusterCommands {
  const id = s.nodeId;
  return {
    drain: (dryRun) => drain(s, loop, observe, dryRun),
    replan: (model, dryRun) => {
      if (!s.model) return { message: `${id} serves no model; nothing to plan` };
      if (model && !s.model.id.matches(model)) {
        throw new RpcFailure(
          "not_found",
          `model ${model} is not served (this cluster serves ${s.model.id})`,
        );
      }
      if (dryRun) {
        const plan = loop.planWithout(undefined);
        return { message: `would re-plan ${s.model.id}`, placement: loop.message(plan) };
      }
      observe.planReason = "command";
      loop.replan();
      if (loop.error) throw new RpcFailure("failed_precondition", `no placement: ${loop.error}`);
      return { message: `re-planned ${s.model.id}`, placement: loop.message() };
    },
    setLogLevel: (level, dryRun) => {
      const was = s.leveled.level;
      if (!dryRun) s.leveled.level = level;
      return {
        message: `${dryRun ? "would set" : "set"} ${id}'s log level from ${was} to ${level}`,
      };
    },
    forward: async (nodeId, req) => {
      const m = s.gossip.member(nodeId);
      if (!m?.meta || (m.status !== "alive" && m.status !== "suspect")) {
        throw new RpcFailure("not_found", `no live member ${nodeId}; see \`llmctl nodes list\``);
      }
      return await createClient(ClusterService, await peers.transportTo(m)).executeCommand(req);
    },
  };
}

/** Drain: stop offering our model in gossip, so every agent re-plans without this node. */
function drain(
  s: AgentState,
  loop: PlacementLoop,
  observe: Observer,
  dryRun: boolean,
): CommandResult {
  const id = s.nodeId;
  if (!s.model) return { message: `${id} serves no model; nothing to drain` };
  if (s.drained) return { message: `${id} is already drained`, placement: loop.message() };
  let plan: ReplicaPlan;
  try {
    plan = loop.planWithout(id);
  } catch (e) {
    throw new RpcFailure(
      "failed_precondition",
      `draining ${id} would leave the model unplaced (${(e as Error).message}); add agents first`,
    );
  }
  const placement = loop.message(plan);
  const where = layersMoveTo(plan);
  if (dryRun) return { message: `would drain ${id}; layers would move to ${where}`, placement };
  stopOffering(s, loop, observe, `node ${id} drained`);
  s.log("info", "drained", { node: id });
  return { message: `drained ${id}; layers move to ${where}`, placement };
}

/** Where a plan puts the layers: "a:[0,3) b:[3,5) | c:[0,5)". */
function layersMoveTo(plan: ReplicaPlan): string {
  return plan.replicas.map((r) =>
    r.stages.map((st) => `${st.nodeId}:[${st.from},${st.to})`).join(" ")
  )
    .join(" | ");
}

/** Stop offering the model in gossip and re-plan: every agent plans without this node. */
function stopOffering(s: AgentState, loop: PlacementLoop, observe: Observer, reason: string) {
  s.drained = true;
  s.gossip.updateMetadata({ ...s.gossip.localNode.meta!, model: "", drained: true });
  observe.planReason = reason;
  loop.schedule();
}

/**
 * At shutdown, hand this node's layers over where the others can hold the model without it: it
 * stops offering the model, so every agent re-plans now (loading these layers while this node's
 * sessions finish) and new requests stop being sent here, each to be refused and replayed. Where
 * the others cannot hold the model it keeps its place until it leaves. False: not handed over.
 */
export function handOverAtShutdown(s: AgentState, loop: PlacementLoop, observe: Observer): boolean {
  if (!s.model || s.drained || !s.stage) return false;
  let plan: ReplicaPlan;
  try {
    plan = loop.planWithout(s.nodeId);
  } catch {
    return false;
  }
  stopOffering(s, loop, observe, `node ${s.nodeId} is shutting down`);
  s.log("info", "shutting down: layers move", { to: layersMoveTo(plan) });
  return true;
}
